//! `moat init`: looks at the host and writes a working, commented configuration (see
//! [`crate::init`]), or prints it with `--dry-run`. An existing file is replaced only when it
//! is the package's untouched default, or with `--force` (the old one is kept beside it). When
//! nothing needs protecting, nothing is written (exit 1).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use super::{DEFAULT_CONFIG, EXIT_FINDINGS};
use crate::config::Config;
use crate::init::{host, plan, render, PACKAGED_DEFAULT};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Where to write the configuration.
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Print the configuration on standard output instead of writing it (the summary goes to
    /// standard error).
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an existing configuration you edited (it is kept as FILE.bak-TIME).
    #[arg(long)]
    pub force: bool,
    /// Look for the host's files (web servers' configurations, logs, auth.log) under DIR
    /// instead of /. The network, /proc and Docker (DOCKER_HOST) are always this machine's.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let host = host::observe(&args.root);
    let plan = plan::plan(&host);
    let summary = render::summary(&plan);
    if !plan.protects_something() {
        eprint!("{summary}");
        eprintln!(
            "Nothing written: a configuration without jails would protect nothing. Run moat \
             init again once the services run, or write jails by hand (man 5 moat.toml)."
        );
        return Ok(ExitCode::from(EXIT_FINDINGS));
    }
    let path = args.config.display().to_string();
    let date = jiff::Zoned::now().date().to_string();
    let text = render::config(&plan, &path, &date);
    // What moat init writes must load: a failure here is moat's bug, shown with the text.
    if let Err(e) = Config::parse(&text, &path) {
        bail!("the configuration moat init made does not validate (a bug in moat): {e}\n{text}");
    }
    if args.dry_run {
        print!("{text}");
        eprint!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    let replaced = write(&args.config, &text, args.force)?;
    print!("{summary}");
    match replaced {
        Replaced::Nothing => println!("Wrote {path}."),
        Replaced::PackagedDefault => println!("Wrote {path} (it held the package's default)."),
        Replaced::Kept(old) => println!("Wrote {path}; the previous one is {}.", old.display()),
    }
    if let Ok(config) = Config::load(&args.config) {
        for w in super::warnings::check(&config) {
            println!("  warning: {w}");
        }
    }
    println!(
        "Next: see what it would have banned on the logs you already have, then (re)start moat:\n  \
         moat scan -c {path}\n  \
         systemctl restart moat        (without systemd: moat run -c {path})"
    );
    Ok(ExitCode::SUCCESS)
}

enum Replaced {
    Nothing,
    PackagedDefault,
    Kept(PathBuf),
}

/// Writes `text` at `path` in one step (a file beside it, renamed over it).
fn write(path: &Path, text: &str, force: bool) -> anyhow::Result<Replaced> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut replaced = Replaced::Nothing;
    if let Ok(existing) = std::fs::read_to_string(path) {
        if existing == PACKAGED_DEFAULT {
            replaced = Replaced::PackagedDefault;
        } else if !force {
            bail!(
                "{} exists and is not the package's default; not replacing it. hint: `moat init \
                 --dry-run` shows what moat init would write, `--force` replaces the file (the \
                 old one is kept beside it)",
                path.display()
            );
        } else {
            let stamp = jiff::Timestamp::now()
                .strftime("%Y%m%dT%H%M%SZ")
                .to_string();
            let old = PathBuf::from(format!("{}.bak-{stamp}", path.display()));
            // A copy, not a move: if writing the new file fails, the old one is still there.
            std::fs::copy(path, &old)
                .with_context(|| format!("cannot keep a copy of {}", path.display()))?;
            replaced = Replaced::Kept(old);
        }
    } else if path.exists() {
        bail!("{} exists but cannot be read", path.display());
    }
    let tmp = dir.join(format!(
        ".{}.moat-init-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(replaced)
}

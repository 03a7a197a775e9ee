//! `moat generate man|completions DIR` (hidden): the manual pages and shell completions, made
//! from the command line's own definition by the binary being installed.
//!
//! A subcommand rather than a build script or a separate program: the pages then describe
//! exactly the binary that ships (no second build of the CLI definition to drift from it), the
//! package build needs no extra compile step (`scripts/package` runs the release binary it
//! packages), and someone who installed with `cargo install` can make them too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use clap_complete::Shell;

use super::manpage;

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Manual pages into DIR: moat(1), one per subcommand (moat-scan(1), ...), and moat.toml(5).
    Man { dir: PathBuf },
    /// Shell completions into DIR: moat.bash, _moat (zsh) and moat.fish.
    Completions { dir: PathBuf },
}

pub fn run(command: GenerateCommand, cli: clap::Command) -> anyhow::Result<ExitCode> {
    match command {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let mut cli = cli.disable_help_subcommand(true);
            cli.build();
            let mut written = Vec::new();
            man_pages(&cli, &dir, true, &mut written)?;
            let version = format!("moat {}", env!("CARGO_PKG_VERSION"));
            let config = manpage::render(
                include_str!("../../docs/config.md"),
                &manpage::Page {
                    name: "moat.toml",
                    section: "5",
                    summary:
                        "the configuration of moat(1): jails, sources, enforcers, the port policy",
                    source: &version,
                    manual: "File Formats",
                },
            );
            let path = dir.join("moat.toml.5");
            std::fs::write(&path, config).with_context(|| format!("{}", path.display()))?;
            written.push(path);
            for p in written {
                println!("{}", p.display());
            }
        }
        GenerateCommand::Completions { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let mut cli = cli;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let path = clap_complete::generate_to(shell, &mut cli, "moat", &dir)
                    .with_context(|| format!("{shell} completions into {}", dir.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One page for `cmd` and one for each of its visible subcommands, depth first; each ends with
/// SEE ALSO naming the pages a reader goes to next.
fn man_pages(
    cmd: &clap::Command,
    dir: &Path,
    top: bool,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, false, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("moat manual")
        .source(format!("moat {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    let see_also: Vec<String> = if top {
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| {
                format!(
                    "\\fB{}\\fR(1)",
                    s.get_display_name().unwrap_or(s.get_name())
                )
            })
            .chain(["\\fBmoat.toml\\fR(5)".to_string()])
            .collect()
    } else {
        vec![
            "\\fBmoat\\fR(1)".to_string(),
            "\\fBmoat.toml\\fR(5)".to_string(),
        ]
    };
    writeln!(page, ".SH \"SEE ALSO\"\n{}", see_also.join(", "))?;
    std::fs::write(&path, page).with_context(|| format!("{}", path.display()))?;
    written.push(path);
    Ok(())
}

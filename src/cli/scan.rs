//! `moat scan`: offline analysis of logs with the daemon's own filters and jails.
//!
//! Which jails run: the configuration's (all, or those named with `--jail`), or one ad-hoc jail
//! built from `--filter`/`--regex`, which inherits the configuration's `[defaults]` when a
//! configuration is given. Command-line settings (`--maxretry`, ...) override both.
//! What they read: the LOG arguments when given, else each jail's own `sources`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::value::{
    parse_duration, Duration, FilterName, MaxRetry, PatternText, PrefixLen, TimeFormatText, Zone,
    ZoneSpec, FAIL2BAN_PREFIX,
};
use crate::config::{self, Config, JailConfig, JailTable};
use crate::detect::{library, pattern::Pattern};
use crate::scan::{self, report, ScanOptions};
use crate::source::Input;
use crate::vocab::Net;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Configuration file whose jails (or defaults) to use.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Only these jails of the configuration.
    #[arg(short, long = "jail", value_name = "NAME")]
    jails: Vec<String>,
    /// Scan with this built-in filter instead of the configured jails.
    #[arg(long, conflicts_with = "regex")]
    filter: Option<String>,
    /// Scan with one of fail2ban's filters: a name in fail2ban's filter.d, or a file, with
    /// options as in jail.local (`sshd[mode=aggressive]`); see docs/fail2ban.md.
    #[arg(long, value_name = "NAME-OR-PATH[OPTS]", conflicts_with_all = ["filter", "regex"])]
    fail2ban_filter: Option<String>,
    /// fail2ban's configuration directory for --fail2ban-filter NAME (default: the
    /// configuration's fail2ban_dir, else /etc/fail2ban).
    #[arg(long, value_name = "DIR")]
    fail2ban_dir: Option<PathBuf>,
    /// Scan with these failregexes (with <HOST>) instead of the configured jails.
    #[arg(long, value_name = "RE")]
    regex: Vec<String>,
    /// Lines matching this are not failures.
    #[arg(long, value_name = "RE")]
    ignoreregex: Vec<String>,
    /// Time format: auto, clf, iso8601, syslog, epoch or a strftime pattern.
    #[arg(long, value_name = "FORMAT")]
    time: Option<String>,
    #[arg(long, value_name = "N")]
    maxretry: Option<u32>,
    #[arg(long, value_name = "DUR")]
    findtime: Option<String>,
    #[arg(long, value_name = "DUR")]
    bantime: Option<String>,
    /// Never count these addresses or networks.
    #[arg(long, value_name = "CIDR")]
    ignore: Vec<String>,
    /// Count and ban IPv6 clients per prefix of this length.
    #[arg(long, value_name = "N")]
    ipv6_prefix: Option<u8>,
    /// Zone of times written without an offset: local, UTC or an IANA name.
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
    /// Print the report as JSON (see docs/cli.md).
    #[arg(long)]
    json: bool,
    /// Print one JSON object per failure, line by line, instead of a report (one filter;
    /// see docs/cli.md).
    #[arg(long, conflicts_with = "json")]
    json_lines: bool,
    /// Also print up to N lines that no jail matched.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "20")]
    show_missed: Option<usize>,
    /// Print every ban, not only the first 50.
    #[arg(long)]
    all_bans: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Log files to read, oldest first whatever the order given; `-` is standard input; gzip is
    /// undone. Default: the jails' sources.
    #[arg(value_name = "LOG")]
    logs: Vec<String>,
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let jails = build_jails(&args)?;
    let (inputs, reads) = plan_inputs(&args, &jails)?;
    // Every file must open before anything is printed: no half report that looks like success.
    for input in &inputs {
        if let Input::File(path) = input {
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        }
    }
    if args.json_lines {
        let [jail] = jails.as_slice() else {
            bail!(
                "--json-lines prints one filter's failures; choose one with --fail2ban-filter, \
                 --filter, --regex or --jail"
            );
        };
        super::scan_lines::print(jail, &inputs, jiff::Timestamp::now())?;
        return Ok(ExitCode::SUCCESS);
    }
    let total: u64 = inputs
        .iter()
        .filter_map(|i| match i {
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            _ => None,
        })
        .sum();
    let bar =
        (!args.no_progress && std::io::stderr().is_terminal() && total > 8 << 20).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("static template"),
            );
            bar
        });
    let progress = bar
        .clone()
        .map(|b| Box::new(move |n| b.set_position(n)) as Box<dyn FnMut(u64)>);
    let report = scan::run(
        jails,
        &inputs,
        &reads,
        ScanOptions {
            missed_samples: args.show_missed.unwrap_or(0),
            now: jiff::Timestamp::now(),
            progress,
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if args.json {
        println!("{}", report::json(&report));
    } else {
        print!(
            "{}",
            report::text(
                &report,
                &report::TextOptions {
                    max_bans: if args.all_bans { usize::MAX } else { 50 },
                    timing: true,
                }
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The command line's settings as a jail table, validated like the configuration's.
fn overrides(args: &ScanArgs) -> anyhow::Result<JailTable> {
    let mut t = JailTable::default();
    if let Some(name) = &args.filter {
        if library::get(name).is_none() {
            let hint = library::closest(name)
                .map(|c| format!("; did you mean {c:?}?"))
                .unwrap_or_default();
            bail!("unknown filter {name:?}{hint} (`moat filters list` shows them all)");
        }
        t.filter = Some(FilterName(name.clone()));
    }
    if let Some(spec) = &args.fail2ban_filter {
        t.filter = Some(FilterName(format!("{FAIL2BAN_PREFIX}{spec}")));
    }
    t.fail2ban_dir = args.fail2ban_dir.clone();
    let patterns = |v: &[String], what: &str| -> anyhow::Result<Option<Vec<PatternText>>> {
        if v.is_empty() {
            return Ok(None);
        }
        v.iter()
            .map(|p| {
                Pattern::compile(p).with_context(|| format!("{what} {p:?}"))?;
                Ok(PatternText(p.clone()))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Some)
    };
    t.failregex = patterns(&args.regex, "--regex")?;
    t.ignoreregex = patterns(&args.ignoreregex, "--ignoreregex")?;
    if let Some(f) = &args.time {
        crate::detect::TimeFormat::from_name(f).map_err(anyhow::Error::msg)?;
        t.time = Some(TimeFormatText(f.clone()));
    }
    if let Some(m) = args.maxretry {
        if m == 0 {
            bail!("--maxretry must be at least 1");
        }
        t.maxretry = Some(MaxRetry(m));
    }
    let dur = |v: &Option<String>, what: &str| -> anyhow::Result<Option<Duration>> {
        v.as_deref()
            .map(|s| {
                let d = parse_duration(s).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                if !d.is_positive() {
                    bail!("{what} must be positive");
                }
                Ok(Duration(d))
            })
            .transpose()
    };
    t.findtime = dur(&args.findtime, "--findtime")?;
    t.bantime = dur(&args.bantime, "--bantime")?;
    if !args.ignore.is_empty() {
        t.ignore = Some(
            args.ignore
                .iter()
                .map(|s| {
                    crate::vocab::parse_target(s)
                        .map(Net)
                        .map_err(|e| anyhow::anyhow!("--ignore: {e}"))
                })
                .collect::<anyhow::Result<_>>()?,
        );
    }
    if let Some(p) = args.ipv6_prefix {
        t.ipv6_prefix =
            Some(PrefixLen::new(p.into()).map_err(|e| anyhow::anyhow!("--ipv6-prefix: {e}"))?);
    }
    if let Some(z) = &args.timezone {
        let spec = if z == "local" {
            ZoneSpec::Local
        } else {
            ZoneSpec::Named(z.clone())
        };
        spec.resolve()
            .map_err(|e| anyhow::anyhow!("--timezone: {e}"))?;
        t.timezone = Some(Zone(spec));
    }
    Ok(t)
}

fn build_jails(args: &ScanArgs) -> anyhow::Result<Vec<JailConfig>> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let cli = overrides(args)?;
    let adhoc = args.filter.is_some() || !args.regex.is_empty() || args.fail2ban_filter.is_some();
    if adhoc {
        if !args.jails.is_empty() {
            bail!(
                "--jail selects configured jails; it cannot be combined with --filter, \
                 --fail2ban-filter or --regex"
            );
        }
        let name = match &args.fail2ban_filter {
            Some(spec) => spec
                .split('[')
                .next()
                .and_then(|n| n.rsplit('/').next())
                .map(|n| {
                    n.trim_end_matches(".conf")
                        .trim_end_matches(".local")
                        .to_string()
                })
                .unwrap_or_else(|| "fail2ban".into()),
            None => args.filter.clone().unwrap_or_else(|| "scan".into()),
        };
        let merged = config::merge(&config.defaults, &cli);
        let jail = config::resolve(&name, &merged).map_err(anyhow::Error::msg)?;
        return Ok(vec![jail]);
    }
    if args.config.is_none() {
        bail!(
            "nothing to match with: give --filter NAME (see `moat filters list`), \
             --fail2ban-filter NAME, --regex RE, or --config FILE"
        );
    }
    if config.jails.is_empty() {
        bail!("the configuration defines no enabled jail");
    }
    for name in &args.jails {
        if config.jail(name).is_none() {
            let known: Vec<&str> = config.jails.iter().map(|j| j.name.as_str()).collect();
            bail!(
                "no jail {name:?} in the configuration; it has: {}",
                known.join(", ")
            );
        }
    }
    config
        .jails
        .iter()
        .filter(|j| args.jails.is_empty() || args.jails.contains(&j.name))
        .map(|j| {
            // Command-line settings beat the jail's own and its defaults.
            let merged = config::merge(&j.table, &cli);
            config::resolve(&j.name, &merged).map_err(anyhow::Error::msg)
        })
        .collect()
}

/// Decides which inputs are read, each once, and which jails read each.
fn plan_inputs(
    args: &ScanArgs,
    jails: &[JailConfig],
) -> anyhow::Result<(Vec<Input>, Vec<Vec<usize>>)> {
    if !args.logs.is_empty() {
        if args.logs.iter().filter(|l| *l == "-").count() > 1 {
            bail!("standard input (-) can be read only once");
        }
        let mut seen = Vec::new();
        for l in &args.logs {
            let input = Input::from_arg(l);
            if !seen.contains(&input) {
                seen.push(input);
            }
        }
        // Oldest first, so `access.log*` (which the shell lists newest first: access.log,
        // access.log.1, access.log.2.gz) is read in the order it was written; gzip keeps the
        // original file's time. Standard input goes last. The sort is stable, so files whose
        // times cannot be read keep their order.
        seen.sort_by_key(|i| match i {
            Input::File(p) => (0, modified(p)),
            _ => (1, std::time::UNIX_EPOCH),
        });
        let all: Vec<usize> = (0..jails.len()).collect();
        let reads = vec![all; seen.len()];
        return Ok((seen, reads));
    }
    let mut by_input: Vec<(Input, Vec<usize>)> = Vec::new();
    for (j, jail) in jails.iter().enumerate() {
        if jail.sources.is_empty() {
            bail!(
                "jail {:?} has no sources; give LOG files on the command line",
                jail.name
            );
        }
        for src in &jail.sources {
            // The journal and containers are read as far back as they go, like a file.
            let inputs = match Input::from_source(src).map_err(anyhow::Error::msg)? {
                Input::File(_) => expand(src)?.into_iter().map(Input::File).collect(),
                other => vec![other],
            };
            for input in inputs {
                match by_input.iter_mut().find(|(i, _)| *i == input) {
                    Some((_, readers)) if !readers.contains(&j) => readers.push(j),
                    Some(_) => {}
                    None => by_input.push((input, vec![j])),
                }
            }
        }
    }
    Ok(by_input.into_iter().unzip())
}

/// Expands a source: a plain path as is (so a missing file is an error naming it), a glob to
/// its matches, oldest first so that rotated files are read in the order they were written.
fn expand(source: &str) -> anyhow::Result<Vec<PathBuf>> {
    if !source.contains(['*', '?', '[']) {
        return Ok(vec![PathBuf::from(source)]);
    }
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = glob::glob(source)
        .with_context(|| format!("bad glob {source:?}"))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .map(|p| (modified(&p), p))
        .collect();
    if found.is_empty() {
        bail!("no file matches {source:?}");
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn modified(path: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

//! `moat filters`: the built-in library (list, show), trying a filter on lines or on its own
//! samples (test), and static checks of patterns (lint).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use comfy_table::{presets, ContentArrangement, Table};

use super::EXIT_FINDINGS;
use crate::config::Config;
use crate::detect::lint::lint;
use crate::detect::{library, Filter, FilterSpec, LineContext, Verdict};
use crate::vocab::terminal::visible;

#[derive(Subcommand, Debug)]
pub enum FiltersCommand {
    /// List the built-in filters.
    List,
    /// Print a built-in filter's definition, samples included.
    Show { name: String },
    /// Run a filter on the given lines, or on its own samples when no line is given.
    #[command(override_usage = "moat filters test NAME [LINE]...\n       \
                                moat filters test --file FILE [LINE]...")]
    Test {
        /// A built-in filter name; with --file, the first line to try.
        #[arg(required_unless_present = "file", value_name = "NAME")]
        name: Option<String>,
        /// A filter definition file (TOML, the format of `moat filters show`) instead of a
        /// built-in filter.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Lines to try.
        #[arg(value_name = "LINE")]
        lines: Vec<String>,
    },
    /// Warn about patterns that let attacker-controlled text choose the client.
    Lint {
        /// Built-in filters to check (default: all).
        names: Vec<String>,
        /// Check the jails of this configuration instead.
        #[arg(short, long, conflicts_with = "file")]
        config: Option<PathBuf>,
        /// Check this filter definition file instead.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub fn run(cmd: FiltersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FiltersCommand::List => {
            let mut t = Table::new();
            t.load_preset(presets::NOTHING)
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_header(["filter", "catches"]);
            for name in library::names() {
                let spec = library::get(name).expect("listed filter exists");
                t.add_row([name, spec.description.as_str()]);
            }
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
        FiltersCommand::Show { name } => {
            print!("{}", library::source(&name).ok_or_else(|| unknown(&name))?);
            Ok(ExitCode::SUCCESS)
        }
        FiltersCommand::Test {
            name,
            file,
            mut lines,
        } => {
            // With a file there is no name: the first positional argument is a line.
            let name = match (&file, name) {
                (Some(_), Some(first)) => {
                    lines.insert(0, first);
                    None
                }
                (_, name) => name,
            };
            let (label, spec) = load(name, file)?;
            let filter = Filter::compile(&spec).with_context(|| format!("filter {label}"))?;
            if lines.is_empty() {
                test_samples(&label, &spec, &filter)
            } else {
                test_lines(&filter, &lines)
            }
        }
        FiltersCommand::Lint {
            names,
            config,
            file,
        } => {
            let targets: Vec<(String, FilterSpec)> = if let Some(path) = config {
                Config::load(&path)?
                    .jails
                    .into_iter()
                    .map(|j| (format!("jail {}", j.name), j.filter))
                    .collect()
            } else if let Some(path) = file {
                vec![load(None, Some(path))?]
            } else if names.is_empty() {
                library::names()
                    .map(|n| (n.to_string(), library::get(n).cloned().expect("listed")))
                    .collect()
            } else {
                names
                    .into_iter()
                    .map(|n| load(Some(n), None))
                    .collect::<anyhow::Result<_>>()?
            };
            let mut findings = 0;
            for (label, spec) in &targets {
                for w in lint(spec) {
                    findings += 1;
                    println!("{}: {}: {}", visible(label), w.rule, visible(&w.message));
                }
            }
            if findings == 0 {
                println!("{} filter(s) checked, no warnings", targets.len());
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(EXIT_FINDINGS))
            }
        }
    }
}

fn unknown(name: &str) -> anyhow::Error {
    match library::closest(name) {
        Some(c) => anyhow::anyhow!("no built-in filter {name:?}; did you mean {c:?}?"),
        None => anyhow::anyhow!("no built-in filter {name:?} (`moat filters list` shows them)"),
    }
}

fn load(name: Option<String>, file: Option<PathBuf>) -> anyhow::Result<(String, FilterSpec)> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let spec: FilterSpec = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(":{line}")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message().trim_end())
        })?;
        return Ok((path.display().to_string(), spec));
    }
    let name = name.unwrap_or_default();
    let spec = library::get(&name).ok_or_else(|| unknown(&name))?.clone();
    Ok((name, spec))
}

fn test_lines(filter: &Filter, lines: &[String]) -> anyhow::Result<ExitCode> {
    let ctx = LineContext::new(
        jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC),
        jiff::Timestamp::now(),
    );
    let mut failures = 0;
    for line in lines {
        let v = filter.check(line.as_bytes(), &ctx);
        failures += usize::from(matches!(v, Verdict::Failure(_)));
        println!("{}\n  -> {}", visible(line), v);
    }
    // Like grep: success when something matched.
    Ok(if failures > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

fn test_samples(label: &str, spec: &FilterSpec, filter: &Filter) -> anyhow::Result<ExitCode> {
    if spec.samples.is_empty() {
        bail!("{label} has no samples; give lines to test on the command line");
    }
    let problems = library::check_samples(spec, filter);
    for p in &problems {
        println!("FAIL {}", visible(p));
    }
    println!(
        "{label}: {} of {} samples as expected",
        spec.samples.len() - problems.len(),
        spec.samples.len()
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

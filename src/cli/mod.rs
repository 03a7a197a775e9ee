//! The command line: one clap definition, one function per subcommand.
//!
//! Exit status: 0 success; 1 a check found problems (`filters test`, `filters lint`);
//! 2 bad usage, a bad configuration or an unreadable input.

mod check_config;
mod filters;
mod scan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for usage, configuration and input errors.
pub const EXIT_ERROR: u8 = 2;
/// Exit status when a check ran and found problems.
pub const EXIT_FINDINGS: u8 = 1;

/// The default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/moat/moat.toml";

#[derive(Parser, Debug)]
#[command(
    name = "moat",
    version,
    about = "Bans abusive clients where the ban works: before Docker's DNAT or at Cloudflare's edge",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Analyse logs offline: what each jail would have matched and banned.
    Scan(Box<scan::ScanArgs>),
    /// List, show, test and lint filters.
    Filters {
        #[command(subcommand)]
        command: filters::FiltersCommand,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan::run(*args),
        Command::Filters { command } => filters::run(command),
        Command::CheckConfig { config } => check_config::run(&config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moat: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

//! The command line: one clap definition, one function per subcommand.
//!
//! Exit status: 0 success; 1 a check found problems (`filters test`, `filters lint`);
//! 2 bad usage, a bad configuration or an unreadable input.

mod check_config;
mod cloudflare;
mod control;
mod filters;
mod generate;
mod import;
mod init;
mod manpage;
mod ports;
mod run;
mod scan;
mod scan_lines;
mod warnings;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Convert another tool's configuration to moat's (written to standard output).
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
    /// Look at this host and write a working configuration for it (or print it: --dry-run).
    Init(init::InitArgs),
    /// Validate a configuration file and exit.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the daemon in the foreground: follow logs, ban, answer the commands below.
    Run {
        /// Configuration file (drop-ins in conf.d/*.toml beside it are merged in).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the jails (or one jail) of the running daemon: failing, failed, banned.
    Status {
        /// Only this jail, in detail.
        jail: Option<String>,
        #[arg(long)]
        json: bool,
        /// Tab-separated tables for scripts (the jails, a blank line, the enforcers; with a
        /// jail, its bans).
        #[arg(long, conflicts_with = "json")]
        plain: bool,
        #[command(flatten)]
        socket: control::SocketArgs,
    },
    /// List the active bans (and past ones with --history); `bans show TARGET` for one ban.
    // `moat bans -c FILE show X` would read the socket from the wrong place: options go after
    // `show`.
    #[command(args_conflicts_with_subcommands = true)]
    Bans {
        #[command(subcommand)]
        command: Option<control::BansCommand>,
        /// Also show up to N past bans, newest first.
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "50")]
        history: Option<u32>,
        #[arg(long)]
        json: bool,
        /// A tab-separated table for scripts (the active bans, or the history with --history).
        #[arg(long, conflicts_with = "json")]
        plain: bool,
        #[command(flatten)]
        socket: control::SocketArgs,
    },
    /// Ban an address or network by hand.
    Ban {
        /// An address (192.0.2.7, 2001:db8::1) or network (198.51.100.0/24).
        target: String,
        /// Count the ban in this jail (its bantime applies unless --for is given).
        #[arg(long)]
        jail: Option<String>,
        /// How long: "90m", "1d", "forever".
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why, for the ledger and the status.
        #[arg(long)]
        reason: Option<String>,
        /// Ban a network wider than /16 (IPv4) or /32 (IPv6).
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: control::SocketArgs,
    },
    /// Lift the bans of an address or network (or all bans).
    Unban {
        /// The address or network; bans of networks containing it are lifted too.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        target: Option<String>,
        #[arg(long)]
        all: bool,
        /// Only this jail's bans (another jail's ban of the same address stays).
        #[arg(long)]
        jail: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: control::SocketArgs,
    },
    /// Cloudflare: verify the credential and permissions.
    Cloudflare {
        #[command(subcommand)]
        command: cloudflare::CloudflareCommand,
    },
    /// The port policy: plan, apply (with rollback unless confirmed), confirm, status.
    Ports {
        #[command(subcommand)]
        command: ports::PortsCommand,
    },
    /// The web dashboard: its token.
    Web {
        #[command(subcommand)]
        command: web::WebCommand,
    },
    /// Make the running daemon read its configuration again (like SIGHUP).
    Reload {
        #[command(flatten)]
        socket: control::SocketArgs,
    },
    /// Write the manual pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        command: generate::GenerateCommand,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let survives_its_reader = matches!(
        cli.command,
        Command::Run { .. }
            | Command::Ports {
                command: ports::PortsCommand::Apply { .. } | ports::PortsCommand::Watch { .. }
            }
    );
    if !survives_its_reader {
        // A report piped into `head` ends quietly when `head` has read enough, as other Unix
        // tools do, instead of panicking on the write. Not for the daemon (a client hanging up
        // must not kill it), nor `ports apply` and the rollback watcher it starts (an apply
        // whose terminal went away must still finish and leave its watcher behind).
        // SAFETY: setting a signal's disposition to the default has no other effect.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Scan(args) => scan::run(*args),
        Command::Filters { command } => filters::run(command),
        Command::Import { command } => import::run(command),
        Command::Ports { command } => ports::run(command),
        Command::Cloudflare { command } => cloudflare::run(command),
        Command::Init(args) => init::run(args),
        Command::CheckConfig { config } => check_config::run(&config),
        Command::Run { config } => run::run(&config),
        Command::Status {
            jail,
            json,
            plain,
            socket,
        } => control::status(&socket, jail, json, plain),
        Command::Bans {
            command:
                Some(control::BansCommand::Show {
                    target,
                    jail,
                    json,
                    socket,
                }),
            ..
        } => control::show(&socket, &target, jail, json),
        Command::Bans {
            command: None,
            history,
            json,
            plain,
            socket,
        } => control::bans(&socket, history, json, plain),
        Command::Web { command } => web::run(command),
        Command::Ban {
            target,
            jail,
            duration,
            reason,
            force,
            json,
            socket,
        } => control::ban(&socket, target, jail, duration, reason, force, json),
        Command::Unban {
            target,
            all,
            jail,
            json,
            socket,
        } => control::unban(&socket, target, all, jail, json),
        Command::Reload { socket } => control::reload(&socket),
        Command::Generate { command } => generate::run(command, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("moat: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

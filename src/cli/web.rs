//! `moat web token`: prints the web dashboard's token, making it first when there is none
//! (32 random bytes, a file of mode 0600 that only moat's user can read).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

/// `moat web ...`.
#[derive(Subcommand, Debug)]
pub enum WebCommand {
    /// Print the dashboard's token (made when there is none): open the dashboard as
    /// `http://ADDR/?token=TOKEN` to act on it (unban, ban).
    Token {
        /// The daemon's configuration, to find the token file.
        #[arg(short, long, default_value = super::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Runs a `moat web` command.
pub fn run(command: WebCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebCommand::Token { config } => {
            let config = Config::load(&config)?;
            let path = config.daemon.web_token_file.clone().unwrap_or_else(|| {
                crate::daemon::paths(&config)
                    .0
                    .join(crate::config::daemon::WEB_TOKEN_FILE)
            });
            let token = crate::daemon::web::auth::ensure_token(&path)?;
            println!("{token}");
            if let Some(addr) = config.daemon.web {
                eprintln!("open http://{}/?token=<the token above>", addr.0);
            } else {
                eprintln!("the dashboard is off: set [daemon] web = \"127.0.0.1:9718\"");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

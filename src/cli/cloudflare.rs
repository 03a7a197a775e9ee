//! `moat cloudflare verify`: checks the Cloudflare credential and permissions before they are
//! needed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use super::{DEFAULT_CONFIG, EXIT_FINDINGS};
use crate::config::Config;
use crate::enforce::cloudflare::{self, verify::verify};

#[derive(Subcommand, Debug)]
pub enum CloudflareCommand {
    /// Check the token, the account and zone, and the permissions the configured mode needs.
    Verify {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also create the IP list and the zone rule moat uses (list mode), proving it may write.
        #[arg(long)]
        write: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: CloudflareCommand) -> anyhow::Result<ExitCode> {
    let CloudflareCommand::Verify {
        config,
        write,
        json,
    } = command;
    let config = Config::load(&config)?;
    let Some(t) = &config.enforce.cloudflare else {
        bail!("the configuration has no [enforce.cloudflare]; hint: see docs/cloudflare.md");
    };
    t.check().map_err(anyhow::Error::msg)?;
    let auth = cloudflare::auth_of(t).map_err(anyhow::Error::msg)?;
    let mut cf = cloudflare::from_settings(t).map_err(anyhow::Error::msg)?;
    let checks = verify(&mut cf, &auth, write);
    let ok = checks.iter().all(|c| c.ok);
    if json {
        println!("{}", serde_json::json!({"ok": ok, "checks": checks}));
    } else {
        for c in &checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.what,
                c.detail
            );
        }
        if ok {
            println!("everything the configured mode needs is there");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

//! `moat import fail2ban [DIR]`: fail2ban's enabled jails as a moat configuration on standard
//! output; what could not be carried over on standard error (and as comments in the output).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::fail2ban::{FsFiles, DEFAULT_DIR};
use crate::config::fail2ban_import;

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Read fail2ban's jail.conf, jail.d/, jail.local (and paths-*.conf) from DIR.
    Fail2ban {
        /// fail2ban's configuration directory.
        #[arg(default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// Port names and numbers from `/etc/services` (`ssh 22/tcp`), aliases included.
fn services() -> HashMap<(String, String), u16> {
    let mut map = HashMap::new();
    let Ok(text) = std::fs::read_to_string("/etc/services") else {
        return map;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let (Some(name), Some(port)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((num, proto)) = port.split_once('/') else {
            continue;
        };
        let Ok(num) = num.parse::<u16>() else {
            continue;
        };
        for n in std::iter::once(name).chain(words) {
            map.entry((n.to_string(), proto.to_string())).or_insert(num);
        }
    }
    map
}

pub fn run(command: ImportCommand) -> anyhow::Result<ExitCode> {
    let ImportCommand::Fail2ban { dir } = command;
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let table = services();
    let lookup =
        |name: &str, proto: &str| table.get(&(name.to_string(), proto.to_string())).copied();
    let imported = fail2ban_import::import(&FsFiles, &dir.display().to_string(), &lookup)?;
    print!("{}", imported.toml);
    eprintln!(
        "moat import fail2ban: {} jails from {} ({} files read)",
        imported.jails.len(),
        dir.display(),
        imported.files.len()
    );
    for n in &imported.notes {
        eprintln!("  not carried over: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

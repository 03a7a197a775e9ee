//! `moat check-config`: validate a configuration, say what it defines, and warn about what
//! would leave the host unprotected (see [`super::warnings`]).

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    println!(
        "{}: OK, {} jail{}",
        path.display(),
        config.jails.len(),
        if config.jails.len() == 1 { "" } else { "s" }
    );
    for j in &config.jails {
        println!(
            "  {}: filter {}, {} source{}",
            j.name,
            j.filter_label,
            j.sources.len(),
            if j.sources.len() == 1 { "" } else { "s" }
        );
    }
    for w in super::warnings::check(&config) {
        eprintln!("moat: warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

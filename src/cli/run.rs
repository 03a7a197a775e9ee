//! `moat run`: the daemon in the foreground, logging to standard error (the journal, under
//! systemd).

use std::path::Path;
use std::process::ExitCode;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Logs go to the journal with structured fields when stderr is the journal, else to stderr
/// as text. `MOAT_LOG` (e.g. `debug`, `moat=debug`) chooses the level; `info` by default.
fn init_logging() {
    let filter = EnvFilter::try_from_env("MOAT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            registry
                .with(journald.with_syslog_identifier("moat".into()))
                .init();
            return;
        }
    }
    registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .init();
}

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    init_logging();
    // The same warnings as check-config's, logged as the daemon starts; on a thread of their
    // own, since asking Docker may take a moment the start must not wait for.
    if let Ok(loaded) = crate::config::Config::load(config) {
        std::thread::spawn(move || {
            for w in super::warnings::check(&loaded) {
                tracing::warn!("{w}");
            }
        });
    }
    crate::daemon::run(config)?;
    Ok(ExitCode::SUCCESS)
}

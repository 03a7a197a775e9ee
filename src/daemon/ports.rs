//! The port policy in the daemon: put in force at start (before Docker: the unit is ordered
//! `Before=docker.service` and systemd hears READY only after this), then kept there.
//!
//! Every second a look at the state file rolls back an apply whose confirmation window ran
//! out; every other second the kernel is compared with the policy in force and restored when
//! something removed or changed it (a `nft flush ruleset`, an `iptables-restore`, a firewalld
//! reload). Every 30 seconds the ports containers publish are judged against the policy, and
//! those it blocks are a warning in the log and in `moat status`, and a metric.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use super::{Shared, Warning};
use crate::config::Config;
use crate::ports::docker::{judge, publications};
use crate::ports::keeper::{self, Tick};

const WARNING: &str = "ports: ";

/// Applies the policy at start: the one in force when moat last ran, or, on a host where
/// moat never applied one, the configuration's.
pub fn start(config: &Config, state_dir: &std::path::Path, shared: &Shared) {
    let state = match keeper::read(&keeper::state_path(state_dir)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("port policy: {e}");
            shared.warn(Warning::PortsError, format!("{WARNING}{e}"));
            return;
        }
    };
    if state.backend.is_none() {
        if let Some(policy) = &config.ports {
            match keeper::apply(state_dir, Some(policy.clone()), config.ports_backend, None) {
                Ok(a) => tracing::info!(backend = a.backend.as_str(), "port policy applied"),
                Err(e) => {
                    tracing::error!("port policy not applied: {e}");
                    shared.warn(
                        Warning::PortsError,
                        format!("{WARNING}the policy could not be applied: {e}"),
                    );
                }
            }
        }
        return;
    }
    if let Some(e) = check(state_dir, true, shared, None) {
        tracing::error!("port policy: {e}");
    }
    if config.ports.as_ref() != state.policy.as_ref() {
        let msg = "the configuration's [ports] differs from the policy in force (kept as it \
                   is): `moat ports plan` shows how, `moat ports apply` applies it";
        tracing::warn!("{msg}");
        shared.warn(Warning::PortsNotice, format!("{WARNING}{msg}"));
    }
}

/// One look; the error, if any, for the caller to report once.
fn check(
    state_dir: &std::path::Path,
    repair: bool,
    shared: &Shared,
    metrics: Option<&Metrics>,
) -> Option<String> {
    match keeper::tick(state_dir, repair) {
        Ok(Tick::RolledBack) => {
            let msg = "an apply was not confirmed in time: the policy before it is back in force";
            tracing::warn!("port policy: {msg}");
            shared.warn(Warning::PortsNotice, format!("{WARNING}{msg}"));
        }
        Ok(Tick::Repaired(found)) => {
            tracing::warn!(found = %found, "port policy was gone or changed in the kernel: restored");
            if let Some(m) = metrics {
                m.ports_repairs.inc();
            }
        }
        Ok(Tick::Nothing | Tick::Waiting) => {}
        Err(e) => return Some(e.to_string()),
    }
    None
}

/// Keeps the policy in force until aborted.
pub async fn keep(state_dir: PathBuf, shared: Arc<Shared>, metrics: Arc<Metrics>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let mut reported = BTreeSet::new();
    let mut last_error: Option<String> = None;
    loop {
        every.tick().await;
        n += 1;
        let (dir, sh, m) = (state_dir.clone(), shared.clone(), metrics.clone());
        let error =
            tokio::task::spawn_blocking(move || check(&dir, n.is_multiple_of(2), &sh, Some(&m)))
                .await
                .unwrap_or(None);
        // Once per distinct error, not every second (an unusable state directory).
        if error != last_error {
            match &error {
                Some(e) => {
                    tracing::error!("port policy: {e}");
                    shared.warn(Warning::PortsError, format!("{WARNING}{e}"));
                }
                None => shared.clear(Warning::PortsError),
            }
            last_error = error;
        }
        if n % 30 == 1 {
            judge_published(&state_dir, &shared, &metrics, &mut reported).await;
        }
    }
}

/// Warns about published ports the policy blocks (each once, while it lasts).
async fn judge_published(
    state_dir: &std::path::Path,
    shared: &Shared,
    metrics: &Metrics,
    reported: &mut BTreeSet<String>,
) {
    let Ok(state) = keeper::read(&keeper::state_path(state_dir)) else {
        return;
    };
    let Some(policy) = state.policy else {
        return;
    };
    let Ok(docker) = bollard::Docker::connect_with_local_defaults() else {
        return;
    };
    let Ok(Ok(list)) = tokio::time::timeout(Duration::from_secs(5), publications(&docker)).await
    else {
        return;
    };
    let judged: Vec<_> = list.into_iter().map(|p| judge(Some(&policy), p)).collect();
    *shared.ports.lock().unwrap() = judged
        .iter()
        .filter_map(|j| serde_json::to_value(j).ok())
        .collect();
    let blocked: BTreeSet<String> = judged
        .into_iter()
        .filter(|j| j.blocked)
        .map(|j| j.to_string())
        .collect();
    metrics.ports_blocked.set(blocked.len() as i64);
    shared.clear(Warning::PortsBlocked);
    for b in &blocked {
        if !reported.contains(b) {
            tracing::warn!("{b}");
        }
        shared.warn(Warning::PortsBlocked, format!("{WARNING}{b}"));
    }
    *reported = blocked;
}

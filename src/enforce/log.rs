//! The `log` enforcer: records each decision in moat's log and holds nothing anywhere else.
//! The default when no other enforcer is configured, and a dry run for a new configuration.

use std::collections::HashSet;

use super::registry::{NoSettings, Registered};
use super::{Change, EnforceError, Enforcer, Failed, Key, Kind, Retry};

/// The `log` enforcer: logs each change and holds what it logged a ban for.
#[derive(Default)]
pub struct LogEnforcer {
    held: HashSet<Key>,
}

impl Enforcer for LogEnforcer {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        for change in batch {
            match change {
                Change::Ban(b) => {
                    let until = b.until.map_or("forever".to_string(), |t| t.to_string());
                    // The engine logs every decision already; this enforcer adds nothing else.
                    tracing::debug!(target: "moat::enforce::log", ban = %b.key(), jail = %b.jail, %until, failures = b.failures, "ban");
                    self.held.insert(b.key());
                }
                Change::Unban(k) => {
                    tracing::debug!(target: "moat::enforce::log", ban = %k, "unban");
                    self.held.remove(k);
                }
            }
        }
        Vec::new()
    }

    fn held(&mut self) -> Result<HashSet<Key>, EnforceError> {
        Ok(self.held.clone())
    }
}

impl Registered for LogEnforcer {
    type Settings = NoSettings;
    const NAME: &'static str = "log";
    const KIND: Kind = Kind::Observer;

    fn retry(_: Option<&NoSettings>) -> Retry {
        Retry::times(1)
    }

    fn build(_: Option<&NoSettings>) -> Result<(Self, Option<String>), EnforceError> {
        Ok((LogEnforcer::default(), None))
    }
}

//! The `log` enforcer: records each decision in moat's log and holds nothing anywhere else.
//! The default when no other enforcer is configured, and a dry run for a new configuration.

use std::collections::HashSet;

use ipnet::IpNet;

use super::{Change, Enforcer, Failed, Target};

#[derive(Default)]
pub struct LogEnforcer {
    held: HashSet<IpNet>,
}

impl Enforcer for LogEnforcer {
    fn name(&self) -> &'static str {
        "log"
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        for change in batch {
            match change {
                Change::Ban(b) => {
                    let until = b.until.map_or("forever".to_string(), |t| t.to_string());
                    // The engine logs every decision already; this enforcer adds nothing else.
                    tracing::debug!(target: "moat::enforce::log", ip = %Target(b.target), jail = %b.jail, %until, failures = b.failures, "ban");
                    self.held.insert(b.target);
                }
                Change::Unban(t) => {
                    tracing::debug!(target: "moat::enforce::log", ip = %Target(*t), "unban");
                    self.held.remove(t);
                }
            }
        }
        Vec::new()
    }

    fn held(&mut self) -> Result<HashSet<IpNet>, String> {
        Ok(self.held.clone())
    }
}

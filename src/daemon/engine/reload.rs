//! A reload: the jails of a new configuration, validated before it gets here.
//!
//! [`plan`] decides what happens to each jail, from the settings alone: an unchanged jail
//! keeps everything (windows, counters, bans); a changed one keeps its counters and bans, and
//! its windows when what they mean (findtime, the IPv6 prefix) did not change; an added one
//! starts afresh (from its last checkpoint, if it ran before); a removed one's bans end with
//! it, as when fail2ban stops a jail.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use super::jails::{JailRuntime, Jails};
use super::Engine;
use crate::config::{Config, JailConfig};
use crate::jail::Jail;
use crate::ledger::EndReason;
use crate::vocab::Ports;

/// What happens to one jail.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Unchanged: it keeps everything (windows, counters, bans).
    Kept,
    /// Changed; `windows`: its windows still mean the same and are kept.
    Changed {
        /// Whether its windows still mean the same (same `findtime` and `ipv6_prefix`) and are
        /// kept.
        windows: bool,
    },
    /// New: it starts afresh (from its last checkpoint, if it ran before).
    Added,
}

/// What a reload does to the jails.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The new configuration's jails in order, with their fate.
    pub jails: Vec<(String, Fate)>,
    /// The old configuration's jails the new one lacks: their bans end with them.
    pub removed: Vec<String>,
}

/// Decides, from the settings alone, what a reload does to each jail.
pub fn plan<'a>(old: impl IntoIterator<Item = &'a JailConfig>, new: &[JailConfig]) -> Plan {
    let old: HashMap<&str, &JailConfig> = old.into_iter().map(|j| (j.name.as_str(), j)).collect();
    let jails = new
        .iter()
        .map(|jc| {
            let fate = match old.get(jc.name.as_str()) {
                Some(o) if o.table == jc.table => Fate::Kept,
                Some(o) => Fate::Changed {
                    windows: o.params.findtime == jc.params.findtime
                        && o.params.ipv6_prefix == jc.params.ipv6_prefix,
                },
                None => Fate::Added,
            };
            (jc.name.clone(), fate)
        })
        .collect();
    let removed = old
        .keys()
        .filter(|name| !new.iter().any(|j| j.name == **name))
        .map(|n| n.to_string())
        .collect();
    Plan { jails, removed }
}

impl Plan {
    /// `kept: a; changed: b; added: none; removed: c`.
    pub fn summary(&self) -> String {
        let list = |f: &dyn Fn(&Fate) -> bool| {
            let v: Vec<&str> = self
                .jails
                .iter()
                .filter(|(_, fate)| f(fate))
                .map(|(n, _)| n.as_str())
                .collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let removed = if self.removed.is_empty() {
            "none".to_string()
        } else {
            self.removed.join(", ")
        };
        format!(
            "kept: {}; changed: {}; added: {}; removed: {removed}",
            list(&|f| *f == Fate::Kept),
            list(&|f| matches!(f, Fate::Changed { .. })),
            list(&|f| *f == Fate::Added),
        )
    }

    fn changed(&self) -> impl Iterator<Item = &str> {
        self.jails
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Changed { .. }))
            .map(|(n, _)| n.as_str())
    }
}

impl Engine {
    pub(super) fn reload(&mut self, config: &Config, now: Timestamp) -> String {
        let plan = plan(self.jails.configs(), &config.jails);
        let placeholder = Jails::new(Vec::new(), &self.metrics, &self.protected.proxies);
        let mut old: HashMap<String, JailRuntime> = std::mem::replace(&mut self.jails, placeholder)
            .into_runtimes()
            .into_iter()
            .map(|r| (r.config.name.clone(), r))
            .collect();
        let mut runtimes = Vec::with_capacity(config.jails.len());
        for (jc, (_, fate)) in config.jails.iter().zip(&plan.jails) {
            let runtime = match (fate, old.remove(&jc.name)) {
                (Fate::Kept, Some(rt)) => rt,
                (Fate::Changed { windows }, Some(rt)) => {
                    // The new filter and settings, the old totals (and windows when they
                    // still mean the same).
                    let mut fresh = JailRuntime::new(jc.clone(), None, &self.metrics);
                    fresh.stage.stats.failed = rt.stage.stats.failed;
                    fresh.stage.stats.stale = rt.stage.stats.stale;
                    if *windows {
                        if let Some(w) =
                            Jail::restore(jc.params.clone(), &rt.stage.window.snapshot())
                        {
                            fresh.stage.window = w;
                        }
                    }
                    fresh
                }
                _ => JailRuntime::new(jc.clone(), Some(self.progress.as_ref()), &self.metrics),
            };
            runtimes.push(runtime);
        }
        self.jails = Jails::new(runtimes, &self.metrics, &self.protected.proxies);
        // A changed jail's bans are held in its new window, and move to its new ports.
        let changed: Vec<String> = plan.changed().map(String::from).collect();
        let holds: Vec<_> = self
            .book
            .iter()
            .filter(|(_, a)| changed.contains(&a.ban.jail))
            .map(|(_, a)| a.ban.clone())
            .collect();
        for b in &holds {
            self.jails.hold(b);
        }
        let ports: HashMap<String, Option<Ports>> = changed
            .iter()
            .map(|j| (j.clone(), self.jails.ports_of(j)))
            .collect();
        // A jail moved behind Cloudflare or back: its bans move between the enforcers.
        let mut moved = self
            .enforcers
            .route_behind_cloudflare(&config.behind_cloudflare());
        moved |= self.book.set_ports(&ports);
        if moved {
            self.enforcers.reconcile(self.book.wanted());
        }
        let gone = self
            .book
            .iter()
            .filter(|((j, _), _)| plan.removed.contains(j))
            .map(|(slot, _)| slot.clone())
            .collect::<Vec<_>>();
        if !gone.is_empty() {
            self.end(&gone, now, EndReason::JailRemoved);
        }
        self.default_bantime = config
            .defaults
            .bantime
            .map_or(SignedDuration::from_hours(1), |d| d.0);
        self.dirty = true;
        plan.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jails(text: &str) -> Vec<JailConfig> {
        Config::parse(text, "moat.toml").unwrap().jails
    }

    #[test]
    fn the_plan_follows_the_settings() {
        let old = jails(
            "[jails.a]\nfilter = \"sshd\"\n[jails.b]\nfilter = \"sshd\"\n[jails.c]\nfilter = \"sshd\"\n[jails.d]\nfilter = \"sshd\"\n",
        );
        let new = jails(
            "[jails.a]\nfilter = \"sshd\"\n[jails.b]\nfilter = \"sshd\"\nmaxretry = 2\n[jails.c]\nfilter = \"sshd\"\nfindtime = \"1h\"\n[jails.e]\nfilter = \"sshd\"\n",
        );
        let p = plan(&old, &new);
        assert_eq!(
            p.jails,
            vec![
                ("a".to_string(), Fate::Kept),
                ("b".to_string(), Fate::Changed { windows: true }),
                ("c".to_string(), Fate::Changed { windows: false }),
                ("e".to_string(), Fate::Added),
            ]
        );
        assert_eq!(p.removed, ["d"]);
        assert_eq!(p.summary(), "kept: a; changed: b, c; added: e; removed: d");
        assert_eq!(
            plan(&old, &old).summary(),
            "kept: a, b, c, d; changed: none; added: none; removed: none"
        );
    }
}

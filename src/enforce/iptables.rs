//! The iptables/ipset enforcer, for hosts where nftables does not work (old kernels,
//! iptables-legacy): ipset `hash:net` sets with per-entry timeouts, `moat-ban4` and `moat-ban6`,
//! each matched by one rule in the `raw` table's PREROUTING (iptables and ip6tables), which
//! runs before conntrack and before Docker's DNAT, as nftables' priority −300 does. A jail
//! with `ports` has its own pair of sets (`moat-p22-4`…), matched only on its ports with
//! `multiport` (at most 15 ports or 7 ranges per rule, so long lists take several rules).
//!
//! `hash:net` holds single addresses and networks alike and, unlike an nftables interval set,
//! accepts overlapping entries. Changes go through `ipset restore` (one process, one batch);
//! the rules are inserted only when `-C` says they are missing, so nothing is duplicated and no
//! other rule of the `raw` table is touched.

use std::collections::{BTreeSet, HashSet};

use ipnet::IpNet;
use jiff::Timestamp;

use super::registry::Registered;
use super::{reconcile, seconds_left, BanOrder, Change, EnforceError, Enforcer, Failed, Key};
use crate::netfilter::iptables::multiport_lists;
use crate::vocab::Ports;

/// The two sets of a scope: IPv4 and IPv6.
fn sets_of(scope: &Option<Ports>) -> [String; 2] {
    let name = scope
        .as_ref()
        .map_or("ban".to_string(), |p| format!("{}-", p.name()));
    [format!("moat-{name}4"), format!("moat-{name}6")]
}

fn set_of(k: &Key) -> String {
    let [v4, v6] = sets_of(&k.ports);
    match k.target {
        IpNet::V4(_) => v4,
        IpNet::V6(_) => v6,
    }
}

/// The rules (iptables arguments after the chain) that drop a scope's set members.
fn rules_of(set: &str, scope: &Option<Ports>) -> Vec<Vec<String>> {
    let base = ["-m", "set", "--match-set", set, "src"].map(String::from);
    let Some(p) = scope else {
        let mut r = base.to_vec();
        r.extend(["-j", "DROP"].map(String::from));
        return vec![r];
    };
    let mut rules = Vec::new();
    for (proto, ranges) in [("tcp", p.tcp()), ("udp", p.udp())] {
        for c in multiport_lists(ranges) {
            let mut r = base.to_vec();
            r.extend(["-p", proto, "-m", "multiport", "--dports"].map(String::from));
            r.push(c);
            r.extend(["-j", "DROP"].map(String::from));
            rules.push(r);
        }
    }
    rules
}

/// Runs an iptables-family program; its output, or the error as text.
fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    crate::netfilter::run(program, args, input).map_err(|e| e.to_string())
}

/// The `iptables` enforcer: ipset sets and `raw` PREROUTING rules, one pair per scope (every
/// port, each jail's ports).
pub struct IptablesEnforcer {
    in_kernel: HashSet<Key>,
    /// The scopes whose sets and rules exist (every port, and the jails' ports).
    scopes: BTreeSet<Option<Ports>>,
    listed: bool,
    /// Restorations after moat's sets or rules were found missing, for status and metrics.
    pub repairs: u64,
}

impl Default for IptablesEnforcer {
    fn default() -> Self {
        IptablesEnforcer::new()
    }
}

impl IptablesEnforcer {
    /// An enforcer that has created nothing yet: the sets and rules are made at its first
    /// batch.
    pub fn new() -> IptablesEnforcer {
        IptablesEnforcer {
            in_kernel: HashSet::new(),
            scopes: BTreeSet::from([None]),
            listed: false,
            repairs: 0,
        }
    }

    /// Whether ipset and the raw table work here.
    pub fn probe() -> Result<(), String> {
        run("ipset", &["list", "-n"], None)?;
        run("iptables", &["-t", "raw", "-S", "PREROUTING"], None)?;
        run("ip6tables", &["-t", "raw", "-S", "PREROUTING"], None)?;
        Ok(())
    }

    /// Creates what is missing (sets, rules) for every scope; true when something was.
    fn ensure(&mut self) -> Result<bool, String> {
        let mut repaired = false;
        let sets = run("ipset", &["list", "-n"], None)?;
        for scope in &self.scopes {
            let [v4, v6] = sets_of(scope);
            for (set, family, program) in [(v4, "inet", "iptables"), (v6, "inet6", "ip6tables")] {
                if !sets.lines().any(|l| l.trim() == set) {
                    run(
                        "ipset",
                        &[
                            "create", &set, "hash:net", "family", family, "timeout", "0", "-exist",
                        ],
                        None,
                    )?;
                    repaired = true;
                }
                for rule in rules_of(&set, scope) {
                    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
                    let mut check = vec!["-t", "raw", "-C", "PREROUTING"];
                    check.extend(&rule);
                    if run(program, &check, None).is_err() {
                        let mut insert = vec!["-t", "raw", "-I", "PREROUTING", "1"];
                        insert.extend(&rule);
                        run(program, &insert, None)?;
                        repaired = true;
                    }
                }
            }
        }
        Ok(repaired)
    }

    /// Removes the sets, and the rules matching them, of scopes no longer used (a jail whose
    /// `ports` changed while moat was stopped): only `moat-` sets, never anything else.
    fn prune(&mut self) -> Result<(), String> {
        let ours: HashSet<String> = self.scopes.iter().flat_map(sets_of).collect();
        let sets = run("ipset", &["list", "-n"], None)?;
        let stale: Vec<&str> = sets
            .lines()
            .map(str::trim)
            .filter(|s| s.starts_with("moat-") && !ours.contains(*s))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        // Their rules first (a set in use cannot be destroyed): one listing per program.
        for program in ["iptables", "ip6tables"] {
            let rules = run(program, &["-t", "raw", "-S", "PREROUTING"], None)?;
            for line in rules.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let matches_stale = words
                    .windows(2)
                    .any(|w| w[0] == "--match-set" && stale.contains(&w[1]));
                if words.first() == Some(&"-A") && matches_stale {
                    let mut delete = vec!["-t", "raw", "-D"];
                    delete.extend(&words[1..]);
                    run(program, &delete, None)?;
                }
            }
        }
        for set in &stale {
            run("ipset", &["destroy", set], None)?;
            tracing::info!(set, "removed an ipset of ports no jail uses any more");
        }
        Ok(())
    }

    fn read_back(&mut self) -> Result<(), String> {
        let mut held = HashSet::new();
        for scope in &self.scopes {
            for set in sets_of(scope) {
                let out = run("ipset", &["save", &set], None)?;
                for line in out.lines() {
                    let mut words = line.split_whitespace();
                    if words.next() != Some("add") {
                        continue;
                    }
                    let _set = words.next();
                    if let Some(t) = words
                        .next()
                        .and_then(|w| crate::vocab::parse_target(w).ok())
                    {
                        held.insert(Key {
                            target: t,
                            ports: scope.clone(),
                        });
                    }
                }
            }
        }
        self.in_kernel = held;
        Ok(())
    }
}

impl super::registry::Registered for IptablesEnforcer {
    type Settings = super::registry::NoSettings;
    const NAME: &'static str = "iptables";
    const KIND: super::Kind = super::Kind::Host;

    fn retry(_: Option<&Self::Settings>) -> super::Retry {
        super::Retry::times(5)
    }

    fn build(_: Option<&Self::Settings>) -> Result<(Self, Option<String>), EnforceError> {
        IptablesEnforcer::probe().map_err(EnforceError::never)?;
        Ok((IptablesEnforcer::new(), None))
    }
}

impl Enforcer for IptablesEnforcer {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        let now = Timestamp::now();
        let mut script = String::new();
        let mut new_scope = false;
        for c in batch {
            match c {
                Change::Ban(b) => {
                    new_scope |= self.scopes.insert(b.ports.clone());
                    // 0: no timeout.
                    let timeout = match b.until {
                        None => 0,
                        Some(u) => match seconds_left(now, u) {
                            Some(secs) => secs,
                            None => continue,
                        },
                    };
                    // -exist: adding a held entry updates its timeout.
                    script.push_str(&format!(
                        "add {} {} timeout {timeout} -exist\n",
                        set_of(&b.key()),
                        b.target
                    ));
                }
                Change::Unban(k) => {
                    script.push_str(&format!("del {} {} -exist\n", set_of(k), k.target));
                }
            }
        }
        if new_scope {
            // A jail's ports seen for the first time: its sets and rules first.
            if let Err(error) = self.ensure() {
                return Failed::all(batch, &EnforceError::later(error));
            }
        }
        let mut result = run("ipset", &["restore"], Some(&script));
        if result.is_err() {
            // The sets may be gone (a flush, a reboot of the ruleset): restore and retry.
            result = self
                .ensure()
                .and_then(|_| run("ipset", &["restore"], Some(&script)));
        }
        match result {
            Ok(_) => {
                for c in batch {
                    match c {
                        Change::Ban(b) => {
                            self.in_kernel.insert(b.key());
                        }
                        Change::Unban(k) => {
                            self.in_kernel.remove(k);
                        }
                    }
                }
                Vec::new()
            }
            Err(error) => Failed::all(batch, &EnforceError::later(error)),
        }
    }

    /// Sets and rules for the scopes of `wanted` (those of scopes no longer used removed),
    /// then the difference with what the sets hold.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
        self.scopes = std::iter::once(None)
            .chain(wanted.iter().map(|b| b.ports.clone()))
            .collect();
        self.ensure()?;
        self.prune()?;
        self.read_back()?;
        self.listed = true;
        Ok(reconcile(wanted, &self.in_kernel))
    }

    fn held(&mut self) -> Result<HashSet<Key>, EnforceError> {
        if !self.listed {
            self.ensure()?;
            self.read_back()?;
            self.listed = true;
        }
        Ok(self.in_kernel.clone())
    }

    fn drifts(&self) -> bool {
        true
    }

    fn intact(&mut self) -> Result<bool, EnforceError> {
        if self.ensure()? {
            self.repairs += 1;
            tracing::warn!("moat's ipsets or raw PREROUTING rules were missing; restoring them from the ledger");
            self.read_back()?;
            return Ok(false);
        }
        Ok(true)
    }

    fn repairs(&self) -> u64 {
        self.repairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_port_lists_take_several_multiport_rules() {
        let none = rules_of("moat-ban4", &None);
        assert_eq!(
            none,
            [["-m", "set", "--match-set", "moat-ban4", "src", "-j", "DROP"]]
        );
        let many: Vec<String> = (1..=20).map(|p| (p * 100).to_string()).collect();
        let mut entries: Vec<&str> = many.iter().map(String::as_str).collect();
        entries.push("8000-8100/tcp");
        let p = Some(Ports::parse(entries).unwrap());
        let [v4, _] = sets_of(&p);
        assert!(v4.len() <= 31, "{v4}");
        let rules = rules_of(&v4, &p);
        // tcp: 20 ports + a range = 22 slots → 2 rules; udp: 20 ports → 2 rules.
        assert_eq!(rules.len(), 4);
        assert!(rules[0].contains(
            &"100,200,300,400,500,600,700,800,900,1000,1100,1200,1300,1400,1500".to_string()
        ));
        assert!(rules[1].contains(&"1600,1700,1800,1900,2000,8000:8100".to_string()));
        assert!(rules.iter().all(|r| r.last().unwrap() == "DROP"));
    }
}

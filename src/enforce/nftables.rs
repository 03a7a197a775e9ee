//! The nftables enforcer: bans in moat's own table, before Docker's DNAT.
//!
//! ```text
//! table inet moat {
//!     set ban4    { type ipv4_addr; flags timeout; }            # single addresses: hash, O(1)
//!     set ban4net { type ipv4_addr; flags interval, timeout; }  # networks
//!     set ban6    { type ipv6_addr; flags timeout; }
//!     set ban6net { type ipv6_addr; flags interval, timeout; }
//!     chain prerouting {
//!         type filter hook prerouting priority -300; policy accept;
//!         ip saddr @ban4 drop
//!         ip saddr @ban4net drop
//!         ip6 saddr @ban6 drop
//!         ip6 saddr @ban6net drop
//!     }
//! }
//! ```
//!
//! Priority −300 runs before conntrack (−200) and before Docker's DNAT (−100), so one ban
//! covers host services, bridge-published ports, docker-proxy, host-network containers and
//! Swarm's ingress, for IPv4 and IPv6, whatever Docker's own firewall backend. Elements carry
//! kernel-side timeouts: a ban ends on time even when moat is stopped.
//!
//! Only this table is ever created, replaced or deleted. Every change is one nft script, one
//! kernel transaction: all of a batch or nothing. Scripts run through libnftables in process
//! (about 0.1 ms for a small batch) or the `nft` program (2 to 3 ms); [`super::nft`] says why.
//!
//! Networks go to interval sets, which refuse overlapping elements: a network inside another
//! banned one is left out while the wider one holds (the wider ban already drops it).

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use jiff::Timestamp;
use serde_json::Value;

use super::nft::Nft;
use super::{Change, Enforcer, Failed};

/// The table moat owns.
pub const TABLE: &str = "moat";

/// Which set a target goes to.
fn set_of(t: &IpNet) -> &'static str {
    match t {
        IpNet::V4(n) if n.prefix_len() == 32 => "ban4",
        IpNet::V4(_) => "ban4net",
        IpNet::V6(n) if n.prefix_len() == 128 => "ban6",
        IpNet::V6(_) => "ban6net",
    }
}

fn element(t: &IpNet) -> String {
    if t.prefix_len() == t.max_prefix_len() {
        t.addr().to_string()
    } else {
        t.to_string()
    }
}

/// The table's definition, as one `nft -f` script that replaces it atomically.
pub fn table_script() -> String {
    format!(
        "add table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tset ban4 {{ type ipv4_addr; flags timeout; }}\n\
         \tset ban4net {{ type ipv4_addr; flags interval, timeout; }}\n\
         \tset ban6 {{ type ipv6_addr; flags timeout; }}\n\
         \tset ban6net {{ type ipv6_addr; flags interval, timeout; }}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority -300; policy accept;\n\
         \t\tip saddr @ban4 drop\n\
         \t\tip saddr @ban4net drop\n\
         \t\tip6 saddr @ban6 drop\n\
         \t\tip6 saddr @ban6net drop\n\
         \t}}\n\
         }}\n"
    )
}

/// The table as the kernel holds it now (without the sets' elements when `terse`): `None`
/// when absent.
fn list_table(nft: &mut Nft, terse: bool) -> Result<Option<Value>, String> {
    match nft.list_json(&format!("list table inet {TABLE}"), terse) {
        Ok(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| format!("nft's JSON: {e}")),
        Err(e) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the listed table has exactly moat's sets, chain and rules.
fn is_intact(table: &Value) -> bool {
    let items = table["nftables"].as_array().cloned().unwrap_or_default();
    let mut sets = HashSet::new();
    let mut chain_ok = false;
    let mut rules = Vec::new();
    for item in &items {
        if let Some(s) = item.get("set") {
            let name = s["name"].as_str().unwrap_or_default();
            let flags: Vec<&str> = s["flags"]
                .as_array()
                .map(|f| f.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let want_interval = name.ends_with("net");
            if flags.contains(&"timeout") && flags.contains(&"interval") == want_interval {
                sets.insert(name.to_string());
            }
        }
        if let Some(c) = item.get("chain") {
            chain_ok |= c["name"] == "prerouting"
                && c["hook"] == "prerouting"
                && c["prio"] == -300
                && c["type"] == "filter";
        }
        if let Some(r) = item.get("rule") {
            rules.push(r["expr"].to_string());
        }
    }
    let rule_sets = ["ban4", "ban4net", "ban6", "ban6net"];
    sets.len() == 4
        && chain_ok
        && rules.len() == 4
        && rule_sets.iter().all(|s| {
            rules
                .iter()
                .any(|r| r.contains(&format!("\"@{s}\"")) && r.contains("drop"))
        })
}

/// The targets in the listed table's sets.
fn elements(table: &Value) -> HashSet<IpNet> {
    let mut out = HashSet::new();
    for item in table["nftables"].as_array().into_iter().flatten() {
        let Some(set) = item.get("set") else { continue };
        for e in set["elem"].as_array().into_iter().flatten() {
            let val = e.get("elem").map_or(e, |inner| &inner["val"]);
            let net = match val {
                Value::String(a) => a.parse::<std::net::IpAddr>().ok().map(IpNet::from),
                Value::Object(o) => o.get("prefix").and_then(|p| {
                    let addr: std::net::IpAddr = p["addr"].as_str()?.parse().ok()?;
                    IpNet::new(addr, p["len"].as_u64()? as u8).ok()
                }),
                _ => None,
            };
            out.extend(net);
        }
    }
    out
}

/// Bans in `inet moat`.
pub struct NftEnforcer {
    nft: Nft,
    /// What the daemon wants banned, and until when (`None`: forever).
    wanted: HashMap<IpNet, Option<Timestamp>>,
    /// The wanted networks (wider than one address).
    nets: std::collections::BTreeSet<IpNet>,
    /// The elements were read from the kernel once.
    listed: bool,
    /// What this process put in the kernel.
    in_kernel: HashSet<IpNet>,
    /// Table rebuilds after drift, for status and metrics.
    pub repairs: u64,
}

impl Default for NftEnforcer {
    fn default() -> Self {
        NftEnforcer::new()
    }
}

impl NftEnforcer {
    pub fn new() -> NftEnforcer {
        NftEnforcer {
            nft: Nft::open(),
            wanted: HashMap::new(),
            nets: Default::default(),
            listed: false,
            in_kernel: HashSet::new(),
            repairs: 0,
        }
    }

    /// Whether nftables works here (libnftables or the `nft` program, and the kernel's
    /// nf_tables): how it runs, or why it does not.
    pub fn probe() -> Result<String, String> {
        let mut nft = Nft::open();
        nft.list_json("list tables", true)
            .map(|_| nft.describe())
            .map_err(|e| format!("nft list tables failed: {e}"))
    }

    /// How scripts reach the kernel, for status.
    pub fn describe(&self) -> String {
        self.nft.describe()
    }

    /// The wanted network (other than `t`) that covers `t`, if any.
    fn covered(&self, t: &IpNet) -> bool {
        self.nets.iter().any(|n| n != t && n.contains(t))
    }

    /// The kernel operations for a batch, computed from what this process put in the kernel:
    /// `(target, Some(until))` to (re)add, `(target, None)` to delete. Only a network being
    /// added or removed costs more than the batch itself (it may cover held targets).
    fn plan(&mut self, batch: &[Change]) -> Vec<(IpNet, Option<Option<Timestamp>>)> {
        let mut ops: HashMap<IpNet, Option<Option<Timestamp>>> = HashMap::new();
        for c in batch {
            match c {
                Change::Ban(b) => {
                    let t = b.target;
                    let old = self.wanted.insert(t, b.until);
                    let is_net = t.prefix_len() < t.max_prefix_len();
                    if is_net {
                        self.nets.insert(t);
                        // Targets inside it leave the kernel: the network drops them.
                        for held in self.in_kernel.iter().filter(|h| **h != t && t.contains(*h)) {
                            ops.insert(*held, None);
                        }
                    }
                    if self.covered(&t) {
                        if self.in_kernel.contains(&t) {
                            ops.insert(t, None);
                        }
                        continue;
                    }
                    if !self.in_kernel.contains(&t) || old != Some(b.until) {
                        ops.insert(t, Some(b.until));
                    }
                }
                Change::Unban(t) => {
                    self.wanted.remove(t);
                    if self.nets.remove(t) {
                        // What it covered and is still wanted goes back in.
                        let back: Vec<(IpNet, Option<Timestamp>)> = self
                            .wanted
                            .iter()
                            .filter(|(w, _)| t.contains(*w) && !self.covered(w))
                            .map(|(w, u)| (*w, *u))
                            .collect();
                        for (w, u) in back {
                            ops.insert(w, Some(u));
                        }
                    }
                    ops.insert(*t, None);
                }
            }
        }
        ops.into_iter().collect()
    }

    /// The `nft` script for planned operations: one `delete element` and one `add element`
    /// command per set, each listing all its elements (100,000 elements in one command load
    /// in about 0.4 s; as 100,000 commands, ten times slower).
    fn script(&self, ops: &[(IpNet, Option<Option<Timestamp>>)], now: Timestamp) -> String {
        let mut deletes: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        let mut adds: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (t, op) in ops {
            // Deletions come first, also before a re-add (which replaces an element's timeout).
            if self.in_kernel.contains(t) {
                deletes.entry(set_of(t)).or_default().push(element(t));
            }
            let Some(until) = op else { continue };
            let timeout = match until {
                None => String::new(),
                Some(u) => {
                    let secs = now.duration_until(*u).as_secs();
                    if secs <= 0 {
                        continue;
                    }
                    format!(" timeout {secs}s")
                }
            };
            adds.entry(set_of(t))
                .or_default()
                .push(format!("{}{timeout}", element(t)));
        }
        let mut s = String::new();
        for (verb, groups) in [("delete", &mut deletes), ("add", &mut adds)] {
            for (set, elements) in groups.iter_mut() {
                elements.sort();
                s.push_str(&format!(
                    "{verb} element inet {TABLE} {set} {{ {} }}\n",
                    elements.join(", ")
                ));
            }
        }
        s
    }

    /// Records planned operations as done.
    fn commit(&mut self, ops: &[(IpNet, Option<Option<Timestamp>>)]) {
        for (t, op) in ops {
            match op {
                Some(_) => {
                    self.in_kernel.insert(*t);
                }
                None => {
                    self.in_kernel.remove(t);
                }
            }
        }
    }

    /// Every wanted target not covered by a wider one, as operations (after a rebuild).
    fn everything(&self) -> Vec<(IpNet, Option<Option<Timestamp>>)> {
        self.wanted
            .iter()
            .filter(|(t, _)| !self.covered(t))
            .map(|(t, u)| (*t, Some(*u)))
            .collect()
    }

    /// Replaces the table with an empty, correct one.
    fn rebuild(&mut self) -> Result<(), String> {
        self.nft.run(&table_script())?;
        self.in_kernel.clear();
        Ok(())
    }

    /// Restores a table found missing or changed, and says so.
    fn repair(&mut self, changed: bool) -> Result<(), String> {
        self.repairs += 1;
        tracing::warn!(
            "table inet {TABLE} was {}; restoring it from the ledger",
            if changed { "changed" } else { "missing" }
        );
        self.rebuild()
    }

    /// Reads the table's elements back; restores the table when it is not intact.
    fn sync_from_kernel(&mut self) -> Result<(), String> {
        match list_table(&mut self.nft, false)? {
            Some(t) if is_intact(&t) => {
                self.in_kernel = elements(&t);
                Ok(())
            }
            // Absent at the first start: created, nothing to report.
            None if !self.listed => self.rebuild(),
            found => self.repair(found.is_some()),
        }
    }
}

impl Enforcer for NftEnforcer {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        let started = std::time::Instant::now();
        let ops = self.plan(batch);
        let now = Timestamp::now();
        let script = self.script(&ops, now);
        if script.is_empty() {
            return Vec::new();
        }
        let planned = started.elapsed();
        let result = match self.nft.run(&script) {
            Ok(()) => {
                self.commit(&ops);
                Ok(())
            }
            Err(first) => {
                // The kernel is not what this process thinks (a flush, a ban that expired in
                // the kernel): read it back, restore the table if needed, and send everything.
                tracing::debug!("nft batch failed ({first}); re-reading the table");
                self.sync_from_kernel().and_then(|()| {
                    let all = self.everything();
                    let ops: Vec<_> = all
                        .into_iter()
                        .filter(|(t, _)| !self.in_kernel.contains(t))
                        .collect();
                    let script = self.script(&ops, now);
                    self.nft.run(&script).map(|()| self.commit(&ops))
                })
            }
        };
        tracing::debug!(changes = batch.len(), ?planned, total = ?started.elapsed(), "nft batch");
        match result {
            Ok(()) => Vec::new(),
            Err(error) => Failed::all(batch, &error),
        }
    }

    /// What the kernel holds. The first call reads every element back (what a previous run
    /// left, since bans outlive moat); later ones trust what this process applied, which the
    /// periodic [`Enforcer::intact`] check keeps true.
    fn held(&mut self) -> Result<HashSet<IpNet>, String> {
        if !self.listed {
            self.sync_from_kernel()?;
            self.listed = true;
        }
        // Targets left out because a wider network covers them count as held.
        let mut held = self.in_kernel.clone();
        held.extend(self.wanted.keys().filter(|t| self.covered(t)).copied());
        Ok(held)
    }

    /// Lists only the table's structure (not the sets' elements, so it stays cheap with
    /// 100,000 bans); restores the table when it is missing or changed.
    fn intact(&mut self) -> Result<bool, String> {
        match list_table(&mut self.nft, true)? {
            Some(t) if is_intact(&t) => Ok(true),
            found => {
                self.repair(found.is_some())?;
                Ok(false)
            }
        }
    }

    fn drifts(&self) -> bool {
        true
    }

    fn repairs(&self) -> u64 {
        self.repairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_elements() {
        assert_eq!(set_of(&"192.0.2.1/32".parse().unwrap()), "ban4");
        assert_eq!(set_of(&"2001:db8::/64".parse().unwrap()), "ban6net");
        assert_eq!(element(&"192.0.2.1/32".parse().unwrap()), "192.0.2.1");
        assert_eq!(
            element(&"198.51.100.0/24".parse().unwrap()),
            "198.51.100.0/24"
        );
    }

    fn ban(t: &str, until: Option<i64>) -> Change {
        Change::Ban(super::super::BanOrder {
            target: t.parse().unwrap(),
            jail: "j".into(),
            until: until.map(|s| Timestamp::from_second(s).unwrap()),
            failures: 1,
        })
    }

    fn run(e: &mut NftEnforcer, batch: &[Change]) -> String {
        let ops = e.plan(batch);
        let script = e.script(&ops, Timestamp::from_second(1_000_000).unwrap());
        e.commit(&ops);
        let mut lines: Vec<&str> = script.lines().collect();
        lines.sort();
        lines.join("\n")
    }

    #[test]
    fn batches_become_element_changes() {
        let mut e = NftEnforcer::new();
        assert_eq!(
            run(&mut e, &[ban("192.0.2.1/32", Some(1_000_600))]),
            "add element inet moat ban4 { 192.0.2.1 timeout 600s }"
        );
        assert_eq!(run(&mut e, &[ban("192.0.2.1/32", Some(1_000_600))]), "");
        assert_eq!(
            run(&mut e, &[ban("192.0.2.1/32", None)]),
            "add element inet moat ban4 { 192.0.2.1 }\ndelete element inet moat ban4 { 192.0.2.1 }"
        );
        assert_eq!(
            run(&mut e, &[Change::Unban("192.0.2.1/32".parse().unwrap())]),
            "delete element inet moat ban4 { 192.0.2.1 }"
        );
        assert_eq!(
            run(&mut e, &[Change::Unban("192.0.2.1/32".parse().unwrap())]),
            ""
        );
    }

    #[test]
    fn networks_cover_what_they_contain() {
        let mut e = NftEnforcer::new();
        run(&mut e, &[ban("198.51.100.7/32", None)]);
        assert_eq!(
            run(&mut e, &[ban("198.51.100.0/24", None)]),
            "add element inet moat ban4net { 198.51.100.0/24 }\ndelete element inet moat ban4 { 198.51.100.7 }"
        );
        assert_eq!(run(&mut e, &[ban("198.51.100.9/32", None)]), "");
        assert_eq!(
            run(&mut e, &[Change::Unban("198.51.100.0/24".parse().unwrap())]),
            "add element inet moat ban4 { 198.51.100.7, 198.51.100.9 }\ndelete element inet moat ban4net { 198.51.100.0/24 }"
        );
    }
}

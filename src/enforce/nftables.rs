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
use super::{reconcile, seconds_left, BanOrder, Change, Enforcer, Failed};

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

/// A target as an element of its set: an address alone, or a network.
struct Element<'a>(&'a IpNet);

impl std::fmt::Display for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// The separator before the next element of a list.
fn sep(list: &str) -> &'static str {
    if list.is_empty() {
        ""
    } else {
        ", "
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

/// moat's table as the kernel holds it now, without the sets' elements: `None` when absent.
///
/// Read from a terse listing of the whole ruleset, then filtered: with nft 1.0.6, `list
/// table` fetches every set element from the kernel even when told not to print them (0.8 s
/// with 100,000 bans), while a terse `list ruleset` fetches none (about 1 ms).
fn own_table(nft: &mut Nft) -> Result<Option<Value>, String> {
    let json = nft.list_json("list ruleset", true)?;
    let all: Value = serde_json::from_str(&json).map_err(|e| format!("nft's JSON: {e}"))?;
    let ours = |item: &Value, key: &str| {
        item.get(key).is_some_and(|o| {
            o["family"] == "inet" && o[if key == "table" { "name" } else { "table" }] == TABLE
        })
    };
    let items: Vec<Value> = all["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| ["table", "set", "chain", "rule"].iter().any(|k| ours(i, k)))
        .cloned()
        .collect();
    if !items.iter().any(|i| ours(i, "table")) {
        return Ok(None);
    }
    Ok(Some(serde_json::json!({ "nftables": items })))
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

/// Bans in `inet moat`.
pub struct NftEnforcer {
    nft: Nft,
    /// What the daemon wants banned, and until when (`None`: forever).
    wanted: HashMap<IpNet, Option<Timestamp>>,
    /// The wanted networks (wider than one address).
    nets: std::collections::BTreeSet<IpNet>,
    /// The next batch replaces the whole table (at start, after a failed batch).
    replace: bool,
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
            replace: true,
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

    /// The `nft` script for planned operations: per set, one command for the deletions and one
    /// for the additions, each listing all its elements (100,000 elements in one command load
    /// in about 0.4 s; as 100,000 commands, ten times slower).
    fn script(&self, ops: &[(IpNet, Option<Option<Timestamp>>)], now: Timestamp) -> String {
        use std::fmt::Write;
        let mut ops: Vec<_> = ops.iter().collect();
        ops.sort_unstable_by_key(|(t, _)| *t);
        let mut deletes: std::collections::BTreeMap<&str, String> = Default::default();
        let mut adds: std::collections::BTreeMap<&str, String> = Default::default();
        for (t, op) in ops {
            // Deletions come first, also before a re-add (which replaces an element's timeout).
            if self.in_kernel.contains(t) {
                let list = deletes.entry(set_of(t)).or_default();
                let _ = write!(list, "{}{}", sep(list), Element(t));
            }
            let Some(until) = op else { continue };
            let secs = match until {
                None => None,
                Some(u) => match seconds_left(now, *u) {
                    None => continue,
                    secs => secs,
                },
            };
            let list = adds.entry(set_of(t)).or_default();
            let _ = write!(list, "{}{}", sep(list), Element(t));
            if let Some(secs) = secs {
                let _ = write!(list, " timeout {secs}s");
            }
        }
        let mut s = String::new();
        for (set, list) in &deletes {
            // Added first, so that deleting an element the kernel already let expire (its
            // timeout ends with the ban) is not an error that fails the whole batch.
            let _ = writeln!(s, "add element inet {TABLE} {set} {{ {list} }}");
            let _ = writeln!(s, "delete element inet {TABLE} {set} {{ {list} }}");
        }
        for (set, list) in &adds {
            let _ = writeln!(s, "add element inet {TABLE} {set} {{ {list} }}");
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

    /// Replaces the table, in one transaction, with a correct one holding every wanted ban:
    /// no moment without bans, and nothing read back from the kernel (listing 100,000
    /// elements costs more than loading them).
    fn replace_table(&mut self, now: Timestamp) -> Result<(), String> {
        self.replace = true;
        self.in_kernel.clear();
        let started = std::time::Instant::now();
        let all = self.everything();
        let script = table_script() + &self.script(&all, now);
        let built = started.elapsed();
        self.nft.run(&script)?;
        tracing::debug!(elements = all.len(), ?built, took = ?started.elapsed(), "table replaced");
        self.commit(&all);
        self.replace = false;
        Ok(())
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
        let result = if self.replace {
            self.replace_table(now)
        } else {
            let script = self.script(&ops, now);
            if script.is_empty() {
                return Vec::new();
            }
            match self.nft.run(&script) {
                Ok(()) => {
                    self.commit(&ops);
                    Ok(())
                }
                Err(first) => {
                    // The kernel is not what this process thinks (the table changed behind
                    // moat's back): put back everything, as one transaction.
                    tracing::warn!(
                        "nft batch failed ({first}); replacing table inet {TABLE} with every active ban"
                    );
                    self.replace_table(now)
                }
            }
        };
        tracing::debug!(changes = batch.len(), total = ?started.elapsed(), "nft batch");
        match result {
            Ok(()) => Vec::new(),
            Err(error) => Failed::all(batch, &error),
        }
    }

    /// What this process put in the kernel (the periodic [`Enforcer::intact`] check keeps it
    /// true), counting targets left out because a wider network covers them.
    fn held(&mut self) -> Result<HashSet<IpNet>, String> {
        let mut held = self.in_kernel.clone();
        held.extend(self.wanted.keys().filter(|t| self.covered(t)).copied());
        Ok(held)
    }

    /// The next batch replaces the table with exactly `wanted` (whatever a previous run or
    /// someone else left in it); with nothing wanted, the table is replaced now.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, String> {
        self.wanted.clear();
        self.nets.clear();
        self.in_kernel.clear();
        if wanted.is_empty() {
            self.replace_table(Timestamp::now())?;
            return Ok(Vec::new());
        }
        self.replace = true;
        Ok(reconcile(wanted, &HashSet::new()))
    }

    /// Lists only the table's structure (cheap with 100,000 bans). Missing or changed: said,
    /// counted, and the next batch (the caller converges) replaces the table.
    fn intact(&mut self) -> Result<bool, String> {
        match own_table(&mut self.nft)? {
            Some(t) if is_intact(&t) => Ok(true),
            found => {
                self.repairs += 1;
                tracing::warn!(
                    "table inet {TABLE} was {}; restoring it from the ledger",
                    if found.is_some() {
                        "changed"
                    } else {
                        "missing"
                    }
                );
                self.replace = true;
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
        let element = |t: &str| Element(&t.parse().unwrap()).to_string();
        assert_eq!(element("192.0.2.1/32"), "192.0.2.1");
        assert_eq!(element("198.51.100.0/24"), "198.51.100.0/24");
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
        script.trim_end().to_string()
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
            "add element inet moat ban4 { 192.0.2.1 }\n\
             delete element inet moat ban4 { 192.0.2.1 }\n\
             add element inet moat ban4 { 192.0.2.1 }"
        );
        // Added before it is deleted: an element the kernel let expire is no error.
        assert_eq!(
            run(&mut e, &[Change::Unban("192.0.2.1/32".parse().unwrap())]),
            "add element inet moat ban4 { 192.0.2.1 }\n\
             delete element inet moat ban4 { 192.0.2.1 }"
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
            "add element inet moat ban4 { 198.51.100.7 }\n\
             delete element inet moat ban4 { 198.51.100.7 }\n\
             add element inet moat ban4net { 198.51.100.0/24 }"
        );
        assert_eq!(run(&mut e, &[ban("198.51.100.9/32", None)]), "");
        assert_eq!(
            run(&mut e, &[Change::Unban("198.51.100.0/24".parse().unwrap())]),
            "add element inet moat ban4net { 198.51.100.0/24 }\n\
             delete element inet moat ban4net { 198.51.100.0/24 }\n\
             add element inet moat ban4 { 198.51.100.7, 198.51.100.9 }"
        );
    }
}

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
//! (about 0.1 ms for a small batch) or the `nft` program (2 to 3 ms); [`crate::netfilter::nft`] says why.
//!
//! Networks go to interval sets, which refuse overlapping elements: a network inside another
//! banned one is left out while the wider one holds (the wider ban already drops it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ipnet::IpNet;
use jiff::Timestamp;
use serde_json::Value;

use super::registry::Registered;
use super::{reconcile, seconds_left, BanOrder, Change, EnforceError, Enforcer, Failed, Key};
use crate::netfilter::nft::Nft;
use crate::vocab::Ports;

/// The table moat owns.
pub const TABLE: &str = "moat";

/// The four sets of a scope: single IPv4 addresses, IPv4 networks, the same for IPv6.
/// Every-port bans go to `ban4`…; a jail's ports to `p22_4`… (named after the ports).
fn sets_of(scope: &Option<Ports>) -> [String; 4] {
    let (prefix, sep) = match scope {
        None => ("ban".to_string(), ""),
        Some(p) => (p.name(), "_"),
    };
    ["4", "4net", "6", "6net"].map(|kind| format!("{prefix}{sep}{kind}"))
}

/// Which of its scope's four sets a target goes to.
fn kind_of(t: &IpNet) -> usize {
    match t {
        IpNet::V4(n) if n.prefix_len() == 32 => 0,
        IpNet::V4(_) => 1,
        IpNet::V6(n) if n.prefix_len() == 128 => 2,
        IpNet::V6(_) => 3,
    }
}

/// Which set a ban goes to.
#[cfg(test)]
fn set_of(k: &Key) -> String {
    sets_of(&k.ports)[kind_of(&k.target)].clone()
}

/// The rules of a scope: its four sets, dropped on every port or on its ports.
fn rules_of(scope: &Option<Ports>) -> Vec<String> {
    let sets = sets_of(scope);
    let mut rules = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let family = if i < 2 { "ip" } else { "ip6" };
        match scope {
            None => rules.push(format!("{family} saddr @{set} drop")),
            Some(p) => {
                for (proto, ranges) in [("tcp", p.tcp()), ("udp", p.udp())] {
                    if !ranges.is_empty() {
                        let ports = crate::vocab::ports::ranges_text(ranges, ", ", "-");
                        rules.push(format!(
                            "{family} saddr @{set} {proto} dport {{ {ports} }} drop"
                        ));
                    }
                }
            }
        }
    }
    rules
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

/// The table's definition with the sets and rules of `scopes`, as one `nft -f` script that
/// replaces it atomically.
pub fn table_script<'a>(scopes: impl IntoIterator<Item = &'a Option<Ports>>) -> String {
    use std::fmt::Write;
    let scopes: Vec<_> = scopes.into_iter().collect();
    let mut s =
        format!("add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    for scope in &scopes {
        let [v4, v4net, v6, v6net] = sets_of(scope);
        let _ = writeln!(s, "\tset {v4} {{ type ipv4_addr; flags timeout; }}");
        let _ = writeln!(
            s,
            "\tset {v4net} {{ type ipv4_addr; flags interval, timeout; }}"
        );
        let _ = writeln!(s, "\tset {v6} {{ type ipv6_addr; flags timeout; }}");
        let _ = writeln!(
            s,
            "\tset {v6net} {{ type ipv6_addr; flags interval, timeout; }}"
        );
    }
    s.push_str(
        "\tchain prerouting {\n\t\ttype filter hook prerouting priority -300; policy accept;\n",
    );
    for scope in &scopes {
        for rule in rules_of(scope) {
            let _ = writeln!(s, "\t\t{rule}");
        }
    }
    s.push_str("\t}\n}\n");
    s
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

/// Whether the listed table has the sets, chain and rules of `scopes`: every set with its
/// flags, the base chain, and as many rules as the scopes make, each set dropped by one.
fn is_intact(table: &Value, scopes: &BTreeSet<Option<Ports>>) -> bool {
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
    let wanted_rules: usize = scopes.iter().map(|s| rules_of(s).len()).sum();
    chain_ok
        && rules.len() == wanted_rules
        && scopes.iter().flat_map(sets_of).all(|set| {
            sets.contains(&set)
                && rules
                    .iter()
                    .any(|r| r.contains(&format!("\"@{set}\"")) && r.contains("drop"))
        })
}

/// Bans in `inet moat`.
pub struct NftEnforcer {
    nft: Nft,
    /// What the daemon wants banned, and until when (`None`: forever).
    wanted: HashMap<Key, Option<Timestamp>>,
    /// The wanted networks (wider than one address).
    nets: BTreeSet<Key>,
    /// The scopes whose sets and rules the table has (every port, and the jails' ports).
    scopes: BTreeSet<Option<Ports>>,
    /// The next batch replaces the whole table (at start, after a failed batch).
    replace: bool,
    /// What this process put in the kernel.
    in_kernel: HashSet<Key>,
    /// Table rebuilds after drift, for status and metrics.
    pub repairs: u64,
}

impl Default for NftEnforcer {
    fn default() -> Self {
        NftEnforcer::new()
    }
}

impl NftEnforcer {
    /// An enforcer whose first batch replaces moat's whole table.
    pub fn new() -> NftEnforcer {
        NftEnforcer {
            nft: Nft::open(),
            wanted: HashMap::new(),
            nets: BTreeSet::new(),
            scopes: BTreeSet::from([None]),
            replace: true,
            in_kernel: HashSet::new(),
            repairs: 0,
        }
    }

    /// How scripts reach the kernel, for status.
    pub fn describe(&self) -> String {
        self.nft.describe()
    }

    /// Whether a wanted network of the same scope (other than `k`) covers `k`.
    fn covered(&self, k: &Key) -> bool {
        self.nets
            .iter()
            .any(|n| n != k && n.ports == k.ports && n.target.contains(&k.target))
    }

    /// The kernel operations for a batch, computed from what this process put in the kernel:
    /// `(target, Some(until))` to (re)add, `(target, None)` to delete. Only a network being
    /// added or removed costs more than the batch itself (it may cover held targets).
    fn plan(&mut self, batch: &[Change]) -> Vec<(Key, Option<Option<Timestamp>>)> {
        let mut ops: HashMap<Key, Option<Option<Timestamp>>> = HashMap::new();
        for c in batch {
            match c {
                Change::Ban(b) => {
                    let k = b.key();
                    if !self.scopes.contains(&k.ports) {
                        // A jail's ports seen for the first time: the table needs its sets and
                        // rules, so this batch replaces it.
                        self.scopes.insert(k.ports.clone());
                        self.replace = true;
                    }
                    let old = self.wanted.insert(k.clone(), b.until);
                    let is_net = k.target.prefix_len() < k.target.max_prefix_len();
                    if is_net {
                        self.nets.insert(k.clone());
                    }
                    if self.replace {
                        // The whole table is written from `wanted`: no operations to plan.
                        continue;
                    }
                    if is_net {
                        // Targets inside it leave the kernel: the network drops them.
                        for held in self.in_kernel.iter().filter(|h| {
                            **h != k && h.ports == k.ports && k.target.contains(&h.target)
                        }) {
                            ops.insert(held.clone(), None);
                        }
                    }
                    if self.covered(&k) {
                        if self.in_kernel.contains(&k) {
                            ops.insert(k, None);
                        }
                        continue;
                    }
                    if !self.in_kernel.contains(&k) || old != Some(b.until) {
                        ops.insert(k, Some(b.until));
                    }
                }
                Change::Unban(k) => {
                    self.wanted.remove(k);
                    if self.nets.remove(k) {
                        // What it covered and is still wanted goes back in.
                        let back: Vec<(Key, Option<Timestamp>)> = self
                            .wanted
                            .iter()
                            .filter(|(w, _)| {
                                w.ports == k.ports
                                    && k.target.contains(&w.target)
                                    && !self.covered(w)
                            })
                            .map(|(w, u)| (w.clone(), *u))
                            .collect();
                        for (w, u) in back {
                            ops.insert(w, Some(u));
                        }
                    }
                    ops.insert(k.clone(), None);
                }
            }
        }
        ops.into_iter().collect()
    }

    /// The `nft` script for planned operations: per set, one command for the deletions and one
    /// for the additions, each listing all its elements (100,000 elements in one command load
    /// in about 0.4 s; as 100,000 commands, ten times slower).
    fn script(&self, ops: &[(Key, Option<Option<Timestamp>>)], now: Timestamp) -> String {
        use std::fmt::Write;
        let mut ops: Vec<_> = ops.iter().collect();
        ops.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Keyed by scope and kind; named once per set, not per element.
        let mut deletes: BTreeMap<(&Option<Ports>, usize), String> = BTreeMap::new();
        let mut adds: BTreeMap<(&Option<Ports>, usize), String> = BTreeMap::new();
        for (t, op) in ops {
            let set = (&t.ports, kind_of(&t.target));
            // Deletions come first, also before a re-add (which replaces an element's timeout).
            if self.in_kernel.contains(t) {
                let list = deletes.entry(set).or_default();
                let _ = write!(list, "{}{}", sep(list), Element(&t.target));
            }
            let Some(until) = op else { continue };
            let secs = match until {
                None => None,
                Some(u) => match seconds_left(now, *u) {
                    None => continue,
                    secs => secs,
                },
            };
            let list = adds.entry(set).or_default();
            let _ = write!(list, "{}{}", sep(list), Element(&t.target));
            if let Some(secs) = secs {
                let _ = write!(list, " timeout {secs}s");
            }
        }
        let mut s = String::new();
        let name = |(scope, kind): &(&Option<Ports>, usize)| sets_of(scope)[*kind].clone();
        for (set, list) in &deletes {
            let set = name(set);
            // Added first, so that deleting an element the kernel already let expire (its
            // timeout ends with the ban) is not an error that fails the whole batch.
            let _ = writeln!(s, "add element inet {TABLE} {set} {{ {list} }}");
            let _ = writeln!(s, "delete element inet {TABLE} {set} {{ {list} }}");
        }
        for (set, list) in &adds {
            let set = name(set);
            let _ = writeln!(s, "add element inet {TABLE} {set} {{ {list} }}");
        }
        s
    }

    /// Records planned operations as done.
    fn commit(&mut self, ops: &[(Key, Option<Option<Timestamp>>)]) {
        for (t, op) in ops {
            match op {
                Some(_) => {
                    self.in_kernel.insert(t.clone());
                }
                None => {
                    self.in_kernel.remove(t);
                }
            }
        }
    }

    /// Every wanted target not covered by a wider one, as operations (after a rebuild).
    fn everything(&self) -> Vec<(Key, Option<Option<Timestamp>>)> {
        self.wanted
            .iter()
            .filter(|(t, _)| !self.covered(t))
            .map(|(t, u)| (t.clone(), Some(*u)))
            .collect()
    }

    /// Replaces the table, in one transaction, with a correct one holding every wanted ban:
    /// no moment without bans, and nothing read back from the kernel (listing 100,000
    /// elements costs more than loading them).
    fn replace_table(&mut self, now: Timestamp) -> Result<(), String> {
        self.replace = true;
        self.in_kernel.clear();
        let started = std::time::Instant::now();
        // The scopes of what is wanted now (a jail whose ports changed leaves none behind).
        self.scopes = std::iter::once(None)
            .chain(self.wanted.keys().map(|k| k.ports.clone()))
            .collect();
        let all = self.everything();
        let script = table_script(&self.scopes) + &self.script(&all, now);
        let built = started.elapsed();
        self.nft.run(&script)?;
        tracing::debug!(elements = all.len(), ?built, took = ?started.elapsed(), "table replaced");
        self.commit(&all);
        self.replace = false;
        Ok(())
    }
}

impl super::registry::Registered for NftEnforcer {
    type Settings = super::registry::NoSettings;
    const NAME: &'static str = "nftables";
    const KIND: super::Kind = super::Kind::Host;

    fn retry(_: Option<&Self::Settings>) -> super::Retry {
        super::Retry::times(5)
    }

    fn build(_: Option<&Self::Settings>) -> Result<(Self, Option<String>), EnforceError> {
        let how = Nft::probe().map_err(EnforceError::never)?;
        Ok((NftEnforcer::new(), Some(format!("through {how}"))))
    }
}

impl Enforcer for NftEnforcer {
    fn name(&self) -> &'static str {
        Self::NAME
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
            Err(error) => Failed::all(batch, &EnforceError::later(error)),
        }
    }

    /// What this process put in the kernel (the periodic [`Enforcer::intact`] check keeps it
    /// true), counting targets left out because a wider network covers them.
    fn held(&mut self) -> Result<HashSet<Key>, EnforceError> {
        let mut held = self.in_kernel.clone();
        held.extend(self.wanted.keys().filter(|t| self.covered(t)).cloned());
        Ok(held)
    }

    /// The next batch replaces the table with exactly `wanted` (whatever a previous run or
    /// someone else left in it); with nothing wanted, the table is replaced now.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
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
    fn intact(&mut self) -> Result<bool, EnforceError> {
        match own_table(&mut self.nft)? {
            Some(t) if is_intact(&t, &self.scopes) => Ok(true),
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
        assert_eq!(set_of(&unban("192.0.2.1/32")), "ban4");
        assert_eq!(set_of(&unban("2001:db8::/64")), "ban6net");
        let on_22 = Key {
            ports: Some(Ports::parse(["22"]).unwrap()),
            ..unban("198.51.100.0/24")
        };
        assert_eq!(set_of(&on_22), "p22_4net");
        let element = |t: &str| Element(&t.parse().unwrap()).to_string();
        assert_eq!(element("192.0.2.1/32"), "192.0.2.1");
        assert_eq!(element("198.51.100.0/24"), "198.51.100.0/24");
    }

    fn ban(t: &str, until: Option<i64>) -> Change {
        Change::Ban(super::super::BanOrder {
            target: t.parse().unwrap(),
            jail: "j".into(),
            started: Timestamp::UNIX_EPOCH,
            until: until.map(|s| Timestamp::from_second(s).unwrap()),
            failures: 1,
            ports: None,
            evidence: Default::default(),
            node: None,
        })
    }

    /// An enforcer whose table is in place (its first replacement done).
    fn fresh() -> NftEnforcer {
        let mut e = NftEnforcer::new();
        e.replace = false;
        e
    }

    fn unban(t: &str) -> Key {
        Key::all_ports(t.parse().unwrap())
    }

    fn run(e: &mut NftEnforcer, batch: &[Change]) -> String {
        let ops = e.plan(batch);
        let script = e.script(&ops, Timestamp::from_second(1_000_000).unwrap());
        e.commit(&ops);
        script.trim_end().to_string()
    }

    #[test]
    fn batches_become_element_changes() {
        let mut e = fresh();
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
            run(&mut e, &[Change::Unban(unban("192.0.2.1/32"))]),
            "add element inet moat ban4 { 192.0.2.1 }\n\
             delete element inet moat ban4 { 192.0.2.1 }"
        );
        assert_eq!(run(&mut e, &[Change::Unban(unban("192.0.2.1/32"))]), "");
    }

    #[test]
    fn networks_cover_what_they_contain() {
        let mut e = fresh();
        run(&mut e, &[ban("198.51.100.7/32", None)]);
        assert_eq!(
            run(&mut e, &[ban("198.51.100.0/24", None)]),
            "add element inet moat ban4 { 198.51.100.7 }\n\
             delete element inet moat ban4 { 198.51.100.7 }\n\
             add element inet moat ban4net { 198.51.100.0/24 }"
        );
        assert_eq!(run(&mut e, &[ban("198.51.100.9/32", None)]), "");
        assert_eq!(
            run(&mut e, &[Change::Unban(unban("198.51.100.0/24"))]),
            "add element inet moat ban4net { 198.51.100.0/24 }\n\
             delete element inet moat ban4net { 198.51.100.0/24 }\n\
             add element inet moat ban4 { 198.51.100.7, 198.51.100.9 }"
        );
    }

    #[test]
    fn a_jails_ports_have_their_own_sets_and_rules() {
        let ports = Some(Ports::parse(["22", "53/udp"]).unwrap());
        let script = table_script(&[None, ports.clone()]);
        for line in [
            "set p22_4net { type ipv4_addr; flags interval, timeout; }",
            "ip saddr @ban4 drop",
            "ip saddr @t22_u22_53_4 tcp dport { 22 } drop",
            "ip6 saddr @t22_u22_53_6net udp dport { 22, 53 } drop",
        ] {
            let line = line.replace("p22_4net", "t22_u22_53_4net");
            assert!(script.contains(&line), "{line}\n{script}");
        }
        // The same address on every port and on the jail's ports: two elements, lifted apart.
        let mut e = fresh();
        let Change::Ban(mut on_ports) = ban("192.0.2.1/32", None) else {
            unreachable!()
        };
        on_ports.ports = ports;
        run(&mut e, &[ban("192.0.2.1/32", None)]);
        // A new scope: the table is replaced (with its sets and rules), nothing planned.
        assert_eq!(run(&mut e, &[Change::Ban(on_ports.clone())]), "");
        assert!(e.replace, "a new scope replaces the table");
        let all = e.everything();
        let script = e.script(&all, Timestamp::from_second(1_000_000).unwrap());
        assert!(script.contains("add element inet moat t22_u22_53_4 { 192.0.2.1 }"));
        e.commit(&all);
        e.replace = false;
        assert_eq!(
            run(&mut e, &[Change::Unban(unban("192.0.2.1/32"))]),
            "add element inet moat ban4 { 192.0.2.1 }\n\
             delete element inet moat ban4 { 192.0.2.1 }"
        );
        assert_eq!(e.held().unwrap(), HashSet::from([on_ports.key()]));
    }
}

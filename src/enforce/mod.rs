//! Enforcers: where a ban takes effect.
//!
//! Every enforcer implements one trait, [`Enforcer`]: apply a batch of changes idempotently,
//! and say which targets it currently holds. Start-up and drift repair are then a set
//! difference between the ledger's active bans and [`Enforcer::held`], the same for every
//! enforcer: [`reconcile`] computes it.
//!
//! This module has `log` (records decisions only) and `exec` (runs a command per change).
//! Kernel sets and Cloudflare implement the same trait.

pub mod exec;
pub mod iptables;
pub mod log;
pub mod nft;
pub mod nftables;
pub mod safety;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;

/// A ban as an enforcer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanOrder {
    pub target: IpNet,
    pub jail: String,
    /// `None`: forever.
    pub until: Option<Timestamp>,
    pub failures: u32,
}

/// One change to what an enforcer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Ban(BanOrder),
    Unban(IpNet),
}

impl Change {
    pub fn target(&self) -> IpNet {
        match self {
            Change::Ban(b) => b.target,
            Change::Unban(t) => *t,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Ban(b) => write!(f, "ban {} ({})", Target(b.target), b.jail),
            Change::Unban(t) => write!(f, "unban {}", Target(*t)),
        }
    }
}

/// A change of a batch that did not take effect, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// Its position in the batch.
    pub index: usize,
    pub error: String,
}

impl Failed {
    /// Every change of a batch that failed as a whole (one transaction), with one error.
    pub fn all(batch: &[Change], error: &str) -> Vec<Failed> {
        (0..batch.len())
            .map(|index| Failed {
                index,
                error: error.to_string(),
            })
            .collect()
    }
}

/// Something that enforces bans.
pub trait Enforcer: Send {
    /// The name in status output and logs.
    fn name(&self) -> &'static str;

    /// Applies a batch. Idempotent: banning a held target or unbanning one not held is not an
    /// error. Returns the changes that failed (none when all took effect).
    fn apply(&mut self, batch: &[Change]) -> Vec<Failed>;

    /// The targets currently held.
    fn held(&mut self) -> Result<HashSet<IpNet>, String>;

    /// The changes that bring it to hold exactly `wanted` (at start, after drift). By default
    /// the difference between `wanted` and [`Enforcer::held`]; an enforcer that can replace
    /// its whole state in one step more cheaply than it can list it (nftables) prepares that.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, String> {
        Ok(reconcile(wanted, &self.held()?))
    }

    /// Whether what it holds can change behind moat's back (a ruleset flush), so that it
    /// must be checked periodically, not only at start.
    fn drifts(&self) -> bool {
        false
    }

    /// The periodic check: `Ok(true)` when its state is as it left it; `Ok(false)` when it
    /// found it gone or changed (and restored the structure or prepared to), so that the bans
    /// must be applied again (the caller converges). Cheap: it runs every few seconds.
    fn intact(&mut self) -> Result<bool, String> {
        Ok(true)
    }

    /// How many times it found its state gone or changed and restored it.
    fn repairs(&self) -> u64 {
        0
    }
}

/// A kernel-side timeout for a ban ending at `until`: whole seconds, rounded up (a ban with
/// 0.4 s left must still take effect, and the kernel then lets it go at most a second after
/// moat lifts it); `None` when it has already ended.
pub fn seconds_left(now: Timestamp, until: Timestamp) -> Option<i64> {
    let ms = now.duration_until(until).as_millis();
    (ms > 0).then(|| ((ms + 999) / 1000) as i64)
}

/// The changes that bring an enforcer holding `held` to the active bans `wanted`.
pub fn reconcile(wanted: &[BanOrder], held: &HashSet<IpNet>) -> Vec<Change> {
    let mut want: BTreeMap<IpNet, &BanOrder> = BTreeMap::new();
    for b in wanted {
        // Two jails may ban the same target; the enforcer holds it once, until the later end.
        want.entry(b.target)
            .and_modify(|cur| {
                if later(b.until, cur.until) {
                    *cur = b;
                }
            })
            .or_insert(b);
    }
    let mut changes: Vec<Change> = want
        .values()
        .filter(|b| !held.contains(&b.target))
        .map(|b| Change::Ban((*b).clone()))
        .collect();
    let mut stale: Vec<&IpNet> = held.iter().filter(|t| !want.contains_key(t)).collect();
    stale.sort();
    changes.extend(stale.into_iter().map(|t| Change::Unban(*t)));
    changes
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a > b,
    }
}

/// Shows a target as people write it: a single address bare, a network as a CIDR.
#[derive(Clone, Copy, Debug)]
pub struct Target(pub IpNet);

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n.prefix_len() == n.max_prefix_len() {
            write!(f, "{}", n.addr())
        } else {
            write!(f, "{n}")
        }
    }
}

/// Parses `192.0.2.7`, `198.51.100.0/24` or `2001:db8::/64` (host bits must be zero).
pub fn parse_target(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(a.to_canonical()));
    }
    let n: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address or a CIDR network"))?;
    if n.trunc() != n {
        return Err(format!(
            "{s:?} has host bits set; did you mean {}?",
            n.trunc()
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(t: &str, until: Option<i64>) -> BanOrder {
        BanOrder {
            target: t.parse().unwrap(),
            jail: "j".into(),
            until: until.map(|s| Timestamp::from_second(s).unwrap()),
            failures: 1,
        }
    }

    #[test]
    fn reconcile_is_a_set_difference() {
        let wanted = [
            order("192.0.2.1/32", Some(10)),
            order("192.0.2.2/32", Some(10)),
            order("192.0.2.2/32", None),
        ];
        let held: HashSet<IpNet> = [
            "192.0.2.1/32".parse().unwrap(),
            "192.0.2.9/32".parse().unwrap(),
        ]
        .into_iter()
        .collect();
        let changes = reconcile(&wanted, &held);
        assert_eq!(
            changes,
            vec![
                Change::Ban(order("192.0.2.2/32", None)),
                Change::Unban("192.0.2.9/32".parse().unwrap())
            ]
        );
        let all: HashSet<IpNet> = wanted.iter().map(|b| b.target).collect();
        assert!(reconcile(&wanted, &all).is_empty());
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_target("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert!(parse_target("198.51.100.1/24")
            .unwrap_err()
            .contains("198.51.100.0/24"));
        assert!(parse_target("x; rm -rf /").is_err());
        assert_eq!(
            Target(parse_target("2001:db8::/64").unwrap()).to_string(),
            "2001:db8::/64"
        );
        assert_eq!(
            Target(parse_target("2001:db8::1").unwrap()).to_string(),
            "2001:db8::1"
        );
    }
}

//! Enforcers: where a ban takes effect.
//!
//! Every enforcer implements one trait, [`Enforcer`]: apply a batch of changes idempotently,
//! and say which targets it currently holds. Start-up and drift repair are then a set
//! difference between the ledger's active bans and [`Enforcer::held`], the same for every
//! enforcer: [`reconcile`] computes it.
//!
//! Each enforcer is one file here and one line in [`registry`]: its name in `[enforce] use`,
//! its settings table (`[enforce.NAME]`, with its defaults), its [`Kind`] (which jails' bans it
//! takes) and its [`Retry`] policy. `log` records decisions, `exec` runs a command per change,
//! `nftables` and `iptables` hold kernel sets, `cloudflare` bans at Cloudflare's edge.

pub mod cloudflare;
pub mod exec;
pub mod iptables;
pub mod log;
pub mod nftables;
pub mod notify;
pub mod registry;
pub mod safety;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use ipnet::IpNet;
use jiff::Timestamp;

use crate::vocab::{Ports, Target};

/// A ban as an enforcer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanOrder {
    /// The address or network banned.
    pub target: IpNet,
    /// The jail that banned it (by hand: the jail `moat ban` named).
    pub jail: String,
    /// When the ban began.
    pub started: Timestamp,
    /// `None`: forever.
    pub until: Option<Timestamp>,
    /// How many failures within the jail's window led to the ban.
    pub failures: u32,
    /// The ports it covers (the jail's `ports`); `None`: every port.
    pub ports: Option<Ports>,
    /// The client's last matched lines that led to the ban, oldest first (empty for a ban
    /// by hand or one read back at start): what notifiers tell.
    pub evidence: Evidence,
    /// The node of the fleet that decided the ban; `None`: this one. Notifiers tell only the
    /// deciding node's bans, so that a fleet sends one message (and one AbuseIPDB report) per
    /// ban, not one per node.
    pub node: Option<String>,
}

/// A ban's evidence lines, as read (bytes), shared by every enforcer that gets the ban.
pub type Evidence = std::sync::Arc<[Box<[u8]>]>;

impl BanOrder {
    /// What an enforcer holds for this ban: its target on its ports.
    pub fn key(&self) -> Key {
        Key {
            target: self.target,
            ports: self.ports.clone(),
        }
    }
}

/// What an enforcer holds once however many jails ban it: a target, on every port or on a
/// jail's ports. A target banned on every port and on port 22 is held twice; lifting one
/// leaves the other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The address or network held.
    pub target: IpNet,
    /// The ports it is held on; `None`: every port.
    pub ports: Option<Ports>,
}

impl Key {
    /// `target` on every port.
    pub fn all_ports(target: IpNet) -> Key {
        Key {
            target,
            ports: None,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ports {
            None => write!(f, "{}", Target(self.target)),
            Some(p) => write!(f, "{} (ports {p})", Target(self.target)),
        }
    }
}

/// One change to what an enforcer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Hold this ban's key (again, when already held: idempotent).
    Ban(BanOrder),
    /// Stop holding this key (a no-op when not held).
    Unban(Key),
}

impl Change {
    /// The address or network the change is about.
    pub fn target(&self) -> IpNet {
        match self {
            Change::Ban(b) => b.target,
            Change::Unban(k) => k.target,
        }
    }

    /// The key the change adds or removes.
    pub fn key(&self) -> Key {
        match self {
            Change::Ban(b) => b.key(),
            Change::Unban(k) => k.clone(),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Ban(b) => write!(f, "ban {} ({})", b.key(), b.jail),
            Change::Unban(k) => write!(f, "unban {k}"),
        }
    }
}

/// Where an enforcer's bans take effect, which decides which jails' bans it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// In this host's kernel: it sees the client's address unless the host sits behind a
    /// proxy, so it takes every jail's bans but those of jails behind Cloudflare.
    Host,
    /// At an edge in front of the host (Cloudflare): it takes the bans of the jails behind it,
    /// or every jail's when no jail says it is behind one.
    Edge,
    /// It blocks nothing and records or tells (the log, a command, a notification): every
    /// jail's bans.
    Observer,
}

/// How an enforcer's failed changes are tried again: after `first`, doubling up to `last`,
/// at most `attempts` times in all (`None`: until applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Most tries in all, the first included; `None`: until applied.
    pub attempts: Option<u32>,
    /// The wait before the second try.
    pub first: Duration,
    /// The longest wait between two tries, where the doubling stops.
    pub last: Duration,
}

impl Retry {
    /// Tried `attempts` times in all, 1 s apart doubling to 60 s.
    pub const fn times(attempts: u32) -> Retry {
        Retry {
            attempts: Some(attempts),
            first: Duration::from_secs(1),
            last: Duration::from_secs(60),
        }
    }

    /// Tried until applied (a remote change is never given up on), backing off to 60 s.
    pub const FOREVER: Retry = Retry {
        attempts: None,
        first: Duration::from_secs(1),
        last: Duration::from_secs(60),
    };

    /// The wait before try number `tried + 1`.
    pub fn backoff(&self, tried: u32) -> Duration {
        self.first
            .saturating_mul(1 << tried.saturating_sub(1).min(16))
            .min(self.last)
    }

    /// Whether a change tried `tried` times may be tried again.
    pub fn allows(&self, tried: u32) -> bool {
        self.attempts.is_none_or(|a| tried < a)
    }
}

/// Why an enforcer could not do something, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EnforceError {
    /// What went wrong, in words, for logs and status.
    pub message: String,
    /// Whether and when trying again can help.
    pub retry: RetryHint,
}

/// What a failure says about trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryHint {
    /// It may work later: try again after the policy's backoff.
    Later,
    /// Not before this long (a rate limit's Retry-After).
    After(Duration),
    /// It cannot work as it is (a target the enforcer cannot take): not tried again.
    Never,
}

impl EnforceError {
    /// A failure that may pass.
    pub fn later(message: impl Into<String>) -> EnforceError {
        EnforceError {
            message: message.into(),
            retry: RetryHint::Later,
        }
    }

    /// A failure that will not pass by itself.
    pub fn never(message: impl Into<String>) -> EnforceError {
        EnforceError {
            message: message.into(),
            retry: RetryHint::Never,
        }
    }
}

impl From<String> for EnforceError {
    fn from(message: String) -> EnforceError {
        EnforceError::later(message)
    }
}

impl From<crate::netfilter::NetfilterError> for EnforceError {
    fn from(e: crate::netfilter::NetfilterError) -> EnforceError {
        EnforceError::later(e.to_string())
    }
}

/// A change of a batch that did not take effect, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// Its position in the batch.
    pub index: usize,
    /// Why it did not take effect.
    pub error: EnforceError,
}

impl Failed {
    /// Every change of a batch that failed as a whole (one transaction), with one error.
    pub fn all(batch: &[Change], error: &EnforceError) -> Vec<Failed> {
        (0..batch.len())
            .map(|index| Failed {
                index,
                error: error.clone(),
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

    /// What it currently holds.
    fn held(&mut self) -> Result<HashSet<Key>, EnforceError>;

    /// The changes that bring it to hold exactly `wanted` (at start, after drift). By default
    /// the difference between `wanted` and [`Enforcer::held`]; an enforcer that can replace
    /// its whole state in one step more cheaply than it can list it (nftables) prepares that.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
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
    fn intact(&mut self) -> Result<bool, EnforceError> {
        Ok(true)
    }

    /// How many times it found its state gone or changed and restored it.
    fn repairs(&self) -> u64 {
        0
    }

    /// Anything status should show now (requests sent, bans it could not place).
    fn remark(&self) -> Option<String> {
        None
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
pub fn reconcile(wanted: &[BanOrder], held: &HashSet<Key>) -> Vec<Change> {
    let mut want: BTreeMap<Key, &BanOrder> = BTreeMap::new();
    for b in wanted {
        // Two jails may ban the same target on the same ports; the enforcer holds it once,
        // until the later end.
        want.entry(b.key())
            .and_modify(|cur| {
                if later(b.until, cur.until) {
                    *cur = b;
                }
            })
            .or_insert(b);
    }
    let mut changes: Vec<Change> = want
        .iter()
        .filter(|(k, _)| !held.contains(k))
        .map(|(_, b)| Change::Ban((*b).clone()))
        .collect();
    let mut stale: Vec<&Key> = held.iter().filter(|k| !want.contains_key(k)).collect();
    stale.sort();
    changes.extend(stale.into_iter().map(|k| Change::Unban(k.clone())));
    changes
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a > b,
    }
}

/// Reads a secret (an API token or key, a password, a webhook URL) from `path`, refusing a file its group
/// or others may read, and an empty one.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o044 != 0 {
        return Err(format!(
            "{} is readable by its group or others (mode {:o}), and a secret must not be readable by others; hint: chmod 600 {}",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(t: &str, until: Option<i64>) -> BanOrder {
        BanOrder {
            target: t.parse().unwrap(),
            jail: "j".into(),
            started: Timestamp::UNIX_EPOCH,
            until: until.map(|s| Timestamp::from_second(s).unwrap()),
            failures: 1,
            ports: None,
            evidence: Default::default(),
            node: None,
        }
    }

    #[test]
    fn reconcile_is_a_set_difference() {
        let wanted = [
            order("192.0.2.1/32", Some(10)),
            order("192.0.2.2/32", Some(10)),
            order("192.0.2.2/32", None),
        ];
        let key = |t: &str| Key::all_ports(t.parse().unwrap());
        let mut held: HashSet<Key> = [key("192.0.2.1/32"), key("192.0.2.9/32")].into();
        let changes = reconcile(&wanted, &held);
        assert_eq!(
            changes,
            vec![
                Change::Ban(order("192.0.2.2/32", None)),
                Change::Unban(key("192.0.2.9/32"))
            ]
        );
        let all: HashSet<Key> = wanted.iter().map(BanOrder::key).collect();
        assert!(reconcile(&wanted, &all).is_empty());
        // The same target on a jail's ports is held apart from its every-port ban.
        let mut on_22 = order("192.0.2.1/32", Some(10));
        on_22.ports = Some(Ports::parse(["22"]).unwrap());
        held.remove(&key("192.0.2.9/32"));
        assert_eq!(
            reconcile(&[on_22.clone()], &held),
            vec![Change::Ban(on_22), Change::Unban(key("192.0.2.1/32"))]
        );
    }
}

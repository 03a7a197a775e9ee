//! Jails: per-client sliding windows that turn failures into ban decisions. Pure: the time of
//! each failure comes with it, nothing here reads a clock.
//!
//! The semantics, the same offline (`moat scan`) and live:
//! - a failure of client key `k` at time `t` counts the failures of `k` with times in
//!   `[t − findtime, t]`, itself included;
//! - when that count reaches `maxretry`, `k` is banned at `t` until `t + bantime`, and its
//!   window is emptied;
//! - failures of a banned key before its ban ends are not counted;
//! - failures from addresses in the jail's ignore list are never counted;
//! - an IPv6 client is its prefix (`ipv6_prefix`), except in a prefix that holds an address
//!   the jail ignores: there each address is a client of its own, so that a ban never cuts
//!   off the ignored address beside the attacker.
//!
//! Times normally arrive in order. When they do not (access logs are written when a response
//! ends, not when the request began), a key keeps its failures within `findtime` of the newest
//! it has seen, at most `2 × maxretry` of them.
//!
//! Memory is bounded: a jail tracks at most `max_clients` keys. Past that, it first forgets
//! windows and bans that have ended, then the windows that saw their last failure longest ago;
//! active bans are forgotten only when nothing else is left. Each sweep frees an eighth of the
//! cap, so the cost stays constant per failure under a flood of distinct clients.

pub mod escalate;
pub mod ignore;

use std::collections::HashMap;
use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use smallvec::SmallVec;

use crate::vocab::ClientKey;
pub use ignore::IgnoreList;

/// The default bound on tracked client keys per jail.
pub const DEFAULT_MAX_CLIENTS: usize = 50_000;

/// A jail's settings, already validated.
#[derive(Clone, Debug)]
pub struct JailParams {
    pub maxretry: u32,
    pub findtime: SignedDuration,
    pub bantime: SignedDuration,
    pub ipv6_prefix: u8,
    pub ignore: IgnoreList,
    pub max_clients: usize,
}

impl JailParams {
    /// The client key of `addr`: its IPv6 prefix, or the address alone when the prefix holds
    /// an address the jail ignores.
    pub fn key_of(&self, addr: IpAddr) -> ClientKey {
        let key = ClientKey::new(addr, self.ipv6_prefix);
        match key {
            ClientKey::V6(net) if net.prefix_len() < 128 => {
                if self.ignore.overlapping(&ipnet::IpNet::V6(net)).is_some() {
                    ClientKey::new(addr, 128)
                } else {
                    key
                }
            }
            _ => key,
        }
    }
}

impl JailParams {
    /// The client key a banned target stands for in this jail, when it is one: a single
    /// address, or an IPv6 network of the jail's prefix length.
    pub fn key_of_target(&self, target: ipnet::IpNet) -> Option<ClientKey> {
        match target {
            ipnet::IpNet::V4(n) if n.prefix_len() == 32 => Some(ClientKey::V4(n.addr())),
            ipnet::IpNet::V6(n) if n.prefix_len() == 128 || n.prefix_len() == self.ipv6_prefix => {
                Some(ClientKey::V6(n))
            }
            _ => None,
        }
    }
}

impl Default for JailParams {
    fn default() -> Self {
        JailParams {
            maxretry: 5,
            findtime: SignedDuration::from_mins(10),
            bantime: SignedDuration::from_hours(1),
            ipv6_prefix: 64,
            ignore: IgnoreList::default(),
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

/// The decision to ban a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanDecision {
    pub key: ClientKey,
    pub at: Timestamp,
    pub until: Timestamp,
    /// Failures counted in the window when the ban was decided.
    pub failures: u32,
}

/// What a jail did with one failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; the window now holds this many failures.
    Counted { failures: u32 },
    /// This failure completed a window: ban.
    Banned(BanDecision),
    /// The key is banned at this time; not counted.
    WhileBanned,
    /// The address is in the ignore list; not counted.
    Ignored,
}

/// Failure times in milliseconds, ascending. Under a flood most keys hold one or two failures;
/// keeping three inline spares each of them a heap allocation.
type Window = SmallVec<[i64; 3]>;

#[derive(Debug)]
enum ClientState {
    Counting(Window),
    Banned { until: i64 },
}

/// One jail's windows and active bans.
#[derive(Debug)]
pub struct Jail {
    params: JailParams,
    clients: HashMap<ClientKey, ClientState>,
    /// The newest failure time seen, in milliseconds: "now" for expiry during eviction.
    newest: i64,
    evicted: u64,
}

impl Jail {
    pub fn new(params: JailParams) -> Jail {
        Jail {
            params,
            clients: HashMap::new(),
            newest: i64::MIN,
            evicted: 0,
        }
    }

    /// The settings the jail runs with.
    pub fn params(&self) -> &JailParams {
        &self.params
    }

    /// Keys currently tracked (windows and bans).
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    /// Keys with failures in their window and no ban.
    pub fn failing(&self) -> usize {
        self.clients
            .values()
            .filter(|s| matches!(s, ClientState::Counting(t) if !t.is_empty()))
            .count()
    }

    /// Keys forgotten to keep memory bounded.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Feeds one failure of `addr` at `at`.
    pub fn observe(&mut self, addr: IpAddr, at: Timestamp) -> Outcome {
        if self.params.ignore.contains(addr) {
            return Outcome::Ignored;
        }
        let key = self.params.key_of(addr);
        let t = at.as_millisecond();
        self.newest = self.newest.max(t);
        let findtime = self.params.findtime.as_millis() as i64;
        let maxretry = self.params.maxretry.max(1) as usize;
        let state = self
            .clients
            .entry(key)
            .or_insert_with(|| ClientState::Counting(Window::new()));
        if let ClientState::Banned { until } = *state {
            if t < until {
                return Outcome::WhileBanned;
            }
            *state = ClientState::Counting(Window::new());
        }
        let ClientState::Counting(times) = state else {
            unreachable!("banned state replaced above")
        };
        let pos = times.partition_point(|&x| x <= t);
        times.insert(pos, t);
        let newest = *times.last().expect("just inserted");
        let stale = times.partition_point(|&x| x < newest.saturating_sub(findtime));
        times.drain(..stale);
        if times.len() > 2 * maxretry {
            let extra = times.len() - 2 * maxretry;
            times.drain(..extra);
        }
        let from = t.saturating_sub(findtime);
        let lo = times.partition_point(|&x| x < from);
        let hi = times.partition_point(|&x| x <= t);
        let failures = (hi - lo) as u32;
        let outcome = if failures as usize >= maxretry {
            let until = at
                .checked_add(self.params.bantime)
                .unwrap_or(Timestamp::MAX);
            *state = ClientState::Banned {
                until: until.as_millisecond(),
            };
            Outcome::Banned(BanDecision {
                key,
                at,
                until,
                failures,
            })
        } else {
            Outcome::Counted { failures }
        };
        if self.clients.len() > self.params.max_clients {
            self.evict();
        }
        outcome
    }

    /// Frees at least an eighth of the cap, stalest first.
    ///
    /// The survivors move to a fresh table rather than being removed in place: removal leaves
    /// tombstones, and a table full of them grows to twice its size at the next rehash. The
    /// rebuild is O(n) once per `max_clients / 8` new keys, the same order as the sweep.
    fn evict(&mut self) {
        let max = self.params.max_clients;
        let target = max - max / 8;
        let findtime = self.params.findtime.as_millis() as i64;
        let now = self.newest;
        let live = |s: &ClientState| match s {
            ClientState::Counting(times) => times
                .last()
                .is_some_and(|&last| last.saturating_add(findtime) >= now),
            ClientState::Banned { until } => *until > now,
        };
        // Counting windows by their last failure, then bans by their end: forget from the
        // front of that order.
        let age = |s: &ClientState| match s {
            ClientState::Counting(t) => (0u8, t.last().copied().unwrap_or(i64::MIN)),
            ClientState::Banned { until } => (1u8, *until),
        };
        let mut ages: Vec<(u8, i64)> = self.clients.values().filter(|s| live(s)).map(age).collect();
        let excess = ages.len().saturating_sub(target);
        let cut = (excess > 0).then(|| *ages.select_nth_unstable(excess - 1).1);
        drop(ages);
        let before = self.clients.len();
        let mut fresh = HashMap::with_capacity(max + 1);
        let mut dropped = 0;
        for (key, state) in self.clients.drain() {
            if !live(&state) {
                continue;
            }
            if cut.is_some_and(|cut| age(&state) <= cut) && dropped < excess {
                dropped += 1;
                continue;
            }
            fresh.insert(key, state);
        }
        self.clients = fresh;
        self.evicted += (before - self.clients.len()) as u64;
    }
}

/// The encoding of [`Jail::snapshot`]; bumped when it changes, so an old snapshot is dropped
/// rather than misread.
const SNAPSHOT_VERSION: u8 = 1;

impl Jail {
    /// Ends the ban of `key` (an unban by hand) so that its next failure counts afresh.
    pub fn lift(&mut self, key: &ClientKey) {
        if matches!(self.clients.get(key), Some(ClientState::Banned { .. })) {
            self.clients.remove(key);
        }
    }

    /// Records that `key` is banned until `until`: a ban decided elsewhere (by hand, or
    /// escalated beyond the jail's bantime), so that its failures are not counted meanwhile.
    pub fn hold(&mut self, key: ClientKey, until: Timestamp) {
        self.clients.insert(
            key,
            ClientState::Banned {
                until: until.as_millisecond(),
            },
        );
        if self.clients.len() > self.params.max_clients {
            self.evict();
        }
    }

    /// The jail's windows and bans as bytes, for the ledger's checkpoints: with the sources'
    /// cursors saved in the same transaction, a restart replays the lines read after the
    /// checkpoint from exactly the state they were first read in.
    ///
    /// A hand-written format rather than serde: it is a flat list of fixed-size records, and
    /// a checkpoint of 50,000 windows must take milliseconds, not allocate a tree.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.clients.len() * 32);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.newest.to_le_bytes());
        out.extend_from_slice(&self.evicted.to_le_bytes());
        for (key, state) in &self.clients {
            match key {
                ClientKey::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                ClientKey::V6(n) => {
                    out.push(6);
                    out.extend_from_slice(&n.addr().octets());
                    out.push(n.prefix_len());
                }
            }
            match state {
                ClientState::Banned { until } => {
                    out.push(0xff);
                    out.extend_from_slice(&until.to_le_bytes());
                }
                ClientState::Counting(times) => {
                    out.push(times.len() as u8);
                    for t in times {
                        out.extend_from_slice(&t.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// A jail with `params` and the state of an earlier [`Jail::snapshot`]; `None` when the
    /// bytes are not a snapshot this version wrote.
    pub fn restore(params: JailParams, bytes: &[u8]) -> Option<Jail> {
        let mut r = bytes;
        fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = r.split_at_checked(n)?;
            *r = tail;
            Some(head)
        }
        fn int(r: &mut &[u8]) -> Option<i64> {
            Some(i64::from_le_bytes(take(r, 8)?.try_into().ok()?))
        }
        if take(&mut r, 1)? != [SNAPSHOT_VERSION] {
            return None;
        }
        let newest = int(&mut r)?;
        let evicted = int(&mut r)? as u64;
        let mut clients = HashMap::new();
        while !r.is_empty() {
            let key = match take(&mut r, 1)?[0] {
                4 => {
                    let o: [u8; 4] = take(&mut r, 4)?.try_into().ok()?;
                    ClientKey::V4(o.into())
                }
                6 => {
                    let o: [u8; 16] = take(&mut r, 16)?.try_into().ok()?;
                    let prefix = take(&mut r, 1)?[0];
                    ClientKey::V6(ipnet::Ipv6Net::new(o.into(), prefix).ok()?)
                }
                _ => return None,
            };
            let state = match take(&mut r, 1)?[0] {
                0xff => ClientState::Banned {
                    until: int(&mut r)?,
                },
                n => {
                    let mut times = Window::new();
                    for _ in 0..n {
                        times.push(int(&mut r)?);
                    }
                    ClientState::Counting(times)
                }
            };
            clients.insert(key, state);
        }
        let mut jail = Jail {
            params,
            clients,
            newest,
            evicted,
        };
        if jail.clients.len() > jail.params.max_clients {
            jail.evict();
        }
        Some(jail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    fn params(maxretry: u32, findtime: i64, bantime: i64) -> JailParams {
        JailParams {
            maxretry,
            findtime: SignedDuration::from_secs(findtime),
            bantime: SignedDuration::from_secs(bantime),
            ..JailParams::default()
        }
    }

    #[test]
    fn bans_at_maxretry_within_findtime() {
        let mut j = Jail::new(params(3, 60, 600));
        assert_eq!(j.observe(ip(1), at(0)), Outcome::Counted { failures: 1 });
        assert_eq!(j.observe(ip(1), at(30)), Outcome::Counted { failures: 2 });
        let Outcome::Banned(d) = j.observe(ip(1), at(60)) else {
            panic!()
        };
        assert_eq!((d.failures, d.until), (3, at(660)));
        assert_eq!(j.observe(ip(1), at(100)), Outcome::WhileBanned);
        // The window was emptied by the ban.
        assert_eq!(j.observe(ip(1), at(660)), Outcome::Counted { failures: 1 });
    }

    #[test]
    fn snapshot_restores_windows_and_bans() {
        let mut j = Jail::new(params(3, 60, 600));
        j.observe(ip(1), at(0));
        j.observe(ip(1), at(10));
        j.observe(ip(2), at(0));
        j.observe(ip(2), at(1));
        j.observe(ip(2), at(2));
        j.observe("2001:db8:1:2::9".parse().unwrap(), at(3));
        let mut r = Jail::restore(params(3, 60, 600), &j.snapshot()).unwrap();
        assert_eq!(r.tracked(), 3);
        assert!(matches!(r.observe(ip(1), at(20)), Outcome::Banned(_)));
        assert_eq!(r.observe(ip(2), at(30)), Outcome::WhileBanned);
        assert_eq!(
            r.observe("2001:db8:1:2::10".parse().unwrap(), at(4)),
            Outcome::Counted { failures: 2 }
        );
        assert!(Jail::restore(params(3, 60, 600), b"junk").is_none());
        assert!(Jail::restore(params(3, 60, 600), &j.snapshot()[..12]).is_none());
    }

    #[test]
    fn a_prefix_holding_an_ignored_address_is_never_banned_whole() {
        let mut p = params(3, 60, 600);
        p.ignore = IgnoreList::new(["2001:db8:aa:1::10/128".parse().unwrap()]);
        let mut j = Jail::new(p);
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(j.observe(a("2001:db8:aa:1::10"), at(0)), Outcome::Ignored);
        // In that /64 each address counts alone...
        j.observe(a("2001:db8:aa:1::20"), at(1));
        j.observe(a("2001:db8:aa:1::21"), at(2));
        assert_eq!(
            j.observe(a("2001:db8:aa:1::20"), at(3)),
            Outcome::Counted { failures: 2 }
        );
        // ...and is banned alone, never as the /64 that holds the ignored address.
        let Outcome::Banned(d) = j.observe(a("2001:db8:aa:1::20"), at(4)) else {
            panic!()
        };
        assert_eq!(d.key.to_string(), "2001:db8:aa:1::20");
        // Another /64 is still one client.
        j.observe(a("2001:db8:bb:1::1"), at(5));
        j.observe(a("2001:db8:bb:1::2"), at(6));
        let Outcome::Banned(d) = j.observe(a("2001:db8:bb:1::3"), at(7)) else {
            panic!()
        };
        assert_eq!(d.key.to_string(), "2001:db8:bb:1::/64");
    }

    #[test]
    fn lift_and_hold() {
        let mut j = Jail::new(params(1, 60, 600));
        let Outcome::Banned(d) = j.observe(ip(1), at(0)) else {
            panic!()
        };
        j.lift(&d.key);
        assert!(matches!(j.observe(ip(1), at(1)), Outcome::Banned(_)));
        j.hold(ClientKey::new(ip(2), 64), at(100));
        assert_eq!(j.observe(ip(2), at(50)), Outcome::WhileBanned);
    }

    #[test]
    fn window_slides() {
        let mut j = Jail::new(params(3, 60, 600));
        j.observe(ip(1), at(0));
        j.observe(ip(1), at(50));
        // 0 is outside [61 - 60, 61].
        assert_eq!(j.observe(ip(1), at(61)), Outcome::Counted { failures: 2 });
        assert!(matches!(j.observe(ip(1), at(62)), Outcome::Banned(_)));
    }

    #[test]
    fn ignored_addresses_are_never_counted() {
        let mut p = params(1, 60, 60);
        p.ignore = IgnoreList::new(["192.0.2.0/28".parse().unwrap()]);
        let mut j = Jail::new(p);
        assert_eq!(j.observe(ip(3), at(0)), Outcome::Ignored);
        assert!(matches!(j.observe(ip(30), at(0)), Outcome::Banned(_)));
    }

    #[test]
    fn ipv6_counts_per_prefix() {
        let mut j = Jail::new(params(2, 60, 60));
        j.observe("2001:db8:1:2::1".parse().unwrap(), at(0));
        let Outcome::Banned(d) = j.observe("2001:db8:1:2:aaaa::9".parse().unwrap(), at(1)) else {
            panic!()
        };
        assert_eq!(d.key.to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn memory_is_bounded_under_a_flood() {
        let mut p = params(5, 600, 3600);
        p.max_clients = 1000;
        let mut j = Jail::new(p);
        for i in 0..100_000u32 {
            j.observe(IpAddr::from(i.to_be_bytes()), at(i64::from(i / 100)));
            assert!(j.tracked() <= 1000);
        }
        assert!(j.evicted() >= 99_000);
        // A client failing now is still counted correctly after the flood.
        for k in 0..4 {
            j.observe(ip(200), at(2000 + k));
        }
        assert!(matches!(j.observe(ip(200), at(2005)), Outcome::Banned(_)));
    }

    /// The specification, executed naively: all failures kept, counted from scratch.
    fn model(events: &[(u8, i64)], maxretry: u32, findtime: i64, bantime: i64) -> Vec<Outcome> {
        let mut since_ban: HashMap<u8, Vec<i64>> = HashMap::new();
        let mut banned_until: HashMap<u8, i64> = HashMap::new();
        let mut out = Vec::new();
        for &(who, t) in events {
            if banned_until.get(&who).is_some_and(|&u| t < u) {
                out.push(Outcome::WhileBanned);
                continue;
            }
            let times = since_ban.entry(who).or_default();
            times.push(t);
            let n = times
                .iter()
                .filter(|&&x| x >= t - findtime && x <= t)
                .count() as u32;
            if n >= maxretry {
                times.clear();
                banned_until.insert(who, t + bantime);
                out.push(Outcome::Banned(BanDecision {
                    key: ClientKey::new(ip(who), 64),
                    at: at(t),
                    until: at(t + bantime),
                    failures: n,
                }));
            } else {
                out.push(Outcome::Counted { failures: n });
            }
        }
        out
    }

    proptest! {
        #[test]
        fn agrees_with_the_model_on_ordered_input(
            gaps in prop::collection::vec((0u8..4, 0i64..40), 1..300),
            maxretry in 1u32..6,
            findtime in 1i64..120,
            bantime in 1i64..300,
        ) {
            let mut t = 0;
            let events: Vec<(u8, i64)> = gaps.iter().map(|&(who, gap)| { t += gap; (who, t) }).collect();
            let mut j = Jail::new(params(maxretry, findtime, bantime));
            let got: Vec<Outcome> = events.iter().map(|&(who, t)| j.observe(ip(who), at(t))).collect();
            prop_assert_eq!(got, model(&events, maxretry, findtime, bantime));
        }

        #[test]
        fn disordered_input_never_bans_without_maxretry_in_window(
            events in prop::collection::vec((0u8..3, 0i64..500), 1..300),
            maxretry in 1u32..6,
            findtime in 1i64..120,
        ) {
            let mut j = Jail::new(params(maxretry, findtime, 1000));
            let mut seen: HashMap<u8, Vec<i64>> = HashMap::new();
            for &(who, t) in &events {
                seen.entry(who).or_default().push(t);
                if let Outcome::Banned(d) = j.observe(ip(who), at(t)) {
                    let n = seen[&who].iter().filter(|&&x| x >= t - findtime && x <= t).count();
                    prop_assert!(n as u32 >= maxretry);
                    prop_assert_eq!(d.failures as usize <= n, true);
                    seen.get_mut(&who).unwrap().clear();
                }
            }
        }
    }
}

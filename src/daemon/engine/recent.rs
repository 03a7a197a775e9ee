//! What happened lately, for the dashboard: the bans of the last 7 days (seeded from the
//! ledger at start, then kept as they are placed) and the failures counted per jail in
//! 5-minute buckets since moat started. Pure: the time comes in.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};

use super::super::protocol::{Count, JailSeries, Timeline};

/// How far back the dashboard looks.
pub const SPAN: SignedDuration = SignedDuration::from_hours(7 * 24);
/// The finest bucket kept.
const BUCKET_SECS: i64 = 300;
/// At most this many recent bans are remembered (the oldest go first).
const MAX_BANS: usize = 50_000;

/// Recent bans and failures.
#[derive(Debug, Default)]
pub struct Recent {
    /// (start, jail, target), oldest first.
    bans: VecDeque<(Timestamp, String, IpNet)>,
    /// Per jail: (bucket number, failures), oldest first.
    failures: BTreeMap<String, VecDeque<(i64, u32)>>,
}

impl Recent {
    /// Remembers a ban that started at `at`.
    pub fn ban(&mut self, at: Timestamp, jail: &str, target: IpNet) {
        if self.bans.len() == MAX_BANS {
            self.bans.pop_front();
        }
        // Kept in order: a ban replayed or seeded out of order is put where it belongs.
        let pos = self.bans.partition_point(|(t, _, _)| *t <= at);
        self.bans.insert(pos, (at, jail.to_string(), target));
    }

    /// Counts `n` failures of `jail` at `now`.
    pub fn failures(&mut self, jail: &str, n: u32, now: Timestamp) {
        if n == 0 {
            return;
        }
        let bucket = now.as_second().div_euclid(BUCKET_SECS);
        let series = self.failures.entry(jail.to_string()).or_default();
        match series.back_mut() {
            Some((b, count)) if *b == bucket => *count = count.saturating_add(n),
            _ => series.push_back((bucket, n)),
        }
    }

    /// Forgets what is older than [`SPAN`].
    pub fn trim(&mut self, now: Timestamp) {
        let since = now.checked_sub(SPAN).unwrap_or(Timestamp::MIN);
        while self.bans.front().is_some_and(|(t, _, _)| *t < since) {
            self.bans.pop_front();
        }
        let first = since.as_second().div_euclid(BUCKET_SECS);
        for series in self.failures.values_mut() {
            while series.front().is_some_and(|(b, _)| *b < first) {
                series.pop_front();
            }
        }
        self.failures.retain(|_, s| !s.is_empty());
    }

    /// The last `span` up to `now` in buckets of `bucket_secs` (a multiple of 5 minutes), one
    /// series for each of `jails` and for any other jail with something to show.
    pub fn timeline(
        &self,
        now: Timestamp,
        span: SignedDuration,
        bucket_secs: i64,
        jails: &[String],
    ) -> Timeline {
        let n = (span.as_secs() / bucket_secs).max(1) as usize;
        // The last bucket holds `now`.
        let end = (now.as_second().div_euclid(bucket_secs) + 1) * bucket_secs;
        let start = end - n as i64 * bucket_secs;
        let index = |secs: i64| -> Option<usize> {
            (secs >= start && secs < end).then(|| ((secs - start) / bucket_secs) as usize)
        };
        let mut series: BTreeMap<&str, (Vec<u32>, Vec<u32>)> = jails
            .iter()
            .map(|j| (j.as_str(), (vec![0; n], vec![0; n])))
            .collect();
        for (jail, buckets) in &self.failures {
            for (b, count) in buckets {
                if let Some(i) = index(b * BUCKET_SECS) {
                    let s = series
                        .entry(jail)
                        .or_insert_with(|| (vec![0; n], vec![0; n]));
                    s.0[i] += count;
                }
            }
        }
        for (at, jail, _) in &self.bans {
            if let Some(i) = index(at.as_second()) {
                let s = series
                    .entry(jail)
                    .or_insert_with(|| (vec![0; n], vec![0; n]));
                s.1[i] += 1;
            }
        }
        Timeline {
            start: Timestamp::from_second(start).ok(),
            bucket_secs,
            jails: series
                .into_iter()
                .map(|(jail, (failures, bans))| JailSeries {
                    jail: jail.to_string(),
                    failures,
                    bans,
                })
                .collect(),
        }
    }

    /// The `n` most banned targets, networks (/24, /64) and jails, most first.
    pub fn top(&self, n: usize) -> (Vec<Count>, Vec<Count>, Vec<Count>) {
        let mut targets: HashMap<IpNet, u64> = HashMap::new();
        let mut networks: HashMap<IpNet, u64> = HashMap::new();
        let mut jails: HashMap<&str, u64> = HashMap::new();
        for (_, jail, target) in &self.bans {
            *targets.entry(*target).or_default() += 1;
            *networks.entry(network_of(*target)).or_default() += 1;
            *jails.entry(jail).or_default() += 1;
        }
        fn most<K: ToString>(m: HashMap<K, u64>, n: usize) -> Vec<Count> {
            let mut v: Vec<Count> = m
                .into_iter()
                .map(|(k, bans)| Count {
                    name: k.to_string(),
                    bans,
                })
                .collect();
            v.sort_by(|a, b| b.bans.cmp(&a.bans).then_with(|| a.name.cmp(&b.name)));
            v.truncate(n);
            v
        }
        let targets: HashMap<String, u64> = targets
            .into_iter()
            .map(|(t, c)| (crate::vocab::Target(t).to_string(), c))
            .collect();
        (most(targets, n), most(networks, n), most(jails, n))
    }
}

/// The /24 (IPv4) or /64 (IPv6) a target lies in, or the target when it is wider.
pub fn network_of(target: IpNet) -> IpNet {
    let wide = match target {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 64,
    };
    if target.prefix_len() <= wide {
        target
    } else {
        IpNet::new(target.addr(), wide)
            .map(|n| n.trunc())
            .unwrap_or(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn buckets_failures_and_bans_per_jail() {
        let mut r = Recent::default();
        r.failures("ssh", 3, t(0));
        r.failures("ssh", 2, t(10));
        r.failures("web", 1, t(3600));
        r.ban(t(20), "ssh", "192.0.2.1/32".parse().unwrap());
        let tl = r.timeline(
            t(3600),
            SignedDuration::from_hours(24),
            300,
            &["ssh".into()],
        );
        assert_eq!(tl.bucket_secs, 300);
        let ssh = tl.jails.iter().find(|s| s.jail == "ssh").unwrap();
        assert_eq!(ssh.failures.len(), 288);
        assert_eq!(ssh.failures.iter().sum::<u32>(), 5);
        assert_eq!(ssh.bans.iter().sum::<u32>(), 1);
        let web = tl.jails.iter().find(|s| s.jail == "web").unwrap();
        assert_eq!(*web.failures.last().unwrap(), 1);
        let week = r.timeline(t(3600), SPAN, 3600, &[]);
        assert_eq!(week.jails[0].failures.len(), 168);
        assert_eq!(week.jails[0].failures.iter().sum::<u32>(), 5);
    }

    #[test]
    fn old_things_are_forgotten_and_tops_are_counted() {
        let mut r = Recent::default();
        for (i, ip) in ["192.0.2.1", "192.0.2.1", "192.0.2.9", "2001:db8::1"]
            .iter()
            .enumerate()
        {
            let net: IpNet = format!("{ip}/{}", if ip.contains(':') { 128 } else { 32 })
                .parse()
                .unwrap();
            r.ban(t(i as i64), if i == 3 { "web" } else { "ssh" }, net);
        }
        let (targets, networks, jails) = r.top(10);
        assert_eq!(targets[0].name, "192.0.2.1");
        assert_eq!(targets[0].bans, 2);
        assert_eq!(networks[0].name, "192.0.2.0/24");
        assert_eq!(networks[0].bans, 3);
        assert_eq!(networks[1].name, "2001:db8::/64");
        assert_eq!(jails[0].name, "ssh");
        r.failures("ssh", 1, t(0));
        r.trim(t(8 * 86_400));
        assert!(r.top(10).0.is_empty());
        assert!(r.timeline(t(8 * 86_400), SPAN, 3600, &[]).jails.is_empty());
    }
}

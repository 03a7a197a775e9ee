//! `moat scan` against an independent oracle on a log nobody tuned the filter for.
//!
//! The oracle parses the generated nginx log with plain string splitting (no regex, no moat
//! code), applies the jail semantics naively (every failure kept, windows recounted from
//! scratch), and must agree ban for ban with moat, for several settings.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;

use serde_json::Value;

// The benchmark's log generator (an example, so not installed), compiled into this test.
#[path = "../benches/genlog.rs"]
#[allow(dead_code)]
mod genlog;

struct Failure {
    key: String,
    at: i64,
}

/// Reads `[28/Mar/2026:00:00:01 +0100]` the long way.
fn parse_time(s: &str) -> i64 {
    let (dt, off) = s.split_once(' ').unwrap();
    let parts: Vec<&str> = dt.split([':', '/']).collect();
    let day: i64 = parts[0].parse().unwrap();
    assert_eq!(parts[1], "Mar");
    assert_eq!(parts[2], "2026");
    let (h, m, sec): (i64, i64, i64) = (
        parts[3].parse().unwrap(),
        parts[4].parse().unwrap(),
        parts[5].parse().unwrap(),
    );
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let off_h: i64 = off[1..3].parse().unwrap();
    let off_m: i64 = off[3..5].parse().unwrap();
    // 2026-03-01T00:00:00Z
    let march_1 = 1_772_323_200;
    march_1 + (day - 1) * 86_400 + h * 3600 + m * 60 + sec - sign * (off_h * 3600 + off_m * 60)
}

fn key(ip: &str, prefix: u8) -> String {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if prefix == 128 {
                u128::MAX
            } else {
                !(u128::MAX >> prefix)
            };
            let net = std::net::Ipv6Addr::from(bits & mask);
            if prefix == 128 {
                net.to_string()
            } else {
                format!("{net}/{prefix}")
            }
        }
    }
}

fn oracle_failures(log: &str, prefix: u8) -> Vec<Failure> {
    log.lines()
        .filter_map(|line| {
            let (ip, rest) = line.split_once(' ')?;
            let (_, rest) = rest.split_once('[')?;
            let (time, rest) = rest.split_once(']')?;
            // The request line and status, exactly.
            let rest = rest.strip_prefix(" \"POST /api/auth HTTP/1.1\" 422 ")?;
            let _ = rest;
            Some(Failure {
                key: key(ip, prefix),
                at: parse_time(time),
            })
        })
        .collect()
}

fn oracle_bans(
    fails: &[Failure],
    maxretry: usize,
    findtime: i64,
    bantime: i64,
) -> Vec<(String, i64, u64)> {
    let mut since_ban: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut until: HashMap<&str, i64> = HashMap::new();
    let mut bans = Vec::new();
    for f in fails {
        if until.get(f.key.as_str()).is_some_and(|&u| f.at < u) {
            continue;
        }
        let v = since_ban.entry(&f.key).or_default();
        v.push(f.at);
        let n = v
            .iter()
            .filter(|&&t| t >= f.at - findtime && t <= f.at)
            .count();
        if n >= maxretry {
            v.clear();
            until.insert(&f.key, f.at + bantime);
            bans.push((f.key.clone(), f.at, n as u64));
        }
    }
    bans
}

fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[test]
fn scan_agrees_with_the_oracle_on_a_generated_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut bytes = Vec::new();
    genlog::generate(200_000, 7, 4, &mut bytes).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let log = String::from_utf8(bytes).unwrap();

    for (maxretry, findtime, bantime, prefix) in [
        (5, 600, 3600, 64),
        (3, 60, 600, 128),
        (10, 1800, 86_400, 48),
        (1, 1, 1, 64),
    ] {
        let fails = oracle_failures(&log, prefix);
        let expected = oracle_bans(&fails, maxretry, findtime, bantime);
        assert!(!expected.is_empty());
        let out = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args([
                "scan",
                "--json",
                "--filter",
                "portainer",
                "--maxretry",
                &maxretry.to_string(),
                "--findtime",
                &format!("{findtime}s"),
                "--bantime",
                &format!("{bantime}s"),
                "--ipv6-prefix",
                &prefix.to_string(),
                path.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["lines"], 200_000);
        assert_eq!(v["matched"].as_u64().unwrap(), fails.len() as u64);
        let got: Vec<(String, String, u64)> = v["bans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    bare(b["target"].as_str().unwrap()),
                    b["started"].as_str().unwrap().to_string(),
                    b["failures"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut want: Vec<(String, String, u64)> = expected
            .into_iter()
            .map(|(k, at, n)| (k, rfc3339(at), n))
            .collect();
        // moat lists bans by time, then jail; within one second the oracle's order is line
        // order, so compare as sorted lists.
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(
            got_sorted.len(),
            want.len(),
            "settings {maxretry}/{findtime}/{bantime}/{prefix}"
        );
        assert_eq!(
            got_sorted, want,
            "settings {maxretry}/{findtime}/{bantime}/{prefix}"
        );
    }
}

/// A target as the tests write it: an address without its full-length prefix.
fn bare(target: &str) -> String {
    target
        .strip_suffix("/32")
        .filter(|a| a.contains('.'))
        .or_else(|| target.strip_suffix("/128"))
        .unwrap_or(target)
        .to_string()
}

//! Benchmark: bans placed at Cloudflare, against the fake API with a fixed latency per request
//! (no benchmark can reach Cloudflare).
//!
//!   cargo run --release --example cloudflare-bench [-- BANS LATENCY_MS RULE_BANS]
//!
//! 1. List mode: BANS (default 10,000) bans in one batch, as at start-up or in a flood: the
//!    requests sent and the time until the last is in the list.
//! 2. Access-rules mode (one rule per address, what fail2ban's Cloudflare actions do):
//!    RULE_BANS (default 100) bans, timed with the same budget (4 requests/s, 1,200 per 5
//!    minutes), and what BANS would take at that rate.

#[path = "../tests/support/cloudflare.rs"]
mod fake;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use moat::enforce::cloudflare::api::{Api, Auth, Budget};
use moat::enforce::cloudflare::settings::Mode;
use moat::enforce::cloudflare::{CloudflareEnforcer, CloudflareSettings};
use moat::enforce::{BanOrder, Change, Enforcer};

fn bans(n: usize) -> Vec<Change> {
    let until = Timestamp::now() + jiff::SignedDuration::from_hours(1);
    (0..n)
        .map(|i| {
            // 198.18.0.0/15 holds 131,072 addresses: distinct, and none of them anyone's.
            let ip = std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i as u32,
            );
            Change::Ban(BanOrder {
                target: ipnet::IpNet::from(std::net::IpAddr::V4(ip)),
                jail: "bench".into(),
                started: Timestamp::now(),
                until: Some(until),
                failures: 5,
                ports: None,
                evidence: Default::default(),
                node: None,
            })
        })
        .collect()
}

fn enforcer(f: &fake::Fake, mode: Mode) -> CloudflareEnforcer {
    let api = Api::new(
        &f.url,
        Auth::Token("bench".into()),
        Budget::new(4.0, 1200, Duration::from_secs(300)),
    );
    // The defaults of `[enforce.cloudflare]`, as a user would write the table.
    let mut settings: CloudflareSettings = toml::from_str(&format!(
        "token_env = \"CF\"\naccount_id = \"{}\"\nzone_id = \"{}\"\n",
        f.account(),
        f.zone()
    ))
    .expect("valid settings");
    settings.mode = mode;
    CloudflareEnforcer::new(api, settings)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let latency = Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50));
    let rule_bans: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let options = fake::Options {
        latency,
        capacity: n.max(10_000),
        ..fake::Options::default()
    };

    let f = fake::Fake::start(options.clone());
    f.token("bench", &[fake::LISTS_EDIT, fake::WAF_EDIT]);
    let mut cf = enforcer(&f, Mode::List);
    let batch = bans(n);
    let t = Instant::now();
    let failed = cf.apply(&batch);
    let took = t.elapsed();
    let placed = f.state.lock().unwrap().items().len();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(placed, n);
    println!(
        "list mode: {n} bans placed in {:.1} s with {} requests ({} ms per request)",
        took.as_secs_f64(),
        cf.requests(),
        latency.as_millis()
    );

    let f = fake::Fake::start(options);
    f.token("bench", &[fake::ZONE_FIREWALL_EDIT]);
    let mut cf = enforcer(&f, Mode::AccessRules);
    let batch = bans(rule_bans);
    let t = Instant::now();
    let failed = cf.apply(&batch);
    let took = t.elapsed();
    assert!(failed.is_empty(), "{} failed", failed.len());
    let per_ban = took.as_secs_f64() / rule_bans as f64;
    // At the budget's pace, and never more than 1,200 requests per 5 minutes.
    let at_budget = (n as f64 * per_ban).max(n as f64 / 1200.0 * 300.0);
    println!(
        "access-rules mode: {rule_bans} bans in {:.1} s with {} requests; {n} bans would take \
         {n} requests and at least {:.0} min",
        took.as_secs_f64(),
        cf.requests(),
        at_budget / 60.0
    );
}

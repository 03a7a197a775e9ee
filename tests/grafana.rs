//! `dist/grafana/moat.json` against a real daemon's metrics: every metric a panel queries is
//! one moat exports, with the type the query assumes (`rate`/`increase` on counters only,
//! `histogram_quantile` on the histogram's buckets).

use std::io::{Read, Write};
use std::path::Path;

mod support;
use support::{write_config, Daemon};

fn failure(ip: &str) -> String {
    format!(
        "{ip} - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"-\"\n",
        jiff::Timestamp::now().strftime("%d/%b/%Y:%H:%M:%S +0000")
    )
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The `moat_*` names in a PromQL expression, each with whether `rate`/`increase` takes it.
fn metrics_in(expr: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("moat_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let before = &rest[..i];
        let rated = before.ends_with("rate(") || before.ends_with("increase(");
        out.push((name.clone(), rated));
        rest = &rest[i + name.len()..];
    }
    out
}

#[test]
fn every_panel_queries_a_metric_moat_exports_with_its_type() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/grafana/moat.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(
        dir,
        &format!(
            "metrics = \"127.0.0.1:{port}\"\n\n[enforce]\nuse = [\"log\"]\n\n[jails.portainer]\n\
             filter = \"portainer\"\nsources = [\"logs/access.log\"]\nmaxretry = 2\n"
        ),
    );
    // A ban, and a ban the safety rules refuse (loopback), so that every family has a member.
    let lines: String = ["203.0.113.5", "203.0.113.5", "127.0.0.1", "127.0.0.1"]
        .iter()
        .map(|ip| failure(ip))
        .collect();
    std::fs::write(dir.join("logs/access.log"), lines).unwrap();
    let d = Daemon::start(dir);
    d.wait_jail("portainer", "a ban and a refusal", |j| {
        j["currently_banned"] == 1 && j["refused"] == 1
    });
    support::eventually(10, "the ban applied", || {
        scrape(port).contains("moat_enforcer_applied_total{enforcer=\"log\"} 1")
    });
    let text = scrape(port);
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (name, rated) in metrics_in(expr) {
                checked += 1;
                let family = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_total"))
                    .unwrap_or(&name);
                let kind = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("# TYPE {family} ")))
                    .unwrap_or_else(|| {
                        panic!("{name} (panel {}) is not exported:\n{text}", panel["title"])
                    });
                let exported = text.lines().any(|l| l.starts_with(&name));
                assert!(exported, "no sample of {name}:\n{text}");
                if rated {
                    assert!(
                        kind == "counter" || (kind == "histogram" && name.ends_with("_bucket")),
                        "rate/increase over {name}, a {kind} (panel {})",
                        panel["title"]
                    );
                } else {
                    assert!(
                        kind == "gauge",
                        "{name} is read as a value but is a {kind} (panel {})",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(checked > 15, "{checked} metric references");
    assert!(d.log().contains("serving metrics"));
    d.stop();
}

//! `moat bans show TARGET` against a real daemon: the ban's evidence lines, its jail's rule,
//! the target's earlier bans and the escalation they caused, which enforcers hold it; the
//! same as JSON with the field names of every other command.

use std::process::Command;
use std::time::Duration;

mod support;
use support::{append, write_config, Daemon};

fn failure(ip: &str, agent: &str) -> String {
    format!(
        "{ip} - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"{agent}\"\n",
        jiff::Timestamp::now().strftime("%d/%b/%Y:%H:%M:%S +0000")
    )
}

#[test]
fn shows_a_ban_with_its_evidence_rule_history_and_enforcers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    write_config(
        dir,
        r#"[enforce]
use = ["log"]

[jails.portainer]
filter = "portainer"
sources = ["logs/access.log"]
maxretry = 2
findtime = "10m"
bantime = "1h"
escalate = { factor = 2 }
"#,
    );
    let log = dir.join("logs/access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    append(&log, &failure("203.0.113.9", "first\x1b[31m"));
    append(&log, &failure("203.0.113.9", "second"));
    d.wait_jail("portainer", "a ban", |j| j["currently_banned"] == 1);
    let first = d.json(&["bans", "show", "203.0.113.9", "--json"]);
    assert_eq!(first["target"], "203.0.113.9/32");
    assert_eq!(first["jail"], "portainer");
    assert_eq!(first["origin"], "log");
    assert_eq!(first["escalation"], 0);
    assert_eq!(first["history"].as_array().unwrap().len(), 0);
    assert_eq!(first["evidence"].as_array().unwrap().len(), 2);
    assert!(first["evidence"][0]
        .as_str()
        .unwrap()
        .contains("first\x1b[31m"));
    assert_eq!(first["rule"]["maxretry"], 2);
    assert_eq!(first["rule"]["findtime_secs"], 600);
    assert_eq!(first["rule"]["bantime_secs"], 3600);
    assert_eq!(first["rule"]["escalates"], true);
    assert_eq!(first["enforcers"][0]["enforcer"], "log");
    assert!(first["enforcers"][0]["since"].is_string());

    // Lifted, banned again: the first is history, and the second escalated.
    let out = d.moat(&["unban", "203.0.113.9"]);
    assert!(out.status.success());
    // A new second, so the ban is a new one (bans are unique per jail, target and start).
    std::thread::sleep(Duration::from_millis(1100));
    append(&log, &failure("203.0.113.9", "third"));
    append(&log, &failure("203.0.113.9", "fourth"));
    d.wait_jail("portainer", "the second ban", |j| {
        j["currently_banned"] == 1
    });
    let second = d.json(&["bans", "show", "203.0.113.9", "--json"]);
    assert_eq!(second["escalation"], 1, "{second:#}");
    let history = second["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{second:#}");
    assert_eq!(history[0]["end_reason"], "unbanned");
    assert_eq!(history[0]["target"], "203.0.113.9/32");
    // The client's last lines (up to five), the newest last.
    let evidence = second["evidence"].as_array().unwrap();
    assert!(evidence
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .contains("fourth"));
    let started = jiff::Timestamp::from_str_lossy(&second["started"]);
    let until = jiff::Timestamp::from_str_lossy(&second["until"]);
    assert_eq!(until.as_second() - started.as_second(), 7200, "bantime × 2");

    // For people: the same, with log text made harmless for the terminal.
    let out = d.moat(&["bans", "show", "203.0.113.9"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "Ban of 203.0.113.9 in jail portainer (origin log)",
        "2 failures within 10m -> ban for 1h (escalates)",
        "level 1 (1 earlier ban counted)",
        "log since",
        "Evidence (",
        "fourth",
        "Earlier bans (newest first)",
        "unbanned",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert!(
        !text.contains('\x1b'),
        "an escape from the log reached the terminal"
    );

    // Tables fit an 80-column terminal; --plain is one tab-separated table for scripts.
    d.moat(&[
        "ban",
        "198.51.100.0/24",
        "--for",
        "1d",
        "--reason",
        "a long reason about a scanner from this network, which goes on and on and on",
    ]);
    for args in [
        &["bans", "--history"][..],
        &["bans"],
        &["status"],
        &["status", "portainer"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(args)
            .arg("-c")
            .arg(d.config())
            .env("COLUMNS", "80")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success() && text.contains('┌'),
            "{args:?}: {text}"
        );
        for line in text.lines().filter(|l| l.starts_with(['┌', '│', '╞', '└'])) {
            assert!(
                line.chars().count() <= 80,
                "{args:?}: wider than 80:\n{text}"
            );
        }
    }
    let out = d.moat(&["bans", "--plain"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0][0], "target", "{text}");
    assert_eq!(lines.len(), 3, "a header and two bans: {text}");
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
    assert!(lines
        .iter()
        .any(|l| l[0] == "198.51.100.0/24" && l[6].contains("on and on")));
    let out = d.moat(&["status", "--plain"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("jail\tfilter\t"), "{text}");
    assert!(text.contains("\n\nenforcer\tapplied\t"), "{text}");

    // Not banned: an error that says so.
    let out = d.moat(&["bans", "show", "198.51.100.1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("198.51.100.1 is not banned"));
    d.stop();
}

/// `Timestamp` parsing of a JSON string, for the assertions.
trait Lossy {
    fn from_str_lossy(v: &serde_json::Value) -> jiff::Timestamp;
}

impl Lossy for jiff::Timestamp {
    fn from_str_lossy(v: &serde_json::Value) -> jiff::Timestamp {
        v.as_str().unwrap().parse().unwrap()
    }
}

//! `moat import fail2ban` on Debian's stock `jail.conf` with a realistic `jail.local`: sshd
//! in aggressive mode on two ports, nginx-http-auth, nginx-botsearch banning at Cloudflare, a
//! custom filter.d file, bantime.increment and recidive. The imported configuration must
//! pass `moat check-config`, and `moat scan -c` of it on logs written for the jails must
//! give the bans fail2ban's semantics give: maxretry failures within findtime from one
//! address, never an ignoreip address or a host name.
//!
//! Debian's jail.conf, paths-*.conf and filter.d are copied from the installation at test
//! time into a temporary directory; the jail.local, the custom filter and the logs are the
//! test's own.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn moat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .output()
        .expect("moat runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_file() && p.extension().is_some_and(|x| x == "conf") {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

const JAIL_LOCAL: &str = r#"[DEFAULT]
bantime = 1h
findtime = 10m
bantime.increment = true
bantime.factor = 1
bantime.maxtime = 1w
ignoreip = 127.0.0.1/8 ::1 192.0.2.10 gateway.example.org
banaction = nftables-multiport

[sshd]
enabled = true
mode = aggressive
port = ssh,2222
maxretry = 3
logpath = %(logs)s/auth.log

[nginx-http-auth]
enabled = true
logpath = %(logs)s/nginx-error.log

[nginx-botsearch]
enabled = true
maxretry = 2
logpath = %(logs)s/access.log
action = cloudflare-token[cfzone="023e105f4ecef8ad9ca31a8372d0c353", cftoken="not-a-real-token"]

[myapp]
enabled = true
filter = myapp
port = 8080
maxretry = 3
findtime = 1m
logpath = %(logs)s/myapp.log
action = %(action_)s
         abuseipdb[abuseipdb_apikey="not-a-real-key", abuseipdb_category="18"]

[recidive]
enabled = true
"#;

/// A filter of the test's own, in fail2ban's format.
const MYAPP: &str = r#"[INCLUDES]
before = common.conf

[Definition]
_daemon = myapp
failregex = ^%(__prefix_line)sbad token from <HOST>$
ignoreregex = ^%(__prefix_line)sbad token from \S+ \(test\)$
"#;

fn logs(dir: &Path) {
    let mut auth = String::new();
    // 203.0.113.5: three wrong passwords within a minute: banned (maxretry 3).
    for (i, port) in [40001, 40002, 40003].iter().enumerate() {
        auth.push_str(&format!(
            "Mar 28 10:00:{:02} host sshd[100]: Failed password for root from 203.0.113.5 port {port} ssh2\n",
            i * 10
        ));
    }
    // 203.0.113.6: two only. 192.0.2.10 is in ignoreip. A host name is never banned.
    for i in 0..2 {
        auth.push_str(&format!("Mar 28 10:01:0{i} host sshd[101]: Failed password for admin from 203.0.113.6 port 4100{i} ssh2\n"));
    }
    for i in 0..5 {
        auth.push_str(&format!("Mar 28 10:02:0{i} host sshd[102]: Failed password for root from 192.0.2.10 port 4200{i} ssh2\n"));
        auth.push_str(&format!("Mar 28 10:03:0{i} host sshd[103]: Failed password for root from mail.example.org port 4300{i} ssh2\n"));
    }
    // 203.0.113.7: scanner noise, a failure in aggressive mode only (mode = aggressive).
    for i in 0..3 {
        auth.push_str(&format!("Mar 28 10:04:0{i} host sshd[104]: Did not receive identification string from 203.0.113.7 port 4400{i}\n"));
    }
    auth.push_str("Mar 28 10:05:00 host sshd[105]: Accepted publickey for deploy from 198.51.100.4 port 45000 ssh2: ED25519 SHA256:x\n");
    std::fs::write(dir.join("auth.log"), auth).unwrap();

    let mut err = String::new();
    for i in 0..5 {
        err.push_str(&format!(
            "2026/03/28 10:10:0{i} [error] 2865#0: *66{i} user \"admin\": password mismatch, client: 198.51.100.20, server: example.org, request: \"GET /admin HTTP/1.1\", host: \"example.org\"\n"
        ));
    }
    for i in 0..4 {
        err.push_str(&format!(
            "2026/03/28 10:11:0{i} [error] 2865#0: *67{i} user \"bob\" was not found in \"/etc/nginx/.htpasswd\", client: 198.51.100.21, server: example.org, request: \"GET /admin HTTP/1.1\", host: \"example.org\"\n"
        ));
    }
    std::fs::write(dir.join("nginx-error.log"), err).unwrap();

    let mut access = String::new();
    for (i, path) in ["/wp-login.php", "/phpmyadmin/index.php"]
        .iter()
        .enumerate()
    {
        access.push_str(&format!(
            "198.51.100.30 - - [28/Mar/2026:10:20:0{i} +0000] \"GET {path} HTTP/1.1\" 404 153 \"-\" \"zgrab\"\n"
        ));
    }
    access.push_str("198.51.100.31 - - [28/Mar/2026:10:20:05 +0000] \"GET /wp-login.php HTTP/1.1\" 404 153 \"-\" \"-\"\n");
    access.push_str("198.51.100.31 - - [28/Mar/2026:10:20:06 +0000] \"GET /wp-login.php HTTP/1.1\" 200 4521 \"-\" \"-\"\n");
    std::fs::write(dir.join("access.log"), access).unwrap();

    let mut app = String::new();
    // 203.0.113.40: three within a minute (banned); 203.0.113.41: three, a minute apart
    // (findtime 1m: never three in a window); the ignoreregex spares the test line.
    for i in 0..3 {
        app.push_str(&format!(
            "Mar 28 10:30:1{i} host myapp[9]: bad token from 203.0.113.40\n"
        ));
        app.push_str(&format!(
            "Mar 28 10:3{}:00 host myapp[9]: bad token from 203.0.113.41\n",
            1 + 2 * i
        ));
        app.push_str(&format!(
            "Mar 28 10:40:0{i} host myapp[9]: bad token from 203.0.113.42 (test)\n"
        ));
    }
    std::fs::write(dir.join("myapp.log"), app).unwrap();
}

#[test]
fn stock_jail_conf_with_a_jail_local_imports_and_bans_as_fail2ban_would() {
    let etc = Path::new("/etc/fail2ban");
    if !etc.join("jail.conf").is_file() || !etc.join("filter.d/sshd.conf").is_file() {
        support::skip(
            "stock_jail_conf_with_a_jail_local_imports_and_bans_as_fail2ban_would",
            "Debian's fail2ban package is not installed (apt-get install fail2ban)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f2b = tmp.path().join("fail2ban");
    copy_dir(etc, &f2b);
    copy_dir(&etc.join("filter.d"), &f2b.join("filter.d"));
    let logdir = tmp.path().join("logs");
    std::fs::create_dir(&logdir).unwrap();
    logs(&logdir);
    std::fs::write(
        f2b.join("jail.local"),
        JAIL_LOCAL.replace(
            "[DEFAULT]\n",
            &format!("[DEFAULT]\nlogs = {}\n", logdir.display()),
        ),
    )
    .unwrap();
    std::fs::write(f2b.join("filter.d/myapp.conf"), MYAPP).unwrap();

    let out = moat(&["import", "fail2ban", f2b.to_str().unwrap()]);
    let toml_text = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let parsed: toml::Table = toml::from_str(&toml_text).expect("the output is TOML");
    let jails = parsed["jails"].as_table().unwrap();
    let names: Vec<&String> = jails.keys().collect();
    assert_eq!(
        names,
        ["myapp", "nginx-botsearch", "nginx-http-auth", "sshd"],
        "{toml_text}"
    );
    let sshd = jails["sshd"].as_table().unwrap();
    assert_eq!(
        sshd["filter"].as_str(),
        Some("fail2ban:sshd[mode=aggressive]")
    );
    assert_eq!(
        sshd["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect::<Vec<_>>(),
        ["22/tcp", "2222/tcp"]
    );
    assert_eq!(sshd["bantime"].as_str(), Some("1h"));
    assert_eq!(sshd["maxretry"].as_integer(), Some(3));
    assert_eq!(
        sshd["ignore"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect::<Vec<_>>(),
        ["127.0.0.0/8", "::1/128", "192.0.2.10/32"]
    );
    // bantime.increment (doubling, at most a week) with recidive folded in: from the fifth
    // ban of a client in any jail within a day, a week (168 × 1h).
    let esc = sshd["escalate"].as_table().unwrap();
    let m: Vec<i64> = esc["multipliers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_integer().unwrap())
        .collect();
    assert_eq!(m, [1, 2, 4, 8, 168]);
    assert_eq!(esc["max"].as_str(), Some("1w"));
    assert_eq!(esc["across_jails"].as_bool(), Some(true));
    assert_eq!(esc["within"].as_str(), Some("1d"));
    let bots = jails["nginx-botsearch"].as_table().unwrap();
    assert_eq!(bots["behind"].as_str(), Some("cloudflare"));
    assert_eq!(
        parsed["enforce"]["use"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>(),
        ["kernel", "cloudflare"]
    );
    let cf = parsed["enforce"]["cloudflare"].as_table().unwrap();
    assert_eq!(
        cf["zone_id"].as_str(),
        Some("023e105f4ecef8ad9ca31a8372d0c353")
    );
    assert!(
        !toml_text.contains("not-a-real-token"),
        "a secret was copied:\n{toml_text}"
    );
    assert!(
        !toml_text.contains("not-a-real-key"),
        "a secret was copied:\n{toml_text}"
    );
    // What is not carried over is said, on stderr and as comments.
    for what in [
        "gateway.example.org",
        "action abuseipdb",
        "usedns = warn",
        "CLOUDFLARE_API_TOKEN",
        "recidive",
    ] {
        assert!(stderr.contains(what), "{what} not reported:\n{stderr}");
        assert!(
            toml_text.contains(what),
            "{what} not in the comments:\n{toml_text}"
        );
    }

    let cfg = tmp.path().join("moat.toml");
    std::fs::write(&cfg, &toml_text).unwrap();
    let check = moat(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "check-config: {}\n{toml_text}",
        String::from_utf8_lossy(&check.stderr)
    );
    let scan = moat(&[
        "scan",
        "-c",
        cfg.to_str().unwrap(),
        "--timezone",
        "UTC",
        "--json",
    ]);
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
    let v: Value = serde_json::from_slice(&scan.stdout).unwrap();
    let mut bans: Vec<(String, String)> = v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["jail"].as_str().unwrap().into(),
                b["target"].as_str().unwrap().trim_end_matches("/32").into(),
            )
        })
        .collect();
    bans.sort();
    assert_eq!(
        bans,
        [
            ("myapp".to_string(), "203.0.113.40".to_string()),
            ("nginx-botsearch".into(), "198.51.100.30".into()),
            ("nginx-http-auth".into(), "198.51.100.20".into()),
            ("sshd".into(), "203.0.113.5".into()),
            ("sshd".into(), "203.0.113.7".into()),
        ],
        "{v:#}"
    );
    let jail = |name: &str| {
        v["jails"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()
            .clone()
    };
    // The host name matched but is not an address; the ignoreip address was not counted.
    assert_eq!(jail("sshd")["bad_host"], 5);
    assert_eq!(jail("sshd")["ignored_clients"], 5);
}

#[test]
fn a_broken_jail_local_is_reported_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("jail.conf"), "[DEFAULT]\nbantime = 10m\n").unwrap();
    std::fs::write(
        tmp.path().join("jail.local"),
        "[sshd]\nenabled = true\nport ssh\n",
    )
    .unwrap();
    let out = moat(&["import", "fail2ban", tmp.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("jail.local:3: not a `key = value` line"),
        "{err}"
    );
}

#[test]
fn a_systemd_backend_reads_the_journal_by_the_filters_journalmatch() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("filter.d")).unwrap();
    std::fs::write(
        tmp.path().join("filter.d/gate.conf"),
        "[Definition]\nfailregex = ^\\S+ gate\\[\\d+\\]: denied <HOST>$\njournalmatch = _SYSTEMD_UNIT=gate.service + _COMM=gate\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("jail.conf"),
        "[DEFAULT]\nmaxretry = 4\nbantime = -1\naction = iptables-allports\n[gate]\nenabled = true\nfilter = gate\nbackend = systemd\n",
    )
    .unwrap();
    let out = moat(&["import", "fail2ban", tmp.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let gate = parsed["jails"]["gate"].as_table().unwrap();
    assert_eq!(
        gate["filter"].as_str(),
        Some("fail2ban:gate[logtype=journal]")
    );
    assert_eq!(
        gate["sources"].as_array().unwrap()[0].as_str(),
        Some("journald:_SYSTEMD_UNIT=gate.service + _COMM=gate")
    );
    assert_eq!(gate["bantime"].as_str(), Some("forever"));
    assert!(!gate.contains_key("ports"), "allports: every port\n{text}");
    let cfg = tmp.path().join("moat.toml");
    std::fs::write(&cfg, &text).unwrap();
    let check = moat(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
}

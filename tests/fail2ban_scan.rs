//! fail2ban filters in `moat scan` and in configurations, through the real binary: a filter
//! directory written by the test (moat's own text, in fail2ban's format), options in
//! brackets, `.local` overlays, `--json-lines`, `--timezone`, and errors that name the file,
//! the line, the regex and the construct.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn moat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .output()
        .expect("moat runs")
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A filter in fail2ban's format: a common prefix file included before it, a mode chosen
/// through [Init] and a tag, a user capture, and a connection joined by <F-MLFID>.
fn filter_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "filter.d/base.conf",
        "[DEFAULT]\n_daemon = \\S+\n__prefix = \\s*\\S+ <_daemon>\\[\\d+\\]:\\s+\n",
    );
    write(
        d.path(),
        "filter.d/gate.conf",
        r#"# a login gate in fail2ban's format, written for this test
[INCLUDES]
before = base.conf

[DEFAULT]
_daemon = gated

[Definition]
prefregex = ^%(__prefix)s<F-MLFID>session \d+</F-MLFID>: <F-CONTENT>.+</F-CONTENT>$
normal = ^login failed for <F-USER>\S+</F-USER> from <HOST>$
strict = ^login failed for <F-USER>\S+</F-USER> from <HOST>$
         ^probe from <HOST>$
failregex = <<mode>>
            ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$
            ^password wrong$
datepattern = {^LN-BEG}

[Init]
mode = normal
"#,
    );
    d
}

const LOG: &str = "\
2026-03-28 10:00:01 host gated[7]: session 1: login failed for bob from 198.51.100.7
2026-03-28 10:00:02 host gated[7]: session 2: probe from 198.51.100.8
2026-03-28 10:00:03 host gated[7]: session 3: connect from 2001:db8::3
2026-03-28 10:00:04 host gated[7]: session 3: password wrong
2026-03-28 10:00:05 host gated[7]: session 4: login failed for eve from mail.example.org
";

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn json_lines_per_failure_with_options_and_zone() {
    let d = filter_dir();
    let log = d.path().join("gate.log");
    std::fs::write(&log, LOG).unwrap();
    let dir = d.path().to_str().unwrap();
    let log = log.to_str().unwrap();
    let out = moat(&[
        "scan",
        "--fail2ban-dir",
        dir,
        "--fail2ban-filter",
        "gate",
        "--timezone",
        "Europe/Zurich",
        "--json-lines",
        log,
    ]);
    let v = json_lines(&out);
    // Line 2 is a probe, a failure only in strict mode; line 3 says where session 3 comes
    // from, and line 4's failure counts against that address; line 5 names a host, which is
    // reported but never an address to ban.
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[0]["line"], 1);
    assert_eq!(v[0]["match"], true);
    assert_eq!(v[0]["host"], "198.51.100.7");
    assert_eq!(v[0]["user"], "bob");
    assert_eq!(v[0]["time"], "2026-03-28T09:00:01Z");
    assert_eq!(
        (v[1]["line"].as_u64(), v[1]["host"].as_str()),
        (Some(4), Some("2001:db8::3"))
    );
    assert_eq!(v[2]["line"], 5);
    assert_eq!(v[2]["host"], Value::Null);
    assert_eq!(v[2]["id"], "mail.example.org");
    // Options in brackets, and a path instead of a name; UTC times.
    let path = format!("{dir}/filter.d/gate.conf[mode=strict]");
    let out = moat(&[
        "scan",
        "--fail2ban-filter",
        &path,
        "--timezone",
        "UTC",
        "--json-lines",
        log,
    ]);
    let v = json_lines(&out);
    let lines: Vec<u64> = v.iter().map(|o| o["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 4, 5]);
    assert_eq!(v[0]["time"], "2026-03-28T10:00:01Z");
    // A .local overlay extends the filter as in fail2ban.
    write(
        d.path(),
        "filter.d/gate.local",
        "[Definition]\nfailregex = %(known/failregex)s\n            ^denied from <HOST>$\n",
    );
    std::fs::write(
        d.path().join("more.log"),
        "2026-03-28 10:00:09 host gated[7]: session 9: denied from 203.0.113.9\n",
    )
    .unwrap();
    let more = d.path().join("more.log");
    let out = moat(&[
        "scan",
        "--fail2ban-dir",
        dir,
        "--fail2ban-filter",
        "gate",
        "--json-lines",
        more.to_str().unwrap(),
    ]);
    assert_eq!(json_lines(&out)[0]["host"], "203.0.113.9");
}

#[test]
fn a_configured_jail_bans_with_a_fail2ban_filter() {
    let d = filter_dir();
    let mut log = String::new();
    for i in 0..5 {
        log.push_str(&format!(
            "2026-03-28 10:00:0{i} host gated[7]: session {i}: login failed for bob from 198.51.100.7\n"
        ));
    }
    std::fs::write(d.path().join("gate.log"), log).unwrap();
    let config = format!(
        "[defaults]\nfail2ban_dir = \"{}\"\ntimezone = \"UTC\"\n\n[jails.gate]\nfilter = \"fail2ban:gate[mode=strict]\"\nsources = [\"gate.log\"]\nmaxretry = 5\n",
        d.path().display()
    );
    std::fs::write(d.path().join("moat.toml"), &config).unwrap();
    let cfg = d.path().join("moat.toml");
    let out = moat(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = moat(&["scan", "-c", cfg.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bans = v["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 1, "{v}");
    assert_eq!(bans[0]["target"], "198.51.100.7/32");
    assert_eq!(bans[0]["started"], "2026-03-28T10:00:04Z");
}

#[test]
fn errors_name_file_line_regex_and_construct() {
    let d = filter_dir();
    write(
        d.path(),
        "filter.d/bad.conf",
        "[Definition]\n\nfailregex = ^ok <HOST>$\n            ^x (?P<a>1)(?P<a>2) <HOST>\n",
    );
    let dir = d.path().to_str().unwrap();
    let out = moat(&[
        "scan",
        "--fail2ban-dir",
        dir,
        "--fail2ban-filter",
        "bad",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("filter.d/bad.conf:3"), "{err}");
    assert!(err.contains("failregex #2"), "{err}");
    assert!(err.contains("redefinition of group name"), "{err}");
    write(
        d.path(),
        "filter.d/dns.conf",
        "[Definition]\nfailregex = ^from <DNS>$\n",
    );
    let out = moat(&[
        "scan",
        "--fail2ban-dir",
        dir,
        "--fail2ban-filter",
        "dns",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<DNS> is refused") && err.contains("dns.conf:2"),
        "{err}"
    );
    write(
        d.path(),
        "filter.d/syntax.conf",
        "[Definition]\nfailregex\n",
    );
    let out = moat(&[
        "scan",
        "--fail2ban-dir",
        dir,
        "--fail2ban-filter",
        "syntax",
        "/dev/null",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("syntax.conf:2: not a `key = value` line"),
        "{err}"
    );
    let out = moat(&[
        "scan",
        "--fail2ban-dir",
        dir,
        "--fail2ban-filter",
        "nope",
        "/dev/null",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no filter"));
    // In a configuration: the jail's line, and the filter's own location.
    let cfg = d.path().join("moat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[defaults]\nfail2ban_dir = \"{dir}\"\n[jails.x]\nfilter = \"fail2ban:bad\"\nsources = [\"/dev/null\"]\n"
        ),
    )
    .unwrap();
    let out = moat(&["check-config", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("moat.toml:3:") && err.contains("bad.conf:3"),
        "{err}"
    );
}

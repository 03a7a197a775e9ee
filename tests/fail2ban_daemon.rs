//! A fail2ban filter in `moat run`: the daemon follows a real file and keeps the filter's
//! state across lines, as fail2ban does: a connection's address is given on one line
//! (`<F-NOFAIL>`), its failures come later without it (joined by `<F-MLFID>`), and a line of
//! the same connection logged in once (`<F-MLFGAINED>`) forgets it.

mod support;

use support::{append, write_config, Daemon};

/// A filter in fail2ban's format, written for this test.
const GATE: &str = r#"[Definition]
prefregex = ^\s*\S+ gated\[\d+\]: <F-MLFID>session \d+</F-MLFID>: <F-CONTENT>.+</F-CONTENT>$
failregex = ^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$
            ^password wrong for <F-USER>\S+</F-USER>$
            ^<F-MLFFORGET><F-MLFGAINED>logged in</F-MLFGAINED></F-MLFFORGET> as <F-USER>\S+</F-USER>$
datepattern = {^LN-BEG}
"#;

#[test]
fn the_daemon_joins_a_connections_lines_as_fail2ban_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("f2b/filter.d")).unwrap();
    std::fs::write(dir.join("f2b/filter.d/gate.conf"), GATE).unwrap();
    write_config(
        dir,
        &format!(
            "[defaults]\nfail2ban_dir = \"{}\"\ntimezone = \"UTC\"\n\n[jails.gate]\nfilter = \"fail2ban:gate\"\nsources = [\"gate.log\"]\nmaxretry = 3\nfindtime = \"10m\"\n",
            dir.join("f2b").display()
        ),
    );
    let log = dir.join("gate.log");
    let now = || {
        jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    // Session 1 (198.51.100.7) fails three times; session 2 (198.51.100.8) fails twice, logs
    // in and fails again: a login forgets the connection, so its last failure has no address.
    let mut text = String::new();
    for (session, line) in [
        (1, "connect from 198.51.100.7"),
        (2, "connect from 198.51.100.8"),
        (1, "password wrong for root"),
        (2, "password wrong for admin"),
        (1, "password wrong for root"),
        (2, "password wrong for admin"),
        (2, "logged in as admin"),
        (2, "password wrong for admin"),
        (1, "password wrong for root"),
    ] {
        text.push_str(&format!(
            "{} host gated[9]: session {session}: {line}\n",
            now()
        ));
    }
    append(&log, &text);
    let d = Daemon::start(dir);
    let j = d.wait_jail("gate", "the ban of session 1", |j| {
        j["banned"].as_array().is_some_and(|b| !b.is_empty())
    });
    let targets: Vec<&str> = j["banned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["198.51.100.7/32"], "{j:#}");
    // Session 2's two failures counted; the one after its login had no address.
    assert_eq!(j["total_failed"], 5, "{j:#}");
    d.stop();
}

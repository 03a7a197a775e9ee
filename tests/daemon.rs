//! `moat run` end to end: the real binary follows real files, keeps its ledger in real
//! SQLite, runs a real command as its enforcer, and is driven by the real CLI over its socket.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{append, clf_now, write_config, Daemon};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// A Portainer login failure in nginx's combined format.
fn failure(ip: &str) -> String {
    format!(
        "{ip} - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"python-requests/2.31\"\n",
        clf_now()
    )
}

fn banned_targets(j: &Value) -> BTreeSet<String> {
    j["banned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bans_through_exec_and_every_command_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("stamps")).unwrap();
    let stamps = dir.join("stamps");
    write_config(
        dir,
        &format!(
            r#"[enforce]
use = ["log", "exec"]

[enforce.exec]
ban = ["/usr/bin/touch", "{s}/{{ip}}"]
unban = ["/bin/rm", "-f", "{s}/{{ip}}"]

[jails.portainer]
filter = "portainer"
sources = ["logs/access.log"]
maxretry = 3
ipv6_prefix = 64
"#,
            s = stamps.display()
        ),
    );
    append(&dir.join("logs/access.log"), "");
    let d = Daemon::start(dir);
    let log = dir.join("logs/access.log");
    // A partial line waits for its newline.
    append(&log, &failure("203.0.113.66"));
    append(&log, &failure("203.0.113.66"));
    let third = failure("203.0.113.66");
    append(&log, &third[..20]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.jail("portainer")["total_failed"], 2);
    append(&log, &third[20..]);
    // Hostile text elsewhere in the line never picks whom to ban.
    for _ in 0..3 {
        append(
            &log,
            &format!(
                "2001:db8:1:2::77 - - [{}] \"POST /api/auth?u=198.51.100.1 HTTP/1.1\" 422 52 \"-\" \"198.51.100.1\"\n",
                clf_now()
            ),
        );
    }
    let j = d.wait_jail("portainer", "two bans", |j| j["currently_banned"] == 2);
    assert_eq!(
        banned_targets(&j),
        ["2001:db8:1:2::/64", "203.0.113.66/32"]
            .map(String::from)
            .into()
    );
    assert_eq!(j["total_failed"], 6);
    assert_eq!(j["currently_failing"], 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stamps.join("203.0.113.66").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stamps.join("203.0.113.66").exists(), "{}", d.log());

    // status, human
    let out = d.moat(&["status"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("portainer") && text.contains("failed (total)"),
        "{text}"
    );
    assert!(text.contains("exec"), "{text}");
    let out = d.moat(&["status", "portainer"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("|- Currently banned:  2"), "{text}");
    assert!(text.contains("|- Total failed:      6"), "{text}");
    assert!(text.contains("203.0.113.66"), "{text}");
    let out = d.moat(&["status", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no jail named \"nope\""));

    // ban by hand, a network, forever; bad targets are refused before reaching the daemon
    let b = d.json(&[
        "ban",
        "198.51.100.0/24",
        "--for",
        "forever",
        "--reason",
        "scanner",
        "--json",
    ]);
    assert_eq!(b["target"], "198.51.100.0/24");
    assert_eq!(b["until"], Value::Null);
    let out = d.moat(&["ban", "198.51.100.7/24"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("198.51.100.0/24"));
    let out = d.moat(&["ban", "$(reboot)"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.moat(&["ban", "203.0.113.99", "--jail", "portainer", "--for", "10m"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Banned 203.0.113.99 in jail portainer"));
    // Never the host itself, loopback, or half the internet.
    for (target, why) in [
        ("127.0.0.1", "loopback"),
        ("10.0.0.0/8", "wider"),
        ("fe80::1", "link-local"),
    ] {
        let out = d.moat(&["ban", target]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{target}"
        );
    }
    let bans = d.json(&["bans", "--json"]);
    assert_eq!(bans["active"].as_array().unwrap().len(), 4);
    let out = d.moat(&["bans", "--history"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("4 active bans") && text.contains("History"),
        "{text}"
    );

    // unban: an address inside a banned network lifts the network's ban
    let out = d.json(&["unban", "198.51.100.77", "--json"]);
    assert_eq!(out[0]["target"], "198.51.100.0/24");
    let out = d.moat(&["unban", "203.0.113.66"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Unbanned 203.0.113.66"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stamps.join("203.0.113.66").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !stamps.join("203.0.113.66").exists(),
        "unban ran the unban command"
    );
    let out = d.moat(&["unban", "203.0.113.66"]);
    assert_eq!(out.status.code(), Some(1));
    // After an unban the client's failures count afresh.
    for _ in 0..3 {
        append(&log, &failure("203.0.113.66"));
    }
    d.wait_jail("portainer", "the re-ban", |j| {
        banned_targets(j).contains("203.0.113.66/32")
    });
    let out = d.json(&["unban", "--all", "--json"]);
    assert_eq!(out.as_array().unwrap().len(), 3);
    assert_eq!(d.json(&["bans", "--json"])["active"], Value::Array(vec![]));

    let log = d.stop();
    assert!(log.contains("stopped"), "{log}");
    // Without the daemon, commands say so and how to start it.
    let out = Command::new(MOAT)
        .args(["status", "-c"])
        .arg(dir.join("moat.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("moat is not running") && err.contains("moat run"),
        "{err}"
    );
}

#[test]
fn restart_keeps_bans_cursor_and_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 3\n",
    );
    let log = dir.join("access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    for _ in 0..3 {
        append(&log, &failure("203.0.113.5"));
    }
    append(&log, &failure("203.0.113.6"));
    d.wait_jail("portainer", "a ban", |j| j["currently_banned"] == 1);
    d.stop();
    // Written while moat is stopped: read once on restart, not skipped, not doubled.
    append(&log, &failure("203.0.113.6"));
    let d = Daemon::start(dir);
    let j = d.wait_jail("portainer", "catch-up", |j| j["total_failed"] == 5);
    assert_eq!(banned_targets(&j), ["203.0.113.5/32".to_string()].into());
    assert_eq!(j["currently_failing"], 1, "{j:#}");
    append(&log, &failure("203.0.113.6"));
    let j = d.wait_jail("portainer", "second ban", |j| j["currently_banned"] == 2);
    assert_eq!(j["total_banned"], 2);
    assert_eq!(j["total_failed"], 6);
    d.stop();
}

#[test]
fn old_lines_do_not_ban_and_future_times_are_clamped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\nfindtime = \"10m\"\n",
    );
    let log = dir.join("access.log");
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(5);
    for t in [old, old, future, future] {
        append(
            &log,
            &format!(
                "203.0.113.{} - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"x\"\n",
                if t == old { 71 } else { 72 },
                t.strftime("%d/%b/%Y:%H:%M:%S +0000")
            ),
        );
    }
    let d = Daemon::start(dir);
    let j = d.wait_jail("portainer", "the lines", |j| j["total_failed"] == 2);
    assert_eq!(j["stale"], 2);
    let ban = &j["banned"][0];
    assert_eq!(ban["target"], "203.0.113.72/32");
    // Clamped to now: the ban starts now, not five hours ahead.
    let started: jiff::Timestamp = ban["started"].as_str().unwrap().parse().unwrap();
    assert!(started <= jiff::Timestamp::now());
    d.stop();
}

#[test]
fn reload_keeps_bans_and_rejects_a_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base =
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n";
    write_config(dir, base);
    let log = dir.join("access.log");
    append(&log, "");
    append(&dir.join("ssh.log"), "");
    let d = Daemon::start(dir);
    append(&log, &failure("203.0.113.9"));
    append(&log, &failure("203.0.113.9"));
    append(&log, &failure("203.0.113.10"));
    d.wait_jail("portainer", "a ban", |j| j["currently_banned"] == 1);

    // A typo: refused, the running configuration stays.
    write_config(dir, &format!("{base}findtim = \"1h\"\n"));
    let out = d.moat(&["reload"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("findtim") && err.contains("did you mean"),
        "{err}"
    );
    assert_eq!(d.jail("portainer")["currently_banned"], 1);

    // Unchanged jail kept with its counters and bans; a new jail added.
    write_config(
        dir,
        &format!("{base}\n[jails.sshd]\nfilter = \"sshd\"\nsources = [\"ssh.log\"]\n"),
    );
    let out = d.moat(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("kept: portainer") && text.contains("added: sshd"),
        "{text}"
    );
    let j = d.jail("portainer");
    assert_eq!(
        (
            j["currently_banned"].clone(),
            j["currently_failing"].clone(),
            j["total_failed"].clone()
        ),
        (1.into(), 1.into(), 3.into())
    );

    // Changed in place (maxretry): bans and counters stay; SIGHUP reloads too.
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 3\n",
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.child.as_ref().unwrap().id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("changed: portainer") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log();
    assert!(
        log.contains("changed: portainer") && log.contains("removed: sshd"),
        "{log}"
    );
    let j = d.jail("portainer");
    assert_eq!(j["maxretry"], 3);
    assert_eq!(j["currently_banned"], 1);
    assert_eq!(j["total_failed"], 3);
    append(&log_path(dir), &failure("203.0.113.10"));
    let j = d.wait_jail("portainer", "the count", |j| j["total_failed"] == 4);
    assert_eq!(j["currently_banned"], 1, "2 of 3 failures: not banned yet");
    append(&log_path(dir), &failure("203.0.113.10"));
    d.wait_jail("portainer", "the ban", |j| j["currently_banned"] == 2);
    d.stop();
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("access.log")
}

#[test]
fn the_socket_admits_only_its_owner_and_survives_junk() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    let d = Daemon::start(dir);
    let sock = dir.join("run/moat.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A client that sends nothing does not block others.
    let silent = UnixStream::connect(&sock).unwrap();
    let reply = |req: &[u8]| {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(req).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let r = reply(b"\x00\xff garbage\n");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("bad request"));
    let r = reply(b"{\"cmd\":\"status\",\"extra\":1}\n");
    assert_eq!(r["ok"], false);
    // Too long: refused (or the connection reset while the client was still writing).
    {
        let mut s = UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(&vec![b'x'; 200_000]);
        let mut out = String::new();
        if s.read_to_string(&mut out).is_ok() && !out.is_empty() {
            assert!(out.contains("too long"), "{out}");
        }
    }
    let r = reply(b"{\"cmd\":\"ping\"}\n");
    assert_eq!(r["result"], "pong");
    drop(silent);

    // Another user is refused (as root, the test can be that other user).
    if nix::unistd::Uid::effective().is_root() {
        use std::os::unix::process::CommandExt;
        let out = Command::new(MOAT)
            .args(["status", "--socket"])
            .arg(&sock)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("skipping the other-user check: needs root to run a client as nobody");
    }
    // A second daemon on the same socket refuses to start.
    let out = Command::new(MOAT)
        .args(["run", "-c"])
        .arg(dir.join("moat.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    d.stop();
    assert!(!sock.exists(), "the socket is removed on stop");
}

#[test]
fn a_damaged_ledger_is_moved_aside_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/moat.db"), vec![0x42; 10_000]).unwrap();
    let d = Daemon::start(dir);
    let s = d.json(&["status", "--json"]);
    let warnings = s["warnings"].to_string();
    assert!(
        warnings.contains("damaged") && warnings.contains("moved"),
        "{s:#}"
    );
    let aside: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("moat.db.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), vec![0x42; 10_000]);
    d.stop();
}

/// Writes one distinct failing client per line, without pausing, while the test rotates the
/// file in every way; then every line must have been counted exactly once.
#[test]
fn rotation_in_every_mode_under_a_writer_that_never_pauses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_config(
        &dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"logs/access.log\"]\nmaxretry = 1\nipv6_prefix = 128\nmax_clients = 100000\n",
    );
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let log = dir.join("logs/access.log");
    append(&log, "");
    let d = Daemon::start(&dir);

    let written = Arc::new(AtomicU64::new(0));
    let reopen = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    // Holding this pauses nothing but the copytruncate window, which logrotate itself
    // cannot make safe (lines written between its copy and its truncate are lost by design).
    let copy_lock = Arc::new(std::sync::Mutex::new(()));
    let writer = {
        let (written, reopen, done, copy_lock, log) = (
            written.clone(),
            reopen.clone(),
            done.clone(),
            copy_lock.clone(),
            log.clone(),
        );
        std::thread::spawn(move || {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap()
            };
            let mut f = open();
            let mut n: u64 = 0;
            while !done.load(Ordering::SeqCst) {
                if reopen.swap(false, Ordering::SeqCst) {
                    f = open();
                }
                let ip = format!("2001:db8::{:x}:{:x}", (n + 1) >> 16, (n + 1) & 0xffff);
                let _g = copy_lock.lock().unwrap();
                f.write_all(failure(&ip).as_bytes()).unwrap();
                n += 1;
                written.store(n, Ordering::SeqCst);
                drop(_g);
                if n.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    let logs = dir.join("logs");
    // Each rotation is left to be noticed before the next: a path that changes twice between
    // two looks (here only under a loaded CI machine, in life never within a second) hides
    // the file in between, which is the one case moat cannot see.
    let noticed = |what: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.log().matches(what).count() < n {
            assert!(
                Instant::now() < deadline,
                "{what} #{n} not noticed: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pause = || std::thread::sleep(Duration::from_millis(300));
    pause();
    // rename and create; the writer keeps writing to the old file for a moment
    std::fs::rename(&log, logs.join("access.log.1")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    reopen.store(true, Ordering::SeqCst);
    noticed("rotated;", 1);
    // copytruncate
    {
        let _g = copy_lock.lock().unwrap();
        std::fs::copy(&log, logs.join("access.log.2")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    noticed("truncated;", 1);
    // delete and recreate
    std::fs::remove_file(&log).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    reopen.store(true, Ordering::SeqCst);
    noticed("rotated;", 2);
    // symlink retarget: the path becomes a link to a new file, then to another
    let t1 = logs.join("t1.log");
    append(&t1, "");
    let tmp_link = logs.join("tmp.link");
    std::os::unix::fs::symlink(&t1, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &log).unwrap();
    reopen.store(true, Ordering::SeqCst);
    noticed("rotated;", 3);
    let t2 = logs.join("t2.log");
    append(&t2, "");
    std::os::unix::fs::symlink(&t2, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &log).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    reopen.store(true, Ordering::SeqCst);
    noticed("rotated;", 4);
    pause();
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let total = written.load(Ordering::SeqCst);
    assert!(total > 1000, "the writer wrote {total} lines");
    let j = d.wait_jail("portainer", "every line", |j| {
        j["total_failed"].as_u64() >= Some(total)
    });
    std::thread::sleep(Duration::from_millis(500));
    let j2 = d.jail("portainer");
    assert_eq!(
        j2["total_failed"].as_u64(),
        Some(total),
        "no line counted twice: {j}"
    );
    assert_eq!(j2["total_banned"].as_u64(), Some(total));
    d.stop();
}

/// `kill -9` at random moments while lines stream in, restarts, and in the end the bans and
/// counts equal what `moat scan` computes from the whole log: nothing lost, nothing doubled.
#[test]
fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_config(
        &dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"2s\"\n",
    );
    let log = dir.join("access.log");
    append(&log, "");
    let mut d = Daemon::start(&dir);

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (done, log) = (done.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                seed >> 33
            };
            // Not 192.0.2.0/24: test machines use it for their own address (this one's is
            // 192.0.2.2), and moat never bans its host.
            let prefixes = ["198.51.100", "203.0.113", "198.51.100"];
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let mut burst = String::new();
                for _ in 0..10 {
                    let r = next();
                    let ip = format!("{}.{}", prefixes[(r % 3) as usize], (r / 3) % 250 + 1);
                    if r % 5 == 0 {
                        burst.push_str(&format!(
                            "{ip} - - [{}] \"GET / HTTP/1.1\" 200 512 \"-\" \"x\"\n",
                            clf_now()
                        ));
                    } else {
                        burst.push_str(&failure(&ip));
                    }
                    n += 1;
                }
                // Sometimes a burst ends inside a line, as a writer's buffer flush can.
                let cut = if n % 7 == 0 {
                    burst.len() - 10
                } else {
                    burst.len()
                };
                f.write_all(&burst.as_bytes()[..cut]).unwrap();
                std::thread::sleep(Duration::from_millis(3));
                f.write_all(&burst.as_bytes()[cut..]).unwrap();
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };
    let mut rng: u64 = std::process::id() as u64;
    let mut pick = |lo: u64, hi: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
        lo + (rng >> 33) % (hi - lo)
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(pick(300, 2500)));
        d.kill9();
        std::thread::sleep(Duration::from_millis(pick(0, 400)));
        d = Daemon::start(&dir);
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let out = Command::new(MOAT)
        .args(["scan", "--json", "-c"])
        .arg(dir.join("moat.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
    let matched = reference["matched"].as_u64().unwrap();
    let expected: BTreeSet<(String, jiff::Timestamp)> = reference["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["target"].as_str().unwrap().to_string(),
                b["started"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert!(
        expected.len() > 50,
        "the stream should ban plenty: {}",
        expected.len()
    );
    let j = d.wait_jail("portainer", "catch-up", |j| {
        j["total_failed"].as_u64() >= Some(matched)
    });
    std::thread::sleep(Duration::from_millis(300));
    let j2 = d.jail("portainer");
    assert_eq!(j2["total_failed"].as_u64(), Some(matched), "{j}");
    let bans = d.json(&["bans", "--history", "1000000", "--json"]);
    let got: Vec<(String, jiff::Timestamp)> = bans["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["target"].as_str().unwrap().to_string(),
                b["started"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let got_set: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "a ban recorded twice");
    let missing: Vec<_> = expected.difference(&got_set).take(10).collect();
    let extra: Vec<_> = got_set.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} bans expected, {} recorded; missing (first 10) {missing:?}; extra {extra:?}",
        expected.len(),
        got_set.len()
    );
    assert_eq!(j2["total_banned"].as_u64(), Some(expected.len() as u64));
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{}", d.log());
        eprintln!("{j2:#}");
    }
    d.stop();
}

fn journal_entry(cursor: &str, ident: &str, message: &str) -> String {
    let micros = jiff::Timestamp::now().as_microsecond();
    serde_json::json!({
        "__CURSOR": cursor,
        "__REALTIME_TIMESTAMP": micros.to_string(),
        "_HOSTNAME": "host",
        "SYSLOG_IDENTIFIER": ident,
        "_PID": "4242",
        "MESSAGE": message,
    })
    .to_string()
}

/// journald through a recording of `journalctl -o json`: what moat asks for, how it renders
/// entries, and that it resumes after the saved cursor.
#[test]
fn journald_source_from_a_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.sshd]\nfilter = \"sshd\"\nsources = [\"journald:ssh.service\"]\nmaxretry = 2\n",
    );
    let recording = dir.join("recording.json");
    let mut rec = String::new();
    for (i, msg) in [
        "Failed password for root from 203.0.113.5 port 1 ssh2",
        "Accepted publickey for admin from 192.0.2.10 port 2 ssh2",
        "Failed password for invalid user x\nFailed password for root from 198.51.100.1 port 3 ssh2 from 203.0.113.5 port 4 ssh2",
    ]
    .iter()
    .enumerate()
    {
        rec.push_str(&journal_entry(&format!("s=c{i}"), "sshd", msg));
        rec.push('\n');
    }
    std::fs::write(&recording, rec).unwrap();
    let fake = dir.join("journalctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> {args}\ncase \"$*\" in *--after-cursor*) ;; *) cat {rec} ;; esac\nexec sleep 600\n",
            args = dir.join("args").display(),
            rec = recording.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let env = [("MOAT_JOURNALCTL", fake.to_str().unwrap())];
    let d = Daemon::start_with(dir, &env);
    let j = d.wait_jail("sshd", "a ban", |j| j["currently_banned"] == 1);
    // The newline in the third message did not make a line of its own for 198.51.100.1.
    assert_eq!(banned_targets(&j), ["203.0.113.5/32".to_string()].into());
    assert_eq!(j["total_failed"], 2);
    d.stop();
    let d = Daemon::start_with(dir, &env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(dir.join("args"))
        .unwrap_or_default()
        .contains("--after-cursor=s=c2")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    let first = args.lines().next().unwrap();
    assert!(
        first.contains("--follow --output=json")
            && first.contains("--lines=all")
            && first.contains("--unit=ssh.service"),
        "{args}"
    );
    assert!(
        args.lines().nth(1).unwrap().contains("--after-cursor=s=c2"),
        "{args}"
    );
    assert_eq!(d.jail("sshd")["total_failed"], 2);
    d.stop();
}

/// The real journal, where this machine runs journald.
#[test]
fn journald_source_from_the_real_journal() {
    if !Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("SKIP journald_source_from_the_real_journal: no journald on this machine (/run/systemd/journal/socket is absent); the recording test covers the source");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ident = format!("moat-test-{}", std::process::id());
    write_config(
        dir,
        &format!("[jails.sshd]\nfilter = \"sshd\"\nsources = [\"journald:SYSLOG_IDENTIFIER={ident}\"]\nmaxretry = 2\n"),
    );
    let d = Daemon::start(dir);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..2 {
        let mut cat = Command::new("systemd-cat")
            .args(["-t", &ident])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        cat.stdin
            .take()
            .unwrap()
            .write_all(b"Failed password for root from 203.0.113.77 port 1 ssh2\n")
            .unwrap();
        cat.wait().unwrap();
    }
    let j = d.wait_jail("sshd", "a ban from the journal", |j| {
        j["currently_banned"] == 1
    });
    assert_eq!(banned_targets(&j), ["203.0.113.77/32".to_string()].into());
    d.stop();
}

/// Container logs through a real Docker engine: a container's failures ban; its restart and
/// its recreation under the same name are followed, and no line is read twice.
#[test]
fn docker_source_follows_a_container_across_restart_and_recreation() {
    let docker = match support::Dockerd::start("logs") {
        Ok(d) => d,
        Err(why) => return support::skip("docker_source_follows_a_container...", &why),
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"docker:web\"]\nmaxretry = 3\n",
    );
    // Each start prints two failures of one client with the time of printing.
    let script = |ip: &str| {
        format!(
            "for i in 1 2; do echo \"{ip} - - [$(date -u +%d/%b/%Y:%H:%M:%S) +0000] \\\"POST /api/auth HTTP/1.1\\\" 422 52 \\\"-\\\" \\\"x\\\"\"; done; sleep 600"
        )
    };
    docker.must(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "moat-test/busybox:1",
        "sh",
        "-c",
        &script("203.0.113.40"),
    ]);
    let host = docker.host();
    let d = Daemon::start_with(dir, &[("DOCKER_HOST", host.as_str())]);
    let j = d.wait_jail("portainer", "two failures", |j| j["total_failed"] == 2);
    assert_eq!(j["currently_banned"], 0);
    // A restart prints the same two lines again: the third failure bans.
    docker.must(&["restart", "-t", "0", "web"]);
    // The fourth line arrives after the third banned: wait for it, then make sure nothing
    // was read twice.
    let j = d.wait_jail("portainer", "the ban after a restart", |j| {
        j["currently_banned"] == 1 && j["total_failed"].as_u64() >= Some(4)
    });
    assert_eq!(banned_targets(&j), ["203.0.113.40/32".to_string()].into());
    std::thread::sleep(Duration::from_millis(500));
    let failed = d.jail("portainer")["total_failed"].as_u64().unwrap();
    assert_eq!(failed, 4, "{j:#}");
    // Recreated under the same name, with another client. It first prints a line longer
    // than Docker's 16 KiB frames whose text at byte 16,384 is a forged failure: joined, it
    // is one line of 203.0.113.41's, not a failure of 198.51.100.9's.
    docker.must(&["rm", "-f", "web"]);
    let long_line = "P=\"203.0.113.41 - - [$(date -u +%d/%b/%Y:%H:%M:%S) +0000] \\\"GET /?u=\"; \
         echo \"$P$(head -c $((16384 - ${#P})) /dev/zero | tr '\\0' A)198.51.100.9 - - [$(date -u +%d/%b/%Y:%H:%M:%S) +0000] \\\"POST /api/auth HTTP/1.1\\\" 422 52 \\\"-\\\" \\\"x\\\"\"; ";
    docker.must(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "none",
        "moat-test/busybox:1",
        "sh",
        "-c",
        &format!("{long_line}{}", script("203.0.113.41")),
    ]);
    d.wait_jail("portainer", "the new container's lines", |j| {
        j["total_failed"] == 6
    });
    // moat restarted: resumes after the last line read, re-reads nothing.
    d.stop();
    let d = Daemon::start_with(dir, &[("DOCKER_HOST", host.as_str())]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.jail("portainer")["total_failed"], 6, "{}", d.log());
    let status = d.json(&["status", "--json"]);
    assert!(
        status["sources"].to_string().contains("container web"),
        "{status:#}"
    );
    d.stop();
    // `moat scan -c` reads what Docker keeps of the container: the long line (joined) and
    // the two failures, so a configuration can be tried on the past.
    let out = Command::new(MOAT)
        .args(["scan", "--json", "-c"])
        .arg(dir.join("moat.toml"))
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["lines"].as_u64(), v["matched"].as_u64()),
        (Some(3), Some(2)),
        "{v:#}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn metrics_on_loopback() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = format!(
        "[daemon]\nstate_dir = \"state\"\nsocket = \"run/moat.sock\"\nmetrics = \"127.0.0.1:{port}\"\n\n[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n"
    );
    std::fs::write(dir.join("moat.toml"), text).unwrap();
    let log = dir.join("access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    append(&log, &failure("203.0.113.20"));
    append(&log, &failure("203.0.113.20"));
    append(&log, "garbage line\n");
    d.wait_jail("portainer", "a ban", |j| j["currently_banned"] == 1);
    // Loopback is never banned: a refusal, counted.
    append(&log, &failure("127.0.0.1"));
    append(&log, &failure("127.0.0.1"));
    d.wait_jail("portainer", "a refusal", |j| j["refused"] == 1);
    let addr = format!("127.0.0.1:{port}");
    let body = http_get(&addr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for want in [
        "moat_bans_total{jail=\"portainer\"} 1",
        "moat_matches_total{jail=\"portainer\"} 4",
        "moat_active_bans 1",
        "moat_ban_latency_seconds_count 1",
        "moat_enforcer_queue{enforcer=\"log\"} 0",
    ] {
        assert!(body.contains(want), "{want} missing from\n{body}");
    }
    let lines = format!("moat_lines_read_total{{source=\"{}\"}} 5", log.display());
    assert!(body.contains(&lines), "{lines} missing from\n{body}");
    assert!(
        body.contains("moat_refused_bans_total{jail=\"portainer\"} 1"),
        "{body}"
    );
    // Every metric served is in docs/daemon.md's list, by the name it is served under.
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/daemon.md"))
            .unwrap();
    let listed = &docs[docs.find("## Metrics").unwrap()..];
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let served = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        assert!(
            listed.contains(&format!("`{served}`")) || listed.contains(&format!("`{served}{{")),
            "{served} is served but not in docs/daemon.md"
        );
    }
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404"));
    // An address off loopback is allowed when written (a Prometheus on a Docker bridge); one
    // that is not an address and port is refused with a hint.
    std::fs::write(
        dir.join("wide.toml"),
        "[daemon]\nmetrics = \"0.0.0.0:9717\"\n",
    )
    .unwrap();
    let out = Command::new(MOAT)
        .args(["check-config", "-c"])
        .arg(dir.join("wide.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(dir.join("bad.toml"), "[daemon]\nmetrics = \"9717\"\n").unwrap();
    let out = Command::new(MOAT)
        .args(["check-config", "-c"])
        .arg(dir.join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:9717"));
    d.stop();
}

#[test]
fn repeat_offenders_get_longer_bans() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 1\nbantime = \"1s\"\nescalate = { factor = 2, max = \"3s\" }\n\n[jails.other]\nfilter = \"portainer\"\nsources = [\"other.log\"]\nmaxretry = 1\nbantime = \"forever\"\n",
    );
    let log = dir.join("access.log");
    append(&log, "");
    append(&dir.join("other.log"), "");
    let d = Daemon::start(dir);
    let length = |b: &Value| {
        let s: jiff::Timestamp = b["started"].as_str().unwrap().parse().unwrap();
        let u: jiff::Timestamp = b["until"].as_str().unwrap().parse().unwrap();
        u.duration_since(s).as_secs()
    };
    for round in 1..=4 {
        append(&log, &failure("203.0.113.30"));
        // Counted, not seen in force: a 1 s ban can start and end between two polls on a
        // loaded machine. Each next offence waits for the expiry, so it escalates.
        d.wait_jail("portainer", "a ban and its expiry", |j| {
            j["total_banned"] == round && j["currently_banned"] == 0
        });
    }
    let history = d.json(&["bans", "--history", "100", "--json"]);
    let mut lengths: Vec<i64> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["jail"] == "portainer")
        .map(length)
        .collect();
    lengths.reverse(); // the history is newest first
    assert_eq!(lengths, [1, 2, 3, 3], "1s × 2^n, at most 3s");
    append(&dir.join("other.log"), &failure("203.0.113.31"));
    let j = d.wait_jail("other", "a permanent ban", |j| j["currently_banned"] == 1);
    assert_eq!(j["banned"][0]["until"], Value::Null);
    assert_eq!(j["bantime_secs"], Value::Null);
    let out = d.moat(&["status", "other"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("forever"));
    d.stop();
}

#[test]
fn the_socket_group_may_use_the_socket() {
    if !support::is_root() {
        return support::skip(
            "the_socket_group_may_use_the_socket",
            "needs root to run a client as another user",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    let text = std::fs::read_to_string(dir.join("moat.toml"))
        .unwrap()
        .replace("[daemon]\n", "[daemon]\nsocket_group = \"nogroup\"\n");
    std::fs::write(dir.join("moat.toml"), text).unwrap();
    let d = Daemon::start(dir);
    let sock = dir.join("run/moat.sock");
    std::fs::set_permissions(
        dir.join("run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    use std::os::unix::process::CommandExt;
    let out = Command::new(MOAT)
        .args(["status", "--json", "--socket"])
        .arg(&sock)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
}

/// A full state directory: bans still reach the enforcers, the problem shows in status, and
/// the ledger catches up once there is room again.
#[test]
fn a_full_state_directory_loses_nothing() {
    if !support::is_root() {
        return support::skip(
            "a_full_state_directory_loses_nothing",
            "needs root to mount a small tmpfs",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m",
            "moat-test",
            state.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 1\n",
    );
    let log = dir.join("access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    // Fill the file system.
    let filler = state.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
        .stderr(Stdio::null())
        .status();
    for i in 1..=40 {
        append(&log, &failure(&format!("198.51.100.{i}")));
    }
    let j = d.wait_jail("portainer", "bans while full", |j| {
        j["currently_banned"] == 40
    });
    assert_eq!(j["total_failed"], 40);
    let s = d.json(&["status", "--json"]);
    assert!(
        s["warnings"].to_string().contains("ledger write failed"),
        "{s:#}"
    );
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = d.json(&["status", "--json"]);
        let history = d.json(&["bans", "--history", "1000", "--json"]);
        if history["history"].as_array().unwrap().len() == 40
            && s["warnings"].as_array().unwrap().is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger did not catch up: {} recorded; {}",
            history["history"].as_array().unwrap().len(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop();
}

/// systemd's notify protocol: READY once started, WATCHDOG while the engine answers,
/// STOPPING on SIGTERM. The test plays systemd's side of the socket.
#[test]
fn tells_systemd_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    let notify = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let d = Daemon::start_with(
        dir,
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.contains("READY=1") && seen.matches("WATCHDOG=1").count() >= 2) {
        assert!(Instant::now() < deadline, "got only {seen:?}");
        let n = sock.recv(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    d.stop();
    let mut rest = String::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
        if rest.contains("STOPPING=1") {
            break;
        }
    }
    assert!(rest.contains("STOPPING=1"), "{rest:?}");
}

/// Garbage in a followed file: binary, NUL bytes, invalid UTF-8, CRLF, a line of 3 MiB without
/// a newline for a while. None of it stops the count of the real failures around it.
#[test]
fn garbage_in_a_followed_file_hides_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 3\n",
    );
    let log = dir.join("access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[0u8, 0xff, 0xfe, b'\n', 0x1b, b'[', b'2', b'J', b'\n'])
        .unwrap();
    f.write_all(failure("203.0.113.50").replace('\n', "\r\n").as_bytes())
        .unwrap();
    f.write_all(&vec![b'A'; 3 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f.write_all(b" the end of the endless line 203.0.113.51\n")
        .unwrap();
    let mut bad = failure("203.0.113.50").into_bytes();
    bad.insert(40, 0xff);
    f.write_all(&bad).unwrap();
    f.write_all(failure("203.0.113.50").as_bytes()).unwrap();
    let j = d.wait_jail("portainer", "the ban", |j| j["currently_banned"] == 1);
    assert_eq!(banned_targets(&j), ["203.0.113.50/32".to_string()].into());
    assert_eq!(j["total_failed"], 3);
    d.stop();
}

/// A file named by a path in one jail and by a glob in another feeds both.
#[test]
fn a_file_named_twice_feeds_both_jails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.a]\nfilter = \"portainer\"\nsources = [\"logs/access.log\"]\nmaxretry = 2\n\n[jails.b]\nfilter = \"portainer\"\nsources = [\"logs/*.log\"]\nmaxretry = 3\n",
    );
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let log = dir.join("logs/access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    for _ in 0..3 {
        append(&log, &failure("203.0.113.60"));
    }
    d.wait_jail("a", "a's ban", |j| j["currently_banned"] == 1);
    d.wait_jail("b", "b's ban", |j| j["currently_banned"] == 1);
    d.stop();
}

/// A state directory that cannot be used at all: moat still runs and bans, and says why its
/// ledger is only in memory.
#[test]
fn an_unusable_state_directory_still_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n",
    );
    // A file where the directory should be.
    std::fs::write(dir.join("state"), "not a directory").unwrap();
    let log = dir.join("access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    append(&log, &failure("203.0.113.61"));
    append(&log, &failure("203.0.113.61"));
    d.wait_jail("portainer", "the ban", |j| j["currently_banned"] == 1);
    let s = d.json(&["status", "--json"]);
    assert!(s["warnings"].to_string().contains("in memory"), "{s:#}");
    d.stop();
}

/// A line over the 1 MiB cap is never matched live either: cut at the cap, a pattern anchored
/// with `$` would match at the cut, where the attacker chose what stands (here a user name
/// that ends at the cut, with the rest of the line after it). The same cap and rule as
/// `moat scan`, counted per file in status.
#[test]
fn overlong_lines_are_skipped_never_matched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.app]\nfailregex = ['^\\S+ login failed from <HOST> for user \\S+$']\ntime = \"iso8601\"\nmaxretry = 2\nsources = [\"app.log\"]\n",
    );
    let log = dir.join("app.log");
    append(&log, "");
    let d = Daemon::start(dir);
    let now = || {
        jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    for _ in 0..2 {
        let head = format!("{} login failed from 203.0.113.50 for user ", now());
        let user = "u".repeat((1 << 20) - head.len());
        // Exactly the cap up to the end of the user name, then more: the cut would match.
        append(&log, &format!("{head}{user} and the rest of the line\n"));
    }
    for _ in 0..2 {
        append(
            &log,
            &format!("{} login failed from 203.0.113.51 for user bob\n", now()),
        );
    }
    let j = d.wait_jail("app", "the ban of the short lines' client", |j| {
        j["currently_banned"] == 1
    });
    assert_eq!(banned_targets(&j), ["203.0.113.51/32".to_string()].into());
    assert_eq!(j["total_failed"], 2);
    let s = d.json(&["status", "--json"]);
    assert_eq!(s["sources"][0]["files"][0]["overlong"], 2, "{s:#}");
    d.stop();
}

/// A FIFO at a followed path (anyone who can write to a log directory can make one) and a
/// device as a source: neither stalls moat. Other jails ban, commands answer, SIGTERM stops
/// it, and status says what is wrong with those sources.
#[test]
fn a_fifo_or_a_device_at_a_followed_path_stops_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    // Present at start...
    nix::unistd::mkfifo(
        &dir.join("logs/fifo.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    write_config(
        dir,
        "[jails.fifo]\nfilter = \"portainer\"\nsources = [\"logs/fifo.log\", \"logs/later.log\", \"/dev/zero\"]\n\n[jails.web]\nfilter = \"portainer\"\nsources = [\"logs/access.log\"]\nmaxretry = 2\n",
    );
    let log = dir.join("logs/access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    // ...and one that appears later where a file was expected.
    nix::unistd::mkfifo(
        &dir.join("logs/later.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    append(&log, &failure("203.0.113.62"));
    append(&log, &failure("203.0.113.62"));
    d.wait_jail("web", "the ban", |j| j["currently_banned"] == 1);
    let started = Instant::now();
    let bans = d.json(&["bans", "--json"]);
    assert_eq!(bans["active"].as_array().unwrap().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    let errors = loop {
        let s = d.json(&["status", "--json"]);
        let errors: Vec<String> = s["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["error"].as_str().map(String::from))
            .collect();
        if errors.len() == 3 || Instant::now() > deadline {
            break errors;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().filter(|e| e.contains("a FIFO")).count() == 2,
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("a device")), "{errors:?}");
    let log = d.stop();
    assert!(log.contains("a FIFO, not a regular file"), "{log}");
}

/// A journal entry longer than 4096 bytes is read in full (journalctl gives `null` for it
/// without `--all`): a client cannot evade detection by sending long input. The entries are
/// in a real journal file written by systemd-journal-remote and read by the real journalctl.
#[test]
fn long_journal_entries_are_matched() {
    let remote = Path::new("/lib/systemd/systemd-journal-remote");
    if !remote.exists()
        || Command::new("journalctl")
            .arg("--version")
            .output()
            .is_err()
    {
        return support::skip(
            "long_journal_entries_are_matched",
            "needs journalctl and systemd-journal-remote (apt-get install systemd-journal-remote)",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.sshd]\nfilter = \"sshd\"\nsources = [\"journald:ssh.service\"]\nmaxretry = 2\n",
    );
    let now = jiff::Timestamp::now().as_microsecond();
    let mut export = String::new();
    for i in 0..2 {
        let user = "x".repeat(5000);
        export += &format!(
            "__CURSOR=s=long{i}\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=host\nSYSLOG_IDENTIFIER=sshd\n_PID=42\n_SYSTEMD_UNIT=ssh.service\nMESSAGE=Failed password for invalid user {user} from 203.0.113.63 port {i} ssh2\n\n",
            now + i,
            1000 + i
        );
    }
    let journal = dir.join("long.journal");
    let mut child = Command::new(remote)
        .arg(format!("--output={}", journal.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let wrapper = dir.join("journalctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec journalctl --file={} \"$@\"\n",
            journal.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = Daemon::start_with(dir, &[("MOAT_JOURNALCTL", wrapper.to_str().unwrap())]);
    let j = d.wait_jail("sshd", "the ban from long entries", |j| {
        j["currently_banned"] == 1
    });
    assert_eq!(banned_targets(&j), ["203.0.113.63/32".to_string()].into());
    d.stop();
    // `moat scan -c` reads the same journal to its end (Debian 12 has no auth.log to try a
    // configuration on).
    let out = Command::new(MOAT)
        .args(["scan", "--json", "-c"])
        .arg(dir.join("moat.toml"))
        .env("MOAT_JOURNALCTL", &wrapper)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bans"][0]["target"], "203.0.113.63/32", "{v:#}");
}

/// The state directory deleted while moat runs: moat notices, creates the ledger again with
/// the active bans, and says so; a restart then still enforces them (it used to find an empty
/// ledger and lift every ban from the enforcers).
#[test]
fn a_deleted_state_directory_is_recreated_with_the_active_bans() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n",
    );
    let log = dir.join("access.log");
    append(&log, "");
    let d = Daemon::start(dir);
    for ip in ["203.0.113.64", "203.0.113.65"] {
        append(&log, &failure(ip));
        append(&log, &failure(ip));
    }
    d.wait_jail("portainer", "two bans", |j| j["currently_banned"] == 2);
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = d.json(&["status", "--json"]);
        if s["warnings"]
            .to_string()
            .contains("was deleted or replaced")
        {
            assert!(s["warnings"].to_string().contains("2 active bans"), "{s:#}");
            break;
        }
        assert!(Instant::now() < deadline, "no warning: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dir.join("state/moat.db").exists());
    d.stop();
    let d = Daemon::start(dir);
    let j = d.jail("portainer");
    assert_eq!(
        banned_targets(&j),
        ["203.0.113.64/32".to_string(), "203.0.113.65/32".to_string()].into()
    );
    d.stop();
}

/// A look-around pattern is quadratic on long lines (`(?=.*x)<HOST>` took minutes on a line of
/// 256 KiB). Such a line must not hold up another jail: backtracking patterns skip text too
/// long for them, counted in status.
#[test]
fn a_long_line_for_a_look_around_pattern_delays_no_other_jail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.slow]\nfailregex = ['(?=.*denied)<HOST> denied']\nsources = [\"0slow.log\"]\n\n[jails.web]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n",
    );
    // Named to be read first: the engine takes the long line before the failures.
    let (slow, web) = (dir.join("0slow.log"), dir.join("access.log"));
    append(&slow, "");
    append(&web, "");
    let d = Daemon::start(dir);
    append(&slow, &format!("{}\n", "a ".repeat(128 * 1024)));
    let written = Instant::now();
    append(&web, &failure("203.0.113.66"));
    append(&web, &failure("203.0.113.66"));
    d.wait_jail("web", "the other jail's ban", |j| {
        j["currently_banned"] == 1
    });
    // Minutes before; generous for a loaded machine.
    assert!(
        written.elapsed() < Duration::from_secs(15),
        "{:?}",
        written.elapsed()
    );
    d.wait_jail("slow", "the long line counted", |j| j["too_long"] == 1);
    d.stop();
}

/// A plain source file created after moat started is found through inotify at once, not by
/// the 5 s safety timer; also when its directory did not exist at the start either.
#[test]
fn a_file_created_after_start_is_followed_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"logs/new.log\"]\nmaxretry = 2\n",
    );
    let d = Daemon::start(dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    // Let the safety timer notice the directory (it cannot be watched before it exists).
    std::thread::sleep(Duration::from_millis(5500));
    let log = dir.join("logs/new.log");
    let written = Instant::now();
    append(&log, &(failure("203.0.113.67") + &failure("203.0.113.67")));
    d.wait_jail("portainer", "the ban", |j| j["currently_banned"] == 1);
    // The safety timer would take 5 s.
    assert!(
        written.elapsed() < Duration::from_secs(3),
        "{:?}",
        written.elapsed()
    );
    d.stop();
}

/// The `exec` enforcer across a restart: a ban that ended while moat was stopped gets its
/// unban command at the next start, a ban still active gets its ban command again (a command
/// cannot be asked what it holds), and `{until}` is the same text both times: RFC 3339 in UTC
/// to the second.
#[test]
fn exec_across_a_restart_unbans_what_ended_meanwhile() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let calls = dir.join("calls.log");
    let record = dir.join("record");
    std::fs::write(
        &record,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o755)).unwrap();
    write_config(
        dir,
        &format!(
            "[enforce]\nuse = [\"exec\"]\n\n[enforce.exec]\n\
             ban = [\"{r}\", \"ban\", \"{{ip}}\", \"{{until}}\"]\n\
             unban = [\"{r}\", \"unban\", \"{{ip}}\"]\n\n\
             [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
            r = record.display()
        ),
    );
    append(&dir.join("access.log"), "");
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let d = Daemon::start(dir);
    let started = Instant::now();
    let out = d.moat(&["ban", "203.0.113.70", "--for", "3s"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.moat(&["ban", "203.0.113.71", "--for", "1h"]);
    assert!(out.status.success(), "{out:?}");
    support::eventually(10, "both ban commands ran", || lines().len() == 2);
    d.stop();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped before the short ban ended"
    );
    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    let d = Daemon::start(dir);
    support::eventually(10, "the unban of the ban that ended meanwhile", || {
        lines().iter().any(|l| l == "unban 203.0.113.70")
    });
    support::eventually(10, "the active ban applied again", || {
        lines()
            .iter()
            .filter(|l| l.starts_with("ban 203.0.113.71 "))
            .count()
            == 2
    });
    let calls = lines();
    let until_of = |ip: &str| -> Vec<String> {
        calls
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("ban {ip} ")).map(String::from))
            .collect()
    };
    let again = until_of("203.0.113.71");
    assert_eq!(again[0], again[1], "{calls:?}");
    for until in again.iter().chain(&until_of("203.0.113.70")) {
        let t: jiff::Timestamp = until.parse().unwrap();
        assert_eq!(t.subsec_nanosecond(), 0, "{until}");
        assert!(
            until.len() == 20 && until.ends_with('Z'),
            "RFC 3339, UTC, to the second: {until}"
        );
    }
    assert_eq!(
        calls.iter().filter(|l| l.starts_with("unban ")).count(),
        1,
        "only the ended ban is lifted: {calls:?}"
    );
    let bans = d.json(&["bans", "--json"]);
    assert_eq!(bans["active"].as_array().unwrap().len(), 1, "{bans:#}");
    d.stop();
}

/// A regular file where the socket should be is somebody's data: moat refuses to start and
/// leaves it alone.
#[test]
fn a_file_at_the_socket_path_is_refused_not_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let sock = dir.join("run/moat.sock");
    std::fs::write(&sock, "precious\n").unwrap();
    let mut child = Command::new(MOAT)
        .args(["run", "-c"])
        .arg(dir.join("moat.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(
        std::fs::read_to_string(&sock).ok().as_deref(),
        Some("precious\n"),
        "the file is kept: {err}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{err}");
    assert!(
        err.contains("moat: error:") && err.contains("not a socket"),
        "{err}"
    );
}

/// A source moat may not read is an error in `moat status` and the log, not a file that is
/// not there yet.
#[test]
fn an_unreadable_source_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    let log = dir.join("access.log");
    append(&log, &failure("203.0.113.80"));
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads every file; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it is held to
    // the file's mode like anyone.
    let mut cmd = if support::is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            MOAT,
        ]);
        c
    } else {
        Command::new(MOAT)
    };
    cmd.args(["run", "-c"]).arg(dir.join("moat.toml"));
    let d = Daemon::start_command(dir, cmd);
    let s = d.json(&["status", "--json"]);
    let source = &s["sources"][0];
    let error = source["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("access.log") && error.to_lowercase().contains("permission denied"),
        "{s:#}"
    );
    let text = String::from_utf8(d.moat(&["status", "portainer"]).stdout).unwrap();
    assert!(text.contains("error:"), "{text}");
    assert!(d.log().contains("cannot read"), "{}", d.log());
    // Readable again: the error goes, and the line is read.
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.wait_jail("portainer", "the line read", |j| j["total_failed"] == 1);
    let s = d.json(&["status", "--json"]);
    assert!(s["sources"][0]["error"].is_null(), "{s:#}");
    d.stop();
}

/// Hand-made bans live in the jail `manual`, which `unban --jail` accepts; and what a client
/// wrote (a reason with terminal escapes and a carriage return) is shown escaped, never
/// interpreted by the terminal.
#[test]
fn the_manual_jail_and_hostile_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(
        dir,
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    );
    let d = Daemon::start(dir);
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\rfake\u{9b}31m";
    let out = d.moat(&["ban", "203.0.113.90", "--reason", hostile]);
    assert!(out.status.success(), "{out:?}");
    for args in [&["bans"][..], &["bans", "--history"], &["status", "manual"]] {
        let out = d.moat(args);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains(['\u{1b}', '\r', '\u{7}', '\u{9b}']),
            "{args:?}: {text:?}"
        );
        if args[0] == "bans" {
            assert!(
                text.contains(r"\x1b]0;owned\x07\x1b[2J\rfake\u{9b}31m"),
                "{args:?}: {text}"
            );
        }
    }
    // JSON keeps the text as it is (JSON escapes it).
    let bans = d.json(&["bans", "--json"]);
    assert_eq!(bans["active"][0]["reason"], hostile);

    let out = d.moat(&["unban", "203.0.113.90", "--jail", "manual"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Unbanned 203.0.113.90 (jail manual)"));
    let out = d.moat(&["unban", "203.0.113.90", "--jail", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    d.stop();
}

//! `moat scan` and friends run as a user runs them: the real binary, real files, exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn moat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moat"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    moat().args(args).output().expect("moat runs")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "status {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn bans(v: &Value) -> Vec<(String, String, String, u64)> {
    v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["jail"].as_str().unwrap().to_string(),
                bare(b["target"].as_str().unwrap()),
                b["started"].as_str().unwrap().to_string(),
                b["failures"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn portainer_bans() -> Vec<(String, String, String, u64)> {
    vec![
        (
            "portainer".into(),
            "203.0.113.66".into(),
            "2026-03-28T22:24:12Z".into(),
            5,
        ),
        (
            "portainer".into(),
            "2001:db8:dead:beef::/64".into(),
            "2026-03-28T22:26:20Z".into(),
            5,
        ),
    ]
}

#[test]
fn the_bundled_example_bans_exactly_the_two_bots_and_the_scanner() {
    let config = root().join("examples/moat.toml");
    let v = json(&run(&["scan", "--json", "-c", config.to_str().unwrap()]));
    let mut want = portainer_bans();
    want.push((
        "scanners".into(),
        "203.0.113.150".into(),
        "2026-03-28T22:30:08Z".into(),
        5,
    ));
    assert_eq!(bans(&v), want);
    // Both jails read the one file, once.
    assert_eq!(v["inputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["lines"], 91);
    assert_eq!(v["matched"], 28 + 5);
    assert_eq!(v["unparsed_time"], 0);
    assert_eq!(v["truncated"], 0);
    // The monitor in `ignore` failed 7 times and was never counted.
    assert_eq!(v["jails"][0]["ignored_clients"], 7);
}

#[test]
fn text_report_names_the_bans() {
    let config = root().join("examples/moat.toml");
    let out = run(&["scan", "-c", config.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Bans that would have happened: 3"), "{text}");
    assert!(text.contains("2001:db8:dead:beef::/64"), "{text}");
    assert!(text.contains("33 matched"), "{text}");
}

#[test]
fn gzip_and_stdin_give_the_same_bans() {
    let log = std::fs::read(root().join("examples/access.log")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A rotated file keeps its gzip magic whatever its name.
    let gz = dir.path().join("access.log.2");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&log).unwrap();
    enc.finish().unwrap();
    let args = [
        "scan",
        "--json",
        "--filter",
        "portainer",
        "--ignore",
        "192.0.2.10",
        "--maxretry",
        "5",
    ];
    let v = json(&run(&[&args[..], &[gz.to_str().unwrap()]].concat()));
    let expected: Vec<_> = portainer_bans()
        .into_iter()
        .map(|(_, ip, at, n)| ("portainer".to_string(), ip, at, n))
        .collect();
    assert_eq!(bans(&v), expected);

    let mut child = moat()
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&log).unwrap();
    let v = json(&child.wait_with_output().unwrap());
    assert_eq!(bans(&v), expected);
}

#[test]
fn a_missing_file_is_named_exit_2_and_nothing_on_stdout() {
    let good = root().join("examples/access.log");
    let out = run(&[
        "scan",
        "--filter",
        "portainer",
        good.to_str().unwrap(),
        "/nonexistent/access.log",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/access.log"), "{err}");
}

#[test]
fn a_directory_or_corrupt_gzip_is_an_error_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "scan",
        "--filter",
        "portainer",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let bad = dir.path().join("bad.gz");
    std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage-not-deflate").unwrap();
    let out = run(&["scan", "--filter", "portainer", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.gz"));
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("moat.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_errors_point_at_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[defaults]\nbantime = \"1h\"\n\n[jails.portainer]\nfilter = \"portainer\"\nfindtim = \"10m\"\n",
    );
    let out = run(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("moat.toml:6:1: unknown field `findtim`"),
        "{err}"
    );
    assert!(err.contains("did you mean `findtime`?"), "{err}");

    let cfg = write_config(
        dir.path(),
        "[jails.x]\nfilter = \"portainer\"\nignore = [\"10.0.0.0/33\"]\n",
    );
    let out = run(&["scan", "-c", cfg.to_str().unwrap(), "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("moat.toml:3:"));

    let cfg = write_config(dir.path(), "[jails.x]\nfilter = \"portainer\"\n");
    let out = run(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK, 1 jail"));
}

#[test]
fn usage_errors_are_exit_2() {
    assert_eq!(run(&["scan", "/dev/null"]).status.code(), Some(2));
    assert_eq!(
        run(&["scan", "--filter", "portaner", "/dev/null"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["scan", "--regex", "^(<HOST>", "/dev/null"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["scan", "--regex", "no host", "/dev/null"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&[
            "scan",
            "--filter",
            "portainer",
            "--findtime",
            "10 parsecs",
            "/dev/null"
        ])
        .status
        .code(),
        Some(2)
    );
}

/// Lines built to fool a matcher: attacker-controlled fields carrying addresses and failure
/// text, invalid UTF-8, NUL, CRLF, a 2 MiB line, unreadable times.
#[test]
fn hostile_lines_neither_hide_failures_nor_frame_anyone() {
    let mut log: Vec<u8> = Vec::new();
    let fail = |ip: &str, sec: u32| {
        format!("{ip} - - [28/Mar/2026:10:00:{sec:02} +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"bot\"")
    };
    // 1. Real failures with CRLF endings, a NUL and invalid UTF-8 in the user agent: counted.
    for s in 0..3 {
        let l = fail("203.0.113.5", s);
        log.extend(l.strip_suffix("ot\"").unwrap().as_bytes());
        log.extend(b"\xff\xfe\x00ot\"\r\n");
    }
    // ... and in the remote-user field the pattern must step over with \S+.
    for s in 3..5 {
        let l = fail("203.0.113.5", s)
            .replacen(" - - ", " - \u{1}user ", 1)
            .into_bytes();
        let l: Vec<u8> = l
            .into_iter()
            .flat_map(|b| {
                if b == 1 {
                    vec![0xff, 0x00, 0xc3]
                } else {
                    vec![b]
                }
            })
            .collect();
        log.extend(l);
        log.extend(b"\r\n");
    }
    // 2. A victim's address in the path, referer and user agent of someone else's requests.
    for s in 10..20 {
        log.extend(format!(
            "203.0.113.77 - - [28/Mar/2026:10:00:{s:02} +0000] \"GET /?198.51.100.1%20\\\"POST%20/api/auth\\\"%20422 HTTP/1.1\" 404 1 \"198.51.100.1\" \"198.51.100.1 - - [28/Mar/2026:10:00:{s:02} +0000] \\\"POST /api/auth HTTP/1.1\\\" 422 59\"\n"
        ).as_bytes());
    }
    // 3. A forged failure line smuggled after a newline-looking escape stays in its line.
    for s in 20..26 {
        log.extend(format!(
            "203.0.113.78 - - [28/Mar/2026:10:00:{s:02} +0000] \"GET /x\\n198.51.100.2 - - [28/Mar/2026:10:00:{s:02} +0000] \\\"POST /api/auth HTTP/1.1\\\" 422  HTTP/1.1\" 400 0 \"-\" \"-\"\n"
        ).as_bytes());
    }
    // 4. A 2 MiB line whose start is a real failure: over the cap, counted and never matched.
    let mut huge = fail("198.51.100.200", 30).into_bytes();
    huge.extend(std::iter::repeat_n(b'A', 2 << 20));
    log.extend(&huge);
    log.push(b'\n');
    // 5. A failure whose time cannot be read: reported, not counted.
    log.extend(b"198.51.100.201 - - [99/Foo/2026:10:00:00 +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"-\"\n");
    // 6. Not an address at the client position.
    log.extend(b"999.1.2.3 - - [28/Mar/2026:10:00:40 +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"-\"\n");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.log");
    std::fs::write(&path, &log).unwrap();
    let v = json(&run(&[
        "scan",
        "--json",
        "--filter",
        "portainer",
        "--maxretry",
        "5",
        path.to_str().unwrap(),
    ]));
    assert_eq!(
        bans(&v),
        vec![(
            "portainer".to_string(),
            "203.0.113.5".to_string(),
            "2026-03-28T10:00:04Z".to_string(),
            5
        )]
    );
    assert_eq!(v["lines"], 24);
    assert_eq!(v["truncated"], 1);
    assert_eq!(v["unparsed_time"], 1);
    assert_eq!(v["jails"][0]["bad_host"], 1);
    // 5 real + the unreadable time + the bad host.
    assert_eq!(v["matched"], 7);
}

#[test]
fn filters_commands() {
    let out = run(&["filters", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("portainer"));

    let out = run(&["filters", "show", "portainer"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[samples]]"));

    let out = run(&["filters", "test", "portainer"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let line =
        r#"2001:db8::5 - - [26/Oct/2022:20:55:11 +0200] "POST /api/auth HTTP/2.0" 422 59 "-" "-""#;
    let out = run(&["filters", "test", "portainer", line]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("client 2001:db8::5 at 2022-10-26T18:55:11Z")
    );
    let out = run(&["filters", "test", "portainer", "nothing here"]);
    assert_eq!(out.status.code(), Some(1));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("greedy.toml");
    std::fs::write(&f, "failregex = ['.*POST /login.* <HOST>']\n").unwrap();
    let out = run(&["filters", "lint", "--file", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not anchored") && text.contains("greedy .*"),
        "{text}"
    );
    let out = run(&["filters", "lint"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn rotated_files_are_read_oldest_first_whatever_the_argument_order() {
    let dir = tempfile::tempdir().unwrap();
    let line = |s: u32| {
        format!("203.0.113.8 - - [28/Mar/2026:10:{s:02}:00 +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"-\"\n")
    };
    // Three failures in the rotated file, two in the current one, 1 minute apart.
    let old = dir.path().join("access.log.1");
    let new = dir.path().join("access.log");
    std::fs::write(&old, (0..3).map(line).collect::<String>()).unwrap();
    std::fs::write(&new, (3..5).map(line).collect::<String>()).unwrap();
    let t = std::time::SystemTime::now();
    let set = |p: &Path, age: u64| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t - std::time::Duration::from_secs(age))
            .unwrap()
    };
    set(&old, 3600);
    set(&new, 0);
    // As the shell lists `access.log*`: newest first.
    let v = json(&run(&[
        "scan",
        "--json",
        "--filter",
        "portainer",
        "--maxretry",
        "5",
        new.to_str().unwrap(),
        old.to_str().unwrap(),
    ]));
    assert_eq!(v["inputs"][0]["name"], old.to_str().unwrap());
    assert_eq!(
        bans(&v),
        vec![(
            "portainer".to_string(),
            "203.0.113.8".to_string(),
            "2026-03-28T10:04:00Z".to_string(),
            5
        )]
    );
}

#[test]
fn docker_json_file_logs_give_the_same_bans() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("examples/access.log")).unwrap();
    let wrapped: String = text
        .lines()
        .map(|l| {
            serde_json::json!({"log": format!("{l}\n"), "stream": "stdout", "time": "2026-03-28T22:00:00Z"})
                .to_string()
                + "\n"
        })
        .collect();
    let log = dir.path().join("abc-json.log");
    std::fs::write(&log, wrapped).unwrap();
    let cfg = write_config(
        dir.path(),
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"*-json.log\"]\nignore = [\"192.0.2.10\"]\nunwrap = { field = \"log\", time = \"time\" }\n",
    );
    // A glob relative to the configuration's directory.
    let out = moat()
        .args(["scan", "--json", "-c", cfg.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(bans(&json(&out)), portainer_bans());
}

/// Docker writes a line over 16 KiB as several json-file entries, only the last ending in
/// `\n`. Text an attacker puts at byte 16,384 of a request must not become a line of its own
/// (here: a forged Portainer failure of 198.51.100.9), while a real failure whose user agent
/// is long is still one failure of its client once its entries are joined.
#[test]
fn docker_json_file_partial_entries_are_joined_before_matching() {
    let entry = |log: &str| {
        serde_json::json!({"log": log, "stream": "stdout", "time": "2026-03-28T10:00:00.5Z"})
            .to_string()
            + "\n"
    };
    let mut text = String::new();
    for s in 0..5 {
        let head =
            format!("203.0.113.80 - - [28/Mar/2026:10:00:0{s} +0000] \"GET /api/users?name=");
        let head = format!("{head}{}", "A".repeat(16 * 1024 - head.len()));
        text += &entry(&head);
        text += &entry(&format!(
            "198.51.100.9 - - [28/Mar/2026:10:00:0{s} +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"-\" HTTP/1.1\" 404 0 \"-\" \"-\"\n"
        ));
        let real = format!(
            "203.0.113.81 - - [28/Mar/2026:10:00:1{s} +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"{}\"\n",
            "B".repeat(20_000)
        );
        let (a, b) = real.split_at(16 * 1024);
        text += &entry(a);
        // A stderr line between the two parts belongs to the other stream.
        text += &serde_json::json!({"log": "stderr noise\n", "stream": "stderr", "time": "2026-03-28T10:00:00.6Z"}).to_string();
        text += "\n";
        text += &entry(b);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("abc-json.log");
    std::fs::write(&log, text).unwrap();
    let cfg = write_config(
        dir.path(),
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"abc-json.log\"]\nunwrap = { field = \"log\", time = \"time\" }\n",
    );
    let v = json(&run(&["scan", "--json", "-c", cfg.to_str().unwrap()]));
    assert_eq!(
        bans(&v),
        vec![(
            "portainer".to_string(),
            "203.0.113.81".to_string(),
            "2026-03-28T10:00:14Z".to_string(),
            5
        )]
    );
    assert_eq!(v["matched"], 5);
}

/// Terminal escapes (ESC ] OSC sequences, CSI, C1) and carriage returns an attacker wrote in a
/// log line reach the terminal as visible escapes, never raw: in the lines no jail matched and
/// in the examples of matching lines whose time could not be read.
#[test]
fn control_characters_in_lines_reach_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.log");
    std::fs::write(
        &path,
        "203.0.113.9 login failed \u{1b}]0;owned\u{7}\u{1b}]8;;http://203.0.113.1/\u{1b}\\link\r198.51.100.1 ok\n\
         GET /\u{1b}[2J\u{9b}31m not matched\r\n",
    )
    .unwrap();
    let out = run(&[
        "scan",
        "--regex",
        "^<HOST> login failed",
        "--time",
        "iso8601",
        "--show-missed",
        "--no-progress",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains(['\u{1b}', '\r', '\u{7}', '\u{9b}']),
        "{text:?}"
    );
    assert!(
        text.contains(r"203.0.113.9 login failed \x1b]0;owned\x07\x1b]8;;http://203.0.113.1/\x1b\link\r198.51.100.1 ok"),
        "{text}"
    );
    assert!(
        text.contains(r"GET /\x1b[2J\u{9b}31m not matched"),
        "{text}"
    );

    // `filters test` prints the lines it is given the same way.
    let out = run(&[
        "filters",
        "test",
        "portainer",
        "203.0.113.9 - - [26/Oct/2022:20:55:11 +0200] \"POST /api/auth\u{1b}]0;x\u{7} HTTP/2.0\" 422 59 \"-\" \"-\"",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(['\u{1b}', '\u{7}']), "{text:?}");
    assert!(text.contains(r"/api/auth\x1b]0;x\x07 HTTP"), "{text}");
}

/// `moat filters test --file FILE LINE...`, as docs/cli.md writes it: a filter file of one's
/// own, then the lines.
#[test]
fn filters_test_takes_a_file_then_lines() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mine.toml");
    std::fs::write(&f, "failregex = ['^<HOST> login failed']\n").unwrap();
    let f = f.to_str().unwrap();
    let out = run(&[
        "filters",
        "test",
        "--file",
        f,
        "203.0.113.9 login failed at 2026-03-28T10:00:00Z",
        "198.51.100.1 login ok at 2026-03-28T10:00:01Z",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("failure: client 203.0.113.9 at 2026-03-28T10:00:00Z"),
        "{text}"
    );
    assert!(text.contains("no match"), "{text}");
    // The line may also come first.
    let out = run(&[
        "filters",
        "test",
        "203.0.113.9 login failed at 2026-03-28T10:00:00Z",
        "--file",
        f,
    ]);
    assert!(out.status.success(), "{out:?}");
    // A file without samples and no line: says so.
    let out = run(&["filters", "test", "--file", f]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no samples"));
}

/// Values the old validation let through and that then broke quietly: each is refused at its
/// line and column, saying why.
#[test]
fn config_values_that_would_break_are_refused_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("findtime = 9223372036854775807", ":3:12:", "longer than"),
        ("findtime = \"99999w\"", ":3:12:", "longer than"),
        ("bantime = 9223372036854775807", ":3:11:", "longer than"),
        ("time = \"%Q\"", ":3:8:", "%Q"),
        ("time = \"%H:%M:%S\"", ":3:8:", "date"),
        ("ipv6_prefix = 8", ":3:15:", "32"),
        ("max_clients = 0", ":3:15:", "at least 16"),
        ("max_clients = 10", ":3:15:", "at least 16"),
    ];
    for (line, at, why) in cases {
        let cfg = write_config(
            dir.path(),
            &format!("[jails.x]\nfilter = \"portainer\"\n{line}\n"),
        );
        let out = run(&["check-config", "-c", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(
            err.contains(&format!("moat.toml{at}")) && err.contains(why),
            "{line}: {err}"
        );
    }
    // A shell behind a wrapper, or with -c folded into other flags, is still a shell.
    for argv in [
        r#"["/usr/bin/env", "sh", "-c", "echo {ip}"]"#,
        r#"["/bin/sh", "-ec", "echo {ip}"]"#,
        r#"["/usr/bin/env", "-i", "/bin/bash", "-xc", "echo {ip}"]"#,
        r#"["/bin/busybox", "sh", "-c", "echo {ip}"]"#,
        r#"["/usr/bin/sudo", "-u", "nobody", "dash", "-c", "echo {ip}"]"#,
        r#"["/usr/bin/timeout", "5", "/bin/zsh", "-c", "echo {ip}"]"#,
    ] {
        let cfg = write_config(
            dir.path(),
            &format!("[enforce]\nuse = [\"exec\"]\n\n[enforce.exec]\nban = {argv}\n"),
        );
        let out = run(&["check-config", "-c", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv}: {err}");
        assert!(
            err.contains("moat.toml:5:7:") && err.contains("shell"),
            "{argv}: {err}"
        );
    }
    // scan's flag agrees with the configuration (and with the daemon, which refuses to ban
    // an IPv6 network wider than /32).
    let out = run(&[
        "scan",
        "--filter",
        "portainer",
        "--ipv6-prefix",
        "8",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("32"));
}

/// The configuration docs/daemon.md installs is one for a host: it validates, reads absolute
/// paths (or the journal), and bans in the kernel.
#[test]
fn the_production_example_is_fit_for_a_host() {
    let path = root().join("examples/production.toml");
    let out = run(&["check-config", "-c", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let config = moat::config::Config::load(&path).unwrap();
    assert_eq!(
        config.enforce.uses,
        Some(vec![moat::config::daemon::EnforcerName::Kernel])
    );
    assert!(!config.jails.is_empty());
    // As written (loading makes relative paths absolute, beside the file).
    let table: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    for (name, jail) in table["jails"].as_table().unwrap() {
        for s in jail["sources"].as_array().unwrap() {
            let s = s.as_str().unwrap();
            assert!(
                s.starts_with('/') || s.starts_with("journald:"),
                "{name}: {s}"
            );
        }
    }
    let daemon_md = std::fs::read_to_string(root().join("docs/daemon.md")).unwrap();
    assert!(daemon_md.contains("examples/production.toml /etc/moat/moat.toml"));
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

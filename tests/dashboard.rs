//! The web dashboard in a real browser: Debian's chromium (headless), driven by
//! playwright-core from npm (installed by `scripts/test` into `target/tools`), against a real
//! `moat run` with real bans. What the page shows (jails, bans, evidence, a chart), that a
//! new ban appears without a reload, that hostile log text stays text, that unbanning works
//! with the token and is refused without it and without the CSRF token; the refusals are
//! checked with plain HTTP requests too. Screenshots at 1280 and 390 pixels wide are kept in
//! `target/test-artifacts/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod support;
use support::{clf_now, write_config, Daemon};

/// A Portainer login failure whose path and user agent an attacker chose.
fn failure(ip: &str, path: &str, agent: &str) -> String {
    format!(
        "{ip} - - [{}] \"POST /api/auth{path} HTTP/1.1\" 422 52 \"-\" \"{agent}\"\n",
        clf_now()
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to 127.0.0.1; the status, the head and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    http_at(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        method,
        path,
        headers,
        body,
    )
}

/// One HTTP/1.1 request to `addr`.
fn http_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn active_targets(d: &Daemon) -> Vec<String> {
    d.json(&["bans", "--json"])["active"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_dashboard_shows_bans_live_and_acts_only_with_the_token() {
    let test = "the_dashboard_shows_bans_live_and_acts_only_with_the_token";
    let playwright = target_dir().join("tools/node_modules/playwright-core");
    if !Path::new("/usr/bin/chromium").exists() {
        return support::skip(test, "no /usr/bin/chromium (apt-get install chromium)");
    }
    if Command::new("node").arg("--version").output().is_err() {
        return support::skip(test, "no node (apt-get install nodejs npm)");
    }
    if !playwright.exists() {
        return support::skip(
            test,
            "no playwright-core in target/tools (scripts/test installs it with npm)",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let port = free_port();
    write_config(
        dir,
        &format!(
            r#"web = "127.0.0.1:{port}"

[enforce]
use = ["log"]

[jails.portainer]
filter = "portainer"
sources = ["logs/access.log"]
maxretry = 3
"#
        ),
    );
    let log = dir.join("logs/access.log");
    // Hostile text in the evidence: markup, a bare carriage return, a very long line.
    let long = "A".repeat(5000);
    let mut lines = String::new();
    for agent in [
        "<script>alert('xss')</script>",
        "<img src=x onerror=alert(1)>",
        "evil\rSet-Cookie: stolen=1",
    ] {
        lines.push_str(&failure("203.0.113.66", "?next=<b>bold</b>", agent));
    }
    for _ in 0..3 {
        lines.push_str(&failure("2001:db8:1:2::77", "", &long));
    }
    std::fs::write(&log, &lines).unwrap();
    let token_out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["web", "token", "-c"])
        .arg(dir.join("moat.toml"))
        .output()
        .unwrap();
    assert!(token_out.status.success(), "{token_out:?}");
    let token = String::from_utf8(token_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    let d = Daemon::start(dir);
    d.wait_jail("portainer", "two bans", |j| j["currently_banned"] == 2);
    assert!(d.log().contains("serving the web dashboard"), "{}", d.log());

    // Plain HTTP: what is refused, and why.
    let origin = format!("http://127.0.0.1:{port}");
    let unban = r#"{"target":"203.0.113.66"}"#;
    let (status, head, page) = http(port, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-security-policy").is_some_and(|c| c.contains("script-src 'self'")),
        "{head}"
    );
    assert!(
        page.contains(r#"<meta name="moat-csrf" content="">"#),
        "no CSRF token without a session"
    );
    let (status, _, _) = http(port, "POST", "/api/unban", &[("Origin", &origin)], unban);
    assert_eq!(status, 401, "no session");
    let (status, _, _) = http(
        port,
        "GET",
        "/api/state",
        &[("Host", "attacker.example:80")],
        "",
    );
    assert_eq!(
        status, 403,
        "another host name without a session (DNS rebinding)"
    );
    let (status, _, _) = http(
        port,
        "POST",
        "/api/login",
        &[("Origin", "http://attacker.example")],
        &format!(r#"{{"token":"{token}"}}"#),
    );
    assert_eq!(status, 403, "a login from another site");
    let (status, _, _) = http(
        port,
        "POST",
        "/api/login",
        &[("Origin", &origin)],
        r#"{"token":"guess"}"#,
    );
    assert_eq!(status, 401, "a wrong token");
    let (status, head, _) = http(
        port,
        "POST",
        "/api/login",
        &[("Origin", &origin)],
        &format!(r#"{{"token":"{token}"}}"#),
    );
    assert_eq!(status, 204, "{head}");
    let set = header(&head, "set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let (_, _, page) = http(port, "GET", "/", &[("Cookie", &cookie)], "");
    let csrf = page
        .split(r#"<meta name="moat-csrf" content=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64, "{page}");
    let (status, _, _) = http(
        port,
        "POST",
        "/api/unban",
        &[("Cookie", &cookie), ("Origin", &origin)],
        unban,
    );
    assert_eq!(status, 403, "no CSRF header");
    let (status, _, _) = http(
        port,
        "POST",
        "/api/unban",
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("X-Moat-CSRF", &"0".repeat(64)),
        ],
        unban,
    );
    assert_eq!(status, 403, "a wrong CSRF token");
    let (status, _, _) = http(
        port,
        "POST",
        "/api/unban",
        &[
            ("Cookie", &cookie),
            ("Origin", "http://attacker.example"),
            ("X-Moat-CSRF", &csrf),
        ],
        unban,
    );
    assert_eq!(status, 403, "another Origin");
    assert_eq!(
        active_targets(&d).len(),
        2,
        "nothing was unbanned by the refused requests"
    );
    let (status, _, body) = http(port, "GET", "/api/state", &[], "");
    assert_eq!(status, 200);
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["active"], 2);
    assert_eq!(state["can_act"], false);
    let evidence: Vec<&str> = state["bans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| {
            b["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
        })
        .collect();
    assert!(evidence
        .iter()
        .any(|l| l.contains("<script>alert('xss')</script>")));
    assert!(
        evidence.iter().all(|l| l.len() <= 1024),
        "evidence lines are capped"
    );

    // The browser.
    let artifacts = target_dir().join("test-artifacts");
    let _ = std::fs::remove_file(artifacts.join("dashboard-1280.png"));
    let _ = std::fs::remove_file(artifacts.join("dashboard-390.png"));
    let profile = dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let new_target = "198.51.100.23/32";
    let new_lines: String = (0..3)
        .map(|_| failure("198.51.100.23", "", "curl/8.5"))
        .collect();
    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/drive.js"))
        .env("MOAT_URL", &origin)
        .env("MOAT_TOKEN", &token)
        .env("MOAT_LOG", &log)
        .env("MOAT_NEW_LINE", &new_lines)
        .env("MOAT_NEW_TARGET", new_target)
        .env("PLAYWRIGHT", &playwright)
        .env("MOAT_ARTIFACTS", &artifacts)
        .env("MOAT_PROFILE", &profile)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success() && seen.get("fatal").is_none(),
        "{seen:#}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    eprintln!("what the browser saw: {seen:#}");
    // Read-only without the token.
    assert_eq!(seen["readonly_mode"], "read-only");
    assert_eq!(seen["readonly_unban_buttons"], 0);
    assert_eq!(seen["readonly_unban_status"], 401);
    // The token was exchanged for an HttpOnly cookie and left the address bar.
    assert_eq!(seen["url_after_login"], format!("{origin}/"));
    assert_eq!(seen["cookie_http_only"], true);
    assert_eq!(
        seen["document_cookie"], "",
        "the script cannot read the session"
    );
    assert_eq!(seen["no_csrf_status"], 403);
    // Jails, bans, evidence as text.
    assert!(seen["jails_text"].as_str().unwrap().contains("portainer"));
    let targets: Vec<&str> = seen["ban_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        targets.contains(&"203.0.113.66/32") && targets.contains(&"2001:db8:1:2::/64"),
        "{targets:?}"
    );
    let text = seen["evidence_text"].as_str().unwrap();
    for literal in [
        "<script>alert('xss')</script>",
        "<img src=x onerror=alert(1)>",
        "<b>bold</b>",
        "Set-Cookie: stolen=1",
        &"A".repeat(500),
    ] {
        assert!(
            text.contains(literal),
            "{literal:?} not shown as text in {text:?}"
        );
    }
    assert_eq!(
        seen["injected_elements"], 0,
        "markup from the log became elements"
    );
    assert_eq!(
        seen["dialogs"],
        serde_json::json!([]),
        "a dialog fired: XSS"
    );
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "script errors on the page"
    );
    assert_eq!(
        seen["scripts"].as_array().unwrap().len(),
        1,
        "only the page's own script"
    );
    // The chart.
    assert!(seen["chart_lines"].as_u64().unwrap() >= 1);
    assert!(
        seen["chart_bars"].as_u64().unwrap() >= 1,
        "the bans are drawn"
    );
    assert_eq!(seen["chart_points"], 288, "24 h in 5-minute buckets");
    assert!(seen["week_lines"].as_u64().unwrap() >= 1);
    // Live.
    let ms = seen["new_ban_ms"].as_u64().unwrap();
    assert!(ms < 2000, "the new ban took {ms} ms to appear");
    assert_eq!(seen["navigations_during_wait"], 0, "without a reload");
    assert_eq!(
        seen["visible_after_search"],
        serde_json::json!([new_target])
    );
    // Unbanned from the page, with the token.
    assert_eq!(seen["unbanned"], true);
    let active = active_targets(&d);
    assert!(!active.contains(&new_target.to_string()), "{active:?}");
    // Banned for a time from the page: in force, in jail manual, for 2 h.
    assert_eq!(active.len(), 3, "{active:?}");
    let hand = d.json(&["bans", "show", "192.0.2.55", "--json"]);
    assert_eq!(hand["jail"], "manual");
    assert_eq!(hand["origin"], "manual");
    assert_eq!(hand["reason"], "<i>by hand</i>");
    let secs = |k: &str| {
        hand[k]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert_eq!(secs("until") - secs("started"), 7200);
    assert!(seen["hand_ban_text"]
        .as_str()
        .unwrap()
        .contains("<i>by hand</i>"));
    assert!(d.log().contains("dashboard: a browser logged in"));
    // Phone width: nothing wider than the screen.
    assert!(seen["narrow_overflow"].as_i64().unwrap() <= 0, "{seen:#}");
    for shot in ["dashboard-1280.png", "dashboard-390.png"] {
        let len = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
    d.stop();
}

#[test]
fn a_non_loopback_dashboard_needs_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/access.log"), "").unwrap();
    let port = free_port();
    // 192.0.2.1 is never this host's: the dashboard must refuse before it tries to bind.
    write_config(
        dir,
        &format!(
            "web = \"192.0.2.1:{port}\"\n\n[enforce]\nuse = [\"log\"]\n\n[jails.portainer]\n\
             filter = \"portainer\"\nsources = [\"logs/access.log\"]\n"
        ),
    );
    let d = Daemon::start(dir);
    let status = d.json(&["status", "--json"]);
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("a non-loopback address needs the token"),
        "{warnings}\n{}",
        d.log()
    );
    assert!(d
        .log()
        .contains("the web dashboard is not served on 192.0.2.1"));
    d.stop();
}

#[test]
fn off_loopback_every_request_needs_the_token_and_metrics_are_served_as_configured() {
    let test = "off_loopback_every_request_needs_the_token_and_metrics_are_served_as_configured";
    if !support::is_root() {
        return support::skip(test, "needs root for a network namespace");
    }
    let ns = support::Netns::new(&["web"]);
    let name = ns.0[0].clone();
    support::ns_run(&name, "ip addr add 192.0.2.1/32 dev lo");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("logs/access.log"), "").unwrap();
    write_config(
        dir,
        "web = \"192.0.2.1:9718\"\nmetrics = \"192.0.2.1:9717\"\n\n[enforce]\nuse = [\"log\"]\n\n\
         [jails.portainer]\nfilter = \"portainer\"\nsources = [\"logs/access.log\"]\n",
    );
    let token = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["web", "token", "-c"])
        .arg(dir.join("moat.toml"))
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &name,
        env!("CARGO_BIN_EXE_moat"),
        "run",
        "-c",
    ])
    .arg(dir.join("moat.toml"));
    let d = Daemon::start_command(dir, cmd);
    d.moat(&["ban", "198.51.100.9", "--for", "1h"]);
    let log = d.log();
    assert!(
        log.contains("serving the web dashboard on a non-loopback address")
            && log.contains("every request needs the token"),
        "{log}"
    );
    assert!(
        log.contains("serving metrics on a non-loopback address"),
        "{log}"
    );
    let seen = support::in_netns(&name, move || {
        let web: std::net::SocketAddr = "192.0.2.1:9718".parse().unwrap();
        let origin = "http://192.0.2.1:9718";
        let page = http_at(web, "GET", "/", &[], "").0;
        let state = http_at(web, "GET", "/api/state", &[], "").0;
        let events = http_at(web, "GET", "/api/events", &[], "").0;
        let show = http_at(web, "GET", "/api/ban?target=198.51.100.9", &[], "").0;
        let (login, head, _) = http_at(
            web,
            "POST",
            "/api/login",
            &[("Origin", origin)],
            &format!(r#"{{"token":"{token}"}}"#),
        );
        let cookie = header(&head, "set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_string();
        let (with, _, body) = http_at(web, "GET", "/api/state", &[("Cookie", &cookie)], "");
        let metrics = http_at(
            "192.0.2.1:9717".parse().unwrap(),
            "GET",
            "/metrics",
            &[],
            "",
        );
        (page, state, events, show, login, with, body, metrics)
    });
    let (page, state, events, show, login, with, body, metrics) = seen;
    assert_eq!(page, 200, "the page and its login form");
    assert_eq!(state, 401, "no state without the token");
    assert_eq!(events, 401, "no events without the token");
    assert_eq!(show, 401, "no ban without the token");
    assert_eq!(login, 204);
    assert_eq!(with, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["active"], 1, "{v:#}");
    assert_eq!(metrics.0, 200);
    assert!(metrics.2.contains("moat_active_bans 1"), "{}", metrics.2);
    d.stop();
}

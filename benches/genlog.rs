//! `moat-genlog`: writes a deterministic, realistic nginx "combined" access log for benchmarks,
//! or with `--format sshd` an OpenSSH auth.log.
//!
//! Mixed traffic from a few thousand clients (IPv4 and IPv6, documentation ranges only): page
//! and asset requests, API calls, scanners probing `/wp-login.php` and `/.env`, successful
//! Portainer logins and a few percent of failed ones (`POST /api/auth` answered 422), a share of
//! them from a small set of guessing bots. Same arguments, same bytes, on every machine: the
//! generator carries its own small PRNG (splitmix64) instead of `rand`, whose generators are
//! not promised to produce the same stream across versions.
//!
//! The auth.log (`--format sshd`) is rsyslog's: `Mar 28 10:00:00 host sshd[1234]: ...`. About
//! a quarter of the lines are failures (wrong passwords and unknown users from guessing bots,
//! a few people mistyping), the rest what a busy host logs besides: accepted keys, sessions
//! opened and closed, disconnects, and other programs (CRON, sudo, systemd-logind).
//!
//! Usage: `moat-genlog [--format nginx|sshd] [--lines N] [--seed S] [--fail-percent P] > LOG`

use std::io::{self, BufWriter, Write};

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PAGES: &[&str] = &[
    "/",
    "/index.html",
    "/about",
    "/blog/2026/10/docker-hardening",
    "/blog/",
    "/contact",
    "/api/status",
    "/api/endpoints/1/docker/containers/json?all=1",
    "/api/users/me",
    "/api/endpoints?limit=10&start=1",
    "/api/motd",
    "/feed.xml",
    "/robots.txt",
];
const ASSETS: &[&str] = &[
    "/static/app.3f9c1.js",
    "/static/vendor.77aa0.js",
    "/static/main.css",
    "/favicon.ico",
    "/images/logo.svg",
    "/fonts/inter.woff2",
];
const PROBES: &[&str] = &[
    "/wp-login.php",
    "/.env",
    "/phpmyadmin/",
    "/xmlrpc.php",
    "/admin/config.php",
    "/.git/config",
    "/cgi-bin/luci",
    "/boaform/admin/formLogin",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn client(rng: &mut SplitMix, id: u64) -> String {
    // Stable per id: clients come back with the same address.
    let mut r = SplitMix(id.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let v6 = r.below(5) == 0;
    let _ = rng;
    if v6 {
        format!(
            "2001:db8:{:x}:{:x}::{:x}",
            r.below(0x1000),
            r.below(0x100),
            r.below(0xffff) + 1
        )
    } else {
        let net = if r.below(2) == 0 {
            "192.0.2"
        } else {
            "198.51.100"
        };
        format!("{net}.{}", r.below(254) + 1)
    }
}

fn bot(rng: &mut SplitMix) -> String {
    let i = rng.below(40);
    if i < 30 {
        format!("203.0.113.{}", i * 7 + 3)
    } else {
        format!("2001:db8:bad:{:x}::{:x}", i, rng.below(0xffff) + 1)
    }
}

fn main() -> io::Result<()> {
    let mut lines: u64 = 1_000_000;
    let mut seed: u64 = 42;
    let mut fail_percent: Option<u64> = None;
    let mut format = String::from("nginx");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--format" {
            format = args.next().expect("--format needs nginx or sshd");
            continue;
        }
        let mut val = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--lines" => lines = val(),
            "--seed" => seed = val(),
            "--fail-percent" => fail_percent = Some(val()),
            other => panic!("unknown argument {other}; usage: moat-genlog [--format nginx|sshd] [--lines N] [--seed S] [--fail-percent P]"),
        }
    }
    let out = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, out.lock());
    match format.as_str() {
        "nginx" => generate(lines, seed, fail_percent.unwrap_or(3), &mut out)?,
        "sshd" => generate_sshd(lines, seed, fail_percent.unwrap_or(25), &mut out)?,
        other => panic!("unknown format {other}: nginx or sshd"),
    }
    out.flush()
}

const USERS: &[&str] = &[
    "root",
    "admin",
    "test",
    "user",
    "oracle",
    "postgres",
    "ubuntu",
    "git",
    "pi",
    "ftpuser",
    "guest",
    "deploy",
    "www-data",
    "support",
    "minecraft",
];

/// Writes `lines` lines of an OpenSSH auth.log for `seed` to `out`.
pub fn generate_sshd(
    lines: u64,
    seed: u64,
    fail_percent: u64,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut rng = SplitMix(seed);
    // 28 Mar 00:00:00, advancing 0-60 ms per line, as the access log.
    let mut ms: u64 = 0;
    for _ in 0..lines {
        ms += rng.below(60);
        let secs = ms / 1000;
        let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let day = 28 + secs / 86_400;
        let time = format!("{} {day:2} {h:02}:{m:02}:{s:02}", MONTHS[2]);
        let pid = 1000 + rng.below(60_000);
        let port = 1024 + rng.below(64_000);
        let roll = rng.below(1000);
        let line = if roll < fail_percent * 10 {
            let (ip, user) = if rng.below(10) > 0 {
                (bot(&mut rng), *rng.pick(USERS))
            } else {
                let id = rng.below(4000);
                (client(&mut rng, id), "deploy")
            };
            match rng.below(4) {
                0 => format!("sshd[{pid}]: Invalid user {user} from {ip} port {port}"),
                1 => format!(
                    "sshd[{pid}]: Failed password for invalid user {user} from {ip} port {port} ssh2"
                ),
                2 => format!("sshd[{pid}]: Failed password for {user} from {ip} port {port} ssh2"),
                _ => format!(
                    "sshd[{pid}]: Connection closed by authenticating user {user} {ip} port {port} [preauth]"
                ),
            }
        } else {
            let id = rng.below(4000);
            let ip = client(&mut rng, id);
            match rng.below(8) {
                0 => format!(
                    "sshd[{pid}]: Accepted publickey for deploy from {ip} port {port} ssh2: ED25519 SHA256:{:016x}",
                    rng.next()
                ),
                1 => format!(
                    "sshd[{pid}]: pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"
                ),
                2 => format!("sshd[{pid}]: Received disconnect from {ip} port {port}:11: disconnected by user"),
                3 => format!("sshd[{pid}]: Disconnected from user deploy {ip} port {port}"),
                4 => format!("sshd[{pid}]: pam_unix(sshd:session): session closed for user deploy"),
                5 => format!("CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
                6 => format!(
                    "sudo[{pid}]:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/docker ps"
                ),
                _ => format!("systemd-logind[{pid}]: New session {} of user deploy.", rng.below(9000)),
            }
        };
        writeln!(out, "{time} host {line}")?;
    }
    Ok(())
}

/// Writes `lines` lines of the log for `seed` to `out` (the test suite calls this directly).
pub fn generate(lines: u64, seed: u64, fail_percent: u64, out: &mut impl Write) -> io::Result<()> {
    let mut rng = SplitMix(seed);
    // 2026-03-28 00:00:00 +0100, advancing 0-60 ms per line: 1M lines span about 8 hours.
    let mut ms: u64 = 0;
    for _ in 0..lines {
        ms += rng.below(60);
        let secs = ms / 1000;
        let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let day = 28 + secs / 86_400;
        let time = format!("{day:02}/{}/2026:{h:02}:{m:02}:{s:02} +0100", MONTHS[2]);
        let roll = rng.below(1000);
        let failed = roll < fail_percent * 10;
        let (ip, method, path, status, size, referer, agent) = if failed {
            // Most failures come from bots without a Referer; some are people mistyping.
            if rng.below(4) > 0 {
                (
                    bot(&mut rng),
                    "POST",
                    "/api/auth",
                    422,
                    59,
                    "-".to_string(),
                    *rng.pick(&AGENTS[3..]),
                )
            } else {
                let id = rng.below(4000);
                (
                    client(&mut rng, id),
                    "POST",
                    "/api/auth",
                    422,
                    59,
                    "https://portainer.example.com/".to_string(),
                    *rng.pick(&AGENTS[..3]),
                )
            }
        } else if roll < 60 {
            (
                bot(&mut rng),
                "GET",
                *rng.pick(PROBES),
                404,
                153,
                "-".to_string(),
                *rng.pick(&AGENTS[3..]),
            )
        } else if roll < 70 {
            let id = rng.below(4000);
            (
                client(&mut rng, id),
                "POST",
                "/api/auth",
                200,
                311,
                "https://portainer.example.com/".to_string(),
                *rng.pick(&AGENTS[..3]),
            )
        } else if roll < 450 {
            let id = rng.below(4000);
            (
                client(&mut rng, id),
                "GET",
                *rng.pick(ASSETS),
                200,
                1000 + rng.below(90_000),
                "https://portainer.example.com/".to_string(),
                *rng.pick(&AGENTS[..3]),
            )
        } else {
            let id = rng.below(4000);
            let status = if rng.below(50) == 0 { 404 } else { 200 };
            (
                client(&mut rng, id),
                "GET",
                *rng.pick(PAGES),
                status,
                500 + rng.below(20_000),
                "-".to_string(),
                *rng.pick(AGENTS),
            )
        };
        writeln!(
            out,
            "{ip} - - [{time}] \"{method} {path} HTTP/1.1\" {status} {size} \"{referer}\" \"{agent}\""
        )?;
    }
    Ok(())
}

//! Notifiers end to end: the real daemon bans from a real log file and tells real local
//! servers: an HTTP receiver on loopback (every webhook preset, batching, retries), an SMTP
//! server (Python's aiosmtpd, STARTTLS and AUTH) and a fake AbuseIPDB API. Log lines carry
//! hostile text (quotes, CR, HTML, Markdown, mentions, very long fields) that must stay inside
//! the JSON strings and out of the mail headers.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

mod support;
use support::{append, clf_now, eventually, write_config, Daemon};

/// What an attacker can put in a user agent: a quote and a JSON continuation, a CR, HTML,
/// Markdown, mentions, a code fence, and length.
fn hostile_agent() -> String {
    format!(
        "x\\\"}}, \\\"injected\\\": 1, {{\\\" \r<script>alert(1)</script> <!channel> <!everyone> @everyone @here @room ``` **bold** [link](https://203.0.113.9/) &amp; {}",
        "A".repeat(3000)
    )
}

/// A Portainer login failure in nginx's combined format with `agent` as user agent.
fn failure(ip: &str, agent: &str) -> String {
    format!(
        "{ip} - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"{agent}\"\n",
        clf_now()
    )
}

/// A request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver on loopback: records every request, answers each with the next status of
/// `answers` (200 once they run out).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(answers: &[u16]) -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let mut answers: VecDeque<u16> = answers.iter().copied().collect();
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                g.lock().unwrap().push(Got {
                    method: req.method().to_string(),
                    url: req.url().to_string(),
                    headers: req
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                });
                let status = answers.pop_front().unwrap_or(200);
                let _ =
                    req.respond(tiny_http::Response::from_string("{}").with_status_code(status));
            }
        });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

/// A secret file readable by its owner only.
fn secret(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn jail(maxretry: u32) -> String {
    format!(
        "[jails.portainer]\nfilter = \"portainer\"\nsources = [\"logs/access.log\"]\n\
         maxretry = {maxretry}\n"
    )
}

fn setup(dir: &Path, enforce: &str, maxretry: u32) -> Daemon {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    append(&dir.join("logs/access.log"), "");
    write_config(dir, &format!("{enforce}\n{}", jail(maxretry)));
    Daemon::start(dir)
}

#[test]
fn every_webhook_preset_carries_hostile_evidence_inside_its_strings() {
    let presets = ["generic", "slack", "discord", "ntfy", "gotify", "matrix"];
    for preset in presets {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let rx = Receiver::start(&[]);
        let url = match preset {
            "ntfy" => format!("{}/moat-bans", rx.url),
            "gotify" => format!("{}/message", rx.url),
            "matrix" => format!(
                "{}/_matrix/client/v3/rooms/!room:example.org/send/m.room.message",
                rx.url
            ),
            _ => format!("{}/hook", rx.url),
        };
        let url_file = secret(dir, "webhook.url", &url);
        let token = secret(dir, "webhook.token", "t0ken\n");
        let d = setup(
            dir,
            &format!(
                "[enforce]\nuse = [\"log\", \"webhook\"]\n\n[enforce.webhook]\npreset = \"{preset}\"\n\
                 url_file = \"{url_file}\"\ntoken_file = \"{token}\"\ndigest_seconds = 1\n"
            ),
            2,
        );
        let log = dir.join("logs/access.log");
        append(&log, &failure("192.0.2.7", &hostile_agent()));
        append(&log, &failure("192.0.2.7", &hostile_agent()));
        eventually(20, &format!("{preset}: a request"), || !rx.got().is_empty());
        let got = &rx.got()[0];
        let body = got.json();
        assert!(
            body.get("injected").is_none() && !got.body.contains("\"injected\":"),
            "{preset}: {}",
            got.body
        );
        assert_eq!(
            got.header("content-type"),
            Some("application/json"),
            "{preset}"
        );
        // The text the receiver shows, whatever the preset calls it.
        let text = ["text", "content", "message", "body"]
            .iter()
            .find_map(|k| body[*k].as_str())
            .unwrap_or_else(|| panic!("{preset}: no text in {body}"))
            .to_string();
        assert!(text.contains("192.0.2.7"), "{preset}: {text}");
        assert!(text.contains("portainer"), "{preset}: {text}");
        // The CR arrives as a visible escape, never as a control character.
        assert!(
            !text.contains('\r') && text.contains("\\r"),
            "{preset}: {text}"
        );
        match preset {
            "generic" => {
                assert_eq!(got.method, "POST");
                assert_eq!(got.url, "/hook");
                assert_eq!(got.header("authorization"), Some("Bearer t0ken"));
                assert_eq!(body["count"], 1);
                let ban = &body["bans"][0];
                assert_eq!(ban["target"], "192.0.2.7");
                assert_eq!(ban["jail"], "portainer");
                assert_eq!(ban["failures"], 2);
                assert!(ban["until"].as_str().unwrap().ends_with('Z'));
                assert!(!ban["node"].as_str().unwrap().is_empty());
                let ev = ban["evidence"].as_array().unwrap();
                assert_eq!(ev.len(), 2);
                let line = ev[0].as_str().unwrap();
                assert!(line.contains("<script>alert(1)</script>"), "{line}");
                assert!(line.chars().count() <= 501, "{}", line.len());
            }
            "slack" => {
                assert!(!text.contains("<!channel>") && !text.contains("<script>"));
                assert!(text.contains("&lt;!everyone&gt;"));
                assert_eq!(text.matches("```").count(), 2, "{text}");
            }
            "discord" => {
                assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
                assert!(text.chars().count() <= 2000);
                assert_eq!(text.matches("```").count(), 2, "{text}");
            }
            "ntfy" => {
                assert_eq!(got.url, "/");
                assert_eq!(body["topic"], "moat-bans");
                assert!(body["title"].as_str().unwrap().contains("1 ban"));
            }
            "gotify" => {
                assert_eq!(got.url, "/message");
                assert_eq!(got.header("x-gotify-key"), Some("t0ken"));
            }
            "matrix" => {
                assert_eq!(got.method, "PUT");
                assert!(
                    got.url.starts_with(
                        "/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/moat-"
                    ),
                    "{}",
                    got.url
                );
                assert_eq!(body["msgtype"], "m.notice");
                assert_eq!(body["m.mentions"], serde_json::json!({}));
                assert!(!text.contains("@room"));
            }
            _ => unreachable!(),
        }
        d.stop();
    }
}

#[test]
fn a_burst_of_500_bans_makes_a_few_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start(&[]);
    let d = setup(
        dir,
        &format!(
            "[enforce]\nuse = [\"log\", \"webhook\"]\n\n[enforce.webhook]\nurl = \"{}/hook\"\n\
             digest_seconds = 3\n",
            rx.url
        ),
        1,
    );
    let mut burst = String::new();
    for n in 0..500u32 {
        burst.push_str(&failure(
            &format!("2001:db8:{:x}::1", n + 1),
            "python-requests/2.31",
        ));
    }
    append(&dir.join("logs/access.log"), &burst);
    let count = |g: &[Got]| -> u64 { g.iter().map(|g| g.json()["count"].as_u64().unwrap()).sum() };
    eventually(40, "500 bans told", || count(&rx.got()) == 500);
    let got = rx.got();
    assert!(got.len() <= 3, "{} messages", got.len());
    let mut targets: Vec<String> = got
        .iter()
        .flat_map(|g| {
            g.json()["bans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["target"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 500);
    d.stop();
}

#[test]
fn a_500_answer_is_retried_and_a_400_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start(&[500, 503]);
    let d = setup(
        dir,
        &format!(
            "[enforce]\nuse = [\"log\", \"webhook\"]\n\n[enforce.webhook]\nurl = \"{}/hook\"\n\
             digest_seconds = 0\n",
            rx.url
        ),
        1,
    );
    let log = dir.join("logs/access.log");
    append(&log, &failure("198.51.100.4", "curl/8"));
    eventually(20, "three tries", || rx.got().len() == 3);
    let got = rx.got();
    for g in &got {
        assert_eq!(g.json()["bans"][0]["target"], "198.51.100.4");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.got().len(), 3, "delivered: no more tries");
    assert!(d.log().contains("delivery failed, trying again"));
    d.stop();

    // A refusal (400) is not tried again.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rx = Receiver::start(&[400]);
    let d = setup(
        dir,
        &format!(
            "[enforce]\nuse = [\"log\", \"webhook\"]\n\n[enforce.webhook]\nurl = \"{}/hook\"\n\
             digest_seconds = 0\n",
            rx.url
        ),
        1,
    );
    append(
        &dir.join("logs/access.log"),
        &failure("198.51.100.5", "curl/8"),
    );
    eventually(20, "one try", || rx.got().len() == 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rx.got().len(), 1);
    assert!(d.log().contains("giving up"), "{}", d.log());
    d.stop();
}

#[test]
fn bad_webhook_settings_are_refused_when_the_configuration_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let readable = dir.join("open.url");
    std::fs::write(&readable, "https://hooks.example.org/x").unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (table, says) in [
        (
            "url = \"ftp://hooks.example.org/x\"",
            "must start with https://",
        ),
        (
            &format!("url_file = \"{}\"", readable.display()) as &str,
            "readable by its group or others",
        ),
        (
            "preset = \"gotify\"\nurl = \"https://gotify.example.org/message\"",
            "needs token_file",
        ),
        (
            "preset = \"ntfy\"\nurl = \"https://ntfy.example.org\"",
            "topic",
        ),
        ("", "exactly one of url and url_file"),
    ] {
        write_config(
            dir,
            &format!(
                "[enforce]\nuse = [\"webhook\"]\n\n[enforce.webhook]\n{table}\n\n{}",
                jail(2)
            ),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(["check-config", "-c"])
            .arg(dir.join("moat.toml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table}: accepted");
        assert!(err.contains(says), "{table}: {err}");
    }
}

/// A real SMTP server: Python's aiosmtpd (Debian's python3-aiosmtpd, run by Debian's
/// /usr/bin/python3) on loopback, requiring STARTTLS with a certificate made here by openssl
/// and AUTH as `moat` / `pa55`; each mail it accepts is written as JSON into a folder.
const SMTP_SERVER: &str = r#"
import json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
out, cert, key, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
class Keep:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        tmp = os.path.join(out, f"{n}.tmp")
        with open(tmp, "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "data": envelope.original_content.decode("utf-8", "replace"),
                       "tls": session.ssl is not None, "auth": bool(session.authenticated)}, f)
        os.rename(tmp, os.path.join(out, f"{n}.json"))
        return "250 OK"
def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == b"moat" and data.password == b"pa55"
    return AuthResult(success=ok)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Keep(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
               authenticator=check, auth_required=True)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

struct SmtpServer {
    child: std::process::Child,
    port: u16,
    mails: std::path::PathBuf,
    ca: std::path::PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SmtpServer {
    /// `None` (with the reason printed) when aiosmtpd or openssl is missing.
    fn start(dir: &Path) -> Option<SmtpServer> {
        let has_aiosmtpd = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_aiosmtpd || !Path::new("/usr/bin/openssl").exists() {
            support::skip(
                "smtp",
                "needs /usr/bin/python3 with aiosmtpd and openssl (apt-get install python3-aiosmtpd openssl)",
            );
            return None;
        }
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        let ossl = |args: &[&str]| {
            run(std::process::Command::new("/usr/bin/openssl")
                .current_dir(&tls)
                .args(args))
        };
        ossl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=moat test CA",
        ]);
        ossl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            tls.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let mails = dir.join("mails");
        std::fs::create_dir_all(&mails).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args(["-c", SMTP_SERVER])
            .arg(&mails)
            .arg(tls.join("cert.pem"))
            .arg(tls.join("key.pem"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("smtp.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "{}",
            std::fs::read_to_string(dir.join("smtp.log")).unwrap_or_default()
        );
        Some(SmtpServer {
            child,
            port,
            mails,
            ca: tls.join("ca.pem"),
        })
    }

    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<_> = std::fs::read_dir(&self.mails)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

#[test]
fn email_over_starttls_with_auth_keeps_log_text_out_of_the_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(smtp) = SmtpServer::start(dir) else {
        return;
    };
    let password = secret(dir, "smtp.password", "pa55\n");
    let d = setup(
        dir,
        &format!(
            "[enforce]\nuse = [\"log\", \"email\"]\n\n[enforce.email]\nserver = \"127.0.0.1\"\n\
             port = {}\nsecurity = \"starttls\"\nusername = \"moat\"\npassword_file = \"{password}\"\n\
             ca_file = \"{}\"\nfrom = \"moat <moat@example.org>\"\nto = [\"admin@example.org\"]\n\
             digest_seconds = 1\n",
            smtp.port,
            smtp.ca.display()
        ),
        2,
    );
    let log = dir.join("logs/access.log");
    let agent = format!(
        "\rBcc: victim@example.org\rX-Injected: yes {}",
        hostile_agent()
    );
    append(&log, &failure("203.0.113.44", &agent));
    append(&log, &failure("203.0.113.44", &agent));
    eventually(30, "a mail", || !smtp.mails().is_empty());
    let mail = &smtp.mails()[0];
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["auth"], true);
    assert_eq!(mail["from"], "moat@example.org");
    assert_eq!(mail["to"], serde_json::json!(["admin@example.org"]));
    let data = mail["data"].as_str().unwrap();
    let (head, body) = data.split_once("\r\n\r\n").unwrap();
    let head_lower = head.to_ascii_lowercase();
    assert!(
        !head_lower.contains("bcc") && !head_lower.contains("x-injected"),
        "{head}"
    );
    assert!(head.contains("Subject: [moat] "), "{head}");
    assert!(head.contains("1 ban (portainer 1)"), "{head}");
    assert!(body.contains("203.0.113.44"), "{body}");
    // The evidence is in the body, its CRs as visible escapes (quoted-printable soft line
    // breaks undone).
    let body = body.replace("=\r\n", "");
    assert!(
        body.contains(r"\rBcc: victim@example.org\rX-Injected: yes"),
        "{body}"
    );
    d.stop();

    // A wrong password: no mail, and the failure in the log (aiosmtpd 1.4.3 leaves the failed
    // AUTH unanswered, so here it shows as the exchange's timeout).
    let tmp2 = tempfile::tempdir().unwrap();
    let dir = tmp2.path();
    let password = secret(dir, "smtp.password", "wrong\n");
    let d = setup(
        dir,
        &format!(
            "[enforce]\nuse = [\"log\", \"email\"]\n\n[enforce.email]\nserver = \"127.0.0.1\"\n\
             port = {}\nusername = \"moat\"\npassword_file = \"{password}\"\nca_file = \"{}\"\n\
             from = \"moat@example.org\"\nto = [\"admin@example.org\"]\ndigest_seconds = 0\n\
             timeout_seconds = 5\n",
            smtp.port,
            smtp.ca.display()
        ),
        1,
    );
    append(
        &dir.join("logs/access.log"),
        &failure("203.0.113.45", "curl/8"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !d.log().contains("delivery failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal in the log: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(smtp.mails().len(), 1, "only the first test's mail");
    d.stop();
}

/// `application/x-www-form-urlencoded` to pairs.
fn form(body: &str) -> std::collections::HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// A fake AbuseIPDB API v2 `POST /report`, stateful as its documentation says: the key in a
/// `Key` header, form fields `ip`, `categories`, `comment`; one report per address and
/// reporter per 15 minutes (429 "You can only report the same IP address (`…`) once in 15
/// minutes"); a daily limit (429 "Daily rate limit of N requests exceeded for this
/// endpoint", with `Retry-After` and `X-RateLimit-*` headers); answers in JSON.
struct FakeAbuseIpdb {
    url: String,
    /// Every request: its form fields.
    got: Arc<Mutex<Vec<std::collections::HashMap<String, String>>>>,
}

impl FakeAbuseIpdb {
    fn start(key: &'static str, daily_limit: usize, reported_before: &[&str]) -> FakeAbuseIpdb {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v2", server.server_addr().to_ip().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let mut last: std::collections::HashMap<String, std::time::Instant> = reported_before
            .iter()
            .map(|ip| (ip.to_string(), std::time::Instant::now()))
            .collect();
        std::thread::spawn(move || {
            let mut accepted = 0usize;
            for mut req in server.incoming_requests() {
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let fields = form(&body);
                g.lock().unwrap().push(fields.clone());
                let header = |n: &str| {
                    req.headers()
                        .iter()
                        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(n))
                        .map(|h| h.value.to_string())
                };
                let json = |status: u16, v: Value| {
                    tiny_http::Response::from_string(v.to_string())
                        .with_status_code(status)
                        .with_header(
                            "Content-Type: application/json"
                                .parse::<tiny_http::Header>()
                                .unwrap(),
                        )
                };
                let ip = fields.get("ip").cloned().unwrap_or_default();
                let resp = if req.method() != &tiny_http::Method::Post
                    || req.url() != "/api/v2/report"
                {
                    json(
                        404,
                        serde_json::json!({"errors": [{"detail": "not found", "status": 404}]}),
                    )
                } else if header("Key").as_deref() != Some(key) {
                    json(
                        401,
                        serde_json::json!({"errors": [{"detail": "Authentication failed. Your API key is either missing, incorrect, or revoked.", "status": 401}]}),
                    )
                } else if ip.parse::<std::net::IpAddr>().is_err()
                    || fields.get("categories").is_none_or(|c| c.is_empty())
                {
                    json(
                        422,
                        serde_json::json!({"errors": [{"detail": "The ip and categories fields are required.", "status": 422, "source": {"parameter": "ip"}}]}),
                    )
                } else if accepted >= daily_limit {
                    json(429, serde_json::json!({"errors": [{"detail": format!("Daily rate limit of {daily_limit} requests exceeded for this endpoint. See headers for additional details."), "status": 429}]}))
                        .with_header("Retry-After: 3600".parse::<tiny_http::Header>().unwrap())
                        .with_header(format!("X-RateLimit-Limit: {daily_limit}").parse::<tiny_http::Header>().unwrap())
                        .with_header("X-RateLimit-Remaining: 0".parse::<tiny_http::Header>().unwrap())
                } else if last
                    .get(&ip)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(900))
                {
                    json(
                        429,
                        serde_json::json!({"errors": [{"detail": format!("You can only report the same IP address (`{ip}`) once in 15 minutes."), "status": 429, "source": {"parameter": "ip"}}]}),
                    )
                } else {
                    accepted += 1;
                    last.insert(ip.clone(), std::time::Instant::now());
                    json(
                        200,
                        serde_json::json!({"data": {"ipAddress": ip, "abuseConfidenceScore": 52}}),
                    )
                };
                let _ = req.respond(resp);
            }
        });
        FakeAbuseIpdb { url, got }
    }

    fn got(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.got.lock().unwrap().clone()
    }
}

#[test]
fn abuseipdb_reports_within_its_cooldown_and_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 192.0.2.10 was reported minutes ago; the API takes two more reports today.
    let api = FakeAbuseIpdb::start("k3y", 2, &["192.0.2.10"]);
    let key = secret(dir, "abuseipdb.key", "k3y\n");
    let d = setup(
        dir,
        &format!(
            "[enforce]\nuse = [\"log\", \"abuseipdb\"]\n\n[enforce.abuseipdb]\nkey_file = \"{key}\"\n\
             api = \"{}\"\ncategories = {{ portainer = [18, 21] }}\n",
            api.url
        ),
        1,
    );
    let log = dir.join("logs/access.log");
    let agent = "Mozilla/5.0 (from 127.0.0.1) <b>x</b>";
    for (n, ip) in [
        "192.0.2.10",
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.13",
        "192.0.2.14",
    ]
    .iter()
    .enumerate()
    {
        append(&log, &failure(ip, agent));
        eventually(20, &format!("ban {n}"), || {
            d.jail("portainer")["currently_banned"] == n + 1
        });
        if n < 4 {
            eventually(20, &format!("report {n}"), || api.got().len() == n + 1);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let got = api.got();
    let ips: Vec<&str> = got.iter().map(|f| f["ip"].as_str()).collect();
    // .10: refused for the cooldown, not tried again; .11 and .12 reported; .13 hit the daily
    // limit; .14 not sent at all.
    assert_eq!(
        ips,
        ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"]
    );
    for f in &got {
        assert_eq!(f["categories"], "18,21");
        let comment = &f["comment"];
        assert!(
            comment.starts_with("moat: 1 failures in jail portainer"),
            "{comment}"
        );
        assert!(comment.contains("<b>x</b>"), "{comment}");
        assert!(!comment.contains("127.0.0.1"), "{comment}");
        assert!(comment.contains("[this host]"), "{comment}");
        assert!(f["timestamp"].ends_with('Z'));
    }
    d.stop();
}

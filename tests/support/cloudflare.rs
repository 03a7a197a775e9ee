//! A stateful fake of the parts of Cloudflare's API v4 moat uses, on loopback, written from
//! Cloudflare's documentation and the behaviour other clients met (shared/reference/
//! cloudflare-api.md): the response envelope; Bearer tokens with permission groups, checked
//! per endpoint as Cloudflare documents them, and the legacy global key; account IP lists with asynchronous bulk operations, cursor pagination and the
//! 10,000-item account capacity; the zone's custom-rules entry point; IP Access Rules at
//! zone, account and user level with filters, pagination and the duplicate error 10009; token
//! verification; the rate limit (a sliding window per credential, then a lockout answered
//! with 429 and Retry-After); injected latency and outages.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::{json, Value};

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Added to every response.
    pub latency: Duration,
    /// Requests per credential per `window` before the lockout.
    pub limit: usize,
    pub window: Duration,
    pub lockout: Duration,
    /// Status polls a bulk operation answers "running" before "completed".
    pub op_polls: u32,
    /// List items across all lists of the account.
    pub capacity: usize,
    /// IPv6 list items at most /64 (the older documented rule) rather than up to /128.
    pub legacy_ipv6: bool,
    /// What `GET /ips` publishes.
    pub ips: Vec<String>,
    /// Send the `Ratelimit` headers (Cloudflare does since 2025-09; older answers had none).
    pub ratelimit_headers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            latency: Duration::ZERO,
            limit: 1200,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
            op_polls: 1,
            capacity: 10_000,
            legacy_ipv6: false,
            ips: vec!["173.245.48.0/20".into(), "2400:cb00::/32".into()],
            ratelimit_headers: true,
        }
    }
}

/// What the fake does instead of answering, during an outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    None,
    /// 503 with an error envelope.
    Errors,
    /// The connection is closed without a response.
    Drop,
}

/// Cloudflare's permission groups as the dashboard names them (My Profile → API Tokens →
/// Create Token), each with its level: `Edit` also grants `Read`. The fake checks each
/// endpoint against the group Cloudflare documents for it (shared/reference/cloudflare-api.md
/// §2.6, §3.4, §4), so a token with only the documented groups proves they are enough.
pub const LISTS_EDIT: &str = "Account · Account Filter Lists · Edit";
pub const LISTS_READ: &str = "Account · Account Filter Lists · Read";
pub const WAF_EDIT: &str = "Zone · WAF · Edit";
pub const WAF_READ: &str = "Zone · WAF · Read";
pub const ZONE_FIREWALL_EDIT: &str = "Zone · Firewall Services · Edit";
pub const ACCOUNT_FIREWALL_EDIT: &str = "Account · Account Firewall Access Rules · Edit";
/// `GET /accounts/{id}`: the account's settings.
pub const ACCOUNT_SETTINGS_READ: &str = "Account · Account Settings · Read";
/// `GET /zones/{id}`: the zone's details.
pub const ZONE_READ: &str = "Zone · Zone · Read";
/// User-level access rules: the 2024 spec lists only the global key for them; a token never
/// carries this.
const USER_FIREWALL: &str = "User · Firewall Access Rules · Edit";
/// What the global key may do: everything the user may.
const EVERYTHING: &[&str] = &[
    LISTS_EDIT,
    WAF_EDIT,
    ZONE_FIREWALL_EDIT,
    ACCOUNT_FIREWALL_EDIT,
    ACCOUNT_SETTINGS_READ,
    ZONE_READ,
    USER_FIREWALL,
];

#[derive(Clone, Debug)]
pub struct Item {
    pub id: String,
    pub ip: String,
    pub comment: String,
}

#[derive(Clone, Debug)]
pub struct List {
    pub id: String,
    pub name: String,
    pub items: BTreeMap<String, Item>,
}

#[derive(Clone, Debug)]
pub struct AccessRule {
    pub id: String,
    pub mode: String,
    pub target: String,
    pub value: String,
    pub notes: String,
    /// "zone", "account" or "user", and that scope's id.
    pub scope: (String, String),
    pub seq: u64,
}

#[derive(Debug)]
struct Op {
    polls_left: u32,
    error: Option<String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub options: Options,
    pub account: String,
    pub zone: String,
    /// Bearer tokens and the permission groups each was given (`LISTS_EDIT`, ...).
    pub tokens: HashMap<String, HashSet<String>>,
    /// The legacy global key: (email, key).
    pub global: Option<(String, String)>,
    pub lists: BTreeMap<String, List>,
    /// The zone's custom-rules entry point: (ruleset id, version, rules).
    pub entrypoint: Option<(String, u64, Vec<Value>)>,
    pub access_rules: Vec<AccessRule>,
    ops: HashMap<String, Op>,
    recent: HashMap<String, VecDeque<Instant>>,
    locked: HashMap<String, Instant>,
    pub outage: Option<Outage>,
    /// Every request: "METHOD /path?query".
    pub requests: Vec<String>,
    /// Every authenticated request with who made it: ("token:TOKEN" or "key:EMAIL",
    /// "METHOD /path?query"), so that a test can tell which host wrote.
    pub calls: Vec<(String, String)>,
    /// Requests answered 429.
    pub limited: usize,
    next: u64,
}

impl State {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:032x}", 0xc10d_0000_0000u64 + self.next)
    }

    /// Every item of every list, as "ip comment".
    pub fn items(&self) -> Vec<String> {
        self.lists
            .values()
            .flat_map(|l| l.items.values().map(|i| i.ip.clone()))
            .collect()
    }
}

pub struct Fake {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// An answer: HTTP status, body, extra headers.
type Answer = (u16, Value, Vec<(String, String)>);

fn ok(result: Value) -> Answer {
    (
        200,
        json!({"success": true, "errors": [], "messages": [], "result": result}),
        vec![],
    )
}

fn err(status: u16, code: u32, message: &str) -> Answer {
    (
        status,
        json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
        vec![],
    )
}

fn page(result: Vec<Value>, page: usize, per_page: usize, total: usize) -> Answer {
    let count = result.len();
    (
        200,
        json!({"success": true, "errors": [], "messages": [], "result": result,
               "result_info": {"page": page, "per_page": per_page, "count": count,
                               "total_count": total,
                               "total_pages": total.div_ceil(per_page.max(1))}}),
        vec![],
    )
}

fn query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A list item's address canonicalised as Cloudflare stores it: an IPv4 /32 and an IPv6 /128
/// are the bare address, IPv6 lowercased; `None` when Cloudflare would refuse it.
fn canonical_item(ip: &str, legacy_ipv6: bool) -> Option<String> {
    let net: IpNet = match ip.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(ip.parse::<IpAddr>().ok()?),
    };
    if net.trunc() != net {
        return None;
    }
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 => Some(n.addr().to_string()),
        IpNet::V4(n) if n.prefix_len() >= 8 => Some(n.to_string()),
        IpNet::V6(n) if legacy_ipv6 && !(12..=64).contains(&n.prefix_len()) => None,
        IpNet::V6(n) if n.prefix_len() == 128 => Some(n.addr().to_string()),
        IpNet::V6(n) if n.prefix_len() >= 12 => Some(n.to_string()),
        _ => None,
    }
}

impl Fake {
    pub fn start(options: Options) -> Fake {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}/client/v4", server.server_addr().to_ip().unwrap());
        let mut st = State {
            options,
            ..State::default()
        };
        st.account = st.id();
        st.zone = st.id();
        let state = Arc::new(Mutex::new(st));
        for _ in 0..4 {
            let (server, state) = (server.clone(), state.clone());
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    serve(req, &state);
                }
            });
        }
        Fake { url, state, server }
    }

    /// Adds a token with the permission groups `perms` (`LISTS_EDIT`, ...).
    pub fn token(&self, token: &str, perms: &[&str]) {
        self.state.lock().unwrap().tokens.insert(
            token.to_string(),
            perms.iter().map(|p| p.to_string()).collect(),
        );
    }

    pub fn account(&self) -> String {
        self.state.lock().unwrap().account.clone()
    }

    pub fn zone(&self) -> String {
        self.state.lock().unwrap().zone.clone()
    }

    pub fn outage(&self, o: Outage) {
        self.state.lock().unwrap().outage = Some(o);
    }

    /// Locks a token out for `d`, as if another client had used up its limit.
    pub fn lock_out(&self, token: &str, d: Duration) {
        self.state
            .lock()
            .unwrap()
            .locked
            .insert(format!("token:{token}"), Instant::now() + d);
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// The requests made with `token`.
    pub fn calls_by(&self, token: &str) -> Vec<String> {
        let who = format!("token:{token}");
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The writes (anything but a GET) made with `token`.
    pub fn writes_by(&self, token: &str) -> Vec<String> {
        self.calls_by(token)
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }
}

fn serve(mut req: tiny_http::Request, state: &Arc<Mutex<State>>) {
    let mut body = String::new();
    let _ = req.as_reader().take(64 << 20).read_to_string(&mut body);
    let header = |name: &'static str| {
        req.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let (auth, email, key) = (
        header("Authorization"),
        header("X-Auth-Email"),
        header("X-Auth-Key"),
    );
    let method = req.method().as_str().to_string();
    let url = req.url().to_string();
    let latency = state.lock().unwrap().options.latency;
    std::thread::sleep(latency);
    let answer = {
        let mut st = state.lock().unwrap();
        st.requests.push(format!("{method} {url}"));
        match st.outage {
            Some(Outage::Drop) => None,
            Some(Outage::Errors) => Some(err(503, 10013, "Service temporarily unavailable")),
            _ => Some(handle(&mut st, &method, &url, &body, auth, email, key)),
        }
    };
    let Some((status, body, headers)) = answer else {
        drop(req);
        return;
    };
    let mut resp = tiny_http::Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap());
    for (k, v) in headers {
        resp = resp.with_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
    }
    let _ = req.respond(resp);
}

/// Who is asking, and what they may do; or the error Cloudflare answers.
fn authenticate(
    st: &State,
    auth: Option<String>,
    email: Option<String>,
    key: Option<String>,
) -> Result<(String, HashSet<String>), Answer> {
    if let Some(a) = auth {
        let Some(token) = a.strip_prefix("Bearer ") else {
            let mut e = err(400, 6003, "Invalid request headers");
            e.1["errors"][0]["error_chain"] =
                json!([{"code": 6111, "message": "Invalid format for Authorization header"}]);
            return Err(e);
        };
        return match st.tokens.get(token) {
            Some(p) => Ok((format!("token:{token}"), p.clone())),
            None => Err(err(403, 10000, "Authentication error")),
        };
    }
    match (email, key, &st.global) {
        (Some(e), Some(k), Some((ge, gk))) if &e == ge && &k == gk => Ok((
            format!("key:{e}"),
            EVERYTHING.iter().map(|s| s.to_string()).collect(),
        )),
        (Some(_), Some(_), _) => Err(err(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")),
        _ => {
            let mut e = err(400, 6003, "Invalid request headers");
            e.1["errors"][0]["error_chain"] =
                json!([{"code": 6111, "message": "Invalid format for Authorization header"}]);
            Err(e)
        }
    }
}

/// Counts the request against the credential's window; the 429 when over it.
fn rate_limit(st: &mut State, who: &str) -> Result<Vec<(String, String)>, Answer> {
    let now = Instant::now();
    let (limit, window, lockout) = (st.options.limit, st.options.window, st.options.lockout);
    if let Some(&until) = st.locked.get(who) {
        if now < until {
            st.limited += 1;
            let mut e = err(
                429,
                971,
                "Please wait and consider throttling your request speed",
            );
            let secs = (until - now).as_secs_f64().ceil() as u64;
            e.2.push(("Retry-After".into(), secs.max(1).to_string()));
            return Err(e);
        }
        st.locked.remove(who);
        st.recent.remove(who);
    }
    let recent = st.recent.entry(who.to_string()).or_default();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        recent.pop_front();
    }
    if recent.len() >= limit {
        st.locked.insert(who.to_string(), now + lockout);
        st.limited += 1;
        let mut e = err(
            429,
            971,
            "More than 1200 requests per 300 seconds reached. Please wait and consider throttling your request speed",
        );
        e.2.push(("Retry-After".into(), lockout.as_secs().max(1).to_string()));
        return Err(e);
    }
    recent.push_back(now);
    if !st.options.ratelimit_headers {
        return Ok(Vec::new());
    }
    let recent = &st.recent[who];
    let remaining = limit - recent.len();
    // Seconds until the oldest request leaves the window (a slot frees up), rounded up.
    let reset = (*recent.front().unwrap() + window).saturating_duration_since(now);
    Ok(vec![
        (
            "Ratelimit".into(),
            format!(
                "\"default\";r={remaining};t={}",
                reset.as_secs_f64().ceil() as u64
            ),
        ),
        (
            "Ratelimit-Policy".into(),
            format!("\"default\";q={limit};w={}", window.as_secs()),
        ),
    ])
}

/// Whether the token may call `method` on an endpoint that `edit` (an `... · Edit` group)
/// governs: reads need the group's Read or Edit, writes its Edit. Cloudflare answers a
/// missing permission as it answers a bad token.
fn need(perms: &HashSet<String>, method: &str, edit: &str) -> Result<(), Answer> {
    let group = edit.strip_suffix(" · Edit").unwrap_or(edit);
    let allowed =
        perms.contains(edit) || (method == "GET" && perms.contains(&format!("{group} · Read")));
    if allowed {
        Ok(())
    } else {
        Err(err(403, 10000, "Authentication error"))
    }
}

fn handle(
    st: &mut State,
    method: &str,
    url: &str,
    body: &str,
    auth: Option<String>,
    email: Option<String>,
    key: Option<String>,
) -> Answer {
    let (path, q) = url.split_once('?').unwrap_or((url, ""));
    let q = query(q);
    let Some(path) = path.strip_prefix("/client/v4") else {
        return err(404, 7003, "No route for the URI");
    };
    if method == "GET" && path == "/ips" {
        let (v4, v6): (Vec<&String>, Vec<&String>) =
            st.options.ips.iter().partition(|r| !r.contains(':'));
        return ok(json!({"ipv4_cidrs": v4, "ipv6_cidrs": v6, "etag": "x"}));
    }
    let (who, perms) = match authenticate(st, auth, email, key) {
        Ok(a) => a,
        Err(e) => return e,
    };
    st.calls.push((who.clone(), format!("{method} {url}")));
    let headers = match rate_limit(st, &who) {
        Ok(h) => h,
        Err(e) => return e,
    };
    let body: Value = if body.trim().is_empty() {
        Value::Null
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            Err(_) => return err(400, 10026, "filter parse error: malformed JSON body"),
        }
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut answer = route(st, method, &segs, &q, &body, &who, &perms);
    answer.2.extend(headers);
    answer
}

fn route(
    st: &mut State,
    method: &str,
    segs: &[&str],
    q: &HashMap<String, String>,
    body: &Value,
    who: &str,
    perms: &HashSet<String>,
) -> Answer {
    let account = st.account.clone();
    let zone = st.zone.clone();
    let r = (|| -> Result<Answer, Answer> {
        match (method, segs) {
            ("GET", ["user", "tokens", "verify"]) => {
                if !who.starts_with("token:") {
                    return Err(err(400, 1001, "Missing \"Authorization\" header"));
                }
                Ok(ok(
                    json!({"id": "6247ce7e3c0b4b4c8f3bd3f6d5a0e0b7", "status": "active"}),
                ))
            }
            (_, ["accounts", a, ..]) if *a != account => {
                Err(err(403, 10000, "Authentication error"))
            }
            (_, ["zones", z, ..]) if *z != zone => Err(err(403, 10000, "Authentication error")),
            ("GET", ["zones", _]) => {
                need(perms, method, ZONE_READ)?;
                Ok(ok(
                    json!({"id": zone, "name": "example.com", "account": {"id": account}}),
                ))
            }
            ("GET", ["accounts", _]) => {
                need(perms, method, ACCOUNT_SETTINGS_READ)?;
                Ok(ok(json!({"id": account, "name": "example"})))
            }
            (_, ["accounts", _, "rules", "lists", ..]) => {
                need(perms, method, LISTS_EDIT)?;
                lists(st, method, &segs[4..], q, body)
            }
            (_, ["zones", _, "rulesets", ..]) => {
                need(perms, method, WAF_EDIT)?;
                rulesets(st, method, &segs[3..], body)
            }
            (_, ["zones", _, "firewall", "access_rules", "rules", rest @ ..]) => {
                need(perms, method, ZONE_FIREWALL_EDIT)?;
                access_rules(st, method, rest, q, body, ("zone", &zone))
            }
            (_, ["accounts", _, "firewall", "access_rules", "rules", rest @ ..]) => {
                need(perms, method, ACCOUNT_FIREWALL_EDIT)?;
                access_rules(st, method, rest, q, body, ("account", &account))
            }
            (_, ["user", "firewall", "access_rules", "rules", rest @ ..]) => {
                need(perms, method, USER_FIREWALL)?;
                access_rules(st, method, rest, q, body, ("user", "user"))
            }
            _ => Err(err(404, 7003, "No route for the URI")),
        }
    })();
    r.unwrap_or_else(|e| e)
}

fn list_json(l: &List) -> Value {
    json!({"id": l.id, "name": l.name, "kind": "ip", "description": "", "num_items": l.items.len(),
           "num_referencing_filters": 0, "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"})
}

fn lists(
    st: &mut State,
    method: &str,
    segs: &[&str],
    q: &HashMap<String, String>,
    body: &Value,
) -> Result<Answer, Answer> {
    match (method, segs) {
        ("GET", []) => Ok(ok(Value::Array(st.lists.values().map(list_json).collect()))),
        ("POST", []) => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let valid = !name.is_empty()
                && name.len() <= 50
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(err(
                    400,
                    10001,
                    "list name must match ^[a-z0-9_]+$ (at most 50)",
                ));
            }
            if st.lists.values().any(|l| l.name == name) {
                return Err(err(400, 10002, "a list with this name already exists"));
            }
            let id = st.id();
            let l = List {
                id: id.clone(),
                name,
                items: BTreeMap::new(),
            };
            let v = list_json(&l);
            st.lists.insert(id, l);
            Ok(ok(v))
        }
        ("GET", ["bulk_operations", op]) => {
            let Some(o) = st.ops.get_mut(*op) else {
                return Err(err(404, 10003, "operation not found"));
            };
            if o.polls_left > 0 {
                o.polls_left -= 1;
                return Ok(ok(json!({"id": op, "status": "running"})));
            }
            Ok(ok(match &o.error {
                Some(e) => {
                    json!({"id": op, "status": "failed", "error": e, "completed": "2026-01-01T00:00:00Z"})
                }
                None => {
                    json!({"id": op, "status": "completed", "completed": "2026-01-01T00:00:00Z"})
                }
            }))
        }
        (_, [id, "items"]) => {
            let id = id.to_string();
            if !st.lists.contains_key(&id) {
                return Err(err(404, 10000, "list not found"));
            }
            items(st, method, &id, q, body)
        }
        ("GET", [id]) => match st.lists.get(*id) {
            Some(l) => Ok(ok(list_json(l))),
            None => Err(err(404, 10000, "list not found")),
        },
        _ => Err(err(404, 7003, "No route for the URI")),
    }
}

/// An asynchronous operation: its effect already decided, its status revealed over polls.
fn operation(st: &mut State, error: Option<String>) -> Answer {
    let op = st.id();
    let polls = st.options.op_polls;
    st.ops.insert(
        op.clone(),
        Op {
            polls_left: polls,
            error,
        },
    );
    let mut a = ok(json!({"operation_id": op}));
    a.0 = 201;
    a
}

fn items(
    st: &mut State,
    method: &str,
    list: &str,
    q: &HashMap<String, String>,
    body: &Value,
) -> Result<Answer, Answer> {
    let legacy = st.options.legacy_ipv6;
    match method {
        "GET" => {
            let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(25);
            if !(1..=500).contains(&per_page) {
                return Err(err(400, 10004, "per_page must be between 1 and 500"));
            }
            let start: usize = q
                .get("cursor")
                .and_then(|c| c.strip_prefix("after_"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let search = q.get("search").cloned().unwrap_or_default();
            let all: Vec<&Item> = st.lists[list]
                .items
                .values()
                .filter(|i| i.ip.starts_with(&search))
                .collect();
            let chunk: Vec<Value> = all
                .iter()
                .skip(start)
                .take(per_page)
                .map(|i| json!({"id": i.id, "ip": i.ip, "comment": i.comment,
                                "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"}))
                .collect();
            let mut info = json!({"cursors": {}});
            if start + per_page < all.len() {
                info["cursors"]["after"] = json!(format!("after_{}", start + per_page));
            }
            Ok((
                200,
                json!({"success": true, "errors": [], "messages": [], "result": chunk, "result_info": info}),
                vec![],
            ))
        }
        "POST" | "PUT" => {
            let Some(arr) = body.as_array() else {
                return Err(err(400, 10021, "the body must be an array of items"));
            };
            let mut new = Vec::new();
            for v in arr {
                let ip = v["ip"].as_str().unwrap_or_default();
                let Some(ip) = canonical_item(ip, legacy) else {
                    return Err(err(400, 10021, &format!("invalid ip address: {ip}")));
                };
                new.push((ip, v["comment"].as_str().unwrap_or_default().to_string()));
            }
            let mut items = if method == "PUT" {
                BTreeMap::new()
            } else {
                st.lists[list].items.clone()
            };
            for (ip, comment) in new {
                let existing = items.values().find(|i| i.ip == ip).map(|i| i.id.clone());
                let id = existing.unwrap_or_else(|| st.id());
                items.insert(id.clone(), Item { id, ip, comment });
            }
            let others: usize = st
                .lists
                .iter()
                .filter(|(id, _)| id.as_str() != list)
                .map(|(_, l)| l.items.len())
                .sum();
            if others + items.len() > st.options.capacity {
                return Ok(operation(
                    st,
                    Some("This list is at the maximum number of items".into()),
                ));
            }
            st.lists.get_mut(list).unwrap().items = items;
            Ok(operation(st, None))
        }
        "DELETE" => {
            let Some(arr) = body["items"].as_array().filter(|a| !a.is_empty()) else {
                return Err(err(400, 10022, "items: at least one item id is required"));
            };
            let l = st.lists.get_mut(list).unwrap();
            for v in arr {
                if let Some(id) = v["id"].as_str() {
                    l.items.remove(id);
                }
            }
            Ok(operation(st, None))
        }
        _ => Err(err(404, 7003, "No route for the URI")),
    }
}

fn rulesets(st: &mut State, method: &str, segs: &[&str], body: &Value) -> Result<Answer, Answer> {
    let ruleset = |id: &str, version: u64, rules: &[Value]| {
        json!({"id": id, "name": "default", "kind": "zone", "phase": "http_request_firewall_custom",
               "version": version.to_string(), "rules": rules})
    };
    let check = |st: &State, rule: &Value| -> Result<(), Answer> {
        let expr = rule["expression"].as_str().unwrap_or_default();
        for name in expr.split('$').skip(1) {
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !st.lists.values().any(|l| l.name == name) {
                return Err(err(400, 20021, &format!("could not find list {name}")));
            }
        }
        Ok(())
    };
    match (method, segs) {
        ("GET", ["phases", "http_request_firewall_custom", "entrypoint"]) => match &st.entrypoint {
            Some((id, v, rules)) => Ok(ok(ruleset(id, *v, rules))),
            None => Err(err(
                404,
                10003,
                "could not find entrypoint ruleset in the http_request_firewall_custom phase",
            )),
        },
        ("PUT", ["phases", "http_request_firewall_custom", "entrypoint"]) => {
            let mut rules = Vec::new();
            for r in body["rules"].as_array().cloned().unwrap_or_default() {
                check(st, &r)?;
                let mut r = r;
                if r.get("id").is_none() {
                    r["id"] = json!(st.id());
                }
                rules.push(r);
            }
            let id = match &st.entrypoint {
                Some((id, ..)) => id.clone(),
                None => st.id(),
            };
            let version = st.entrypoint.as_ref().map_or(1, |e| e.1 + 1);
            st.entrypoint = Some((id.clone(), version, rules.clone()));
            Ok(ok(ruleset(&id, version, &rules)))
        }
        ("POST", [rs, "rules"]) => {
            let Some((id, _, _)) = st.entrypoint.clone().filter(|e| e.0 == *rs) else {
                return Err(err(404, 10003, "ruleset not found"));
            };
            check(st, body)?;
            let mut rule = body.clone();
            rule["id"] = json!(st.id());
            let e = st.entrypoint.as_mut().unwrap();
            e.1 += 1;
            e.2.push(rule);
            let (v, rules) = (e.1, e.2.clone());
            Ok(ok(ruleset(&id, v, &rules)))
        }
        _ => Err(err(404, 7003, "No route for the URI")),
    }
}

fn rule_json(r: &AccessRule) -> Value {
    json!({"id": r.id, "paused": false, "mode": r.mode, "notes": r.notes,
           "allowed_modes": ["whitelist", "block", "challenge", "js_challenge", "managed_challenge"],
           "configuration": {"target": r.target, "value": r.value},
           "scope": {"id": r.scope.1, "type": r.scope.0},
           "created_on": "2026-01-01T00:00:00.123456789Z", "modified_on": "2026-01-01T00:00:00.123456Z"})
}

fn access_rules(
    st: &mut State,
    method: &str,
    rest: &[&str],
    q: &HashMap<String, String>,
    body: &Value,
    scope: (&str, &str),
) -> Result<Answer, Answer> {
    let in_scope = |r: &AccessRule| r.scope.0 == scope.0 && r.scope.1 == scope.1;
    match (method, rest) {
        ("GET", []) => {
            let get = |k: &str| {
                q.get(&format!("configuration.{k}"))
                    .or_else(|| q.get(&format!("configuration_{k}")))
                    .cloned()
            };
            let (target, value) = (get("target"), get("value"));
            let notes = q.get("notes").map(|n| n.to_lowercase());
            let mut hits: Vec<&AccessRule> = st
                .access_rules
                .iter()
                .filter(|r| in_scope(r))
                .filter(|r| q.get("mode").is_none_or(|m| &r.mode == m))
                .filter(|r| target.as_ref().is_none_or(|t| &r.target == t))
                .filter(|r| value.as_ref().is_none_or(|v| &r.value == v))
                .filter(|r| {
                    notes
                        .as_ref()
                        .is_none_or(|n| r.notes.to_lowercase().contains(n))
                })
                .collect();
            hits.sort_by_key(|r| std::cmp::Reverse(r.seq)); // newest first
            let per_page: usize = q
                .get("per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(20)
                .clamp(1, 1000);
            let page_no: usize = q
                .get("page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1);
            let total = hits.len();
            let chunk = hits
                .iter()
                .skip((page_no - 1) * per_page)
                .take(per_page)
                .map(|r| rule_json(r))
                .collect();
            Ok(page(chunk, page_no, per_page, total))
        }
        ("POST", []) => {
            let mode = body["mode"].as_str().unwrap_or_default().to_string();
            if ![
                "block",
                "challenge",
                "whitelist",
                "js_challenge",
                "managed_challenge",
            ]
            .contains(&mode.as_str())
            {
                return Err(err(
                    400,
                    10001,
                    "firewallaccessrules.api.validation_error:invalid mode received: ",
                ));
            }
            let target = body["configuration"]["target"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let value = body["configuration"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let valid = match target.as_str() {
                "ip" => value.parse::<std::net::Ipv4Addr>().is_ok(),
                "ip6" => value.parse::<std::net::Ipv6Addr>().is_ok(),
                "ip_range" => match value.parse::<IpNet>() {
                    Ok(IpNet::V4(n)) => [16, 24].contains(&n.prefix_len()) && n.trunc() == n,
                    Ok(IpNet::V6(n)) => [32, 48, 64].contains(&n.prefix_len()) && n.trunc() == n,
                    Err(_) => false,
                },
                _ => false,
            };
            if !valid {
                return Err(err(
                    400,
                    10001,
                    &format!(
                        "firewallaccessrules.api.validation_error:invalid ip provided:{value}"
                    ),
                ));
            }
            if scope.0 == "zone" && body["notes"].as_str().is_none() {
                return Err(err(
                    400,
                    10001,
                    "firewallaccessrules.api.validation_error:notes required",
                ));
            }
            if st
                .access_rules
                .iter()
                .any(|r| in_scope(r) && r.value == value)
            {
                return Err(err(
                    400,
                    10009,
                    "firewallaccessrules.api.duplicate_of_existing",
                ));
            }
            if st.access_rules.len() >= 50_000 {
                return Err(err(400, 10010, "firewallaccessrules.api.quota_exceeded"));
            }
            let id = st.id();
            let seq = st.next;
            let r = AccessRule {
                id,
                mode,
                target,
                value,
                notes: body["notes"].as_str().unwrap_or_default().to_string(),
                scope: (scope.0.to_string(), scope.1.to_string()),
                seq,
            };
            let v = rule_json(&r);
            st.access_rules.push(r);
            Ok(ok(v))
        }
        ("GET", [id]) => match st.access_rules.iter().find(|r| in_scope(r) && r.id == *id) {
            Some(r) => Ok(ok(rule_json(r))),
            None => Err(err(404, 10001, "firewallaccessrules.api.not_found")),
        },
        ("DELETE", [id]) => {
            let before = st.access_rules.len();
            st.access_rules.retain(|r| !(in_scope(r) && r.id == *id));
            if st.access_rules.len() == before {
                return Err(err(404, 10001, "firewallaccessrules.api.not_found"));
            }
            Ok(ok(json!({"id": id})))
        }
        _ => Err(err(404, 7003, "No route for the URI")),
    }
}

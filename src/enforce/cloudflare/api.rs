//! Cloudflare's API v4 as moat calls it: one client-side budget for every request, the
//! response envelope, rate-limit headers, and retries.
//!
//! The budget is a pace (a few requests per second) and a window (1,200 per five minutes by
//! default, Cloudflare's documented limit per user): a request waits for both, so moat never
//! provokes the five-minute lockout Cloudflare imposes on whoever exceeds the limit. Should a
//! 429 come anyway (another tool using the same account), its `Retry-After` is honoured, or
//! five minutes when it has none; both rate-limit header styles (`Ratelimit: ...;r=0;t=30`,
//! and the older `X-RateLimit-Remaining`/`-Reset`) pause the client before the limit is hit.
//! 5xx answers and network errors are retried a few times with exponential backoff and
//! jitter; after that the caller's retry (the enforcer thread's) takes over.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How moat proves who it is.
#[derive(Clone)]
pub enum Auth {
    /// An API token (`Authorization: Bearer`).
    Token(String),
    /// The legacy global API key (`X-Auth-Email`, `X-Auth-Key`).
    GlobalKey {
        /// The account's email address.
        email: String,
        /// The global API key itself (read from `key_file`).
        key: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::GlobalKey { email, .. } => write!(f, "GlobalKey({email}, ..)"),
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum CallError {
    /// Cloudflare answered with an error: HTTP status, the first error's code and message.
    Api {
        /// The HTTP status.
        status: u16,
        /// The code of Cloudflare's first error (`10009`: a duplicate access rule, say).
        code: u64,
        /// The message of Cloudflare's first error.
        message: String,
    },
    /// Rate limited; no request before this much time has passed.
    Limited(Duration),
    /// Cloudflare could not be reached or failed (5xx), after retries.
    Unavailable(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api {
                status,
                code,
                message,
            } => write!(
                f,
                "Cloudflare refused (HTTP {status}, code {code}): {message}"
            ),
            CallError::Limited(d) => write!(
                f,
                "rate limited by Cloudflare; next request in {} s",
                d.as_secs()
            ),
            CallError::Unavailable(e) => write!(f, "Cloudflare unreachable: {e}"),
        }
    }
}

impl CallError {
    /// Whether trying again later may succeed.
    pub fn transient(&self) -> bool {
        !matches!(self, CallError::Api { status, .. } if *status < 500 && *status != 429)
    }

    /// Cloudflare's error code, when Cloudflare answered with one.
    pub fn code(&self) -> Option<u64> {
        match self {
            CallError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The client-side budget.
#[derive(Debug)]
pub struct Budget {
    /// Minimum time between two requests.
    pace: Duration,
    /// At most `limit` requests within `window`.
    limit: usize,
    window: Duration,
    sent: VecDeque<Instant>,
    /// No request before this (a 429's Retry-After, an exhausted rate-limit header).
    paused_until: Option<Instant>,
}

impl Budget {
    /// At most `per_second` requests a second and `limit` within any `window`; a pace
    /// below 0.01 a second and a limit below 1 are raised to those.
    pub fn new(per_second: f64, limit: usize, window: Duration) -> Budget {
        Budget {
            pace: Duration::from_secs_f64(1.0 / per_second.max(0.01)),
            limit: limit.max(1),
            window,
            sent: VecDeque::new(),
            paused_until: None,
        }
    }

    /// How long to wait before the next request may go (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        let mut until = now;
        if let Some(p) = self.paused_until {
            until = until.max(p);
        }
        if let Some(last) = self.sent.back() {
            until = until.max(*last + self.pace);
        }
        if self.sent.len() >= self.limit {
            until = until.max(self.sent[self.sent.len() - self.limit] + self.window);
        }
        until.saturating_duration_since(now)
    }

    /// Records a request sent at `now`.
    pub fn spend(&mut self, now: Instant) {
        self.sent.push_back(now);
    }

    /// No request before `until`; a pause already longer is kept.
    pub fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }
}

/// Requests sent, and the last error, for status.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Requests sent since start (retries included).
    pub requests: u64,
    /// The last failed call's error, in words (kept when later calls succeed).
    pub last_error: Option<String>,
}

/// A client of Cloudflare's API v4: one credential, one budget every request waits for,
/// and counters for status.
pub struct Api {
    base: String,
    auth: Auth,
    agent: ureq::Agent,
    /// The client-side budget every request of this client waits for.
    pub budget: Budget,
    /// Requests sent and the last error, for status.
    pub counters: Counters,
    /// The longest a call waits for a 429 to pass before giving up (the caller retries).
    max_wait: Duration,
}

/// The lockout Cloudflare imposes when the limit is exceeded, when a 429 does not say.
const LOCKOUT: Duration = Duration::from_secs(300);

/// How long until a `Retry-After` or `X-RateLimit-Reset` value: delta-seconds, or an HTTP
/// date (`Wed, 21 Oct 2026 07:28:00 GMT`); `None` when it is neither.
fn until_value(v: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    Some(Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO))
}

/// The wait a `Retry-After` asks for (the lockout when it cannot be read).
fn retry_after(v: &str) -> Duration {
    until_value(v, jiff::Timestamp::now()).unwrap_or(LOCKOUT)
}

/// From `Ratelimit: "default";r=0;t=30`: the seconds to wait when nothing remains.
fn exhausted(header: &str) -> Option<Duration> {
    let mut r = None;
    let mut t = None;
    for part in header.split(';') {
        if let Some(v) = part.trim().strip_prefix("r=") {
            r = v.parse::<u64>().ok();
        }
        if let Some(v) = part.trim().strip_prefix("t=") {
            t = v.parse::<u64>().ok();
        }
    }
    (r == Some(0)).then(|| Duration::from_secs(t.unwrap_or(60)))
}

impl Api {
    /// A client of the API at `base` (a trailing `/` is dropped), with a 30 s timeout per
    /// request.
    pub fn new(base: &str, auth: Auth, budget: Budget) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            base: base.trim_end_matches('/').to_string(),
            auth,
            agent,
            budget,
            counters: Counters::default(),
            max_wait: Duration::from_secs(10),
        }
    }

    /// One request, paced by the budget: the whole envelope, or the error.
    fn once(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CallError> {
        let wait = self.budget.wait(Instant::now());
        if wait > self.max_wait {
            return Err(CallError::Limited(wait));
        }
        std::thread::sleep(wait);
        self.budget.spend(Instant::now());
        self.counters.requests += 1;
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("moat/", env!("CARGO_PKG_VERSION")));
        req = match &self.auth {
            Auth::Token(t) => req.header("Authorization", format!("Bearer {t}")),
            Auth::GlobalKey { email, key } => {
                req.header("X-Auth-Email", email).header("X-Auth-Key", key)
            }
        };
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let req = req
            .body(bytes)
            .map_err(|e| CallError::Unavailable(format!("cannot build the request: {e}")))?;
        let resp = self
            .agent
            .run(req)
            .map_err(|e| CallError::Unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let now = Instant::now();
        if let Some(d) = header("ratelimit").as_deref().and_then(exhausted) {
            self.budget.pause(now + d);
        }
        if header("x-ratelimit-remaining").as_deref() == Some("0") {
            let wait = header("x-ratelimit-reset")
                .and_then(|v| until_value(&v, jiff::Timestamp::now()))
                .unwrap_or(Duration::from_secs(60));
            self.budget.pause(now + wait.min(LOCKOUT));
        }
        if status == 429 {
            let d = header("retry-after")
                .as_deref()
                .map_or(LOCKOUT, retry_after);
            self.budget.pause(now + d);
            return Err(CallError::Limited(d));
        }
        let text = resp
            .into_body()
            .read_to_string()
            .map_err(|e| CallError::Unavailable(format!("reading the answer: {e}")))?;
        if status >= 500 {
            return Err(CallError::Unavailable(format!("HTTP {status}")));
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| {
            CallError::Unavailable(format!("HTTP {status} with a body that is not JSON"))
        })?;
        if v["success"] == Value::Bool(true) && status < 400 {
            return Ok(v);
        }
        let e = &v["errors"][0];
        let mut message = e["message"].as_str().unwrap_or("no message").to_string();
        if let Some(inner) = e["error_chain"][0]["message"].as_str() {
            message = format!("{message}: {inner}");
        }
        Err(CallError::Api {
            status,
            code: e["code"].as_u64().unwrap_or(0),
            message,
        })
    }

    /// A request with retries of 5xx answers and network errors (3 more tries, 0.5 s, 1 s, 2 s
    /// apart, each ±50 %), and one wait for a short 429.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut delay = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            let r = self.once(method, path, body);
            match &r {
                Err(CallError::Unavailable(_)) if tries < 3 => {
                    tries += 1;
                    std::thread::sleep(jitter(delay));
                    delay *= 2;
                }
                Err(CallError::Limited(d)) if *d <= self.max_wait && tries < 3 => {
                    tries += 1;
                    std::thread::sleep(*d);
                }
                _ => {
                    if let Err(e) = &r {
                        self.counters.last_error = Some(e.to_string());
                    }
                    return r;
                }
            }
        }
    }

    /// `call`, returning the envelope's `result`.
    pub fn result(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        self.call(method, path, body)
            .map(|mut v| v["result"].take())
    }
}

/// `d` scaled by a factor between 0.5 and 1.5, from the clock's nanoseconds (no RNG crate
/// for one number; spreading retries is all it is for).
fn jitter(d: Duration) -> Duration {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(0.5 + f64::from(n % 1000) / 1000.0)
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_paces_and_caps_the_window() {
        let mut b = Budget::new(4.0, 3, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(b.wait(t0), Duration::ZERO);
        b.spend(t0);
        assert_eq!(b.wait(t0), Duration::from_millis(250));
        b.spend(t0 + Duration::from_millis(250));
        b.spend(t0 + Duration::from_millis(500));
        // Three in the window: the next waits for the first to leave it.
        assert_eq!(b.wait(t0 + Duration::from_secs(1)), Duration::from_secs(9));
        assert_eq!(b.wait(t0 + Duration::from_secs(10)), Duration::ZERO);
        b.pause(t0 + Duration::from_secs(20));
        assert_eq!(b.wait(t0 + Duration::from_secs(11)), Duration::from_secs(9));
    }

    #[test]
    fn rate_limit_headers_are_read() {
        assert_eq!(
            exhausted("\"default\";r=0;t=30"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(exhausted("\"default\";r=5;t=30"), None);
        assert_eq!(retry_after("120"), Duration::from_secs(120));
        let now: jiff::Timestamp = "2026-10-21T07:27:30Z".parse().unwrap();
        assert_eq!(
            until_value("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(until_value("soon", now), None);
        assert_eq!(retry_after("soon"), LOCKOUT);
        assert_eq!(encode("moat portainer"), "moat%20portainer");
        assert!(!CallError::Api {
            status: 400,
            code: 10009,
            message: String::new()
        }
        .transient());
        assert!(CallError::Limited(Duration::ZERO).transient());
    }
}

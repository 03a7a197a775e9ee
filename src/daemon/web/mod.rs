//! The web dashboard (`[daemon] web`): one page, its script and its style embedded in the
//! binary, a JSON API over the engine's answers, and live updates by server-sent events.
//!
//! - `GET /` the page; `GET /app.js`, `GET /app.css` its parts. No external assets.
//! - `GET /api/state` the engine's [`Dashboard`](super::protocol::Dashboard) and whether
//!   this browser may act; `GET /api/ban?target=` one ban in full (its earlier bans).
//! - `GET /api/events` server-sent events: `change` when a ban starts or ends, `tick` every
//!   few seconds (health moves without bans).
//! - `POST /api/login` (the token, for a session cookie), `POST /api/logout`,
//!   `POST /api/ban`, `POST /api/unban`: the last two need a session, its CSRF token in the
//!   `X-Moat-CSRF` header and an `Origin` naming this server ([`auth`]).
//!
//! On loopback the page can be read without a session (actions need one); on any other
//! address every request but the page and the login needs a session. Every answer carries a
//! Content-Security-Policy that allows only this server's script: the page renders data with
//! DOM text nodes, and the policy is a second wall should that ever slip.

// A refusal is the handler's answer, returned at once: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod auth;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::EngineMsg;
use super::protocol::{Reply, Request};
use auth::{Auth, Refused};

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");
/// Event streams open at once; more are refused (each holds a task).
const MAX_STREAMS: usize = 32;
/// How often the page hears a `tick`.
const TICK: Duration = Duration::from_secs(5);
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the handlers share.
pub struct Web {
    engine: mpsc::Sender<EngineMsg>,
    changes: watch::Receiver<u64>,
    auth: Auth,
    /// Whether the server listens on loopback only (reading needs no session then).
    loopback: bool,
    streams: AtomicUsize,
    /// The last dashboard answer, with when it was asked and the change count then: many
    /// open pages refreshing on the same event or tick cost the engine one request.
    cache: tokio::sync::Mutex<Option<(Instant, u64, serde_json::Value)>>,
}

/// How long a dashboard answer is reused when nothing changed.
const CACHE_FOR: Duration = Duration::from_secs(1);

impl Web {
    /// A dashboard over `engine`, told of changes by `changes`, opened with the token in
    /// `auth`'s file.
    pub fn new(
        engine: mpsc::Sender<EngineMsg>,
        changes: watch::Receiver<u64>,
        auth: Auth,
        loopback: bool,
    ) -> Web {
        Web {
            engine,
            changes,
            auth,
            loopback,
            streams: AtomicUsize::new(0),
            cache: tokio::sync::Mutex::new(None),
        }
    }
}

type Shared = Arc<Web>;

/// The routes.
pub fn router(web: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/state", get(state))
        .route("/api/ban", get(show).post(ban))
        .route("/api/unban", post(unban))
        .route("/api/events", get(events))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(web)
}

/// Serves the dashboard on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, web: Web) {
    if let Err(e) = axum::serve(listener, router(Arc::new(web))).await {
        tracing::error!("web dashboard stopped: {e}");
    }
}

async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

fn header_str(h: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn session_cookie(h: &HeaderMap) -> Option<&str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| auth::cookie(c, auth::COOKIE))
}

impl Web {
    /// The CSRF token of this request's session, if it has one.
    fn session(&self, h: &HeaderMap) -> Option<String> {
        self.auth.session(session_cookie(h))
    }

    /// Whether this request may read the state.
    fn may_read(&self, h: &HeaderMap) -> Result<(), Response> {
        if self.session(h).is_some() {
            return Ok(());
        }
        if !self.loopback {
            return Err(plain(
                StatusCode::UNAUTHORIZED,
                "log in with the token from `moat web token`",
            ));
        }
        if !auth::host_is_literal(header_str(h, header::HOST)) {
            return Err(plain(
                StatusCode::FORBIDDEN,
                "without a session the dashboard answers only to an address or localhost",
            ));
        }
        Ok(())
    }

    /// Whether this request may change something.
    fn may_change(&self, h: &HeaderMap) -> Result<(), Response> {
        let expected = self.session(h);
        auth::check_change(
            expected.as_deref(),
            header_str(h, auth::CSRF_HEADER),
            header_str(h, header::ORIGIN),
            header_str(h, header::HOST),
        )
        .map_err(|e| {
            let status = match e {
                Refused::NoSession => StatusCode::UNAUTHORIZED,
                Refused::Csrf | Refused::Origin => StatusCode::FORBIDDEN,
            };
            tracing::warn!("dashboard: a change was refused: {e}");
            plain(status, e.to_string())
        })
    }

    async fn ask(&self, req: Request) -> Result<serde_json::Value, Response> {
        let (tx, rx) = oneshot::channel();
        let gone = || plain(StatusCode::SERVICE_UNAVAILABLE, "moat is shutting down");
        self.engine
            .send(EngineMsg::Control(req, tx))
            .await
            .map_err(|_| gone())?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Reply::Ok { result, .. })) => Ok(result),
            Ok(Ok(Reply::Err { error, .. })) => Err(plain(StatusCode::BAD_REQUEST, error)),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the engine did not answer",
            )),
        }
    }
}

impl Web {
    /// The engine's dashboard, or the last one when it is under a second old and no ban
    /// started or ended since.
    async fn dashboard(&self) -> Result<serde_json::Value, Response> {
        let mut cache = self.cache.lock().await;
        let version = *self.changes.borrow();
        if let Some((at, v, value)) = cache.as_ref() {
            if *v == version && at.elapsed() < CACHE_FOR {
                return Ok(value.clone());
            }
        }
        let value = self.ask(Request::Dashboard).await?;
        *cache = Some((Instant::now(), version, value.clone()));
        Ok(value)
    }
}

/// The page, with the session's CSRF token in a meta tag when there is a session.
async fn page(State(web): State<Shared>, h: HeaderMap) -> Response {
    let csrf = web.session(&h).unwrap_or_default();
    // The token is hex (ours), never request text.
    let body = PAGE.replace("{{CSRF}}", &csrf).replace(
        "{{MODE}}",
        match (csrf.is_empty(), web.loopback) {
            (false, _) => "act",
            (true, true) => "read",
            (true, false) => "login",
        },
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn state(State(web): State<Shared>, h: HeaderMap) -> Response {
    if let Err(r) = web.may_read(&h) {
        return r;
    }
    match web.dashboard().await {
        Ok(mut v) => {
            v["can_act"] = serde_json::Value::Bool(web.session(&h).is_some());
            Json(v).into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct TargetQuery {
    target: String,
    jail: Option<String>,
}

async fn show(State(web): State<Shared>, h: HeaderMap, Query(q): Query<TargetQuery>) -> Response {
    if let Err(r) = web.may_read(&h) {
        return r;
    }
    match web
        .ask(Request::Show {
            target: q.target,
            jail: q.jail,
        })
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// A ban by hand from the page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanForm {
    target: String,
    /// "1h", "7d", "forever"; the default ban time when absent.
    duration: Option<String>,
    reason: Option<String>,
}

async fn ban(State(web): State<Shared>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = web.may_change(&h) {
        return r;
    }
    let form: BanForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
    };
    let reason = form
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "by hand on the dashboard".into());
    match web
        .ask(Request::Ban {
            target: form.target,
            jail: None,
            duration: form.duration.filter(|d| !d.trim().is_empty()),
            reason: Some(reason),
            force: false,
        })
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbanForm {
    target: String,
    jail: Option<String>,
}

async fn unban(State(web): State<Shared>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = web.may_change(&h) {
        return r;
    }
    let form: UnbanForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
    };
    match web
        .ask(Request::Unban {
            target: Some(form.target),
            all: false,
            jail: form.jail,
        })
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
}

async fn login(State(web): State<Shared>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    if !auth::same_origin(header_str(&h, header::ORIGIN), header_str(&h, header::HOST)) {
        return plain(StatusCode::FORBIDDEN, Refused::Origin.to_string());
    }
    let form: LoginForm = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
    };
    match web.auth.login(&form.token) {
        Ok((id, _)) => {
            tracing::info!("dashboard: a browser logged in");
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                auth::COOKIE,
                auth::SESSION_SECS
            );
            (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)], "").into_response()
        }
        Err(e) => {
            tracing::warn!("dashboard: a login was refused: {e}");
            // The same answer whatever went wrong: a guesser learns nothing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            plain(StatusCode::UNAUTHORIZED, "wrong token, or no token file")
        }
    }
}

async fn logout(State(web): State<Shared>, h: HeaderMap) -> Response {
    if let Err(r) = web.may_change(&h) {
        return r;
    }
    web.auth.logout(session_cookie(&h));
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    );
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)], "").into_response()
}

/// Counts an open event stream, and uncounts it when dropped.
struct StreamSlot(Shared);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(State(web): State<Shared>, h: HeaderMap) -> Response {
    if let Err(r) = web.may_read(&h) {
        return r;
    }
    if web.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        web.streams.fetch_sub(1, Ordering::SeqCst);
        return plain(StatusCode::SERVICE_UNAVAILABLE, "too many open dashboards");
    }
    let slot = StreamSlot(web.clone());
    let mut changes = web.changes.clone();
    changes.mark_unchanged();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let stream = futures_util::stream::unfold(
        (changes, tick, slot),
        |(mut changes, mut tick, slot)| async move {
            let event = tokio::select! {
                r = changes.changed() => {
                    r.ok()?;
                    // A burst of bans is one event.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let n = *changes.borrow_and_update();
                    Event::default().event("change").data(n.to_string())
                }
                _ = tick.tick() => Event::default().event("tick").data(""),
            };
            Some((Ok::<_, Infallible>(event), (changes, tick, slot)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

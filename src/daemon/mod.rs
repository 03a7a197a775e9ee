//! `moat run`: the daemon's wiring, one task per concern and channels between them.
//!
//! ```text
//!  sources task ──Lines──▶ ┌────────────┐ ──changes──▶ enforcer threads (log, exec, ...)
//!  control socket ─Control─▶│ engine     │
//!  ticker ────────Tick─────▶│ (thread:   │──▶ ledger (SQLite)
//!  reload (SIGHUP, socket) ─▶│ jails +    │
//!                           │ ledger)    │
//!                           └────────────┘
//! ```
//!
//! - [`sources`] follows files (inotify) and standard input;
//! - [`engine`] owns the jails and the ledger and decides;
//! - [`enforcers`] applies decisions, one thread per enforcer, with retries;
//! - [`control`] is the Unix socket the `moat` commands use; [`protocol`] its messages.
//!
//! Start-up: the ledger is opened (a damaged one moved aside), the engine re-applies the active
//! bans to every enforcer in one batch, the sources resume from their saved cursors, and
//! systemd is told READY. Shutdown happens in one place, [`run`]'s end: stop reading, let
//! the engine checkpoint, let the enforcers finish their queue, remove the socket.

pub mod control;
pub mod enforcers;
pub mod engine;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod sources;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::daemon::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use crate::config::Config;
use crate::ledger::SqliteLedger;
use crate::source::stream::Health;
use control::{Access, DaemonRequest};
use enforcers::Enforcers;
use engine::{Engine, EngineMsg};
use protocol::{EnforcerStatus, FileStatus, JailStatus, Reply, SourceStatus, Status};
use sources::Sources;

/// What a warning in `moat status` is about: a new warning of a kind can replace or clear
/// the old ones of that kind, whatever their words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The ledger could not be opened or was damaged at start (lasts until a restart).
    LedgerAtStart,
    /// The active bans could not be read at start.
    ActiveBans,
    /// A ledger write failed and is retried.
    LedgerWrite,
    /// A checkpoint failed and is retried.
    Checkpoint,
    /// The ledger's file was deleted or replaced while moat ran.
    LedgerGone,
    /// The port policy: its state cannot be read, or an apply failed.
    PortsError,
    /// The port policy was rolled back, or differs from the configuration.
    PortsNotice,
    /// A published port the policy blocks.
    PortsBlocked,
    /// The web dashboard could not be started.
    Web,
}

/// What the tasks share for `moat status`.
pub struct Shared {
    /// When the daemon started.
    pub started: Timestamp,
    /// The configuration files read, comma-separated, main file first.
    pub config: String,
    warnings: Mutex<Vec<(Warning, String)>>,
    /// Each file source and the files it names, updated by the followers.
    pub sources: Mutex<Vec<SourceStatus>>,
    /// Journald and container sources, updated by their readers as they go.
    pub streams: Arc<Mutex<std::collections::BTreeMap<String, Health>>>,
    /// Bumped by the engine whenever a ban starts or ends (the dashboard's live updates).
    pub changes: watch::Sender<u64>,
    /// Every published port of every container, judged against the port policy (refreshed
    /// every 30 s).
    pub ports: Mutex<Vec<serde_json::Value>>,
}

impl Shared {
    /// Adds a problem for `moat status` (the same text once; at most 20 kept).
    pub fn warn(&self, kind: Warning, text: String) {
        let mut ws = self.warnings.lock().unwrap();
        if !ws.iter().any(|(_, t)| *t == text) {
            if ws.len() == 20 {
                ws.remove(0);
            }
            ws.push((kind, text));
        }
    }

    /// Forgets the problems of a kind: they went away.
    pub fn clear(&self, kind: Warning) {
        self.warnings.lock().unwrap().retain(|(k, _)| *k != kind);
    }

    /// The [`Status`] reply from the engine's `jails` and `enforcers` and the ledger's location,
    /// with the warnings and the sources' state shared here.
    pub fn status(
        &self,
        jails: Vec<JailStatus>,
        enforcers: Vec<EnforcerStatus>,
        ledger: &str,
    ) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: self.started,
            config: self.config.clone(),
            ledger: ledger.to_string(),
            warnings: self
                .warnings
                .lock()
                .unwrap()
                .iter()
                .map(|(_, t)| t.clone())
                .collect(),
            enforcers,
            sources: {
                let streams = self.streams.lock().unwrap();
                let of_stream = |s: &SourceStatus| {
                    let h = streams.get(&s.source)?.lock().unwrap().clone();
                    Some(SourceStatus {
                        source: s.source.clone(),
                        files: h
                            .parts
                            .into_iter()
                            .map(|p| FileStatus {
                                path: p.name,
                                lines: p.lines,
                                overlong: p.overlong,
                                ..FileStatus::default()
                            })
                            .collect(),
                        error: h.error,
                    })
                };
                self.sources
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| of_stream(s).unwrap_or_else(|| s.clone()))
                    .collect()
            },
            jails,
            cluster: None,
        }
    }
}

/// The state directory and socket a configuration names.
pub fn paths(config: &Config) -> (PathBuf, PathBuf) {
    (
        config
            .daemon
            .state_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
        config
            .daemon
            .socket
            .clone()
            .unwrap_or_else(|| DEFAULT_SOCKET.into()),
    )
}

fn sources_of(config: &Config) -> Vec<String> {
    let mut all: Vec<String> = config
        .jails
        .iter()
        .flat_map(|j| j.sources.iter().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// In a fleet with the Cloudflare enforcer: the gate that the lease sets and the enforcer
/// reads, so that one node at a time writes to Cloudflare.
fn cloudflare_gate(config: &Config) -> Option<crate::enforce::cloudflare::lease::Gate> {
    let uses = config
        .enforce
        .names()
        .contains(&crate::enforce::registry::EnforcerName::Cloudflare);
    (config.cluster.is_some() && uses).then(crate::enforce::cloudflare::lease::Gate::new)
}

fn build_enforcers(
    config: &Config,
    metrics: &metrics::Metrics,
    gate: Option<&crate::enforce::cloudflare::lease::Gate>,
) -> anyhow::Result<Enforcers> {
    use crate::enforce::registry::EnforcerName;
    let mut e = Enforcers::with_latency(metrics.ban_latency.clone());
    for name in config.enforce.names() {
        let built = match (name, gate, &config.enforce.cloudflare) {
            (EnforcerName::Cloudflare, Some(gate), Some(s)) => {
                crate::enforce::cloudflare::build_with_gate(s, gate.clone())
            }
            _ => config.enforce.build(name),
        };
        e.add(built.map_err(|err| anyhow::anyhow!("{err}"))?);
    }
    let behind = config.behind_cloudflare();
    e.route_behind_cloudflare(&behind);
    if !behind.is_empty() && names_kernel(config) {
        let mut jails: Vec<&String> = behind.iter().collect();
        jails.sort();
        tracing::warn!(
            ?jails,
            "these jails are behind Cloudflare: their bans go to Cloudflare only, not to the \
             kernel enforcers, which see Cloudflare's addresses rather than the clients' (the \
             kernel enforcers keep serving the other jails)"
        );
    }
    Ok(e)
}

/// Whether a kernel (host) enforcer is configured.
fn names_kernel(config: &Config) -> bool {
    config
        .enforce
        .names()
        .into_iter()
        .any(|n| crate::enforce::registry::EnforceSettings::kind(n) == crate::enforce::Kind::Host)
}

fn notify(state: &[sd_notify::NotifyState]) {
    let _ = sd_notify::notify(state);
}

/// Runs the daemon with the configuration at `config_path` until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("moat")
        .build()?;
    runtime.block_on(serve(config_path, config))
}

async fn serve(config_path: &Path, config: Config) -> anyhow::Result<()> {
    let (state_dir, socket) = paths(&config);
    let access = Access {
        group: match &config.daemon.socket_group {
            Some(name) => Some(
                nix::unistd::Group::from_name(name)?
                    .ok_or_else(|| anyhow::anyhow!("socket_group {name:?} does not exist"))?
                    .gid,
            ),
            None => None,
        },
    };
    // A state directory that cannot hold the ledger (read-only, full, wrong owner) must not
    // leave the host unprotected: run with the ledger in memory, and say so loudly.
    let (ledger, moved, unusable) = match SqliteLedger::open(&state_dir) {
        Ok((l, moved)) => (l, moved, None),
        Err(e) => (SqliteLedger::open_in_memory()?, None, Some(e)),
    };
    let shared = Arc::new(Shared {
        started: Timestamp::now(),
        config: config
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        warnings: Mutex::default(),
        sources: Mutex::new(Vec::new()),
        streams: Arc::default(),
        changes: watch::channel(0).0,
        ports: Mutex::default(),
    });
    if let Some(e) = unusable {
        let msg = format!(
            "the ledger cannot be opened ({e}); running with it in memory: bans work but are \
             forgotten at exit, and cursors are not saved. Fix the state directory and restart"
        );
        tracing::error!("{msg}");
        shared.warn(Warning::LedgerAtStart, msg);
    }
    if let Some(aside) = moved {
        let msg = format!(
            "the ledger {} was damaged; it was moved to {} and a new one started (bans and \
             cursors in it are not in force; inspect it with sqlite3)",
            ledger.path().display(),
            aside.display()
        );
        tracing::error!("{msg}");
        shared.warn(Warning::LedgerAtStart, msg);
    }
    let listener = control::bind(&socket, &access).await?;

    // Made before the metrics, which read it at each scrape.
    let cluster_status = config
        .cluster
        .as_ref()
        .map(|_| crate::cluster::status::SharedStatus::default());
    let mut metrics = metrics::Metrics::new();
    if let Some(status) = &cluster_status {
        metrics.join_fleet(status.clone());
    }
    let metrics = Arc::new(metrics);
    let cluster_lag = metrics.cluster_lag.clone();
    let gate = cloudflare_gate(&config);
    let enforcers = build_enforcers(&config, &metrics, gate.as_ref())?;
    let enforcer_status = enforcers.status_handles();
    tracing::info!(enforcers = ?enforcers.names(), jails = config.jails.len(), ledger = %ledger.path().display(), "starting");
    let metrics_task = match config.daemon.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr.0)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {}: {e}", addr.0))?;
            if addr.is_loopback() {
                tracing::info!(address = %addr.0, "serving metrics");
            } else {
                tracing::warn!(
                    address = %addr.0,
                    "serving metrics on a non-loopback address, as configured: anyone who can \
                     reach it sees the jails, the sources and the enforcers' counters; limit it \
                     with the port policy or a firewall"
                );
            }
            let read = Arc::new(move || {
                enforcer_status
                    .iter()
                    .map(|s| s.lock().unwrap().clone())
                    .collect::<Vec<_>>()
            });
            Some(tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                shared.clone(),
                read,
            )))
        }
        None => None,
    };
    ports::start(&config, &state_dir, &shared);
    let ports_task = tokio::spawn(ports::keep(
        state_dir.clone(),
        shared.clone(),
        metrics.clone(),
    ));
    let mut engine = Engine::start(
        &config,
        Box::new(ledger.clone()),
        Box::new(ledger),
        enforcers,
        shared.clone(),
        metrics,
    );
    let cursors = engine.saved_cursors();
    let fleet = match (&config.cluster, cluster_status) {
        (Some(settings), Some(status)) => Some(join_fleet(
            &mut engine,
            settings,
            &config,
            gate,
            status,
            cluster_lag,
        )?),
        _ => None,
    };
    // Small: a block is up to 256 KiB, and a source that reads faster than the engine decides
    // should wait rather than queue megabytes (ingest is as fast with 16 as with 256).
    let (engine_tx, engine_rx) = mpsc::channel::<EngineMsg>(16);
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || engine.run(engine_rx))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (reload_sources_tx, reload_sources_rx) = mpsc::channel(4);
    let sources = Sources::new(
        sources_of(&config),
        cursors,
        config.daemon.follow_from.unwrap_or_default(),
        engine_tx.clone(),
        shared.clone(),
    )?;
    let sources_task = tokio::spawn(sources.run(reload_sources_rx, shutdown_rx.clone()));
    let web_task = match config.daemon.web {
        Some(addr) => start_web(&config, &state_dir, addr, &engine_tx, &shared).await?,
        None => None,
    };
    let cluster_task = fleet.map(|(task, mut inbound, lease)| {
        let engine = engine_tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(m) = inbound.recv().await {
                if engine.send(EngineMsg::Fleet(m)).await.is_err() {
                    break;
                }
            }
        });
        let lease = lease.map(|l| tokio::spawn(l.run(shutdown_rx.clone())));
        (tokio::spawn(task.run(shutdown_rx.clone())), forward, lease)
    });

    let (daemon_tx, mut daemon_rx) = mpsc::channel::<DaemonRequest>(4);
    let control_task = tokio::spawn(control::serve(
        listener,
        access,
        engine_tx.clone(),
        daemon_tx,
    ));

    let ticker = {
        let tx = engine_tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if tx.send(EngineMsg::Tick).await.is_err() {
                    break;
                }
            }
        })
    };
    let watchdog = spawn_watchdog(engine_tx.clone());
    let ranges_task = config
        .enforce
        .cloudflare
        .as_ref()
        .map(|t| tokio::spawn(refresh_cloudflare_ranges(t.api.clone(), engine_tx.clone())));

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("following logs"),
    ]);
    tracing::info!(socket = %socket.display(), "ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break }
            _ = hup.recv() => {
                let r = reload(config_path, &engine_tx, &reload_sources_tx).await;
                log_reload(&r);
            }
            Some(req) = daemon_rx.recv() => match req {
                DaemonRequest::Reload(reply) => {
                    let r = reload(config_path, &engine_tx, &reload_sources_tx).await;
                    log_reload(&r);
                    let _ = reply.send(match r {
                        Ok(s) => Reply::ok(s),
                        Err(e) => Reply::err(e),
                    });
                }
            },
        }
    }

    notify(&[sd_notify::NotifyState::Stopping]);
    control_task.abort();
    let _ = shutdown_tx.send(true);
    let _ = sources_task.await;
    ticker.abort();
    ports_task.abort();
    if let Some(m) = metrics_task {
        m.abort();
    }
    if let Some(w) = web_task {
        w.abort();
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(r) = ranges_task {
        r.abort();
    }
    if let Some((task, forward, lease)) = cluster_task {
        let _ = task.await;
        forward.abort();
        // Released before the enforcers stop: nothing is written after it.
        if let Some(lease) = lease {
            let _ = lease.await;
        }
    }
    let _ = engine_tx.send(EngineMsg::Stop).await;
    drop(engine_tx);
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}

/// Starts the web dashboard on `addr`. Off a loopback address it needs a usable token file:
/// without one it is not started (the daemon runs on, and says why).
async fn start_web(
    config: &Config,
    state_dir: &Path,
    addr: crate::config::daemon::ListenAddr,
    engine: &mpsc::Sender<EngineMsg>,
    shared: &Arc<Shared>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let token_file = config
        .daemon
        .web_token_file
        .clone()
        .unwrap_or_else(|| state_dir.join(crate::config::daemon::WEB_TOKEN_FILE));
    let token = web::auth::read_token(&token_file);
    if addr.is_loopback() {
        match &token {
            Ok(_) => {
                tracing::info!(address = %addr.0, "serving the web dashboard (actions with the token)")
            }
            Err(e) => {
                tracing::info!(address = %addr.0, "serving the web dashboard, read-only: {e}")
            }
        }
    } else {
        if let Err(e) = &token {
            let msg = format!(
                "the web dashboard is not served on {}: a non-loopback address needs the \
                 token ({e})",
                addr.0
            );
            tracing::error!("{msg}");
            shared.warn(Warning::Web, msg);
            return Ok(None);
        }
        tracing::warn!(
            address = %addr.0,
            "serving the web dashboard on a non-loopback address: every request needs the \
             token from `moat web token`; put TLS in front of it (a reverse proxy) if it \
             crosses a network you do not trust"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr.0)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the web dashboard on {}: {e}", addr.0))?;
    let dashboard = web::Web::new(
        engine.clone(),
        shared.changes.subscribe(),
        web::auth::Auth::new(token_file),
        addr.is_loopback(),
    );
    Ok(Some(tokio::spawn(web::serve(listener, dashboard))))
}

/// Joins the fleet `[cluster]` names: the engine hands its decisions to the cluster task,
/// which hands back the other nodes' (through the returned receiver). With the Cloudflare
/// enforcer's `gate`, also the task that holds the Cloudflare lease.
fn join_fleet(
    engine: &mut Engine,
    settings: &crate::cluster::ClusterSettings,
    config: &Config,
    gate: Option<crate::enforce::cloudflare::lease::Gate>,
    status: crate::cluster::status::SharedStatus,
    lag: prometheus_client::metrics::histogram::Histogram,
) -> anyhow::Result<(
    crate::cluster::run::ClusterTask,
    mpsc::Receiver<crate::cluster::Inbound>,
    Option<crate::cluster::lease::LeaseTask>,
)> {
    let password = settings
        .password()
        .map_err(|e| anyhow::anyhow!("[cluster] password_file: {e}"))?;
    let node = settings.node_name();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(1024);
    engine.join_fleet(engine::fleet::Fleet {
        node: node.clone(),
        settings: settings.clone(),
        out: out_tx,
        status: status.clone(),
        refreshed: None,
    });
    tracing::info!(%node, redis = %settings.redis, "joining the fleet");
    let lease = gate
        .zip(config.enforce.cloudflare.as_ref())
        .map(|(gate, cf)| crate::cluster::lease::LeaseTask {
            link: crate::cluster::link::Link::new(settings.clone(), password.clone()),
            node: node.clone(),
            key: crate::enforce::cloudflare::lease::lease_key(cf),
            gate,
            status: status.clone(),
        });
    let task = crate::cluster::run::ClusterTask {
        link: crate::cluster::link::Link::new(settings.clone(), password),
        settings: settings.clone(),
        node,
        cursor: engine.fleet_cursor(),
        inbound: in_tx,
        outbound: out_rx,
        status,
        lag,
        epoch: None,
        second_look: None,
    };
    Ok((task, in_rx, lease))
}

fn log_reload(r: &Result<String, String>) {
    match r {
        Ok(s) => tracing::info!("configuration reloaded: {s}"),
        Err(e) => tracing::error!("configuration not reloaded, the old one stays in force: {e}"),
    }
}

/// Validates the configuration file again and, when it is good, hands it to the engine and
/// the sources; a bad one leaves everything as it was.
async fn reload(
    path: &Path,
    engine: &mpsc::Sender<EngineMsg>,
    sources: &mpsc::Sender<Vec<String>>,
) -> Result<String, String> {
    notify(&[sd_notify::NotifyState::Reloading]);
    let result = async {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let patterns = sources_of(&config);
        let (tx, rx) = oneshot::channel();
        engine
            .send(EngineMsg::Reload(Box::new(config), tx))
            .await
            .map_err(|_| "moat is shutting down".to_string())?;
        let summary = rx
            .await
            .map_err(|_| "moat is shutting down".to_string())??;
        let _ = sources.send(patterns).await;
        Ok(summary)
    }
    .await;
    notify(&[sd_notify::NotifyState::Ready]);
    result
}

/// Fetches Cloudflare's published proxy ranges at start and daily, so that ranges added after
/// this build are never banned either (the built-in ones always stay).
async fn refresh_cloudflare_ranges(api: String, engine: mpsc::Sender<EngineMsg>) {
    loop {
        let base = api.clone();
        match tokio::task::spawn_blocking(move || crate::enforce::cloudflare::ranges::fetch(&base))
            .await
        {
            Ok(Ok(ranges)) => {
                tracing::info!(
                    ranges = ranges.len(),
                    "Cloudflare's published ranges are never banned"
                );
                let proxies = crate::detect::Proxies::with_published(ranges);
                if engine.send(EngineMsg::Proxies(proxies)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(86_400)).await;
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot refresh Cloudflare's ranges (the built-in ones hold): {e}");
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
            Err(_) => return,
        }
    }
}

/// Pings systemd's watchdog while the engine answers, when the unit asks for it.
fn spawn_watchdog(engine: mpsc::Sender<EngineMsg>) -> Option<tokio::task::JoinHandle<()>> {
    let every = sd_notify::watchdog_enabled().filter(|d| !d.is_zero())? / 2;
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let (tx, rx) = oneshot::channel();
            if engine
                .send(EngineMsg::Control(protocol::Request::Ping, tx))
                .await
                .is_err()
            {
                break;
            }
            if rx.await.is_ok() {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }))
}

//! The engine: the one thread that owns the jails and the ledger.
//!
//! Sources send it blocks of lines; it runs the filters and the jails, records each ban in the
//! ledger, and hands the change to the enforcers. Control requests (status, ban, unban) and
//! reloads arrive on the same channel, so they see a consistent state without locks. Every
//! [`Tick`](EngineMsg::Tick) it ends expired bans, retries ledger writes that failed, and
//! checkpoints the windows with the sources' cursors.
//!
//! It is a plain thread, not an async task: everything it does is CPU work or a short SQLite
//! write, and it keeps the detection path free of an executor.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::enforcers::Enforcers;
use super::metrics::{JailLabel, Metrics, SourceLabel};
use super::protocol::{ActiveBan, Bans, JailStatus, Reply, Request, Status};
use super::Shared;
use crate::config::value::parse_duration;
use crate::config::{Config, JailConfig};
use crate::detect::{Filter, Prefilter, TimeContext, Verdict};
use crate::enforce::{parse_target, safety, BanOrder, Change, Key, Ports, Target};
use crate::jail::{BanDecision, ClientKey, Jail, Outcome};
use crate::ledger::{Cursor, JailCheckpoint, Ledger, NewBan, Origin, SAMPLE_LINES};

/// How far in the future a line's time may be before it is taken as "now".
pub const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_secs(60);
/// Matched lines kept per jail for the samples stored with a ban.
const SAMPLE_RING: usize = 256;
/// The jail name of bans made by hand without `--jail`.
pub const MANUAL_JAIL: &str = "manual";

pub enum EngineMsg {
    /// Complete lines from `source` (as configured), read from `file`; `cursor` is where the
    /// file is read up to after them.
    Lines {
        source: String,
        file: String,
        block: Vec<u8>,
        cursor: Option<Cursor>,
        /// When the source read the block.
        read_at: Instant,
    },
    Tick,
    Control(Request, oneshot::Sender<Reply>),
    /// A new configuration, already validated; the reply says what changed.
    Reload(Box<Config>, oneshot::Sender<Result<String, String>>),
    /// Final checkpoint, then the thread ends.
    Stop,
}

#[derive(Default)]
struct LiveStats {
    failed_total: u64,
    refused: u64,
    stale: u64,
    unparsed_time: u64,
}

struct JailRuntime {
    matches: Counter,
    bans: Counter,
    config: JailConfig,
    filter: Filter,
    window: Jail,
    ctx: TimeContext,
    stats: LiveStats,
    /// Recent matched lines with their key, for the samples stored with a ban.
    samples: VecDeque<(ClientKey, Box<[u8]>)>,
}

impl JailRuntime {
    fn new(config: JailConfig, ledger: Option<&Ledger>, metrics: &Metrics) -> JailRuntime {
        let filter = Filter::compile(&config.filter).expect("validated with the config");
        let mut stats = LiveStats::default();
        let mut window = None;
        if let Some(Ok(Some(cp))) = ledger.map(|l| l.jail_checkpoint(&config.name)) {
            stats.failed_total = cp.failed_total;
            window = Jail::restore(config.params.clone(), &cp.windows);
        }
        let label = JailLabel {
            jail: config.name.clone(),
        };
        JailRuntime {
            matches: metrics.matches.get_or_create(&label).clone(),
            bans: metrics.bans.get_or_create(&label).clone(),
            ctx: TimeContext {
                zone: config.time_zone(),
                reference: Timestamp::now(),
            },
            window: window.unwrap_or_else(|| Jail::new(config.params.clone())),
            filter,
            config,
            stats,
            samples: VecDeque::new(),
        }
    }

    fn checkpoint(&self) -> JailCheckpoint {
        JailCheckpoint {
            windows: self.window.snapshot(),
            failed_total: self.stats.failed_total,
        }
    }

    fn sample(&mut self, key: ClientKey, line: &[u8]) {
        if self.samples.len() == SAMPLE_RING {
            self.samples.pop_front();
        }
        let line = &line[..line.len().min(crate::ledger::SAMPLE_LINE_MAX)];
        self.samples.push_back((key, line.into()));
    }

    fn samples_of(&self, key: &ClientKey) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = self
            .samples
            .iter()
            .rev()
            .filter(|(k, _)| k == key)
            .take(SAMPLE_LINES)
            .map(|(_, l)| l.to_vec())
            .collect();
        lines.reverse();
        lines
    }
}

/// The jails reading one configured source, and the prefilter over their filters.
struct Route {
    lines: Counter,
    jails: Vec<usize>,
    prefilter: Prefilter,
}

/// A ban in force, as the engine tracks it.
#[derive(Clone, Debug)]
struct Active {
    /// The ledger's id; `None` while the write is pending.
    id: Option<i64>,
    ban: NewBan,
    /// The jail's `ports` when the ban was placed; `None`: every port.
    ports: Option<Ports>,
}

impl Active {
    fn key(&self) -> Key {
        Key {
            target: self.ban.target,
            ports: self.ports.clone(),
        }
    }

    fn order(&self) -> BanOrder {
        order(&self.ban, self.ports.clone())
    }
}

pub struct Engine {
    jails: Vec<JailRuntime>,
    routes: HashMap<String, Route>,
    ledger: Ledger,
    enforcers: Enforcers,
    shared: Arc<Shared>,
    /// Active bans by (jail, target).
    active: HashMap<(String, IpNet), Active>,
    /// Bans whose ledger write failed, retried each tick.
    unsaved: Vec<(NewBan, Vec<Vec<u8>>)>,
    cursors: HashMap<String, Cursor>,
    dirty: bool,
    last_checkpoint: Instant,
    checkpoint_every: std::time::Duration,
    default_bantime: SignedDuration,
    candidates: Vec<usize>,
    metrics: Arc<Metrics>,
    /// The host's own addresses, never banned; refreshed every few ticks.
    own: Vec<IpAddr>,
    ticks: u64,
    /// `[enforce] lift_on_stop`: the ledger keeps the bans, the enforcers drop them at stop.
    lift_on_stop: bool,
}

impl Engine {
    /// Builds the engine from the configuration and the ledger's state, and brings every
    /// enforcer to the ledger's active bans in one batch.
    pub fn start(
        config: &Config,
        ledger: Ledger,
        enforcers: Enforcers,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let jails: Vec<JailRuntime> = config
            .jails
            .iter()
            .map(|j| JailRuntime::new(j.clone(), Some(&ledger), &metrics))
            .collect();
        let cursors = ledger.cursors().unwrap_or_else(|e| {
            tracing::error!("cannot read the saved cursors, sources start afresh: {e}");
            HashMap::new()
        });
        let mut engine = Engine {
            routes: HashMap::new(),
            jails,
            ledger,
            enforcers,
            shared,
            active: HashMap::new(),
            unsaved: Vec::new(),
            cursors,
            dirty: false,
            last_checkpoint: Instant::now(),
            checkpoint_every: config
                .daemon
                .checkpoint
                .map_or(std::time::Duration::from_secs(2), |d| d.0.unsigned_abs()),
            default_bantime: config
                .defaults
                .bantime
                .map_or(SignedDuration::from_hours(1), |d| d.0),
            candidates: Vec::new(),
            metrics,
            own: safety::own_addresses(),
            ticks: 0,
            lift_on_stop: config.enforce.lift_on_stop.unwrap_or(false),
        };
        engine.build_routes();
        engine.load_active();
        engine
    }

    /// The cursors saved at the last checkpoint, for the sources to resume from.
    pub fn saved_cursors(&self) -> HashMap<String, Cursor> {
        self.cursors.clone()
    }

    fn build_routes(&mut self) {
        let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, j) in self.jails.iter().enumerate() {
            for s in &j.config.sources {
                by_source.entry(s.clone()).or_default().push(i);
            }
        }
        self.routes = by_source
            .into_iter()
            .map(|(source, jails)| {
                let filters: Vec<&Filter> = jails.iter().map(|&j| &self.jails[j].filter).collect();
                let prefilter = Prefilter::new(&filters);
                let lines = self
                    .metrics
                    .lines
                    .get_or_create(&SourceLabel {
                        source: source.clone(),
                    })
                    .clone();
                (
                    source,
                    Route {
                        lines,
                        jails,
                        prefilter,
                    },
                )
            })
            .collect();
    }

    /// Reads the active bans, closes those that ended while moat was stopped, holds the rest
    /// in their jails' windows and sends them to every enforcer as one reconciliation.
    fn load_active(&mut self) {
        let now = Timestamp::now();
        let started = Instant::now();
        let records = match self.ledger.active() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read the active bans: {e}");
                self.shared
                    .warn(format!("cannot read the active bans: {e}"));
                Vec::new()
            }
        };
        let read = started.elapsed();
        self.active.reserve(records.len());
        let mut expired = Vec::new();
        for r in records {
            if r.until.is_some_and(|u| u <= now) {
                expired.push(r.id);
                continue;
            }
            let ban = NewBan {
                jail: r.jail.clone(),
                target: r.target,
                started: r.started,
                until: r.until,
                failures: r.failures,
                origin: if r.origin == "manual" {
                    Origin::Manual
                } else {
                    Origin::Jail
                },
                reason: r.reason.clone(),
            };
            self.hold_in_jail(&ban);
            let ports = self.ports_of(&r.jail);
            self.active.insert(
                (r.jail, r.target),
                Active {
                    id: Some(r.id),
                    ban,
                    ports,
                },
            );
        }
        if !expired.is_empty() {
            if let Err(e) = self.ledger.end_bans(&expired, now, "expired") {
                tracing::error!("cannot close expired bans: {e}");
            }
            tracing::info!(
                count = expired.len(),
                "closed bans that ended while moat was stopped"
            );
        }
        let wanted = self.wanted();
        tracing::info!(
            active = wanted.len(),
            ?read,
            took = ?started.elapsed(),
            "re-applying active bans to every enforcer"
        );
        self.enforcers.reconcile(wanted);
    }

    fn wanted(&self) -> Vec<BanOrder> {
        self.active.values().map(Active::order).collect()
    }

    /// The ports a jail's bans cover (`None`: every port, also for bans not from a jail).
    fn ports_of(&self, jail: &str) -> Option<Ports> {
        self.jails
            .iter()
            .find(|j| j.config.name == jail)
            .and_then(|j| j.config.ports.clone())
    }

    fn hold_in_jail(&mut self, ban: &NewBan) {
        if let Some(j) = self.jails.iter_mut().find(|j| j.config.name == ban.jail) {
            if let Some(key) = key_of(ban.target, j.config.params.ipv6_prefix) {
                j.window.hold(key, ban.until.unwrap_or(Timestamp::MAX));
            }
        }
    }

    /// Runs until [`EngineMsg::Stop`] or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<EngineMsg>) {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                EngineMsg::Lines {
                    source,
                    file,
                    block,
                    cursor,
                    read_at,
                } => {
                    self.lines(&source, &block, read_at);
                    self.dirty = true;
                    if let Some(c) = cursor {
                        // A file seen for the first time is saved at once: a crash before
                        // the next checkpoint must not make a restart start it afresh.
                        let new = self.cursors.insert(file, c).is_none();
                        if new {
                            self.checkpoint();
                        }
                    }
                }
                EngineMsg::Tick => self.tick(),
                EngineMsg::Control(req, reply) => {
                    let _ = reply.send(self.control(req));
                }
                EngineMsg::Reload(config, reply) => {
                    let _ = reply.send(Ok(self.reload(&config)));
                }
                EngineMsg::Stop => break,
            }
        }
        self.checkpoint();
        if self.lift_on_stop {
            let mut keys: Vec<Key> = self.active.values().map(Active::key).collect();
            keys.sort();
            keys.dedup();
            tracing::info!(
                count = keys.len(),
                "lifting every ban from the enforcers (lift_on_stop)"
            );
            self.enforcers
                .apply(keys.into_iter().map(Change::Unban).collect());
        }
        self.enforcers.stop();
    }

    fn lines(&mut self, source: &str, block: &[u8], read_at: Instant) {
        let Some(route) = self.routes.get(source) else {
            return;
        };
        route
            .lines
            .inc_by(memchr::memchr_iter(b'\n', block).count() as u64);
        let now = Timestamp::now();
        let mut decisions: Vec<(usize, BanDecision)> = Vec::new();
        let jails = &mut self.jails;
        let candidates = &mut self.candidates;
        for &j in &route.jails {
            jails[j].ctx.reference = now;
        }
        crate::source::split_lines(block, &mut |line| {
            route.prefilter.candidates(line.bytes, candidates);
            for &c in candidates.iter() {
                let ji = route.jails[c];
                if let Some(d) = observe(&mut jails[ji], line.bytes, now) {
                    decisions.push((ji, d));
                }
            }
        });
        for (j, d) in decisions {
            self.ban_decided(j, d, now, Some(read_at));
        }
    }

    fn ban_decided(&mut self, j: usize, d: BanDecision, now: Timestamp, read_at: Option<Instant>) {
        let target = key_net(d.key);
        if let Some(why) = safety::refuse(&target, &self.own, false) {
            let jail = &mut self.jails[j];
            jail.stats.refused += 1;
            jail.window.lift(&d.key);
            self.metrics
                .refused
                .get_or_create(&JailLabel {
                    jail: jail.config.name.clone(),
                })
                .inc();
            tracing::warn!(ip = %Target(target), jail = %jail.config.name, failures = d.failures, "ban refused: {why}");
            return;
        }
        let jail = &self.jails[j];
        let mut until = d.until;
        if let Some(esc) = &jail.config.escalation {
            let scope = (!esc.across_jails).then_some(jail.config.name.as_str());
            let since = d.at.checked_sub(esc.within).unwrap_or(Timestamp::MIN);
            let earlier = self
                .ledger
                .earlier_bans(target, scope, since, d.at)
                .unwrap_or_else(|e| {
                    tracing::warn!("cannot count earlier bans for escalation: {e}");
                    0
                });
            let bantime = esc.bantime(jail.config.params.bantime, earlier);
            until = d.at.checked_add(bantime).unwrap_or(Timestamp::MAX);
            if earlier > 0 {
                tracing::info!(ip = %Target(target), jail = %jail.config.name, earlier, bantime = %bantime_text(bantime), "repeat offender: escalated ban");
            }
        }
        let samples = jail.samples_of(&d.key);
        let ban = NewBan {
            jail: jail.config.name.clone(),
            target,
            started: d.at,
            until: (until != Timestamp::MAX).then_some(until),
            failures: d.failures,
            origin: Origin::Jail,
            reason: format!("{} failures", d.failures),
        };
        let jail = &mut self.jails[j];
        jail.bans.inc();
        if until != d.until {
            jail.window.hold(d.key, until);
        }
        self.place(ban, samples, now, read_at);
    }

    /// Records a ban and sends it to the enforcers.
    fn place(
        &mut self,
        ban: NewBan,
        samples: Vec<Vec<u8>>,
        now: Timestamp,
        read_at: Option<Instant>,
    ) {
        let id = match self.ledger.record_ban(&ban, &samples) {
            Ok(Some(id)) => Some(id),
            Ok(None) => {
                // Recorded before a crash and decided again by the replay; the enforcers got
                // it from the start-up reconciliation.
                tracing::debug!(ip = %Target(ban.target), jail = %ban.jail, "ban already recorded");
                return;
            }
            Err(e) => {
                tracing::error!(ip = %Target(ban.target), "cannot record the ban (enforcing it anyway, will retry): {e}");
                self.shared.warn(format!("ledger write failed: {e}"));
                self.unsaved.push((ban.clone(), samples));
                None
            }
        };
        let expired = ban.until.is_some_and(|u| u <= now);
        if expired {
            // A catch-up read decided a ban that has already run its course.
            if let Some(id) = id {
                let _ = self.ledger.end_bans(&[id], now, "expired");
            }
            return;
        }
        let until = ban.until.map_or("forever".into(), |u| u.to_string());
        tracing::info!(ip = %Target(ban.target), jail = %ban.jail, failures = ban.failures, %until, "ban");
        let ports = self.ports_of(&ban.jail);
        self.enforcers
            .apply_read_at(vec![Change::Ban(order(&ban, ports.clone()))], read_at);
        self.active
            .insert((ban.jail.clone(), ban.target), Active { id, ban, ports });
        self.metrics.active_bans.set(self.active.len() as i64);
    }

    fn tick(&mut self) {
        let now = Timestamp::now();
        self.ticks += 1;
        // The host's addresses change (DHCP, a new interface); look again every 10 s.
        if self.ticks.is_multiple_of(10) {
            self.own = safety::own_addresses();
        }
        // Kernel rulesets can be flushed behind moat's back: check every 2 s.
        if self.ticks.is_multiple_of(2) && self.enforcers.any_drifting() {
            self.enforcers.check_drifting(self.wanted());
        }
        // Retry ledger writes that failed (read-only or full state directory).
        if !self.unsaved.is_empty() {
            let pending = std::mem::take(&mut self.unsaved);
            for (ban, lines) in pending {
                match self.ledger.record_ban(&ban, &lines) {
                    Ok(id) => {
                        if let Some(a) = self.active.get_mut(&(ban.jail.clone(), ban.target)) {
                            a.id = a.id.or(id);
                        }
                    }
                    Err(e) => {
                        tracing::debug!("ledger write still failing: {e}");
                        self.unsaved.push((ban, lines));
                    }
                }
            }
        }
        if self.unsaved.is_empty() {
            self.shared.clear_warnings("ledger write failed");
        }
        let ended: Vec<(String, IpNet)> = self
            .active
            .iter()
            .filter(|(_, a)| a.ban.until.is_some_and(|u| u <= now))
            .map(|(k, _)| k.clone())
            .collect();
        if !ended.is_empty() {
            self.end(&ended, now, "expired");
        }
        if self.dirty && self.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint();
        }
    }

    /// Ends active bans, telling the enforcers to lift targets no other active ban holds.
    fn end(&mut self, keys: &[(String, IpNet)], now: Timestamp, reason: &str) -> Vec<ActiveBan> {
        let mut ids = Vec::new();
        let mut ended = Vec::new();
        let mut lifted: HashSet<Key> = HashSet::new();
        for k in keys {
            if let Some(a) = self.active.remove(k) {
                ids.extend(a.id);
                if reason != "expired" {
                    if let Some(j) = self.jails.iter_mut().find(|j| j.config.name == a.ban.jail) {
                        if let Some(key) = key_of(a.ban.target, j.config.params.ipv6_prefix) {
                            j.window.lift(&key);
                        }
                    }
                }
                tracing::info!(ip = %Target(a.ban.target), jail = %a.ban.jail, reason, "unban");
                lifted.insert(a.key());
                ended.push(active_view(&a.ban));
            }
        }
        if let Err(e) = self.ledger.end_bans(&ids, now, reason) {
            tracing::error!("cannot record the end of {} bans: {e}", ids.len());
        }
        // A target another jail still bans on the same ports stays (one pass over the active
        // bans, however many ended at once).
        if !lifted.is_empty() {
            for a in self.active.values() {
                lifted.remove(&a.key());
            }
        }
        let mut lifted: Vec<Key> = lifted.into_iter().collect();
        lifted.sort();
        let changes: Vec<Change> = lifted.into_iter().map(Change::Unban).collect();
        if !changes.is_empty() {
            self.enforcers.apply(changes);
        }
        self.metrics.active_bans.set(self.active.len() as i64);
        self.dirty = true;
        ended
    }

    fn checkpoint(&mut self) {
        let cursors: Vec<(String, Cursor)> = self
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let jails: Vec<(String, JailCheckpoint)> = self
            .jails
            .iter()
            .map(|j| (j.config.name.clone(), j.checkpoint()))
            .collect();
        match self.ledger.checkpoint(&cursors, &jails, Timestamp::now()) {
            Ok(()) => {
                self.dirty = false;
                self.shared.clear_warnings("checkpoint failed");
            }
            Err(e) => {
                tracing::error!("checkpoint failed (will retry): {e}");
                self.shared.warn(format!("checkpoint failed: {e}"));
            }
        }
        self.last_checkpoint = Instant::now();
    }

    fn control(&mut self, req: Request) -> Reply {
        match req {
            Request::Ping => Reply::ok("pong"),
            Request::Status { jail } => match self.status(jail.as_deref()) {
                Ok(s) => Reply::ok(s),
                Err(e) => Reply::err(e),
            },
            Request::Bans { history } => {
                let mut active: Vec<ActiveBan> =
                    self.active.values().map(|a| active_view(&a.ban)).collect();
                active.sort_by(|a, b| a.started.cmp(&b.started).then(a.target.cmp(&b.target)));
                let history = match history {
                    Some(n) => match self.ledger.recent(n) {
                        Ok(h) => h,
                        Err(e) => return Reply::err(e.to_string()),
                    },
                    None => Vec::new(),
                };
                Reply::ok(Bans { active, history })
            }
            Request::Ban {
                target,
                jail,
                duration,
                reason,
                force,
            } => match self.manual_ban(&target, jail, duration, reason, force) {
                Ok(b) => Reply::ok(b),
                Err(e) => Reply::err(e),
            },
            Request::Unban { target, all, jail } => {
                if let Some(j) = &jail {
                    if !self.jails.iter().any(|r| &r.config.name == j) {
                        return Reply::err(format!("no jail named {j:?}"));
                    }
                }
                let of_jail =
                    |(name, _): &&(String, IpNet)| jail.as_ref().is_none_or(|j| j == name);
                let keys: Vec<(String, IpNet)> = if all {
                    self.active.keys().filter(of_jail).cloned().collect()
                } else {
                    let Some(t) = target else {
                        return Reply::err("name an address or network, or --all");
                    };
                    let t = match parse_target(&t) {
                        Ok(t) => t,
                        Err(e) => return Reply::err(e),
                    };
                    self.active
                        .keys()
                        .filter(|(_, held)| held.contains(&t) || t.contains(held))
                        .filter(of_jail)
                        .cloned()
                        .collect()
                };
                let ended = self.end(&keys, Timestamp::now(), "unbanned");
                Reply::ok(ended)
            }
            Request::Reload => Reply::err("reload is handled by the daemon, not the engine"),
        }
    }

    fn manual_ban(
        &mut self,
        target: &str,
        jail: Option<String>,
        duration: Option<String>,
        reason: Option<String>,
        force: bool,
    ) -> Result<ActiveBan, String> {
        let target = parse_target(target)?;
        if let Some(why) = safety::refuse(&target, &self.own, force) {
            tracing::warn!(ip = %Target(target), "ban refused: {why}");
            return Err(format!("refused: {why}"));
        }
        // Never an address a jail was told to ignore (the office, the monitor).
        let ignored = self.jails.iter().find_map(|j| {
            j.config
                .params
                .ignore
                .overlapping(&target)
                .map(|n| (j.config.name.clone(), n))
        });
        if let Some((jail, net)) = ignored {
            let why = format!("{target} overlaps {net}, which jail {jail:?} ignores");
            tracing::warn!(ip = %Target(target), "ban refused: {why}");
            return Err(format!("refused: {why}"));
        }
        let jail_cfg = match &jail {
            Some(name) => Some(
                self.jails
                    .iter()
                    .find(|j| &j.config.name == name)
                    .ok_or_else(|| format!("no jail named {name:?}"))?,
            ),
            None => None,
        };
        let bantime = match duration.as_deref() {
            Some("forever" | "permanent") => SignedDuration::MAX,
            Some(d) => {
                let d = parse_duration(d)?;
                if d <= SignedDuration::ZERO {
                    return Err("the duration must be positive".into());
                }
                d
            }
            None => jail_cfg.map_or(self.default_bantime, |j| j.config.params.bantime),
        };
        let now = Timestamp::now();
        let until = now.checked_add(bantime).ok();
        let ban = NewBan {
            jail: jail.unwrap_or_else(|| MANUAL_JAIL.to_string()),
            target,
            started: now,
            until,
            failures: 0,
            origin: Origin::Manual,
            reason: reason.unwrap_or_default(),
        };
        // A new ban of a held target replaces the old one in the same jail.
        if let Some(old) = self.active.remove(&(ban.jail.clone(), target)) {
            let _ = self
                .ledger
                .end_bans(&old.id.into_iter().collect::<Vec<_>>(), now, "replaced");
        }
        self.hold_in_jail(&ban);
        let view = active_view(&ban);
        self.place(ban, Vec::new(), now, None);
        Ok(view)
    }

    fn status(&self, only: Option<&str>) -> Result<Status, String> {
        if let Some(name) = only {
            if !self.jails.iter().any(|j| j.config.name == name) {
                let names: Vec<&str> = self.jails.iter().map(|j| j.config.name.as_str()).collect();
                return Err(format!(
                    "no jail named {name:?}; the jails are: {}",
                    names.join(", ")
                ));
            }
        }
        let totals = self.ledger.bans_per_jail().unwrap_or_default();
        let mut jails = Vec::new();
        for j in &self.jails {
            if only.is_some_and(|n| n != j.config.name) {
                continue;
            }
            let mut banned: Vec<ActiveBan> = self
                .active
                .values()
                .filter(|a| a.ban.jail == j.config.name)
                .map(|a| active_view(&a.ban))
                .collect();
            banned.sort_by(|a, b| a.started.cmp(&b.started).then(a.target.cmp(&b.target)));
            let p = &j.config.params;
            jails.push(JailStatus {
                name: j.config.name.clone(),
                filter: j.config.filter_label.clone(),
                sources: j.config.sources.clone(),
                maxretry: p.maxretry,
                findtime_secs: p.findtime.as_secs(),
                bantime_secs: (p.bantime != SignedDuration::MAX).then(|| p.bantime.as_secs()),
                currently_failing: j.window.failing(),
                total_failed: j.stats.failed_total,
                currently_banned: banned.len(),
                total_banned: totals.get(&j.config.name).copied().unwrap_or(0),
                stale: j.stats.stale,
                unparsed_time: j.stats.unparsed_time,
                refused: j.stats.refused,
                banned,
            });
        }
        // Hand-made bans outside any jail.
        if only.is_none() || only == Some(MANUAL_JAIL) {
            let manual: Vec<ActiveBan> = self
                .active
                .values()
                .filter(|a| !self.jails.iter().any(|j| j.config.name == a.ban.jail))
                .map(|a| active_view(&a.ban))
                .collect();
            if !manual.is_empty() {
                jails.push(JailStatus {
                    name: MANUAL_JAIL.into(),
                    filter: "-".into(),
                    sources: Vec::new(),
                    maxretry: 0,
                    findtime_secs: 0,
                    bantime_secs: None,
                    currently_failing: 0,
                    total_failed: 0,
                    currently_banned: manual.len(),
                    total_banned: totals.get(MANUAL_JAIL).copied().unwrap_or(0),
                    stale: 0,
                    unparsed_time: 0,
                    refused: 0,
                    banned: manual,
                });
            }
        }
        Ok(self
            .shared
            .status(jails, self.enforcers.status(), self.ledger.path()))
    }

    fn reload(&mut self, config: &Config) -> String {
        let mut old: HashMap<String, JailRuntime> = self
            .jails
            .drain(..)
            .map(|j| (j.config.name.clone(), j))
            .collect();
        let (mut kept, mut changed, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for jc in &config.jails {
            match old.remove(&jc.name) {
                Some(rt) if same_jail(&rt.config, jc) => {
                    kept.push(jc.name.clone());
                    self.jails.push(rt);
                }
                Some(rt) => {
                    // Changed: the new filter and settings, the old totals and bans.
                    changed.push(jc.name.clone());
                    let mut fresh = JailRuntime::new(jc.clone(), None, &self.metrics);
                    fresh.stats = rt.stats;
                    if fresh.config.params.findtime == rt.config.params.findtime
                        && fresh.config.params.ipv6_prefix == rt.config.params.ipv6_prefix
                    {
                        if let Some(w) =
                            Jail::restore(fresh.config.params.clone(), &rt.window.snapshot())
                        {
                            fresh.window = w;
                        }
                    }
                    self.jails.push(fresh);
                }
                None => {
                    added.push(jc.name.clone());
                    self.jails.push(JailRuntime::new(
                        jc.clone(),
                        Some(&self.ledger),
                        &self.metrics,
                    ));
                }
            }
        }
        let removed: Vec<String> = old.into_keys().collect();
        let holds: Vec<NewBan> = self
            .active
            .values()
            .filter(|a| changed.contains(&a.ban.jail))
            .map(|a| a.ban.clone())
            .collect();
        for b in &holds {
            self.hold_in_jail(b);
        }
        // A changed jail's `ports`: its bans move to the new ports, in every enforcer.
        let ports: HashMap<String, Option<Ports>> = changed
            .iter()
            .map(|j| (j.clone(), self.ports_of(j)))
            .collect();
        // A jail moved behind Cloudflare or back: its bans move between the enforcers.
        let mut moved = self
            .enforcers
            .route_behind_cloudflare(&config.behind_cloudflare());
        for a in self.active.values_mut() {
            if let Some(p) = ports.get(&a.ban.jail) {
                if *p != a.ports {
                    a.ports = p.clone();
                    moved = true;
                }
            }
        }
        if moved {
            self.enforcers.reconcile(self.wanted());
        }
        // A removed jail's bans end with it, as when fail2ban stops a jail.
        let gone: Vec<(String, IpNet)> = self
            .active
            .keys()
            .filter(|(j, _)| removed.contains(j))
            .cloned()
            .collect();
        if !gone.is_empty() {
            self.end(&gone, Timestamp::now(), "jail removed");
        }
        self.default_bantime = config
            .defaults
            .bantime
            .map_or(SignedDuration::from_hours(1), |d| d.0);
        self.build_routes();
        self.dirty = true;
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "kept: {}; changed: {}; added: {}; removed: {}",
            list(&kept),
            list(&changed),
            list(&added),
            list(&removed)
        )
    }
}

/// Runs one jail's filter over a line and feeds a failure to its window, by the line's own
/// time: a time too far ahead is taken as now; a failure older than findtime when read is
/// counted as stale and not toward a ban.
fn observe(j: &mut JailRuntime, line: &[u8], now: Timestamp) -> Option<BanDecision> {
    let f = match j.filter.check_mut(line, &j.ctx) {
        Verdict::Failure(f) => f,
        Verdict::NoTime { .. } => {
            j.stats.unparsed_time += 1;
            return None;
        }
        _ => return None,
    };
    let mut at = f.time;
    if at > now + FUTURE_TOLERANCE {
        at = now;
    }
    if now.duration_since(at) > j.config.params.findtime {
        j.stats.stale += 1;
        return None;
    }
    if j.config.params.ignore.contains(f.host) {
        return None;
    }
    j.stats.failed_total += 1;
    j.matches.inc();
    let key = ClientKey::new(f.host, j.config.params.ipv6_prefix);
    j.sample(key, line);
    match j.window.observe(f.host, at) {
        Outcome::Banned(d) => Some(d),
        _ => None,
    }
}

/// Two jails are the same when everything written for them is.
fn same_jail(a: &JailConfig, b: &JailConfig) -> bool {
    format!("{:?}", a.table) == format!("{:?}", b.table)
}

fn order(b: &NewBan, ports: Option<Ports>) -> BanOrder {
    BanOrder {
        target: b.target,
        jail: b.jail.clone(),
        started: b.started,
        until: b.until,
        failures: b.failures,
        ports,
    }
}

fn active_view(b: &NewBan) -> ActiveBan {
    ActiveBan {
        target: b.target,
        jail: b.jail.clone(),
        started: b.started,
        until: b.until,
        failures: b.failures,
        reason: b.reason.clone(),
    }
}

fn bantime_text(d: SignedDuration) -> String {
    if d == SignedDuration::MAX {
        "forever".into()
    } else {
        format!("{}s", d.as_secs())
    }
}

/// The jail key a target is, when it is one (a single IPv4 address, or an IPv6 network of the
/// jail's prefix length).
fn key_of(target: IpNet, ipv6_prefix: u8) -> Option<ClientKey> {
    match target {
        IpNet::V4(n) if n.prefix_len() == 32 => Some(ClientKey::V4(n.addr())),
        IpNet::V6(n) if n.prefix_len() == ipv6_prefix => {
            Some(ClientKey::new(IpAddr::V6(n.addr()), ipv6_prefix))
        }
        _ => None,
    }
}

/// The network a jail key stands for.
fn key_net(key: ClientKey) -> IpNet {
    match key {
        ClientKey::V4(a) => IpNet::from(IpAddr::V4(a)),
        ClientKey::V6(n) => IpNet::V6(n),
    }
}

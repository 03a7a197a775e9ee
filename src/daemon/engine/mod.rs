//! The engine: the one thread that owns the jails and the ban book.
//!
//! Sources send it blocks of lines; the [jails] run them through the pipeline, the [book]
//! records each ban and says what the enforcers must change, and the engine hands those
//! changes on. Control requests ([requests]) and reloads ([reload]) arrive on the same
//! channel, so they see a consistent state without locks. Every [`Tick`](EngineMsg::Tick) it
//! ends expired bans, retries ledger writes that failed, checks that the ledger's file is
//! still there, and checkpoints the windows with the sources' cursors.
//!
//! It is a plain thread, not an async task: everything it does is CPU work or a short SQLite
//! write, and it keeps the detection path free of an executor. It reads the clock once per
//! message and passes the time down: nothing below it reads a clock.

pub mod book;
pub mod dashboard;
pub mod fleet;
pub mod jails;
pub mod recent;
pub mod reload;
pub mod requests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::enforcers::Enforcers;
use super::metrics::{JailLabel, Metrics};
use super::protocol::{Reply, Request};
use super::{Shared, Warning};
use crate::config::Config;
use crate::detect::Proxies;
use crate::enforce::safety::{self, Protected};
use crate::enforce::{Change, Key};
use crate::ledger::{DecisionStore, EndReason, NewBan, Origin, Progress};
use crate::vocab::{Cursor, Target};
use book::{BanBook, Placed, Slot};
use jails::{Decided, JailRuntime, Jails};
use recent::Recent;

/// The jail name of bans made by hand without `--jail`.
pub const MANUAL_JAIL: &str = "manual";

/// How many bans of a resync go to the enforcers at once.
const HAND_OVER: usize = 20_000;

/// What the engine's channel carries: work from the sources, the clock, the control socket, reloads
/// and the fleet.
pub enum EngineMsg {
    /// Complete lines from `source` (as configured), read from `file`; `cursor` is where the
    /// file is read up to after them.
    Lines {
        /// The source as configured (a path, a glob), which picks the jails.
        source: String,
        /// The file (or stream) the lines were read from.
        file: String,
        /// The lines, each ending in `\n`.
        block: Vec<u8>,
        /// Where `file` is read up to after the block, saved with the next checkpoint; `None` for a
        /// source that cannot resume (standard input).
        cursor: Option<Cursor>,
        /// When the source read the block.
        read_at: Instant,
    },
    /// Sent every second: ends expired bans, retries ledger writes, checks for drift and
    /// checkpoints.
    Tick,
    /// A control socket [`Request`] and where its [`Reply`] goes.
    Control(Request, oneshot::Sender<Reply>),
    /// A new configuration, already validated; the reply says what changed.
    Reload(Box<Config>, oneshot::Sender<Result<String, String>>),
    /// The trusted proxies' ranges as Cloudflare now publishes them: believed in headers,
    /// never banned.
    Proxies(Proxies),
    /// From the cluster task: another node's decision, a resync, a question.
    Fleet(crate::cluster::Inbound),
    /// Final checkpoint, then the thread ends.
    Stop,
}

/// The engine's state: the jails, the ban book, the enforcers and what it shares for status; run on
/// its own thread by [`Engine::run`].
pub struct Engine {
    jails: Jails,
    book: BanBook,
    progress: Box<dyn Progress>,
    enforcers: Enforcers,
    shared: Arc<Shared>,
    cursors: HashMap<String, Cursor>,
    dirty: bool,
    last_checkpoint: Instant,
    checkpoint_every: std::time::Duration,
    default_bantime: SignedDuration,
    metrics: Arc<Metrics>,
    /// What is never banned (the host's own addresses, refreshed every few ticks; the
    /// trusted proxies).
    protected: Protected,
    /// Bans refused by the safety rules, per jail.
    refused: HashMap<String, u64>,
    ticks: u64,
    /// `[enforce] lift_on_stop`: the ledger keeps the bans, the enforcers drop them at stop.
    lift_on_stop: bool,
    /// The last 7 days' bans and the failures since start, for the dashboard.
    recent: Recent,
    /// While a batch of decisions is placed (a fleet resync of many bans), the changes
    /// gathered for the enforcers: one kernel transaction per [`HAND_OVER`] bans, not one per
    /// ban.
    gathered: Option<Vec<crate::enforce::Change>>,
    /// The fleet this node belongs to (`[cluster]`).
    fleet: Option<fleet::Fleet>,
}

impl Engine {
    /// Builds the engine from the configuration and the ledger's state, and brings every
    /// enforcer to the active bans in one batch.
    pub fn start(
        config: &Config,
        decisions: Box<dyn DecisionStore>,
        progress: Box<dyn Progress>,
        enforcers: Enforcers,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let protected = Protected::here();
        let runtimes: Vec<JailRuntime> = config
            .jails
            .iter()
            .map(|j| JailRuntime::new(j.clone(), Some(progress.as_ref()), &metrics))
            .collect();
        let cursors = progress.cursors().unwrap_or_else(|e| {
            tracing::error!("cannot read the saved cursors, sources start afresh: {e}");
            HashMap::new()
        });
        let mut engine = Engine {
            jails: Jails::new(runtimes, &metrics, &protected.proxies),
            book: BanBook::new(decisions),
            progress,
            enforcers,
            shared,
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
            metrics,
            protected,
            refused: HashMap::new(),
            ticks: 0,
            lift_on_stop: config.enforce.lift_on_stop.unwrap_or(false),
            recent: Recent::default(),
            gathered: None,
            fleet: None,
        };
        let now = Timestamp::now();
        engine.load_active(now);
        engine.seed_recent(now);
        engine
    }

    /// The cursors saved at the last checkpoint, for the sources to resume from.
    pub fn saved_cursors(&self) -> HashMap<String, Cursor> {
        self.cursors.clone()
    }

    /// Remembers the last 7 days' bans from the ledger, for the dashboard's timeline.
    fn seed_recent(&mut self, now: Timestamp) {
        let since = now.checked_sub(recent::SPAN).unwrap_or(Timestamp::MIN);
        match self.book.store().recent(50_000) {
            Ok(bans) => {
                for b in bans.iter().rev().filter(|b| b.started >= since) {
                    self.recent.ban(b.started, &b.jail, b.target);
                }
            }
            Err(e) => tracing::warn!("cannot read the recent bans for the dashboard: {e}"),
        }
    }

    /// Tells the dashboard's live updates that something changed.
    fn changed(&self) {
        self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reads the active bans, closes those that ended while moat was stopped, holds the rest
    /// in their jails' windows and sends them to every enforcer as one reconciliation.
    fn load_active(&mut self, now: Timestamp) {
        let started = Instant::now();
        let jails = &self.jails;
        let loaded = self.book.load(now, |j| jails.ports_of(j));
        if let Some(e) = loaded.error {
            tracing::error!("cannot read the active bans: {e}");
            self.shared.warn(
                Warning::ActiveBans,
                format!("cannot read the active bans: {e}"),
            );
        }
        if loaded.expired > 0 {
            tracing::info!(
                count = loaded.expired,
                "closed bans that ended while moat was stopped"
            );
        }
        let holds: Vec<NewBan> = self.book.iter().map(|(_, a)| a.ban.clone()).collect();
        for ban in &holds {
            self.jails.hold(ban);
        }
        let wanted = self.book.wanted();
        tracing::info!(
            active = wanted.len(),
            took = ?started.elapsed(),
            "re-applying active bans to every enforcer"
        );
        self.enforcers.reconcile(wanted);
        // An enforcer that lists what it holds lifts the ended bans in the reconciliation; one
        // that cannot (`exec`) learns of them only from an unban.
        self.enforcers.lift_ended(&loaded.ended_keys);
        self.metrics.active_bans.set(self.book.len() as i64);
    }

    /// Runs until [`EngineMsg::Stop`] or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<EngineMsg>) {
        while let Some(msg) = rx.blocking_recv() {
            let now = Timestamp::now();
            match msg {
                EngineMsg::Lines {
                    source,
                    file,
                    block,
                    cursor,
                    read_at,
                } => {
                    let before: Vec<u64> = (0..self.jails.len())
                        .map(|j| self.jails.stage(j).stats.failed)
                        .collect();
                    let decided = self.jails.lines(&source, &file, &block, now);
                    for (j, was) in before.into_iter().enumerate() {
                        let more = self.jails.stage(j).stats.failed.saturating_sub(was);
                        if more > 0 {
                            let name = &self.jails.config(j).name;
                            self.recent
                                .failures(name, more.min(u32::MAX as u64) as u32, now);
                        }
                    }
                    for d in decided {
                        self.ban_decided(d, now, Some(read_at));
                    }
                    self.dirty = true;
                    if let Some(c) = cursor {
                        // A file seen for the first time is saved at once: a crash before
                        // the next checkpoint must not make a restart start it afresh.
                        let new = self.cursors.insert(file, c).is_none();
                        if new {
                            self.checkpoint(now);
                        }
                    }
                }
                EngineMsg::Tick => self.tick(now),
                EngineMsg::Control(req, reply) => {
                    let _ = reply.send(self.control(req, now));
                }
                EngineMsg::Reload(config, reply) => {
                    let _ = reply.send(Ok(self.reload(&config, now)));
                }
                EngineMsg::Proxies(proxies) => {
                    self.jails.set_proxies(&proxies);
                    self.protected.proxies = proxies;
                }
                EngineMsg::Fleet(msg) => self.fleet_message(msg, now),
                EngineMsg::Stop => break,
            }
        }
        self.checkpoint(Timestamp::now());
        if self.lift_on_stop {
            let mut keys: Vec<Key> = self.book.iter().map(|(_, a)| a.key()).collect();
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

    /// A jail's window filled: the safety rules, escalation, then the ban.
    fn ban_decided(&mut self, d: Decided, now: Timestamp, read_at: Option<Instant>) {
        let Decided {
            jail: j,
            decision,
            samples,
        } = d;
        let target = decision.key.net();
        let name = self.jails.config(j).name.clone();
        if let Some(why) = self.protected.refuse(&target, false) {
            self.jails.stage_mut(j).window.lift(&decision.key);
            *self.refused.entry(name.clone()).or_default() += 1;
            self.metrics
                .refused
                .get_or_create(&JailLabel { jail: name.clone() })
                .inc();
            tracing::warn!(ip = %Target(target), jail = %name, failures = decision.failures, "ban refused: {why}");
            return;
        }
        let mut until = decision.until;
        if let Some(esc) = &self.jails.config(j).escalation {
            let base = self.jails.config(j).params.bantime;
            let (bantime, earlier) = self.book.escalated(esc, &name, target, base, decision.at);
            until = decision.at.checked_add(bantime).unwrap_or(Timestamp::MAX);
            if earlier > 0 {
                tracing::info!(ip = %Target(target), jail = %name, earlier, bantime = %bantime_text(bantime), "repeat offender: escalated ban");
            }
        }
        self.jails.count_ban(j);
        if until != decision.until {
            self.jails.stage_mut(j).window.hold(decision.key, until);
        }
        let ban = NewBan {
            jail: name,
            target,
            started: decision.at,
            until: (until != Timestamp::MAX).then_some(until),
            failures: decision.failures,
            origin: Origin::Jail,
            reason: format!("{} failures", decision.failures),
            node: None,
        };
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
        let ports = self.jails.ports_of(&ban.jail);
        let (target, jail, failures) = (ban.target, ban.jail.clone(), ban.failures);
        let until = ban.until.map_or("forever".into(), |u| u.to_string());
        let started = ban.started;
        let shared = self.fleet.as_ref().map(|_| (ban.clone(), samples.clone()));
        let (placed, error) = self.book.place(ban, samples, ports, now);
        if let Some(e) = error {
            tracing::error!(ip = %Target(target), "cannot record the ban (enforcing it anyway, will retry): {e}");
            self.shared
                .warn(Warning::LedgerWrite, format!("ledger write failed: {e}"));
        }
        match placed {
            Placed::InForce(change) => {
                if self.gathered.is_some() {
                    // A resync: one line for all of them (see fleet.rs), each here at debug.
                    tracing::debug!(ip = %Target(target), %jail, failures, %until, "ban");
                } else {
                    tracing::info!(ip = %Target(target), %jail, failures, %until, "ban");
                }
                match &mut self.gathered {
                    Some(changes) => {
                        changes.push(change);
                        // Handed over in parts: the enforcers put the first part in the kernel
                        // while this thread records the rest (of 100,000 bans at a node's
                        // start, the ledger's part and the kernel's each take about half a
                        // second).
                        if changes.len() >= HAND_OVER {
                            self.enforcers.apply(std::mem::take(changes));
                        }
                    }
                    None => self.enforcers.apply_read_at(vec![change], read_at),
                }
                self.recent.ban(started, &jail, target);
                self.changed();
                if let (Some(f), Some((ban, lines))) = (&self.fleet, &shared) {
                    f.placed(ban, lines);
                }
            }
            Placed::Replayed => {
                tracing::debug!(ip = %Target(target), %jail, "ban already recorded");
            }
            Placed::AlreadyOver => {}
        }
        self.metrics.active_bans.set(self.book.len() as i64);
    }

    fn tick(&mut self, now: Timestamp) {
        self.ticks += 1;
        self.count_fleet_bans();
        // The host's addresses change (DHCP, a new interface); look again every 10 s.
        if self.ticks.is_multiple_of(10) {
            self.protected.own = safety::own_addresses();
        }
        // Kernel rulesets can be flushed behind moat's back: check every 2 s.
        if self.ticks.is_multiple_of(2) && self.enforcers.any_drifting() {
            self.enforcers.check_drifting();
        }
        // Those that found theirs gone get the bans back (at most a tick after the check).
        self.enforcers.restore_lost(|| self.book.wanted());
        // So can the state directory: writes would go to a deleted file, and the next start
        // would find no bans (and lift them from the kernel).
        if self.ticks.is_multiple_of(2) && self.book.store().is_gone() {
            self.recreate_ledger(now);
        }
        // Retry ledger writes that failed (read-only or full state directory).
        if self.book.has_unsaved() && self.book.retry_unsaved() {
            self.shared.clear(Warning::LedgerWrite);
        }
        if self.ticks.is_multiple_of(60) {
            self.recent.trim(now);
        }
        let due = self.book.due(now);
        if !due.is_empty() {
            self.end(&due, now, EndReason::Expired);
        }
        if self.dirty && self.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint(now);
        }
    }

    /// Ends active bans, telling the enforcers to lift targets no other active ban holds.
    fn end(&mut self, slots: &[Slot], now: Timestamp, reason: EndReason) -> Vec<NewBan> {
        self.end_told(slots, now, reason, true)
    }

    /// Ends bans another node lifted: as [`Engine::end`], without telling the fleet again.
    fn end_from_fleet(&mut self, slots: &[Slot], now: Timestamp) -> Vec<NewBan> {
        self.end_told(slots, now, EndReason::Unbanned, false)
    }

    fn end_told(
        &mut self,
        slots: &[Slot],
        now: Timestamp,
        reason: EndReason,
        tell_fleet: bool,
    ) -> Vec<NewBan> {
        let ended = self.book.end(slots, now, reason);
        if let (Some(f), true) = (&self.fleet, tell_fleet) {
            for a in &ended.bans {
                f.ended(&a.ban, reason);
            }
        }
        if reason.clears_window() {
            for a in &ended.bans {
                self.jails.lift(&a.ban);
            }
        }
        if !ended.lifts.is_empty() {
            self.enforcers.apply(ended.lifts);
        }
        self.metrics.active_bans.set(self.book.len() as i64);
        self.dirty = true;
        if !ended.bans.is_empty() {
            self.changed();
        }
        ended.bans.into_iter().map(|a| a.ban).collect()
    }

    /// The ledger's file was deleted or replaced while moat ran: a new one is created in its
    /// place holding the active bans, the cursors and the windows, and an admin is told.
    fn recreate_ledger(&mut self, now: Timestamp) {
        let location = self.book.store().location();
        match self.book.recreate_store() {
            Ok(written) => {
                self.checkpoint(now);
                let msg = format!(
                    "the ledger {location} was deleted or replaced while moat ran; a new one was \
                     created with the {written} active bans, the cursors and the windows (the \
                     history of past bans and the evidence lines are lost)"
                );
                tracing::error!("{msg}");
                self.shared.warn(Warning::LedgerGone, msg);
            }
            Err(e) => {
                let msg = format!(
                    "the ledger {location} was deleted while moat ran and cannot be created \
                     again ({e}); decisions are written to the deleted file and lost at the \
                     next start: restore the state directory"
                );
                tracing::error!("{msg}");
                self.shared.warn(Warning::LedgerGone, msg);
            }
        }
    }

    fn checkpoint(&mut self, now: Timestamp) {
        let cursors: Vec<(String, Cursor)> = self
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self
            .progress
            .checkpoint(&cursors, &self.jails.checkpoints(), now)
        {
            Ok(()) => {
                self.dirty = false;
                self.shared.clear(Warning::Checkpoint);
            }
            Err(e) => {
                tracing::error!("checkpoint failed (will retry): {e}");
                self.shared
                    .warn(Warning::Checkpoint, format!("checkpoint failed: {e}"));
            }
        }
        self.last_checkpoint = Instant::now();
    }
}

fn bantime_text(d: SignedDuration) -> String {
    if d == SignedDuration::MAX {
        "forever".into()
    } else {
        format!("{}s", d.as_secs())
    }
}

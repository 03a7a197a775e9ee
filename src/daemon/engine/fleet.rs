//! The engine's side of the cluster: this node's decisions handed to the cluster task to
//! publish, and the other nodes' decisions applied here.
//!
//! A remote ban enters the book like any other ban, with its node: it goes through the same
//! safety rules first (this host's own addresses, loopback, Cloudflare's proxies, networks
//! wider than the limits, and the jails' `ignore` lists unless `ignore_remote = false`), and
//! a refused one is logged and counted, never applied. Applying a decision twice is a no-op:
//! a ban is recorded once per (jail, target, start), an unban ends only the ban it names.

use std::collections::HashSet;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::book::{Active, Slot};
use super::Engine;
use crate::cluster::status::SharedStatus;
use crate::cluster::wire::{fleet_id, FleetBan};
use crate::cluster::{ClusterSettings, Event, Inbound, Kind, Lift, Outbound, CURSOR_KEY};
use crate::ledger::{EndReason, NewBan, Origin};
use crate::vocab::{Cursor, Target};

/// What the engine knows of the cluster.
pub struct Fleet {
    /// This node's name.
    pub node: String,
    /// `[cluster]`.
    pub settings: ClusterSettings,
    /// To the cluster task.
    pub out: mpsc::UnboundedSender<Outbound>,
    /// What `moat status` shows.
    pub status: SharedStatus,
    /// Since Redis lost its state and until the second look: the slots of the remote bans
    /// the log brought again (the second look keeps them, whatever its read of the active
    /// set missed).
    pub refreshed: Option<HashSet<Slot>>,
}

impl Fleet {
    /// Whether this node publishes `ban` (its own, of a shared jail or by hand).
    fn shares(&self, ban: &NewBan) -> bool {
        ban.node.is_none()
            && self
                .settings
                .shares(&ban.jail, ban.origin == Origin::Manual)
    }

    /// The ban as the fleet shares it.
    fn fleet_ban(&self, ban: &NewBan, lines: &[Vec<u8>]) -> FleetBan {
        FleetBan {
            node: ban.node.clone().unwrap_or_else(|| self.node.clone()),
            jail: ban.jail.clone(),
            target: ban.target,
            started: ban.started.as_millisecond(),
            until: ban.until.map(|u| u.as_millisecond()),
            failures: ban.failures,
            origin: ban.origin,
            reason: ban
                .reason
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect(),
            lines: lines
                .iter()
                .take(crate::ledger::SAMPLE_LINES)
                .map(|l| {
                    let mut s = String::from_utf8_lossy(l).into_owned();
                    while s.len() > crate::ledger::SAMPLE_LINE_MAX {
                        s.pop();
                    }
                    s
                })
                .collect(),
        }
    }

    fn send(&self, msg: Outbound) {
        if self.out.send(msg).is_ok() {
            self.status.lock().unwrap().queued += 1;
        }
    }

    /// A ban was put in force here: published when this node shares it.
    pub fn placed(&self, ban: &NewBan, lines: &[Vec<u8>]) {
        if self.shares(ban) && crate::cluster::settings::valid_name(&ban.jail) {
            self.send(Outbound::Publish(Event {
                kind: Kind::Ban,
                ban: self.fleet_ban(ban, lines),
                by: self.node.clone(),
            }));
        }
    }

    /// A ban ended here (not because another node said so).
    pub fn ended(&self, ban: &NewBan, reason: EndReason) {
        let lifted = matches!(reason, EndReason::Unbanned | EndReason::JailRemoved);
        if self.shares(ban) || (ban.node.is_some() && reason == EndReason::Unbanned) {
            let fb = self.fleet_ban(ban, &[]);
            if lifted {
                self.send(Outbound::Publish(Event {
                    kind: Kind::Unban,
                    ban: fb,
                    by: self.node.clone(),
                }));
            } else if ban.node.is_none() {
                self.send(Outbound::Forget(fb.id()));
            }
        }
    }
}

impl Engine {
    /// Joins the fleet: from now on this node's decisions go to the cluster task.
    pub fn join_fleet(&mut self, fleet: Fleet) {
        self.fleet = Some(fleet);
        self.count_fleet_bans();
    }

    /// The stream position saved with the cursors, for the cluster task to resume from.
    pub fn fleet_cursor(&self) -> Option<String> {
        self.cursors
            .get(CURSOR_KEY)
            .and_then(Cursor::stream)
            .map(str::to_string)
    }

    pub(super) fn count_fleet_bans(&self) {
        let Some(f) = &self.fleet else { return };
        let remote = self
            .book
            .iter()
            .filter(|(_, a)| a.ban.node.is_some())
            .count();
        let own = self.book.iter().filter(|(_, a)| f.shares(&a.ban)).count();
        let mut s = f.status.lock().unwrap();
        s.remote_bans = remote as u64;
        s.own_bans = own as u64;
    }

    /// What the cluster task handed over.
    pub(super) fn fleet_message(&mut self, msg: Inbound, now: Timestamp) {
        match msg {
            Inbound::Event { event, stream_id } => {
                self.remote_event(event, now);
                self.fleet_position(stream_id);
            }
            Inbound::Resync {
                bans,
                stream_id,
                lift,
            } => {
                self.resync(bans, lift, now);
                if let Some(id) = stream_id {
                    self.fleet_position(id);
                }
            }
            Inbound::OwnBans(reply) => {
                let own = match &self.fleet {
                    Some(f) => self
                        .book
                        .iter()
                        .filter(|(_, a)| f.shares(&a.ban))
                        .filter(|(_, a)| crate::cluster::settings::valid_name(&a.ban.jail))
                        .map(|(_, a)| f.fleet_ban(&a.ban, &[]))
                        .collect(),
                    None => Vec::new(),
                };
                let _ = reply.send(own);
            }
        }
        self.count_fleet_bans();
    }

    fn fleet_position(&mut self, stream_id: String) {
        self.cursors
            .insert(CURSOR_KEY.to_string(), Cursor::Stream(stream_id));
        self.dirty = true;
    }

    fn refuse_remote(&mut self, ban: &FleetBan, why: &str) {
        tracing::warn!(ip = %Target(ban.target), node = %ban.node, jail = %ban.jail, "remote ban refused: {why}");
        if let Some(f) = &self.fleet {
            f.status
                .lock()
                .unwrap()
                .refuse(format!("{} from {}: {why}", ban.target, ban.node));
        }
        self.metrics
            .refused
            .get_or_create(&super::JailLabel {
                jail: ban.jail.clone(),
            })
            .inc();
    }

    fn remote_event(&mut self, ev: Event, now: Timestamp) {
        let Some(me) = self.fleet.as_ref().map(|f| f.node.clone()) else {
            return;
        };
        match ev.kind {
            Kind::Ban => {
                if ev.ban.node == me {
                    // Redis says this node decided it: only this node's ledger knows.
                    return;
                }
                if let Some(seen) = self.fleet.as_mut().and_then(|f| f.refreshed.as_mut()) {
                    seen.insert((ev.ban.jail.clone(), ev.ban.target));
                }
                self.remote_ban(ev.ban, now);
            }
            Kind::Unban => {
                let target = ev.ban.target;
                let slot = (ev.ban.jail.clone(), target);
                let node = (ev.ban.node != me).then(|| ev.ban.node.clone());
                let matches = self.book.get(&slot).is_some_and(|a: &Active| {
                    a.ban.node == node && a.ban.started.as_millisecond() == ev.ban.started
                });
                if matches {
                    tracing::info!(ip = %Target(target), jail = %ev.ban.jail, by = %ev.by, "unban from the fleet");
                    self.end_from_fleet(&[slot], now);
                }
            }
        }
    }

    fn remote_ban(&mut self, fb: FleetBan, now: Timestamp) {
        if let Some(why) = self.protected.refuse(&fb.target, false) {
            self.refuse_remote(&fb, &why);
            return;
        }
        let ignore_remote = self
            .fleet
            .as_ref()
            .is_some_and(|f| f.settings.ignore_remote);
        if ignore_remote {
            let ignored = self.jails.configs().find_map(|j| {
                j.params
                    .ignore
                    .overlapping(&fb.target)
                    .map(|n| (j.name.clone(), n))
            });
            if let Some((jail, net)) = ignored {
                let why = format!("it overlaps {net}, which jail {jail:?} ignores here");
                self.refuse_remote(&fb, &why);
                return;
            }
        }
        let until = fb.until_at();
        if until.is_some_and(|u| u <= now) {
            return;
        }
        let slot = (fb.jail.clone(), fb.target);
        if let Some(a) = self.book.get(&slot) {
            if a.ban.node.as_deref() == Some(fb.node.as_str())
                && a.ban.started.as_millisecond() == fb.started
            {
                return; // Already in force: applying twice is a no-op.
            }
        }
        let ban = NewBan {
            jail: fb.jail.clone(),
            target: fb.target,
            started: fb.started_at(),
            until,
            failures: fb.failures,
            origin: fb.origin,
            reason: fb.reason.clone(),
            node: Some(fb.node.clone()),
        };
        let lines: Vec<Vec<u8>> = fb.lines.iter().map(|l| l.as_bytes().to_vec()).collect();
        self.jails.hold(&ban);
        tracing::debug!(ip = %Target(fb.target), node = %fb.node, jail = %fb.jail, "ban from the fleet");
        self.place(ban, lines, now, None);
    }

    /// The other nodes' active bans are `bans`; those missing end as `lift` says.
    fn resync(&mut self, bans: Vec<FleetBan>, lift: Lift, now: Timestamp) {
        // One write to the ledger for the whole resync: one transaction per ban made a node
        // joining a fleet of 100,000 bans take 30 s, two thirds of it in SQLite's commits.
        let big = bans.len() >= crate::daemon::enforcers::BIG_BATCH;
        self.book.begin_batch();
        self.resync_in_batch(bans, lift, now);
        let failed = self.book.end_batch();
        if big {
            crate::daemon::enforcers::give_back_freed_memory();
            self.enforcers.give_back_after_burst();
        }
        if let Some(e) = failed {
            tracing::error!(
                "cannot record the resync's bans (enforcing them anyway, will retry): {e}"
            );
            self.shared.warn(
                crate::daemon::Warning::LedgerWrite,
                format!("ledger write failed: {e}"),
            );
        }
    }

    fn resync_in_batch(&mut self, bans: Vec<FleetBan>, lift: Lift, now: Timestamp) {
        let wanted: HashSet<String> = bans.iter().map(FleetBan::id).collect();
        let refreshed = match lift {
            // From now until the second look, the bans the log brings again are noted.
            Lift::Nothing => {
                if let Some(f) = &mut self.fleet {
                    f.refreshed = Some(HashSet::new());
                }
                HashSet::new()
            }
            _ => self
                .fleet
                .as_mut()
                .and_then(|f| f.refreshed.take())
                .unwrap_or_default(),
        };
        let ends = |slot: &Slot, started: Timestamp| match lift {
            Lift::Missing => true,
            Lift::Nothing => false,
            Lift::MissingBefore(at) => started.as_millisecond() < at && !refreshed.contains(slot),
        };
        let gone: Vec<_> = self
            .book
            .iter()
            .filter_map(|(slot, a)| {
                let node = a.ban.node.as_ref()?;
                if !ends(slot, a.ban.started) {
                    return None;
                }
                let id = fleet_id(
                    node,
                    &a.ban.jail,
                    a.ban.target,
                    a.ban.started.as_millisecond(),
                );
                (!wanted.contains(&id)).then(|| slot.clone())
            })
            .collect();
        if !gone.is_empty() {
            tracing::info!(count = gone.len(), "resync: remote bans no longer in force");
            self.end_from_fleet(&gone, now);
        }
        if matches!(lift, Lift::MissingBefore(_)) {
            // The second look only ends bans: one it read and the log lifted since would be
            // put back, and every ban written again since came through the log anyway.
            return;
        }
        // Placed together and handed to the enforcers in parts: a node joining a fleet of
        // 100,000 bans makes a few kernel transactions of them, not 100,000.
        self.gathered = Some(Vec::new());
        // Room for the bans the book does not hold yet (a resync on a full book must not
        // double its table).
        self.book
            .reserve(bans.len().saturating_sub(self.book.len()));
        let before = self.book.len();
        for b in bans {
            self.remote_ban(b, now);
        }
        let changes = self.gathered.take().unwrap_or_default();
        let placed = self.book.len().saturating_sub(before);
        if placed > 0 {
            tracing::info!(count = placed, "resync: the fleet's bans put in force here");
        }
        if !changes.is_empty() {
            self.enforcers.apply(changes);
        }
    }
}

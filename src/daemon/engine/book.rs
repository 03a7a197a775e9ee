//! The ban book: the bans in force, kept in step with the decision store.
//!
//! Every ban is recorded before an enforcer hears of it (the store is the outbox: a change
//! not applied when moat stops is applied at the next start, from the store). A write that
//! fails is kept and retried each tick, and the ban is enforced meanwhile. Ending bans says
//! which keys the enforcers must lift: a target another ban still holds on the same ports
//! stays. Nothing here talks to an enforcer or reads a clock: the book returns the changes,
//! and the time comes in.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use jiff::{SignedDuration, Timestamp};

use crate::enforce::{BanOrder, Change, Evidence, Key};
use crate::jail::escalate::Escalation;
use crate::ledger::{BanRecord, Deciders, DecisionStore, EndReason, LedgerError, NewBan};
use crate::vocab::{Ports, Target};

/// A ban's place in the book: its jail and target.
pub type Slot = (String, IpNet);

/// A ban in force.
#[derive(Clone, Debug)]
pub struct Active {
    /// The store's id; `None` while the write is pending.
    pub id: Option<i64>,
    /// The ban as recorded.
    pub ban: NewBan,
    /// The jail's `ports` when the ban was placed; `None`: every port.
    pub ports: Option<Ports>,
}

impl Active {
    /// What an enforcer holds for it: its target and ports.
    pub fn key(&self) -> Key {
        Key {
            target: self.ban.target,
            ports: self.ports.clone(),
        }
    }

    /// The ban as an enforcer is given it (without evidence).
    pub fn order(&self) -> BanOrder {
        BanOrder {
            target: self.ban.target,
            jail: self.ban.jail.clone(),
            started: self.ban.started,
            until: self.ban.until,
            failures: self.ban.failures,
            ports: self.ports.clone(),
            evidence: Default::default(),
            node: self.ban.node.clone(),
        }
    }
}

/// What placing a ban came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// In force: the change for the enforcers.
    InForce(Change),
    /// Already recorded before a crash and decided again by the replay: the enforcers had it
    /// from the start-up reconciliation.
    Replayed,
    /// It ended before it was decided (a catch-up read): recorded as expired.
    AlreadyOver,
}

/// The bans that ended, and what the enforcers must lift.
#[derive(Debug, Default)]
pub struct Ended {
    /// The bans that ended.
    pub bans: Vec<Active>,
    /// Keys no other active ban holds.
    pub lifts: Vec<Change>,
}

/// The bans read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The bans that ended while moat was stopped, closed now.
    pub expired: usize,
    /// Their keys that no active ban holds, with their jails: an enforcer that cannot list
    /// what it holds (`exec`) learns of them only from an unban.
    pub ended_keys: Vec<(String, Key)>,
    /// The store could not be read.
    pub error: Option<LedgerError>,
}

/// The bans in force, and the store behind them.
pub struct BanBook {
    store: Box<dyn DecisionStore>,
    active: HashMap<Slot, Active>,
    /// Bans whose write failed, retried each tick.
    unsaved: Vec<(NewBan, Vec<Vec<u8>>)>,
    /// The writes since [`BanBook::begin_batch`], redone one by one should the batch fail.
    batch: Option<Batch>,
}

/// What a batch wrote, so that a batch the store could not keep loses no ban.
#[derive(Default)]
struct Batch {
    /// The bans recorded, by their slot in the book (the book holds the ban itself: a copy
    /// of 100,000 bans here would double the memory a resync takes).
    recorded: Vec<Slot>,
    ended: Vec<(Vec<i64>, Timestamp, EndReason)>,
}

impl BanBook {
    /// An empty book over `store`; [`BanBook::load`] reads its bans.
    pub fn new(store: Box<dyn DecisionStore>) -> BanBook {
        BanBook {
            store,
            active: HashMap::new(),
            unsaved: Vec::new(),
            batch: None,
        }
    }

    /// From now until [`BanBook::end_batch`], the book's writes go to the store together (a
    /// resync of 100,000 remote bans is one write to disk, not 100,000).
    pub fn begin_batch(&mut self) {
        if self.batch.is_some() {
            return;
        }
        match self.store.begin_batch() {
            Ok(()) => self.batch = Some(Batch::default()),
            // Without a batch each write is its own: slower, nothing lost.
            Err(e) => tracing::warn!("cannot start a batch of ledger writes: {e}"),
        }
    }

    /// Keeps the batch's writes. When the store cannot, they are redone one by one: the bans
    /// wait for [`BanBook::retry_unsaved`], the ends are written again now.
    pub fn end_batch(&mut self) -> Option<LedgerError> {
        let batch = self.batch.take()?;
        let e = self.store.end_batch().err()?;
        for slot in batch.recorded {
            // Written again without their evidence lines, which the book does not keep: the
            // bans are what must not be lost.
            if let Some(a) = self.active.get_mut(&slot) {
                a.id = None;
                self.unsaved.push((a.ban.clone(), Vec::new()));
            }
        }
        for (ids, at, reason) in batch.ended {
            let _ = self.store.end_bans(&ids, at, reason);
        }
        Some(e)
    }

    /// Ends the bans of `ids` in the store (remembered while a batch is open).
    fn end_ids(
        &mut self,
        ids: Vec<i64>,
        at: Timestamp,
        reason: EndReason,
    ) -> Result<(), LedgerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let r = self.store.end_bans(&ids, at, reason);
        if let Some(b) = &mut self.batch {
            b.ended.push((ids, at, reason));
        }
        r
    }

    /// Reads the active bans; those that ended by `now` are closed in the store. `ports_of`
    /// gives a jail's ports.
    pub fn load(&mut self, now: Timestamp, ports_of: impl Fn(&str) -> Option<Ports>) -> Loaded {
        let mut loaded = Loaded::default();
        let records = match self.store.active() {
            Ok(r) => r,
            Err(e) => {
                loaded.error = Some(e);
                Vec::new()
            }
        };
        self.active.reserve(records.len());
        let mut expired = Vec::new();
        for r in records {
            let ports = ports_of(&r.jail);
            if r.until.is_some_and(|u| u <= now) {
                expired.push(r.id);
                loaded.ended_keys.push((
                    r.jail,
                    Key {
                        target: r.target,
                        ports,
                    },
                ));
                continue;
            }
            let slot = (r.jail.clone(), r.target);
            self.active.insert(
                slot,
                Active {
                    id: Some(r.id),
                    ban: r.ban(),
                    ports,
                },
            );
        }
        if !expired.is_empty() {
            if let Err(e) = self.store.end_bans(&expired, now, EndReason::Expired) {
                tracing::error!("cannot close expired bans: {e}");
            }
        }
        loaded.expired = expired.len();
        let held: HashSet<Key> = self.active.values().map(Active::key).collect();
        loaded.ended_keys.retain(|(_, k)| !held.contains(k));
        loaded
    }

    /// The ban in force in `slot`, if any.
    pub fn get(&self, slot: &Slot) -> Option<&Active> {
        self.active.get(slot)
    }

    /// The bans in force, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slot, &Active)> {
        self.active.iter()
    }

    /// Makes room for `more` bans at once (a fleet's resync): one allocation of the table,
    /// not a doubling after each part, whose freed tables would stay in the heap.
    pub fn reserve(&mut self, more: usize) {
        self.active.reserve(more);
    }

    /// How many bans are in force.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether no ban is in force.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// What every enforcer should hold.
    pub fn wanted(&self) -> Vec<BanOrder> {
        self.active.values().map(Active::order).collect()
    }

    /// The store behind the book.
    pub fn store(&self) -> &dyn DecisionStore {
        self.store.as_ref()
    }

    /// The store behind the book, to write to.
    pub fn store_mut(&mut self) -> &mut dyn DecisionStore {
        self.store.as_mut()
    }

    /// Whether writes are waiting for a retry.
    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// How long the ban of a client banned before lasts: the bans of `target` that started
    /// within `escalation.within` before `at` count (in `jail`, or any jail).
    pub fn escalated(
        &self,
        escalation: &Escalation,
        jail: &str,
        target: IpNet,
        base: SignedDuration,
        at: Timestamp,
    ) -> (SignedDuration, u32) {
        let scope = (!escalation.across_jails).then_some(jail);
        let deciders = if escalation.across_nodes {
            Deciders::AnyNode
        } else {
            Deciders::ThisNode
        };
        let since = at.checked_sub(escalation.within).unwrap_or(Timestamp::MIN);
        let earlier = self
            .store
            .earlier_bans(target, scope, deciders, since, at)
            .unwrap_or_else(|e| {
                tracing::warn!("cannot count earlier bans for escalation: {e}");
                0
            });
        (escalation.bantime(base, earlier), earlier)
    }

    /// Records a ban and puts it in force; a ban of the same slot is replaced. A failed write
    /// is retried later (the error is returned, the ban is in force all the same).
    pub fn place(
        &mut self,
        ban: NewBan,
        samples: Vec<Vec<u8>>,
        ports: Option<Ports>,
        now: Timestamp,
    ) -> (Placed, Option<LedgerError>) {
        let mut error = None;
        let evidence: Evidence = samples.iter().map(|l| l.as_slice().into()).collect();
        let id = match self.store.record_ban(&ban, &samples) {
            Ok(Some(id)) => {
                if let Some(b) = &mut self.batch {
                    b.recorded.push((ban.jail.clone(), ban.target));
                }
                Some(id)
            }
            Ok(None) => return (Placed::Replayed, None),
            Err(e) => {
                self.unsaved.push((ban.clone(), samples));
                error = Some(e);
                None
            }
        };
        if ban.until.is_some_and(|u| u <= now) {
            if let Some(id) = id {
                let _ = self.end_ids(vec![id], now, EndReason::Expired);
            }
            return (Placed::AlreadyOver, error);
        }
        let active = Active { id, ban, ports };
        let change = Change::Ban(BanOrder {
            evidence,
            ..active.order()
        });
        let slot = (active.ban.jail.clone(), active.ban.target);
        if let Some(old) = self.active.insert(slot, active) {
            let _ = self.end_ids(old.id.into_iter().collect(), now, EndReason::Replaced);
        }
        (Placed::InForce(change), error)
    }

    /// Retries the writes that failed; whether none is left waiting.
    pub fn retry_unsaved(&mut self) -> bool {
        for (ban, lines) in std::mem::take(&mut self.unsaved) {
            match self.store.record_ban(&ban, &lines) {
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
        self.unsaved.is_empty()
    }

    /// The slots whose ban has run its course by `now`.
    pub fn due(&self, now: Timestamp) -> Vec<Slot> {
        self.active
            .iter()
            .filter(|(_, a)| a.ban.until.is_some_and(|u| u <= now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The slots whose target is `target`, inside it, or holding it, of `jail` when given.
    pub fn matching(&self, target: Option<IpNet>, jail: Option<&str>) -> Vec<Slot> {
        self.active
            .keys()
            .filter(|(j, _)| jail.is_none_or(|want| want == j))
            .filter(|(_, held)| target.is_none_or(|t| held.contains(&t) || t.contains(held)))
            .cloned()
            .collect()
    }

    /// Ends the bans of `slots`: recorded, and the keys no other active ban holds to lift.
    pub fn end(&mut self, slots: &[Slot], now: Timestamp, reason: EndReason) -> Ended {
        let mut ids = Vec::new();
        let mut ended = Ended::default();
        let mut lifted: HashSet<Key> = HashSet::new();
        for s in slots {
            if let Some(a) = self.active.remove(s) {
                ids.extend(a.id);
                tracing::info!(ip = %Target(a.ban.target), jail = %a.ban.jail, %reason, "unban");
                lifted.insert(a.key());
                ended.bans.push(a);
            }
        }
        let count = ids.len();
        if let Err(e) = self.end_ids(ids, now, reason) {
            tracing::error!("cannot record the end of {count} bans: {e}");
        }
        // One pass over the active bans, however many ended at once.
        if !lifted.is_empty() {
            for a in self.active.values() {
                lifted.remove(&a.key());
            }
        }
        let mut lifted: Vec<Key> = lifted.into_iter().collect();
        lifted.sort();
        ended.lifts = lifted.into_iter().map(Change::Unban).collect();
        ended
    }

    /// Gives the bans of `jails` new ports (their jail's changed); whether any moved.
    pub fn set_ports(&mut self, ports: &HashMap<String, Option<Ports>>) -> bool {
        let mut moved = false;
        for a in self.active.values_mut() {
            if let Some(p) = ports.get(&a.ban.jail) {
                if *p != a.ports {
                    a.ports = p.clone();
                    moved = true;
                }
            }
        }
        moved
    }

    /// The store was found gone: a new one, holding the active bans (their evidence and the
    /// history are lost). How many were written.
    pub fn recreate_store(&mut self) -> Result<usize, LedgerError> {
        self.store.recreate()?;
        let mut written = 0;
        for a in self.active.values_mut() {
            match self.store.record_ban(&a.ban, &[]) {
                Ok(id) => {
                    a.id = id;
                    written += 1;
                }
                Err(e) => {
                    tracing::error!(ip = %Target(a.ban.target), "cannot rewrite the ban: {e}")
                }
            }
        }
        Ok(written)
    }

    /// The newest `limit` bans the store remembers.
    pub fn history(&self, limit: u32) -> Result<Vec<BanRecord>, LedgerError> {
        self.store.recent(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jail::escalate::Steps;
    use crate::ledger::{Origin, SqliteLedger};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn ban(jail: &str, target: &str, at: i64, len: i64) -> NewBan {
        NewBan {
            jail: jail.into(),
            target: target.parse().unwrap(),
            started: t(at),
            until: Some(t(at + len)),
            failures: 5,
            origin: Origin::Jail,
            reason: String::new(),
            node: None,
        }
    }

    fn book() -> BanBook {
        BanBook::new(Box::new(SqliteLedger::open_in_memory().unwrap()))
    }

    #[test]
    fn a_batch_that_the_store_cannot_keep_loses_no_ban() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let mut b = BanBook::new(Box::new(ledger.clone()));
        b.begin_batch();
        b.place(ban("ssh", "192.0.2.7/32", 0, 600), vec![], None, t(0));
        b.place(ban("ssh", "192.0.2.8/32", 0, 600), vec![], None, t(0));
        // The same slot again: the first is replaced, in the same batch.
        b.place(ban("ssh", "192.0.2.8/32", 5, 600), vec![], None, t(5));
        ledger.spoil_batch();
        assert!(b.end_batch().is_some());
        assert!(
            ledger.active().unwrap().is_empty(),
            "the batch was rolled back"
        );
        assert!(b.has_unsaved());
        assert!(b.retry_unsaved());
        let mut kept: Vec<_> = ledger
            .active()
            .unwrap()
            .iter()
            .map(|r| (r.target.to_string(), r.started))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                ("192.0.2.7/32".to_string(), t(0)),
                ("192.0.2.8/32".to_string(), t(5))
            ]
        );
        // Their ids are known again: ending them ends them in the store.
        let ended = b.end(&b.matching(None, None), t(10), EndReason::Unbanned);
        assert_eq!(ended.bans.len(), 2);
        assert!(ledger.active().unwrap().is_empty());

        // A batch that is kept: one write, the same result as one at a time.
        b.begin_batch();
        b.place(ban("ssh", "192.0.2.9/32", 20, 600), vec![], None, t(20));
        assert!(b.end_batch().is_none());
        assert!(!b.has_unsaved());
        assert_eq!(ledger.active().unwrap().len(), 1);
    }

    #[test]
    fn a_ban_is_recorded_once_and_lifted_when_no_other_holds_it() {
        let mut b = book();
        let (placed, err) = b.place(ban("ssh", "192.0.2.7/32", 0, 600), vec![], None, t(0));
        assert!(err.is_none());
        assert!(matches!(placed, Placed::InForce(Change::Ban(_))));
        // The replay of the same decision after a crash.
        let (placed, _) = b.place(ban("ssh", "192.0.2.7/32", 0, 600), vec![], None, t(1));
        assert_eq!(placed, Placed::Replayed);
        // Another jail bans the same target: ending the first lifts nothing.
        b.place(ban("web", "192.0.2.7/32", 5, 600), vec![], None, t(5));
        let ended = b.end(&b.matching(None, Some("ssh")), t(10), EndReason::Unbanned);
        assert_eq!(ended.bans.len(), 1);
        assert!(ended.lifts.is_empty());
        let ended = b.end(&b.due(t(700)), t(700), EndReason::Expired);
        assert_eq!(ended.lifts.len(), 1);
        assert!(b.is_empty());
        let history = b.history(10).unwrap();
        assert_eq!(history.len(), 2);
        assert!(history
            .iter()
            .any(|r| r.end_reason == Some(EndReason::Unbanned)));
    }

    #[test]
    fn a_ban_over_before_it_was_decided_is_not_put_in_force() {
        let mut b = book();
        let (placed, _) = b.place(ban("ssh", "192.0.2.8/32", 0, 60), vec![], None, t(120));
        assert_eq!(placed, Placed::AlreadyOver);
        assert!(b.is_empty());
        assert_eq!(
            b.history(1).unwrap()[0].end_reason,
            Some(EndReason::Expired)
        );
    }

    #[test]
    fn loading_closes_what_ended_while_stopped_and_says_what_to_lift() {
        let store = SqliteLedger::open_in_memory().unwrap();
        let mut b = BanBook::new(Box::new(store.clone()));
        b.place(ban("ssh", "192.0.2.9/32", 0, 60), vec![], None, t(0));
        b.place(ban("ssh", "192.0.2.10/32", 0, 6000), vec![], None, t(0));
        // Held by another jail's active ban: not to lift.
        b.place(ban("web", "192.0.2.11/32", 0, 6000), vec![], None, t(0));
        b.place(ban("ssh", "192.0.2.11/32", 0, 60), vec![], None, t(0));
        let mut again = BanBook::new(Box::new(store));
        let loaded = again.load(t(100), |_| None);
        assert_eq!(loaded.expired, 2);
        assert_eq!(again.len(), 2);
        assert_eq!(loaded.ended_keys.len(), 1);
        assert_eq!(loaded.ended_keys[0].1.target.to_string(), "192.0.2.9/32");
    }

    #[test]
    fn escalation_counts_earlier_bans_in_the_jail_or_every_jail() {
        let mut b = book();
        for (jail, at) in [("ssh", 0), ("ssh", 1000), ("web", 2000)] {
            b.place(ban(jail, "192.0.2.12/32", at, 10), vec![], None, t(at));
        }
        let esc = Escalation {
            steps: Steps::Factor(2.0),
            max: SignedDuration::from_hours(24),
            across_jails: false,
            across_nodes: false,
            within: SignedDuration::from_hours(1),
        };
        let h = SignedDuration::from_hours(1);
        let target = "192.0.2.12/32".parse().unwrap();
        assert_eq!(b.escalated(&esc, "ssh", target, h, t(3000)), (h * 4, 2));
        let across = Escalation {
            across_jails: true,
            ..esc.clone()
        };
        assert_eq!(b.escalated(&across, "ssh", target, h, t(3000)), (h * 8, 3));
        // Older than `within`: forgotten.
        assert_eq!(b.escalated(&across, "ssh", target, h, t(5000)).1, 1);
        // A ban another node of the fleet decided counts only `across_nodes`.
        let remote = NewBan {
            node: Some("node2".into()),
            ..ban("ssh", "192.0.2.12/32", 2500, 10)
        };
        b.place(remote, vec![], None, t(2500));
        assert_eq!(b.escalated(&esc, "ssh", target, h, t(3000)).1, 2);
        let fleet = Escalation {
            across_nodes: true,
            ..esc.clone()
        };
        assert_eq!(b.escalated(&fleet, "ssh", target, h, t(3000)).1, 3);
    }
}

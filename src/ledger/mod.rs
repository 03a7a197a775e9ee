//! The ledger: what moat decided, and how far this node got. Two parts behind two traits:
//!
//! - [`DecisionStore`]: every ban (active and past) with its jail, target, start, end, failure
//!   count and a few of the lines that caused it. Enforcers are reconciled *from* it, so a
//!   crash between deciding and applying heals at the next start. It is what a fleet shares
//!   (SQLite alone on one host; SQLite and Redis in a cluster).
//! - [`Progress`]: this node's own, never shared: the sources' cursors and each jail's windows
//!   and totals, written together at each checkpoint. After a crash the daemon resumes from
//!   the checkpoint and re-reads the lines after it from the same state, so it decides the
//!   same bans again; recording a ban is idempotent on (jail, target, start), which makes the
//!   replay harmless.
//!
//! [`sqlite`] implements both in one embedded database file.

pub mod sqlite;

use std::collections::HashMap;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::vocab::Cursor;
pub use sqlite::SqliteLedger;

/// At most this many matching lines are kept with a ban, each at most [`SAMPLE_LINE_MAX`].
pub const SAMPLE_LINES: usize = 5;
/// The most bytes of one matching line kept with a ban; a longer line is cut.
pub const SAMPLE_LINE_MAX: usize = 1024;

/// Why the ledger cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite refused (a corrupt file, a full disk, a lock held too long).
    #[error("{path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The directory the database goes in cannot be created.
    #[error("{path}: cannot create the state directory: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why it cannot be created.
        #[source]
        source: std::io::Error,
    },
}

/// Who decided a ban.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A jail's window filled.
    Jail,
    /// `moat ban`.
    Manual,
}

impl Origin {
    /// As the ledger stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Jail => "jail",
            Origin::Manual => "manual",
        }
    }

    /// From the ledger's text; anything else is a jail's (the only other origin written).
    pub fn from_stored(s: &str) -> Origin {
        match s {
            "manual" => Origin::Manual,
            _ => Origin::Jail,
        }
    }
}

/// Why a ban ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// Its time ran out.
    #[serde(rename = "expired")]
    Expired,
    /// Lifted by hand (`moat unban`).
    #[serde(rename = "unbanned")]
    Unbanned,
    /// A new ban of the same target in the same jail took its place.
    #[serde(rename = "replaced")]
    Replaced,
    /// Its jail was removed from the configuration.
    #[serde(rename = "jail removed")]
    JailRemoved,
}

impl EndReason {
    /// As the ledger stores it (and the unique index of bans names `unbanned`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Unbanned => "unbanned",
            EndReason::Replaced => "replaced",
            EndReason::JailRemoved => "jail removed",
        }
    }

    /// From the ledger's text; `None` for a text this build does not know.
    pub fn from_stored(s: &str) -> Option<EndReason> {
        [
            EndReason::Expired,
            EndReason::Unbanned,
            EndReason::Replaced,
            EndReason::JailRemoved,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether the client's window in its jail is emptied too: a ban lifted by hand (or
    /// ended with its jail) gives the client a fresh start; one that ran out does not change
    /// what the window still holds.
    pub fn clears_window(self) -> bool {
        self != EndReason::Expired
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ban about to be recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBan {
    /// The jail that banned (or the one named with `moat ban`).
    pub jail: String,
    /// The address or network banned.
    pub target: IpNet,
    /// When the ban began.
    pub started: Timestamp,
    /// `None`: forever.
    pub until: Option<Timestamp>,
    /// The failures in the window that made the ban (0 for a ban by hand).
    pub failures: u32,
    /// Who decided it.
    pub origin: Origin,
    /// Why, for people: `5 failures`, or the text given with `moat ban`.
    pub reason: String,
    /// The node of the fleet that decided it; `None`: this one.
    pub node: Option<String>,
}

/// Whose earlier bans count for escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deciders {
    /// Only the bans this node decided.
    ThisNode,
    /// Also those other nodes of a fleet decided and this node received.
    AnyNode,
}

/// A recorded ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The ledger's id of the ban (its row), what its lines are stored under.
    pub id: i64,
    /// The jail that banned.
    pub jail: String,
    /// The address or network banned.
    pub target: IpNet,
    /// When the ban began.
    pub started: Timestamp,
    /// When it runs out; `None`: forever.
    pub until: Option<Timestamp>,
    /// The failures that made the ban (0 for a ban by hand).
    pub failures: u32,
    /// Who decided it.
    pub origin: Origin,
    /// Why, for people.
    pub reason: String,
    /// The node of the fleet that decided it; `None`: this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it ended, if it has (by expiry, by hand, replaced, with its jail).
    pub ended: Option<Timestamp>,
    /// Why it ended, when it has; `None` also for a reason this build does not know.
    pub end_reason: Option<EndReason>,
}

impl BanRecord {
    /// The ban as it was recorded.
    pub fn ban(&self) -> NewBan {
        NewBan {
            jail: self.jail.clone(),
            target: self.target,
            started: self.started,
            until: self.until,
            failures: self.failures,
            origin: self.origin,
            reason: self.reason.clone(),
            node: self.node.clone(),
        }
    }
}

/// A jail's state at a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct JailCheckpoint {
    /// The jail's windows and bans, as `Jail::snapshot` writes them.
    pub windows: Vec<u8>,
    /// The failures the jail has counted since it was created, for `moat status`.
    pub failed_total: u64,
}

/// Where moat's decisions are kept.
pub trait DecisionStore: Send {
    /// Where, for status and messages.
    fn location(&self) -> String;

    /// Whether the store went away behind moat's back (its file deleted); see
    /// [`DecisionStore::recreate`].
    fn is_gone(&self) -> bool {
        false
    }

    /// Creates the store again, empty, where it was (after [`DecisionStore::is_gone`]).
    fn recreate(&mut self) -> Result<(), LedgerError>;

    /// Starts a batch: the writes until [`DecisionStore::end_batch`] are kept together, in one
    /// write to disk (a node joining a fleet records 100,000 remote bans at once; one
    /// transaction each made that 30 s). Nothing else may write in between.
    fn begin_batch(&mut self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Keeps the batch's writes; on an error, none of them are kept.
    fn end_batch(&mut self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Records a ban and its sample lines. Its id, or `None` when the same ban (jail,
    /// target, start) is already recorded and was not lifted by hand, as after a replay.
    fn record_ban(&mut self, ban: &NewBan, lines: &[Vec<u8>]) -> Result<Option<i64>, LedgerError>;

    /// Ends the given bans at `at`.
    fn end_bans(
        &mut self,
        ids: &[i64],
        at: Timestamp,
        reason: EndReason,
    ) -> Result<(), LedgerError>;

    /// Bans not yet ended, in no particular order.
    fn active(&self) -> Result<Vec<BanRecord>, LedgerError>;

    /// The newest `limit` bans, active or not, newest first.
    fn recent(&self, limit: u32) -> Result<Vec<BanRecord>, LedgerError>;

    /// How many bans of `target` started in `[since, before)`, in `jail` or in any jail,
    /// decided by this node or by any node of the fleet.
    fn earlier_bans(
        &self,
        target: IpNet,
        jail: Option<&str>,
        deciders: Deciders,
        since: Timestamp,
        before: Timestamp,
    ) -> Result<u32, LedgerError>;

    /// How many bans each jail ever made (as far as the store remembers).
    fn bans_per_jail(&self) -> Result<HashMap<String, u64>, LedgerError>;

    /// The sample lines kept with a ban.
    fn ban_lines(&self, id: i64) -> Result<Vec<Vec<u8>>, LedgerError>;

    /// The newest `limit` bans of `target` (any jail), active or not, newest first.
    fn bans_of(&self, target: IpNet, limit: u32) -> Result<Vec<BanRecord>, LedgerError> {
        let mut all = self.recent(limit.saturating_mul(100).max(10_000))?;
        all.retain(|b| b.target == target);
        all.truncate(limit as usize);
        Ok(all)
    }
}

/// Where this node's progress is kept.
pub trait Progress: Send {
    /// Saves the cursors and the jails' states together: the point a restart resumes from.
    fn checkpoint(
        &mut self,
        cursors: &[(String, Cursor)],
        jails: &[(String, JailCheckpoint)],
        now: Timestamp,
    ) -> Result<(), LedgerError>;

    /// The cursors saved at the last checkpoint, by source.
    fn cursors(&self) -> Result<HashMap<String, Cursor>, LedgerError>;

    /// A jail's state at the last checkpoint.
    fn jail_checkpoint(&self, name: &str) -> Result<Option<JailCheckpoint>, LedgerError>;
}

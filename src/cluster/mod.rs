//! The cluster: what a fleet of nodes shares through Redis.
//!
//! Each node keeps its SQLite ledger as its own truth and outbox; Redis carries what the
//! nodes must share ([`wire`]: a stream of decisions, a hash of active bans, heartbeats).
//! The [`run`] task holds the connection ([`link`], with backoff): it publishes this node's
//! decisions ([`Outbound`], from the engine), follows the stream with a blocking read and
//! hands what other nodes decided to the engine ([`Inbound`]), which applies it through the
//! same safety rules and enforcers as its own. [`status`] is what `moat status` shows;
//! [`settings`] is the `[cluster]` table. [`lease`] decides which node writes to Cloudflare. `docs/cluster.md` tells the story for users.

pub mod lease;
pub mod link;
pub mod run;
pub mod settings;
pub mod status;
pub mod wire;

use tokio::sync::oneshot;

pub use settings::ClusterSettings;
pub use status::ClusterStatus;
pub use wire::{Event, FleetBan, Kind};

/// The progress key under which the last stream id read is saved with the sources' cursors.
pub const CURSOR_KEY: &str = "cluster:moat:log";

/// What the cluster task hands the engine.
#[derive(Debug)]
pub enum Inbound {
    /// A decision of another node, read from the stream at `stream_id`.
    Event {
        /// The decision.
        event: Event,
        /// Its id in the stream: the position to resume from.
        stream_id: String,
    },
    /// Every active ban of the other nodes, as the hash holds them: the stream was trimmed
    /// past this node's position (or Redis lost it), so the remote bans become these (those
    /// missing end as `lift` says).
    Resync {
        /// The other nodes' active bans.
        bans: Vec<FleetBan>,
        /// The stream's last id when the hash was read: the position to resume from (`None`:
        /// unchanged, the log is being read on).
        stream_id: Option<String>,
        /// Which remote bans missing from `bans` end.
        lift: Lift,
    },
    /// Asks for this node's shared active bans, to write again what Redis lost.
    OwnBans(oneshot::Sender<Vec<FleetBan>>),
}

/// Which of the remote bans a resync does not name end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lift {
    /// All of them: the active set is whole (the log was trimmed past this node, or this is
    /// its first start).
    Missing,
    /// None: Redis lost its state (restarted empty, or a failover to a replica behind), and
    /// the other nodes may not have written their bans again yet. Dropping them now would
    /// leave them unenforced here until those nodes do: a second look follows.
    Nothing,
    /// Those that started before this time (ms since the epoch): the second look, once the
    /// other nodes have had time to write their bans again. A ban still missing then was
    /// lifted, or its node is gone with it.
    MissingBefore(i64),
}

/// What the engine hands the cluster task.
#[derive(Debug)]
pub enum Outbound {
    /// A decision to publish (this node's ban, or an unban made here).
    Publish(Event),
    /// A ban of this node that ran out or was replaced: removed from the active set (every
    /// node ends it at the same time by itself, so the log needs no entry).
    Forget(String),
}

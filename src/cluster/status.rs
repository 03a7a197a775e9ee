//! What `moat status` shows of the cluster, kept up to date by the cluster task and the
//! engine.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The cluster as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// Where Redis is (the URL or the sentinels, without credentials).
    pub redis: String,
    /// Whether Redis answers now.
    pub reachable: bool,
    /// The last round trip to Redis, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Why the cluster is degraded (`None`: it is not).
    pub degraded: Option<String>,
    /// The nodes' last heartbeats, this one included.
    pub nodes: Vec<NodeStatus>,
    /// Decisions published by this node.
    pub published: u64,
    /// Decisions of other nodes received.
    pub received: u64,
    /// Entries refused (malformed, oversized, or a target the safety rules refuse).
    pub refused: u64,
    /// The last refusal, with its reason.
    pub last_refused: Option<String>,
    /// The delay of the last decision received, in milliseconds.
    pub lag_ms: Option<u64>,
    /// Decisions waiting to be published (Redis unreachable).
    pub queued: u64,
    /// This node's bans in force that it shares.
    pub own_bans: u64,
    /// Bans of other nodes in force here.
    pub remote_bans: u64,
    /// The Cloudflare lease: its key and who holds it (`None`: no Cloudflare enforcer).
    #[serde(default)]
    pub cloudflare_lease: Option<String>,
}

/// A node, as its heartbeat says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its name.
    pub node: String,
    /// Its last heartbeat, in milliseconds since the epoch.
    pub last_heartbeat: i64,
    /// Whether that heartbeat is recent (within 15 s).
    pub alive: bool,
    /// The bans it decided that are in force.
    pub bans: u64,
    /// The delay of the last decision it received, in milliseconds.
    pub lag_ms: Option<u64>,
}

/// The status shared by the cluster task and the engine.
pub type SharedStatus = Arc<Mutex<ClusterStatus>>;

impl ClusterStatus {
    /// Counts a refused entry and remembers why.
    pub fn refuse(&mut self, why: String) {
        self.refused += 1;
        self.last_refused = Some(why);
    }
}

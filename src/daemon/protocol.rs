//! The control protocol between `moat` commands and the daemon: one JSON request per
//! connection, one JSON reply, each on one line, over the Unix socket.

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ledger::BanRecord;

/// The longest request the daemon reads.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Ping,
    Status {
        jail: Option<String>,
    },
    Bans {
        /// Past bans too, newest first, up to this many.
        #[serde(default)]
        history: Option<u32>,
    },
    Ban {
        target: String,
        jail: Option<String>,
        /// A duration such as "1h" or "forever"; the jail's bantime when absent.
        duration: Option<String>,
        reason: Option<String>,
        /// Ban a network wider than /16 (IPv4) or /32 (IPv6).
        #[serde(default)]
        force: bool,
    },
    Unban {
        target: Option<String>,
        #[serde(default)]
        all: bool,
        /// Only this jail's bans.
        #[serde(default)]
        jail: Option<String>,
    },
    Reload,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Ok { ok: bool, result: serde_json::Value },
    Err { ok: bool, error: String },
}

impl Reply {
    pub fn ok(result: impl Serialize) -> Reply {
        Reply::Ok {
            ok: true,
            result: serde_json::to_value(result).unwrap_or(serde_json::Value::Null),
        }
    }
    pub fn err(error: impl Into<String>) -> Reply {
        Reply::Err {
            ok: false,
            error: error.into(),
        }
    }
}

/// What `moat status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub started: Timestamp,
    pub config: String,
    pub ledger: String,
    /// Problems the daemon wants an admin to see (unwritable state, unreadable sources...).
    pub warnings: Vec<String>,
    pub enforcers: Vec<EnforcerStatus>,
    pub sources: Vec<SourceStatus>,
    pub jails: Vec<JailStatus>,
    /// The fleet, when `[cluster]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EnforcerStatus {
    pub name: String,
    pub applied: u64,
    pub failed: u64,
    /// Changes waiting, including those waiting for a retry.
    pub queued: usize,
    pub gave_up: u64,
    /// Times its state was found gone or changed (a ruleset flush) and restored.
    #[serde(default)]
    pub repairs: u64,
    /// Why this enforcer (e.g. what `kernel` auto-detection found).
    #[serde(default)]
    pub detail: Option<String>,
    /// What it has to say now (requests sent, bans it could not place).
    #[serde(default)]
    pub remark: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub next_retry: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source as configured (a path, a glob, `-`).
    pub source: String,
    /// The files it currently names.
    pub files: Vec<FileStatus>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileStatus {
    pub path: String,
    pub offset: u64,
    /// Bytes written and not yet read.
    pub lag: u64,
    pub lines: u64,
    /// Lines longer than the cap (1 MiB), skipped and never matched.
    #[serde(default)]
    pub overlong: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JailStatus {
    pub name: String,
    pub filter: String,
    pub sources: Vec<String>,
    pub maxretry: u32,
    pub findtime_secs: i64,
    /// `None`: forever.
    pub bantime_secs: Option<i64>,
    pub currently_failing: usize,
    pub total_failed: u64,
    pub currently_banned: usize,
    pub total_banned: u64,
    /// Matched lines too old to count when read (catch-up after downtime).
    pub stale: u64,
    /// Matched lines whose time could not be read.
    pub unparsed_time: u64,
    /// Lines too long for a look-around pattern of the filter (not matched).
    #[serde(default)]
    pub too_long: u64,
    /// Bans refused by the safety rules (own addresses, loopback, ...).
    #[serde(default)]
    pub refused: u64,
    pub banned: Vec<ActiveBan>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveBan {
    pub target: IpNet,
    pub jail: String,
    pub started: Timestamp,
    /// `None`: forever.
    pub until: Option<Timestamp>,
    pub failures: u32,
    pub reason: String,
    /// The fleet node that decided it, when another did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What `moat bans` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bans {
    pub active: Vec<ActiveBan>,
    pub history: Vec<BanRecord>,
}

//! The control protocol between `moat` commands and the daemon: one JSON request per
//! connection, one JSON reply, each on one line, over the Unix socket.

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ledger::BanRecord;

/// The longest request the daemon reads.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request, by its `cmd` (`{"cmd":"ban","target":"192.0.2.7"}`); unknown fields are refused.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Whether the daemon answers (`"pong"`).
    Ping,
    /// The daemon's [`Status`] (`moat status`).
    Status {
        /// Only this jail; every jail when absent.
        jail: Option<String>,
    },
    /// The active bans and, when asked, past ones: [`Bans`] (`moat bans`).
    Bans {
        /// Past bans too, newest first, up to this many.
        #[serde(default)]
        history: Option<u32>,
    },
    /// Bans a target by hand (`moat ban`); the reply is the [`ActiveBan`].
    Ban {
        /// The address or network (CIDR) to ban, as typed.
        target: String,
        /// The jail the ban belongs to; [`MANUAL_JAIL`](super::engine::MANUAL_JAIL) when absent.
        jail: Option<String>,
        /// A duration such as "1h" or "forever"; the jail's bantime when absent.
        duration: Option<String>,
        /// Why, in the operator's words; empty when absent.
        reason: Option<String>,
        /// Ban a network wider than /16 (IPv4) or /32 (IPv6).
        #[serde(default)]
        force: bool,
    },
    /// Ends bans (`moat unban`); the reply lists the bans ended.
    Unban {
        /// The address or network whose bans end; needed unless `all`.
        target: Option<String>,
        /// Every ban (of `jail`, when given) instead of one target's.
        #[serde(default)]
        all: bool,
        /// Only this jail's bans.
        #[serde(default)]
        jail: Option<String>,
    },
    /// Reads the configuration again and applies it without a restart (`moat reload`).
    Reload,
    /// One ban in full: its evidence, its jail's rule, the target's earlier bans, which
    /// enforcers hold it (`moat bans show`).
    Show {
        /// The banned address or network.
        target: String,
        /// The ban in this jail, when the target is banned in several.
        #[serde(default)]
        jail: Option<String>,
    },
    /// Everything the web dashboard shows, in one reply.
    Dashboard,
}

/// The reply to a [`Request`]: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// The request was carried out.
    Ok {
        /// Always `true`.
        ok: bool,
        /// What the request asked for (a [`Status`], a list of bans, `"pong"`, ...).
        result: serde_json::Value,
    },
    /// The request was refused or failed.
    Err {
        /// Always `false`.
        ok: bool,
        /// Why, for the operator.
        error: String,
    },
}

impl Reply {
    /// A success carrying `result` as JSON (`null` when it cannot be serialized).
    pub fn ok(result: impl Serialize) -> Reply {
        Reply::Ok {
            ok: true,
            result: serde_json::to_value(result).unwrap_or(serde_json::Value::Null),
        }
    }
    /// A failure carrying `error`, a message for the operator.
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
    /// moat's version (the crate's).
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// When the daemon started.
    pub started: Timestamp,
    /// The configuration files read, comma-separated, main file first.
    pub config: String,
    /// Where the ledger is (its file).
    pub ledger: String,
    /// Problems the daemon wants an admin to see (unwritable state, unreadable sources...).
    pub warnings: Vec<String>,
    /// Each enforcer's counts and errors.
    pub enforcers: Vec<EnforcerStatus>,
    /// Each configured source and the files it names.
    pub sources: Vec<SourceStatus>,
    /// Each jail's rule and counts, then hand-made bans outside any jail (`manual`).
    pub jails: Vec<JailStatus>,
    /// The fleet, when `[cluster]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// One enforcer's health in [`Status`]: its counts since the daemon started and its last error.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EnforcerStatus {
    /// The enforcer's name, as `[enforce] use` names it.
    pub name: String,
    /// Changes (bans placed or lifted) it applied.
    pub applied: u64,
    /// Attempts that failed, each retry counted.
    pub failed: u64,
    /// Changes waiting, including those waiting for a retry.
    pub queued: usize,
    /// Changes dropped: no retry left, or an error a retry cannot fix.
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
    /// The last failure: the change and the error.
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<Timestamp>,
    /// When the next waiting change is tried again, if any waits.
    pub next_retry: Option<Timestamp>,
}

/// One configured source in [`Status`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source as configured (a path, a glob, `-`).
    pub source: String,
    /// The files it currently names.
    pub files: Vec<FileStatus>,
    /// Why it cannot be read now (a glob that fails, a file it may not open), if so.
    pub error: Option<String>,
}

/// One file (or journal, or container log) a source reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FileStatus {
    /// The file's path, or the stream's name.
    pub path: String,
    /// How far it has been read, in bytes.
    pub offset: u64,
    /// Bytes written and not yet read.
    pub lag: u64,
    /// Lines read from it since moat started.
    pub lines: u64,
    /// Lines longer than the cap (1 MiB), skipped and never matched.
    #[serde(default)]
    pub overlong: u64,
    /// When a line was last read from it (since moat started).
    #[serde(default)]
    pub last_line: Option<Timestamp>,
}

/// One jail in [`Status`]: its rule, its counts, its bans.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JailStatus {
    /// The jail's name.
    pub name: String,
    /// How its filter was named (a built-in name, `inline`, `name + inline`).
    pub filter: String,
    /// Its sources, as written.
    pub sources: Vec<String>,
    /// Failures within `findtime` that ban a client.
    pub maxretry: u32,
    /// The window failures are counted over, in seconds.
    pub findtime_secs: i64,
    /// `None`: forever.
    pub bantime_secs: Option<i64>,
    /// Clients with failures in their window and no ban, now.
    pub currently_failing: usize,
    /// Failures counted since moat started.
    pub total_failed: u64,
    /// Its bans in force now.
    pub currently_banned: usize,
    /// Its bans ever, from the ledger.
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
    /// Its bans in force, oldest first.
    pub banned: Vec<ActiveBan>,
}

/// A ban in force, as replies and the dashboard show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveBan {
    /// The banned address (as a /32 or /128) or network.
    pub target: IpNet,
    /// The jail that decided it (`manual` for a ban by hand outside any jail).
    pub jail: String,
    /// When it started.
    pub started: Timestamp,
    /// `None`: forever.
    pub until: Option<Timestamp>,
    /// The failures that made it (0 for a ban by hand).
    pub failures: u32,
    /// Why, in words (empty when a ban by hand gave none).
    pub reason: String,
    /// The fleet node that decided it, when another did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What `moat bans` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bans {
    /// The bans in force, oldest first.
    pub active: Vec<ActiveBan>,
    /// Past bans, newest first, as many as asked for (none unless asked).
    pub history: Vec<BanRecord>,
}

/// A jail's rule as `moat bans show` and the dashboard print it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rule {
    /// The filter's name or description.
    pub filter: String,
    /// Failures that make a ban.
    pub maxretry: u32,
    /// The window the failures must fall in, in seconds.
    pub findtime_secs: i64,
    /// The base ban time in seconds; `None`: forever.
    pub bantime_secs: Option<i64>,
    /// Whether repeat offenders get longer bans.
    pub escalates: bool,
}

/// An enforcer that was sent a ban, and since when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The enforcer's name, as `[enforce] use` names it.
    pub enforcer: String,
    /// When it was sent the ban: the ban's start, or the daemon's start for a ban it was
    /// given back at start-up.
    pub since: Timestamp,
    /// Whether it has changes waiting or failing (the ban may not be in place yet).
    pub pending: bool,
}

/// One ban in full: what `moat bans show` prints and the dashboard lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BanDetail {
    /// The ban itself, with the same fields as everywhere else.
    #[serde(flatten)]
    pub ban: ActiveBan,
    /// Who decided it: `log` (a jail's window), `manual`.
    pub origin: String,
    /// The lines that caused it, oldest first, as text (invalid UTF-8 replaced); attacker
    /// text, to be escaped wherever it is shown.
    pub evidence: Vec<String>,
    /// Its jail's rule; `None` for bans by hand outside any jail.
    pub rule: Option<Rule>,
    /// The target's earlier bans (any jail), newest first.
    pub history: Vec<BanRecord>,
    /// How many earlier bans of the target counted when it was escalated (0: a first ban).
    pub escalation: u32,
    /// The enforcers it was sent to.
    pub enforcers: Vec<Holder>,
}

/// Failures and bans per jail over a span, in equal buckets, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timeline {
    /// The start of the first bucket.
    pub start: Option<Timestamp>,
    /// Each bucket's length in seconds.
    pub bucket_secs: i64,
    /// One series per jail.
    pub jails: Vec<JailSeries>,
}

/// One jail's counts in a [`Timeline`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JailSeries {
    /// The jail.
    pub jail: String,
    /// Failures counted per bucket (since moat started).
    pub failures: Vec<u32>,
    /// Bans per bucket (from the ledger).
    pub bans: Vec<u32>,
}

/// A count of bans for a name (an address, a network, a jail).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Count {
    /// What was counted: a target, a network or a jail.
    pub name: String,
    /// How many bans in the last 7 days.
    pub bans: u64,
}

/// What the dashboard shows, in one reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dashboard {
    /// The daemon's status (jails, sources, enforcers, warnings).
    pub status: Status,
    /// The active bans in full, newest first (at most [`DASHBOARD_BANS`]).
    pub bans: Vec<BanDetail>,
    /// How many bans are active (more than listed when the list was cut).
    pub active: usize,
    /// The last 24 hours in 5-minute buckets.
    pub day: Timeline,
    /// The last 7 days in hourly buckets.
    pub week: Timeline,
    /// The most banned addresses over the last 7 days.
    pub top_targets: Vec<Count>,
    /// The most banned networks (/24 for IPv4, /64 for IPv6) over the last 7 days.
    pub top_networks: Vec<Count>,
    /// The jails with the most bans over the last 7 days.
    pub top_jails: Vec<Count>,
    /// Every published port of every container and the port policy's verdict on it.
    pub ports: Vec<serde_json::Value>,
}

/// At most this many active bans are listed in full on the dashboard.
pub const DASHBOARD_BANS: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_in_full_uses_the_same_field_names_as_a_ban() {
        let started = Timestamp::from_second(1_800_000_000).unwrap();
        let d = BanDetail {
            ban: ActiveBan {
                target: "192.0.2.7/32".parse().unwrap(),
                jail: "ssh".into(),
                started,
                until: None,
                failures: 3,
                reason: "3 failures".into(),
                node: None,
            },
            origin: "log".into(),
            evidence: vec!["<script>\r\n".into()],
            rule: None,
            history: Vec::new(),
            escalation: 0,
            enforcers: vec![Holder {
                enforcer: "nftables".into(),
                since: started,
                pending: false,
            }],
        };
        let v = serde_json::to_value(&d).unwrap();
        for key in [
            "target", "jail", "started", "until", "failures", "reason", "origin",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        assert_eq!(v["evidence"][0], "<script>\r\n");
        let text = serde_json::to_string(&d).unwrap();
        assert!(
            text.contains(r#""<script>\r\n""#),
            "escaped in the JSON: {text}"
        );
        let back: BanDetail = serde_json::from_value(v).unwrap();
        assert_eq!(back.ban, d.ban);
    }

    #[test]
    fn the_new_requests_parse() {
        let r: Request = serde_json::from_str(r#"{"cmd":"show","target":"192.0.2.7"}"#).unwrap();
        assert_eq!(
            r,
            Request::Show {
                target: "192.0.2.7".into(),
                jail: None
            }
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"dashboard"}"#).unwrap();
        assert_eq!(r, Request::Dashboard);
    }
}

//! The entries the fleet writes in Redis, and their strict reading.
//!
//! A decision is one entry of the stream [`LOG_KEY`] with two fields: `kind` (`ban` or
//! `unban`) and `ban`, a JSON object ([`FleetBan`]); the active bans are the same JSON
//! objects in the hash [`BANS_KEY`], by fleet-wide id. Whoever can write to Redis can write
//! anything there, so every entry is read as hostile input: a size cap, no unknown field,
//! names of a known shape, the target parsed as an address or network, the times in order,
//! at most [`SAMPLE_LINES`] evidence lines of at most [`SAMPLE_LINE_MAX`] bytes. What fails
//! is a [`Refused`] with its reason, never a panic. (Whether the target may be banned *here*,
//! its width, the node's own addresses, is the engine's safety rule, applied to remote bans
//! as to its own.)

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::settings::valid_name;
use crate::ledger::{Origin, SAMPLE_LINES, SAMPLE_LINE_MAX};

/// The stream of decisions (bans and unbans), in the order Redis received them.
pub const LOG_KEY: &str = "moat:log";
/// The hash of active bans: fleet id → [`FleetBan`] as JSON.
pub const BANS_KEY: &str = "moat:bans";
/// The hash of the nodes' last heartbeats: node → [`Heartbeat`] as JSON.
pub const NODES_KEY: &str = "moat:nodes";
/// A node's marker, `moat:node:<node>`, with a time to live: gone means Redis lost what the
/// node wrote (restarted empty), and the node writes its active bans again.
pub const NODE_KEY_PREFIX: &str = "moat:node:";
/// A value the first node to reach an empty Redis writes (`SET NX`): when it changes under a
/// running node, Redis lost its state (restarted empty), whatever the log looks like since.
pub const EPOCH_KEY: &str = "moat:epoch";
/// The largest entry read (the JSON of one ban with its evidence lines fits in about 6 KiB).
pub const ENTRY_MAX: usize = 16 * 1024;
/// The longest reason carried.
pub const REASON_MAX: usize = 256;

/// What an entry of the log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The ban is in force from its start to its end.
    Ban,
    /// The ban was lifted before its end.
    Unban,
}

impl Kind {
    /// As the log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ban => "ban",
            Kind::Unban => "unban",
        }
    }
}

/// A ban as the fleet shares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetBan {
    /// The node that decided it.
    pub node: String,
    /// The jail that decided it (on that node), or `manual`.
    pub jail: String,
    /// The address or network banned.
    pub target: IpNet,
    /// When it started, in milliseconds since the epoch.
    pub started: i64,
    /// When it ends, in milliseconds since the epoch; `None`: never.
    pub until: Option<i64>,
    /// How many failures led to it.
    pub failures: u32,
    /// Whether a jail or an admin decided it.
    pub origin: Origin,
    /// Why (a jail's count, or the admin's words).
    #[serde(default)]
    pub reason: String,
    /// The evidence lines (as text; bytes that are not UTF-8 are replaced).
    #[serde(default)]
    pub lines: Vec<String>,
}

impl FleetBan {
    /// The fleet-wide id: `<node>/<jail>/<target>/<start ms>`, the same on every node and
    /// for every replay of the same decision.
    pub fn id(&self) -> String {
        fleet_id(&self.node, &self.jail, self.target, self.started)
    }

    /// When it started.
    pub fn started_at(&self) -> Timestamp {
        Timestamp::from_millisecond(self.started).unwrap_or(Timestamp::MIN)
    }

    /// When it ends; `None`: never.
    pub fn until_at(&self) -> Option<Timestamp> {
        self.until
            .map(|u| Timestamp::from_millisecond(u).unwrap_or(Timestamp::MAX))
    }

    /// The JSON written to Redis.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a FleetBan always serializes")
    }

    /// Reads and checks the JSON of a ban.
    pub fn parse(bytes: &[u8]) -> Result<FleetBan, Refused> {
        if bytes.len() > ENTRY_MAX {
            return Err(Refused::TooLarge(bytes.len()));
        }
        let ban: FleetBan =
            serde_json::from_slice(bytes).map_err(|e| Refused::Malformed(e.to_string()))?;
        ban.check()?;
        Ok(ban)
    }

    fn check(&self) -> Result<(), Refused> {
        if !valid_name(&self.node) {
            return Err(Refused::Field("node"));
        }
        if !valid_name(&self.jail) {
            return Err(Refused::Field("jail"));
        }
        if self.target.trunc() != self.target {
            return Err(Refused::Field("target (host bits set)"));
        }
        if Timestamp::from_millisecond(self.started).is_err() {
            return Err(Refused::Field("started"));
        }
        if let Some(u) = self.until {
            if Timestamp::from_millisecond(u).is_err() || u <= self.started {
                return Err(Refused::Field("until"));
            }
        }
        if self.reason.len() > REASON_MAX || self.reason.chars().any(char::is_control) {
            return Err(Refused::Field("reason"));
        }
        if self.lines.len() > SAMPLE_LINES || self.lines.iter().any(|l| l.len() > SAMPLE_LINE_MAX) {
            return Err(Refused::Field("lines"));
        }
        Ok(())
    }
}

/// The fleet-wide id of a ban.
pub fn fleet_id(node: &str, jail: &str, target: IpNet, started_ms: i64) -> String {
    format!("{node}/{jail}/{target}/{started_ms}")
}

/// One entry of the log, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Ban or unban.
    pub kind: Kind,
    /// The ban it is about.
    pub ban: FleetBan,
    /// The node that lifted it (an unban), which may not be the one that decided it.
    pub by: String,
}

/// Why an entry was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Larger than [`ENTRY_MAX`].
    #[error("{0} bytes, more than the {ENTRY_MAX} allowed")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A field of the wrong shape.
    #[error("bad {0}")]
    Field(&'static str),
    /// A field missing from the stream entry.
    #[error("no {0} field")]
    Missing(&'static str),
    /// The hash's key is not the ban's id.
    #[error("its key is not the ban's id")]
    WrongId,
}

impl Event {
    /// The stream entry's fields.
    pub fn fields(&self) -> [(&'static str, String); 3] {
        [
            ("kind", self.kind.as_str().to_string()),
            ("by", self.by.clone()),
            ("ban", self.ban.to_json()),
        ]
    }

    /// Reads a stream entry's fields (name, value), refusing anything unexpected.
    pub fn parse(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<Event, Refused> {
        let total: usize = fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total > ENTRY_MAX + 256 {
            return Err(Refused::TooLarge(total));
        }
        let get = |name: &'static str| {
            fields
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| v.as_slice())
                .ok_or(Refused::Missing(name))
        };
        if fields.len() != 3 {
            return Err(Refused::Malformed(format!(
                "{} fields, not kind, by and ban",
                fields.len()
            )));
        }
        let kind = match get("kind")? {
            b"ban" => Kind::Ban,
            b"unban" => Kind::Unban,
            _ => return Err(Refused::Field("kind")),
        };
        let by = std::str::from_utf8(get("by")?).map_err(|_| Refused::Field("by"))?;
        if !valid_name(by) {
            return Err(Refused::Field("by"));
        }
        let ban = FleetBan::parse(get("ban")?)?;
        if kind == Kind::Ban && by != ban.node {
            return Err(Refused::Field("by (a ban is published by its own node)"));
        }
        Ok(Event {
            kind,
            ban,
            by: by.to_string(),
        })
    }
}

/// Reads an entry of the hash of active bans: its key must be the ban's id.
pub fn parse_active(key: &[u8], value: &[u8]) -> Result<FleetBan, Refused> {
    let ban = FleetBan::parse(value)?;
    if key != ban.id().as_bytes() {
        return Err(Refused::WrongId);
    }
    Ok(ban)
}

/// What a node says of itself every few seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// When, in milliseconds since the epoch.
    pub at: i64,
    /// The bans this node decided that are in force.
    pub bans: u64,
    /// The delay of the last decision it received, in milliseconds (from the stream entry's
    /// time to its arrival here).
    pub lag_ms: Option<u64>,
    /// moat's version.
    #[serde(default)]
    pub version: String,
}

impl Heartbeat {
    /// Reads a heartbeat; `None` for anything malformed or oversized.
    pub fn parse(bytes: &[u8]) -> Option<Heartbeat> {
        if bytes.len() > 1024 {
            return None;
        }
        let h: Heartbeat = serde_json::from_slice(bytes).ok()?;
        (h.version.len() <= 32 && h.version.chars().all(|c| c.is_ascii_graphic())).then_some(h)
    }
}

/// The time a stream id (`<ms>-<seq>`) was given, in milliseconds.
pub fn id_ms(id: &str) -> Option<i64> {
    id.split_once('-')?.0.parse().ok()
}

/// Orders two stream ids (`<ms>-<seq>`); ids that do not parse sort first.
pub fn id_key(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban() -> FleetBan {
        FleetBan {
            node: "node1".into(),
            jail: "sshd".into(),
            target: "192.0.2.100/32".parse().unwrap(),
            started: 1_800_000_000_000,
            until: Some(1_800_003_600_000),
            failures: 5,
            origin: Origin::Jail,
            reason: "5 failures".into(),
            lines: vec!["Failed password for root from 192.0.2.100".into()],
        }
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn fields(kind: &str, by: &str, json: &str) -> Fields {
        vec![
            (b"kind".to_vec(), kind.as_bytes().to_vec()),
            (b"by".to_vec(), by.as_bytes().to_vec()),
            (b"ban".to_vec(), json.as_bytes().to_vec()),
        ]
    }

    #[test]
    fn an_event_reads_back_as_written() {
        let e = Event {
            kind: Kind::Ban,
            ban: ban(),
            by: "node1".into(),
        };
        let f: Vec<(Vec<u8>, Vec<u8>)> = e
            .fields()
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(Event::parse(&f).unwrap(), e);
        assert_eq!(e.ban.id(), "node1/sshd/192.0.2.100/32/1800000000000");
        assert_eq!(
            parse_active(e.ban.id().as_bytes(), e.ban.to_json().as_bytes()),
            Ok(ban())
        );
        assert_eq!(
            parse_active(b"node2/x", e.ban.to_json().as_bytes()),
            Err(Refused::WrongId)
        );
    }

    #[test]
    fn hostile_entries_are_refused_not_panicked_on() {
        let good = ban().to_json();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
            f(&mut v);
            v.to_string()
        };
        let huge = "x".repeat(ENTRY_MAX + 1);
        let cases: Vec<(Fields, &str)> = vec![
            (fields("ban", "node1", "garbage"), "garbage"),
            (fields("ban", "node1", ""), "empty"),
            (fields("ban", "node1", "{\"node\":1}"), "wrong types"),
            (fields("nuke", "node1", &good), "unknown kind"),
            (
                fields("ban", "node2", &good),
                "ban published by another node",
            ),
            (fields("ban", "no de", &good), "bad by"),
            (fields("ban", "node1", &huge), "huge field"),
            (
                fields(
                    "ban",
                    "node1",
                    &with(&|v| v["target"] = "0.0.0.0/0x".into()),
                ),
                "unparsable target",
            ),
            (
                fields(
                    "ban",
                    "node1",
                    &with(&|v| v["target"] = "192.0.2.7/24".into()),
                ),
                "host bits",
            ),
            (
                fields("ban", "node1", &with(&|v| v["extra"] = 1.into())),
                "unknown field",
            ),
            (
                fields("ban", "node1", &with(&|v| v["until"] = 5.into())),
                "ends before it starts",
            ),
            (
                fields("ban", "node1", &with(&|v| v["started"] = i64::MAX.into())),
                "time out of range",
            ),
            (
                fields("ban", "node1", &with(&|v| v["jail"] = "a\u{1b}[2J".into())),
                "escape in jail",
            ),
            (
                fields("ban", "node1", &with(&|v| v["reason"] = "a\nb".into())),
                "control in reason",
            ),
            (
                fields(
                    "ban",
                    "node1",
                    &with(&|v| v["lines"] = serde_json::json!(["a", "b", "c", "d", "e", "f"])),
                ),
                "too many lines",
            ),
            (fields("ban", "node1", &good)[..2].to_vec(), "missing ban"),
            (
                {
                    let mut f = fields("ban", "node1", &good);
                    f.push((b"more".to_vec(), b"x".to_vec()));
                    f
                },
                "extra field",
            ),
        ];
        for (f, what) in cases {
            assert!(Event::parse(&f).is_err(), "{what} was accepted");
        }
        // Wide or dangerous targets parse here: refusing them is the engine's safety rule,
        // the same as for its own bans.
        let wide = with(&|v| v["target"] = "0.0.0.0/0".into());
        assert!(Event::parse(&fields("ban", "node1", &wide)).is_ok());
        // An unban may come from any node.
        assert!(Event::parse(&fields("unban", "node3", &good)).is_ok());
    }

    #[test]
    fn stream_ids_order_and_time() {
        assert!(id_key("1700000000000-2") > id_key("1700000000000-1"));
        assert!(id_key("1700000000001-0") > id_key("1700000000000-9"));
        assert_eq!(id_ms("1700000000000-2"), Some(1_700_000_000_000));
        assert_eq!(id_key("junk"), (0, 0));
        assert!(Heartbeat::parse(b"{\"at\":1,\"bans\":2}").is_some());
        assert!(Heartbeat::parse(b"nope").is_none());
    }
}

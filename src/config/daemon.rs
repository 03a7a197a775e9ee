//! The daemon's own settings (`[daemon]`), where bans go (`[enforce]`), and how repeat
//! offenders escalate (`escalate`, a jail key). Like the rest of the configuration, every value
//! is checked while it is read so that a mistake is reported at its line.

use std::net::SocketAddr;
use std::path::PathBuf;

use jiff::SignedDuration;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::value::Duration;
use crate::jail::escalate::{Escalation, Steps};
use crate::source::follow::FollowFrom;

/// The state directory when none is configured.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/moat";
/// The control socket when none is configured.
pub const DEFAULT_SOCKET: &str = "/run/moat/moat.sock";

/// `[daemon]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonTable {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub follow_from: Option<FollowFrom>,
    pub metrics: Option<LoopbackAddr>,
    pub checkpoint: Option<Duration>,
}

/// A socket address on loopback: metrics describe the host's defences and are not for the
/// internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopbackAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for LoopbackAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let addr: SocketAddr = s.parse().map_err(|_| {
            de::Error::custom(format!(
                "{s:?} is not an address and port; hint: \"127.0.0.1:9717\""
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(de::Error::custom(format!(
                "metrics must listen on a loopback address, not {addr}; hint: \
                 \"127.0.0.1:9717\" or \"[::1]:9717\", and scrape through a tunnel or proxy"
            )));
        }
        Ok(LoopbackAddr(addr))
    }
}

pub use crate::enforce::registry::{EnforceSettings, EnforcerName};

/// `escalate`: longer bans for clients banned before, like fail2ban's `bantime.increment`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalateTable {
    /// The n-th repeat ban lasts `bantime × factor^n`.
    pub factor: Option<f64>,
    /// The n-th repeat ban lasts `bantime × multipliers[n]` (the last one repeats).
    pub multipliers: Option<Vec<u32>>,
    /// No escalated ban is longer (may be "forever").
    pub max: Option<Duration>,
    /// Count earlier bans of the client in every jail, not only this one.
    #[serde(default)]
    pub across_jails: bool,
    /// Earlier bans count when they started within this long.
    pub within: Option<Duration>,
}

impl EscalateTable {
    pub fn resolve(&self) -> Result<Escalation, String> {
        let steps = match (&self.factor, &self.multipliers) {
            (Some(_), Some(_)) => {
                return Err("escalate: set `factor` or `multipliers`, not both".into())
            }
            (Some(f), None) if !(f.is_finite() && *f >= 1.0) => {
                return Err(format!(
                    "escalate: factor must be a number of at least 1, not {f}"
                ))
            }
            (Some(f), None) => Steps::Factor(*f),
            (None, Some(m)) if m.is_empty() || m.contains(&0) => {
                return Err(
                    "escalate: multipliers must be a non-empty list of positive \
                            integers, e.g. [1, 2, 4, 8]"
                        .into(),
                )
            }
            (None, Some(m)) => Steps::Multipliers(m.clone()),
            (None, None) => Steps::Factor(2.0),
        };
        Ok(Escalation {
            steps,
            max: self.max.map_or(SignedDuration::MAX, |d| d.0),
            across_jails: self.across_jails,
            within: self
                .within
                .map_or(SignedDuration::from_hours(30 * 24), |d| d.0),
        })
    }
}

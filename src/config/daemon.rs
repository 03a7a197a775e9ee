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
    /// `state_dir`: where the ledger lives (default [`DEFAULT_STATE_DIR`]).
    pub state_dir: Option<PathBuf>,
    /// `socket`: the control socket's path (default [`DEFAULT_SOCKET`]).
    pub socket: Option<PathBuf>,
    /// `socket_group`: a group whose members may also use the control socket (mode 0660).
    pub socket_group: Option<String>,
    /// `follow_from`: where a file seen for the first time is read from (default the end).
    pub follow_from: Option<FollowFrom>,
    /// Where Prometheus metrics are served; a non-loopback address is allowed when written
    /// here (a Prometheus container on a Docker bridge cannot reach loopback) and logged.
    pub metrics: Option<ListenAddr>,
    /// `checkpoint`: how often windows and cursors are saved together (default 2 seconds).
    pub checkpoint: Option<Duration>,
    /// Where the web dashboard is served (off when absent); a non-loopback address needs the
    /// token file.
    pub web: Option<ListenAddr>,
    /// The dashboard's token file (default `<state_dir>/web.token`, made by `moat web token`).
    pub web_token_file: Option<PathBuf>,
}

/// The dashboard's token file when none is configured, in the state directory.
pub const WEB_TOKEN_FILE: &str = "web.token";

/// An address and port to listen on (`[daemon] metrics`, `[daemon] web`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl ListenAddr {
    /// Whether only this host can connect.
    pub fn is_loopback(&self) -> bool {
        self.0.ip().is_loopback()
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let addr: SocketAddr = s.parse().map_err(|_| {
            de::Error::custom(format!(
                "{s:?} is not an address and port; hint: \"127.0.0.1:9717\" or \"[::1]:9717\""
            ))
        })?;
        Ok(ListenAddr(addr))
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
    /// Count the earlier bans other nodes of the fleet decided, not only this node's.
    #[serde(default)]
    pub across_nodes: bool,
    /// Earlier bans count when they started within this long.
    pub within: Option<Duration>,
}

impl EscalateTable {
    /// Checks the table and builds its [`Escalation`]; the error says which key is wrong.
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
            across_nodes: self.across_nodes,
            within: self
                .within
                .map_or(SignedDuration::from_hours(30 * 24), |d| d.0),
        })
    }
}

//! The daemon's own settings (`[daemon]`), where bans go (`[enforce]`), and how repeat
//! offenders escalate (`escalate`, a jail key). Like the rest of the configuration, every value
//! is checked while it is read so that a mistake is reported at its line.

use std::net::SocketAddr;
use std::path::PathBuf;

use jiff::SignedDuration;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::value::Duration;
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

/// `[enforce]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnforceTable {
    /// The enforcers every ban goes to.
    #[serde(rename = "use")]
    pub uses: Option<Vec<EnforcerName>>,
    pub exec: Option<ExecTable>,
    /// Lift every ban from the enforcers when moat stops (default: they stay in force, and
    /// kernel bans end by their own timeouts).
    pub lift_on_stop: Option<bool>,
    pub cloudflare: Option<CloudflareTable>,
}

/// `[enforce.cloudflare]`: bans at Cloudflare's edge.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudflareTable {
    pub mode: Option<CloudflareMode>,
    /// A file holding the API token (readable by its owner only).
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the API token.
    pub token_env: Option<String>,
    /// The legacy global API key: the account's email and a file holding the key.
    pub email: Option<String>,
    pub key_file: Option<PathBuf>,
    pub account_id: Option<String>,
    pub zone_id: Option<String>,
    /// The IP list's name (list mode): lowercase letters, digits, `_`, at most 50.
    pub list: Option<String>,
    pub action: Option<CloudflareAction>,
    /// Access rules at `zone`, `account` or `user` level.
    pub scope: Option<CloudflareScope>,
    pub capacity: Option<usize>,
    pub keep: Option<CloudflareKeep>,
    pub ipv6_prefix: Option<u8>,
    /// The API's base URL.
    pub api: Option<String>,
    pub requests_per_second: Option<f64>,
    /// Requests per five minutes (Cloudflare's limit is 1,200 per user).
    pub budget: Option<usize>,
    /// How often what moat holds at Cloudflare is read back and converged.
    pub reconcile: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CloudflareMode {
    List,
    AccessRules,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CloudflareAction {
    Block,
    Challenge,
    ManagedChallenge,
}

impl CloudflareAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CloudflareAction::Block => "block",
            CloudflareAction::Challenge => "challenge",
            CloudflareAction::ManagedChallenge => "managed_challenge",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CloudflareScope {
    Zone,
    Account,
    User,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CloudflareKeep {
    Newest,
    Longest,
}

impl CloudflareTable {
    /// What is missing or contradictory, in words.
    pub fn check(&self) -> Result<(), String> {
        let sources = [
            self.token_file.is_some(),
            self.token_env.is_some(),
            self.email.is_some() || self.key_file.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            return Err("[enforce.cloudflare] needs exactly one credential: token_file,                         token_env, or email with key_file (the legacy global key); hint:                         token_file = \"/etc/moat/cloudflare.token\""
                .into());
        }
        if self.email.is_some() != self.key_file.is_some() {
            return Err("[enforce.cloudflare] the global key needs both email and key_file".into());
        }
        let mode = self.mode.unwrap_or(CloudflareMode::List);
        let scope = self.scope.unwrap_or(CloudflareScope::Zone);
        let need_account = mode == CloudflareMode::List || scope == CloudflareScope::Account;
        let need_zone = mode == CloudflareMode::List || scope == CloudflareScope::Zone;
        if need_account && self.account_id.is_none() {
            return Err("[enforce.cloudflare] needs account_id (the IP list belongs to the                         account); hint: it is on the zone's overview page in the dashboard"
                .into());
        }
        if need_zone && self.zone_id.is_none() {
            return Err("[enforce.cloudflare] needs zone_id (the zone whose custom rule or                         access rules block); hint: it is on the zone's overview page"
                .into());
        }
        if let Some(name) = &self.list {
            let ok = !name.is_empty()
                && name.len() <= 50
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err(format!(
                    "[enforce.cloudflare] list {name:?}: Cloudflare list names are lowercase                      letters, digits and _, at most 50; hint: \"moat_block\""
                ));
            }
        }
        if let Some(p) = self.ipv6_prefix {
            if !(12..=128).contains(&p) {
                return Err(format!(
                    "[enforce.cloudflare] ipv6_prefix {p}: between 12 and 128"
                ));
            }
        }
        if mode == CloudflareMode::List && self.action == Some(CloudflareAction::Challenge) {
            return Err("[enforce.cloudflare] a custom rule has no `challenge` action; hint:                         managed_challenge"
                .into());
        }
        if self
            .requests_per_second
            .is_some_and(|r| !(r > 0.0 && r <= 50.0))
        {
            return Err("[enforce.cloudflare] requests_per_second: between 0 and 50".into());
        }
        Ok(())
    }
}

/// An enforcer moat has.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EnforcerName {
    /// Records decisions in the log and the ledger only.
    Log,
    /// Runs a command per ban and unban.
    Exec,
    /// Sets in moat's own nftables table, before Docker's DNAT.
    Nftables,
    /// ipset sets matched in iptables' raw PREROUTING (hosts without nftables).
    Iptables,
    /// nftables where it works, else iptables/ipset (`auto` is the same).
    #[serde(alias = "auto")]
    Kernel,
    /// Cloudflare's edge: an IP list and a WAF rule, or IP Access Rules.
    Cloudflare,
}

impl EnforcerName {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcerName::Log => "log",
            EnforcerName::Exec => "exec",
            EnforcerName::Nftables => "nftables",
            EnforcerName::Iptables => "iptables",
            EnforcerName::Kernel => "kernel",
            EnforcerName::Cloudflare => "cloudflare",
        }
    }
}

/// `[enforce.exec]`: argv templates, never a shell.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecTable {
    pub ban: ArgvTemplate,
    pub unban: Option<ArgvTemplate>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
}

/// The placeholders an argv template may use.
pub const PLACEHOLDERS: &[&str] = &["ip", "jail", "until", "failures", "ports"];

/// A command as a list of arguments with `{ip}`, `{jail}`, `{until}`, `{failures}`, `{ports}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgvTemplate(pub Vec<String>);

impl<'de> Deserialize<'de> for ArgvTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let argv = Vec::<String>::deserialize(d)?;
        let Some(program) = argv.first() else {
            return Err(de::Error::custom(
                "the command is empty; hint: [\"/usr/local/bin/notify-ban\", \"{ip}\"]",
            ));
        };
        if !program.starts_with('/') {
            return Err(de::Error::custom(format!(
                "the program {program:?} must be an absolute path (moat does not search PATH \
                 as root)"
            )));
        }
        if let Some(why) = super::shell::runs_a_command_line(&argv) {
            return Err(de::Error::custom(format!(
                "{why}: moat puts no shell between a log line and a command; hint: name the \
                 program and its arguments directly, or put the commands in a script and name \
                 the script"
            )));
        }
        for arg in &argv {
            for name in placeholders(arg) {
                if !PLACEHOLDERS.contains(&name) {
                    return Err(de::Error::custom(format!(
                        "unknown placeholder {{{name}}} in {arg:?}; hint: use {}",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
        Ok(ArgvTemplate(argv))
    }
}

/// The `{name}` placeholders in one argument.
pub fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

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

/// How long a ban lasts given the bans before it.
#[derive(Clone, Debug, PartialEq)]
pub struct Escalation {
    pub steps: Steps,
    pub max: SignedDuration,
    pub across_jails: bool,
    pub within: SignedDuration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Steps {
    Factor(f64),
    Multipliers(Vec<u32>),
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

impl Escalation {
    /// The length of a ban of a client banned `earlier` times before.
    pub fn bantime(&self, base: SignedDuration, earlier: u32) -> SignedDuration {
        if base == SignedDuration::MAX {
            return base;
        }
        let scale = match &self.steps {
            Steps::Factor(f) => f.powi(earlier.min(64) as i32),
            Steps::Multipliers(m) => m[(earlier as usize).min(m.len() - 1)] as f64,
        };
        let secs = base.as_secs_f64() * scale;
        let scaled = if secs >= self.max.as_secs_f64() || secs >= i64::MAX as f64 / 2.0 {
            self.max
        } else {
            SignedDuration::from_secs_f64(secs)
        };
        scaled.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_steps() {
        let h = SignedDuration::from_hours(1);
        let f = Escalation {
            steps: Steps::Factor(2.0),
            max: SignedDuration::from_hours(24),
            across_jails: false,
            within: h,
        };
        assert_eq!(f.bantime(h, 0), h);
        assert_eq!(f.bantime(h, 3), h * 8);
        assert_eq!(f.bantime(h, 10), SignedDuration::from_hours(24));
        assert_eq!(f.bantime(h, u32::MAX), SignedDuration::from_hours(24));
        let m = Escalation {
            steps: Steps::Multipliers(vec![1, 5, 30]),
            max: SignedDuration::MAX,
            ..f
        };
        assert_eq!(m.bantime(h, 1), h * 5);
        assert_eq!(m.bantime(h, 9), h * 30);
        assert_eq!(m.bantime(SignedDuration::MAX, 1), SignedDuration::MAX);
    }

    #[test]
    fn placeholders_are_found() {
        let names: Vec<_> = placeholders("--ip={ip}/{jail}x{").collect();
        assert_eq!(names, ["ip", "jail"]);
    }
}

//! Configuration values that validate themselves while the TOML is read, so that a bad one is
//! reported at its own line and column (the `toml` crate attaches the span of the value being
//! deserialised to the error).

use jiff::tz::TimeZone;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::detect::{library, pattern::Pattern, TimeFormat};
use crate::enforce::safety::WIDEST_V6;
pub use crate::vocab::time::{parse_duration, Duration};

/// A failregex/ignoreregex/prefregex, checked by compiling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternText(pub String);

impl<'de> Deserialize<'de> for PatternText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::compile(&s).map_err(|e| de::Error::custom(e.to_string()))?;
        Ok(PatternText(s))
    }
}

/// The name of a built-in filter, or `fail2ban:NAME[opts]` for one of fail2ban's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterName(pub String);

/// The prefix naming a filter of fail2ban's `filter.d`.
pub const FAIL2BAN_PREFIX: &str = "fail2ban:";

impl FilterName {
    /// `NAME[opts]` (or a path) when this names a fail2ban filter.
    pub fn fail2ban(&self) -> Option<&str> {
        self.0.strip_prefix(FAIL2BAN_PREFIX)
    }
}

impl<'de> Deserialize<'de> for FilterName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if library::get(&s).is_some() {
            return Ok(FilterName(s));
        }
        if let Some(spec) = s.strip_prefix(FAIL2BAN_PREFIX) {
            // The files are read when the jail is resolved (they live in fail2ban_dir).
            crate::detect::fail2ban::reader::split_options(spec).map_err(|e| {
                de::Error::custom(format!(
                    "{e}; hint: \"fail2ban:sshd\" or \"fail2ban:sshd[mode=aggressive]\""
                ))
            })?;
            return Ok(FilterName(s));
        }
        let hint = match library::closest(&s) {
            Some(c) => format!("hint: did you mean {c:?}? `moat filters list` shows them all"),
            None => "hint: `moat filters list` shows the built-in filters; \"fail2ban:NAME\" \
                     reads one of fail2ban's filter.d; or write failregex in the jail"
                .into(),
        };
        Err(de::Error::custom(format!("unknown filter {s:?}; {hint}")))
    }
}

/// A time format name or strftime pattern (checked to give a full date and time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeFormatText(pub String);

impl<'de> Deserialize<'de> for TimeFormatText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TimeFormat::from_name(&s).map_err(de::Error::custom)?;
        Ok(TimeFormatText(s))
    }
}

/// The zone of times written without an offset: `"local"`, `"UTC"` or an IANA name.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone(pub ZoneSpec);

/// A time zone as configured, resolved when used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneSpec {
    /// `"local"`: the system's zone (UTC when it cannot be read).
    Local,
    /// `"UTC"` or an IANA name such as `Europe/Berlin`.
    Named(String),
}

impl ZoneSpec {
    /// The zone itself, or an error naming the unknown zone with a hint.
    pub fn resolve(&self) -> Result<TimeZone, String> {
        match self {
            ZoneSpec::Local => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
            ZoneSpec::Named(n) if n.eq_ignore_ascii_case("utc") => Ok(TimeZone::UTC),
            ZoneSpec::Named(n) => TimeZone::get(n).map_err(|e| {
                format!("unknown time zone {n:?} ({e}); hint: use \"local\", \"UTC\" or a name like \"Europe/Berlin\"")
            }),
        }
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let spec = if s == "local" {
            ZoneSpec::Local
        } else {
            ZoneSpec::Named(s)
        };
        spec.resolve().map_err(de::Error::custom)?;
        Ok(Zone(spec))
    }
}

/// `maxretry`: at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxRetry(pub u32);

impl<'de> Deserialize<'de> for MaxRetry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=1_000_000).contains(&v) {
            return Err(de::Error::custom(format!(
                "maxretry must be between 1 and 1000000, not {v}"
            )));
        }
        Ok(MaxRetry(v as u32))
    }
}

/// `ipv6_prefix`: from [`WIDEST_V6`] (32) to 128. The enforcers refuse to ban an IPv6
/// network wider than /32 (see [`crate::enforce::safety`]), so a jail counting wider prefixes
/// would decide bans that `moat scan` reports and the daemon never places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLen(pub u8);

impl PrefixLen {
    /// `v` as a prefix length, or an error when it is outside 32 to 128.
    pub fn new(v: i64) -> Result<PrefixLen, String> {
        if !(i64::from(WIDEST_V6)..=128).contains(&v) {
            return Err(format!(
                "ipv6_prefix must be between {WIDEST_V6} and 128, not {v}: moat never bans an \
                 IPv6 network wider than /{WIDEST_V6}, so a jail counting wider prefixes could \
                 not ban; hint: 64 bans the /64 a provider gives one customer, 128 only the \
                 exact address"
            ));
        }
        Ok(PrefixLen(v as u8))
    }
}

impl<'de> Deserialize<'de> for PrefixLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PrefixLen::new(i64::deserialize(d)?).map_err(de::Error::custom)
    }
}

/// The smallest `max_clients`: a jail's memory sweep frees an eighth of the cap at a time.
pub const FEWEST_CLIENTS: usize = 16;

/// `max_clients`: at least [`FEWEST_CLIENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxClients(pub usize);

impl<'de> Deserialize<'de> for MaxClients {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if v < FEWEST_CLIENTS as i64 {
            return Err(de::Error::custom(format!(
                "max_clients must be at least {FEWEST_CLIENTS}, not {v}; hint: the default, \
                 50000, costs about 4 MB per jail"
            )));
        }
        Ok(MaxClients(v as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("10m"), Ok(600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("2w"), Ok(1_209_600));
        assert_eq!(secs("600"), Ok(600));
        assert!(secs("10 minutes").is_ok());
        assert!(secs("10x").unwrap_err().contains("unknown unit"));
        assert!(secs("m").is_err());
        assert!(secs("10").is_ok());
        assert!(secs("99999999999999999999d").is_err());
        // Ten years at most, however it is written.
        assert_eq!(secs("520w"), Ok(314_496_000));
        assert!(secs("522w").unwrap_err().contains("longer than 10 years"));
        assert!(secs("9223372036854775807")
            .unwrap_err()
            .contains("10 years"));
        assert!(secs("3650d1s").is_err());
    }
}

//! Configuration values that validate themselves while the TOML is read, so that a bad one is
//! reported at its own line and column (the `toml` crate attaches the span of the value being
//! deserialised to the error).

use std::fmt;

use ipnet::IpNet;
use jiff::tz::TimeZone;
use jiff::SignedDuration;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::detect::{library, pattern::Pattern, TimeFormat};

/// A duration: `"90s"`, `"10m"`, `"1h30m"`, `"7d"`, `"2w"`, or an integer number of seconds;
/// `"forever"` where a ban may be permanent (it reads as [`SignedDuration::MAX`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration(pub SignedDuration);

const DURATION_HINT: &str =
    "hint: write a number and a unit (s, m, h, d, w), e.g. \"90s\", \"10m\", \"1h30m\", \"7d\"";

pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(SignedDuration::from_secs(secs));
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {s:?}; {DURATION_HINT}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 604_800,
            "" => {
                return Err(format!(
                    "duration {s:?} has a number without a unit; {DURATION_HINT}"
                ))
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?} in duration {s:?}; {DURATION_HINT}"
                ))
            }
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(SignedDuration::from_secs(total))
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"10m\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                if v <= 0 {
                    return Err(E::custom(format!(
                        "duration must be positive; {DURATION_HINT}"
                    )));
                }
                Ok(Duration(SignedDuration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                if matches!(v.trim(), "forever" | "permanent") {
                    return Ok(Duration(SignedDuration::MAX));
                }
                let d = parse_duration(v).map_err(E::custom)?;
                if d.is_zero() || d.is_negative() {
                    return Err(E::custom(format!(
                        "duration must be positive; {DURATION_HINT}"
                    )));
                }
                Ok(Duration(d))
            }
        }
        d.deserialize_any(V)
    }
}

/// An address or network for `ignore`: `192.0.2.1`, `198.51.100.0/24`, `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net(pub IpNet);

pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; hint: did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{s:?} is not an address or a CIDR network; hint: write e.g. \"192.0.2.7\", \
         \"198.51.100.0/24\" or \"2001:db8::/32\" (host names are not resolved)"
    ))
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_net(&s).map(Net).map_err(de::Error::custom)
    }
}

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

/// A time format name or strftime pattern.
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
#[derive(Clone, Debug)]
pub struct Zone(pub ZoneSpec);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ZoneSpec {
    Local,
    Named(String),
}

impl ZoneSpec {
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

/// `ipv6_prefix`: 1 to 128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLen(pub u8);

impl<'de> Deserialize<'de> for PrefixLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=128).contains(&v) {
            return Err(de::Error::custom(format!(
                "ipv6_prefix must be between 1 and 128, not {v}; hint: 64 bans the /64 a \
                 provider gives one customer, 128 only the exact address"
            )));
        }
        Ok(PrefixLen(v as u8))
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
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert!(parse_net("198.51.100.1/24")
            .unwrap_err()
            .contains("198.51.100.0/24"));
        assert!(parse_net("example.com").is_err());
        assert!(parse_net("192.0.2.0/33").is_err());
    }
}

/// `ports`: a list of ports, ranges and protocols (`[22, "8000-8100", "53/udp"]`), or one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortsValue(pub crate::enforce::Ports);

impl<'de> Deserialize<'de> for PortsValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Number(i64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(Entry),
            Many(Vec<Entry>),
        }
        let entries = match OneOrMany::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected a port or a list of ports; hint: ports = [22, \"8000-8100\", \"53/udp\"]",
            )
        })? {
            OneOrMany::One(e) => vec![e],
            OneOrMany::Many(v) => v,
        };
        let texts: Vec<String> = entries
            .into_iter()
            .map(|e| match e {
                Entry::Number(n) => n.to_string(),
                Entry::Text(t) => t,
            })
            .collect();
        crate::enforce::Ports::parse(texts.iter().map(String::as_str))
            .map(PortsValue)
            .map_err(de::Error::custom)
    }
}

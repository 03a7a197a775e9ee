//! Times as moat writes them for people and for programs.

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// RFC 3339 in UTC to the second: `2026-03-28T23:31:47Z`.
pub fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A duration the way a configuration writes it: `90m`, `1d`, `2w`, `45s`.
pub fn human_duration(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().unsigned_abs();
    match s {
        s if s.is_multiple_of(604_800) => format!("{}w", s / 604_800),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration: `"90s"`, `"10m"`, `"1h30m"`, `"7d"`, `"2w"`, or an integer number of seconds;
/// `"forever"` where a ban may be permanent (it reads as [`SignedDuration::MAX`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Duration(pub SignedDuration);

const DURATION_HINT: &str =
    "hint: write a number and a unit (s, m, h, d, w), e.g. \"90s\", \"10m\", \"1h30m\", \"7d\"";

/// The longest duration moat accepts: ten years. Windows and bans are computed in
/// milliseconds from a line's time, and a value near the 64-bit limit (`findtime =
/// 9223372036854775807`) overflowed there, so that no window ever filled; nothing sensible
/// needs more (`"forever"` is the permanent ban).
pub const LONGEST: SignedDuration = SignedDuration::from_secs(10 * 365 * 86_400);

fn too_long(s: &str) -> String {
    format!(
        "duration {s:?} is longer than 10 years, the longest moat accepts; hint: bantime = \
         \"forever\" bans for good"
    )
}

pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    if let Ok(secs) = s.parse::<i64>() {
        let d = SignedDuration::from_secs(secs);
        if d > LONGEST {
            return Err(too_long(s));
        }
        return Ok(d);
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
            .filter(|&t| t <= LONGEST.as_secs())
            .ok_or_else(|| too_long(s))?;
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
                if v > LONGEST.as_secs() {
                    return Err(E::custom(too_long(&v.to_string())));
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

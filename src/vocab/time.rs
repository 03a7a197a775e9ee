//! Times as moat writes them for people and for programs.

use jiff::Timestamp;

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

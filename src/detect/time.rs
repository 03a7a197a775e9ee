//! Reading the time a log line carries.
//!
//! Only lines that matched a failregex come here, so this code can afford a regex search; the
//! hot path (lines that match nothing) never touches it. Every format is parsed to a UTC
//! [`Timestamp`]: explicit offsets are honoured, times without a zone are read in the
//! [`LineContext`]'s zone, and a syslog time without a year gets the year that puts it closest
//! before the context's reference instant. The context is a value handed in by the caller: this
//! module reads no clock and no environment.

use std::fmt;
use std::sync::LazyLock;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;
use jiff::{Timestamp, ToSpan};
use regex::bytes::Regex;

use super::context::LineContext;

/// How a filter expects its time to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// Try every known format; the first timestamp found in the text wins.
    Auto,
    /// nginx/Apache common log format: `26/Oct/2022:20:55:11 +0200`.
    Clf,
    /// ISO 8601 / RFC 3339: `2022-10-26T20:55:11.123+02:00`, `2022-10-26 20:55:11`, `...Z`.
    Iso8601,
    /// BSD syslog: `Oct 26 20:55:11` (no year, no zone).
    Syslog,
    /// Seconds since the Unix epoch, optionally with a fraction: `1666810511.25`.
    Epoch,
    /// A strftime-style pattern (jiff's `strtime`), e.g. `%d/%b/%Y:%H:%M:%S %z`.
    Pattern(String),
}

impl TimeFormat {
    /// Parses the name used in configuration files.
    pub fn from_name(name: &str) -> Result<TimeFormat, String> {
        Ok(match name {
            "auto" => TimeFormat::Auto,
            "clf" | "nginx" | "apache" => TimeFormat::Clf,
            "iso8601" | "rfc3339" => TimeFormat::Iso8601,
            "syslog" => TimeFormat::Syslog,
            "epoch" => TimeFormat::Epoch,
            p if p.contains('%') => {
                check_pattern(p)?;
                TimeFormat::Pattern(p.to_string())
            }
            other => {
                return Err(format!(
                    "unknown time format {other:?}; hint: use auto, clf, iso8601, syslog, epoch \
                     or a strftime pattern such as \"%d/%b/%Y:%H:%M:%S %z\""
                ))
            }
        })
    }
}

/// Checks that a strftime pattern can be read back into a full date and time: a pattern with
/// an unknown directive (`%Q`) or without a date (`%H:%M:%S`) would be accepted and then no
/// line would ever have a readable time. The check writes a fixed instant with the pattern and
/// reads it back as a line's time would be read.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let sample: jiff::Zoned = "2026-03-28T23:24:12.5+01:00[+01:00]"
        .parse()
        .expect("constant time");
    let text = jiff::fmt::strtime::format(pattern, &sample)
        .map_err(|e| format!("time pattern {pattern:?} is not a valid strftime pattern: {e}"))?;
    jiff::fmt::strtime::parse(pattern, text.trim())
        .map_err(|e| format!("time pattern {pattern:?} cannot be read, only written: {e}"))?;
    let ctx = LineContext::utc(sample.timestamp());
    if parse_pattern(text.as_bytes(), pattern, &ctx).is_none() {
        return Err(format!(
            "time pattern {pattern:?} does not give a full date and time (it needs the year, \
             the month and day, the hour and the minute, or %s); hint: for syslog times without \
             a year write time = \"syslog\""
        ));
    }
    Ok(())
}

/// Which format a timestamp was actually read with; counted in `moat scan`'s report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FoundFormat {
    Clf,
    Iso8601,
    Syslog,
    Epoch,
    Pattern,
}

impl FoundFormat {
    pub fn name(self) -> &'static str {
        match self {
            FoundFormat::Clf => "clf (26/Oct/2022:20:55:11 +0200)",
            FoundFormat::Iso8601 => "iso8601 (2022-10-26T20:55:11Z)",
            FoundFormat::Syslog => "syslog (Oct 26 20:55:11)",
            FoundFormat::Epoch => "epoch (1666810511.25)",
            FoundFormat::Pattern => "filter's strftime pattern",
        }
    }
}

impl fmt::Display for FoundFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Finds the first timestamp of any known format in `text`.
///
/// The three textual formats are searched together (leftmost wins); a bare epoch number is only
/// looked for when none of them is present, because log lines are full of other numbers.
static TEXT_TIMES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?-u)(?P<clf>\d{1,2}/[A-Za-z]{3}/\d{4}:\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:\s*[+-]\d{2}:?\d{2}|\s*Z)?)",
        r"|(?P<iso>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:\s*Z|\s*[+-]\d{2}(?::?\d{2})?)?)",
        r"|(?P<syslog>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]?\d \d{1,2}:\d{2}:\d{2}(?:\.\d+)?)",
    ))
    .expect("built-in time regex")
});

static EPOCH: LazyLock<Regex> = LazyLock::new(|| {
    // 10 digits: 2001-09-09 .. 2286; with fractions for milli/micro precision loggers.
    Regex::new(r"(?-u)(?:^|[^\d.])(?P<epoch>1\d{9}(?:\.\d{1,9})?)(?:$|[^\d])").expect("epoch regex")
});

/// Reads a timestamp from `text` in the given format.
pub fn parse(
    text: &[u8],
    format: &TimeFormat,
    ctx: &LineContext,
) -> Option<(Timestamp, FoundFormat)> {
    match format {
        TimeFormat::Auto => find_any(text, ctx),
        // A filter that names its format and captures exactly the time (the usual case) is
        // read directly; a search only when the text has more around the time.
        TimeFormat::Clf => exact(text, ctx, FoundFormat::Clf, parse_clf),
        TimeFormat::Iso8601 => exact(text, ctx, FoundFormat::Iso8601, parse_iso),
        TimeFormat::Syslog => exact(text, ctx, FoundFormat::Syslog, parse_syslog),
        TimeFormat::Epoch => {
            let caps = EPOCH.captures(text)?;
            Some((parse_epoch(&caps["epoch"])?, FoundFormat::Epoch))
        }
        TimeFormat::Pattern(p) => parse_pattern(text, p, ctx).map(|t| (t, FoundFormat::Pattern)),
    }
}

/// Reads a JSON number as epoch seconds (Caddy's `ts`, Docker's nanosecond-free fields).
pub fn from_epoch_f64(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    let whole = secs.trunc() as i64;
    let nanos = ((secs - secs.trunc()) * 1e9).round() as i32;
    Timestamp::new(whole, nanos.clamp(0, 999_999_999)).ok()
}

fn exact(
    text: &[u8],
    ctx: &LineContext,
    format: FoundFormat,
    direct: fn(&[u8], &LineContext) -> Option<Timestamp>,
) -> Option<(Timestamp, FoundFormat)> {
    let whole = text.trim_ascii();
    let is_whole = TEXT_TIMES
        .find(whole)
        .is_some_and(|m| m.start() == 0 && m.end() == whole.len());
    if is_whole {
        return direct(whole, ctx).map(|t| (t, format));
    }
    find_any(text, ctx).filter(|(_, f)| *f == format)
}

fn find_any(text: &[u8], ctx: &LineContext) -> Option<(Timestamp, FoundFormat)> {
    if let Some(caps) = TEXT_TIMES.captures(text) {
        if let Some(m) = caps.name("clf") {
            return parse_clf(m.as_bytes(), ctx).map(|t| (t, FoundFormat::Clf));
        }
        if let Some(m) = caps.name("iso") {
            return parse_iso(m.as_bytes(), ctx).map(|t| (t, FoundFormat::Iso8601));
        }
        if let Some(m) = caps.name("syslog") {
            return parse_syslog(m.as_bytes(), ctx).map(|t| (t, FoundFormat::Syslog));
        }
    }
    let caps = EPOCH.captures(text)?;
    Some((parse_epoch(&caps["epoch"])?, FoundFormat::Epoch))
}

fn month(name: &[u8]) -> Option<i8> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let lower = [
        name.first()?.to_ascii_lowercase(),
        name.get(1)?.to_ascii_lowercase(),
        name.get(2)?.to_ascii_lowercase(),
    ];
    MONTHS
        .iter()
        .position(|m| **m == lower)
        .map(|i| i as i8 + 1)
}

/// A small cursor over ASCII digits; the time regexes above already guarantee the shape, so
/// these readers only convert and range-check.
struct Digits<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Digits<'a> {
    fn new(s: &'a [u8]) -> Self {
        Digits { s, i: 0 }
    }
    fn number(&mut self) -> Option<i64> {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c) = self.s.get(self.i).filter(|c| c.is_ascii_digit()) {
            v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            self.i += 1;
        }
        (self.i > start).then_some(v)
    }
    /// Fractional seconds after a `.` or `,`, as nanoseconds.
    fn fraction(&mut self) -> i32 {
        if !matches!(self.s.get(self.i), Some(b'.' | b',')) {
            return 0;
        }
        self.i += 1;
        let mut nanos: i32 = 0;
        let mut scale = 100_000_000;
        while let Some(c) = self.s.get(self.i).filter(|c| c.is_ascii_digit()) {
            nanos += i32::from(c - b'0') * scale;
            scale /= 10;
            self.i += 1;
        }
        nanos
    }
    fn skip(&mut self, n: usize) {
        self.i += n;
    }
    fn skip_spaces(&mut self) {
        while self.s.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }
    fn rest(&self) -> &'a [u8] {
        &self.s[self.i.min(self.s.len())..]
    }
    /// `Z`, `+0200`, `+02:00`, `-05`; `None` when no zone follows.
    fn offset(&mut self) -> Option<Option<Offset>> {
        self.skip_spaces();
        match self.s.get(self.i) {
            Some(b'Z' | b'z') => {
                self.i += 1;
                Some(Some(Offset::UTC))
            }
            Some(&sign @ (b'+' | b'-')) => {
                self.i += 1;
                let start = self.i;
                let hh = self.number()?;
                let (h, m) = if self.i - start == 4 {
                    (hh / 100, hh % 100)
                } else {
                    let m = if self.s.get(self.i) == Some(&b':') {
                        self.i += 1;
                        self.number()?
                    } else {
                        0
                    };
                    (hh, m)
                };
                if h > 25 || m > 59 {
                    return None;
                }
                let secs = (h * 3600 + m * 60) as i32;
                let secs = if sign == b'-' { -secs } else { secs };
                Some(Some(Offset::from_seconds(secs).ok()?))
            }
            _ => Some(None),
        }
    }
}

fn civil(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, nanos: i32) -> Option<DateTime> {
    let date = Date::new(i16::try_from(y).ok()?, mo as i8, d as i8).ok()?;
    // A leap second (:60) is read as :59 rather than refused; the ban window does not care.
    let time = Time::new(h as i8, mi as i8, s.min(59) as i8, nanos).ok()?;
    Some(date.to_datetime(time))
}

fn resolve(dt: DateTime, offset: Option<Offset>, ctx: &LineContext) -> Option<Timestamp> {
    match offset {
        Some(o) => o.to_timestamp(dt).ok(),
        None => dt.to_zoned(ctx.zone.clone()).ok().map(|z| z.timestamp()),
    }
}

fn parse_clf(s: &[u8], ctx: &LineContext) -> Option<Timestamp> {
    // 26/Oct/2022:20:55:11 +0200
    let mut d = Digits::new(s);
    let day = d.number()?;
    d.skip(1);
    let mon = month(d.rest())?;
    d.skip(4);
    let year = d.number()?;
    d.skip(1);
    let h = d.number()?;
    d.skip(1);
    let mi = d.number()?;
    d.skip(1);
    let sec = d.number()?;
    let nanos = d.fraction();
    let off = d.offset()?;
    resolve(
        civil(year, i64::from(mon), day, h, mi, sec, nanos)?,
        off,
        ctx,
    )
}

fn parse_iso(s: &[u8], ctx: &LineContext) -> Option<Timestamp> {
    // 2022-10-26T20:55:11.123+02:00
    let mut d = Digits::new(s);
    let year = d.number()?;
    d.skip(1);
    let mo = d.number()?;
    d.skip(1);
    let day = d.number()?;
    d.skip(1);
    let h = d.number()?;
    d.skip(1);
    let mi = d.number()?;
    d.skip(1);
    let sec = d.number()?;
    let nanos = d.fraction();
    let off = d.offset()?;
    resolve(civil(year, mo, day, h, mi, sec, nanos)?, off, ctx)
}

fn parse_syslog(s: &[u8], ctx: &LineContext) -> Option<Timestamp> {
    // Oct 26 20:55:11 — no year: take the reference's year, or the one before when that would
    // put the line more than a day after the reference (a December line read in January).
    let mon = month(s)?;
    let mut d = Digits::new(&s[3..]);
    d.skip_spaces();
    let day = d.number()?;
    d.skip_spaces();
    let h = d.number()?;
    d.skip(1);
    let mi = d.number()?;
    d.skip(1);
    let sec = d.number()?;
    let nanos = d.fraction();
    let ref_year = i64::from(ctx.reference.to_zoned(ctx.zone.clone()).year());
    let limit = ctx.reference.checked_add(24.hours()).ok()?;
    for year in [ref_year, ref_year - 1] {
        // Feb 29 only exists in leap years, so a year may fail to produce a date at all.
        let Some(dt) = civil(year, i64::from(mon), day, h, mi, sec, nanos) else {
            continue;
        };
        let t = resolve(dt, None, ctx)?;
        if t <= limit {
            return Some(t);
        }
    }
    None
}

/// Reads `1666810511` or `1666810511.25` exactly (no floating point); the whole text must be
/// the number.
pub fn parse_epoch(s: &[u8]) -> Option<Timestamp> {
    let mut d = Digits::new(s);
    let secs = d.number()?;
    let nanos = d.fraction();
    if !d.rest().is_empty() {
        return None;
    }
    Timestamp::new(secs, nanos).ok()
}

fn parse_pattern(text: &[u8], pattern: &str, ctx: &LineContext) -> Option<Timestamp> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let tm = jiff::fmt::strtime::parse(pattern, text).ok()?;
    // `%s` gives an instant, with no offset and no civil time.
    if tm.offset().is_some() || tm.timestamp().is_some() {
        return tm.to_timestamp().ok();
    }
    let dt = tm.to_datetime().ok()?;
    resolve(dt, None, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn ctx() -> LineContext {
        LineContext::utc("2022-11-01T00:00:00Z".parse().unwrap())
    }

    fn auto(s: &str) -> Option<String> {
        parse(s.as_bytes(), &TimeFormat::Auto, &ctx()).map(|(t, _)| t.to_string())
    }

    #[test]
    fn patterns_are_checked_when_named() {
        for ok in [
            "%Y/%m/%d %H:%M:%S",
            "%a %b %d %H:%M:%S%.f %Y",
            "%d/%b/%Y:%H:%M:%S %z",
            "%Y-%m-%dT%H:%M:%S%:z",
            "%s",
            "%y%m%d %I:%M %p",
        ] {
            assert!(TimeFormat::from_name(ok).is_ok(), "{ok}");
        }
        // jiff writes %Q (the zone's name) but cannot read it back.
        let e = TimeFormat::from_name("%Q").unwrap_err();
        assert!(e.starts_with("time pattern \"%Q\""), "{e}");
        let e = TimeFormat::from_name("%Y-%m-%d %H:%M:%S %!").unwrap_err();
        assert!(e.contains("not a valid strftime pattern"), "{e}");
        let e = TimeFormat::from_name("%H:%M:%S").unwrap_err();
        assert!(e.contains("full date and time"), "{e}");
        assert!(TimeFormat::from_name("%b %d %H:%M:%S").is_err());
    }

    #[test]
    fn clf_with_offset_is_converted_to_utc() {
        assert_eq!(
            auto(r#"127.0.0.1 - - [26/Oct/2022:20:55:11 +0200] "POST /api/auth HTTP/2.0" 422"#),
            Some("2022-10-26T18:55:11Z".into())
        );
    }

    #[test]
    fn iso_variants() {
        assert_eq!(
            auto("2022-10-26T20:55:11Z x"),
            Some("2022-10-26T20:55:11Z".into())
        );
        assert_eq!(
            auto("2022-10-26T20:55:11.250+02:00"),
            Some("2022-10-26T18:55:11.25Z".into())
        );
        assert_eq!(
            auto("2022-10-26 20:55:11,5 -0500"),
            Some("2022-10-27T01:55:11.5Z".into())
        );
        // No zone: read in the context's zone (UTC here).
        assert_eq!(
            auto("at 2022-10-26 20:55:11 foo"),
            Some("2022-10-26T20:55:11Z".into())
        );
    }

    #[test]
    fn syslog_year_is_inferred_from_the_reference() {
        assert_eq!(
            auto("Oct 26 20:55:11 host sshd[1]: x"),
            Some("2022-10-26T20:55:11Z".into())
        );
        assert_eq!(
            auto("Oct  6 01:02:03 host"),
            Some("2022-10-06T01:02:03Z".into())
        );
        // A December line read on Nov 1st belongs to the year before.
        assert_eq!(
            auto("Dec 31 23:59:59 host"),
            Some("2021-12-31T23:59:59Z".into())
        );
    }

    #[test]
    fn syslog_in_a_local_zone() {
        let ctx = LineContext::new(
            TimeZone::fixed(jiff::tz::offset(2)),
            "2022-11-01T00:00:00Z".parse().unwrap(),
        );
        let (t, _) = parse(b"Oct 26 20:55:11 h", &TimeFormat::Auto, &ctx).unwrap();
        assert_eq!(t.to_string(), "2022-10-26T18:55:11Z");
    }

    #[test]
    fn epoch_with_fraction_only_when_nothing_else() {
        assert_eq!(
            auto("1666810511.25 foo"),
            Some("2022-10-26T18:55:11.25Z".into())
        );
        assert_eq!(
            parse(b"ts=1666810511", &TimeFormat::Epoch, &ctx()).map(|(t, _)| t.to_string()),
            Some("2022-10-26T18:55:11Z".into())
        );
    }

    #[test]
    fn explicit_format_mismatch_is_none() {
        assert_eq!(parse(b"Oct 26 20:55:11", &TimeFormat::Clf, &ctx()), None);
        assert_eq!(auto("no time here 12:00"), None);
        assert_eq!(auto("[32/Oct/2022:20:55:11 +0200]"), None);
    }

    #[test]
    fn strftime_pattern() {
        let f = TimeFormat::from_name("%Y/%m/%d %H:%M:%S").unwrap();
        let (t, k) = parse(b"2022/10/26 20:55:11", &f, &ctx()).unwrap();
        assert_eq!(
            (t.to_string().as_str(), k),
            ("2022-10-26T20:55:11Z", FoundFormat::Pattern)
        );
    }
}

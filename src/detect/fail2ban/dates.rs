//! fail2ban's date detection: finding the date in a line, cutting it out of what the
//! failregexes see, and reading it into a time.
//!
//! A [`DateDetector`] holds templates: fail2ban's 17 defaults (each non-anchored one also as
//! a `{^LN-BEG}` copy that prefers a date at the line's start, 31 in all), or those a
//! filter's `datepattern` names: strftime-like patterns with fail2ban's directives (`%ExY`,
//! `%k`, `%z`, ...), `{^LN-BEG}`, `{DATE}` (each default inside a pattern), `{UNB}`, `**`,
//! `{NONE}`, `EPOCH`, `LEPOCH`, `{EPOCH}` and `TAI64N`. Patterns are Python regexes; they
//! are translated by [`super::pyre`] like the failregexes, and the word-boundary look-aheads
//! fail2ban wraps them in become linear. The one back-reference the templates use,
//! `(?P=_sep)` (the same separator twice), is matched as a class and checked afterwards.
//!
//! The detector is stateful, as fail2ban's is: the template that matched last is tried first
//! (within the same span when the text around it agrees), a match found further into a line
//! than before is kept in reserve while other templates are tried, and templates that keep
//! winning move forward in the list. This decides which date wins when a line holds
//! several, so it is reproduced step by step ([`DateDetector::match_time`]).
//!
//! Reading the fields follows fail2ban's `reGroupDictStrptime`: a missing year is the
//! current one, or the one before if that puts the date more than a day ahead; a missing day
//! is today, or yesterday; times without a zone are in the context's zone; `%f` is ignored
//! (whole seconds), `EPOCH` keeps its fraction.

use std::sync::Arc;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::engine::{CompileError, Match, Regex};
use super::pyre::{self, Node};

/// The directives fail2ban's dates know, as Python regex text (fail2ban's `timeRE`).
fn directive(key: &str, year_digit: char) -> Option<String> {
    let months = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec";
    Some(match key {
        "%" => "%".into(),
        "a" => "(?P<a>mon|tue|wed|thu|fri|sat|sun)".into(),
        "A" => "(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)".into(),
        "b" => format!("(?P<b>{months})"),
        "B" => "(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)".into(),
        "c" => format!(r"(?P<a>mon|tue|wed|thu|fri|sat|sun)\s+(?P<b>{months})\s+(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])\s+(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)\s+(?P<Y>\d\d\d\d)"),
        "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])".into(),
        "f" => r"(?P<f>[0-9]{1,6})".into(),
        "G" => r"(?P<G>\d\d\d\d)".into(),
        "H" => r"(?P<H>[0-1]?\d|2[0-3])".into(),
        "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])".into(),
        "j" => r"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])".into(),
        "k" => r" ?(?P<H>[0-2]?\d)".into(),
        "l" => r" ?(?P<I>1?\d)".into(),
        "m" => r"(?P<m>0?[1-9]|1[0-2])".into(),
        "M" => r"(?P<M>[0-5]?\d)".into(),
        "p" => "(?P<p>am|pm)".into(),
        "S" => r"(?P<S>[0-5]?\d|6[0-1])".into(),
        "u" => "(?P<u>[1-7])".into(),
        "U" => r"(?P<U>5[0-3]|[0-4]\d|\d)".into(),
        "V" => r"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)".into(),
        "w" => "(?P<w>[0-6])".into(),
        "W" => r"(?P<W>5[0-3]|[0-4]\d|\d)".into(),
        "x" => r"(?P<m>1[0-2]|0[1-9]|[1-9])/(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])/(?P<y>\d\d)".into(),
        "X" => r"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)".into(),
        "y" => r"(?P<y>\d\d)".into(),
        "Y" => r"(?P<Y>\d{4})".into(),
        "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)".into(),
        "Z" => "(?P<Z>Z|[A-Z]{3,5})".into(),
        "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])".into(),
        "Exm" => "(?P<m>0[1-9]|1[0-2])".into(),
        "ExH" => r"(?P<H>[0-1]\d|2[0-3])".into(),
        "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])".into(),
        "Exl" => r" ?(?P<I>1[0-2]|\d)".into(),
        "ExM" => r"(?P<M>[0-5]\d)".into(),
        "ExS" => r"(?P<S>[0-5]\d|6[0-1])".into(),
        "ExY" => {
            if year_digit == '0' {
                r"(?P<Y>200\d)".into()
            } else {
                format!(r"(?P<Y>20[0-{year_digit}]\d)")
            }
        }
        "Exy" => r"(?P<y>\d{2})".into(),
        "ExZ" => "(?P<Z>[A-Z](?:[A-Z]{2,4})?)".into(),
        "Exz" => r"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)".into(),
        _ => return None,
    })
}

/// Directives in the order fail2ban's `%(...)` matcher tries them: multi-letter first.
const LONG_DIRECTIVES: &[&str] = &[
    "Exd", "Exm", "ExH", "Exk", "Exl", "ExM", "ExS", "ExZ", "Exz", "ExY", "Exy",
];

/// The names fail2ban gives directives in template names (only used to tell templates apart).
fn directive_name(key: &str) -> String {
    let base = |k: &str| -> Option<&'static str> {
        Some(match k {
            "a" => "DAY",
            "A" => "DAYNAME",
            "b" => "MON",
            "B" => "MONTH",
            "d" => "Day",
            "H" => "24hour",
            "I" => "12hour",
            "j" => "Yearday",
            "m" => "Month",
            "M" => "Minute",
            "p" => "AMPM",
            "S" => "Second",
            "U" | "W" => "Yearweek",
            "w" => "Weekday",
            "y" => "Year2",
            "Y" => "Year",
            "%" => "%",
            "z" => "Zone offset",
            "f" => "Microseconds",
            "Z" => "Zone name",
            _ => return None,
        })
    };
    if let Some(n) = base(key) {
        return n.to_string();
    }
    if let Some(rest) = key.strip_prefix("Ex") {
        if let Some(n) = base(rest) {
            return format!("Ex{n}");
        }
    }
    format!("%{key}")
}

/// The year's last allowed decade digit for `%ExY`: fail2ban accepts 2000 up to three years
/// ahead of now.
pub fn year_digit(now_year: i16) -> char {
    let d = ((i32::from(now_year) + 3).clamp(2000, 2099) / 10) % 10;
    char::from_digit(d as u32, 10).expect("digit")
}

/// fail2ban's 17 default templates, in its order.
const DEFAULT_TEMPLATES: &[&str] = &[
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
];

/// A template flag: the template is anchored at the line's start (`^`, or fail2ban's `{^LN-BEG}`).
pub const LINE_BEGIN: u8 = 8;
/// A template flag: the template is anchored at the line's end (`$`).
pub const LINE_END: u8 = 4;
/// A template flag: the date must begin at a word boundary (fail2ban adds `(?=^|\b|\W)` before it).
pub const WORD_BEGIN: u8 = 2;
/// A template flag: the date must end at a word boundary (fail2ban adds `(?=\b|\W|$)` after it).
pub const WORD_END: u8 = 1;

/// A datepattern that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("date pattern {pattern:?}: {message}")]
pub struct DateError {
    /// The pattern as the filter wrote it.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Debug)]
enum Kind {
    /// strptime-like fields in named groups.
    Fields,
    /// Seconds since the epoch in the given group; `long`: milli- or microseconds too.
    Epoch { group: usize, long: bool },
    /// `@` and 24 hex digits.
    Tai64n,
}

/// One compiled template.
#[derive(Debug)]
pub struct DateTemplate {
    /// The template's name as fail2ban reports it (the pattern, with `{^LN-BEG}` when anchored at
    /// the line's start).
    pub name: String,
    /// The pattern as written (`%d/%b/%ExY...`), for reports.
    pub pattern: String,
    regex: Regex,
    kind: Kind,
    /// How the template is bounded: [`LINE_BEGIN`], [`LINE_END`], [`WORD_BEGIN`], [`WORD_END`],
    /// or'ed.
    pub flags: u8,
    /// fail2ban prefers line-start copies of its defaults (weight 100).
    weight: f64,
    /// Groups written as `(?P=name)`: (original, copy) pairs that must hold equal text.
    same: Vec<(usize, usize)>,
    /// Python group → directive key (`Y`, `d`, `z`, ...), for reading the time.
    fields: Vec<(usize, String)>,
    /// Whether the character after the cut is always a non-word character, and whether the
    /// one before it is (see [`DateDetector::cuts`]).
    nonword_after: bool,
    nonword_before: bool,
}

/// A template's match: the whole span, and the span that is the date (what is cut out).
#[derive(Clone, Debug)]
pub struct DateMatch {
    /// Where the template's match begins (a byte offset in the line).
    pub start: usize,
    /// Where the template's match ends (a byte offset in the line).
    pub end: usize,
    /// The byte span of the date itself, the text cut out of the line before the failure regexes
    /// run.
    pub cut: (usize, usize),
    m: Match,
}

impl DateTemplate {
    /// `search(line, pos, endpos)`, with the separators that must agree checked.
    fn search(&self, line: &str, pos: usize, endpos: usize) -> Option<DateMatch> {
        let mut from = pos;
        loop {
            let m = self.regex.search(line, from, endpos)?;
            let agree = self
                .same
                .iter()
                .all(|&(a, b)| m.get(line, a) == m.get(line, b));
            if agree {
                let (start, end, cut) = match self.kind {
                    // fail2ban's look-behinds for `[` and `audit(` put the match's start at
                    // the number; here that text is matched before it.
                    Kind::Epoch { group: 0, .. } => {
                        let cut = m.groups[1].or(m.groups[2])?;
                        (cut.0, cut.1, cut)
                    }
                    _ => (
                        m.start,
                        m.end,
                        m.groups
                            .get(1)
                            .copied()
                            .flatten()
                            .unwrap_or((m.start, m.start)),
                    ),
                };
                return Some(DateMatch { start, end, cut, m });
            }
            // Another start: Python backtracks into no other split of a date.
            from = next_char(line, m.start)?;
            if from > endpos {
                return None;
            }
        }
    }

    fn is_anchored(&self) -> bool {
        self.flags & (LINE_BEGIN | LINE_END) != 0
    }
}

/// What the text on either side of a template's cut can be (group 1, the cut-out date):
/// whether the character after it is always a non-word character (the cut ends with a word
/// character followed by fail2ban's word boundary), and whether the character before it is
/// (a literal non-word character, fail2ban's `^\W{0,2}`, or the line's start). A cut that is
/// always empty joins nothing.
fn cut_sides(root: &Node) -> (bool, bool) {
    let items: Vec<&Node> = match root {
        Node::Concat(v) => v.iter().collect(),
        other => vec![other],
    };
    let Some(k) = items
        .iter()
        .position(|n| matches!(n, Node::Capture { index: 1, .. }))
    else {
        return (false, false);
    };
    let Node::Capture { node: cut, .. } = items[k] else {
        return (false, false);
    };
    let e = pyre::ends(cut);
    if !e.word && !e.nonword {
        return (true, true);
    }
    let boundary = |n: &Node| match n {
        Node::NonCapture(inner) => matches!(&**inner, Node::Alt(b) if b.len() == 2
            && b.contains(&Node::Assert(pyre::Assert::StartHalf))
            && b.contains(&Node::Assert(pyre::Assert::EndHalf))),
        _ => false,
    };
    let after = e.word && !e.nonword && !e.empty && items.len() == k + 2 && boundary(items[k + 1]);
    let mut before = false;
    for n in items[..k].iter().rev() {
        if matches!(n, Node::Assert(pyre::Assert::TextStart)) {
            before = true;
            break;
        }
        let e = pyre::ends(n);
        if e.word {
            break;
        }
        if !e.empty {
            before = true;
            break;
        }
    }
    (after, before)
}

fn next_char(s: &str, i: usize) -> Option<usize> {
    s[i..].chars().next().map(|c| i + c.len_utf8())
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// fail2ban's textual preparation of a template regex (`DateTemplate.setRegex`): word
/// boundaries unless anchored or marked `**`, a group around the date when it has none,
/// flags noted. Returns the Python regex, the flags and whether the name gains `{^LN-BEG}`.
fn bound(regex: &str, word_begin: WordBegin, word_end: bool) -> (String, u8) {
    use std::sync::LazyLock;
    static GLOBAL_FLAGS: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\(\?[a-z]+\)").expect("static"));
    static NO_BOUND_BEG: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)").expect("static")
    });
    static LINE_BOUND_BEG: LazyLock<fancy_regex::Regex> = LazyLock::new(|| {
        fancy_regex::Regex::new(r"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))").expect("static")
    });
    static GROUP: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$").expect("static")
    });
    let mut regex = regex.trim().to_string();
    let flags_group = GLOBAL_FLAGS.find(&regex).map(|m| m.as_str().to_string());
    if let Some(g) = &flags_group {
        regex = regex.replacen(g.as_str(), "", 1);
    }
    let bound_begin = word_begin != WordBegin::No && !NO_BOUND_BEG.is_match(&regex);
    let bound_end = word_end && !no_bound_end(&regex);
    if !has_plain_group(&regex) {
        regex = GROUP.replace(&regex, "$1($2)$3").into_owned();
    }
    let mut flags = 0;
    if bound_begin {
        if word_begin == WordBegin::LineStart {
            flags |= LINE_BEGIN;
            regex = format!(r"^(?:\W{{0,2}})?{regex}");
        } else {
            flags |= WORD_BEGIN;
            regex = format!(r"(?=^|\b|\W){regex}");
        }
    }
    if bound_end {
        flags |= WORD_END;
        regex.push_str(r"(?=\b|\W|$)");
    }
    if flags & LINE_BEGIN == 0 && LINE_BOUND_BEG.is_match(&regex).unwrap_or(false) {
        flags |= LINE_BEGIN;
    }
    if flags & LINE_END == 0 && line_bound_end(&regex) {
        flags |= LINE_END;
    }
    regex = remove_stars(&regex);
    if let Some(g) = flags_group {
        regex = g + &regex;
    }
    (regex, flags)
}

/// fail2ban's `RE_NO_WRD_BOUND_END`: the regex ends with `$`, `$)`, `\b`, `\s`, or `**`.
fn no_bound_end(regex: &str) -> bool {
    let r = regex.trim_end_matches(')');
    let closes = regex.len() - r.len();
    (r.ends_with("**") && !r[..r.len() - 2].ends_with('\\'))
        || (closes <= 1
            && regex[..regex.len() - closes].ends_with('$')
            && !escaped_at_end(&regex[..regex.len() - closes]))
        || (closes == 0
            && (regex.ends_with("\\b") || regex.ends_with("\\s"))
            && !escaped_at_end(&regex[..regex.len() - 1]))
}

/// Whether the last character of `s` is preceded by a backslash (fail2ban's `(?<!\\)`).
fn escaped_at_end(s: &str) -> bool {
    let mut chars = s.chars().rev();
    chars.next();
    chars.next() == Some('\\')
}

/// fail2ban's `RE_LINE_BOUND_END`: `$` or `$)` at the end, not escaped or after `|`.
fn line_bound_end(regex: &str) -> bool {
    let body = regex.strip_suffix(')').unwrap_or(regex);
    if !body.ends_with('$') {
        return false;
    }
    let before = body[..body.len() - 1].chars().next_back();
    !matches!(before, Some('\\' | '|'))
}

/// fail2ban's `RE_GROUPED`: a capturing `(` (not escaped, not `(?`, not after `(?`).
fn has_plain_group(regex: &str) -> bool {
    let b = regex.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b'('
            && b.get(i + 1) != Some(&b'?')
            && (i == 0 || b[i - 1] != b'\\')
            && !(i >= 2 && &b[i - 2..i] == b"(?")
    })
}

/// fail2ban's `RE_DEL_WRD_BOUNDS`: `**` at the start (after parentheses and flags) or at the
/// end (before parentheses) is removed.
fn remove_stars(regex: &str) -> String {
    use std::sync::LazyLock;
    static FRONT: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^\(*(?:\(\?\w+\))?\(*\*\*").expect("static"));
    let mut out = match FRONT.find(regex) {
        Some(m) => format!("{}{}", m.as_str().replace("**", ""), &regex[m.end()..]),
        None => regex.to_string(),
    };
    let trimmed = out.trim_end_matches(')');
    if trimmed.ends_with("**") && !trimmed[..trimmed.len() - 2].ends_with('\\') {
        let closes = out.len() - trimmed.len();
        let keep = trimmed.len() - 2;
        out = format!("{}{}", &out[..keep], ")".repeat(closes));
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WordBegin {
    No,
    Word,
    LineStart,
}

/// Removes fail2ban's boundary markers from a pattern (`DateTemplate.unboundPattern`).
fn unbound(pattern: &str) -> String {
    let p = pattern.strip_prefix("{UNB}").unwrap_or(pattern);
    let p = p.strip_prefix("{^LN-BEG}").unwrap_or(p);
    let p = p
        .strip_prefix(r"(?:^|\b|\W)")
        .or_else(|| p.strip_prefix(r"(^|\b|\W)"))
        .unwrap_or(p);
    p.strip_suffix(r"(?=\b|\W|$)").unwrap_or(p).to_string()
}

/// Expands `%X` directives; returns the Python regex and the template's name.
fn expand_directives(pattern: &str, year_digit: char) -> Result<(String, String), String> {
    let mut regex = String::new();
    let mut name = String::new();
    let mut rest = pattern;
    while let Some(p) = rest.find('%') {
        regex.push_str(&rest[..p]);
        name.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let key = LONG_DIRECTIVES
            .iter()
            .copied()
            .find(|k| after.starts_with(k))
            .map(str::to_string)
            .or_else(|| {
                after
                    .chars()
                    .next()
                    .filter(|c| directive(&c.to_string(), year_digit).is_some())
                    .map(|c| c.to_string())
            });
        let Some(key) = key else {
            return Err(format!(
                "unknown directive %{} (write %% for a percent sign)",
                after.chars().next().map(String::from).unwrap_or_default()
            ));
        };
        regex.push_str(&directive(&key, year_digit).expect("known"));
        name.push_str(&directive_name(&key));
        rest = &after[key.len()..];
    }
    regex.push_str(rest);
    name.push_str(rest);
    Ok((regex, name))
}

/// Whether a pattern needs case-insensitive matching (fail2ban: `%a`, `%A`, `%b`, `%B`, `%p`,
/// `%c` not after `%`).
fn alpha(pattern: &str) -> bool {
    let b = pattern.as_bytes();
    (1..b.len())
        .any(|i| b[i - 1] == b'%' && b"aAbBpc".contains(&b[i]) && (i < 2 || b[i - 2] != b'%'))
}

struct Builder {
    year_digit: char,
}

const EPOCH_RE: &str = r"\d{10,11}\b(?:\.\d{3,6})?";
const LEPOCH_RE: &str = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?";

impl Builder {
    fn compile(
        &self,
        pattern_text: &str,
        name: String,
        python: &str,
        kind: Kind,
        flags: u8,
    ) -> Result<DateTemplate, DateError> {
        let err = |message: String| DateError {
            pattern: pattern_text.to_string(),
            message,
        };
        let mut parsed = pyre::parse(python, false).map_err(|e| err(e.to_string()))?;
        let same = self::separate_backrefs(&mut parsed).map_err(err)?;
        let regex =
            Regex::from_pattern(python, &mut parsed).map_err(|e: CompileError| err(e.message))?;
        if regex.is_backtracking() {
            return Err(err(format!(
                "needs {}, which moat does not run for dates",
                pyre::backtracking_construct(&parsed.root).unwrap_or("backtracking")
            )));
        }
        let fields = regex
            .names()
            .map(|(i, n)| (i, n.to_string()))
            .filter(|(_, n)| !n.starts_with('_'))
            .collect();
        let (nonword_after, nonword_before) = match kind {
            // The number, then fail2ban's boundary, in each alternative.
            Kind::Epoch { group: 0, .. } => (true, false),
            _ => cut_sides(&parsed.root),
        };
        Ok(DateTemplate {
            name,
            pattern: pattern_text.to_string(),
            regex,
            kind,
            flags,
            weight: 1.0,
            same,
            fields,
            nonword_after,
            nonword_before,
        })
    }

    /// A strptime-like pattern (`DatePatternRegex`).
    fn pattern(
        &self,
        pattern: &str,
        word_begin: bool,
        word_end: bool,
    ) -> Result<DateTemplate, DateError> {
        let mut wb = if word_begin {
            WordBegin::Word
        } else {
            WordBegin::No
        };
        let mut we = word_end;
        let mut p = pattern;
        if let Some(rest) = p.strip_prefix("{UNB}") {
            p = rest;
            wb = WordBegin::No;
            we = false;
        }
        if wb != WordBegin::No {
            if let Some(rest) = p.strip_prefix("{^LN-BEG}") {
                p = rest;
                wb = WordBegin::LineStart;
            }
        }
        let (mut regex, mut name) =
            expand_directives(p, self.year_digit).map_err(|message| DateError {
                pattern: pattern.to_string(),
                message,
            })?;
        if alpha(p) {
            regex = format!("(?iu){regex}");
        }
        let (python, flags) = bound(&regex, wb, we);
        if wb == WordBegin::LineStart && flags & LINE_BEGIN != 0 && !name.starts_with("{^LN-BEG}") {
            name = format!("{{^LN-BEG}}{name}");
        }
        self.compile(pattern, name, &python, Kind::Fields, flags)
    }

    /// `EPOCH` and `LEPOCH`: at the line's start, after `[` at the start, or in SELinux's
    /// `audit(...:N)`; `line_begin`: only near the line's start.
    fn epoch(&self, line_begin: bool, long: bool) -> Result<DateTemplate, DateError> {
        let number = if long { LEPOCH_RE } else { EPOCH_RE };
        let (name, python) = if line_begin {
            (
                if long {
                    "{^LN-BEG}LongEpoch"
                } else {
                    "{^LN-BEG}Epoch"
                },
                format!(r"^(?:\W{{0,2}})?({number})(?=\b|\W|$)"),
            )
        } else {
            // Group 1 or 2 is the number: fail2ban's look-behinds for `[` and `audit(` are
            // written as text before it; the match's start is taken from the number.
            (
                if long { "LongEpoch" } else { "Epoch" },
                format!(r"^\[?({number})(?=\b|\W|$)|\baudit\(({number})(?=\b|\W|$):\d+\)"),
            )
        };
        self.compile(
            if long { "LEPOCH" } else { "EPOCH" },
            name.into(),
            &python,
            Kind::Epoch {
                group: if line_begin { 1 } else { 0 },
                long,
            },
            if line_begin {
                LINE_BEGIN | WORD_END
            } else {
                WORD_END
            },
        )
    }

    /// A pattern with `{EPOCH}` or `{LEPOCH}` inside.
    fn epoch_pattern(&self, pattern: &str, long: bool) -> Result<DateTemplate, DateError> {
        let number = if long { LEPOCH_RE } else { EPOCH_RE };
        let mut body = String::new();
        let mut rest = pattern;
        while let Some(i) = find_epoch_tag(rest) {
            body.push_str(&rest[..i]);
            let tag_len = if rest[i..].to_uppercase().starts_with("{LEPOCH}") {
                8
            } else {
                7
            };
            body.push_str(&format!("({number})"));
            rest = &rest[i + tag_len..];
        }
        body.push_str(rest);
        let (python, flags) = bound(&format!("({body})"), WordBegin::Word, true);
        self.compile(
            pattern,
            pattern.to_string(),
            &python,
            Kind::Epoch { group: 2, long },
            flags,
        )
    }

    fn tai64n(&self, line_begin: bool) -> Result<DateTemplate, DateError> {
        let wb = if line_begin {
            WordBegin::LineStart
        } else {
            WordBegin::No
        };
        let (python, flags) = bound("@[0-9a-f]{24}", wb, true);
        let name = if line_begin {
            "{^LN-BEG}TAI64N"
        } else {
            "TAI64N"
        };
        self.compile("TAI64N", name.into(), &python, Kind::Tai64n, flags)
    }

    /// A pattern as `datepattern` writes it (fail2ban's `_getPatternTemplate`).
    fn template_for(&self, pattern: &str) -> Result<DateTemplate, DateError> {
        let key = if pattern.contains('%') {
            pattern.to_string()
        } else {
            pattern.to_uppercase()
        };
        if key.contains("EPOCH") {
            if find_epoch_tag(pattern).is_some() {
                return self.epoch_pattern(pattern, key.contains("LEPOCH"));
            }
            match key.as_str() {
                "EPOCH" => return self.epoch(false, false),
                "{^LN-BEG}EPOCH" | "^EPOCH" => return self.epoch(true, false),
                "LEPOCH" => return self.epoch(false, true),
                "{^LN-BEG}LEPOCH" | "^LEPOCH" => return self.epoch(true, true),
                _ => {}
            }
        }
        match key.as_str() {
            "TAI64N" => self.tai64n(false),
            "{^LN-BEG}TAI64N" | "^TAI64N" => self.tai64n(true),
            _ => self.pattern(pattern, true, true),
        }
    }
}

fn find_epoch_tag(s: &str) -> Option<usize> {
    let up = s.to_uppercase();
    [up.find("{EPOCH}"), up.find("{LEPOCH}")]
        .into_iter()
        .flatten()
        .filter(|&i| i == 0 || s.as_bytes()[i - 1] != b'\\')
        .min()
}

/// `(?P<g>[...])` … `(?P=g)` with a one-character class: the reference becomes a copy of the
/// class in a group of its own, and the pair is checked for equal text after a match.
fn separate_backrefs(p: &mut pyre::Pattern) -> Result<Vec<(usize, usize)>, String> {
    let mut pairs = Vec::new();
    let mut classes: Vec<(usize, Node)> = Vec::new();
    pyre::walk(&p.root, &mut |n| {
        if let Node::Capture { index, node } = n {
            if matches!(**node, Node::Class { .. }) || matches!(**node, Node::Lit { .. }) {
                classes.push((*index, (**node).clone()));
            }
        }
    });
    fn rewrite(
        node: &mut Node,
        classes: &[(usize, Node)],
        names: &mut Vec<Option<String>>,
        pairs: &mut Vec<(usize, usize)>,
    ) -> Result<(), String> {
        match node {
            Node::Backref { index, .. } => {
                let Some((_, class)) = classes.iter().find(|(i, _)| i == index) else {
                    return Err("a back-reference to more than one character".into());
                };
                let copy = names.len();
                names.push(Some(format!("_same{copy}")));
                pairs.push((*index, copy));
                *node = Node::Capture {
                    index: copy,
                    node: Box::new(class.clone()),
                };
            }
            Node::Capture { node, .. }
            | Node::NonCapture(node)
            | Node::Look { node, .. }
            | Node::Repeat { node, .. } => rewrite(node, classes, names, pairs)?,
            Node::Cond { yes, no, .. } => {
                rewrite(yes, classes, names, pairs)?;
                rewrite(no, classes, names, pairs)?;
            }
            Node::Concat(v) | Node::Alt(v) => {
                for n in v {
                    rewrite(n, classes, names, pairs)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    rewrite(&mut p.root, &classes, &mut p.names, &mut pairs)?;
    Ok(pairs)
}

/// The default templates, built once per year digit.
fn defaults(year_digit: char) -> Result<Arc<Vec<Arc<DateTemplate>>>, DateError> {
    use std::sync::{LazyLock, Mutex};
    type Templates = Arc<Vec<Arc<DateTemplate>>>;
    static CACHE: LazyLock<Mutex<Vec<(char, Templates)>>> =
        LazyLock::new(|| Mutex::new(Vec::new()));
    if let Some((_, t)) = CACHE
        .lock()
        .expect("not poisoned")
        .iter()
        .find(|(d, _)| *d == year_digit)
    {
        return Ok(t.clone());
    }
    let b = Builder { year_digit };
    let mut anchored = Vec::new();
    let mut plain = Vec::new();
    for p in DEFAULT_TEMPLATES {
        let t = b.template_for(p)?;
        let starts_anchored = t.name.starts_with("{^LN-BEG}") || t.name.starts_with('^');
        if !starts_anchored {
            // fail2ban's `_getAnchoredTemplate`: the same pattern at the line's start.
            let mut copy = match *p {
                "EPOCH" => b.epoch(true, false)?,
                "TAI64N" => b.tai64n(true)?,
                _ => b.pattern(&format!("{{^LN-BEG}}{p}"), true, true)?,
            };
            if copy.name != t.name {
                copy.weight = 100.0;
                anchored.push(Arc::new(copy));
            }
        }
        plain.push(Arc::new(t));
    }
    anchored.extend(plain);
    let all = Arc::new(anchored);
    CACHE
        .lock()
        .expect("not poisoned")
        .push((year_digit, all.clone()));
    Ok(all)
}

/// The default templates in their plain form (for `{DATE}`).
fn plain_defaults(year_digit: char) -> Result<Vec<Arc<DateTemplate>>, DateError> {
    Ok(defaults(year_digit)?
        .iter()
        .filter(|t| t.weight == 1.0)
        .cloned()
        .collect())
}

#[derive(Clone, Debug)]
struct Slot {
    template: Arc<DateTemplate>,
    /// The template's place in [`DateDetector::screen`].
    set_index: usize,
    hits: u64,
    last_used: i64,
    distance: usize,
}

impl Slot {
    fn weight(&self) -> f64 {
        self.hits as f64 * self.template.weight / (self.distance.max(1) as f64)
    }
}

/// The templates of a filter and what they learnt from the lines so far.
#[derive(Clone, Debug)]
pub struct DateDetector {
    slots: Vec<Slot>,
    /// Whether the templates came from `datepattern` (else fail2ban's defaults, added on
    /// first use).
    configured: bool,
    year_digit: char,
    last_pos: (usize, Option<char>, Option<char>),
    last_end_pos: (usize, Option<char>, Option<char>),
    last_index: usize,
    first_unused: usize,
    /// All templates in one set, to know in one pass which can match a line before trying
    /// them one by one (fail2ban tries each in turn).
    screen: Option<Arc<TemplateSet>>,
}

#[derive(Debug)]
struct TemplateSet {
    unicode: super::engine::LazySet,
    /// Without Unicode, for ASCII lines, when every template is ASCII.
    ascii: Option<regex::bytes::RegexSet>,
}

impl TemplateSet {
    fn new(templates: &[&DateTemplate]) -> TemplateSet {
        let unicode =
            super::engine::LazySet::new(templates.iter().map(|t| t.regex.rust.clone()).collect());
        let ascii = unicode.ascii();
        TemplateSet { unicode, ascii }
    }

    /// Which templates match somewhere in `line`; `None` when that cannot be told.
    fn matches(&self, line: &str) -> Option<Vec<bool>> {
        let n = self.unicode.len();
        match &self.ascii {
            Some(a) if line.is_ascii() => {
                let m = a.matches(line.as_bytes());
                Some((0..n).map(|i| m.matched(i)).collect())
            }
            _ => {
                let m = self.unicode.get()?.matches(line);
                Some((0..n).map(|i| m.matched(i)).collect())
            }
        }
    }
}

/// How long a template may go unused before another may take its place (fail2ban: 5 min).
const UNUSED_SECS: i64 = 300;

impl DateDetector {
    /// A detector for a filter's `datepattern` (one pattern per line), or fail2ban's default
    /// templates when it has none. `year_digit` from [`year_digit`].
    pub fn new(datepattern: Option<&str>, year_digit: char) -> Result<DateDetector, DateError> {
        let mut d = DateDetector {
            slots: Vec::new(),
            configured: datepattern.is_some(),
            year_digit,
            last_pos: (1, None, None),
            last_end_pos: (usize::MAX, None, None),
            last_index: usize::MAX,
            first_unused: 0,
            screen: None,
        };
        match datepattern {
            None => d.add_defaults(|_| true, None)?,
            Some(text) => {
                let b = Builder { year_digit };
                for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
                    let key = if line.contains('%') {
                        line.to_string()
                    } else {
                        line.to_uppercase()
                    };
                    match key.as_str() {
                        "{^LN-BEG}" => d.add_defaults(|t| t.flags & LINE_BEGIN != 0, None)?,
                        "{DEFAULT}" => d.add_defaults(|_| true, None)?,
                        k if k.contains("{DATE}") => d.add_defaults(|_| true, Some(line))?,
                        "{NONE}" => d.push(b.pattern("{UNB}^", true, true)?, false)?,
                        _ => d.push(b.template_for(line)?, false)?,
                    }
                }
            }
        }
        let templates: Vec<&DateTemplate> = d.slots.iter().map(|s| s.template.as_ref()).collect();
        d.screen = (templates.len() > 1).then(|| Arc::new(TemplateSet::new(&templates)));
        Ok(d)
    }

    fn push(&mut self, t: DateTemplate, ignore_dup: bool) -> Result<(), DateError> {
        self.push_arc(Arc::new(t), ignore_dup)
    }

    fn push_arc(&mut self, t: Arc<DateTemplate>, ignore_dup: bool) -> Result<(), DateError> {
        if self.slots.iter().any(|s| s.template.name == t.name) {
            if ignore_dup {
                return Ok(());
            }
            return Err(DateError {
                pattern: t.pattern.clone(),
                message: format!("there is already a template with name {}", t.name),
            });
        }
        self.slots.push(Slot {
            template: t,
            set_index: self.slots.len(),
            hits: 0,
            last_used: 0,
            distance: usize::MAX >> 1,
        });
        Ok(())
    }

    /// fail2ban's `addDefaultTemplate`: all 31 (filtered), or with `{DATE}` in a pattern,
    /// each of the 17 plain defaults written into it.
    fn add_defaults(
        &mut self,
        keep: impl Fn(&DateTemplate) -> bool,
        pre_match: Option<&str>,
    ) -> Result<(), DateError> {
        let ignore_dup = !self.slots.is_empty();
        let b = Builder {
            year_digit: self.year_digit,
        };
        match pre_match {
            None => {
                for t in defaults(self.year_digit)?.iter() {
                    if keep(t) {
                        self.push_arc(t.clone(), ignore_dup)?;
                    }
                }
            }
            Some(pre) => {
                for t in plain_defaults(self.year_digit)? {
                    // Epoch and TAI64N have no pattern: fail2ban writes their names in, which
                    // then only match those words.
                    let inner = match t.kind {
                        Kind::Fields => unbound(&t.pattern),
                        _ => unbound(&t.name),
                    };
                    let wrapped = replace_date(pre, &inner);
                    let mut w = b.template_for(&wrapped)?;
                    w.name = replace_date(pre, &unbound(&t.name));
                    self.push(w, ignore_dup)?;
                }
            }
        }
        Ok(())
    }

    /// Where cutting out a date can join text, over all templates: which literal pieces a
    /// whole line must contain wherever the line without its date contains the literal
    /// (see [`super::literals`]). `None`: no safe pieces.
    pub fn cuts(&self) -> Option<super::literals::Cut> {
        use super::literals::Cut;
        let t = || self.slots.iter().map(|s| &s.template);
        if t().all(|t| t.nonword_after) {
            Some(Cut::BeforeNonWord)
        } else if t().all(|t| t.nonword_after || t.nonword_before) {
            Some(Cut::BesideNonWord)
        } else {
            None
        }
    }

    /// Whether the filter named its own templates.
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// Finds the date in `line` as fail2ban's `matchTime` does, learning from it; `now` (in
    /// seconds) stands in for fail2ban's wall clock in its bookkeeping.
    pub fn match_time(&mut self, line: &str, now: i64) -> Option<(DateMatch, Arc<DateTemplate>)> {
        let n = self.slots.len();
        let mut found: Option<(DateMatch, usize)> = None;
        let mut ignore_by_search = usize::MAX;
        let mut winner: Option<(DateMatch, usize)> = None;
        let i = self.last_index;
        if i < n {
            let template = self.slots[i].template.clone();
            let m = if template.is_anchored() {
                ignore_by_search = i;
                template.search(line, 0, line.len())
            } else {
                let (distance, before, at) = self.last_pos;
                let (endpos, end_before, after) = self.last_end_pos;
                // Python's `line[p-1:p]` and `line[p:p+1]`: empty beyond the end.
                let char_before = |p: usize| {
                    (p > 0 && p <= line.len())
                        .then(|| line[..floor_boundary(line, p)].chars().next_back())
                        .flatten()
                };
                let char_at = |p: usize| {
                    (p < line.len())
                        .then(|| line[floor_boundary(line, p)..].chars().next())
                        .flatten()
                };
                let left_ok = char_before(distance) == before
                    || (char_at(distance) == at && !at.is_some_and(char::is_alphanumeric));
                let right_ok = char_at(endpos) == after
                    || (char_before(endpos) == end_before
                        && !end_before.is_some_and(char::is_alphanumeric));
                if left_ok && right_ok {
                    let start = floor_boundary(line, distance);
                    let end = floor_boundary(line, endpos);
                    if start <= end {
                        template.search(line, start, end)
                    } else {
                        None
                    }
                } else {
                    ignore_by_search = i;
                    template.search(line, 0, line.len())
                }
            };
            if let Some(m) = m {
                let same_place = m.start == self.last_pos.0 && m.end == self.last_end_pos.0;
                if n == 1 || template.is_anchored() || same_place {
                    winner = Some((m, i));
                } else {
                    found = Some((m, i));
                }
            }
        }
        if winner.is_none() {
            // One pass says which templates can match at all; trying only those finds what
            // trying each in turn finds.
            let possible = self.screen.as_ref().and_then(|s| s.matches(line));
            let mut k = 0;
            while k < n {
                if k == ignore_by_search
                    || possible
                        .as_ref()
                        .is_some_and(|p| !p[self.slots[k].set_index])
                {
                    k += 1;
                    continue;
                }
                let slot = &self.slots[k];
                let Some(m) = slot.template.search(line, 0, line.len()) else {
                    k += 1;
                    continue;
                };
                let distance = m.start;
                if k + 1 >= n || slot.template.is_anchored() {
                    winner = Some((m, k));
                    break;
                }
                if distance > slot.distance || distance > self.last_pos.0 {
                    if found.as_ref().is_none_or(|(f, _)| distance < f.start) {
                        found = Some((m, k));
                    }
                    k += 1;
                    continue;
                }
                winner = Some((m, k));
                break;
            }
            if winner.is_none() {
                winner = found;
            }
        }
        let (m, mut i) = winner?;
        let slot = &mut self.slots[i];
        slot.hits += 1;
        slot.last_used = now;
        slot.distance = m.start;
        if self.first_unused == i {
            self.first_unused += 1;
        }
        let before = line[..m.start].chars().next_back();
        let at = line[m.start..].chars().next();
        let end_before = line[..m.end].chars().next_back();
        let after = line[m.end..].chars().next();
        self.last_pos = (m.start, before, at);
        self.last_end_pos = (m.end, end_before, after);
        if i != 0 && i != self.last_index {
            i = self.reorder(i);
        }
        self.last_index = i;
        let template = self.slots[i].template.clone();
        Some((m, template))
    }

    /// fail2ban's `_reorderTemplate`: a template that wins moves forward when it outweighs
    /// the one in its way, or that one has gone unused for a while.
    fn reorder(&mut self, num: usize) -> usize {
        let slot = self.slots[num].clone();
        let untime = slot.last_used - UNUSED_SECS;
        let weight = slot.weight();
        let mut pos = if self.first_unused < num {
            self.first_unused
        } else {
            num / 2
        };
        let movable = |slots: &[Slot], pos: usize| {
            weight > slots[pos].weight() || untime > slots[pos].last_used
        };
        if !movable(&self.slots, pos) {
            if pos == num - 1 {
                return num;
            }
            pos = num - 1;
            if !movable(&self.slots, pos) {
                return num;
            }
        }
        let moved = self.slots.remove(num);
        self.slots.insert(pos, moved);
        while self.first_unused < self.slots.len() && self.slots[self.first_unused].hits > 0 {
            self.first_unused += 1;
        }
        pos
    }

    /// The templates in their current order, for reports.
    pub fn templates(&self) -> impl Iterator<Item = &DateTemplate> {
        self.slots.iter().map(|s| s.template.as_ref())
    }
}

fn replace_date(pre: &str, inner: &str) -> String {
    let up = pre.to_uppercase();
    let mut out = String::new();
    let mut i = 0;
    while let Some(j) = up[i..].find("{DATE}") {
        let at = i + j;
        if at > 0 && pre.as_bytes()[at - 1] == b'\\' {
            out.push_str(&pre[i..at + 6]);
        } else {
            out.push_str(&pre[i..at]);
            out.push_str(inner);
        }
        i = at + 6;
    }
    out.push_str(&pre[i..]);
    out
}

/// What a date reading needs from outside: the zone of dates without one (fail2ban's local
/// time) and the current instant.
#[derive(Clone, Debug)]
pub struct Clock {
    /// The zone of dates written without one (fail2ban reads them in local time).
    pub zone: TimeZone,
    /// The current instant: a date without a year (or without a day) is completed from it, as
    /// fail2ban does, and moved back when that puts it in the future.
    pub now: Timestamp,
}

impl DateTemplate {
    /// The time of a match (fail2ban's `getDate`); `None` when the fields make no date.
    pub fn time(&self, line: &str, m: &DateMatch, clock: &Clock) -> Option<Timestamp> {
        match self.kind {
            Kind::Tai64n => {
                let text = &line[m.cut.0..m.cut.1];
                let secs = i64::from_str_radix(text.get(2..17)?, 16).ok()?;
                // TAI64 counts from 2^62; fail2ban reads the low digits as Unix seconds.
                Timestamp::from_second(secs).ok()
            }
            Kind::Epoch { group, long } => {
                let text = if group == 0 {
                    &line[m.cut.0..m.cut.1]
                } else {
                    m.m.get(line, group)?
                };
                epoch(text, long)
            }
            Kind::Fields => {
                let values: Vec<(&str, &str)> = self
                    .fields
                    .iter()
                    .filter_map(|(i, k)| m.m.get(line, *i).map(|v| (k.as_str(), v)))
                    .collect();
                strptime(&values, clock)
            }
        }
    }
}

/// Seconds since the epoch as fail2ban reads them: with a fraction kept; `long`: 13 digits
/// are milliseconds, 16 microseconds.
fn epoch(text: &str, long: bool) -> Option<Timestamp> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits_to_nanos = |f: &str| -> i64 {
        let mut s = f.to_string();
        s.truncate(9);
        while s.len() < 9 {
            s.push('0');
        }
        s.parse().unwrap_or(0)
    };
    let (secs, nanos) = if long && text.len() >= 13 {
        if text.len() >= 16 && frac.is_empty() {
            let v: i64 = whole.parse().ok()?;
            (v / 1_000_000, (v % 1_000_000) * 1000)
        } else {
            let v: i64 = whole.parse().ok()?;
            let extra = digits_to_nanos(frac) / 1000;
            (v / 1000, (v % 1000) * 1_000_000 + extra)
        }
    } else {
        (whole.parse().ok()?, digits_to_nanos(frac))
    };
    Timestamp::new(secs, nanos as i32).ok()
}

/// fail2ban's zone abbreviations and their offsets in minutes.
fn zone_abbreviation(name: &str) -> Option<i32> {
    const TABLE: &[(f64, &str)] = &[
        (-12.0, "Y"),
        (-11.0, "X NUT SST"),
        (-10.0, "W CKT HAST HST TAHT TKT"),
        (-9.0, "V AKST GAMT GIT HADT HNY"),
        (-8.0, "U AKDT CIST HAY HNP PST PT"),
        (-7.0, "T HAP HNR MST PDT"),
        (-6.0, "S CST EAST GALT HAR HNC MDT"),
        (-5.0, "R CDT COT EASST ECT EST ET HAC HNE PET"),
        (-4.0, "Q AST BOT CLT COST EDT FKT GYT HAE HNA PYT"),
        (
            -3.0,
            "P ADT ART BRT CLST FKST GFT HAA PMST PYST SRT UYT WGT",
        ),
        (-2.0, "O BRST FNT PMDT UYST WGST"),
        (-1.0, "N AZOT CVT EGT"),
        (0.0, "Z EGST GMT UTC WET WT"),
        (1.0, "A CET DFT WAT WEDT WEST"),
        (2.0, "B CAT CEDT CEST EET SAST WAST"),
        (3.0, "C EAT EEDT EEST IDT MSK"),
        (4.0, "D AMT AZT GET GST KUYT MSD MUT RET SAMT SCT"),
        (
            5.0,
            "E AMST AQTT AZST HMT MAWT MVT PKT TFT TJT TMT UZT YEKT",
        ),
        (6.0, "F ALMT BIOT BTT IOT KGT NOVT OMST YEKST"),
        (7.0, "G CXT DAVT HOVT ICT KRAT NOVST OMSST THA WIB"),
        (
            8.0,
            "H ACT AWST BDT BNT CAST HKT IRKT KRAST MYT PHT SGT ULAT WITA WST",
        ),
        (9.0, "I AWDT IRKST JST KST PWT TLT WDT WIT YAKT"),
        (10.0, "K AEST ChST PGT VLAT YAKST YAPT"),
        (11.0, "L AEDT LHDT MAGT NCT PONT SBT VLAST VUT"),
        (
            12.0,
            "M ANAST ANAT FJT GILT MAGST MHT NZST PETST PETT TVT WFT",
        ),
        (13.0, "FJST NZDT"),
        (11.5, "NFT"),
        (10.5, "ACDT LHST"),
        (9.5, "ACST"),
        (6.5, "CCT MMT"),
        (5.75, "NPT"),
        (5.5, "SLT"),
        (4.5, "AFT IRDT"),
        (3.5, "IRST"),
        (-2.5, "HAT NDT"),
        (-3.5, "HNT NST NT"),
        (-4.5, "HLV VET"),
        (-9.5, "MART MIT"),
    ];
    if name.is_empty() {
        return Some(0);
    }
    TABLE
        .iter()
        .find(|(_, names)| names.split(' ').any(|n| n == name))
        .map(|(h, _)| (h * 60.0) as i32)
}

/// A zone as fail2ban accepts it: an abbreviation (`CEST`), an offset (`+0200`, `-05:30`,
/// `+02`), or both (`UTC+0200`); minutes east of UTC.
pub fn zone_offset(text: &str) -> Option<i32> {
    let split = text.find(['+', '-']).unwrap_or(text.len());
    let (abbr, off) = text.split_at(split);
    let abbr_ok = abbr.is_empty()
        || (abbr.len() <= 5
            && abbr.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && abbr.chars().all(|c| c.is_ascii_uppercase())
            && abbr.len() != 2);
    if !abbr_ok {
        return None;
    }
    let base = zone_abbreviation(abbr)?;
    if off.is_empty() {
        return Some(base);
    }
    let sign = if off.starts_with('-') { -1 } else { 1 };
    let digits = &off[1..];
    let (h, m) = match digits.len() {
        2 => (digits, "00"),
        4 => (&digits[..2], &digits[2..]),
        5 if digits.as_bytes()[2] == b':' => (&digits[..2], &digits[3..]),
        _ => return None,
    };
    if !h.starts_with(['0', '1']) || !h.chars().chain(m.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    Some(base + sign * (h * 60 + m))
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const FULL_MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// fail2ban's `reGroupDictStrptime`.
fn strptime(fields: &[(&str, &str)], clock: &Clock) -> Option<Timestamp> {
    let mut year: Option<i64> = None;
    let mut month: Option<i64> = None;
    let mut day: Option<i64> = None;
    let (mut hour, mut minute, mut second) = (0i64, 0i64, 0i64);
    let mut offset: Option<i32> = None;
    let mut weekday: Option<i64> = None;
    let mut julian: Option<i64> = None;
    let mut week: Option<(i64, bool)> = None;
    let num = |v: &str| v.trim().parse::<i64>().ok();
    let ampm = fields
        .iter()
        .find(|(k, _)| *k == "p")
        .map(|(_, v)| v.to_lowercase())
        .unwrap_or_default();
    for &(key, val) in fields {
        match key {
            "y" => {
                let y = num(val)?;
                year = Some(if y <= 2000 { y + 2000 } else { y });
            }
            "Y" => year = Some(num(val)?),
            "m" => month = Some(num(val)?),
            "B" => {
                month = Some(FULL_MONTHS.iter().position(|m| *m == val.to_lowercase())? as i64 + 1)
            }
            "b" => month = Some(MONTHS.iter().position(|m| *m == val.to_lowercase())? as i64 + 1),
            "d" => day = Some(num(val)?),
            "H" => hour = num(val)?,
            "I" => {
                hour = num(val)?;
                if ampm.is_empty() || ampm == "am" {
                    if hour == 12 {
                        hour = 0;
                    }
                } else if ampm == "pm" && hour != 12 {
                    hour += 12;
                }
            }
            "M" => minute = num(val)?,
            "S" => second = num(val)?,
            "A" => weekday = Some(FULL_DAYS.iter().position(|d| *d == val.to_lowercase())? as i64),
            "a" => weekday = Some(DAYS.iter().position(|d| *d == val.to_lowercase())? as i64),
            "w" => {
                let w = num(val)? - 1;
                weekday = Some(if w < 0 { 6 } else { w });
            }
            "j" => julian = Some(num(val)?),
            "U" => week = Some((num(val)?, false)),
            "W" => week = Some((num(val)?, true)),
            "z" | "Z" => {
                offset = Some(if matches!(val, "Z" | "UTC" | "GMT") {
                    0
                } else {
                    zone_offset(val)?
                });
            }
            _ => {}
        }
    }
    let now = clock.now.to_zoned(clock.zone.clone()).datetime();
    let assume_year = year.is_none();
    let year = year.unwrap_or(i64::from(now.year()));
    if month.is_none() || day.is_none() {
        if julian.is_none() {
            if let (Some((w, monday_first)), Some(wd)) = (week, weekday) {
                julian = Some(julian_from_week(year, w, wd, monday_first)?);
            }
        }
        if let Some(j) = julian {
            let d = Date::new(i16::try_from(year).ok()?, 1, 1)
                .ok()?
                .checked_add(SignedDuration::from_hours(24 * (j - 1)))
                .ok()?;
            month = Some(i64::from(d.month()));
            day = Some(i64::from(d.day()));
        }
    }
    let assume_today = month.is_none() && day.is_none();
    let (month, day) = if assume_today {
        (i64::from(now.month()), i64::from(now.day()))
    } else {
        (month?, day?)
    };
    let civil = |y: i64, mo: i64, d: i64| -> Option<DateTime> {
        let date = Date::new(
            i16::try_from(y).ok()?,
            i8::try_from(mo).ok()?,
            i8::try_from(d).ok()?,
        )
        .ok()?;
        let time = Time::new(
            i8::try_from(hour).ok()?,
            i8::try_from(minute).ok()?,
            i8::try_from(second.min(59)).ok()?,
            0,
        )
        .ok()?;
        Some(date.to_datetime(time))
    };
    let mut result = civil(year, month, day)?;
    if let Some(off) = offset {
        result = result
            .checked_sub(SignedDuration::from_secs(i64::from(off) * 60))
            .ok()?;
    }
    if assume_today && result > now {
        result = result.checked_sub(SignedDuration::from_hours(24)).ok()?;
    }
    if assume_year && result > now.checked_add(SignedDuration::from_hours(24)).ok()? {
        // fail2ban's `replace(year=year-1, month=month, day=day)`: the written month and day.
        let date = Date::new(
            i16::try_from(year - 1).ok()?,
            i8::try_from(month).ok()?,
            i8::try_from(day).ok()?,
        )
        .ok()?;
        result = date.to_datetime(result.time());
    }
    match offset {
        Some(_) => Offset::UTC.to_timestamp(result).ok(),
        None => result
            .to_zoned(clock.zone.clone())
            .ok()
            .map(|z| z.timestamp()),
    }
}

/// Python's `_calc_julian_from_U_or_W`.
fn julian_from_week(year: i64, week: i64, weekday: i64, monday_first: bool) -> Option<i64> {
    let first = Date::new(i16::try_from(year).ok()?, 1, 1).ok()?;
    let first_weekday = i64::from(first.weekday().to_monday_zero_offset());
    let (first_weekday, weekday) = if monday_first {
        (first_weekday, weekday)
    } else {
        ((first_weekday + 1) % 7, (weekday + 1) % 7)
    };
    let week_0_length = (7 - first_weekday) % 7;
    Some(if week == 0 {
        1 + weekday - first_weekday
    } else {
        let days_to_week = week_0_length + 7 * (week - 1);
        1 + days_to_week + weekday
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> Clock {
        Clock {
            zone: TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap(),
            now: Timestamp::from_second(1_124_013_600).unwrap(),
        }
    }

    fn detect(d: &mut DateDetector, line: &str) -> Option<(String, String)> {
        let (m, t) = d.match_time(line, 0)?;
        let time = t.time(line, &m, &clock())?;
        Some((line[m.cut.0..m.cut.1].to_string(), time.to_string()))
    }

    #[test]
    fn defaults_find_common_dates() {
        let mut d = DateDetector::new(None, '2').unwrap();
        assert_eq!(d.templates().count(), 31);
        assert_eq!(
            detect(&mut d, "Aug 14 11:59:59 host sshd[1]: x"),
            Some(("Aug 14 11:59:59".into(), "2005-08-14T09:59:59Z".into()))
        );
        // A date more than a day ahead of now is last year's.
        assert_eq!(
            detect(&mut d, "Dec 31 23:00:00 host x").map(|x| x.1),
            Some("2004-12-31T22:00:00Z".into())
        );
        assert_eq!(
            detect(
                &mut d,
                "192.0.2.1 - - [14/Aug/2005:11:00:00 +0000] \"GET / HTTP/1.1\""
            ),
            Some((
                "14/Aug/2005:11:00:00 +0000".into(),
                "2005-08-14T11:00:00Z".into()
            ))
        );
        assert_eq!(
            detect(&mut d, "2005-08-14 11:00:00,123 x").map(|x| x.1),
            Some("2005-08-14T09:00:00Z".into())
        );
        assert_eq!(
            detect(&mut d, "1124013500.500 x").map(|x| x.1),
            Some("2005-08-14T09:58:20.5Z".into())
        );
        assert_eq!(detect(&mut d, "no date here"), None);
    }

    #[test]
    fn separators_must_agree() {
        let mut d = DateDetector::new(
            Some("{^LN-BEG}%ExY(?P<_sep>[-/.])%m(?P=_sep)%d %H:%M:%S"),
            '2',
        )
        .unwrap();
        assert!(detect(&mut d, "2005-08-14 11:00:00 x").is_some());
        assert!(detect(&mut d, "2005-08/14 11:00:00 x").is_none());
    }

    #[test]
    fn datepattern_forms() {
        let mut d = DateDetector::new(Some("^[^\\[]*\\[({DATE})\n{^LN-BEG}"), '2').unwrap();
        assert_eq!(
            detect(&mut d, "192.0.2.1 - - [14/Aug/2005:11:00:00 +0000] \"GET"),
            Some((
                "14/Aug/2005:11:00:00 +0000".into(),
                "2005-08-14T11:00:00Z".into()
            ))
        );
        let mut d = DateDetector::new(Some("^WARNING:()**"), '2').unwrap();
        let (m, _) = d.match_time("WARNING: x", 0).unwrap();
        assert_eq!(m.cut.0, m.cut.1);
        assert!(DateDetector::new(Some("%Q"), '2').is_err());
        let mut d = DateDetector::new(Some("{^LN-BEG}TAI64N"), '2').unwrap();
        assert_eq!(
            detect(&mut d, "@4000000042ff1d7b00000000 x").map(|x| x.1),
            Some("2005-08-14T10:31:23Z".into())
        );
    }

    #[test]
    fn zones() {
        assert_eq!(zone_offset("+0200"), Some(120));
        assert_eq!(zone_offset("-05:30"), Some(-330));
        assert_eq!(zone_offset("CEST"), Some(120));
        assert_eq!(zone_offset("UTC+0100"), Some(60));
        assert_eq!(zone_offset("error"), None);
        assert_eq!(zone_offset("QQQ"), None);
    }
}

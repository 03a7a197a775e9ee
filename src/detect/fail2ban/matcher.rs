//! A fail2ban filter at work: lines in, in order; failures out.
//!
//! [`Fail2banFilter`] is the compiled, immutable part (regexes, date templates), shareable
//! between threads. A [`Matcher`] adds what fail2ban's `Filter` keeps between lines: the
//! date detector's learning, the last date seen (for lines without one), the buffer of the
//! last `maxlines` lines for multi-line regexes, and the cache that joins the lines of one
//! connection by `<F-MLFID>` (a connect line with the address, a later failure line without
//! it; `<F-NOFAIL>`, `<F-MLFFORGET>` and `<F-MLFGAINED>` steer it). [`Matcher::feed`]
//! follows fail2ban's `processLine` and `findFailure` step by step, because what a line
//! yields depends on the lines before it.
//!
//! A line yields [`Found`] entries: normally at most one (the first failregex that matches
//! decides); with [`Matcher::check_all`] every failregex is tried, as fail2ban's own sample
//! test does, to prove that exactly one matches. An entry is a failure when it has an
//! identifier and is not marked `nofail`; [`Found::failure`] says so.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;

use super::dates::{Clock, DateDetector, DateError};
use super::engine::{CompileError, Match, Regex};
use super::ini::Origin;
use super::literals::Cut;
use super::reader::{FilterDefinition, RegexLine};
use super::tags::{self, HostTag};

/// A value of fail2ban's failure data (a Python dict of groups and bookkeeping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A group's text, or a bookkeeping string.
    Text(String),
    /// Matched lines.
    Lines(Vec<String>),
    /// The users seen on one connection.
    Set(BTreeSet<String>),
    /// `tuple_` groups combined.
    Tuple(Vec<Option<String>>),
    /// A flag set by its presence (`nofail`, `mlfforget`, `mlfgained`).
    Flag,
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Text(s) => !s.is_empty(),
            Value::Lines(v) => !v.is_empty(),
            Value::Set(s) => !s.is_empty(),
            Value::Tuple(t) => !t.is_empty(),
            Value::Flag => true,
        }
    }
    /// The text, when this is a [`Value::Text`].
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Failure data: group name (or bookkeeping key) → value; a group that did not take part is
/// present with `None`, as in Python's `groupdict()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Data(Vec<(Arc<str>, Option<Value>)>);

impl Data {
    /// The value under `key`; `None` when it is absent or its group took no part.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| &**k == key)
            .and_then(|(_, v)| v.as_ref())
    }
    /// The text under `key`, when it is a [`Value::Text`].
    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::text)
    }
    fn truthy(&self, key: &str) -> bool {
        self.get(key).is_some_and(Value::truthy)
    }
    fn set(&mut self, key: &str, value: Option<Value>) {
        match self.0.iter_mut().find(|(k, _)| &**k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((Arc::from(key), value)),
        }
    }
    /// [`Data::set`] with a key already shared.
    fn set_shared(&mut self, key: &Arc<str>, value: Option<Value>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.clone(), value)),
        }
    }
    fn pop(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| &**k == key)?;
        self.0.remove(i).1
    }
    fn lines(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(Value::Lines(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
    /// Python's `dict.update`.
    fn update(&mut self, other: &Data) {
        for (k, v) in &other.0 {
            self.set_shared(k, v.clone());
        }
    }
    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Value>)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_ref()))
    }
}

/// What identifies a failure: an address (`ip4`, `ip6`), a name (`dns`), or a custom id
/// (`<F-ID>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureId {
    /// An IPv4 address (`<HOST>` or `<ADDR>` matched one), as written.
    Ip4(String),
    /// An IPv6 address, as written.
    Ip6(String),
    /// A host name (`dns`), which moat does not resolve.
    Name(String),
    /// A filter's own identifier (`<F-ID>`), not an address.
    Custom(String),
}

impl FailureId {
    /// The identifier's text, whatever its kind.
    pub fn text(&self) -> &str {
        match self {
            FailureId::Ip4(s) | FailureId::Ip6(s) | FailureId::Name(s) | FailureId::Custom(s) => s,
        }
    }
}

/// One result of a line.
#[derive(Clone, Debug)]
pub struct Found {
    /// Which failregex matched.
    pub rule: usize,
    /// `None` while a multi-line failure waits for its address.
    pub id: Option<FailureId>,
    /// The line's time; `None` when it has none and none is known.
    pub time: Option<Timestamp>,
    /// The failure data: the regex's groups and fail2ban's bookkeeping (`matches`, `nofail`, ...).
    pub data: Data,
}

impl Found {
    /// Whether this is a failure: it has an identifier and is not marked `nofail`.
    pub fn failure(&self) -> bool {
        self.id.is_some() && !self.data.truthy("nofail")
    }
    /// The number of lines that make up the failure (fail2ban's `attempts`).
    pub fn attempts(&self) -> usize {
        self.data.lines("matches").len()
    }
    /// The `<F-*>` captures worth reporting (user, and custom ones), without bookkeeping.
    pub fn captures(&self) -> Vec<(&str, &str)> {
        const HIDDEN: &[&str] = &[
            "ip4",
            "ip6",
            "dns",
            "fid",
            "mlfid",
            "nofail",
            "mlfforget",
            "mlfgained",
            "cidr",
            "content",
        ];
        self.data
            .iter()
            .filter(|(k, _)| {
                !HIDDEN.contains(k)
                    && !k.starts_with('_')
                    && !k.starts_with("skiplines")
                    && !k.starts_with("cond_")
            })
            .filter_map(|(k, v)| v.and_then(Value::text).map(|t| (k, t)))
            .collect()
    }
}

/// A filter that cannot be compiled: where, which regex, what construct.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {what} {regex:?}: {message}")]
pub struct FilterCompileError {
    /// Where the regex was written (file and line).
    pub origin: Origin,
    /// `failregex #3`, `prefregex`, `datepattern`.
    pub what: String,
    /// The regex, after fail2ban's tags were replaced.
    pub regex: String,
    /// Why it cannot be compiled.
    pub message: String,
    /// The regex construct to blame, when one is.
    pub construct: Option<String>,
}

/// A compiled fail2ban filter.
#[derive(Debug)]
pub struct Fail2banFilter {
    /// What the filter's files said: its regexes and options, as read.
    pub definition: FilterDefinition,
    prefregex: Option<Regex>,
    failregex: Vec<Regex>,
    ignoreregex: Vec<Regex>,
    maxlines: usize,
    dates: DateDetector,
    /// The failregexes' linear screens in one set: one pass says which may match (and the
    /// same without Unicode, for ASCII lines, when every screen is ASCII).
    screen: Option<super::engine::LazySet>,
    screen_ascii: Option<regex::bytes::RegexSet>,
    /// Text the regexes' input must contain (the prefregex's, or one per failregex): lines
    /// without any are done after their date.
    needs: Option<aho_corasick::AhoCorasick>,
    /// Pieces of those that the whole line must contain, date and all (see
    /// [`super::literals`]); `None` when lines cannot be skipped before their date.
    skim: Option<Vec<Vec<u8>>>,
}

/// Literals of which a line must contain one for `regexes` to possibly match: the
/// prefregex's when it has a set, else the failregexes' together; `None` when some
/// failregex has none.
fn needed(pref: Option<&Regex>, regexes: &[Regex], cut: Cut) -> Option<Vec<Vec<u8>>> {
    if let Some(set) = pref.and_then(|p| super::literals::needed(&p.screen, cut)) {
        return Some(set);
    }
    let mut all = Vec::new();
    for r in regexes {
        for l in super::literals::needed(&r.screen, cut)? {
            if !all.contains(&l) {
                all.push(l);
            }
        }
    }
    Some(all)
}

/// fail2ban's `alt_`/`tuple_` group names: `alt_user_1` → `user`.
fn complex_name(name: &str) -> Option<(bool, String)> {
    if name.len() <= 4 {
        return None;
    }
    let (alt, rest) = if let Some(r) = name.strip_prefix("alt_") {
        (true, r)
    } else if let Some(r) = name.strip_prefix("tuple_") {
        (false, r)
    } else {
        return None;
    };
    // `(.*?)(?:_\d+)?$`: the shortest name after which only an optional `_digits` is left.
    let base = (0..=rest.len())
        .filter(|&cut| rest.is_char_boundary(cut))
        .find(|&cut| {
            let tail = &rest[cut..];
            tail.is_empty()
                || tail
                    .strip_prefix('_')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map_or(rest, |cut| &rest[..cut]);
    let base = match base.to_lowercase().as_str() {
        "id" => "fid".to_string(),
        "port" => "fport".to_string(),
        other => other.to_string(),
    };
    Some((alt, base))
}

impl Fail2banFilter {
    /// Compiles a definition; `year` is the current year (fail2ban accepts `%ExY` from 2000
    /// to three years ahead).
    pub fn compile(
        definition: FilterDefinition,
        year: i16,
    ) -> Result<Fail2banFilter, Box<FilterCompileError>> {
        let maxlines = definition.maxlines.unwrap_or(1);
        let multiline = maxlines > 1;
        let host = match definition.usedns.as_deref().map(str::trim) {
            Some("no") => HostTag::AddressOnly,
            Some("yes" | "raw") => {
                let origin = definition
                    .failregex
                    .first()
                    .map(|r| r.origin.clone())
                    .unwrap_or_default();
                return Err(Box::new(FilterCompileError {
                    origin,
                    what: "usedns".into(),
                    regex: definition.usedns.clone().unwrap_or_default(),
                    message: "refused: a name in a log line must never choose whom to ban; \
                              moat never resolves names (hint: usedns = no, and <ADDR>)"
                        .into(),
                    construct: None,
                }));
            }
            _ => HostTag::AddressOrName,
        };
        let one = |line: &RegexLine,
                   what: String,
                   multiline: bool|
         -> Result<Regex, Box<FilterCompileError>> {
            let fail = |message: String, construct: Option<String>| {
                Box::new(FilterCompileError {
                    origin: line.origin.clone(),
                    what: what.clone(),
                    regex: line.text.clone(),
                    message,
                    construct,
                })
            };
            let python = tags::resolve(&line.text, host).map_err(|m| fail(m, None))?;
            if python.trim().is_empty() {
                return Err(fail("an empty regex".into(), None));
            }
            Regex::compile(&python, multiline)
                .map_err(|e: CompileError| fail(e.message, e.construct))
        };
        let prefregex = definition
            .prefregex
            .as_ref()
            .map(|l| one(l, "prefregex".into(), false))
            .transpose()?;
        let failregex = definition
            .failregex
            .iter()
            .enumerate()
            .map(|(i, l)| one(l, format!("failregex #{}", i + 1), multiline))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, (r, line)) in failregex.iter().zip(&definition.failregex).enumerate() {
            let has_id = |r: &Regex| tags::ID_GROUPS.iter().any(|g| r.has_group(g));
            if !has_id(r) && !prefregex.as_ref().is_some_and(has_id) {
                return Err(Box::new(FilterCompileError {
                    origin: line.origin.clone(),
                    what: format!("failregex #{}", i + 1),
                    regex: line.text.clone(),
                    message: "no failure-id group: the regex needs <HOST> (or <ADDR>, <F-ID>)"
                        .into(),
                    construct: None,
                }));
            }
        }
        let ignoreregex = definition
            .ignoreregex
            .iter()
            .enumerate()
            .map(|(i, l)| one(l, format!("ignoreregex #{}", i + 1), false))
            .collect::<Result<Vec<_>, _>>()?;
        let year_digit = super::dates::year_digit(year);
        let dates = DateDetector::new(
            definition.datepattern.as_ref().map(|l| l.text.as_str()),
            year_digit,
        )
        .map_err(|e: DateError| {
            let line = definition.datepattern.clone().unwrap_or(RegexLine {
                text: String::new(),
                origin: Origin::default(),
            });
            Box::new(FilterCompileError {
                origin: line.origin,
                what: "datepattern".into(),
                regex: e.pattern,
                message: e.message,
                construct: None,
            })
        })?;
        let screen = (maxlines == 1).then(|| {
            super::engine::LazySet::new(failregex.iter().map(|r| r.screen.clone()).collect())
        });
        let screen_ascii = screen.as_ref().and_then(super::engine::LazySet::ascii);
        let needs = needed(prefregex.as_ref(), &failregex, Cut::None)
            .filter(|_| maxlines == 1)
            .and_then(|lits| aho_corasick::AhoCorasick::new(lits).ok());
        let skim = dates
            .cuts()
            .filter(|_| maxlines == 1)
            .and_then(|cut| needed(prefregex.as_ref(), &failregex, cut));
        Ok(Fail2banFilter {
            definition,
            prefregex,
            failregex,
            ignoreregex,
            maxlines,
            dates,
            screen,
            screen_ascii,
            needs,
            skim,
        })
    }

    /// A matcher for one stream of lines.
    pub fn matcher(self: &Arc<Self>) -> Matcher {
        Matcher {
            filter: self.clone(),
            dates: self.dates.clone(),
            buffer: Vec::new(),
            last_time_text: String::new(),
            last_date: None,
            mlfid: MlfidCache::default(),
            check_all: false,
        }
    }

    /// The compiled failregexes, in the order written (a [`Found::rule`] indexes them).
    pub fn failregexes(&self) -> &[Regex] {
        &self.failregex
    }
    /// The compiled prefregex, when the filter has one.
    pub fn prefregex(&self) -> Option<&Regex> {
        self.prefregex.as_ref()
    }
    /// The compiled ignoreregexes, in the order written.
    pub fn ignoreregexes(&self) -> &[Regex] {
        &self.ignoreregex
    }
    /// How many lines a multi-line failregex sees at once (fail2ban's `maxlines`, at least 1).
    pub fn maxlines(&self) -> usize {
        self.maxlines
    }
    /// The literals of which a line must contain one, date and all, to be worth reading;
    /// `None` when every line must be read (multi-line buffers, or date patterns that could
    /// join words when cut out). Lines without them change nothing but the date detector's
    /// learning.
    pub fn skim_literals(&self) -> Option<&[Vec<u8>]> {
        self.skim.as_deref()
    }

    /// Whether a line's result can depend on earlier lines beyond its date (multi-line
    /// buffering or `<F-MLFID>` joining).
    pub fn is_stateful(&self) -> bool {
        self.maxlines > 1
            || self
                .prefregex
                .as_ref()
                .is_some_and(|r| r.has_group("mlfid"))
            || self.failregex.iter().any(|r| r.has_group("mlfid"))
    }
}

/// A line as fail2ban keeps it: the text before the date, the date, the text after; here
/// the line and the span of its date (or, for a line that takes the last date seen, that
/// date's text before it).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct TupleLine {
    line: String,
    cut: (usize, usize),
    stale_date: Option<String>,
}

impl TupleLine {
    fn plain(line: &str) -> TupleLine {
        TupleLine {
            line: line.to_string(),
            ..TupleLine::default()
        }
    }
    fn cut(line: &str, start: usize, end: usize) -> TupleLine {
        TupleLine {
            line: line.to_string(),
            cut: (start, end),
            stale_date: None,
        }
    }
    fn stale(date: &str, line: &str) -> TupleLine {
        TupleLine {
            line: line.to_string(),
            cut: (0, 0),
            stale_date: Some(date.to_string()),
        }
    }
    fn push_without_date(&self, out: &mut String) {
        out.push_str(&self.line[..self.cut.0]);
        out.push_str(&self.line[self.cut.1..]);
    }
    fn without_date(&self) -> String {
        let mut s = String::with_capacity(self.line.len());
        self.push_without_date(&mut s);
        s
    }
    fn whole(&self) -> String {
        match &self.stale_date {
            Some(d) => format!("{d}{}", self.line),
            None => self.line.clone(),
        }
    }
}

/// The lines the regexes see: without their dates, joined by and ending with a newline.
fn buffer_text(lines: &[TupleLine]) -> String {
    let mut s = String::with_capacity(lines.iter().map(|l| l.line.len() + 1).sum::<usize>() + 1);
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        l.push_without_date(&mut s);
    }
    s.push('\n');
    s
}

/// fail2ban's `Utils.Cache(maxCount=100, maxTime=300)` for multi-line failure ids: entries
/// expire, and when it is full the oldest go first.
#[derive(Clone, Debug, Default)]
struct MlfidCache {
    entries: std::collections::HashMap<String, (Data, i64, u64)>,
    /// Keys in the order they were added (with the generation that added them; an entry
    /// removed or added again later leaves a stale one behind).
    order: std::collections::VecDeque<(String, u64)>,
    generation: u64,
}

const MLFID_MAX: usize = 100;
const MLFID_SECS: i64 = 300;

impl MlfidCache {
    /// The entry's data, taken out (the caller puts the merged data back with
    /// [`MlfidCache::set_existing`] or removes the entry).
    fn take(&mut self, key: &str, now: i64) -> Option<Data> {
        let (data, expiry, _) = self.entries.get_mut(key)?;
        if *expiry > now {
            return Some(std::mem::take(data));
        }
        self.entries.remove(key);
        None
    }
    fn set(&mut self, key: &str, data: Data, now: i64) {
        if self.entries.len() >= MLFID_MAX {
            while let Some((k, generation)) = self.order.pop_front() {
                let live = self.entries.get(&k).is_some_and(|e| e.2 == generation);
                if !live {
                    continue;
                }
                let (_, expiry, _) = self.entries.remove(&k).expect("live");
                if expiry > now && self.entries.len() < MLFID_MAX {
                    break;
                }
            }
        }
        match self.entries.get_mut(key) {
            Some(slot) => {
                slot.0 = data;
                slot.1 = now + MLFID_SECS;
            }
            None => {
                self.generation += 1;
                self.entries
                    .insert(key.to_string(), (data, now + MLFID_SECS, self.generation));
                self.order.push_back((key.to_string(), self.generation));
            }
        }
        // Stale order entries of removed keys are dropped as they come to the front; keep
        // the log from growing without bound when keys churn.
        if self.order.len() > 4 * MLFID_MAX {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).is_some_and(|e| e.2 == *g));
        }
    }
    fn unset(&mut self, key: &str) {
        self.entries.remove(key);
    }
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A regex's match on a buffer, with fail2ban's split into matched and unmatched lines.
struct BufferMatch {
    m: Match,
    matched: Vec<TupleLine>,
    unmatched: Vec<TupleLine>,
}

fn search(re: &Regex, buf: &str, org: &[TupleLine]) -> Option<BufferMatch> {
    let m = re.find(buf)?;
    if org.len() <= 1 {
        return Some(BufferMatch {
            m,
            matched: org.to_vec(),
            unmatched: Vec::new(),
        });
    }
    let start_line = buf[..(m.start + 1).min(buf.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end_line = buf[m.end.saturating_sub(1)..]
        .find('\n')
        .map_or(buf.len(), |i| m.end.saturating_sub(1) + i + 1);
    let count1 = buf[..start_line].matches('\n').count();
    let count2 = buf[..end_line].matches('\n').count();
    let count1 = count1.min(org.len());
    let count2 = count2.clamp(count1, org.len());
    let mut matched = org[count1..count2].to_vec();
    let mut unmatched = org[..count1].to_vec();
    // Lines a <SKIPLINES> swallowed are not part of the failure.
    let mut skipped = String::new();
    for (i, name) in re.names() {
        if name.starts_with("skiplines") {
            if let Some(t) = m.get(buf, i) {
                skipped.push_str(t);
            }
        }
    }
    let mut n = 0;
    for skipped_line in python_splitlines(&skipped) {
        if let Some(k) = matched[n.min(matched.len())..]
            .iter()
            .position(|l| l.without_date() == skipped_line)
        {
            unmatched.push(matched.remove(n + k));
            n += k;
        }
    }
    unmatched.extend_from_slice(&org[count2..]);
    Some(BufferMatch {
        m,
        matched,
        unmatched,
    })
}

fn python_splitlines(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => out.push(std::mem::take(&mut cur)),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The group dictionary of a match, with `alt_` groups merged into their base name and
/// `tuple_` groups combined (fail2ban's `getGroups`).
fn groups(re: &Regex, m: &Match, text: &str) -> Data {
    let mut d = Data(Vec::with_capacity(re.shared_names().count() + 2));
    for (i, name) in re.shared_names() {
        d.set_shared(name, m.get(text, i).map(|t| Value::Text(t.to_string())));
    }
    let mut alts: Vec<(String, String)> = Vec::new();
    let mut tuples: Vec<(String, String)> = Vec::new();
    for (_, name) in re.names() {
        if let Some((alt, base)) = complex_name(name) {
            if alt {
                alts.push((name.to_string(), base));
            } else {
                tuples.push((name.to_string(), base));
            }
        }
    }
    alts.sort();
    tuples.sort();
    for (k, n) in alts {
        if let Some(v) = d.get(&k).filter(|v| v.truthy()).cloned() {
            if !d.truthy(&n) {
                d.set(&n, Some(v));
            }
        }
    }
    for (k, n) in tuples {
        let v = d.text(&k).map(str::to_string);
        let t = match d.get(&n) {
            Some(Value::Tuple(t)) => {
                let mut t = t.clone();
                t.push(v);
                t
            }
            other => vec![other.and_then(Value::text).map(str::to_string), v],
        };
        d.set(&n, Some(Value::Tuple(t)));
    }
    d
}

/// The stateful part of a filter.
#[derive(Clone, Debug)]
pub struct Matcher {
    filter: Arc<Fail2banFilter>,
    dates: DateDetector,
    buffer: Vec<TupleLine>,
    last_time_text: String,
    last_date: Option<Timestamp>,
    mlfid: MlfidCache,
    /// Try every failregex on every line (fail2ban's `checkAllRegex`, for its sample test).
    pub check_all: bool,
}

/// Lines without a date take the last one seen when it is this recent (fail2ban: 60 s).
const LAST_DATE_SECS: i64 = 60;

impl Matcher {
    /// The compiled filter this matcher runs.
    pub fn filter(&self) -> &Arc<Fail2banFilter> {
        &self.filter
    }

    /// Processes the next line (fail2ban's `processLine`): finds and cuts out its date, then
    /// looks for failures. `known_time`: the time the source knows (a journal entry's), so
    /// that no date is looked for.
    pub fn feed(&mut self, line: &str, known_time: Option<Timestamp>, clock: &Clock) -> Vec<Found> {
        let now = clock.now;
        let now_secs = now.as_second();
        let recent = |d: Option<Timestamp>| d.filter(|d| d.as_second() > now_secs - LAST_DATE_SECS);
        let (tuple, date) = if let Some(t) = known_time {
            self.last_time_text.clear();
            self.last_date = Some(t);
            (TupleLine::plain(line), Some(t))
        } else {
            let mut date = None;
            let mut tuple = None;
            if let Some((m, template)) = self.dates.match_time(line, now_secs) {
                let (s, e) = m.cut;
                tuple = Some(TupleLine::cut(line, s, e));
                if s < e {
                    date = template.time(line, &m, clock);
                    if date.is_some() {
                        self.last_time_text.clear();
                        self.last_time_text.push_str(&line[s..e]);
                        self.last_date = date;
                    }
                } else if let Some(last) = recent(self.last_date) {
                    tuple = Some(TupleLine::stale(&self.last_time_text, line));
                    date = Some(last);
                } else {
                    date = Some(now);
                }
            }
            if date.is_none() {
                if let Some(last) = recent(self.last_date) {
                    tuple = Some(TupleLine::stale(&self.last_time_text, line));
                    date = Some(last);
                }
            }
            (tuple.unwrap_or_else(|| TupleLine::plain(line)), date)
        };
        self.find_failure(tuple, date, now_secs)
    }

    /// fail2ban's `_ignoreLine`: the index of an ignoreregex that matches.
    fn ignore_line(
        &mut self,
        buf: &str,
        org: &[TupleLine],
        fail: Option<&BufferMatch>,
    ) -> Option<usize> {
        let multi = self.filter.maxlines > 1;
        let (buf, org): (String, Vec<TupleLine>) = match fail {
            Some(f) if multi => (buffer_text(&f.matched), f.matched.clone()),
            _ => (buf.to_string(), org.to_vec()),
        };
        let mut found = None;
        for (i, re) in self.filter.ignoreregex.iter().enumerate() {
            if search(re, &buf, &org).is_some() {
                found = Some(i);
                if !self.check_all || multi {
                    if let Some(f) = fail {
                        self.buffer = f.unmatched.clone();
                    }
                }
                if !self.check_all {
                    break;
                }
            }
        }
        found
    }

    /// fail2ban's `_mergeFailure`: joins a line's data with what is known of its connection.
    fn merge_failure(
        &mut self,
        mlfid: &str,
        mut fail: Data,
        matched: &[TupleLine],
        now: i64,
    ) -> Data {
        let cached = if self.mlfid.is_empty() {
            None
        } else {
            self.mlfid.take(mlfid, now)
        };
        let mut users: Option<BTreeSet<String>> = None;
        let mut flags = 0u8;
        if fail.truthy("mlfgained") {
            flags |= 8 | 1;
            if !fail.truthy("nofail") {
                let g = fail.get("mlfgained").cloned();
                fail.set("nofail", g);
            }
        } else if fail.truthy("nofail") {
            flags |= 1;
        }
        if fail.pop("mlfforget").is_some_and(|v| v.truthy()) {
            flags |= 2;
        }
        // fail2ban's `_updateUsers`: the set of users seen on the connection.
        let update_users = |d: &mut Data, user: Option<String>| -> Option<BTreeSet<String>> {
            let existing = match d.get("users") {
                Some(Value::Set(s)) => Some(s.clone()),
                _ => None,
            };
            match user.filter(|u| !u.is_empty()) {
                Some(u) => {
                    let mut set = existing.filter(|s| !s.is_empty()).unwrap_or_default();
                    set.insert(u);
                    d.set("users", Some(Value::Set(set.clone())));
                    Some(set)
                }
                None => existing,
            }
        };
        let user = fail.text("user").map(str::to_string);
        if let Some(mut groups) = cached {
            users = update_users(&mut groups, user);
            if groups.pop("nofail").is_some_and(|v| v.truthy()) {
                flags |= 4;
            }
            if groups.pop("mlfgained").is_some_and(|v| v.truthy()) {
                flags |= 4;
            }
            if flags & 8 != 0 {
                groups.pop("mlfpending");
            }
            if flags & 4 == 0 && !groups.truthy("mlfpending") {
                groups.pop("matches");
            }
            for (k, v) in &fail.0 {
                if v.is_some() {
                    groups.set_shared(k, v.clone());
                }
            }
            fail = groups;
            if flags & 2 != 0 {
                self.mlfid.unset(mlfid);
            }
        } else if flags & 2 == 0 {
            users = update_users(&mut fail, user);
            // The data itself is stored below, once merged.
            self.mlfid.set(mlfid, Data::default(), now);
        }
        let pending = fail.pop("mlfpending").is_some_and(|v| v.truthy());
        if pending || users.as_ref().is_some_and(|u| u.len() > 1) {
            fail.pop("nofail");
            fail.pop("mlfgained");
            flags &= !(8 | 1);
        }
        if flags & 1 == 0 {
            let mut m = fail.lines("nofail-matches");
            fail.pop("nofail-matches");
            m.extend(fail.lines("matches"));
            if flags & 8 == 0 {
                m.extend(matched.iter().map(TupleLine::whole));
            }
            fail.set("matches", Some(Value::Lines(m)));
        } else if flags & 3 == 1 {
            let mut m = fail.lines("nofail-matches");
            m.extend(matched.iter().map(TupleLine::whole));
            fail.set("nofail-matches", Some(Value::Lines(m)));
        }
        // The cache holds the same dictionary in fail2ban: what was merged here stays.
        if flags & 2 == 0 {
            self.mlfid.set_existing(mlfid, fail.clone());
        }
        fail
    }

    /// fail2ban's `findFailure`.
    fn find_failure(&mut self, tuple: TupleLine, date: Option<Timestamp>, now: i64) -> Vec<Found> {
        let filter = self.filter.clone();
        let multi = filter.maxlines > 1;
        let mut found = Vec::new();
        // A single-line filter reads `org` only: its buffer is only set again below (by a
        // prefregex's content), so it need not hold a copy of the line.
        let org = if multi {
            self.buffer.push(tuple);
            let excess = self.buffer.len().saturating_sub(filter.maxlines);
            self.buffer.drain(..excess);
            self.buffer.clone()
        } else {
            self.buffer.clear();
            vec![tuple]
        };
        let mut buf: Option<String> = Some(buffer_text(&org));
        if !filter.ignoreregex.is_empty()
            && filter.ignoreregex.len() + 2 < filter.failregex.len()
            && self
                .ignore_line(buf.as_deref().expect("set"), &org, None)
                .is_some()
        {
            return found;
        }
        if let Some(needs) = &filter.needs {
            if !needs.is_match(buf.as_deref().expect("set")) {
                return found;
            }
        }
        let mut pre = Data::default();
        if let Some(pref) = &filter.prefregex {
            let text = buf.as_deref().expect("set");
            let Some(m) = search(pref, text, &org) else {
                return found;
            };
            pre = groups(pref, &m.m, text);
            if let Some(content) = pre.pop("content").filter(Value::truthy) {
                self.buffer = vec![TupleLine::plain(content.text().unwrap_or_default())];
                buf = None;
            }
        }
        // One pass over the single line says which failregexes may match at all.
        if buf.is_none() {
            buf = Some(buffer_text(&self.buffer));
        }
        debug_assert!(multi || buf.is_some());
        let screened: Option<Vec<bool>> = {
            let text = buf.as_deref().expect("set");
            match (&filter.screen_ascii, &filter.screen) {
                (Some(set), _) if text.is_ascii() => {
                    let m = set.matches(text.as_bytes());
                    Some((0..filter.failregex.len()).map(|i| m.matched(i)).collect())
                }
                (_, Some(set)) => set.get().map(|set| {
                    let m = set.matches(text);
                    (0..filter.failregex.len()).map(|i| m.matched(i)).collect()
                }),
                _ => None,
            }
        };
        for (index, re) in filter.failregex.iter().enumerate() {
            if screened.as_ref().is_some_and(|s| !s[index]) {
                continue;
            }
            let text = match buf.take() {
                Some(t) => t,
                None => buffer_text(&self.buffer),
            };
            let Some(bm) = search(re, &text, &org) else {
                buf = Some(text);
                continue;
            };
            let mut fail = groups(re, &bm.m, &text);
            if !filter.ignoreregex.is_empty() && self.ignore_line(&text, &org, Some(&bm)).is_some()
            {
                if !self.check_all {
                    break;
                }
                if !multi {
                    // fail2ban rebuilds the same text from its unchanged buffer.
                    buf = Some(text);
                }
                continue;
            }
            if !self.check_all || multi {
                self.buffer = bm.unmatched.clone();
            } else {
                buf = Some(text);
            }
            if !pre.0.is_empty() {
                let mut merged = pre.clone();
                merged.update(&fail);
                fail = merged;
            }
            let mlfid = fail.text("mlfid").map(str::to_string);
            if let Some(id) = &mlfid {
                fail = self.merge_failure(id, fail, &bm.matched, now);
                if fail.truthy("nofail") && !self.check_all {
                    return found;
                }
            } else {
                let mut m = fail.lines("matches");
                m.extend(bm.matched.iter().map(TupleLine::whole));
                fail.set("matches", Some(Value::Lines(m)));
            }
            let fid = fail.text("fid").map(str::to_string);
            let addr = fail
                .text("ip4")
                .map(|s| FailureId::Ip4(s.to_string()))
                .or_else(|| fail.text("ip6").map(|s| FailureId::Ip6(s.to_string())))
                .or_else(|| fail.text("dns").map(|s| FailureId::Name(s.to_string())));
            let id = match (fid, addr) {
                (Some(f), Some(a)) if f != a.text() => {
                    fail.set("ip", Some(Value::Text(a.text().to_string())));
                    Some(FailureId::Custom(f))
                }
                (_, Some(a)) => Some(a),
                (Some(f), None) => Some(FailureId::Custom(f)),
                (None, None) => None,
            };
            if id.is_none() {
                fail.set("mlfpending", Some(Value::Flag));
                if let Some(m) = &mlfid {
                    self.mlfid.set_existing(m, fail.clone());
                }
                if !self.check_all {
                    return found;
                }
            }
            found.push(Found {
                rule: index,
                id,
                time: date,
                data: fail,
            });
            if !self.check_all {
                break;
            }
        }
        found
    }
}

impl MlfidCache {
    /// Updates an entry in place, keeping its place and expiry (fail2ban mutates the cached
    /// dictionary itself).
    fn set_existing(&mut self, key: &str, data: Data) {
        if let Some(slot) = self.entries.get_mut(key) {
            slot.0 = data;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::fail2ban::reader::RegexLine;

    fn def(
        pref: Option<&str>,
        fail: &[&str],
        datepattern: Option<&str>,
        maxlines: Option<usize>,
    ) -> FilterDefinition {
        let line = |t: &str| RegexLine {
            text: t.to_string(),
            origin: Origin::default(),
        };
        FilterDefinition {
            name: "t".into(),
            prefregex: pref.map(line),
            failregex: fail.iter().map(|t| line(t)).collect(),
            datepattern: datepattern.map(line),
            maxlines,
            ..FilterDefinition::default()
        }
    }

    fn clock() -> Clock {
        Clock {
            zone: jiff::tz::TimeZone::UTC,
            now: "2005-08-14T10:00:00Z".parse().unwrap(),
        }
    }

    fn failures(m: &mut Matcher, line: &str) -> Vec<(String, String)> {
        m.feed(line, None, &clock())
            .into_iter()
            .filter(Found::failure)
            .map(|f| {
                (
                    f.id.unwrap().text().to_string(),
                    f.time.map(|t| t.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn date_is_cut_before_matching() {
        let f = Arc::new(
            Fail2banFilter::compile(def(None, &[r"^<HOST> - \S+ \[\] "], None, None), 2026)
                .unwrap(),
        );
        let mut m = f.matcher();
        assert_eq!(
            failures(
                &mut m,
                "192.0.2.7 - - [14/Aug/2005:09:00:00 +0000] \"GET /x\""
            ),
            [("192.0.2.7".to_string(), "2005-08-14T09:00:00Z".to_string())]
        );
        assert!(
            failures(&mut m, "name.example - - [14/Aug/2005:09:00:00 +0000] x")
                .iter()
                .all(|(h, _)| h == "name.example")
        );
    }

    #[test]
    fn mlfid_joins_connect_and_failure_lines() {
        let f = Arc::new(
            Fail2banFilter::compile(
                def(
                    Some(r"^\s*<F-MLFID>conn=\d+</F-MLFID> <F-CONTENT>.+</F-CONTENT>$"),
                    &[
                        r"^<F-NOFAIL>connect from</F-NOFAIL> <HOST>$",
                        r"^auth failed$",
                        r"^<F-MLFFORGET>closed</F-MLFFORGET>$",
                    ],
                    Some("^%H:%M:%S"),
                    None,
                ),
                2026,
            )
            .unwrap(),
        );
        let mut m = f.matcher();
        assert!(failures(&mut m, "09:00:00 conn=7 connect from 192.0.2.9").is_empty());
        assert_eq!(failures(&mut m, "09:00:01 conn=7 auth failed").len(), 1);
        assert_eq!(
            failures(&mut m, "09:00:02 conn=7 auth failed")[0].0,
            "192.0.2.9"
        );
        assert!(failures(&mut m, "09:00:03 conn=7 closed").len() == 1);
        // Forgotten: a new failure on the same id has no address any more.
        assert!(failures(&mut m, "09:00:04 conn=7 auth failed").is_empty());
    }

    #[test]
    fn multi_line_buffer() {
        let f = Arc::new(
            Fail2banFilter::compile(
                def(
                    None,
                    &[r"^conn (?P<c>\d+) from <HOST>\n(?:.*\n)*?conn (?P=c) failed$"],
                    Some("{NONE}"),
                    Some(5),
                ),
                2026,
            )
            .unwrap(),
        );
        let mut m = f.matcher();
        assert!(failures(&mut m, "conn 1 from 192.0.2.3").is_empty());
        assert!(failures(&mut m, "noise").is_empty());
        assert_eq!(failures(&mut m, "conn 1 failed")[0].0, "192.0.2.3");
    }

    #[test]
    fn errors_name_the_regex() {
        let e =
            Fail2banFilter::compile(def(None, &["^no host here"], None, None), 2026).unwrap_err();
        assert!(e.message.contains("failure-id"), "{e}");
        let e = Fail2banFilter::compile(def(None, &["^<HOST> (?P<x>a)(?P<x>b)"], None, None), 2026)
            .unwrap_err();
        assert!(e.to_string().contains("failregex #1"), "{e}");
        assert!(complex_name("alt_user1") == Some((true, "user1".into())));
        assert!(complex_name("alt_user_1") == Some((true, "user".into())));
    }
}

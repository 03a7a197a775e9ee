//! Turning a failregex as a user writes it (`^<HOST> - \S+ \[...`) into a compiled matcher.
//!
//! Tags are fail2ban's where moat has the same meaning: `<HOST>`/`<ADDR>` (an IPv4 or IPv6
//! address, never a host name: moat does no DNS), `<IP4>`, `<IP6>`, `<F-USER>…</F-USER>` and,
//! in a prefregex, `<F-CONTENT>…</F-CONTENT>`. Tags moat cannot honour are refused rather than
//! left as literal text that would silently never match.
//!
//! Patterns are compiled with the `regex` crate in byte mode with Unicode off, so `.`, `\S` and
//! `[^"]` match any byte: invalid UTF-8 or a NUL in a line cannot hide a match. Only patterns
//! that need look-around or back-references fall back to `fancy-regex`, which works on text; for
//! those the line is decoded lossily (each invalid byte becomes U+FFFD, still matched by `\S`).
//! The `regex` crate runs in linear time; `fancy-regex` can backtrack, which is why it is the
//! exception and `moat filters lint` reports it.
//!
//! Its backtrack limit does not bound everything: an unanchored look-ahead such as
//! `(?=.*x)<HOST>` scans the rest of the line from every position, quadratic in the line's
//! length (measured: 3.6 ms on 2 KiB, 7.6 s on 64 KiB). A line that long would hold up every
//! other jail, so a backtracking pattern only runs on lines up to [`FANCY_UNANCHORED_MAX`]
//! (unanchored) or [`FANCY_ANCHORED_MAX`] (anchored with `^`: one start position, linear;
//! measured at most 6 ms on 64 KiB); a longer line is not matched by it, and counted.

use std::borrow::Cow;
use std::ops::Range;

use regex_syntax::hir::{Hir, HirKind};

/// The text at `<HOST>`: a run of the characters addresses are written with, optionally in
/// brackets. The run is then parsed by the standard library ([`super::filter::parse_host`]),
/// and text that is not an address is refused there; the regex only delimits.
///
/// One character class rather than the structured IPv4|IPv6 alternation fail2ban uses: an
/// alternation whose branches both start with a digit stops the pattern from being "one-pass",
/// and then the regex crate captures with its bounded backtracker instead of its one-pass DFA.
/// Measured on the benchmark log: 20 ms of 110 ms went to that.
fn host_group(ip4: bool, ip6: bool) -> String {
    let class = match (ip4, ip6) {
        (true, true) => "[0-9A-Fa-f:.]+",
        (true, false) => "[0-9.]+",
        // At least one colon: an IPv6 address (or an IPv4-mapped one).
        _ => "[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*",
    };
    format!(r"\[?(?P<host>{class})\]?")
}

/// Where in a pattern a problem is, for messages that quote the pattern.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PatternError {
    pub message: String,
}

fn err(message: impl Into<String>) -> PatternError {
    PatternError {
        message: message.into(),
    }
}

/// fail2ban tags with no meaning in moat; named so the error can say why.
const UNSUPPORTED_TAGS: &[(&str, &str)] = &[
    (
        "<DNS>",
        "moat never resolves names: a ban must name an address",
    ),
    ("<F-ID>", "moat bans addresses only; use <HOST>"),
    ("<F-ID/>", "moat bans addresses only; use <HOST>"),
    (
        "<SUBNET>",
        "use <HOST>; prefixes come from the jail's ipv6_prefix",
    ),
    (
        "<CIDR>",
        "use <HOST>; prefixes come from the jail's ipv6_prefix",
    ),
    ("<SKIPLINES>", "multi-line matching is not supported"),
    ("<F-MLFID>", "multi-line matching is not supported"),
    ("<F-NOFAIL>", "multi-line matching is not supported"),
    ("<F-MLFFORGET>", "multi-line matching is not supported"),
    ("<F-MLFGAINED>", "multi-line matching is not supported"),
];

/// Expands tags into named groups. Returns the regex text and whether it captures a host.
pub fn expand_tags(pattern: &str) -> Result<(String, bool), PatternError> {
    for (tag, why) in UNSUPPORTED_TAGS {
        if pattern.contains(tag) {
            return Err(err(format!("the tag {tag} is not supported: {why}")));
        }
    }
    let mut out = String::with_capacity(pattern.len() + 128);
    let mut hosts = 0;
    let mut rest = pattern;
    while let Some(pos) = rest.find('<') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let replacement: Option<(&str, Cow<'static, str>)> = [
            ("<HOST>", Cow::Owned(host_group(true, true))),
            ("<ADDR>", Cow::Owned(host_group(true, true))),
            ("<IP4>", Cow::Owned(host_group(true, false))),
            ("<IP6>", Cow::Owned(host_group(false, true))),
            // The TCP peer, when the line also has a client from a header (CF-Connecting-IP):
            // the header is believed only when the peer is one of Cloudflare's proxies.
            ("<PEER>", Cow::Borrowed(r"\[?(?P<peer>[0-9A-Fa-f:.]+)\]?")),
            ("<F-USER>", Cow::Borrowed("(?P<user>")),
            ("</F-USER>", Cow::Borrowed(")")),
            ("<F-CONTENT>", Cow::Borrowed("(?P<content>")),
            ("</F-CONTENT>", Cow::Borrowed(")")),
        ]
        .into_iter()
        .find(|(tag, _)| tail.starts_with(tag));
        match replacement {
            Some((tag, text)) => {
                if text.contains("?P<host>") {
                    hosts += 1;
                }
                out.push_str(&text);
                rest = &tail[tag.len()..];
            }
            None => {
                out.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    if hosts > 1 {
        return Err(err(
            "the pattern names the client more than once (<HOST>, <ADDR>, <IP4> or <IP6>); \
             hint: keep exactly one, at the position of the client address",
        ));
    }
    Ok((out, hosts == 1))
}

/// The longest text an unanchored backtracking pattern runs on (worst case measured: about
/// 1 to 2 ms, `(?!.*x)<HOST> y` on a line of `a a a ...`).
pub const FANCY_UNANCHORED_MAX: usize = 1024;
/// The longest text a backtracking pattern anchored at the start runs on.
pub const FANCY_ANCHORED_MAX: usize = 64 * 1024;

/// A compiled pattern: the fast linear-time engine, or the backtracking one when needed.
#[derive(Debug)]
pub enum Engine {
    Fast(regex::bytes::Regex),
    Fancy(fancy_regex::Regex),
}

/// The spans a match produced; offsets are into the text the engine saw.
#[derive(Debug, Default)]
pub struct Spans {
    pub host: Option<Range<usize>>,
    pub peer: Option<Range<usize>>,
    pub time: Option<Range<usize>>,
    pub content: Option<Range<usize>>,
}

/// A tag-expanded, compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    /// What the user wrote, for reports.
    pub source: String,
    pub engine: Engine,
    pub has_host: bool,
    /// The longest literal every match must contain; `None` if there is none worth searching.
    pub required_literal: Option<Vec<u8>>,
    /// The longest text it runs on (backtracking patterns only; see the module's doc).
    pub max_text: usize,
}

impl Pattern {
    pub fn compile(source: &str) -> Result<Pattern, PatternError> {
        let (expanded, has_host) = expand_tags(source)?;
        let fast = regex::bytes::RegexBuilder::new(&expanded)
            .unicode(false)
            .size_limit(16 << 20)
            .build();
        let engine = match fast {
            Ok(re) => Engine::Fast(re),
            Err(fast_err) => {
                let msg = fast_err.to_string();
                let needs_backtracking =
                    msg.contains("look-around") || msg.contains("backreferences");
                if !needs_backtracking {
                    let why = last_line(&msg);
                    let why = why.strip_prefix("error: ").unwrap_or(why);
                    return Err(err(format!("invalid regex: {why}")));
                }
                let fancy = fancy_regex::RegexBuilder::new(&expanded)
                    .backtrack_limit(100_000)
                    .build()
                    .map_err(|e| err(format!("invalid regex: {e}")))?;
                Engine::Fancy(fancy)
            }
        };
        let (required_literal, max_text) = match &engine {
            Engine::Fast(_) => (required_literal(&expanded), usize::MAX),
            Engine::Fancy(_) => {
                let anchored = fancy_regex::Expr::parse_tree(&expanded)
                    .is_ok_and(|tree| anchored_at_start(&tree.expr));
                let max = if anchored {
                    FANCY_ANCHORED_MAX
                } else {
                    FANCY_UNANCHORED_MAX
                };
                (None, max)
            }
        };
        Ok(Pattern {
            source: source.to_string(),
            engine,
            has_host,
            required_literal,
            max_text,
        })
    }

    pub fn is_fancy(&self) -> bool {
        matches!(self.engine, Engine::Fancy(_))
    }

    /// Whether the pattern runs on `text` at all (a backtracking pattern skips long text).
    pub fn runs_on(&self, text: &[u8]) -> bool {
        text.len() <= self.max_text
    }

    /// Returns the spans of a match in `text`, or `None` (also when it does not run on it).
    pub fn find(&self, text: &[u8]) -> Option<Spans> {
        if !self.runs_on(text) {
            return None;
        }
        match &self.engine {
            Engine::Fast(re) => {
                let caps = re.captures(text)?;
                let span = |name| caps.name(name).map(|m| m.range());
                Some(Spans {
                    host: span("host"),
                    peer: span("peer"),
                    time: span("time"),
                    content: span("content"),
                })
            }
            Engine::Fancy(re) => {
                let lossy = String::from_utf8_lossy(text);
                // A backtrack limit hit is treated as no match, never as a failure to report
                // for somebody: a hostile line must not turn into a ban.
                let caps = re.captures(&lossy).ok()??;
                let map = |name| {
                    caps.name(name)
                        .map(|m| map_lossy_range(text, &lossy, m.start()..m.end()))
                };
                Some(Spans {
                    host: map("host"),
                    peer: map("peer"),
                    time: map("time"),
                    content: map("content"),
                })
            }
        }
    }

    /// Whether `text` matches, without capture work (false when it does not run on it).
    pub fn is_match(&self, text: &[u8]) -> bool {
        if !self.runs_on(text) {
            return false;
        }
        match &self.engine {
            Engine::Fast(re) => re.is_match(text),
            Engine::Fancy(re) => re.is_match(&String::from_utf8_lossy(text)).unwrap_or(false),
        }
    }
}

/// Whether every match must begin at the start of the text (`^` first, in every branch).
fn anchored_at_start(e: &fancy_regex::Expr) -> bool {
    use fancy_regex::{Assertion, Expr};
    match e {
        Expr::Assertion(Assertion::StartText | Assertion::StartLine { .. }) => true,
        Expr::Concat(parts) => parts.first().is_some_and(anchored_at_start),
        Expr::Alt(branches) => !branches.is_empty() && branches.iter().all(anchored_at_start),
        Expr::Group(inner) | Expr::AtomicGroup(inner) => anchored_at_start(inner),
        _ => false,
    }
}

fn last_line(msg: &str) -> &str {
    msg.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(msg)
        .trim()
}

/// Maps a range in the lossily decoded text back to the original bytes. When the line was valid
/// UTF-8 (the common case) the two are the same; otherwise walk both in step.
fn map_lossy_range(orig: &[u8], lossy: &str, r: Range<usize>) -> Range<usize> {
    if let Cow::Borrowed(_) = String::from_utf8_lossy(orig) {
        return r;
    }
    let mut map = Vec::with_capacity(lossy.len() + 1);
    let mut o = 0;
    for chunk in orig.utf8_chunks() {
        for (i, c) in chunk.valid().char_indices() {
            for _ in 0..c.len_utf8() {
                map.push(o + i);
            }
        }
        o += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            // U+FFFD is three bytes in the decoded text.
            map.extend([o, o, o]);
            o += chunk.invalid().len();
        }
    }
    map.push(o);
    let at = |i: usize| map.get(i).copied().unwrap_or(orig.len());
    at(r.start)..at(r.end)
}

/// The longest literal byte string that every match of `regex` must contain.
///
/// Walks the syntax tree: a literal is required; a concatenation requires what each of its
/// parts requires; a repetition of at least one requires what its body requires; alternations
/// and optional parts require nothing (they might not be there). Literals shorter than three
/// bytes are not worth a search: a line almost always contains them.
pub fn required_literal(regex: &str) -> Option<Vec<u8>> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(regex)
        .ok()?;
    let mut found = Vec::new();
    collect_required(&hir, &mut found);
    found
        .into_iter()
        .filter(|l| l.len() >= 3)
        .max_by_key(|l| l.len())
}

fn collect_required(hir: &Hir, out: &mut Vec<Vec<u8>>) {
    match hir.kind() {
        HirKind::Literal(lit) => out.push(lit.0.to_vec()),
        HirKind::Concat(parts) => parts.iter().for_each(|p| collect_required(p, out)),
        HirKind::Capture(cap) => collect_required(&cap.sub, out),
        HirKind::Repetition(rep) if rep.min >= 1 => collect_required(&rep.sub, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_captured_at_its_position() {
        let p = Pattern::compile(r#"^<HOST> \S+ \S+ \[[^\]]+\] "POST /api/auth "#).unwrap();
        let line =
            br#"198.51.100.7 - - [26/Oct/2022:20:55:11 +0200] "POST /api/auth HTTP/2.0" 422"#;
        let s = p.find(line).unwrap();
        assert_eq!(&line[s.host.unwrap()], b"198.51.100.7");
        assert_eq!(
            p.required_literal.as_deref(),
            Some(&b"] \"POST /api/auth "[..])
        );
    }

    #[test]
    fn ipv6_forms() {
        let p = Pattern::compile(r"^<HOST> x").unwrap();
        for (line, host) in [
            (&b"2001:db8::1 x"[..], &b"2001:db8::1"[..]),
            (b"[2001:db8:1:2::ff] x", b"2001:db8:1:2::ff"),
            (b"::ffff:198.51.100.7 x", b"::ffff:198.51.100.7"),
            (b"::1 x", b"::1"),
        ] {
            let s = p.find(line).unwrap();
            assert_eq!(&line[s.host.unwrap()], host);
        }
    }

    #[test]
    fn invalid_utf8_and_nul_do_not_hide_a_match() {
        let p = Pattern::compile(r#"^<HOST> .*"POST /login"#).unwrap();
        let line = b"203.0.113.9 \xff\xfe\x00 \"POST /login";
        assert!(p.find(line).is_some());
    }

    #[test]
    fn lookaround_falls_back_to_fancy_and_maps_spans() {
        let p = Pattern::compile(r"^(?!ok)\S+ \xzz <HOST>").err();
        assert!(p.is_some(), "bad escape is an error, not a fallback");
        let p = Pattern::compile(r"^(?!ok)\S+ <HOST>$").unwrap();
        assert!(p.is_fancy());
        let line = b"fail\xff 192.0.2.4";
        let s = p.find(line).unwrap();
        assert_eq!(&line[s.host.unwrap()], b"192.0.2.4");
        assert!(p.find(b"ok 192.0.2.4").is_none());
    }

    #[test]
    fn unsupported_and_duplicate_tags_are_refused() {
        assert!(Pattern::compile("<F-ID>x</F-ID>").is_err());
        assert!(Pattern::compile("<HOST> <ADDR>").is_err());
        assert!(Pattern::compile("(unclosed").is_err());
    }

    #[test]
    fn required_literals() {
        assert_eq!(required_literal("a(?:foo|bar)bazz"), Some(b"bazz".to_vec()));
        assert_eq!(
            required_literal("(?:x)?hello world"),
            Some(b"hello world".to_vec())
        );
        assert_eq!(required_literal("(?i)hello"), None);
        assert_eq!(required_literal("(?:foo)*"), None);
    }
}

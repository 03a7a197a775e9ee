//! A fail2ban regex compiled for Rust: on the linear-time `regex` engine whenever the
//! translated pattern allows, on `fancy-regex` (with a backtrack limit) only when it needs
//! look-around or back-references. Captures are reported by Python group, whatever copies
//! of a group the translation made.

use super::pyre::{self, Mode, Pattern};

/// Steps `fancy-regex` may take on one line before giving up (a give-up is a miss, never a
/// failure: a hostile line must not turn into a ban).
pub const BACKTRACK_LIMIT: usize = 1_000_000;

/// Why a regex cannot be used, with the construct when one is to blame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// What is wrong, for the user.
    pub message: String,
    /// The regex construct to blame (`(?<=...)` of variable width, say), when one is.
    pub construct: Option<String>,
}

#[derive(Debug)]
enum Exact {
    Linear(LazyRegex),
    Backtracking(fancy_regex::Regex),
}

/// A Unicode regex compiled on first use: when an ASCII form exists, ASCII lines never need
/// it, and building Unicode automata is most of a filter's start-up.
#[derive(Debug)]
pub struct LazyRegex {
    pattern: String,
    regex: std::sync::OnceLock<Option<regex::Regex>>,
}

impl LazyRegex {
    fn build(pattern: &str) -> Result<regex::Regex, regex::Error> {
        regex::RegexBuilder::new(pattern)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build()
    }
    /// The regex; `None` only if it outgrows the size limits (its syntax was checked when
    /// the filter was compiled), and then nothing matches.
    pub fn get(&self) -> Option<&regex::Regex> {
        self.regex
            .get_or_init(|| Self::build(&self.pattern).ok())
            .as_ref()
    }
}

/// A set of Unicode regexes built on first use (see [`LazyRegex`]).
#[derive(Debug)]
pub struct LazySet {
    patterns: Vec<String>,
    set: std::sync::OnceLock<Option<regex::RegexSet>>,
}

impl LazySet {
    /// A set of `patterns`, not compiled until [`LazySet::get`] or [`LazySet::ascii`] needs it.
    pub fn new(patterns: Vec<String>) -> LazySet {
        LazySet {
            patterns,
            set: std::sync::OnceLock::new(),
        }
    }
    /// The compiled set, built on the first call; `None` if it outgrows the size limits, and then
    /// nothing matches.
    pub fn get(&self) -> Option<&regex::RegexSet> {
        self.set
            .get_or_init(|| {
                regex::RegexSetBuilder::new(&self.patterns)
                    .size_limit(64 << 20)
                    .dfa_size_limit(32 << 20)
                    .build()
                    .ok()
            })
            .as_ref()
    }
    /// How many patterns the set holds.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }
    /// Whether the set holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
    /// The same set without Unicode, for ASCII lines, when every pattern is ASCII.
    pub fn ascii(&self) -> Option<regex::bytes::RegexSet> {
        if !self.patterns.iter().all(|p| p.is_ascii()) {
            return None;
        }
        regex::bytes::RegexSetBuilder::new(&self.patterns)
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(32 << 20)
            .build()
            .ok()
    }
}

/// A compiled regex.
#[derive(Debug)]
pub struct Regex {
    /// The Python text it was compiled from.
    pub python: String,
    /// The Rust text it runs as.
    pub rust: String,
    /// A linear regex that matches wherever this one does (the same text when it is linear):
    /// what screening sets are built from.
    pub screen: String,
    exact: Exact,
    /// The same regex without Unicode tables, for lines that are all ASCII: an ASCII
    /// pattern matches an ASCII line exactly as its Unicode form does (classes, `\b`, case
    /// folding agree there), with a far smaller automaton to run.
    ascii: Option<regex::bytes::Regex>,
    /// Rust group → Python group.
    groups: Vec<usize>,
    /// Python group → name (shared: failure data keys are these).
    names: Vec<Option<std::sync::Arc<str>>>,
}

/// Where a regex matched, and what each Python group captured (by number; 0 unused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Where the match begins (a byte offset in the text searched).
    pub start: usize,
    /// Where the match ends (a byte offset in the text searched).
    pub end: usize,
    /// Each Python group's byte span, by group number (index 0 unused); `None` when the group took
    /// no part in the match.
    pub groups: Vec<Option<(usize, usize)>>,
}

impl Regex {
    /// Compiles a Python pattern (`multiline`: `re.MULTILINE`).
    pub fn compile(python: &str, multiline: bool) -> Result<Regex, CompileError> {
        let mut pattern = pyre::parse(python, multiline).map_err(|e| CompileError {
            message: format!("not a valid Python regex: {e}"),
            construct: None,
        })?;
        Self::from_pattern(python, &mut pattern)
    }

    /// Compiles an already parsed pattern (date templates build theirs).
    pub fn from_pattern(python: &str, pattern: &mut Pattern) -> Result<Regex, CompileError> {
        pyre::simplify_boundaries(&mut pattern.root);
        pyre::unfold_conditionals(&mut pattern.root).map_err(|m| CompileError {
            message: m,
            construct: Some("conditional (?(name)...)".into()),
        })?;
        let emitted = pyre::emit(pattern, Mode::Exact).map_err(|m| CompileError {
            message: m,
            construct: pyre::backtracking_construct(&pattern.root).map(str::to_string),
        })?;
        let rust_error = |e: String| CompileError {
            message: format!("the translated regex does not compile: {e}"),
            construct: None,
        };
        let (exact, screen) = if pyre::needs_backtracking(&pattern.root) {
            let fancy = fancy_regex::RegexBuilder::new(&emitted.regex)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map_err(|e| CompileError {
                    message: format!("cannot be compiled for the backtracking engine: {e}"),
                    construct: pyre::backtracking_construct(&pattern.root).map(str::to_string),
                })?;
            let superset = pyre::emit(pattern, Mode::Superset).map_err(rust_error)?;
            (Exact::Backtracking(fancy), superset.regex)
        } else {
            let lazy = LazyRegex {
                pattern: emitted.regex.clone(),
                regex: std::sync::OnceLock::new(),
            };
            (Exact::Linear(lazy), emitted.regex.clone())
        };
        let ascii = match &exact {
            Exact::Linear(_) if emitted.regex.is_ascii() => ascii_regex(&emitted.regex),
            _ => None,
        };
        if let Exact::Linear(lazy) = &exact {
            if ascii.is_some() {
                // Built later if a line needs it; its syntax is checked now.
                regex_syntax::ParserBuilder::new()
                    .build()
                    .parse(&emitted.regex)
                    .map_err(|e| rust_error(last_line(&e.to_string())))?;
            } else {
                let built = LazyRegex::build(&emitted.regex)
                    .map_err(|e| rust_error(last_line(&e.to_string())))?;
                lazy.regex.set(Some(built)).expect("fresh");
            }
        }
        Ok(Regex {
            python: python.to_string(),
            rust: emitted.regex,
            screen,
            exact,
            ascii,
            groups: emitted.groups,
            names: pattern
                .names
                .iter()
                .map(|n| n.as_deref().map(std::sync::Arc::from))
                .collect(),
        })
    }

    /// Whether it runs on `fancy-regex` (look-around or back-references), bounded by
    /// [`BACKTRACK_LIMIT`], rather than on the linear engine.
    pub fn is_backtracking(&self) -> bool {
        matches!(self.exact, Exact::Backtracking(_))
    }

    /// The Python group names, in order.
    pub fn names(&self) -> impl Iterator<Item = (usize, &str)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_deref().map(|n| (i, n)))
    }

    /// The Python group names as shared strings, in order.
    pub fn shared_names(&self) -> impl Iterator<Item = (usize, &std::sync::Arc<str>)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Whether the regex has a Python group called `name` (`host`, `F-USER`, ...).
    pub fn has_group(&self, name: &str) -> bool {
        self.group_index(name).is_some()
    }

    /// The number of the Python group called `name`, if there is one.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }

    /// The first match at or after `start` in `text[..end]` (Python's `search(text, pos,
    /// endpos)`: `^` holds only at 0, `$` at `end`).
    pub fn search(&self, text: &str, start: usize, end: usize) -> Option<Match> {
        let hay = &text[..end];
        let mut groups = vec![None; self.names.len()];
        if let Some(re) = self.ascii.as_ref().filter(|_| hay.is_ascii()) {
            let caps = re.captures_at(hay.as_bytes(), start)?;
            for (rust, &py) in self.groups.iter().enumerate().skip(1) {
                if let Some(m) = caps.get(rust) {
                    groups[py].get_or_insert((m.start(), m.end()));
                }
            }
            let m = caps.get(0).expect("group 0");
            return Some(Match {
                start: m.start(),
                end: m.end(),
                groups,
            });
        }
        match &self.exact {
            Exact::Linear(re) => {
                let caps = re.get()?.captures_at(hay, start)?;
                for (rust, &py) in self.groups.iter().enumerate().skip(1) {
                    if let Some(m) = caps.get(rust) {
                        groups[py].get_or_insert((m.start(), m.end()));
                    }
                }
                let m = caps.get(0).expect("group 0");
                Some(Match {
                    start: m.start(),
                    end: m.end(),
                    groups,
                })
            }
            Exact::Backtracking(re) => {
                let caps = re.captures_from_pos(hay, start).ok()??;
                for (rust, &py) in self.groups.iter().enumerate().skip(1) {
                    if let Some(m) = caps.get(rust) {
                        groups[py].get_or_insert((m.start(), m.end()));
                    }
                }
                let m = caps.get(0).expect("group 0");
                Some(Match {
                    start: m.start(),
                    end: m.end(),
                    groups,
                })
            }
        }
    }

    /// The first match anywhere in `text` (Python's `search(text)`).
    pub fn find(&self, text: &str) -> Option<Match> {
        self.search(text, 0, text.len())
    }

    /// Whether the regex matches anywhere in `text`; cheaper than [`Regex::find`], captures are not
    /// read.
    pub fn is_match(&self, text: &str) -> bool {
        if let Some(re) = self.ascii.as_ref().filter(|_| text.is_ascii()) {
            return re.is_match(text.as_bytes());
        }
        match &self.exact {
            Exact::Linear(re) => re.get().is_some_and(|r| r.is_match(text)),
            Exact::Backtracking(re) => re.is_match(text).unwrap_or(false),
        }
    }
}

impl Match {
    /// The text of group `index`, if it took part.
    pub fn get<'t>(&self, text: &'t str, index: usize) -> Option<&'t str> {
        self.groups
            .get(index)
            .copied()
            .flatten()
            .map(|(s, e)| &text[s..e])
    }
}

/// A pattern compiled without Unicode, for ASCII text (see [`Regex`]'s `ascii`).
pub fn ascii_regex(pattern: &str) -> Option<regex::bytes::Regex> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .ok()
}

fn last_line(msg: &str) -> String {
    msg.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(msg)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_when_possible_backtracking_when_needed() {
        let r = Regex::compile(r"^(?P<user>\S+) from (?P<h>\d+)$", false).unwrap();
        assert!(!r.is_backtracking());
        let text = "bob from 12\n";
        let m = r.find(text).unwrap();
        assert_eq!(m.get(text, r.group_index("user").unwrap()), Some("bob"));
        let r = Regex::compile(r"^(?!ok)(?P<w>\w+)", false).unwrap();
        assert!(r.is_backtracking());
        assert!(r.find("ok x").is_none());
        assert_eq!(r.find("fail x").unwrap().end, 4);
        assert_eq!(r.screen, "^(\\w+)");
    }

    #[test]
    fn ascii_lines_run_the_ascii_form_with_the_same_result() {
        let r = Regex::compile(r"(?i)^(?P<w>\w+)\s+\bFROM\b (?P<h>\S+)$", false).unwrap();
        assert!(r.ascii.is_some());
        for text in [
            "Bob from 192.0.2.1\n",
            "Zoë from 192.0.2.1\n",
            "bob  From x\n",
        ] {
            let a = r.find(text);
            let unicode = match &r.exact {
                Exact::Linear(re) => re
                    .get()
                    .unwrap()
                    .captures(text)
                    .map(|c| c.get(0).unwrap().range()),
                Exact::Backtracking(_) => unreachable!(),
            };
            assert_eq!(a.map(|m| m.start..m.end), unicode, "{text}");
        }
    }

    #[test]
    fn search_with_bounds_as_python() {
        let r = Regex::compile(r"^ab|cd$", false).unwrap();
        assert!(r.search("xab", 1, 3).is_none());
        assert_eq!(r.search("cdx", 0, 2).map(|m| m.start), Some(0));
    }
}

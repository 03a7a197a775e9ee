//! Python's regex syntax (`re`, as fail2ban writes its filters) read into a tree and written
//! back in the syntax of Rust's `regex` (or `fancy-regex`) with the same meaning.
//!
//! Why a tree rather than textual fixes: several differences are only decidable with the
//! structure at hand. Python reads `[^[]`, `\<`, `\>` and a `{` that starts no valid
//! repetition as literal text, Rust as syntax; Python's `$` also matches before a final
//! newline; Python's `\Z` is Rust's `\z`. And two constructs Rust's linear engine lacks have
//! linear equivalents that need the tree to find: fail2ban's date-template word boundaries
//! `(?=^|\b|\W)` and `(?=\b|\W|$)` are exactly `\b{start-half}|\b{end-half}`, and a
//! conditional `(?(name)yes|no)` can be unfolded into an alternation by distributing over
//! whether `name` took part ([`unfold_conditionals`]). What remains (look-ahead,
//! look-behind, back-references) needs `fancy-regex`; for those patterns [`emit`] can also
//! write a *superset* without them (every look-around taken as true, every back-reference as
//! its group's pattern), a linear regex that must match wherever the exact one does, so that
//! cheap screening stays linear.
//!
//! Capture groups are written unnamed: after unfolding, one Python group may have several
//! copies, and the emitted regex numbers them in order. [`Emitted::groups`] maps each Rust
//! group back to its Python group.

use std::fmt::Write;

/// A parse error, at a character offset in the pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at offset {offset})")]
pub struct PyReError {
    /// What is wrong.
    pub message: String,
    /// Where, in characters from the pattern's start.
    pub offset: usize,
}

/// A Perl class (`\d`, `\w`, `\s`), in a class or alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perl {
    /// `\d`.
    Digit,
    /// `\w`.
    Word,
    /// `\s`.
    Space,
}

/// One member of a bracketed class (`[a-z\d_]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassItem {
    /// A single character.
    Char(char),
    /// A range, both ends included (`a-z`).
    Range(char, char),
    /// A Perl class; `negated` for its upper-case form (`\D`, `\W`, `\S`).
    Perl {
        /// Which class.
        kind: Perl,
        /// The upper-case form: every character but the class's.
        negated: bool,
    },
}

/// A zero-width assertion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assert {
    /// `^` without MULTILINE: the start of the text.
    TextStart,
    /// `^` with MULTILINE.
    LineStart,
    /// `$`: the end, or before a newline (Python: the final one; multi-line: any).
    LineEnd,
    /// `\Z`.
    TextEnd,
    /// `\b`.
    WordBoundary,
    /// `\B`.
    NotWordBoundary,
    /// Rust's `\b{start-half}`: no word character before.
    StartHalf,
    /// Rust's `\b{end-half}`: no word character after.
    EndHalf,
}

/// A node of a parsed Python regex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Matches the empty string (an empty branch or group).
    Empty,
    /// A pattern that can never match (a branch ruled out while unfolding a conditional).
    Fail,
    /// A literal character; `icase` under `(?i)`.
    Lit {
        /// The character.
        c: char,
        /// Whether case is ignored.
        icase: bool,
    },
    /// `.`; `dotall` when it also matches a newline.
    Dot {
        /// Whether `.` matches a newline too (`(?s)`).
        dotall: bool,
    },
    /// A bracketed class; `negated` for `[^...]`, `icase` under `(?i)`.
    Class {
        /// Whether the class is `[^...]`: every character but its members.
        negated: bool,
        /// The members, in the order written.
        items: Vec<ClassItem>,
        /// Whether case is ignored.
        icase: bool,
    },
    /// A Perl class alone; `ascii` under `(?a)`, where `\w` and `\d` mean ASCII only.
    Perl {
        /// Which class.
        kind: Perl,
        /// The upper-case form: every character but the class's.
        negated: bool,
        /// Whether the class means its ASCII members only (`(?a)`).
        ascii: bool,
    },
    /// A zero-width assertion.
    Assert(Assert),
    /// A capture group: its Python number (1-based).
    Capture {
        /// The group's Python number.
        index: usize,
        /// What the group holds.
        node: Box<Node>,
    },
    /// A group that captures nothing (`(?:...)`, or one with flags).
    NonCapture(Box<Node>),
    /// A look-around: `behind` for `(?<=` and `(?<!`, `negated` for `(?!` and `(?<!`.
    Look {
        /// Whether it looks behind (`(?<=`, `(?<!`) rather than ahead.
        behind: bool,
        /// Whether the match must fail (`(?!`, `(?<!`).
        negated: bool,
        /// What is looked for.
        node: Box<Node>,
    },
    /// A back-reference to a Python group number.
    Backref {
        /// The Python number of the group whose text must recur.
        index: usize,
        /// Whether case is ignored in the comparison.
        icase: bool,
    },
    /// `(?(group)yes|no)`.
    Cond {
        /// The Python number of the group tested.
        index: usize,
        /// What must match when the group took part.
        yes: Box<Node>,
        /// What must match when it did not.
        no: Box<Node>,
    },
    /// A repetition: `min` to `max` times (`None`: no bound), `greedy` unless written with `?`.
    Repeat {
        /// What is repeated.
        node: Box<Node>,
        /// The fewest repetitions.
        min: u32,
        /// The most repetitions; `None`: no bound.
        max: Option<u32>,
        /// Whether it takes as many as it can (no `?` after the quantifier).
        greedy: bool,
    },
    /// A sequence, matched in order.
    Concat(Vec<Node>),
    /// Alternatives, tried in order (`a|b`).
    Alt(Vec<Node>),
}

/// A parsed pattern: the tree and its groups' names by number (index 0 unused).
#[derive(Clone, Debug)]
pub struct Pattern {
    /// The tree.
    pub root: Node,
    /// Each group's name by Python number (index 0 unused); `None` for an unnamed group.
    pub names: Vec<Option<String>>,
}

impl Pattern {
    /// The number of a named group.
    pub fn group(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }
}

#[derive(Clone, Copy, Default)]
struct Flags {
    icase: bool,
    multiline: bool,
    dotall: bool,
    verbose: bool,
    ascii: bool,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    names: Vec<Option<String>>,
}

/// Parses a Python pattern; `multiline` is `re.MULTILINE` (fail2ban sets it when
/// `maxlines` > 1).
pub fn parse(pattern: &str, multiline: bool) -> Result<Pattern, PyReError> {
    let mut p = Parser {
        chars: pattern.chars().collect(),
        pos: 0,
        names: vec![None],
    };
    let mut flags = Flags {
        multiline,
        ..Flags::default()
    };
    // Global flags: only at the very start, as Python 3.11 requires.
    while p.peek() == Some('(') && p.peek_at(1) == Some('?') {
        let save = p.pos;
        p.pos += 2;
        let mut seen = false;
        let mut f = flags;
        while let Some(c) = p.peek() {
            if !apply_flag(&mut f, c) {
                break;
            }
            seen = true;
            p.pos += 1;
        }
        if seen && p.peek() == Some(')') {
            p.pos += 1;
            flags = f;
            continue;
        }
        p.pos = save;
        break;
    }
    let root = p.alternation(flags)?;
    if p.pos < p.chars.len() {
        return Err(p.err("unbalanced parenthesis"));
    }
    let pattern = Pattern {
        root,
        names: p.names,
    };
    check_refs(&pattern.root, pattern.names.len())?;
    Ok(pattern)
}

fn apply_flag(f: &mut Flags, c: char) -> bool {
    match c {
        'i' => f.icase = true,
        'm' => f.multiline = true,
        's' => f.dotall = true,
        'x' => f.verbose = true,
        'a' => f.ascii = true,
        'u' => f.ascii = false,
        _ => return false,
    }
    true
}

fn check_refs(node: &Node, groups: usize) -> Result<(), PyReError> {
    let mut bad = None;
    walk(node, &mut |n| match n {
        Node::Backref { index, .. } | Node::Cond { index, .. } if *index >= groups => {
            bad = Some(*index)
        }
        _ => {}
    });
    match bad {
        Some(i) => Err(PyReError {
            message: format!("reference to a group that does not exist: {i}"),
            offset: 0,
        }),
        None => Ok(()),
    }
}

/// Calls `f` on every node, depth first.
pub fn walk(node: &Node, f: &mut dyn FnMut(&Node)) {
    f(node);
    match node {
        Node::Capture { node, .. }
        | Node::NonCapture(node)
        | Node::Look { node, .. }
        | Node::Repeat { node, .. } => walk(node, f),
        Node::Cond { yes, no, .. } => {
            walk(yes, f);
            walk(no, f);
        }
        Node::Concat(v) | Node::Alt(v) => v.iter().for_each(|n| walk(n, f)),
        _ => {}
    }
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }
    fn err(&self, message: impl Into<String>) -> PyReError {
        PyReError {
            message: message.into(),
            offset: self.pos,
        }
    }
    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars[self.pos..].iter().take(n).copied().eq(s.chars())
            && self.pos + n <= self.chars.len()
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn alternation(&mut self, flags: Flags) -> Result<Node, PyReError> {
        let mut branches = vec![self.sequence(flags)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.sequence(flags)?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().expect("one branch")
        } else {
            Node::Alt(branches)
        })
    }

    fn skip_verbose(&mut self, flags: Flags) {
        if !flags.verbose {
            return;
        }
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => self.pos += 1,
                Some('#') => {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn sequence(&mut self, flags: Flags) -> Result<Node, PyReError> {
        let mut items: Vec<Node> = Vec::new();
        loop {
            self.skip_verbose(flags);
            let Some(c) = self.peek() else { break };
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom(flags)?;
            // Repetition operators apply to the atom just read.
            let mut atom = atom;
            loop {
                self.skip_verbose(flags);
                let (min, max) = match self.peek() {
                    Some('*') => {
                        self.pos += 1;
                        (0, None)
                    }
                    Some('+') => {
                        self.pos += 1;
                        (1, None)
                    }
                    Some('?') => {
                        self.pos += 1;
                        (0, Some(1))
                    }
                    Some('{') => match self.repeat_braces()? {
                        Some(r) => r,
                        None => break,
                    },
                    _ => break,
                };
                if matches!(atom, Node::Assert(_)) {
                    return Err(self.err("nothing to repeat"));
                }
                let mut greedy = true;
                if self.peek() == Some('?') {
                    self.pos += 1;
                    greedy = false;
                } else if self.peek() == Some('+') {
                    return Err(self.err("possessive repetition is not supported"));
                }
                if let Node::Repeat { .. } = atom {
                    // `a**` is an error in Python ("multiple repeat"), `(?:a*)*` is not.
                    return Err(self.err("multiple repeat"));
                }
                atom = Node::Repeat {
                    node: Box::new(atom),
                    min,
                    max,
                    greedy,
                };
            }
            items.push(atom);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().expect("one item"),
            _ => Node::Concat(items),
        })
    }

    /// `{m,n}` as Python reads it: a valid form is a repetition, anything else the literal `{`
    /// (returns `None` and leaves the position on the `{`).
    fn repeat_braces(&mut self) -> Result<Option<(u32, Option<u32>)>, PyReError> {
        let here = self.pos;
        self.pos += 1;
        if self.peek() == Some('}') {
            self.pos = here;
            return Ok(None);
        }
        let digits = |p: &mut Self| {
            let s = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.chars[s..p.pos].iter().collect::<String>()
        };
        let lo = digits(self);
        let hi = if self.peek() == Some(',') {
            self.pos += 1;
            digits(self)
        } else {
            lo.clone()
        };
        if self.peek() != Some('}') {
            self.pos = here;
            return Ok(None);
        }
        self.pos += 1;
        let num = |s: &str| -> Result<u32, PyReError> {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n < 65535)
                .ok_or_else(|| self.err("the repetition number is too large"))
        };
        let min = if lo.is_empty() { 0 } else { num(&lo)? };
        let max = if hi.is_empty() { None } else { Some(num(&hi)?) };
        if max.is_some_and(|m| m < min) {
            return Err(self.err("min repeat greater than max repeat"));
        }
        Ok(Some((min, max)))
    }

    fn atom(&mut self, flags: Flags) -> Result<Node, PyReError> {
        let c = self.peek().expect("caller checked");
        match c {
            '(' => self.group(flags),
            '[' => {
                self.pos += 1;
                self.class(flags)
            }
            '.' => {
                self.pos += 1;
                Ok(Node::Dot {
                    dotall: flags.dotall,
                })
            }
            '^' => {
                self.pos += 1;
                Ok(Node::Assert(if flags.multiline {
                    Assert::LineStart
                } else {
                    Assert::TextStart
                }))
            }
            '$' => {
                self.pos += 1;
                Ok(Node::Assert(Assert::LineEnd))
            }
            '\\' => self.escape(flags),
            '*' | '+' | '?' => Err(self.err("nothing to repeat")),
            '{' => {
                // A `{` that starts a valid repetition here has nothing to repeat.
                if self.repeat_braces()?.is_some() {
                    return Err(self.err("nothing to repeat"));
                }
                self.pos += 1;
                Ok(Node::Lit {
                    c: '{',
                    icase: flags.icase,
                })
            }
            _ => {
                self.pos += 1;
                Ok(Node::Lit {
                    c,
                    icase: flags.icase,
                })
            }
        }
    }

    fn group(&mut self, flags: Flags) -> Result<Node, PyReError> {
        let open = self.pos;
        self.pos += 1;
        let close = |p: &mut Self| -> Result<(), PyReError> {
            if p.peek() == Some(')') {
                p.pos += 1;
                Ok(())
            } else {
                Err(PyReError {
                    message: "missing ), unterminated subpattern".into(),
                    offset: open,
                })
            }
        };
        if !self.eat("?") {
            let index = self.names.len();
            self.names.push(None);
            let node = self.alternation(flags)?;
            close(self)?;
            return Ok(Node::Capture {
                index,
                node: Box::new(node),
            });
        }
        if self.eat(":") {
            let node = self.alternation(flags)?;
            close(self)?;
            return Ok(Node::NonCapture(Box::new(node)));
        }
        if self.eat("P<") {
            let name = self.name('>')?;
            if self
                .names
                .iter()
                .any(|n| n.as_deref() == Some(name.as_str()))
            {
                return Err(self.err(format!("redefinition of group name {name:?}")));
            }
            let index = self.names.len();
            self.names.push(Some(name));
            let node = self.alternation(flags)?;
            close(self)?;
            return Ok(Node::Capture {
                index,
                node: Box::new(node),
            });
        }
        if self.eat("P=") {
            let name = self.name(')')?;
            let index = self.group_index(&name)?;
            return Ok(Node::Backref {
                index,
                icase: flags.icase,
            });
        }
        if self.eat("#") {
            while let Some(c) = self.peek() {
                self.pos += 1;
                if c == ')' {
                    return Ok(Node::Empty);
                }
            }
            return Err(self.err("missing ), unterminated comment"));
        }
        for (prefix, behind, negated) in [
            ("=", false, false),
            ("!", false, true),
            ("<=", true, false),
            ("<!", true, true),
        ] {
            if self.eat(prefix) {
                let node = self.alternation(flags)?;
                close(self)?;
                return Ok(Node::Look {
                    behind,
                    negated,
                    node: Box::new(node),
                });
            }
        }
        if self.eat("(") {
            let name = self.name(')')?;
            let index = match name.parse::<usize>() {
                Ok(n) => n,
                Err(_) => self.group_index(&name)?,
            };
            let body = self.sequence(flags)?;
            let (yes, no) = if self.peek() == Some('|') {
                self.pos += 1;
                let no = self.sequence(flags)?;
                if self.peek() == Some('|') {
                    return Err(self.err("conditional backref with more than two branches"));
                }
                (body, no)
            } else {
                (body, Node::Empty)
            };
            close(self)?;
            return Ok(Node::Cond {
                index,
                yes: Box::new(yes),
                no: Box::new(no),
            });
        }
        if self.eat(">") {
            return Err(self.err("atomic groups (?>...) are not supported"));
        }
        // Scoped flags: (?i:...), (?-i:...), (?i-s:...).
        let mut on = flags;
        let mut seen = false;
        while let Some(c) = self.peek() {
            if !apply_flag(&mut on, c) {
                break;
            }
            seen = true;
            self.pos += 1;
        }
        if self.eat("-") {
            while let Some(c) = self.peek() {
                match c {
                    'i' => on.icase = false,
                    'm' => on.multiline = false,
                    's' => on.dotall = false,
                    'x' => on.verbose = false,
                    _ => break,
                }
                seen = true;
                self.pos += 1;
            }
        }
        if seen && self.eat(":") {
            let node = self.alternation(on)?;
            close(self)?;
            return Ok(Node::NonCapture(Box::new(node)));
        }
        if seen && self.peek() == Some(')') {
            return Err(self.err(
                "global flags not at the start of the expression (Python 3.11 refuses them)",
            ));
        }
        Err(self.err(format!(
            "unknown extension ?{}",
            self.peek().map(String::from).unwrap_or_default()
        )))
    }

    fn name(&mut self, end: char) -> Result<String, PyReError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == end {
                let name: String = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                if name.is_empty() {
                    return Err(self.err("missing group name"));
                }
                return Ok(name);
            }
            self.pos += 1;
        }
        Err(self.err(format!("missing {end}, unterminated name")))
    }

    fn group_index(&self, name: &str) -> Result<usize, PyReError> {
        self.names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .ok_or_else(|| self.err(format!("unknown group name {name:?}")))
    }

    /// A character escape shared by classes and the outside: `\n`, `\x41`, `\u0041`, octal.
    fn char_escape(&mut self, c: char, in_class: bool) -> Result<Option<char>, PyReError> {
        let hex = |p: &mut Self, n: usize| -> Result<char, PyReError> {
            let s: String = p.chars[p.pos..].iter().take(n).collect();
            if s.len() != n || !s.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(p.err(format!("incomplete escape \\{c}{s}")));
            }
            p.pos += n;
            u32::from_str_radix(&s, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| p.err("bad escape value"))
        };
        Ok(Some(match c {
            'a' => '\x07',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            'b' if in_class => '\x08',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '0' => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            v = v * 8 + d.to_digit(8).expect("octal");
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(v).expect("small")
            }
            '1'..='7' if in_class => {
                let mut v = c.to_digit(8).expect("octal");
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            v = v * 8 + d.to_digit(8).expect("octal");
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(v).ok_or_else(|| self.err("octal escape out of range"))?
            }
            c if c.is_ascii_alphanumeric() => return Ok(None),
            c => c,
        }))
    }

    fn escape(&mut self, flags: Flags) -> Result<Node, PyReError> {
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(self.err("bad escape (end of pattern)"));
        };
        self.pos += 1;
        let perl = |kind, negated| Node::Perl {
            kind,
            negated,
            ascii: flags.ascii,
        };
        Ok(match c {
            'd' => perl(Perl::Digit, false),
            'D' => perl(Perl::Digit, true),
            'w' => perl(Perl::Word, false),
            'W' => perl(Perl::Word, true),
            's' => perl(Perl::Space, false),
            'S' => perl(Perl::Space, true),
            'b' => Node::Assert(Assert::WordBoundary),
            'B' => Node::Assert(Assert::NotWordBoundary),
            'A' => Node::Assert(Assert::TextStart),
            'Z' => Node::Assert(Assert::TextEnd),
            '1'..='9' => {
                // A back-reference (one or two digits), or an octal escape of three.
                let d2 = self.peek().filter(char::is_ascii_digit);
                let d3 = self.peek_at(1).filter(char::is_ascii_digit);
                if let (Some(b), Some(e)) = (d2, d3) {
                    if c <= '7' && b <= '7' && e <= '7' {
                        self.pos += 2;
                        let v = (c as u32 - 48) * 64 + (b as u32 - 48) * 8 + (e as u32 - 48);
                        return Ok(Node::Lit {
                            c: char::from_u32(v)
                                .ok_or_else(|| self.err("octal escape out of range"))?,
                            icase: flags.icase,
                        });
                    }
                }
                let mut n = c.to_digit(10).expect("digit") as usize;
                if let Some(b) = d2 {
                    n = n * 10 + b.to_digit(10).expect("digit") as usize;
                    self.pos += 1;
                }
                if n >= self.names.len() {
                    return Err(self.err(format!("invalid group reference {n}")));
                }
                Node::Backref {
                    index: n,
                    icase: flags.icase,
                }
            }
            _ => match self.char_escape(c, false)? {
                Some(ch) => Node::Lit {
                    c: ch,
                    icase: flags.icase,
                },
                None => return Err(self.err(format!("bad escape \\{c}"))),
            },
        })
    }

    fn class(&mut self, flags: Flags) -> Result<Node, PyReError> {
        let start = self.pos;
        let negated = self.eat("^");
        let mut items: Vec<ClassItem> = Vec::new();
        let first = self.pos;
        loop {
            let Some(c) = self.peek() else {
                return Err(PyReError {
                    message: "unterminated character set".into(),
                    offset: start - 1,
                });
            };
            if c == ']' && self.pos != first {
                self.pos += 1;
                break;
            }
            self.pos += 1;
            let item = if c == '\\' {
                let Some(e) = self.peek() else {
                    return Err(self.err("bad escape (end of pattern)"));
                };
                self.pos += 1;
                let perl = |kind, negated| ClassItem::Perl { kind, negated };
                match e {
                    'd' => perl(Perl::Digit, false),
                    'D' => perl(Perl::Digit, true),
                    'w' => perl(Perl::Word, false),
                    'W' => perl(Perl::Word, true),
                    's' => perl(Perl::Space, false),
                    'S' => perl(Perl::Space, true),
                    _ => match self.char_escape(e, true)? {
                        Some(ch) => ClassItem::Char(ch),
                        None => return Err(self.err(format!("bad escape \\{e}"))),
                    },
                }
            } else {
                ClassItem::Char(c)
            };
            // A range `a-z`, unless the `-` is the last character of the class.
            if let ClassItem::Char(lo) = item {
                if self.peek() == Some('-') && self.peek_at(1).is_some_and(|n| n != ']') {
                    self.pos += 1;
                    let hi_c = self.peek().expect("checked");
                    self.pos += 1;
                    let hi = if hi_c == '\\' {
                        let e = self.peek().ok_or_else(|| self.err("bad escape"))?;
                        self.pos += 1;
                        match self.char_escape(e, true)? {
                            Some(ch) if !"dDwWsS".contains(e) => ch,
                            _ => return Err(self.err(format!("bad character range {lo}-\\{e}"))),
                        }
                    } else {
                        hi_c
                    };
                    if hi < lo {
                        return Err(self.err(format!("bad character range {lo}-{hi}")));
                    }
                    items.push(ClassItem::Range(lo, hi));
                    continue;
                }
            } else if self.peek() == Some('-') && self.peek_at(1).is_some_and(|n| n != ']') {
                return Err(self.err("bad character range"));
            }
            items.push(item);
        }
        Ok(Node::Class {
            negated,
            items,
            icase: flags.icase,
        })
    }
}

/// Whether a tree needs the backtracking engine.
pub fn needs_backtracking(node: &Node) -> bool {
    let mut found = false;
    walk(node, &mut |n| {
        if matches!(
            n,
            Node::Look { .. } | Node::Backref { .. } | Node::Cond { .. }
        ) {
            found = true;
        }
    });
    found
}

/// The first construct that needs the backtracking engine, named for messages.
pub fn backtracking_construct(node: &Node) -> Option<&'static str> {
    let mut found = None;
    walk(node, &mut |n| {
        if found.is_none() {
            found = match n {
                Node::Look {
                    behind: false,
                    negated: false,
                    ..
                } => Some("look-ahead (?=...)"),
                Node::Look {
                    behind: false,
                    negated: true,
                    ..
                } => Some("negative look-ahead (?!...)"),
                Node::Look {
                    behind: true,
                    negated: false,
                    ..
                } => Some("look-behind (?<=...)"),
                Node::Look { behind: true, .. } => Some("negative look-behind (?<!...)"),
                Node::Backref { .. } => Some("back-reference"),
                Node::Cond { .. } => Some("conditional (?(name)...)"),
                _ => None,
            };
        }
    });
    found
}

/// Rewrites the word-boundary look-aheads fail2ban puts around date templates into their
/// linear equivalents: `(?=^|\b|\W)` and `(?=\b|\W|$)` both hold exactly where not both
/// neighbours are word characters.
pub fn simplify_boundaries(node: &mut Node) {
    match node {
        Node::Look {
            behind: false,
            negated: false,
            node: inner,
        } if is_date_boundary(inner) => {
            *node = Node::NonCapture(Box::new(Node::Alt(vec![
                Node::Assert(Assert::StartHalf),
                Node::Assert(Assert::EndHalf),
            ])));
        }
        Node::Capture { node, .. }
        | Node::NonCapture(node)
        | Node::Look { node, .. }
        | Node::Repeat { node, .. } => simplify_boundaries(node),
        Node::Cond { yes, no, .. } => {
            simplify_boundaries(yes);
            simplify_boundaries(no);
        }
        Node::Concat(v) | Node::Alt(v) => v.iter_mut().for_each(simplify_boundaries),
        _ => {}
    }
}

fn is_date_boundary(node: &Node) -> bool {
    let Node::Alt(branches) = node else {
        return false;
    };
    let mut has_b = false;
    let mut has_w = false;
    let mut has_edge = false;
    for b in branches {
        match b {
            Node::Assert(Assert::WordBoundary) => has_b = true,
            Node::Perl {
                kind: Perl::Word,
                negated: true,
                ascii: false,
            } => has_w = true,
            Node::Assert(Assert::TextStart | Assert::LineEnd) => has_edge = true,
            _ => return false,
        }
    }
    has_b && has_w && has_edge && branches.len() == 3
}

/// Whether group `index` is inside `node`.
fn contains_group(node: &Node, index: usize) -> bool {
    let mut found = false;
    walk(node, &mut |n| {
        if matches!(n, Node::Capture { index: i, .. } if *i == index) {
            found = true;
        }
    });
    found
}

fn contains_cond_on(node: &Node, index: usize) -> bool {
    let mut found = false;
    walk(node, &mut |n| {
        if matches!(n, Node::Cond { index: i, .. } if *i == index) {
            found = true;
        }
    });
    found
}

/// The paths through `node` on which group `index` does (`took_part`) or does not take
/// part; `Err` when that cannot be expressed without changing the match (a repetition of
/// more than one round containing the group, or the group inside a look-around).
fn restrict(node: &Node, index: usize, took_part: bool) -> Result<Node, String> {
    if !contains_group(node, index) {
        return Ok(if took_part { Node::Fail } else { node.clone() });
    }
    Ok(match node {
        Node::Capture {
            index: i,
            node: inner,
        } if *i == index => {
            if took_part {
                node.clone()
            } else {
                let _ = inner;
                Node::Fail
            }
        }
        Node::Capture {
            index: i,
            node: inner,
        } => Node::Capture {
            index: *i,
            node: Box::new(restrict(inner, index, took_part)?),
        },
        Node::NonCapture(inner) => Node::NonCapture(Box::new(restrict(inner, index, took_part)?)),
        Node::Repeat {
            node: inner,
            min,
            max: Some(1),
            greedy,
        } => {
            let once = restrict(inner, index, took_part)?;
            if took_part || *min == 1 {
                once
            } else {
                let branches = if *greedy {
                    vec![once, Node::Empty]
                } else {
                    vec![Node::Empty, once]
                };
                Node::NonCapture(Box::new(Node::Alt(branches)))
            }
        }
        Node::Concat(items) => Node::Concat(
            items
                .iter()
                .map(|n| restrict(n, index, took_part))
                .collect::<Result<_, _>>()?,
        ),
        Node::Alt(branches) => Node::Alt(
            branches
                .iter()
                .map(|n| restrict(n, index, took_part))
                .collect::<Result<_, _>>()?,
        ),
        Node::Cond { index: c, yes, no } => Node::Cond {
            index: *c,
            yes: Box::new(restrict(yes, index, took_part)?),
            no: Box::new(restrict(no, index, took_part)?),
        },
        _ => {
            return Err(format!(
                "group {index} is inside a repetition or look-around; the conditional on it \
                 cannot be unfolded"
            ))
        }
    })
}

/// Replaces every `(?(index)yes|no)` by its `yes` or `no` branch.
fn resolve_cond(node: &Node, index: usize, took_part: bool) -> Node {
    let rec = |n: &Node| resolve_cond(n, index, took_part);
    match node {
        Node::Cond { index: i, yes, no } if *i == index => {
            let branch = if took_part { yes } else { no };
            Node::NonCapture(Box::new(rec(branch)))
        }
        Node::Cond { index: i, yes, no } => Node::Cond {
            index: *i,
            yes: Box::new(rec(yes)),
            no: Box::new(rec(no)),
        },
        Node::Capture { index: i, node } => Node::Capture {
            index: *i,
            node: Box::new(rec(node)),
        },
        Node::NonCapture(n) => Node::NonCapture(Box::new(rec(n))),
        Node::Look {
            behind,
            negated,
            node,
        } => Node::Look {
            behind: *behind,
            negated: *negated,
            node: Box::new(rec(node)),
        },
        Node::Repeat {
            node,
            min,
            max,
            greedy,
        } => Node::Repeat {
            node: Box::new(rec(node)),
            min: *min,
            max: *max,
            greedy: *greedy,
        },
        Node::Concat(v) => Node::Concat(v.iter().map(rec).collect()),
        Node::Alt(v) => Node::Alt(v.iter().map(rec).collect()),
        other => other.clone(),
    }
}

/// Removes every conditional by distributing over its group: in the smallest sequence
/// holding both the group and a conditional on it, `G rest` becomes
/// `(?: G|took-part rest|yes | G|did-not rest|no )`. The match and every capture stay what
/// Python gives; the copies of groups in `rest` are told apart by [`Emitted::groups`].
pub fn unfold_conditionals(node: &mut Node) -> Result<(), String> {
    for _ in 0..64 {
        let mut target = None;
        walk(node, &mut |n| {
            if target.is_none() {
                if let Node::Cond { index, .. } = n {
                    target = Some(*index);
                }
            }
        });
        let Some(index) = target else {
            return Ok(());
        };
        if !unfold_in(node, index)? {
            // The group is not before the conditional in any sequence: it never took part
            // when the conditional is reached (Python's behaviour for a later or absent
            // group).
            *node = resolve_cond(node, index, false);
        }
    }
    Err("too many conditionals to unfold".into())
}

/// Unfolds conditionals on `index` in the smallest sequence that holds the group before
/// them; `Ok(false)` when no sequence does.
fn unfold_in(node: &mut Node, index: usize) -> Result<bool, String> {
    match node {
        Node::Concat(items) => {
            // Deeper first: the smallest sequence wins.
            for item in items.iter_mut() {
                if unfold_in(item, index)? {
                    return Ok(true);
                }
            }
            let Some(j) = items.iter().position(|n| contains_group(n, index)) else {
                return Ok(false);
            };
            if !items[j + 1..].iter().any(|n| contains_cond_on(n, index)) {
                return Ok(false);
            }
            let rest = Node::Concat(items[j + 1..].to_vec());
            let yes = Node::Concat(vec![
                restrict(&items[j], index, true)?,
                resolve_cond(&rest, index, true),
            ]);
            let no = Node::Concat(vec![
                restrict(&items[j], index, false)?,
                resolve_cond(&rest, index, false),
            ]);
            items.truncate(j);
            items.push(Node::NonCapture(Box::new(Node::Alt(vec![yes, no]))));
            Ok(true)
        }
        Node::Capture { node, .. }
        | Node::NonCapture(node)
        | Node::Look { node, .. }
        | Node::Repeat { node, .. } => unfold_in(node, index),
        Node::Alt(v) => {
            for n in v.iter_mut() {
                if unfold_in(n, index)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Node::Cond { yes, no, .. } => Ok(unfold_in(yes, index)? || unfold_in(no, index)?),
        _ => Ok(false),
    }
}

/// A pattern written in Rust's syntax.
#[derive(Clone, Debug)]
pub struct Emitted {
    /// The Rust regex text.
    pub regex: String,
    /// For each Rust group (index 0 unused, the whole match), the Python group it copies.
    pub groups: Vec<usize>,
}

/// How [`emit`] writes constructs Rust's linear engine lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As they are (for `fancy-regex`).
    Exact,
    /// Look-arounds as always true, back-references as their group's pattern: a linear
    /// regex matching at least wherever the exact one matches.
    Superset,
}

/// Writes the tree in Rust regex syntax.
pub fn emit(pattern: &Pattern, mode: Mode) -> Result<Emitted, String> {
    let mut e = Emitter {
        out: String::new(),
        groups: vec![0],
        first_copy: vec![None; pattern.names.len()],
        mode,
        pattern,
        in_superset_ref: 0,
    };
    e.node(&pattern.root)?;
    Ok(Emitted {
        regex: e.out,
        groups: e.groups,
    })
}

struct Emitter<'a> {
    out: String,
    groups: Vec<usize>,
    /// The Rust index of the first copy of each Python group (for back-references).
    first_copy: Vec<Option<usize>>,
    mode: Mode,
    pattern: &'a Pattern,
    /// Inside a back-reference written as its group's pattern: captures become plain groups.
    in_superset_ref: usize,
}

fn find_group(node: &Node, index: usize) -> Option<&Node> {
    match node {
        Node::Capture { index: i, node } if *i == index => Some(node),
        Node::Capture { node, .. }
        | Node::NonCapture(node)
        | Node::Look { node, .. }
        | Node::Repeat { node, .. } => find_group(node, index),
        Node::Cond { yes, no, .. } => find_group(yes, index).or_else(|| find_group(no, index)),
        Node::Concat(v) | Node::Alt(v) => v.iter().find_map(|n| find_group(n, index)),
        _ => None,
    }
}

impl Emitter<'_> {
    fn lit(&mut self, c: char) {
        push_char(&mut self.out, c, false);
    }

    fn node(&mut self, node: &Node) -> Result<(), String> {
        match node {
            Node::Empty => {}
            Node::Fail => self.out.push_str("[^\\s\\S]"),
            Node::Lit { c, icase } => {
                if *icase && c.to_lowercase().ne(c.to_uppercase()) {
                    self.out.push_str("(?i:");
                    self.lit(*c);
                    self.out.push(')');
                } else {
                    self.lit(*c);
                }
            }
            Node::Dot { dotall: true } => self.out.push_str("(?s:.)"),
            Node::Dot { dotall: false } => self.out.push('.'),
            Node::Class {
                negated,
                items,
                icase,
            } => {
                if *icase {
                    self.out.push_str("(?i:");
                }
                self.out.push('[');
                if *negated {
                    self.out.push('^');
                }
                if items.is_empty() {
                    // Python's `[]` cannot occur (`]` first is literal); an empty class
                    // only arises from `[^]...]` forms, which have items.
                    self.out.push_str("\\s\\S");
                }
                for item in items {
                    match item {
                        ClassItem::Char(c) => push_char(&mut self.out, *c, true),
                        ClassItem::Range(a, b) => {
                            push_char(&mut self.out, *a, true);
                            self.out.push('-');
                            push_char(&mut self.out, *b, true);
                        }
                        ClassItem::Perl { kind, negated } => {
                            self.out.push_str(perl_text(*kind, *negated))
                        }
                    }
                }
                self.out.push(']');
                if *icase {
                    self.out.push(')');
                }
            }
            Node::Perl {
                kind,
                negated,
                ascii,
            } => {
                if *ascii {
                    let t = match (kind, negated) {
                        (Perl::Digit, false) => "[0-9]",
                        (Perl::Digit, true) => "[^0-9]",
                        (Perl::Word, false) => "[0-9A-Za-z_]",
                        (Perl::Word, true) => "[^0-9A-Za-z_]",
                        (Perl::Space, false) => "[\\t\\n\\x0B\\x0C\\r ]",
                        (Perl::Space, true) => "[^\\t\\n\\x0B\\x0C\\r ]",
                    };
                    self.out.push_str(t);
                } else {
                    self.out.push_str(perl_text(*kind, *negated));
                }
            }
            Node::Assert(a) => self.out.push_str(match a {
                Assert::TextStart => "^",
                Assert::LineStart => "(?m:^)",
                Assert::LineEnd => "(?m:$)",
                Assert::TextEnd => "\\z",
                Assert::WordBoundary => "\\b",
                Assert::NotWordBoundary => "\\B",
                Assert::StartHalf => "\\b{start-half}",
                Assert::EndHalf => "\\b{end-half}",
            }),
            Node::Capture { index, node } => {
                if self.in_superset_ref > 0 {
                    self.out.push_str("(?:");
                } else {
                    self.out.push('(');
                    let rust = self.groups.len();
                    self.groups.push(*index);
                    if self.first_copy[*index].is_none() {
                        self.first_copy[*index] = Some(rust);
                    }
                }
                self.node(node)?;
                self.out.push(')');
            }
            Node::NonCapture(node) => {
                self.out.push_str("(?:");
                self.node(node)?;
                self.out.push(')');
            }
            Node::Look {
                behind,
                negated,
                node,
            } => match self.mode {
                Mode::Superset => {}
                Mode::Exact => {
                    self.out.push_str(match (behind, negated) {
                        (false, false) => "(?=",
                        (false, true) => "(?!",
                        (true, false) => "(?<=",
                        (true, true) => "(?<!",
                    });
                    self.node(node)?;
                    self.out.push(')');
                }
            },
            Node::Backref { index, icase } => match self.mode {
                Mode::Superset => {
                    let target = find_group(&self.pattern.root, *index)
                        .ok_or_else(|| format!("back-reference to missing group {index}"))?;
                    self.in_superset_ref += 1;
                    self.out.push_str(if *icase { "(?i:" } else { "(?:" });
                    self.node(target)?;
                    self.out.push(')');
                    self.in_superset_ref -= 1;
                }
                Mode::Exact => {
                    let rust = self.first_copy[*index].ok_or_else(|| {
                        format!("back-reference to group {index} before it is defined")
                    })?;
                    let copies = self.groups.iter().filter(|g| **g == *index).count();
                    if copies > 1 {
                        return Err(format!(
                            "back-reference to group {index}, which has several copies"
                        ));
                    }
                    if *icase {
                        self.out.push_str("(?i:");
                    }
                    write!(self.out, "\\{rust}").expect("string");
                    if *icase {
                        self.out.push(')');
                    }
                }
            },
            Node::Cond { .. } => {
                return Err("a conditional is left (unfold_conditionals first)".into())
            }
            Node::Repeat {
                node,
                min,
                max,
                greedy,
            } => {
                let atom = matches!(
                    **node,
                    Node::Lit { .. }
                        | Node::Dot { .. }
                        | Node::Class { .. }
                        | Node::Perl { .. }
                        | Node::Fail
                        | Node::Capture { .. }
                        | Node::NonCapture(_)
                        | Node::Alt(_)
                ) || matches!(**node, Node::Backref { .. }) && self.mode == Mode::Exact;
                if atom {
                    self.node(node)?;
                } else {
                    self.out.push_str("(?:");
                    self.node(node)?;
                    self.out.push(')');
                }
                match (min, max) {
                    (0, None) => self.out.push('*'),
                    (1, None) => self.out.push('+'),
                    (0, Some(1)) => self.out.push('?'),
                    (m, None) => write!(self.out, "{{{m},}}").expect("string"),
                    (m, Some(n)) if m == n => write!(self.out, "{{{m}}}").expect("string"),
                    (m, Some(n)) => write!(self.out, "{{{m},{n}}}").expect("string"),
                }
                if !greedy {
                    self.out.push('?');
                }
            }
            Node::Concat(items) => {
                for n in items {
                    self.node(n)?;
                }
            }
            Node::Alt(branches) => {
                self.out.push_str("(?:");
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push('|');
                    }
                    self.node(b)?;
                }
                self.out.push(')');
            }
        }
        Ok(())
    }
}

fn perl_text(kind: Perl, negated: bool) -> &'static str {
    match (kind, negated) {
        (Perl::Digit, false) => "\\d",
        (Perl::Digit, true) => "\\D",
        (Perl::Word, false) => "\\w",
        (Perl::Word, true) => "\\W",
        (Perl::Space, false) => "\\s",
        (Perl::Space, true) => "\\S",
    }
}

/// A literal character in Rust syntax: meta characters escaped, control characters as hex.
fn push_char(out: &mut String, c: char, in_class: bool) {
    let meta: &[char] = if in_class {
        &['\\', '[', ']', '^', '-', '&', '~']
    } else {
        &[
            '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$', '#', '&', '-',
            '~',
        ]
    };
    if meta.contains(&c) {
        out.push('\\');
        out.push(c);
    } else if c.is_control() {
        write!(out, "\\x{{{:X}}}", c as u32).expect("string");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(p: &str) -> String {
        let mut pat = parse(p, false).unwrap();
        simplify_boundaries(&mut pat.root);
        unfold_conditionals(&mut pat.root).unwrap();
        emit(&pat, Mode::Exact).unwrap().regex
    }

    fn matches(p: &str, text: &str) -> Option<String> {
        let r = regex::Regex::new(&rust(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        r.find(text).map(|m| m.as_str().to_string())
    }

    #[test]
    fn python_literals_that_rust_reads_as_syntax() {
        assert_eq!(matches(r"a[^[]+b", "axyb"), Some("axyb".into()));
        assert_eq!(matches(r"a[^[]+b", "a[b"), None);
        assert_eq!(matches(r"\<x\>", "<x>"), Some("<x>".into()));
        assert_eq!(matches(r"\d{,3}x", "12x"), Some("12x".into()));
        assert_eq!(matches(r"{[^}]+}", "a{b}c"), Some("{b}".into()));
        assert_eq!(matches(r"a{}", "a{}"), Some("a{}".into()));
        assert_eq!(matches(r"a{x", "a{x"), Some("a{x".into()));
        assert_eq!(
            matches(r"x&&y~~z--w", "x&&y~~z--w"),
            Some("x&&y~~z--w".into())
        );
        assert_eq!(matches(r"[&~-]+", "&~-"), Some("&~-".into()));
        assert_eq!(matches(r"[]x]+", "]x]"), Some("]x]".into()));
    }

    #[test]
    fn anchors_as_python_reads_them() {
        // `$` also before the final newline fail2ban appends; `\Z` only at the very end.
        assert_eq!(matches(r"^ab$", "ab\n"), Some("ab".into()));
        assert_eq!(matches(r"ab\Z", "ab\n"), None);
        assert_eq!(matches(r"(?i)AB", "xab"), Some("ab".into()));
    }

    #[test]
    fn date_boundaries_become_linear() {
        let p = r"(?=^|\b|\W)(\d+)(?=\b|\W|$)";
        let mut pat = parse(p, false).unwrap();
        simplify_boundaries(&mut pat.root);
        assert!(!needs_backtracking(&pat.root));
        let r = regex::Regex::new(&emit(&pat, Mode::Exact).unwrap().regex).unwrap();
        assert_eq!(r.find("a12 34").map(|m| m.as_str()), Some("34"));
        assert_eq!(r.find("[12]").map(|m| m.as_str()), Some("12"));
    }

    #[test]
    fn conditionals_unfold_with_the_same_captures() {
        // sshd's shape: the user is one word after "invalid user ", else up to ":".
        let p = r"^for (?P<inv>invalid user )?(?P<u>(?P<w>\S+)|(?(inv)[^ ]*?|[^:]+)) from (?P<h>\S+)(?(w): |$)";
        let mut pat = parse(p, false).unwrap();
        unfold_conditionals(&mut pat.root).unwrap();
        assert!(!needs_backtracking(&pat.root));
        let e = emit(&pat, Mode::Exact).unwrap();
        let r = regex::Regex::new(&e.regex).unwrap();
        let cap = |text: &str, name: &str| -> Option<String> {
            let idx = pat.group(name).unwrap();
            let c = r.captures(text)?;
            e.groups
                .iter()
                .enumerate()
                .filter(|(_, g)| **g == idx)
                .find_map(|(i, _)| c.get(i))
                .map(|m| m.as_str().to_string())
        };
        assert_eq!(cap("for bob from 192.0.2.1: x", "u"), Some("bob".into()));
        assert_eq!(
            cap("for invalid user bob from 192.0.2.1: x", "u"),
            Some("bob".into())
        );
        assert_eq!(
            cap("for invalid user bob from 192.0.2.1: x", "inv"),
            Some("invalid user ".into())
        );
        assert_eq!(
            cap("for invalid user bob from 192.0.2.1: x", "h"),
            Some("192.0.2.1".into())
        );
        // Python: without the word group, the user runs up to ":" and the line must end.
        assert_eq!(cap("for bob from 192.0.2.1", "w"), None);
        assert_eq!(cap("for bob from 192.0.2.1", "u"), Some("bob".into()));
    }

    #[test]
    fn superset_drops_lookaround_and_backrefs() {
        let pat = parse(r"^(?P<s>[-/])x(?P=s)(?!bad)", false).unwrap();
        assert!(needs_backtracking(&pat.root));
        let sup = emit(&pat, Mode::Superset).unwrap().regex;
        let r = regex::Regex::new(&sup).unwrap();
        assert!(r.is_match("-x/bad"));
        let exact = emit(&pat, Mode::Exact).unwrap().regex;
        let f = fancy_regex::Regex::new(&exact).unwrap();
        assert!(f.is_match("-x-ok").unwrap());
        assert!(!f.is_match("-x/ok").unwrap());
        assert!(!f.is_match("-x-bad").unwrap());
    }

    #[test]
    fn errors_name_the_problem() {
        for (p, what) in [
            ("(a", "missing )"),
            ("a)", "unbalanced"),
            ("*a", "nothing to repeat"),
            ("a**", "multiple repeat"),
            (r"\q", "bad escape"),
            ("[z-a]", "bad character range"),
            ("(?P=nope)", "unknown group"),
            ("a(?i)b", "global flags"),
        ] {
            let e = parse(p, false).unwrap_err();
            assert!(e.message.contains(what), "{p}: {e}");
        }
    }
}

/// Which characters a pattern's match can end with (for deciding where a cut-out date
/// can join two pieces of text).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ends {
    /// Whether the match can end with a word character.
    pub word: bool,
    /// Whether the match can end with a non-word character.
    pub nonword: bool,
    /// Whether the match can be empty (then what comes before decides).
    pub empty: bool,
}

impl Ends {
    fn union(self, o: Ends) -> Ends {
        Ends {
            word: self.word || o.word,
            nonword: self.nonword || o.nonword,
            empty: self.empty || o.empty,
        }
    }
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn class_ends(negated: bool, items: &[ClassItem]) -> Ends {
    let either = Ends {
        word: true,
        nonword: true,
        empty: false,
    };
    if negated {
        return either;
    }
    let mut e = Ends::default();
    for item in items {
        match *item {
            ClassItem::Char(c) if word_char(c) => e.word = true,
            ClassItem::Char(_) => e.nonword = true,
            ClassItem::Range(a, b)
                if [('0', '9'), ('A', 'Z'), ('a', 'z')]
                    .iter()
                    .any(|&(lo, hi)| a >= lo && b <= hi) =>
            {
                e.word = true
            }
            ClassItem::Range(..) => return either,
            ClassItem::Perl {
                kind: Perl::Digit | Perl::Word,
                negated: false,
            } => e.word = true,
            ClassItem::Perl {
                kind: Perl::Space,
                negated: false,
            }
            | ClassItem::Perl {
                kind: Perl::Word,
                negated: true,
            } => e.nonword = true,
            ClassItem::Perl { .. } => return either,
        }
    }
    e
}

/// The characters a match of `node` can end with.
pub fn ends(node: &Node) -> Ends {
    let either = Ends {
        word: true,
        nonword: true,
        empty: false,
    };
    let empty = Ends {
        empty: true,
        ..Ends::default()
    };
    match node {
        Node::Empty | Node::Assert(_) | Node::Look { .. } => empty,
        Node::Fail => Ends::default(),
        Node::Lit { c, .. } => Ends {
            word: word_char(*c),
            nonword: !word_char(*c),
            empty: false,
        },
        Node::Dot { .. } | Node::Backref { .. } => either.union(empty),
        Node::Class { negated, items, .. } => class_ends(*negated, items),
        Node::Perl { kind, negated, .. } => match (kind, negated) {
            (Perl::Digit | Perl::Word, false) => Ends {
                word: true,
                ..Ends::default()
            },
            (Perl::Space, false) | (Perl::Word, true) => Ends {
                nonword: true,
                ..Ends::default()
            },
            _ => either,
        },
        Node::Capture { node, .. } | Node::NonCapture(node) => ends(node),
        Node::Repeat { node, min, .. } => {
            let e = ends(node);
            if *min == 0 {
                e.union(empty)
            } else {
                e
            }
        }
        Node::Alt(v) => v.iter().map(ends).fold(Ends::default(), Ends::union),
        Node::Cond { yes, no, .. } => ends(yes).union(ends(no)),
        Node::Concat(v) => {
            let mut acc = empty;
            for n in v.iter().rev() {
                let e = ends(n);
                acc = Ends {
                    word: acc.word || e.word,
                    nonword: acc.nonword || e.nonword,
                    empty: e.empty,
                };
                if !e.empty {
                    break;
                }
            }
            acc
        }
    }
}

//! The literal text a fail2ban regex needs, for skipping lines cheaply.
//!
//! For each regex, a set of literals of which every match contains at least one
//! ([`needed`]): a literal, the best of a sequence's parts, or one per branch of an
//! alternation (`(Connection (?:closed|reset)|Disconnected)` needs `Connection ` or
//! `Disconnected`).
//!
//! fail2ban matches a line with its date cut out, so these literals are found in the line
//! *without* its date, and may straddle the place the date was cut from (nginx's `\[\] "` does:
//! `[14/Aug/2005:...] "` in the line itself). Hence three ways to use them ([`Cut`]):
//! - on the text the regexes see, after the date is cut, any literal is exact;
//! - on the whole line, before the date is looked for, only pieces that cannot straddle the
//!   cut: when every date template cuts only before a non-word character, a literal split
//!   before each non-word character leaves pieces wholly on one side; when every template
//!   cuts only where one side is a non-word character, runs of word characters are safe
//!   (see [`super::dates::DateDetector::cuts`]).

use regex_syntax::hir::{Hir, HirKind};

/// How a literal may be used given where dates can be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The text searched has had its date cut already: literals as they are.
    None,
    /// Cuts are followed by a non-word character: pieces that start before one.
    BeforeNonWord,
    /// Cuts have a non-word character on one side: runs of word characters.
    BesideNonWord,
}

/// Literals shorter than this are in almost every line: not worth a search.
const MIN_LEN: usize = 3;

fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The longest usable piece of a literal.
fn best_piece(lit: &[u8], cut: Cut) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(lit).ok()?;
    let mut pieces: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        let split = match cut {
            Cut::None => false,
            Cut::BeforeNonWord => !word(c),
            Cut::BesideNonWord => !word(c),
        };
        if split && !cur.is_empty() {
            pieces.push(std::mem::take(&mut cur));
        }
        if cut == Cut::BesideNonWord && !word(c) {
            continue;
        }
        cur.push(c);
    }
    pieces.push(cur);
    pieces
        .into_iter()
        .filter(|p| p.len() >= MIN_LEN)
        .max_by_key(String::len)
        .map(String::into_bytes)
}

/// A set of literals, any of which a match contains; scored by its shortest.
fn score(set: &[Vec<u8>]) -> usize {
    set.iter().map(Vec::len).min().unwrap_or(0)
}

fn any_of(hir: &Hir, cut: Cut) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Literal(lit) => best_piece(&lit.0, cut).map(|p| vec![p]),
        HirKind::Capture(c) => any_of(&c.sub, cut),
        HirKind::Repetition(r) if r.min >= 1 => any_of(&r.sub, cut),
        HirKind::Concat(parts) => parts
            .iter()
            .filter_map(|p| any_of(p, cut))
            .max_by_key(|s| (score(s), usize::MAX - s.len())),
        HirKind::Alternation(branches) => {
            let mut all = Vec::new();
            for b in branches {
                for l in any_of(b, cut)? {
                    if !all.contains(&l) {
                        all.push(l);
                    }
                }
            }
            (all.len() <= 16).then_some(all)
        }
        _ => None,
    }
}

/// Literals of which every match of `regex` (Rust syntax) contains one; `None` when the
/// regex has no usable set.
pub fn needed(regex: &str, cut: Cut) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(regex)
        .ok()?;
    any_of(&hir, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Option<Vec<Vec<u8>>>) -> Vec<String> {
        v.unwrap_or_default()
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn literals_and_pieces() {
        let re = r#"^\S+ \[\] "(?:GET|POST) /login" 404 "#;
        assert_eq!(s(needed(re, Cut::None)), [" /login\" 404 "]);
        assert_eq!(s(needed(re, Cut::BeforeNonWord)), ["/login"]);
        assert_eq!(s(needed(re, Cut::BesideNonWord)), ["login"]);
        assert_eq!(
            s(needed(
                "^(Connection (?:closed|reset)|Disconnected) by",
                Cut::BesideNonWord
            )),
            ["Connection", "Disconnected"]
        );
        assert_eq!(needed("(?i)hello", Cut::None), None);
        assert_eq!(needed("^(?:ab|cdef) x", Cut::None), None);
    }
}

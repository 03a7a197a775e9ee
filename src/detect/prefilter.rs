//! The cheap first look at every line: which filters could possibly match it.
//!
//! Each filter contributes the literals its rules require (`"POST /api/auth "`, `sshd[`); a line
//! that contains none of a filter's literals cannot match that filter, so its regexes never run.
//! One search serves every filter reading the same source: with one literal it is a `memmem`
//! search, with several an Aho-Corasick automaton that reports every literal present
//! (overlapping matches included, so no literal can hide another). On an access log where a
//! few percent of lines are failed logins, almost every line ends here.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use memchr::memmem;

use super::filter::Filter;

// One per input: its size is irrelevant, and keeping the finder inline spares the per-line
// search a pointer chase.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Search {
    /// No filter has a literal: nothing to search.
    Nothing,
    One(memmem::Finder<'static>),
    /// A few literals: one `memmem` search each beats an automaton (whose prefilter only
    /// looks for the literals' first bytes, which are common) several times over.
    Few(Vec<memmem::Finder<'static>>),
    Many(AhoCorasick),
}

/// Up to this many literals are searched one by one.
const FEW: usize = 4;

/// Candidate selection for a fixed list of filters (indices into that list).
#[derive(Debug)]
pub struct Prefilter {
    search: Search,
    /// For each literal, the filters that require it.
    owners: Vec<Vec<usize>>,
    /// Filters without literals: candidates for every line.
    always: Vec<usize>,
    filters: usize,
}

impl Prefilter {
    /// The prefilter of `filters`, from the literals each requires: a line is a candidate for a
    /// filter only when it contains one of them; filters without literals are candidates for every
    /// line.
    pub fn new(filters: &[&Filter]) -> Prefilter {
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            match f.required_literals() {
                None => always.push(i),
                Some(lits) => {
                    for lit in lits {
                        match literals.iter().position(|l| *l == lit) {
                            Some(k) => owners[k].push(i),
                            None => {
                                literals.push(lit);
                                owners.push(vec![i]);
                            }
                        }
                    }
                }
            }
        }
        let search = match literals.len() {
            0 => Search::Nothing,
            1 => Search::One(memmem::Finder::new(&literals[0]).into_owned()),
            n if n <= FEW => Search::Few(
                literals
                    .iter()
                    .map(|l| memmem::Finder::new(l).into_owned())
                    .collect(),
            ),
            _ => Search::Many(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&literals)
                    .expect("literal automaton within limits"),
            ),
        };
        Prefilter {
            search,
            owners,
            always,
            filters: filters.len(),
        }
    }

    /// Whether [`Prefilter::for_each_candidate_line`] can stand in for a per-line loop: false
    /// when some filter has no literal, since every line is then a candidate.
    pub fn can_skip_lines(&self) -> bool {
        self.always.is_empty()
    }

    /// For a block of complete lines (each ending with `\n`), calls `each` with every line that
    /// contains a literal, and that line's candidate filters. The block is searched as a whole;
    /// line boundaries are looked for only around the hits. Lines without any literal are not
    /// visited at all, so only use this when [`Prefilter::can_skip_lines`].
    pub fn for_each_candidate_line(
        &self,
        block: &[u8],
        out: &mut Vec<usize>,
        mut each: impl FnMut(&[u8], &[usize]),
    ) {
        let mut pos = 0;
        // For `Few`: each literal's next occurrence at or after `pos` (usize::MAX: none left),
        // searched again only once `pos` has passed it.
        let mut next: Vec<usize> = match &self.search {
            Search::Few(finders) => finders
                .iter()
                .map(|f| f.find(block).unwrap_or(usize::MAX))
                .collect(),
            _ => Vec::new(),
        };
        while pos < block.len() {
            let hit = match &self.search {
                Search::Nothing => None,
                Search::One(finder) => finder.find(&block[pos..]).map(|i| pos + i),
                Search::Few(finders) => {
                    for (n, f) in next.iter_mut().zip(finders) {
                        if *n != usize::MAX && *n < pos {
                            *n = f.find(&block[pos..]).map_or(usize::MAX, |i| pos + i);
                        }
                    }
                    next.iter().copied().min().filter(|&n| n != usize::MAX)
                }
                Search::Many(ac) => ac
                    .find(aho_corasick::Input::new(block).range(pos..))
                    .map(|m| m.start()),
            };
            let Some(at) = hit else {
                return;
            };
            let start = memchr::memrchr(b'\n', &block[pos..at]).map_or(pos, |i| pos + i + 1);
            let end = memchr::memchr(b'\n', &block[at..]).map_or(block.len(), |i| at + i);
            let line = crate::vocab::lines::trim_cr(&block[start..end]);
            self.candidates(line, out);
            if !out.is_empty() {
                each(line, out);
            }
            pos = end + 1;
        }
    }

    /// Writes into `out` the indices of the filters that may match `line`, in ascending order.
    pub fn candidates(&self, line: &[u8], out: &mut Vec<usize>) {
        out.clear();
        out.extend_from_slice(&self.always);
        match &self.search {
            Search::Nothing => {}
            Search::One(finder) => {
                if finder.find(line).is_some() {
                    out.extend_from_slice(&self.owners[0]);
                }
            }
            Search::Few(finders) => {
                for (k, f) in finders.iter().enumerate() {
                    if f.find(line).is_some() {
                        out.extend_from_slice(&self.owners[k]);
                    }
                }
            }
            Search::Many(ac) => {
                for m in ac.find_overlapping_iter(line) {
                    out.extend_from_slice(&self.owners[m.pattern().as_usize()]);
                    if out.len() >= self.filters && self.always.is_empty() {
                        break;
                    }
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::filter::FilterSpec;

    fn filter(re: &str) -> Filter {
        Filter::compile(&FilterSpec {
            failregex: vec![re.into()],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn selects_only_filters_whose_literal_is_present() {
        let a = filter(r"^<HOST> .*POST /api/auth");
        let b = filter(r"^<HOST> .*GET /wp-login.php");
        let c = filter(r"(?i)^<HOST> x");
        let p = Prefilter::new(&[&a, &b, &c]);
        let mut out = Vec::new();
        p.candidates(b"192.0.2.1 GET /wp-login.php", &mut out);
        assert_eq!(out, vec![1, 2]);
        p.candidates(b"192.0.2.1 nothing", &mut out);
        assert_eq!(out, vec![2]);
    }

    #[test]
    fn block_search_visits_exactly_the_candidate_lines() {
        let a = filter(r"^<HOST> POST /api/auth");
        let b = filter(r"^<HOST> .*GET /wp-login.php");
        let block = b"1 a\r\n2 POST /api/auth GET /wp-login.php\n3 b\n4 GET /wp-login.php\r\n";
        for filters in [vec![&a], vec![&a, &b]] {
            let p = Prefilter::new(&filters);
            let mut seen = Vec::new();
            let mut per_line = Vec::new();
            p.for_each_candidate_line(block, &mut Vec::new(), |line, c| {
                seen.push((line.to_vec(), c.to_vec()))
            });
            crate::vocab::lines::split_lines(block, &mut |l| {
                let mut c = Vec::new();
                p.candidates(l.bytes, &mut c);
                if !c.is_empty() {
                    per_line.push((l.bytes.to_vec(), c));
                }
            });
            assert_eq!(seen, per_line);
            assert!(!seen.is_empty());
        }
    }

    #[test]
    fn many_literals_take_the_automaton_and_agree_with_few() {
        let lits = ["alpha", "bravo", "charlie", "delta", "echo"];
        let filters: Vec<Filter> = lits
            .iter()
            .map(|l| filter(&format!("^<HOST> .*{l}")))
            .collect();
        let block = b"1 x\n2 bravo\n3 echo delta\n4 none\n5 charlie\n";
        for n in [2, 3, 5] {
            let refs: Vec<&Filter> = filters[..n].iter().collect();
            let p = Prefilter::new(&refs);
            assert_eq!(matches!(p.search, Search::Few(_)), n <= FEW);
            let mut seen = Vec::new();
            p.for_each_candidate_line(block, &mut Vec::new(), |line, c| {
                seen.push((line.to_vec(), c.to_vec()))
            });
            let mut per_line = Vec::new();
            crate::source::split_lines(block, &mut |l| {
                let mut c = Vec::new();
                p.candidates(l.bytes, &mut c);
                if !c.is_empty() {
                    per_line.push((l.bytes.to_vec(), c));
                }
            });
            assert_eq!(seen, per_line, "{n} literals");
        }
    }

    #[test]
    fn overlapping_literals_are_all_found() {
        let a = filter(r"^<HOST> abcd");
        let b = filter(r"^<HOST> .*bcde");
        let p = Prefilter::new(&[&a, &b]);
        let mut out = Vec::new();
        p.candidates(b"192.0.2.1 abcde", &mut out);
        assert_eq!(out, vec![0, 1]);
    }
}

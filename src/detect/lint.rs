//! Static checks on filter patterns: the ways a failregex lets log text an attacker writes
//! decide whose address is banned (CVE-2013-7176 and friends), or lets one line stall a jail.

use super::filter::FilterSpec;

/// One finding about one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `failregex #1`, `prefregex`, ...
    pub rule: String,
    pub message: String,
}

/// Checks every pattern of a filter.
pub fn lint(spec: &FilterSpec) -> Vec<Warning> {
    let mut out = Vec::new();
    let host_in_pref = spec.prefregex.as_deref().is_some_and(has_host_tag);
    if let Some(p) = &spec.prefregex {
        // A prefregex need not name the client: its failregexes usually do.
        check(&mut out, "prefregex".into(), p, false);
    }
    for (i, p) in spec.failregex.iter().enumerate() {
        check(&mut out, format!("failregex #{}", i + 1), p, !host_in_pref);
    }
    for (i, p) in spec.ignoreregex.iter().enumerate() {
        if needs_backtracking(p) {
            out.push(Warning {
                rule: format!("ignoreregex #{}", i + 1),
                message: "uses look-around or back-references: it runs on the backtracking \
                          engine, slower and open to crafted lines"
                    .into(),
            });
        }
    }
    out
}

fn has_host_tag(p: &str) -> bool {
    ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"]
        .iter()
        .any(|t| p.contains(t))
}

fn check(out: &mut Vec<Warning>, rule: String, p: &str, expect_host: bool) {
    let mut warn = |message: String| {
        out.push(Warning {
            rule: rule.clone(),
            message,
        })
    };
    if !p.starts_with('^') {
        warn(
            "not anchored with ^: the pattern may match anywhere, including inside text the \
             client sent (path, referer, user agent)"
                .into(),
        );
    }
    let host_at = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>"]
        .iter()
        .filter_map(|t| p.find(t))
        .min();
    // A greedy wildcard before <HOST> is safe only when the pattern is anchored at the end:
    // then the client is the last thing of its shape in the line, where the server wrote it
    // (sshd's "for invalid user ANYTHING from <HOST> port N$").
    let end_anchored = p.ends_with('$') && !p.ends_with("\\$");
    if let Some(at) = host_at {
        if let Some(greedy) = greedy_wildcard(&p[..at]).filter(|_| !end_anchored) {
            warn(format!(
                "greedy {greedy} before <HOST> and no $ at the end: it can skip over the real \
                 client to an address the attacker wrote later in the line; hint: match the \
                 fields before the client explicitly (\\S+, [^\"]*) or anchor the pattern at \
                 both ends"
            ));
        }
    } else if expect_host {
        warn("no <HOST>: moat would not know whose address this line names".into());
    }
    if needs_backtracking(p) {
        let (max, how) = if p.starts_with('^') {
            (super::pattern::FANCY_ANCHORED_MAX, "")
        } else {
            (
                super::pattern::FANCY_UNANCHORED_MAX,
                " (unanchored: anchor it with ^ to raise that to 64 KiB)",
            )
        };
        warn(format!(
            "uses look-around or back-references: it runs on the backtracking engine, slower \
             and open to crafted lines, and only on lines up to {} KiB{how}: a longer line is \
             not matched, so a client can evade it with a long line; hint: rewrite without \
             them if you can",
            max / 1024
        ));
    }
}

/// Finds an unescaped `.*` or `.+` that is not lazy (`.*?`).
fn greedy_wildcard(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'.' if matches!(b.get(i + 1), Some(b'*' | b'+')) && b.get(i + 2) != Some(&b'?') => {
                return Some(if b[i + 1] == b'*' { ".*" } else { ".+" });
            }
            _ => i += 1,
        }
    }
    None
}

fn needs_backtracking(p: &str) -> bool {
    ["(?=", "(?!", "(?<=", "(?<!", "(?P="]
        .iter()
        .any(|t| p.contains(t))
        || p.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\\' && w[1].is_ascii_digit() && w[1] != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint_one(p: &str) -> Vec<String> {
        lint(&FilterSpec {
            failregex: vec![p.into()],
            ..Default::default()
        })
        .into_iter()
        .map(|w| w.message)
        .collect()
    }

    #[test]
    fn flags_the_seed_regex() {
        // The regex from the Portainer write-up: greedy .* after <HOST> is fine, but the
        // pattern below puts one before it.
        let w = lint_one(r#"^.*POST /api/auth HTTP/2.0" 422.* <HOST>"#);
        assert!(w.iter().any(|m| m.contains("greedy .*")), "{w:?}");
    }

    #[test]
    fn flags_unanchored_and_lookaround() {
        let w = lint_one(r"<HOST> failed(?! ok)");
        assert!(w.iter().any(|m| m.contains("not anchored")));
        assert!(w.iter().any(|m| m.contains("look-around")));
    }

    #[test]
    fn clean_pattern_has_no_warnings() {
        assert!(lint_one(r#"^<HOST> \S+ \S+ \[[^\]]+\] "POST /x" 4\d\d .*$"#).is_empty());
        assert!(
            lint_one(r"^x \.* y <HOST>").is_empty(),
            "escaped dot is literal"
        );
        assert!(lint_one(r"^x .*? <HOST>").is_empty(), "lazy is not greedy");
        assert!(
            lint_one(r"^user .* from <HOST> port \d+$").is_empty(),
            "end-anchored"
        );
        assert!(
            !lint_one(r"^user .* from <HOST> port \d+\$").is_empty(),
            "escaped $"
        );
    }
}

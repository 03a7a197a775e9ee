//! Names moat writes into places others read: a fleet's node and jail names (in Redis keys and
//! ids), an owner in Cloudflare comments. One shape for all of them: ASCII letters, digits,
//! `-`, `_` and `.`, nothing a terminal, a key pattern or a shell would read.

/// Whether `c` may stand in such a name.
pub fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Whether `name` is 1 to `max` bytes of [`is_plain`] characters.
pub fn is_plain_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.chars().all(is_plain)
}

/// The [`is_plain`] characters of `text`, at most `max` of them (a host name made a name);
/// `fallback` when none is left.
pub fn plain_name_of(text: &str, max: usize, fallback: &str) -> String {
    let name: String = text.chars().filter(|&c| is_plain(c)).take(max).collect();
    if name.is_empty() {
        fallback.into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert!(is_plain_name("web-1.example_b", 63));
        for bad in ["", "a b", "a;rm", "<b>", "é", "a\n"] {
            assert!(!is_plain_name(bad, 63), "{bad:?}");
        }
        assert!(is_plain_name(&"a".repeat(63), 63));
        assert!(!is_plain_name(&"a".repeat(64), 63));
        assert_eq!(plain_name_of("host-1\n", 63, "x"), "host-1");
        assert_eq!(plain_name_of("\n", 63, "x"), "x");
        assert_eq!(plain_name_of(&"b".repeat(70), 64, "x").len(), 64);
    }
}

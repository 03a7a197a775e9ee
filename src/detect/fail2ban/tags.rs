//! fail2ban's regex tags (`<HOST>`, `<F-USER>…</F-USER>`, `<SKIPLINES>`) replaced by the
//! Python regex text fail2ban itself puts in their place, before the result is parsed by
//! [`super::pyre`].
//!
//! Same groups, same names, same order as fail2ban's `Regex._resolveHostTag`, so that a
//! failregex captures exactly what it captures under fail2ban (`ip4`, `ip6`, `dns`, `user`,
//! `mlfid`, ...). One deliberate spelling difference: fail2ban's IPv6 pattern ends in
//! `(?<=:):`, a look-behind that is always true there (every round of the repetition before
//! it ends with a colon); it is written `:`, so that `<HOST>` needs no backtracking engine.
//!
//! `<DNS>` is refused: moat never bans by a name that a log line supplies. `<HOST>` keeps
//! fail2ban's alternative for names (so that a line matches where fail2ban's does), but a
//! name found there is never banned (see `Outcome::id` in [`super::matcher`]).

const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
const IP6: &str = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:)";

fn ip4_group() -> String {
    format!("(?:::f{{4,6}}:)?(?P<ip4>{IP4})")
}
fn ip6_group() -> String {
    format!("(?P<ip6>{IP6})")
}
fn addr() -> String {
    format!(r"\[?(?:{}|{})\]?", ip4_group(), ip6_group())
}
const DNS: &str = r"(?P<dns>[\w\-.^_]*\w)";

/// How `<HOST>` treats names (fail2ban's `usedns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostTag {
    /// Addresses or names (fail2ban's default, `usedns = warn`): a name matches but moat
    /// does not ban it.
    AddressOrName,
    /// Addresses only (`usedns = no`: `<HOST>` is `<ADDR>`).
    AddressOnly,
}

/// Replaces fail2ban's tags in `regex`. Returns the Python regex text.
pub fn resolve(regex: &str, host: HostTag) -> Result<String, String> {
    let mut out = String::with_capacity(regex.len() + 256);
    let mut open: Vec<String> = Vec::new();
    let mut skiplines = 0;
    let mut rest = regex;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let tail = &rest[lt..];
        let Some(len) = tag_len(tail) else {
            out.push('<');
            rest = &tail[1..];
            continue;
        };
        let tag = &tail[..len];
        let name = &tag[1..len - 1];
        rest = &tail[len..];
        let replacement = match name {
            "HOST" => match host {
                HostTag::AddressOrName => format!("(?:{}|{DNS})", addr()),
                HostTag::AddressOnly => addr(),
            },
            "SKIPLINES" => {
                let r = format!(r"\n(?P<skiplines{skiplines}>(?:(?:.*\n)*?))");
                skiplines += 1;
                r
            }
            "IP4" | "F-IP4/" => ip4_group(),
            "IP6" | "F-IP6/" => ip6_group(),
            "ADDR" | "F-ADDR/" => addr(),
            "CIDR" | "F-CIDR/" => r"(?P<cidr>\d+)".to_string(),
            "SUBNET" | "F-SUBNET/" => {
                format!(
                    r"\[?(?:{}|{})(?:/(?P<cidr>\d+))?\]?",
                    ip4_group(),
                    ip6_group()
                )
            }
            "DNS" | "F-DNS/" => {
                return Err(format!(
                    "the tag {tag} is refused: a name in a log line must never choose whom to \
                     ban (moat never resolves names); hint: use <ADDR>"
                ))
            }
            "F-ID/" => r"(?P<fid>\S+)".to_string(),
            "F-PORT/" => r"(?P<fport>\w+)".to_string(),
            _ => match custom(name) {
                Some((true, tn)) => {
                    if let Some(i) = open.iter().position(|o| *o == tn) {
                        open.remove(i);
                        ")".to_string()
                    } else {
                        // A closing tag never opened stays as text, as in fail2ban.
                        tag.to_string()
                    }
                }
                Some((false, tn)) => {
                    let group = group_name(&tn);
                    open.push(tn);
                    format!("(?P<{group}>")
                }
                None => tag.to_string(),
            },
        };
        out.push_str(&replacement);
    }
    out.push_str(rest);
    Ok(local_flags(&out))
}

/// The length of a tag at the start of `s`: fail2ban's `</?[\w\-]+/?>`.
fn tag_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices().skip(1).peekable();
    if chars.peek().is_some_and(|(_, c)| *c == '/') {
        chars.next();
    }
    let mut word = false;
    while let Some(&(_, c)) = chars.peek() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            word = true;
            chars.next();
        } else {
            break;
        }
    }
    if !word {
        return None;
    }
    if chars.peek().is_some_and(|(_, c)| *c == '/') {
        chars.next();
    }
    match chars.next() {
        Some((i, '>')) => Some(i + 1),
        _ => None,
    }
}

/// `F-NAME` or `/F-NAME` (upper case, digits, `_`, `-`): (closing, NAME).
fn custom(name: &str) -> Option<(bool, String)> {
    let (closing, rest) = match name.strip_prefix('/') {
        Some(r) => (true, r),
        None => (false, name),
    };
    let tn = rest.strip_prefix("F-")?;
    let ok = !tn.is_empty()
        && tn
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
    ok.then(|| (closing, tn.to_string()))
}

/// fail2ban's group name for a custom tag: lower case, `ID` as `fid`, `PORT` as `fport`.
fn group_name(tag: &str) -> String {
    match tag.to_lowercase().as_str() {
        "id" => "fid".into(),
        "port" => "fport".into(),
        other => other.to_string(),
    }
}

/// fail2ban turns a group that only sets flags, `((?i)...)` or `(?:(?i)...)`, into the local
/// form `(?i:...)`, which Python accepts anywhere.
fn local_flags(regex: &str) -> String {
    let b = regex.as_bytes();
    let mut out = String::with_capacity(regex.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'(' && (i == 0 || b[i - 1] != b'\\') {
            let mut j = i + 1;
            if regex[j..].starts_with("?:") {
                j += 2;
            }
            if regex[j..].starts_with("(?") {
                let k = j + 2;
                let letters = regex[k..]
                    .bytes()
                    .take_while(u8::is_ascii_lowercase)
                    .count();
                if letters > 0 && b.get(k + letters) == Some(&b')') {
                    out.push_str(&regex[j..k + letters]);
                    out.push(':');
                    i = k + letters + 1;
                    continue;
                }
            }
        }
        let c = regex[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The groups that identify a failure: a failregex (or its prefregex) must have one.
pub const ID_GROUPS: &[&str] = &["fid", "ip4", "ip6", "dns", "mlfid"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_fail2ban_groups() {
        let r = resolve(
            "^<F-USER>\\S+</F-USER> from <HOST> <F-ID/> </F-NOPE> <F-MLFID>x</F-MLFID>",
            HostTag::AddressOrName,
        )
        .unwrap();
        assert!(
            r.starts_with("^(?P<user>\\S+) from (?:\\[?(?:(?:::f{4,6}:)?(?P<ip4>"),
            "{r}"
        );
        assert!(r.contains("(?P<dns>"));
        assert!(r.contains("(?P<fid>\\S+) </F-NOPE> (?P<mlfid>x)"), "{r}");
        let r = resolve("<HOST>", HostTag::AddressOnly).unwrap();
        assert!(!r.contains("dns"));
        assert!(resolve("<DNS>", HostTag::AddressOrName)
            .unwrap_err()
            .contains("never"));
        let r = resolve("a<SKIPLINES>b<SKIPLINES>", HostTag::AddressOnly).unwrap();
        assert!(r.contains("skiplines0") && r.contains("skiplines1"));
        assert_eq!(
            resolve("<lit> <F-x>", HostTag::AddressOnly).unwrap(),
            "<lit> <F-x>"
        );
    }

    #[test]
    fn global_flag_groups_become_local() {
        assert_eq!(local_flags("a((?i)b)c"), "a(?i:b)c");
        assert_eq!(local_flags("a(?:(?i)b)c"), "a(?i:b)c");
        assert_eq!(local_flags(r"a\((?i)b)"), r"a\((?i)b)");
    }

    #[test]
    fn the_ipv6_spelling_matches_what_fail2ban_matches() {
        let py = super::super::pyre::parse(&ip6_group(), false).unwrap();
        let rust = super::super::pyre::emit(&py, super::super::pyre::Mode::Exact).unwrap();
        let r = regex::Regex::new(&format!("^{}$", rust.regex)).unwrap();
        for ok in [
            "2001:db8::1",
            "::1",
            "2001:db8::",
            "fe80::1:2:3:4",
            ":::",
            "1:2",
        ] {
            assert!(r.is_match(ok), "{ok}");
        }
        for bad in ["2001", ":", "::", "12345::"] {
            assert!(!r.is_match(bad), "{bad}");
        }
    }
}

//! What a filter makes of a line: a [`Verdict`], and for a failure the client and the time.
//!
//! The client is the address at the position the filter names, parsed and nothing else; a
//! header naming it is believed only from a trusted proxy ([`real_client`]).

use std::net::IpAddr;

use jiff::Timestamp;

use super::time::FoundFormat;
use super::Proxies;

/// What a filter made of a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No failregex matched (or the prefregex did not).
    Miss,
    /// A failregex matched but an ignoreregex vetoed it.
    Ignored,
    /// A failregex matched but the text at `<HOST>` is not an address.
    BadHost,
    /// A failregex matched but no time could be read.
    NoTime { host: IpAddr },
    /// The line is too long for a backtracking (look-around) pattern that had to decide, so
    /// it is not a failure (see [`super::pattern::FANCY_UNANCHORED_MAX`]).
    TooLong,
    /// A failure: the client at the filter's host position, and when.
    Failure(Failure),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Miss => f.write_str("no match"),
            Verdict::Ignored => f.write_str("matched, but an ignoreregex vetoes it"),
            Verdict::BadHost => f.write_str("matched, but the text at <HOST> is not an address"),
            Verdict::NoTime { host } => write!(f, "matched client {host}, but no readable time"),
            Verdict::TooLong => {
                f.write_str("too long for a look-around pattern of this filter: not matched")
            }
            Verdict::Failure(x) => write!(
                f,
                "failure: client {} at {} (rule #{})",
                x.host,
                x.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                x.rule + 1
            ),
        }
    }
}

/// A failure found in a line, before any jail looks at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub host: IpAddr,
    pub time: Timestamp,
    /// Which failregex matched (0 for JSON filters).
    pub rule: usize,
    pub format: FoundFormat,
}

/// Parses the text at the host position: an address and nothing else, except that a port
/// (`198.51.100.7:51234`, `[2001:db8::1]:443`) or sentence punctuation after it (`from
/// 198.51.100.7.`) is not part of it. Never a prefix search: `198.51.100.71` is not
/// `198.51.100.7`. IPv4-mapped IPv6 is folded to IPv4 so one client has one key.
/// The client of a line with a client address (`host`) and, maybe, the TCP peer that sent
/// it (`peer`): a header such as CF-Connecting-IP is believed only when the peer is one of
/// Cloudflare's proxies, since anyone else can write any address into it. `None` when the
/// client cannot be known (a Cloudflare peer without a usable header is never the client).
pub fn real_client(host: Option<&[u8]>, peer: Option<&[u8]>, proxies: &Proxies) -> Option<IpAddr> {
    let Some(peer) = peer else {
        return host.and_then(parse_host);
    };
    let peer = parse_host(peer)?;
    if proxies.contains(peer) {
        host.and_then(parse_host)
    } else {
        Some(peer)
    }
}

pub fn parse_host(text: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(text).ok()?;
    let ip = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s)
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|sa| sa.ip()))
        .or_else(|| s.trim_end_matches(['.', ':']).parse::<IpAddr>().ok())?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_text_is_an_address_and_nothing_else() {
        let p = |s: &str| parse_host(s.as_bytes()).map(|a| a.to_string());
        assert_eq!(p("198.51.100.7"), Some("198.51.100.7".into()));
        assert_eq!(p("198.51.100.7:51234"), Some("198.51.100.7".into()));
        assert_eq!(p("198.51.100.7."), Some("198.51.100.7".into()));
        assert_eq!(p("[2001:db8::1]:443"), Some("2001:db8::1".into()));
        assert_eq!(p("2001:db8::"), Some("2001:db8::".into()));
        assert_eq!(p("::ffff:198.51.100.7"), Some("198.51.100.7".into()));
        assert_eq!(p("198.51.100.7.1"), None);
        assert_eq!(p("198.51.100"), None);
        assert_eq!(p("dead"), None);
        assert_eq!(p("999.1.1.1"), None);
    }
}

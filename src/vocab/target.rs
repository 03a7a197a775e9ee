//! Targets: the addresses and networks moat bans, parsed before anything else sees them.
//!
//! A target is an [`IpNet`]: a single address is a /32 or /128. Text from a command line, a
//! configuration or shared state becomes one only through [`parse_target`], which refuses
//! host names (moat resolves none), host bits set and anything else that is not an address.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Shows a target as people write it: a single address bare, a network as a CIDR.
#[derive(Clone, Copy, Debug)]
pub struct Target(pub IpNet);

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n.prefix_len() == n.max_prefix_len() {
            write!(f, "{}", n.addr())
        } else {
            write!(f, "{n}")
        }
    }
}

/// Parses `192.0.2.7`, `198.51.100.0/24` or `2001:db8::/64`: an address (IPv4-mapped IPv6
/// folded to IPv4) or a network whose host bits are zero.
pub fn parse_target(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; hint: did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    Err(format!(
        "{s:?} is not an address or a CIDR network; hint: write e.g. \"192.0.2.7\", \
         \"198.51.100.0/24\" or \"2001:db8::/32\" (host names are not resolved)"
    ))
}

/// An address or network as written in a configuration (`ignore`, `allow`):
/// `192.0.2.1`, `198.51.100.0/24`, `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net(pub IpNet);

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_target(&s).map(Net).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_target("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert!(parse_target("198.51.100.1/24")
            .unwrap_err()
            .contains("198.51.100.0/24"));
        assert!(parse_target("x; rm -rf /").is_err());
        assert_eq!(
            Target(parse_target("2001:db8::/64").unwrap()).to_string(),
            "2001:db8::/64"
        );
        assert_eq!(
            Target(parse_target("2001:db8::1").unwrap()).to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn nets() {
        assert_eq!(
            parse_target("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert!(parse_target("198.51.100.1/24")
            .unwrap_err()
            .contains("198.51.100.0/24"));
        assert!(parse_target("example.com").is_err());
        assert!(parse_target("192.0.2.0/33").is_err());
    }
}

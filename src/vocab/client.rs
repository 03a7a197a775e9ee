//! A client as jails count it and enforcers ban it: a key derived from an address.
//!
//! IPv4-mapped IPv6 (`::ffff:198.51.100.7`) is the IPv4 client. An IPv6 client is its prefix
//! (default /64): one host gets a whole /64 from its provider and can rotate through it, so
//! counting /128s would let it guess forever.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv6Net};

/// A counted and banned client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// An IPv6 network, its host bits zero.
    V6(Ipv6Net),
}

impl ClientKey {
    /// The key for `addr` with IPv6 aggregated to `/ipv6_prefix` (1..=128).
    pub fn new(addr: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match addr.to_canonical() {
            IpAddr::V4(a) => ClientKey::V4(a),
            IpAddr::V6(a) => {
                let net = Ipv6Net::new(a, ipv6_prefix.clamp(1, 128))
                    .expect("prefix clamped to 1..=128")
                    .trunc();
                ClientKey::V6(net)
            }
        }
    }
}

impl fmt::Display for ClientKey {
    /// `198.51.100.7`, `2001:db8:1:2::/64`; a /128 prints as the bare address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{a}"),
            ClientKey::V6(n) if n.prefix_len() == 128 => write!(f, "{}", n.addr()),
            ClientKey::V6(n) => write!(f, "{n}"),
        }
    }
}

impl ClientKey {
    /// The network the key stands for (a single IPv4 address is a /32).
    pub fn net(self) -> IpNet {
        match self {
            ClientKey::V4(a) => IpNet::from(IpAddr::V4(a)),
            ClientKey::V6(n) => IpNet::V6(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v6(s: &str, prefix: u8) -> ClientKey {
        ClientKey::new(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()), prefix)
    }

    #[test]
    fn keys() {
        let k = ClientKey::new("::ffff:198.51.100.7".parse().unwrap(), 64);
        assert_eq!(k.to_string(), "198.51.100.7");
        let a = v6("2001:db8:1:2::77", 64);
        let b = v6("2001:db8:1:2:ffff::1", 64);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(v6("2001:db8::1", 128).to_string(), "2001:db8::1");
        assert_ne!(v6("2001:db8:1:3::1", 64), a);
    }
}

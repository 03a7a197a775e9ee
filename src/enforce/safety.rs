//! Targets no enforcer may ban, whatever a log or an admin says: the host's own addresses,
//! loopback, link-local, unspecified, multicast and reserved (240.0.0.0/4, where Cloudflare's
//! pseudo-IPv4 addresses live) ranges, Cloudflare's proxies, and networks wider than /16 (IPv4)
//! or /32 (IPv6) unless forced. Locking the host out of its own network, or banning half the
//! internet because of one typo, is worse than missing a ban; a refused ban is logged with its
//! reason, and a refused `moat ban` says why.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::detect::Proxies;

/// The widest IPv4 networks banned without `--force`.
pub const WIDEST_V4: u8 = 16;
/// The same for IPv6 networks.
pub const WIDEST_V6: u8 = 32;

const NEVER: &[(&str, &str)] = &[
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("fe80::/10", "link-local"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    (
        "240.0.0.0/4",
        "reserved (Class E, Cloudflare's pseudo-IPv4)",
    ),
];

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// What must never be banned here: the fixed ranges, the host's own addresses, and the
/// trusted proxies' ranges as last known.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    /// The host's own addresses (see [`own_addresses`]).
    pub own: Vec<IpAddr>,
    /// The trusted proxies' ranges as last known: a target inside one is never banned.
    pub proxies: Proxies,
}

impl Protected {
    /// This host's addresses now, and the built-in proxy ranges.
    pub fn here() -> Protected {
        Protected {
            own: own_addresses(),
            proxies: Proxies::default(),
        }
    }

    /// Why `target` must not be banned, if it must not (`force`: wider than the limits).
    pub fn refuse(&self, target: &IpNet, force: bool) -> Option<String> {
        refuse(target, &self.own, &self.proxies, force)
    }
}

/// Why `target` must not be banned, if it must not.
pub fn refuse(target: &IpNet, own: &[IpAddr], proxies: &Proxies, force: bool) -> Option<String> {
    for (net, what) in NEVER {
        let net: IpNet = net.parse().expect("valid constant");
        if overlap(target, &net) {
            return Some(format!("{target} is or covers {what} addresses ({net})"));
        }
    }
    for net in proxies.ranges() {
        if overlap(target, net) {
            return Some(format!(
                "{target} is or covers Cloudflare's proxy addresses ({net}): the log shows \
                 Cloudflare instead of the client; restore the client's address (nginx: \
                 set_real_ip_from for Cloudflare's ranges, real_ip_header CF-Connecting-IP)"
            ));
        }
    }
    if let Some(a) = own.iter().find(|a| target.contains(*a)) {
        return Some(format!("{target} covers this host's own address {a}"));
    }
    let too_wide = match target {
        IpNet::V4(n) => n.prefix_len() < WIDEST_V4,
        IpNet::V6(n) => n.prefix_len() < WIDEST_V6,
    };
    if too_wide && !force {
        return Some(format!(
            "{target} is wider than /{WIDEST_V4} (IPv4) or /{WIDEST_V6} (IPv6); use --force to ban it anyway"
        ));
    }
    None
}

/// The host's addresses, on every interface.
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|ifa| {
            let a = ifa.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn refusals() {
        let own: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        assert!(refuse(&n("127.0.0.1/32"), &own, &Proxies::default(), true)
            .unwrap()
            .contains("loopback"));
        assert!(refuse(&n("fe80::1/128"), &own, &Proxies::default(), true)
            .unwrap()
            .contains("link-local"));
        assert!(refuse(&n("192.0.2.1/32"), &own, &Proxies::default(), true)
            .unwrap()
            .contains("own address"));
        assert!(refuse(&n("192.0.2.0/24"), &own, &Proxies::default(), true)
            .unwrap()
            .contains("own address"));
        assert!(refuse(&n("10.0.0.0/8"), &own, &Proxies::default(), false)
            .unwrap()
            .contains("wider"));
        assert!(refuse(&n("10.0.0.0/8"), &own, &Proxies::default(), true).is_none());
        assert!(refuse(&n("0.0.0.0/0"), &own, &Proxies::default(), true).is_some());
        assert!(refuse(&n("2001:db8::/16"), &own, &Proxies::default(), false).is_some());
        assert!(refuse(&n("203.0.113.5/32"), &own, &Proxies::default(), false).is_none());
        assert!(refuse(&n("2001:db8:1:2::/64"), &own, &Proxies::default(), false).is_none());
        // Cloudflare's proxies and the reserved range its pseudo-IPv4 addresses come from
        // (pure checks: no traffic goes anywhere).
        assert!(
            refuse(&n("162.158.1.2/32"), &own, &Proxies::default(), true)
                .unwrap()
                .contains("Cloudflare's proxy")
        );
        assert!(
            refuse(&n("2606:4700:1::/64"), &own, &Proxies::default(), true)
                .unwrap()
                .contains("real_ip_header")
        );
        assert!(refuse(&n("240.16.0.1/32"), &own, &Proxies::default(), true)
            .unwrap()
            .contains("Class E"));
    }

    #[test]
    fn this_host_has_addresses() {
        assert!(own_addresses().iter().any(|a| a.is_loopback()));
    }
}

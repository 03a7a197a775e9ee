//! The proxies whose word on the client is believed: a header such as CF-Connecting-IP names
//! the client only when the TCP peer that sent it is one of these. Anyone else can write any
//! address into that header.
//!
//! Today that is Cloudflare: its ranges built in (as published at
//! <https://www.cloudflare.com/ips/>, 2026), and those it publishes since, which the daemon
//! fetches and hands over (they only ever add). The same ranges are never banned (see
//! `enforce::safety`): behind Cloudflare every request arrives from one of them.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;

/// Cloudflare's proxy ranges built into this build.
pub const CLOUDFLARE: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// A set of trusted proxy ranges, cheap to clone and to hand to every filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxies(Arc<Vec<IpNet>>);

impl Default for Proxies {
    /// Cloudflare's built-in ranges.
    fn default() -> Proxies {
        static BUILT_IN: OnceLock<Proxies> = OnceLock::new();
        BUILT_IN
            .get_or_init(|| {
                Proxies(Arc::new(
                    CLOUDFLARE
                        .iter()
                        .map(|n| n.parse().expect("valid constant"))
                        .collect(),
                ))
            })
            .clone()
    }
}

impl Proxies {
    /// The built-in ranges and `published` (duplicates once).
    pub fn with_published(published: impl IntoIterator<Item = IpNet>) -> Proxies {
        let mut all: Vec<IpNet> = Proxies::default().0.to_vec();
        for n in published {
            if !all.contains(&n) {
                all.push(n);
            }
        }
        Proxies(Arc::new(all))
    }

    /// Whether `ip` is one of these proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The ranges.
    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }
}

//! The addresses and networks a jail never counts (`ignore`: the office, the monitor).

use std::net::IpAddr;

use ipnet::IpNet;

/// Addresses and networks a jail never counts.
#[derive(Clone, Debug, Default)]
pub struct IgnoreList {
    nets: Vec<IpNet>,
}

impl IgnoreList {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> IgnoreList {
        IgnoreList {
            nets: nets.into_iter().map(|n| n.trunc()).collect(),
        }
    }

    /// The ignored network that overlaps `net`, if any.
    pub fn overlapping(&self, net: &IpNet) -> Option<IpNet> {
        self.nets
            .iter()
            .find(|n| n.contains(net) || net.contains(*n))
            .copied()
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        self.nets.iter().any(|n| n.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_list_sees_mapped_addresses() {
        let ig = IgnoreList::new([
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]);
        assert!(ig.contains("::ffff:198.51.100.9".parse().unwrap()));
        assert!(ig.contains("2001:db8:5::1".parse().unwrap()));
        assert!(!ig.contains("203.0.113.1".parse().unwrap()));
    }
}

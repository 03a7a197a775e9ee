//! The port policy as declared in `[ports]`, resolved into openings: which ports are open on
//! the public interfaces, to whom. Everything else new from outside is dropped.
//!
//! ```toml
//! [ports]
//! interfaces = ["eth0", "ens*"]          # the public interfaces (a trailing * matches a prefix)
//! open = ["80/tcp", "443/tcp", "443/udp"] # open to everyone
//! allow = [{ ports = ["22/tcp"], from = ["203.0.113.0/24", "2001:db8:1::/48"] }]
//! swarm_peers = ["198.51.100.2", "198.51.100.3"]  # Swarm's cluster ports, from these only
//! ping = true                             # answer echo requests (the default)
//! ```
//!
//! Ports are those a client connects to on the host, before Docker's DNAT: `-p 8080:80` is
//! port 8080 here.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::vocab::ports::PortsValue;
use crate::vocab::Net;

/// Swarm's node-to-node ports: cluster management, gossip, the overlay's VXLAN.
pub const SWARM_TCP: &[(u16, u16)] = &[(2377, 2377), (7946, 7946)];
pub const SWARM_UDP: &[(u16, u16)] = &[(4789, 4789), (7946, 7946)];

/// `[ports]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortsTable {
    pub interfaces: Option<Vec<String>>,
    pub open: Option<PortsValue>,
    pub allow: Option<Vec<AllowTable>>,
    pub swarm_peers: Option<Vec<Net>>,
    pub ping: Option<bool>,
    pub backend: Option<Backend>,
}

/// One `allow` entry: ports open only from some sources.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowTable {
    pub ports: PortsValue,
    pub from: Vec<Net>,
}

/// Where the policy lives in the kernel.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables when `nft` works, else iptables.
    #[default]
    Auto,
    /// A table `inet moat_ports` with a chain on prerouting at priority −150.
    Nftables,
    /// Chains in `mangle` PREROUTING, for iptables and ip6tables.
    Iptables,
    /// Chains in `filter` jumped to from DOCKER-USER and INPUT, matching the port with
    /// `--ctorigdstport` (for admins whose other tools expect DOCKER-USER).
    #[serde(rename = "docker-user")]
    DockerUser,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
            Backend::DockerUser => "docker-user",
        }
    }
}

/// Why an opening exists, for listings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Why {
    Open,
    Allow,
    Swarm,
}

/// Ports open on the public interfaces, to everyone (`from` empty) or to some sources.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Opening {
    pub why: Why,
    pub tcp: Vec<(u16, u16)>,
    pub udp: Vec<(u16, u16)>,
    /// IPsec ESP (Swarm's encrypted overlays).
    #[serde(default)]
    pub esp: bool,
    pub from: Vec<IpNet>,
}

/// A resolved policy: what the kernel is told, and what `moat ports status` judges by.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortPolicy {
    pub interfaces: Vec<String>,
    pub openings: Vec<Opening>,
    pub ping: bool,
}

/// How a port is reachable from outside under a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// From everyone.
    Open,
    /// Only from these sources.
    From(Vec<IpNet>),
    Blocked,
}

fn contains(ranges: &[(u16, u16)], port: u16) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
}

/// Whether `name` is an interface name or a prefix pattern (`eth*`) that nft and iptables
/// both understand.
fn check_interface(name: &str) -> Result<(), String> {
    let stem = name.strip_suffix('*').unwrap_or(name);
    let ok = !stem.is_empty()
        && name.len() <= 15
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "[ports] interfaces: {name:?} is not an interface name; hint: a name such as \
             \"eth0\", or a prefix followed by * such as \"ens*\" (at most 15 characters)"
        ))
    }
}

impl PortsTable {
    /// The policy it declares, or what is wrong with it.
    pub fn resolve(&self) -> Result<PortPolicy, String> {
        let interfaces = self.interfaces.clone().unwrap_or_default();
        if interfaces.is_empty() {
            return Err(
                "[ports] needs `interfaces`, the public interfaces the policy guards; \
                 hint: interfaces = [\"eth0\"] (see `ip -br link`)"
                    .into(),
            );
        }
        for i in &interfaces {
            check_interface(i)?;
        }
        let mut openings = Vec::new();
        if let Some(open) = &self.open {
            openings.push(Opening {
                why: Why::Open,
                tcp: open.0.tcp().to_vec(),
                udp: open.0.udp().to_vec(),
                esp: false,
                from: Vec::new(),
            });
        }
        for a in self.allow.iter().flatten() {
            if a.from.is_empty() {
                return Err(format!(
                    "[ports] allow: ports {} with an empty `from` would open to nobody; hint: \
                     list sources, or put the ports in `open`",
                    a.ports.0
                ));
            }
            openings.push(Opening {
                why: Why::Allow,
                tcp: a.ports.0.tcp().to_vec(),
                udp: a.ports.0.udp().to_vec(),
                esp: false,
                from: a.from.iter().map(|n| n.0).collect(),
            });
        }
        if let Some(peers) = &self.swarm_peers {
            if peers.is_empty() {
                return Err("[ports] swarm_peers is empty; hint: list the other nodes' \
                            addresses, or leave the key out on a host outside a Swarm"
                    .into());
            }
            openings.push(Opening {
                why: Why::Swarm,
                tcp: SWARM_TCP.to_vec(),
                udp: SWARM_UDP.to_vec(),
                esp: true,
                from: peers.iter().map(|n| n.0).collect(),
            });
        }
        Ok(PortPolicy {
            interfaces,
            openings,
            ping: self.ping.unwrap_or(true),
        })
    }
}

impl PortPolicy {
    /// How `port`/`proto` ("tcp" or "udp") is reachable from outside.
    pub fn reach(&self, port: u16, proto: &str) -> Reach {
        let mut from = Vec::new();
        for o in &self.openings {
            let ranges = if proto == "udp" { &o.udp } else { &o.tcp };
            if contains(ranges, port) {
                if o.from.is_empty() {
                    return Reach::Open;
                }
                from.extend(o.from.iter().copied());
            }
        }
        if from.is_empty() {
            Reach::Blocked
        } else {
            Reach::From(from)
        }
    }

    /// Whether a new TCP connection from `client` to `port` would pass.
    pub fn admits(&self, client: IpAddr, port: u16) -> bool {
        match self.reach(port, "tcp") {
            Reach::Open => true,
            Reach::From(nets) => nets.iter().any(|n| n.contains(&client)),
            Reach::Blocked => false,
        }
    }

    /// Whether interface `name` is one the policy guards.
    pub fn guards(&self, name: &str) -> bool {
        self.interfaces.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        })
    }
}

/// The SSH connection a command runs in, from `SSH_CONNECTION` ("client port server port").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SshConnection {
    pub client: IpAddr,
    pub server: IpAddr,
    pub port: u16,
}

impl SshConnection {
    pub fn parse(text: &str) -> Option<SshConnection> {
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 4 {
            return None;
        }
        Some(SshConnection {
            client: f[0].parse().ok()?,
            server: f[2].parse().ok()?,
            port: f[3].parse().ok()?,
        })
    }

    pub fn from_env() -> Option<SshConnection> {
        SshConnection::parse(&std::env::var("SSH_CONNECTION").ok()?)
    }
}

/// Why `policy` would cut the admin off: a new SSH connection like the one this command runs
/// in would be dropped. `interface` is the interface holding the server address (`None`
/// when unknown: then it is taken to be public).
pub fn lockout(
    policy: &PortPolicy,
    ssh: &SshConnection,
    interface: Option<&str>,
) -> Option<String> {
    if interface.is_some_and(|i| !policy.guards(i)) || ssh.client.is_loopback() {
        return None;
    }
    if policy.admits(ssh.client, ssh.port) {
        return None;
    }
    Some(format!(
        "this policy drops new connections from {} to port {}/tcp, the SSH connection this \
         command runs in: the next login would fail. Add {{ ports = [\"{}/tcp\"], from = \
         [\"{}\"] }} to `allow`, or pass --force (with --confirm-within, so that it rolls \
         back unless confirmed)",
        ssh.client,
        ssh.port,
        ssh.port,
        IpNet::from(ssh.client).trunc()
    ))
}

/// The interface holding `addr` on this host, if any.
pub fn interface_of(addr: IpAddr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if ip == addr {
            return Some(a.interface_name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> PortsTable {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn openings_and_reach() {
        let p = table(
            "interfaces = [\"eth0\", \"ens*\"]\nopen = [\"80/tcp\", \"443\"]\n\
             allow = [{ ports = [\"22/tcp\"], from = [\"203.0.113.0/24\"] }]\n\
             swarm_peers = [\"198.51.100.2\"]\n",
        )
        .resolve()
        .unwrap();
        assert_eq!(p.reach(80, "tcp"), Reach::Open);
        assert_eq!(p.reach(80, "udp"), Reach::Blocked);
        assert_eq!(p.reach(443, "udp"), Reach::Open);
        assert_eq!(
            p.reach(22, "tcp"),
            Reach::From(vec!["203.0.113.0/24".parse().unwrap()])
        );
        assert_eq!(
            p.reach(4789, "udp"),
            Reach::From(vec!["198.51.100.2/32".parse().unwrap()])
        );
        assert_eq!(p.reach(8080, "tcp"), Reach::Blocked);
        assert!(p.guards("eth0") && p.guards("ens3") && !p.guards("eth1") && !p.guards("docker0"));
        assert!(p.ping);
    }

    #[test]
    fn mistakes_are_explained() {
        let e = table("open = [80]").resolve().unwrap_err();
        assert!(e.contains("needs `interfaces`"), "{e}");
        let e = table("interfaces = [\"eth 0\"]").resolve().unwrap_err();
        assert!(e.contains("not an interface name"), "{e}");
        let e = table("interfaces = [\"e*th\"]").resolve().unwrap_err();
        assert!(e.contains("not an interface name"), "{e}");
        let e = table("interfaces = [\"eth0\"]\nallow = [{ ports = [22], from = [] }]")
            .resolve()
            .unwrap_err();
        assert!(e.contains("open to nobody"), "{e}");
        assert!(toml::from_str::<PortsTable>("interface = [\"eth0\"]").is_err());
    }

    #[test]
    fn a_policy_that_cuts_the_ssh_session_is_named() {
        let p = table(
            "interfaces = [\"eth0\"]\nopen = [\"443/tcp\"]\n\
             allow = [{ ports = [\"22/tcp\"], from = [\"203.0.113.0/24\"] }]",
        )
        .resolve()
        .unwrap();
        let ssh = SshConnection::parse("203.0.113.9 50022 192.0.2.1 22").unwrap();
        assert_eq!(lockout(&p, &ssh, Some("eth0")), None);
        let away = SshConnection::parse("198.51.100.9 50022 192.0.2.1 22").unwrap();
        let why = lockout(&p, &away, Some("eth0")).unwrap();
        assert!(
            why.contains("198.51.100.9") && why.contains("22/tcp"),
            "{why}"
        );
        // Through an interface the policy does not guard (a VPN, a private network): fine.
        assert_eq!(lockout(&p, &away, Some("wg0")), None);
        // Unknown interface: taken as public.
        assert!(lockout(&p, &away, None).is_some());
        assert_eq!(SshConnection::parse("garbage"), None);
    }
}

//! Compiles a [`PortPolicy`] into kernel rules: one nftables table, or iptables and ip6tables
//! chains. Pure: no I/O.
//!
//! ```text
//! table inet moat_ports {
//!     chain prerouting {
//!         type filter hook prerouting priority -150; policy accept;
//!         iifname "eth0" jump inbound comment "public interface eth0"
//!     }
//!     chain inbound {
//!         ct state established,related accept comment "replies and related traffic pass"
//!         icmp type { ... } accept  comment "essential ICMP passes"
//!         icmpv6 type { ... } accept comment "essential ICMPv6 passes"
//!         udp sport 67 udp dport 68 accept ...                  # DHCP replies
//!         tcp dport { 80, 443 } accept comment "open tcp 80,443"
//!         ip saddr { 203.0.113.0/24 } tcp dport { 22 } accept comment "open tcp 22 to ..."
//!         counter drop comment "drop other new connections"
//!     }
//! }
//! ```
//!
//! Priority −150 is after conntrack (−200), so `ct state` is known and replies to connections
//! the host or its containers opened pass; and before Docker's DNAT (−100), so the port is the
//! one the client asked for: a published `-p 8080:80` is 8080 here, for bridge networks and
//! Swarm's ingress alike. One table covers IPv4 and IPv6.
//!
//! The iptables equivalent lives in `mangle` PREROUTING (the same priority): chain
//! `MOAT-PORTS` dispatching the public interfaces to `MOAT-PORTS-IN`, where allowed traffic
//! RETURNs and the rest is dropped; one copy for iptables, one for ip6tables.
//!
//! Every rule carries a comment that says what it does in words; `moat ports plan` compares
//! those with what the kernel holds.

use std::fmt::Write;

use ipnet::IpNet;

use super::policy::{Opening, PortPolicy, Why};
use crate::netfilter::iptables::multiport_lists;
use crate::vocab::ports::{fnv1a, ranges_text};

/// The nftables table the policy lives in: its own, apart from the bans' `inet moat`, so
/// that applying or rolling back the policy never touches the bans and the reverse.
pub const TABLE: &str = "moat_ports";
/// The iptables chains (in `mangle`).
pub const CHAIN: &str = "MOAT-PORTS";
pub const CHAIN_IN: &str = "MOAT-PORTS-IN";

/// One rule in words, and what it is in each backend (nft rules, iptables and ip6tables
/// rule lines without the leading `-A CHAIN`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub comment: String,
    pub nft: Vec<String>,
    pub ipt4: Vec<String>,
    pub ipt6: Vec<String>,
}

/// The compiled policy: rules in the dispatch chain, then in the inbound chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub dispatch: Vec<Rule>,
    pub inbound: Vec<Rule>,
}

/// Which copy of the rules: nftables' single `inet` table, or one iptables family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inet,
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn label(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// A comment short enough for nft (128 bytes): long ones end in a hash of the whole text, so
/// that two different rules never share one.
fn comment(text: String) -> String {
    if text.len() <= 120 {
        return text;
    }
    let mut cut = 100;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… #{:08x}", &text[..cut], fnv1a(text.as_bytes()))
}

fn ipt_comment(c: &str) -> String {
    format!("-m comment --comment \"{c}\"")
}

fn nets_text(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn ports_words(o: &Opening) -> String {
    let mut parts = Vec::new();
    if !o.tcp.is_empty() {
        parts.push(format!("tcp {}", ranges_text(&o.tcp, ",", "-")));
    }
    if !o.udp.is_empty() {
        parts.push(format!("udp {}", ranges_text(&o.udp, ",", "-")));
    }
    if o.esp {
        parts.push("esp".into());
    }
    parts.join(" ")
}

/// How iptables rules match the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// `-m multiport --dports`: the port as the packet carries it (before DNAT in mangle
    /// PREROUTING, and on INPUT).
    Multiport,
    /// `-m conntrack --ctorigdstport`: the port the client asked for, even after DNAT (in
    /// DOCKER-USER, where `--dport` is the container's port); one range per rule.
    CtOrig,
}

fn opening_rule(o: &Opening, style: PortMatch) -> Rule {
    let what = ports_words(o);
    let text = match (o.why, o.from.is_empty()) {
        (Why::Swarm, _) => format!("swarm {what} to {}", nets_text(&o.from)),
        (_, true) => format!("open {what}"),
        (_, false) => format!("open {what} to {}", nets_text(&o.from)),
    };
    let c = comment(text);
    let mut rule = Rule {
        comment: c.clone(),
        ..Rule::default()
    };
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = o.from.iter().partition(|n| n.addr().is_ipv4());
    // (nft source match, iptables sources for v4, for v6); everyone when `from` is empty.
    let groups: Vec<(String, Vec<String>, Vec<String>)> = if o.from.is_empty() {
        vec![(String::new(), vec![String::new()], vec![String::new()])]
    } else {
        let mut g = Vec::new();
        if !v4.is_empty() {
            g.push((
                format!("ip saddr {{ {} }} ", nets_text(&v4)),
                v4.iter().map(|n| format!("-s {n} ")).collect(),
                Vec::new(),
            ));
        }
        if !v6.is_empty() {
            g.push((
                format!("ip6 saddr {{ {} }} ", nets_text(&v6)),
                Vec::new(),
                v6.iter().map(|n| format!("-s {n} ")).collect(),
            ));
        }
        g
    };
    for (nft_from, ipt4_from, ipt6_from) in &groups {
        for (proto, ranges) in [("tcp", &o.tcp), ("udp", &o.udp)] {
            if ranges.is_empty() {
                continue;
            }
            rule.nft.push(format!(
                "{nft_from}{proto} dport {{ {} }} accept comment \"{c}\"",
                ranges_text(ranges, ", ", "-")
            ));
            let matches: Vec<String> = match style {
                PortMatch::Multiport => multiport_lists(ranges)
                    .into_iter()
                    .map(|list| format!("-m multiport --dports {list}"))
                    .collect(),
                PortMatch::CtOrig => ranges
                    .iter()
                    .map(|&(lo, hi)| {
                        let r = if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}:{hi}")
                        };
                        format!("-m conntrack --ctorigdstport {r}")
                    })
                    .collect(),
            };
            for m in matches {
                let line =
                    |from: &str| format!("{from}-p {proto} {m} {} -j RETURN", ipt_comment(&c));
                rule.ipt4.extend(ipt4_from.iter().map(|f| line(f)));
                rule.ipt6.extend(ipt6_from.iter().map(|f| line(f)));
            }
        }
        if o.esp {
            rule.nft
                .push(format!("{nft_from}meta l4proto esp accept comment \"{c}\""));
            let line = |from: &str| format!("{from}-p esp {} -j RETURN", ipt_comment(&c));
            rule.ipt4.extend(ipt4_from.iter().map(|f| line(f)));
            rule.ipt6.extend(ipt6_from.iter().map(|f| line(f)));
        }
    }
    rule
}

/// An iptables rule: `matches`, the comment, then `-j target`.
fn ipt(matches: &str, c: &str, target: &str) -> String {
    if matches.is_empty() {
        format!("{} -j {target}", ipt_comment(c))
    } else {
        format!("{matches} {} -j {target}", ipt_comment(c))
    }
}

/// The ICMPv4 types that must pass: errors (path MTU discovery needs "fragmentation needed",
/// a destination-unreachable) and, with `ping`, echo requests.
const ICMP4: &[(&str, u8)] = &[
    ("destination-unreachable", 3),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
];
/// The ICMPv6 types that must pass: errors including packet-too-big (IPv6 routers never
/// fragment), neighbour discovery (without it IPv6 stops working on the link) and multicast
/// listener discovery.
const ICMP6: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("mld2-listener-report", 143),
];

/// Compiles `policy` (iptables rules matching ports with multiport).
pub fn compile(policy: &PortPolicy) -> Ruleset {
    compile_with(policy, PortMatch::Multiport)
}

/// Compiles `policy`, iptables rules matching ports the way `style` says.
pub fn compile_with(policy: &PortPolicy, style: PortMatch) -> Ruleset {
    let mut set = Ruleset::default();
    for i in &policy.interfaces {
        let c = format!("public interface {i}");
        let ipt_name = match i.strip_suffix('*') {
            Some(prefix) => format!("{prefix}+"),
            None => i.clone(),
        };
        let line = ipt(&format!("-i {ipt_name}"), &c, CHAIN_IN);
        set.dispatch.push(Rule {
            nft: vec![format!("iifname \"{i}\" jump inbound comment \"{c}\"")],
            ipt4: vec![line.clone()],
            ipt6: vec![line],
            comment: c,
        });
    }
    let c = "replies and related traffic pass";
    let established = ipt("-m conntrack --ctstate RELATED,ESTABLISHED", c, "RETURN");
    set.inbound.push(Rule {
        comment: c.into(),
        nft: vec![format!(
            "ct state established,related accept comment \"{c}\""
        )],
        ipt4: vec![established.clone()],
        ipt6: vec![established],
    });
    let with_ping = |types: &[(&'static str, u8)], echo: u8| {
        let mut t = types.to_vec();
        if policy.ping {
            t.push(("echo-request", echo));
        }
        t
    };
    let (icmp4, icmp6) = (with_ping(ICMP4, 8), with_ping(ICMP6, 128));
    let names = |t: &[(&str, u8)]| t.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let c = "essential ICMP passes";
    set.inbound.push(Rule {
        comment: c.into(),
        nft: vec![format!(
            "icmp type {{ {} }} accept comment \"{c}\"",
            names(&icmp4)
        )],
        ipt4: icmp4
            .iter()
            .map(|(_, n)| ipt(&format!("-p icmp -m icmp --icmp-type {n}"), c, "RETURN"))
            .collect(),
        ipt6: Vec::new(),
    });
    let c = "essential ICMPv6 passes";
    set.inbound.push(Rule {
        comment: c.into(),
        nft: vec![format!(
            "icmpv6 type {{ {} }} accept comment \"{c}\"",
            names(&icmp6)
        )],
        ipt4: Vec::new(),
        ipt6: icmp6
            .iter()
            .map(|(_, n)| {
                ipt(
                    &format!("-p ipv6-icmp -m icmp6 --icmpv6-type {n}"),
                    c,
                    "RETURN",
                )
            })
            .collect(),
    });
    // A DHCP server answers a broadcast, which conntrack cannot pair with the request: without
    // this the host loses its address when the lease runs out.
    let c = "DHCP replies pass";
    set.inbound.push(Rule {
        comment: c.into(),
        nft: vec![
            format!("meta nfproto ipv4 udp sport 67 udp dport 68 accept comment \"{c}\""),
            format!("meta nfproto ipv6 udp sport 547 udp dport 546 accept comment \"{c}\""),
        ],
        ipt4: vec![ipt("-p udp -m udp --sport 67 --dport 68", c, "RETURN")],
        ipt6: vec![ipt("-p udp -m udp --sport 547 --dport 546", c, "RETURN")],
    });
    for o in &policy.openings {
        set.inbound.push(opening_rule(o, style));
    }
    let c = "drop other new connections";
    set.inbound.push(Rule {
        comment: c.into(),
        nft: vec![format!("counter drop comment \"{c}\"")],
        ipt4: vec![ipt("", c, "DROP")],
        ipt6: vec![ipt("", c, "DROP")],
    });
    set
}

/// Consecutive equal comments once: one rule in words may be several kernel rules.
pub fn collapse(comments: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in comments {
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    out
}

impl Ruleset {
    fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.dispatch.iter().chain(&self.inbound)
    }

    /// The rules in words, as the kernel would hold them for `family`.
    pub fn comments(&self, family: Family) -> Vec<String> {
        collapse(
            self.rules()
                .filter(|r| match family {
                    Family::Inet => !r.nft.is_empty(),
                    Family::Ipv4 => !r.ipt4.is_empty(),
                    Family::Ipv6 => !r.ipt6.is_empty(),
                })
                .map(|r| r.comment.clone()),
        )
    }

    /// The nft script that replaces `inet moat_ports` with this ruleset in one transaction.
    pub fn nft_script(&self) -> String {
        let mut s = format!(
            "add table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\
             \tchain prerouting {{\n\t\ttype filter hook prerouting priority -150; policy accept;\n"
        );
        for r in self.dispatch.iter().flat_map(|r| &r.nft) {
            let _ = writeln!(s, "\t\t{r}");
        }
        s.push_str("\t}\n\tchain inbound {\n");
        for r in self.inbound.iter().flat_map(|r| &r.nft) {
            let _ = writeln!(s, "\t\t{r}");
        }
        s.push_str("\t}\n}\n");
        s
    }

    /// The `iptables-restore --noflush` input that fills moat's two chains in `table`
    /// (declared chains are flushed and refilled in one commit; nothing else is touched), with
    /// a jump from each chain of `jumps` (those missing).
    pub fn ipt_restore(&self, v6: bool, table: &str, jumps: &[&str]) -> String {
        let mut s = format!("*{table}\n:{CHAIN} - [0:0]\n:{CHAIN_IN} - [0:0]\n");
        let pick = |r: &Rule| if v6 { r.ipt6.clone() } else { r.ipt4.clone() };
        for r in self.dispatch.iter().flat_map(pick) {
            let _ = writeln!(s, "-A {CHAIN} {r}");
        }
        for r in self.inbound.iter().flat_map(pick) {
            let _ = writeln!(s, "-A {CHAIN_IN} {r}");
        }
        for from in jumps {
            let _ = writeln!(s, "-I {from} 1 -j {CHAIN}");
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// The nft script that removes the policy (nothing else).
pub fn nft_remove_script() -> String {
    format!("add table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// The `iptables-restore --noflush` input that removes moat's chains from `table`, with the
/// jumps from `jumps` (those present).
pub fn ipt_remove(table: &str, jumps: &[&str]) -> String {
    let mut s = format!("*{table}\n:{CHAIN} - [0:0]\n:{CHAIN_IN} - [0:0]\n");
    for from in jumps {
        let _ = writeln!(s, "-D {from} -j {CHAIN}");
    }
    let _ = writeln!(s, "-X {CHAIN}\n-X {CHAIN_IN}\nCOMMIT");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::policy::PortsTable;

    fn policy(text: &str) -> PortPolicy {
        toml::from_str::<PortsTable>(text)
            .unwrap()
            .resolve()
            .unwrap()
    }

    #[test]
    fn the_nft_table_says_what_the_policy_says() {
        let p = policy(
            "interfaces = [\"eth0\", \"ens*\"]\nopen = [\"80/tcp\", \"443\"]\n\
             allow = [{ ports = [\"22/tcp\"], from = [\"203.0.113.0/24\", \"2001:db8:1::/48\"] }]\n\
             swarm_peers = [\"198.51.100.2\"]\nping = false\n",
        );
        let s = compile(&p).nft_script();
        assert!(s.contains("type filter hook prerouting priority -150; policy accept;"));
        assert!(s.contains("iifname \"ens*\" jump inbound"), "{s}");
        assert!(s.contains("tcp dport { 80, 443 } accept comment \"open tcp 80,443 udp 443\""));
        assert!(s.contains("udp dport { 443 } accept"));
        assert!(s.contains("ip saddr { 203.0.113.0/24 } tcp dport { 22 } accept"));
        assert!(s.contains("ip6 saddr { 2001:db8:1::/48 } tcp dport { 22 } accept"));
        assert!(s.contains("ip saddr { 198.51.100.2/32 } meta l4proto esp accept"));
        assert!(s.contains("ip saddr { 198.51.100.2/32 } udp dport { 4789, 7946 } accept"));
        assert!(!s.contains("echo-request"), "ping = false");
        assert!(s.contains("nd-neighbor-solicit") && s.contains("packet-too-big"));
        assert!(s
            .trim_end()
            .ends_with("counter drop comment \"drop other new connections\"\n\t}\n}"));
    }

    #[test]
    fn iptables_copies_are_per_family() {
        let p = policy(
            "interfaces = [\"eth*\"]\nopen = [\"443/tcp\"]\n\
             allow = [{ ports = [\"22/tcp\"], from = [\"203.0.113.0/24\"] }]\n",
        );
        let set = compile(&p);
        let v4 = set.ipt_restore(false, "mangle", &["PREROUTING"]);
        let v6 = set.ipt_restore(true, "mangle", &[]);
        assert!(v4.contains("-A MOAT-PORTS -i eth+ -m comment --comment \"public interface eth*\" -j MOAT-PORTS-IN"), "{v4}");
        assert!(v4.contains(
            "-A MOAT-PORTS-IN -s 203.0.113.0/24 -p tcp -m multiport --dports 22 -m comment"
        ));
        assert!(v4.contains("-I PREROUTING 1 -j MOAT-PORTS\nCOMMIT"));
        assert!(!v6.contains("203.0.113.0/24") && !v6.contains("PREROUTING"));
        assert!(v6.contains("--icmpv6-type 135") && !v6.contains("--icmp-type"));
        // The source-limited rule has no IPv6 copy: SSH stays closed to IPv6.
        assert!(!set.comments(Family::Ipv6).iter().any(|c| c.contains("22")));
        assert!(set.comments(Family::Ipv4).iter().any(|c| c.contains("22")));
    }

    #[test]
    fn docker_user_rules_match_the_port_the_client_asked_for() {
        let p = policy("interfaces = [\"eth0\"]\nopen = [\"443/tcp\", \"8000-8010/tcp\"]");
        let v4 = compile_with(&p, PortMatch::CtOrig).ipt_restore(
            false,
            "filter",
            &["DOCKER-USER", "INPUT"],
        );
        assert!(
            v4.contains("-p tcp -m conntrack --ctorigdstport 443 -m comment"),
            "{v4}"
        );
        assert!(v4.contains("--ctorigdstport 8000:8010 "), "{v4}");
        assert!(!v4.contains("multiport"));
        assert!(
            v4.starts_with("*filter\n")
                && v4.contains("-I DOCKER-USER 1 -j MOAT-PORTS\n-I INPUT 1 -j MOAT-PORTS\n")
        );
    }

    #[test]
    fn long_source_lists_keep_distinct_short_comments() {
        let many: Vec<String> = (1..60).map(|i| format!("\"198.51.100.{i}\"")).collect();
        let p = policy(&format!(
            "interfaces = [\"eth0\"]\nallow = [{{ ports = [22], from = [{}] }}]",
            many.join(", ")
        ));
        let q = policy(&format!(
            "interfaces = [\"eth0\"]\nallow = [{{ ports = [22], from = [{}] }}]",
            many[1..].join(", ")
        ));
        let (a, b) = (
            compile(&p).comments(Family::Inet),
            compile(&q).comments(Family::Inet),
        );
        assert_ne!(a, b);
        assert!(a.iter().all(|c| c.len() <= 128));
    }
}

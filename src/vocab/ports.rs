//! Which ports a ban covers: every port (the default), or the ports a jail names with
//! `ports = [22, "8000-8100", "53/udp"]`.
//!
//! A port without a protocol means TCP and UDP (a ban on 443 also covers HTTP/3). The ports
//! are those the client connects to on the host, before Docker's DNAT: a published
//! `-p 8080:80` is port 8080 here.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A canonical port scope: sorted, merged TCP and UDP ranges.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ports(Arc<Scope>);

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Scope {
    tcp: Vec<(u16, u16)>,
    udp: Vec<(u16, u16)>,
}

impl Ports {
    /// Parses the entries of a `ports` list: `22`, `"22"`, `"8000-8100"`, `"53/udp"`,
    /// `"443/tcp"`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Ports, String> {
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for entry in entries {
            let e = entry.trim();
            let (range, proto) = match e.rsplit_once('/') {
                Some((r, p)) => (r, Some(p.to_ascii_lowercase())),
                None => (e, None),
            };
            let port = |s: &str| -> Result<u16, String> {
                match s.trim().parse::<u16>() {
                    Ok(p) if p > 0 => Ok(p),
                    _ => Err(format!(
                        "{entry:?} is not a port; hint: ports are 1 to 65535, written 22, \
                         \"8000-8100\" or \"53/udp\""
                    )),
                }
            };
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (port(a)?, port(b)?),
                None => (port(range)?, port(range)?),
            };
            if lo > hi {
                return Err(format!(
                    "{entry:?}: the range is reversed; hint: \"{hi}-{lo}\""
                ));
            }
            match proto.as_deref() {
                None => {
                    tcp.push((lo, hi));
                    udp.push((lo, hi));
                }
                Some("tcp") => tcp.push((lo, hi)),
                Some("udp") => udp.push((lo, hi)),
                Some(p) => {
                    return Err(format!(
                        "{entry:?}: unknown protocol {p:?}; hint: \"/tcp\" or \"/udp\", or \
                         nothing for both"
                    ))
                }
            }
        }
        if tcp.is_empty() && udp.is_empty() {
            return Err(
                "an empty `ports` list would ban nothing; hint: leave `ports` out to \
                        ban every port"
                    .into(),
            );
        }
        Ok(Ports(Arc::new(Scope {
            tcp: merge(tcp),
            udp: merge(udp),
        })))
    }

    pub fn tcp(&self) -> &[(u16, u16)] {
        &self.0.tcp
    }

    pub fn udp(&self) -> &[(u16, u16)] {
        &self.0.udp
    }

    /// A name for kernel objects: readable when short (`p22`, `t80-443_u53`), else a stable
    /// hash of the scope (ipset names are limited to 31 bytes).
    pub fn name(&self) -> String {
        let list = |r: &[(u16, u16)]| {
            r.iter()
                .map(|&(lo, hi)| range_text(lo, hi, "-"))
                .collect::<Vec<_>>()
                .join("_")
        };
        let readable = if self.0.tcp == self.0.udp {
            format!("p{}", list(&self.0.tcp))
        } else {
            [("t", &self.0.tcp), ("u", &self.0.udp)]
                .iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(p, r)| format!("{p}{}", list(r)))
                .collect::<Vec<_>>()
                .join("_")
        };
        if readable.len() <= 16 {
            readable
        } else {
            format!("h{:08x}", fnv1a(readable.as_bytes()))
        }
    }
}

/// FNV-1a, 32 bits: a hash that stays the same across Rust releases (std's does not
/// promise to), so that kernel object names survive an upgrade. Five lines, no crate.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn range_text(lo: u16, hi: u16, dash: &str) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}{dash}{hi}")
    }
}

/// Ranges for nft (`22, 80-443`) and for iptables' multiport (`22,80:443`).
pub fn ranges_text(r: &[(u16, u16)], sep: &str, dash: &str) -> String {
    r.iter()
        .map(|&(lo, hi)| range_text(lo, hi, dash))
        .collect::<Vec<_>>()
        .join(sep)
}

fn merge(mut r: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    r.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.tcp == self.0.udp {
            return write!(f, "{}", ranges_text(&self.0.tcp, ", ", "-"));
        }
        let parts: Vec<String> = [("tcp", &self.0.tcp), ("udp", &self.0.udp)]
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(p, r)| format!("{}/{p}", ranges_text(r, ",", "-")))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// `ports`: a list of ports, ranges and protocols (`[22, "8000-8100", "53/udp"]`), or one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortsValue(pub Ports);

impl<'de> Deserialize<'de> for PortsValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Number(i64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(Entry),
            Many(Vec<Entry>),
        }
        let entries = match OneOrMany::deserialize(d).map_err(|_| {
            de::Error::custom(
                "expected a port or a list of ports; hint: ports = [22, \"8000-8100\", \"53/udp\"]",
            )
        })? {
            OneOrMany::One(e) => vec![e],
            OneOrMany::Many(v) => v,
        };
        let texts: Vec<String> = entries
            .into_iter()
            .map(|e| match e {
                Entry::Number(n) => n.to_string(),
                Entry::Text(t) => t,
            })
            .collect();
        Ports::parse(texts.iter().map(String::as_str))
            .map(PortsValue)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_merged_and_named() {
        let p = Ports::parse(["22", "80-443", "443", "444"]).unwrap();
        assert_eq!(p.tcp(), &[(22, 22), (80, 444)]);
        assert_eq!(p.tcp(), p.udp());
        assert_eq!(p.to_string(), "22, 80-444");
        assert_eq!(p.name(), "p22_80-444");
        let q = Ports::parse(["443/tcp", "53/UDP"]).unwrap();
        assert_eq!((q.tcp(), q.udp()), (&[(443, 443)][..], &[(53, 53)][..]));
        assert_eq!(q.to_string(), "443/tcp, 53/udp");
        assert_eq!(q.name(), "t443_u53");
        // Same scope, however written.
        assert_eq!(Ports::parse(["444", "80-443", "22"]).unwrap(), p);
        let long = Ports::parse(["1000", "2000", "3000", "4000", "5000"]).unwrap();
        assert!(long.name().starts_with('h') && long.name().len() == 9);
    }

    #[test]
    fn bad_entries_say_why() {
        for (bad, says) in [
            ("0", "not a port"),
            ("70000", "not a port"),
            ("ssh", "not a port"),
            ("90-80", "reversed"),
            ("53/sctp", "unknown protocol"),
        ] {
            let e = Ports::parse([bad]).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Ports::parse([]).unwrap_err().contains("empty"));
    }
}

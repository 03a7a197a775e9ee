//! The policy in the kernel: applying a compiled [`Ruleset`], removing it, and reading back
//! what is there, in words (the rules' comments), for plans and drift checks.
//!
//! Only moat's own objects are touched: the table `inet moat_ports`, or the `mangle` chains
//! `MOAT-PORTS` and `MOAT-PORTS-IN` and the one jump to them. Never a whole table of someone
//! else's, which on a Docker host would resurrect or delete Docker's rules.

use serde_json::Value;

use super::compile::{self, compile_with, Family, PortMatch, Ruleset, CHAIN, CHAIN_IN, TABLE};
use super::policy::{Backend, PortPolicy};
use super::PortsError;
use crate::netfilter::nft::Nft;
use crate::netfilter::{run, NetfilterError};

/// The first line of each family's listing: the hook into the packet path is in place.
const NFT_BASE: &str = "base chain on prerouting at priority -150";
const IPT_BASE: &str = "mangle PREROUTING jumps to MOAT-PORTS";
const DOCKER_USER_BASE: &str = "DOCKER-USER and INPUT jump to MOAT-PORTS";

/// Where the iptables backends put their chains, and what jumps to them.
struct Place {
    table: &'static str,
    jumps: &'static [&'static str],
    base: &'static str,
}

const MANGLE: Place = Place {
    table: "mangle",
    jumps: &["PREROUTING"],
    base: IPT_BASE,
};
const DOCKER_USER: Place = Place {
    table: "filter",
    jumps: &["DOCKER-USER", "INPUT"],
    base: DOCKER_USER_BASE,
};

/// One family's rules in words, as held or as wanted.
pub type Listing = Vec<(Family, Vec<String>)>;

/// A way to reach the kernel's firewall.
pub enum Kernel {
    Nftables(Nft),
    Iptables,
    DockerUser,
}

impl Kernel {
    /// The backend `wanted` names; `Auto` picks nftables when `nft` can list the ruleset.
    pub fn open(wanted: Backend) -> Kernel {
        match wanted {
            Backend::Iptables => Kernel::Iptables,
            Backend::DockerUser => Kernel::DockerUser,
            Backend::Nftables => Kernel::Nftables(Nft::open()),
            Backend::Auto => match crate::netfilter::nft::Nft::probe() {
                Ok(_) => Kernel::Nftables(Nft::open()),
                Err(_) => Kernel::Iptables,
            },
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Kernel::Nftables(_) => Backend::Nftables,
            Kernel::Iptables => Backend::Iptables,
            Kernel::DockerUser => Backend::DockerUser,
        }
    }

    fn place(&self) -> Option<&'static Place> {
        match self {
            Kernel::Nftables(_) => None,
            Kernel::Iptables => Some(&MANGLE),
            Kernel::DockerUser => Some(&DOCKER_USER),
        }
    }

    /// `policy` compiled for this backend.
    pub fn compile(&self, policy: &PortPolicy) -> Ruleset {
        match self {
            Kernel::DockerUser => compile_with(policy, PortMatch::CtOrig),
            _ => compile_with(policy, PortMatch::Multiport),
        }
    }

    /// What `set` looks like in words once applied with this backend.
    pub fn wanted(&self, set: &Ruleset) -> Listing {
        match self {
            Kernel::Nftables(_) => {
                let mut c = vec![NFT_BASE.to_string()];
                c.extend(set.comments(Family::Inet));
                vec![(Family::Inet, c)]
            }
            Kernel::Iptables | Kernel::DockerUser => [Family::Ipv4, Family::Ipv6]
                .into_iter()
                .map(|f| {
                    let mut c = vec![self.place().expect("iptables").base.to_string()];
                    c.extend(set.comments(f));
                    (f, c)
                })
                .collect(),
        }
    }

    /// What the kernel holds of the policy now, in words (empty lists when it holds nothing).
    pub fn held(&mut self) -> Result<Listing, PortsError> {
        match self {
            Kernel::Nftables(nft) => Ok(vec![(Family::Inet, nft_held(nft)?)]),
            Kernel::Iptables | Kernel::DockerUser => {
                let place = self.place().expect("iptables");
                Ok(vec![
                    (Family::Ipv4, ipt_held("iptables", place)?),
                    (Family::Ipv6, ipt_held("ip6tables", place)?),
                ])
            }
        }
    }

    /// Puts `set` in force, replacing whatever moat had there, in one transaction per
    /// nftables table or iptables family.
    pub fn apply(&mut self, set: &Ruleset) -> Result<(), PortsError> {
        match self {
            Kernel::Nftables(nft) => nft.run(&set.nft_script()).map_err(PortsError::Nft),
            Kernel::Iptables | Kernel::DockerUser => {
                let place = self.place().expect("iptables");
                for (v6, program) in [(false, "iptables"), (true, "ip6tables")] {
                    if place.jumps.contains(&"DOCKER-USER")
                        && run(program, &["-w", "-S", "DOCKER-USER"], None).is_err()
                    {
                        // Docker has not run yet (or something flushed its chains). Docker
                        // adopts an existing DOCKER-USER and never flushes it, so creating it
                        // here puts the policy in force before Docker's first start. Never
                        // declared in the restore input: that would flush the admin's rules.
                        run(program, &["-w", "-N", "DOCKER-USER"], None)?;
                    }
                    let missing: Vec<&str> = place
                        .jumps
                        .iter()
                        .copied()
                        .filter(|from| !has_jump(program, place.table, from))
                        .collect();
                    run(
                        &format!("{program}-restore"),
                        &["-w", "--noflush"],
                        Some(&set.ipt_restore(v6, place.table, &missing)),
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Removes moat's policy objects; nothing else.
    pub fn remove(&mut self) -> Result<(), PortsError> {
        match self {
            Kernel::Nftables(nft) => nft
                .run(&compile::nft_remove_script())
                .map_err(PortsError::Nft),
            Kernel::Iptables | Kernel::DockerUser => {
                let place = self.place().expect("iptables");
                for program in ["iptables", "ip6tables"] {
                    if run(program, &["-w", "-t", place.table, "-S", CHAIN], None).is_err() {
                        continue;
                    }
                    let present: Vec<&str> = place
                        .jumps
                        .iter()
                        .copied()
                        .filter(|from| has_jump(program, place.table, from))
                        .collect();
                    run(
                        &format!("{program}-restore"),
                        &["-w", "--noflush"],
                        Some(&compile::ipt_remove(place.table, &present)),
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Packets the policy dropped since it was last applied (nftables only).
    pub fn dropped(&mut self) -> Option<u64> {
        let Kernel::Nftables(nft) = self else {
            return None;
        };
        let json = nft
            .list_json(&format!("list chain inet {TABLE} inbound"), false)
            .ok()?;
        let all: Value = serde_json::from_str(&json).ok()?;
        all["nftables"].as_array()?.iter().find_map(|i| {
            let expr = i.get("rule")?.get("expr")?.as_array()?;
            expr.iter()
                .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
        })
    }
}

fn has_jump(program: &str, table: &str, from: &str) -> bool {
    run(program, &["-w", "-t", table, "-C", from, "-j", CHAIN], None).is_ok()
}

/// The policy table's rules in words, read from a terse listing of the whole ruleset (cheap
/// however many bans the other table holds).
fn nft_held(nft: &mut Nft) -> Result<Vec<String>, PortsError> {
    let json = nft
        .list_json("list ruleset", true)
        .map_err(PortsError::Nft)?;
    let all: Value =
        serde_json::from_str(&json).map_err(|e| PortsError::Nft(format!("nft's JSON: {e}")))?;
    let items = all["nftables"].as_array().cloned().unwrap_or_default();
    let ours = |o: &Value| o["family"] == "inet" && o["table"] == TABLE;
    let mut out = Vec::new();
    let base = items.iter().filter_map(|i| i.get("chain")).any(|c| {
        ours(c)
            && c["name"] == "prerouting"
            && c["hook"] == "prerouting"
            && c["prio"] == -150
            && c["type"] == "filter"
            && c["policy"] == "accept"
    });
    if base {
        out.push(NFT_BASE.to_string());
    }
    let comments = |chain: &str| -> Vec<String> {
        items
            .iter()
            .filter_map(|i| i.get("rule"))
            .filter(|r| ours(r) && r["chain"] == chain)
            .map(|r| match r["comment"].as_str() {
                Some(c) => c.to_string(),
                None => "(a rule moat did not write)".to_string(),
            })
            .collect()
    };
    out.extend(compile::collapse(
        comments("prerouting")
            .into_iter()
            .chain(comments("inbound")),
    ));
    Ok(out)
}

/// The comment of an `iptables -S` line: quoted when it has spaces, bare otherwise.
fn comment_of(line: &str) -> Option<String> {
    let rest = line.split_once("--comment ")?.1;
    match rest.strip_prefix('"') {
        Some(q) => Some(q.split_once('"').map_or(q, |(c, _)| c).to_string()),
        None => rest.split_whitespace().next().map(String::from),
    }
}

/// One iptables family's policy chains in words.
fn ipt_held(program: &str, place: &Place) -> Result<Vec<String>, PortsError> {
    let mut out = Vec::new();
    if place
        .jumps
        .iter()
        .all(|from| has_jump(program, place.table, from))
    {
        out.push(place.base.to_string());
    }
    let mut comments = Vec::new();
    for chain in [CHAIN, CHAIN_IN] {
        match run(program, &["-w", "-t", place.table, "-S", chain], None) {
            Ok(text) => comments.extend(
                text.lines()
                    .filter(|l| l.starts_with("-A "))
                    .map(|l| comment_of(l).unwrap_or_else(|| "(a rule moat did not write)".into())),
            ),
            // iptables-nft calls a chain that does not exist "incompatible".
            Err(NetfilterError::Failed { message, .. })
                if message.contains("No chain")
                    || message.contains("does not exist")
                    || message.contains("incompatible") => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.extend(compile::collapse(comments));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_read_from_iptables_listings() {
        assert_eq!(
            comment_of("-A MOAT-PORTS-IN -p tcp -m comment --comment \"open tcp 22\" -j RETURN")
                .as_deref(),
            Some("open tcp 22")
        );
        assert_eq!(
            comment_of("-A X -m comment --comment single -j DROP").as_deref(),
            Some("single")
        );
        assert_eq!(comment_of("-A X -j DROP"), None);
    }
}

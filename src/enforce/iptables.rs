//! The iptables/ipset enforcer, for hosts where nftables does not work (old kernels,
//! iptables-legacy): ipset `hash:net` sets with per-entry timeouts, `moat-ban4` and `moat-ban6`,
//! each matched by one rule in the `raw` table's PREROUTING (iptables and ip6tables), which
//! runs before conntrack and before Docker's DNAT, as nftables' priority −300 does.
//!
//! `hash:net` holds single addresses and networks alike and, unlike an nftables interval set,
//! accepts overlapping entries. Changes go through `ipset restore` (one process, one batch);
//! the rules are inserted only when `-C` says they are missing, so nothing is duplicated and no
//! other rule of the `raw` table is touched.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use jiff::Timestamp;

use super::{seconds_left, Change, Enforcer, Failed};

const SET4: &str = "moat-ban4";
const SET6: &str = "moat-ban6";

fn set_of(t: &IpNet) -> &'static str {
    match t {
        IpNet::V4(_) => SET4,
        IpNet::V6(_) => SET6,
    }
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The rule that drops a set's members, as iptables arguments after the chain.
fn rule(set: &str) -> [&str; 7] {
    ["-m", "set", "--match-set", set, "src", "-j", "DROP"]
}

pub struct IptablesEnforcer {
    in_kernel: HashSet<IpNet>,
    listed: bool,
    pub repairs: u64,
}

impl Default for IptablesEnforcer {
    fn default() -> Self {
        IptablesEnforcer::new()
    }
}

impl IptablesEnforcer {
    pub fn new() -> IptablesEnforcer {
        IptablesEnforcer {
            in_kernel: HashSet::new(),
            listed: false,
            repairs: 0,
        }
    }

    /// Whether ipset and the raw table work here.
    pub fn probe() -> Result<(), String> {
        run("ipset", &["list", "-n"], None)?;
        run("iptables", &["-t", "raw", "-S", "PREROUTING"], None)?;
        run("ip6tables", &["-t", "raw", "-S", "PREROUTING"], None)?;
        Ok(())
    }

    /// Creates what is missing (sets, rules); true when something was.
    fn ensure(&mut self) -> Result<bool, String> {
        let mut repaired = false;
        let sets = run("ipset", &["list", "-n"], None)?;
        for (set, family) in [(SET4, "inet"), (SET6, "inet6")] {
            if !sets.lines().any(|l| l.trim() == set) {
                run(
                    "ipset",
                    &[
                        "create", set, "hash:net", "family", family, "timeout", "0", "-exist",
                    ],
                    None,
                )?;
                repaired = true;
            }
        }
        for (program, set) in [("iptables", SET4), ("ip6tables", SET6)] {
            let mut check = vec!["-t", "raw", "-C", "PREROUTING"];
            check.extend(rule(set));
            if run(program, &check, None).is_err() {
                let mut insert = vec!["-t", "raw", "-I", "PREROUTING", "1"];
                insert.extend(rule(set));
                run(program, &insert, None)?;
                repaired = true;
            }
        }
        Ok(repaired)
    }

    fn read_back(&mut self) -> Result<(), String> {
        let mut held = HashSet::new();
        for set in [SET4, SET6] {
            let out = run("ipset", &["save", set], None)?;
            for line in out.lines() {
                let mut words = line.split_whitespace();
                if words.next() != Some("add") {
                    continue;
                }
                let _set = words.next();
                if let Some(t) = words.next().and_then(|w| super::parse_target(w).ok()) {
                    held.insert(t);
                }
            }
        }
        self.in_kernel = held;
        Ok(())
    }
}

impl Enforcer for IptablesEnforcer {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        let now = Timestamp::now();
        let mut script = String::new();
        for c in batch {
            match c {
                Change::Ban(b) => {
                    // 0: no timeout.
                    let timeout = match b.until {
                        None => 0,
                        Some(u) => match seconds_left(now, u) {
                            Some(secs) => secs,
                            None => continue,
                        },
                    };
                    // -exist: adding a held entry updates its timeout.
                    script.push_str(&format!(
                        "add {} {} timeout {timeout} -exist\n",
                        set_of(&b.target),
                        b.target
                    ));
                }
                Change::Unban(t) => {
                    script.push_str(&format!("del {} {} -exist\n", set_of(t), t));
                }
            }
        }
        let mut result = run("ipset", &["restore"], Some(&script));
        if result.is_err() {
            // The sets may be gone (a flush, a reboot of the ruleset): restore and retry.
            result = self
                .ensure()
                .and_then(|_| run("ipset", &["restore"], Some(&script)));
        }
        match result {
            Ok(_) => {
                for c in batch {
                    match c {
                        Change::Ban(b) => {
                            self.in_kernel.insert(b.target);
                        }
                        Change::Unban(t) => {
                            self.in_kernel.remove(t);
                        }
                    }
                }
                Vec::new()
            }
            Err(error) => Failed::all(batch, &error),
        }
    }

    fn held(&mut self) -> Result<HashSet<IpNet>, String> {
        if !self.listed {
            self.ensure()?;
            self.read_back()?;
            self.listed = true;
        }
        Ok(self.in_kernel.clone())
    }

    fn drifts(&self) -> bool {
        true
    }

    fn intact(&mut self) -> Result<bool, String> {
        if self.ensure()? {
            self.repairs += 1;
            tracing::warn!("moat's ipsets or raw PREROUTING rules were missing; restoring them from the ledger");
            self.read_back()?;
            return Ok(false);
        }
        Ok(true)
    }

    fn repairs(&self) -> u64 {
        self.repairs
    }
}

//! The `exec` enforcer: runs a program for each ban and unban, from an argv template.
//!
//! There is no shell anywhere: the template is split into arguments when the configuration is
//! read, and a placeholder is replaced by a value moat produced itself — `{ip}` is a parsed
//! address or network printed back, `{jail}` a configured name, `{until}` a time moat computed
//! (RFC 3339 in UTC to the second, `2026-03-28T23:24:12Z`, or `forever`),
//! `{failures}` a number, `{ports}` the jail's ports (`22, 80-443`; empty for every port).
//! Nothing from a log line reaches the command. The program runs with a
//! minimal environment, no standard input, and a timeout after which it is killed.

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

pub mod settings;
mod shell;

use super::registry::Registered;
use super::{Change, EnforceError, Enforcer, Failed, Key, Kind, Retry};
use crate::vocab::time::utc;
use crate::vocab::Target;
pub use settings::{ArgvTemplate, ExecSettings};

/// The `exec` enforcer: runs the ban template for each ban and the unban template, when there is
/// one, for each unban; it holds what it ran the ban for.
pub struct ExecEnforcer {
    ban: Vec<String>,
    unban: Option<Vec<String>>,
    timeout: Duration,
    held: HashSet<Key>,
}

impl ExecEnforcer {
    /// An enforcer running `ban` (and `unban`), each run killed after `timeout`.
    pub fn new(ban: &ArgvTemplate, unban: Option<&ArgvTemplate>, timeout: Duration) -> Self {
        ExecEnforcer {
            ban: ban.0.clone(),
            unban: unban.map(|u| u.0.clone()),
            timeout,
            held: HashSet::new(),
        }
    }

    fn run(&self, template: &[String], change: &Change) -> Result<(), String> {
        let argv = expand(template, change);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
        let status = match child.wait_timeout(self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {:?}; killed",
                    argv[0], self.timeout
                ));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", argv[0])),
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let mut buf = Vec::new();
            let _ = err.by_ref().take(512).read_to_end(&mut buf);
            stderr = String::from_utf8_lossy(&buf).trim().to_string();
        }
        Err(format!(
            "{} exited with {status}{}{stderr}",
            argv[0],
            if stderr.is_empty() { "" } else { ": " }
        ))
    }
}

/// The argv for one change.
pub fn expand(template: &[String], change: &Change) -> Vec<String> {
    let (jail, until, failures) = match change {
        Change::Ban(b) => (
            b.jail.clone(),
            // To the second: the engine keeps the end to the nanosecond and the ledger to the
            // millisecond, and the same ban applied again after a restart must read the same.
            b.until.map_or("forever".to_string(), utc),
            b.failures.to_string(),
        ),
        Change::Unban(_) => (String::new(), String::new(), String::new()),
    };
    let key = change.key();
    let ip = Target(key.target).to_string();
    let ports = key.ports.map(|p| p.to_string()).unwrap_or_default();
    template
        .iter()
        .map(|arg| {
            arg.replace("{ip}", &ip)
                .replace("{jail}", &jail)
                .replace("{until}", &until)
                .replace("{failures}", &failures)
                .replace("{ports}", &ports)
        })
        .collect()
}

impl Enforcer for ExecEnforcer {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        let mut failed = Vec::new();
        for (index, change) in batch.iter().enumerate() {
            let result = match change {
                Change::Ban(_) => self.run(&self.ban, change),
                Change::Unban(_) => match &self.unban {
                    Some(t) => self.run(t, change),
                    None => Ok(()),
                },
            };
            match result {
                Ok(()) => match change {
                    Change::Ban(b) => {
                        self.held.insert(b.key());
                    }
                    Change::Unban(k) => {
                        self.held.remove(k);
                    }
                },
                Err(error) => failed.push(Failed {
                    index,
                    error: EnforceError::later(error),
                }),
            }
        }
        failed
    }

    /// What this process applied: a command cannot be asked what it holds, so after a restart
    /// every active ban is applied again (as fail2ban re-runs `actionban` for restored bans),
    /// and the bans that ended while moat was stopped are lifted (the engine sends them as
    /// unbans).
    fn held(&mut self) -> Result<HashSet<Key>, EnforceError> {
        Ok(self.held.clone())
    }
}

impl Registered for ExecEnforcer {
    type Settings = ExecSettings;
    const NAME: &'static str = "exec";
    /// A command may block somewhere else; like the kernel it sees the addresses the logs
    /// show, so it does not take the bans of jails behind Cloudflare.
    const KIND: Kind = Kind::Host;
    const REQUIRES_TABLE: Option<&'static str> =
        Some("add [enforce.exec] with ban = [\"/path/to/program\", \"{ip}\"]");

    fn retry(settings: Option<&ExecSettings>) -> Retry {
        Retry::times(settings.map_or(3, |s| s.retries).saturating_add(1))
    }

    fn build(settings: Option<&ExecSettings>) -> Result<(Self, Option<String>), EnforceError> {
        let s = settings.ok_or_else(|| EnforceError::never("no [enforce.exec] table"))?;
        Ok((
            ExecEnforcer::new(&s.ban, s.unban.as_ref(), s.timeout.0.unsigned_abs()),
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::BanOrder;

    fn ban(t: &str) -> Change {
        Change::Ban(BanOrder {
            target: t.parse().unwrap(),
            jail: "ssh".into(),
            started: jiff::Timestamp::UNIX_EPOCH,
            until: None,
            failures: 3,
            ports: None,
            evidence: Default::default(),
            node: None,
        })
    }

    #[test]
    fn expands_placeholders_into_single_arguments() {
        let t: Vec<String> = [
            "/bin/echo",
            "{ip}",
            "jail={jail}",
            "{until}",
            "{failures}",
            "{ports}",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            expand(&t, &ban("2001:db8::/64")),
            ["/bin/echo", "2001:db8::/64", "jail=ssh", "forever", "3", ""]
        );
        // To the second, however precisely the end is known.
        for until in ["2026-03-28T23:24:12.987654321Z", "2026-03-28T23:24:12.987Z"] {
            let Change::Ban(mut b) = ban("192.0.2.7/32") else {
                unreachable!()
            };
            b.until = Some(until.parse().unwrap());
            assert_eq!(expand(&t, &Change::Ban(b))[3], "2026-03-28T23:24:12Z");
        }
        let Change::Ban(mut on_22) = ban("192.0.2.7/32") else {
            unreachable!()
        };
        on_22.ports = Some(crate::vocab::Ports::parse(["22", "53/udp"]).unwrap());
        assert_eq!(
            expand(&t, &Change::Unban(on_22.key()))[1..],
            ["192.0.2.7", "jail=", "", "", "22/tcp, 22,53/udp"]
        );
    }

    #[test]
    fn runs_times_out_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("{ip}");
        let ok = ArgvTemplate(vec!["/usr/bin/touch".into(), mark.display().to_string()]);
        let mut e = ExecEnforcer::new(&ok, None, Duration::from_secs(5));
        assert!(e.apply(&[ban("192.0.2.7/32")]).is_empty());
        assert!(dir.path().join("192.0.2.7").exists());
        assert_eq!(e.held().unwrap().len(), 1);

        let slow = ArgvTemplate(vec!["/bin/sleep".into(), "5".into()]);
        let mut e = ExecEnforcer::new(&slow, None, Duration::from_millis(100));
        let failed = e.apply(&[ban("192.0.2.8/32")]);
        assert!(failed[0].error.message.contains("killed"), "{failed:?}");

        let bad = ArgvTemplate(vec!["/bin/false".into()]);
        let mut e = ExecEnforcer::new(&bad, None, Duration::from_secs(5));
        assert!(e.apply(&[ban("192.0.2.9/32")])[0]
            .error
            .message
            .contains("exited"));
        let missing = ArgvTemplate(vec!["/nonexistent/prog".into()]);
        let mut e = ExecEnforcer::new(&missing, None, Duration::from_secs(5));
        assert!(e.apply(&[ban("192.0.2.9/32")])[0]
            .error
            .message
            .contains("cannot run"));
    }
}

//! `moat ports`: plan, apply (with a confirmation window), confirm, and status of the port
//! policy. These run as root on the host itself: they read and change the kernel directly,
//! under the state file's lock, and a running daemon keeps what they leave in force.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::{DEFAULT_CONFIG, EXIT_ERROR};
use crate::config::Config;
use crate::daemon::control::request;
use crate::daemon::protocol::Request;
use crate::ports::compile::compile;
use crate::ports::docker::{judge, publications, Judged};
use crate::ports::keeper::{self, Tick};
use crate::ports::kernel::{Kernel, Listing};
use crate::ports::policy::{interface_of, lockout, SshConnection};
use crate::ports::PortPolicy;

#[derive(Subcommand, Debug)]
pub enum PortsCommand {
    /// Show what applying the configuration's [ports] would change in the kernel.
    Plan {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Put the configuration's [ports] in force, atomically.
    Apply {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Roll back unless `moat ports confirm` comes within this time ("60s", "5m").
        #[arg(long, value_name = "DURATION")]
        confirm_within: Option<String>,
        /// Apply even though the policy would drop new connections like this SSH session.
        #[arg(long)]
        force: bool,
        /// No daemon runs here: apply and exit (a detached watcher handles the rollback).
        #[arg(long)]
        oneshot: bool,
        #[arg(long)]
        json: bool,
    },
    /// Keep the policy an apply with --confirm-within put in force.
    Confirm {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The policy in force and what every published container port is exposed as.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Waits for a pending apply's deadline and rolls it back (started by apply).
    #[command(hide = true)]
    Watch {
        #[arg(long)]
        state_dir: PathBuf,
    },
}

pub fn run(command: PortsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PortsCommand::Plan { config, json } => plan(&config, json),
        PortsCommand::Apply {
            config,
            confirm_within,
            force,
            oneshot,
            json,
        } => apply(&config, confirm_within.as_deref(), force, oneshot, json),
        PortsCommand::Confirm { config } => confirm(&config),
        PortsCommand::Status { config, json } => status(&config, json),
        PortsCommand::Watch { state_dir } => watch(&state_dir),
    }
}

fn state_dir(config: &Config) -> PathBuf {
    crate::daemon::paths(config).0
}

fn daemon_running(config: &Config) -> bool {
    request(&crate::daemon::paths(config).1, &Request::Ping).is_ok()
}

/// One change of a plan: `+` added, `-` removed, ` ` kept.
fn diff(held: &Listing, wanted: &Listing) -> Vec<(String, char, String)> {
    let mut out = Vec::new();
    for (family, want) in wanted {
        let have = held
            .iter()
            .find(|(f, _)| f == family)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &have, want);
        for op in ops {
            for change in op.iter_changes(&have, want) {
                let sign = match change.tag() {
                    similar::ChangeTag::Equal => ' ',
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                };
                out.push((family.label().to_string(), sign, change.value()));
            }
        }
    }
    out
}

fn plan(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let state =
        keeper::read(&keeper::state_path(&state_dir(&config))).map_err(anyhow::Error::msg)?;
    let mut kernel = Kernel::open(config.ports_backend);
    let held = kernel.held().map_err(anyhow::Error::msg)?;
    let wanted = match &config.ports {
        Some(p) => kernel.wanted(&kernel.compile(p)),
        None => held.iter().map(|(f, _)| (*f, Vec::new())).collect(),
    };
    let changes = diff(&held, &wanted);
    let changed = changes.iter().any(|(_, s, _)| *s != ' ');
    let warning = lockout_warning(&config);
    if json {
        let list: Vec<_> = changes
            .iter()
            .map(|(f, s, c)| {
                let op = match s {
                    '+' => "add",
                    '-' => "remove",
                    _ => "keep",
                };
                json!({"family": f, "op": op, "rule": c})
            })
            .collect();
        println!(
            "{}",
            json!({
                "backend": kernel.backend().as_str(),
                "changes": changed,
                "rules": list,
                "lockout": warning,
                "pending": state.pending.map(|p| p.until),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("backend: {}", kernel.backend().as_str());
    if config.ports.is_none() {
        println!("the configuration has no [ports]: applying removes moat's port policy");
    }
    if changed {
        for (family, sign, rule) in &changes {
            println!("{sign} [{family}] {rule}");
        }
        let n = changes.iter().filter(|(_, s, _)| *s != ' ').count();
        println!("{n} change(s); `moat ports apply --confirm-within 60s` applies them");
    } else {
        println!("no change: the kernel holds what the configuration says");
    }
    if let Some(w) = warning {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Why applying the configuration would cut this SSH session's next login, if it would.
fn lockout_warning(config: &Config) -> Option<String> {
    let policy = config.ports.as_ref()?;
    let ssh = SshConnection::from_env()?;
    lockout(policy, &ssh, interface_of(ssh.server).as_deref())
}

fn apply(
    path: &Path,
    confirm_within: Option<&str>,
    force: bool,
    oneshot: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let window = match confirm_within {
        Some(text) => {
            let d = crate::config::value::parse_duration(text).map_err(anyhow::Error::msg)?;
            if d < SignedDuration::from_secs(5) {
                bail!("--confirm-within {text}: too short to confirm from a new connection; hint: 60s");
            }
            Some(d)
        }
        None => None,
    };
    if let Some(w) = lockout_warning(&config) {
        if !force {
            eprintln!("moat: error: refused: {w}");
            return Ok(ExitCode::from(EXIT_ERROR));
        }
        eprintln!("moat: warning (forced): {w}");
    }
    let dir = state_dir(&config);
    let running = daemon_running(&config);
    if oneshot && running {
        bail!("the daemon is running and keeps the policy in force: run without --oneshot");
    }
    let applied = keeper::apply(&dir, config.ports.clone(), config.ports_backend, window)
        .map_err(|e| anyhow::anyhow!("nothing changed: {e}"))?;
    if applied.until.is_some() && !running {
        spawn_watcher(&dir).context("cannot start the rollback watcher")?;
    }
    if json {
        println!(
            "{}",
            json!({"backend": applied.backend.as_str(), "confirm_by": applied.until, "daemon": running})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let what = if config.ports.is_some() {
        "the port policy is in force"
    } else {
        "moat's port policy is removed"
    };
    println!("{what} ({})", applied.backend.as_str());
    if let Some(until) = applied.until {
        println!(
            "confirm with `moat ports confirm` from a NEW connection before {} ({}), or it \
             is rolled back",
            until.strftime("%H:%M:%S UTC"),
            confirm_within.unwrap_or_default()
        );
    }
    if !running && !oneshot {
        println!(
            "note: moat's daemon is not running, so nothing restores the policy if something \
             removes it (`moat run`, or --oneshot to say this is intended)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `moat ports watch` in a session of its own, detached from this terminal: the SSH
/// session that ran apply may be the very connection the policy cuts, and the rollback must
/// happen all the same.
fn spawn_watcher(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["ports", "watch", "--state-dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn().map(drop)
}

fn watch(dir: &Path) -> anyhow::Result<ExitCode> {
    loop {
        match keeper::tick(dir, false) {
            Ok(Tick::Waiting) => std::thread::sleep(Duration::from_millis(250)),
            Ok(_) => return Ok(ExitCode::SUCCESS),
            // The kernel refused the rollback for now: keep trying rather than give up on it.
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

fn confirm(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    if keeper::confirm(&state_dir(&config)).map_err(anyhow::Error::msg)? {
        println!("confirmed: the port policy stays in force");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("nothing to confirm (no apply is waiting; it may have been rolled back: see `moat ports status`)")
    }
}

fn status(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let state =
        keeper::read(&keeper::state_path(&state_dir(&config))).map_err(anyhow::Error::msg)?;
    let mut kernel = keeper::kernel_for(&state, config.ports_backend);
    let policy: Option<&PortPolicy> = state.policy.as_ref();
    let intact = match policy {
        Some(p) => kernel.held().map_err(anyhow::Error::msg)? == kernel.wanted(&kernel.compile(p)),
        None => true,
    };
    let dropped = policy.and_then(|_| kernel.dropped());
    let (published, docker_error) = match docker_publications() {
        Ok(list) => (
            list.into_iter()
                .map(|p| judge(policy, p))
                .collect::<Vec<Judged>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    let differs = config.ports.as_ref() != policy;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "backend": state.backend.map(|b| b.as_str()),
                "policy": policy,
                "in_kernel": intact,
                "applied": state.applied,
                "pending": state.pending.as_ref().map(|p| p.until),
                "rolled_back": state.rolled_back,
                "repairs": state.repairs,
                "dropped_packets": dropped,
                "configuration_differs": differs,
                "published": published,
                "docker_error": docker_error,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    match policy {
        None => println!("no port policy in force"),
        Some(p) => {
            println!(
                "policy in force ({}), on {}: {}",
                state.backend.map_or("?", |b| b.as_str()),
                p.interfaces.join(", "),
                if intact {
                    "in the kernel as applied"
                } else {
                    "NOT in the kernel as applied (the daemon restores it within seconds when it runs)"
                }
            );
            for rule in compile(p).inbound.iter().map(|r| &r.comment) {
                println!("  {rule}");
            }
            if let Some(n) = dropped {
                println!("  {n} packets dropped since applied");
            }
        }
    }
    if let Some(applied) = state.applied {
        println!("applied {}", applied.strftime("%Y-%m-%d %H:%M:%S UTC"));
    }
    if let Some(p) = &state.pending {
        let left = Timestamp::now().duration_until(p.until).as_secs().max(0);
        println!("waiting for `moat ports confirm`: rolled back in {left}s unless confirmed");
    }
    if let Some(r) = &state.rolled_back {
        println!(
            "last rollback {}: {}",
            r.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            r.why
        );
    }
    if state.repairs > 0 {
        println!("restored after drift {} time(s)", state.repairs);
    }
    if differs {
        println!(
            "the configuration's [ports] differs from the policy in force: see `moat ports plan`"
        );
    }
    match docker_error {
        Some(e) => println!("published ports: unknown ({e})"),
        None if published.is_empty() => println!("no container publishes a port"),
        None => {
            println!("published ports:");
            for j in &published {
                println!("  {j}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn docker_publications() -> Result<Vec<crate::ports::docker::Publication>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot reach Docker: {e}"))?;
        tokio::time::timeout(Duration::from_secs(5), publications(&docker))
            .await
            .map_err(|_| "Docker did not answer within 5 s".to_string())?
    })
}

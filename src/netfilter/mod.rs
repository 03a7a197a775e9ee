//! The kernel's packet filter as moat drives it, shared by the ban enforcers ([`crate::enforce`])
//! and the port policy ([`crate::ports`]): nftables scripts through libnftables or the `nft`
//! program ([`nft`]), and the iptables, ip6tables and ipset programs ([`run`], [`iptables`]).
//! What each one puts in the kernel is theirs; this module only carries it there.

pub mod iptables;
pub mod nft;

use std::io::Write;
use std::process::{Command, Stdio};

/// A netfilter program that could not be run or refused its input.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed; `message` is what it said (nft: its first line).
    #[error("{command}: {message}")]
    Failed { command: String, message: String },
}

/// Runs `program` with `args`, `input` on its standard input when given; its output, or what
/// it said when it failed. The input is written from another thread: a large script and a
/// large listing would otherwise block each other on full pipes.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NetfilterError> {
    let spawn = |source| NetfilterError::Spawn {
        program: program.to_string(),
        source,
    };
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
        .map_err(spawn)?;
    let writer = input.map(|text| {
        let mut stdin = child.stdin.take().expect("piped");
        let text = text.to_string();
        std::thread::spawn(move || stdin.write_all(text.as_bytes()))
    });
    let out = child.wait_with_output().map_err(spawn)?;
    let written = writer.map_or(Ok(()), |w| w.join().unwrap_or(Ok(())));
    if !out.status.success() {
        return Err(NetfilterError::Failed {
            command: format!("{program} {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    written.map_err(spawn)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

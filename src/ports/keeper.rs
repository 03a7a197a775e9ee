//! Keeping the policy in force: applying with a confirmation window and rolling back when it
//! runs out, and restoring the policy after drift (a Docker restart, a firewalld reload, `nft
//! flush ruleset`).
//!
//! The policy in force lives in `<state_dir>/ports.json`, changed only under an exclusive
//! lock (`ports.lock`) held across the kernel change, so that `moat ports apply`, `moat ports
//! confirm`, the daemon and a detached rollback watcher never act on a stale view. While an
//! apply awaits confirmation the file also holds the policy it replaced; the first to see
//! the deadline pass (the daemon, or the watcher `apply` leaves behind when no daemon runs)
//! puts that one back.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::kernel::Kernel;
use super::policy::{Backend, PortPolicy};
use super::PortsError;

/// An apply that rolls back unless confirmed in time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub until: Timestamp,
    /// What a rollback restores (`None`: no policy), and with which backend.
    pub previous: Option<PortPolicy>,
    pub previous_backend: Option<Backend>,
}

/// The last rollback, for `moat ports status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RolledBack {
    pub at: Timestamp,
    pub why: String,
}

/// `ports.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PortsState {
    /// The backend the policy was applied with.
    pub backend: Option<Backend>,
    /// The policy in force; `None` when moat holds none.
    pub policy: Option<PortPolicy>,
    pub applied: Option<Timestamp>,
    pub pending: Option<Pending>,
    pub rolled_back: Option<RolledBack>,
    /// Times drift was repaired.
    #[serde(default)]
    pub repairs: u64,
}

/// The state file under its lock.
pub struct Locked {
    path: PathBuf,
    _lock: Flock<File>,
    pub state: PortsState,
}

pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ports.json")
}

/// Locks and reads the state (an absent file is the empty state).
pub fn lock(state_dir: &Path) -> Result<Locked, PortsError> {
    // Private, as the ledger makes it when it comes first.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(PortsError::state("cannot create", state_dir))?;
    let lock_path = state_dir.join("ports.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(PortsError::state("cannot open", &lock_path))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| PortsError::state("cannot lock", &lock_path)(e.into()))?;
    let path = state_path(state_dir);
    let state = read(&path)?;
    Ok(Locked {
        path,
        _lock: lock,
        state,
    })
}

/// Reads the state without locking (for status).
pub fn read(path: &Path) -> Result<PortsState, PortsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| PortsError::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PortsState::default()),
        Err(e) => Err(PortsError::state("cannot read", path)(e)),
    }
}

impl Locked {
    /// Writes the state: a new file renamed over the old, so a crash leaves one or the other.
    pub fn save(&self) -> Result<(), PortsError> {
        let tmp = self.path.with_extension("json.new");
        let text = serde_json::to_string_pretty(&self.state).expect("serialisable");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(PortsError::state("cannot write", &self.path))
    }
}

/// Puts `policy` (or no policy) in the kernel through `kernel`.
fn put(kernel: &mut Kernel, policy: Option<&PortPolicy>) -> Result<(), PortsError> {
    match policy {
        Some(p) => kernel.apply(&kernel.compile(p)),
        None => kernel.remove(),
    }
}

/// The kernel for the backend the state names (or `wanted` when it names none).
pub fn kernel_for(state: &PortsState, wanted: Backend) -> Kernel {
    Kernel::open(state.backend.unwrap_or(wanted))
}

/// What an apply did.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub backend: Backend,
    pub until: Option<Timestamp>,
}

/// Applies `policy` (`None` removes moat's policy) with `backend`; with `confirm_within`, it
/// rolls back unless [`confirm`]ed in time. During an earlier unconfirmed apply, the policy a
/// rollback restores stays the one that was in force before it.
pub fn apply(
    state_dir: &Path,
    policy: Option<PortPolicy>,
    backend: Backend,
    confirm_within: Option<SignedDuration>,
) -> Result<Applied, PortsError> {
    let mut locked = lock(state_dir)?;
    let mut kernel = Kernel::open(backend);
    if let Some(old) = locked.state.backend {
        if old != kernel.backend() {
            // A switch of backend: the old one's objects go, or both would filter.
            Kernel::open(old).remove()?;
        }
    }
    put(&mut kernel, policy.as_ref())?;
    let s = &mut locked.state;
    let now = Timestamp::now();
    let until = confirm_within.map(|d| now + d);
    s.pending = match (until, s.pending.take()) {
        (Some(until), Some(earlier)) => Some(Pending { until, ..earlier }),
        (Some(until), None) => Some(Pending {
            until,
            previous: s.policy.clone(),
            previous_backend: s.backend,
        }),
        (None, _) => None,
    };
    s.backend = Some(kernel.backend());
    s.policy = policy;
    s.applied = Some(now);
    locked.save()?;
    Ok(Applied {
        backend: kernel.backend(),
        until,
    })
}

/// Confirms the pending apply; `false` when none was pending.
pub fn confirm(state_dir: &Path) -> Result<bool, PortsError> {
    let mut locked = lock(state_dir)?;
    if locked.state.pending.take().is_none() {
        return Ok(false);
    }
    locked.save()?;
    Ok(true)
}

/// What one look at the state and the kernel found and did.
#[derive(Debug, PartialEq)]
pub enum Tick {
    Nothing,
    /// An unconfirmed apply ran out of time and the policy before it is back.
    RolledBack,
    /// The kernel had lost or changed the policy; it is back. The listing says what was there.
    Repaired(String),
    /// An apply still waits for confirmation.
    Waiting,
}

/// Rolls back an expired apply, and with `repair` checks the kernel against the policy in
/// force and restores it when they differ.
pub fn tick(state_dir: &Path, repair: bool) -> Result<Tick, PortsError> {
    let mut locked = lock(state_dir)?;
    let Some(backend) = locked.state.backend else {
        return Ok(Tick::Nothing);
    };
    if let Some(p) = locked.state.pending.clone() {
        if Timestamp::now() < p.until {
            return Ok(Tick::Waiting);
        }
        let previous = p.previous;
        let mut kernel = Kernel::open(backend);
        let back = p.previous_backend.unwrap_or(backend);
        if back != backend {
            kernel.remove()?;
            kernel = Kernel::open(back);
        }
        put(&mut kernel, previous.as_ref())?;
        let s = &mut locked.state;
        s.backend = Some(back);
        s.rolled_back = Some(RolledBack {
            at: Timestamp::now(),
            why: format!(
                "not confirmed by {}: the policy before it was restored",
                p.until.strftime("%Y-%m-%d %H:%M:%S UTC")
            ),
        });
        s.policy = previous;
        s.pending = None;
        s.applied = Some(Timestamp::now());
        locked.save()?;
        return Ok(Tick::RolledBack);
    }
    if !repair {
        return Ok(Tick::Nothing);
    }
    let Some(policy) = locked.state.policy.clone() else {
        return Ok(Tick::Nothing);
    };
    let mut kernel = Kernel::open(backend);
    let set = kernel.compile(&policy);
    let held = kernel.held()?;
    if held == kernel.wanted(&set) {
        return Ok(Tick::Nothing);
    }
    let found = held
        .iter()
        .map(|(f, c)| format!("{}: {} rules", f.label(), c.len()))
        .collect::<Vec<_>>()
        .join(", ");
    kernel.apply(&set)?;
    locked.state.repairs += 1;
    locked.save()?;
    Ok(Tick::Repaired(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_a_round_trip_and_an_absent_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = lock(dir.path()).unwrap();
        assert_eq!(l.state, PortsState::default());
        l.state.repairs = 3;
        l.state.pending = Some(Pending {
            until: Timestamp::UNIX_EPOCH,
            previous: None,
            previous_backend: None,
        });
        l.save().unwrap();
        drop(l);
        let back = read(&state_path(dir.path())).unwrap();
        assert_eq!(back.repairs, 3);
        assert!(back.pending.is_some());
        std::fs::write(state_path(dir.path()), "{not json").unwrap();
        assert!(matches!(
            lock(dir.path()).err().unwrap(),
            PortsError::Damaged { .. }
        ));
    }

    #[test]
    fn confirming_with_nothing_pending_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!confirm(dir.path()).unwrap());
        assert_eq!(tick(dir.path(), true).unwrap(), Tick::Nothing);
    }
}

//! `moat ports`: a declared port policy for the public interfaces that containers cannot
//! bypass, applied safely and kept in force.
//!
//! ```text
//! [ports] ─ policy ─▶ compile ─▶ ruleset ─ kernel (nftables | iptables) ◀─ keeper (confirm,
//!                                                                          rollback, drift)
//! Docker API ─▶ docker (what is published) ─▶ verdicts for `moat ports status`
//! ```
//!
//! - [`policy`] is the model and its validation (including "this would cut your SSH");
//! - [`compile`] turns it into rules, pure;
//! - [`kernel`] applies, removes and reads back moat's own objects;
//! - [`keeper`] holds the state file, the confirmation window and drift repair;
//! - [`docker`] lists published ports and judges them.

pub mod compile;
pub mod docker;
pub mod keeper;
pub mod kernel;
pub mod policy;

pub use policy::{Backend, PortPolicy, PortsTable};

use std::path::PathBuf;

use crate::netfilter::NetfilterError;

/// Why the port policy could not be read, applied, checked or removed.
#[derive(Debug, thiserror::Error)]
pub enum PortsError {
    /// An iptables-family program failed.
    #[error(transparent)]
    Program(#[from] NetfilterError),
    /// nftables refused a script or a listing; its message.
    #[error("{0}")]
    Nft(String),
    /// The state file or its directory.
    #[error("{what} {}: {source}", path.display())]
    State {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The state file is not what moat wrote.
    #[error("{} is damaged ({reason}); move it aside", path.display())]
    Damaged { path: PathBuf, reason: String },
}

impl PortsError {
    fn state(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> PortsError {
        let path = path.to_path_buf();
        move |source| PortsError::State { what, path, source }
    }
}

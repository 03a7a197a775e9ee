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

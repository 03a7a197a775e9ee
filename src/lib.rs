//! moat protects an internet-facing Docker or Docker Swarm host: it follows logs, recognises
//! abuse such as bots guessing Portainer passwords, and bans the client where the ban works.
//!
//! # Layout
//!
//! The modules follow the flow of data (see `DESIGN.md` in the project's shared notes):
//!
//! - [`source`]: bytes to lines (files, rotated `.gz`, stdin), never decoding them;
//! - [`detect`]: a line to a failure `{client, time}`: prefilter, regex and JSON filters, time
//!   parsing, the built-in filter library. Pure;
//! - [`jail`]: failures to ban decisions: sliding windows per client key, ignore lists, bounded
//!   memory. Pure;
//! - [`config`]: the TOML schema and validation with file:line:column errors;
//! - [`scan`]: the offline pipeline behind `moat scan` and its report;
//! - [`init`]: what `moat init` sees on a host and the configuration it writes;
//! - [`terminal`]: text an attacker wrote made safe to print (control characters shown as
//!   escapes);
//! - [`cli`]: the subcommands, thin wrappers over the above.
//!
//! The daemon (`moat run`), the ledger and the enforcers arrive in later issues and plug into
//! the same [`detect`] and [`jail`] stages.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod init;
pub mod jail;
pub mod ledger;
pub mod netfilter;
pub mod ports;
pub mod scan;
pub mod source;
pub mod vocab;

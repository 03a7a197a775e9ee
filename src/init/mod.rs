//! `moat init`: a working configuration for the host moat runs on.
//!
//! Three stages, as elsewhere in moat: [`host`] looks (web servers' configurations and logs,
//! Docker containers, the SSH log, the admin's session, networks, listening sockets, which
//! kernel enforcer works), [`plan`] decides (a [`plan::Plan`]: jails with their filters and
//! sources, the enforcer, the ignore list, what Cloudflare in front means, a port policy to
//! propose), and [`render`] writes the commented configuration and the summary. Only [`host`]
//! does I/O; `cli::init` writes the file. [`nginx`] reads nginx's configuration syntax.

pub mod host;
pub mod nginx;
pub mod plan;
pub mod render;

/// The configuration the Debian package installs: `moat init` may replace it untouched.
pub const PACKAGED_DEFAULT: &str = include_str!("../../dist/moat.toml");

//! Detection: from a line of bytes to a failure `{client, time}`. Pure: no I/O, no clock.
//!
//! - [`prefilter`] decides cheaply which filters could match a line at all (required literals,
//!   one search for every filter reading the same source);
//! - [`filter`] holds the filter definition ([`FilterSpec`], as written in TOML) and the compiled
//!   [`Filter`] that turns a line into a [`Verdict`];
//! - [`pattern`] expands fail2ban-style tags (`<HOST>`) and compiles patterns, on the linear-time
//!   `regex` engine unless a pattern needs look-around;
//! - [`json`] matches JSON-lines logs by field;
//! - [`time`] reads the timestamp of matching lines;
//! - [`fail2ban`] reads fail2ban's own `filter.d` files and runs them as fail2ban does;
//! - [`library`] is the built-in filter library; [`lint`] finds patterns that let attacker text
//!   choose the client.

pub mod context;
pub mod fail2ban;
pub mod filter;
pub mod json;
pub mod library;
pub mod lint;
pub mod pattern;
pub mod prefilter;
pub mod proxies;
pub mod time;
pub mod verdict;

pub use context::LineContext;
pub use filter::{Filter, FilterSpec};
pub use prefilter::Prefilter;
pub use proxies::Proxies;
pub use time::TimeFormat;
pub use verdict::{Failure, Verdict};

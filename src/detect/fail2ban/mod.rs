//! fail2ban's filters, read unchanged from a fail2ban installation (`/etc/fail2ban/filter.d`)
//! and run as fail2ban runs them.
//!
//! - [`ini`] reads fail2ban's INI dialect (Python's `configparser` plus `%(known/...)s`);
//! - [`reader`] resolves a filter's files, includes, `[Init]` options and `<tag>` references
//!   into a [`FilterDefinition`]: the regexes and settings fail2ban would use;
//! - [`tags`] replaces fail2ban's regex tags (`<HOST>`, `<F-USER>`, `<SKIPLINES>`) with the
//!   groups fail2ban uses; [`pyre`] reads the resulting Python regex and writes it for Rust;
//!   [`engine`] compiles it, on the linear `regex` engine unless look-around or
//!   back-references need `fancy-regex`;
//! - [`dates`] is fail2ban's date detection (default templates, `datepattern`, `{DATE}`,
//!   `EPOCH`, `TAI64N`) and reading of the date into a time;
//! - [`matcher`] is a filter at work: lines in order, failures out, with fail2ban's multi-line
//!   buffer (`maxlines`) and connection joining (`<F-MLFID>`);
//! - [`literals`] finds the text a regex needs, for skipping lines cheaply;
//! - [`adapter`] puts a filter's results into moat's pipeline as verdicts.
//!
//! Everything here is pure: the file system is reached through [`reader::ConfigFiles`], which
//! `config::fail2ban` implements, and the clock is a value handed in. fail2ban's filters are
//! GPL-2 and are never copied into moat: they are read from the user's installation.

pub mod adapter;
pub mod dates;
pub mod engine;
pub mod ini;
pub mod literals;
pub mod matcher;
pub mod pyre;
pub mod reader;
pub mod tags;

pub use matcher::{Fail2banFilter, Found, Matcher};
pub use reader::{ConfigFiles, FilterDefinition, FilterLocation, ReadError};

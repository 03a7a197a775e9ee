//! fail2ban's filters, read unchanged from a fail2ban installation (`/etc/fail2ban/filter.d`)
//! and run as fail2ban runs them.
//!
//! - [`ini`] reads fail2ban's INI dialect (Python's `configparser` plus `%(known/...)s`);
//! - [`reader`] resolves a filter's files, includes, `[Init]` options and `<tag>` references
//!   into a [`FilterDefinition`]: the regexes and settings fail2ban would use;
//!
//! Everything here is pure: the file system is reached through [`reader::ConfigFiles`], which
//! `config::fail2ban` implements. fail2ban's filters are GPL-2 and are never copied into moat:
//! they are read from the user's installation.

pub mod ini;
pub mod reader;

pub use reader::{ConfigFiles, FilterDefinition, FilterLocation, ReadError};

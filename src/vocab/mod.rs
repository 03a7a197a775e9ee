//! The vocabulary every layer shares: small types with no behaviour beyond their own, and no
//! imports from the rest of moat. Everything else may use them; they use nothing else.
//!
//! - [`lines`]: [`Line`], the cap [`MAX_LINE`], splitting blocks of lines;
//! - [`target`]: [`Target`] and [`parse_target`], the addresses and networks moat bans;
//! - [`client`]: [`ClientKey`], a client as jails count it;
//! - [`ports`]: [`Ports`], the ports a ban covers;
//! - [`cursor`]: [`Cursor`], where a source was read up to;
//! - [`time`]: times and durations written for people;
//! - [`terminal`]: text an attacker wrote, made safe to print;
//! - [`names`]: the one shape of the names moat writes into shared places.

pub mod client;
pub mod cursor;
pub mod lines;
pub mod names;
pub mod ports;
pub mod target;
pub mod terminal;
pub mod time;

pub use client::ClientKey;
pub use cursor::{Cursor, FileCursor};
pub use lines::{Line, MAX_LINE};
pub use ports::Ports;
pub use target::{parse_target, Net, Target};

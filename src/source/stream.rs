//! Stream sources: sources that are not files but a program's output or an API's (journald,
//! Docker's container logs). Each kind is one type implementing [`Stream`] and one entry in
//! [`KINDS`]: from there the configuration accepts it, `moat scan -c` reads its past
//! ([`Stream::read_all`]) and the daemon follows it ([`Stream::follow`]), with no other change.
//!
//! A stream has parts (the journal is one part; a `docker:label=` source has one part per
//! container), each with its own cursor, the stream's own notion of a position (journald's
//! cursor, Docker's timestamp). The daemon saves the cursors and hands them back at the next
//! start.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::ProducedLines;
use crate::vocab::Cursor;

/// Lines a stream read from one of its parts.
#[derive(Debug)]
pub struct StreamBlock {
    /// The part they come from: the key its cursor is saved under.
    pub part: String,
    /// Complete lines, each ending in `\n`, none over the cap.
    pub block: Vec<u8>,
    /// Where the part is read up to after them.
    pub cursor: Option<Cursor>,
}

/// How a stream is doing, for `moat status`.
#[derive(Clone, Debug, Default)]
pub struct StreamHealth {
    pub parts: Vec<PartHealth>,
    /// What keeps it from being read, while that lasts.
    pub error: Option<String>,
}

/// One part's counts.
#[derive(Clone, Debug, Default)]
pub struct PartHealth {
    pub name: String,
    pub lines: u64,
    /// Lines over the cap, skipped.
    pub overlong: u64,
}

/// A stream's health, written by its reader and read by status.
pub type Health = Arc<Mutex<StreamHealth>>;

/// Where a stream resumes.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// The cursors saved for its parts, by part.
    pub cursors: HashMap<String, String>,
    /// A part without a cursor is read from its start (else from now).
    pub from_start: bool,
}

/// What following a stream is: a task to spawn.
pub type Following = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source that is a stream.
pub trait Stream: Send + Sync {
    /// Follows the stream until `out` is closed: reconnecting, restarting its program, with a
    /// growing pause, and saying how it goes in `health`.
    fn follow(&self, resume: Resume, out: mpsc::Sender<StreamBlock>, health: Health) -> Following;

    /// Everything the stream holds now, to its end (offline).
    fn read_all(&self) -> std::io::Result<ProducedLines>;
}

/// A kind of stream: the stream a configured source names, if it is of this kind (and an
/// error when it is of this kind but malformed).
pub type Kind = fn(&str) -> Option<Result<Box<dyn Stream>, String>>;

/// Every kind of stream moat reads: the one registration of a new kind.
pub const KINDS: &[Kind] = &[super::journald::stream, super::docker::stream];

/// The stream `source` names, if it names one.
pub fn parse(source: &str) -> Option<Result<Box<dyn Stream>, String>> {
    KINDS.iter().find_map(|kind| kind(source))
}

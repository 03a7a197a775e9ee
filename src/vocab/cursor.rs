//! Cursors: where a source was read up to, saved at each checkpoint so that a restart neither
//! loses nor re-reads a line.

/// Where a source was read up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// A followed file.
    File(FileCursor),
    /// A stream that names its own positions: journald's cursor, Docker's timestamp of the
    /// last line read.
    Stream(String),
}

/// Where a followed file was read up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCursor {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    /// The file's first bytes (up to 64) when the cursor was taken: tells a file from another
    /// that reused its inode.
    pub fingerprint: Vec<u8>,
}

impl Cursor {
    /// The file position, for a file's cursor.
    pub fn file(&self) -> Option<&FileCursor> {
        match self {
            Cursor::File(f) => Some(f),
            Cursor::Stream(_) => None,
        }
    }

    /// The stream position, for a stream's cursor.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Cursor::Stream(s) => Some(s),
            Cursor::File(_) => None,
        }
    }
}

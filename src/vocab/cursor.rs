//! Cursors: where a source was read up to, saved at each checkpoint so that a restart neither
//! loses nor re-reads a line.

/// Where a followed file was read up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
    /// The file's first bytes (up to 64) when the cursor was taken: tells a file from another
    /// that reused its inode.
    pub fingerprint: Vec<u8>,
}

//! Following a log file as it grows and is rotated, without losing or re-reading a line.
//!
//! A [`FileFollower`] is told "look again" (by inotify, or a slow safety timer) and then reads
//! whatever is new. It is driven, not driving, so it has no threads or clock of its own and a
//! test can call [`FileFollower::poll`] exactly when it wants.
//!
//! What it handles, and how:
//! - **rename and create** (logrotate's default, nginx reopening on USR1): the path now names
//!   a new inode. The old file is still open here; it is read to its end first and kept open
//!   ("retired") for a while, because the writer goes on writing to it until it reopens.
//! - **delete and recreate**: the same, the deleted file being readable through the open handle.
//! - **copytruncate**: the file shrinks below the offset, or its first bytes change; it is read
//!   again from its start.
//! - **symlink retarget**: the path is resolved at every look, so a new target is a new inode.
//! - **a partial last line** waits for its newline; the cursor never points inside a line.
//! - **an overlong line** is cut at [`MAX_LINE`] and the rest skipped to its newline.
//!
//! The [`Cursor`] (device, inode, offset, fingerprint of the first bytes) is what the ledger
//! saves. On restart [`FileFollower::resume`] continues from it; when the file was rotated while
//! moat was stopped, it finds the old file by its inode in the same directory and reads its rest
//! before the new one.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::MAX_LINE;
use crate::config::daemon::FollowFrom;
use crate::ledger::Cursor;

/// How many of a file's first bytes identify it beside its inode.
pub const FINGERPRINT_LEN: usize = 64;
/// A rotated file is kept open this long after its last new byte.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);
/// At most this much is read per file per poll, so one busy file cannot starve the others or
/// hold a large buffer.
const READ_BUDGET: usize = 1 << 20;

/// An open file and how far it was consumed.
#[derive(Debug)]
struct Reading {
    file: File,
    dev: u64,
    ino: u64,
    /// The offset after the last complete line handed out.
    offset: u64,
    fingerprint: Vec<u8>,
    /// Bytes after `offset` read but not yet ending in a newline.
    partial: Vec<u8>,
    /// Skipping the rest of an overlong line.
    skipping: bool,
    last_data: Instant,
    /// Lines were handed out from this file.
    emitted: bool,
}

impl Reading {
    fn open(path: &Path, offset: u64) -> io::Result<Reading> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(Reading::from_file(file, &meta, offset))
    }

    fn from_file(file: File, meta: &Metadata, offset: u64) -> Reading {
        let mut r = Reading {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            fingerprint: Vec::new(),
            partial: Vec::new(),
            skipping: false,
            last_data: Instant::now(),
            emitted: false,
        };
        r.fingerprint = r.first_bytes().unwrap_or_default();
        r
    }

    fn first_bytes(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; FINGERPRINT_LEN];
        let n = self.file.read_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// True when the file was truncated or rewritten in place since it was read.
    fn was_truncated(&mut self) -> io::Result<bool> {
        let size = self.file.metadata()?.len();
        let read_to = self.offset + self.partial.len() as u64;
        if size < read_to {
            return Ok(true);
        }
        let now = self.first_bytes()?;
        let known = self.fingerprint.len().min(now.len());
        if now[..known] != self.fingerprint[..known] {
            return Ok(true);
        }
        if now.len() > self.fingerprint.len() {
            self.fingerprint = now;
        }
        Ok(false)
    }

    /// Reads what is new, handing complete lines to `out`; true when the budget ran out
    /// before the end of the file.
    fn read_new(
        &mut self,
        with_cursor: bool,
        out: &mut dyn FnMut(&[u8], Option<Cursor>),
    ) -> io::Result<bool> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut budget = READ_BUDGET;
        let mut block = Vec::new();
        while budget > 0 {
            let at = self.offset + self.partial.len() as u64;
            let n = self.file.read_at(&mut buf[..budget.min(256 * 1024)], at)?;
            if n == 0 {
                break;
            }
            budget -= n;
            self.last_data = Instant::now();
            block.clear();
            let mut data = &buf[..n];
            while !data.is_empty() {
                match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        let (line, rest) = data.split_at(i + 1);
                        if self.skipping {
                            self.skipping = false;
                            self.offset += (self.partial.len() + line.len()) as u64;
                            self.partial.clear();
                        } else if self.partial.is_empty() {
                            block.extend_from_slice(line);
                            self.offset += line.len() as u64;
                        } else {
                            self.partial.extend_from_slice(line);
                            block.extend_from_slice(&self.partial);
                            self.offset += self.partial.len() as u64;
                            self.partial.clear();
                        }
                        data = rest;
                    }
                    None => {
                        // `partial` only counts bytes for the offset while skipping; the
                        // skipped tail is not kept.
                        if self.skipping {
                            self.offset += data.len() as u64;
                        } else {
                            self.partial.extend_from_slice(data);
                            if self.partial.len() > MAX_LINE {
                                block.extend_from_slice(&self.partial[..MAX_LINE]);
                                block.push(b'\n');
                                self.offset += self.partial.len() as u64;
                                self.partial.clear();
                                self.skipping = true;
                            }
                        }
                        data = &[];
                    }
                }
            }
            // A line cut at MAX_LINE has its own newline; lines inside the block keep theirs.
            if !block.is_empty() {
                self.emitted = true;
                out(&block, with_cursor.then(|| self.cursor()));
            }
        }
        Ok(budget == 0)
    }

    /// The bytes of a last line that will never be completed (its file was rotated away).
    fn flush_partial(&mut self, with_cursor: bool, out: &mut dyn FnMut(&[u8], Option<Cursor>)) {
        if !self.partial.is_empty() && !self.skipping {
            let mut line = std::mem::take(&mut self.partial);
            self.offset += line.len() as u64;
            line.push(b'\n');
            out(&line, with_cursor.then(|| self.cursor()));
        }
    }
}

/// What a poll saw, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollNotes {
    pub rotated: bool,
    pub truncated: bool,
    pub opened: bool,
    /// Stopped at the read budget: poll again soon.
    pub more: bool,
}

/// Follows one path.
#[derive(Debug)]
pub struct FileFollower {
    path: PathBuf,
    current: Option<Reading>,
    retired: Vec<Reading>,
}

impl FileFollower {
    /// Starts following `path`, from `cursor` when there is one, else from its end or start.
    /// Returns a note for the log when the saved cursor could not be honoured exactly.
    pub fn resume(
        path: &Path,
        cursor: Option<&Cursor>,
        from: FollowFrom,
    ) -> (FileFollower, Option<String>) {
        let mut f = FileFollower {
            path: path.to_path_buf(),
            current: None,
            retired: Vec::new(),
        };
        let Ok(file) = File::open(path) else {
            // Not there yet: followed from its start when it appears.
            return (f, None);
        };
        let Ok(meta) = file.metadata() else {
            return (f, None);
        };
        let Some(cursor) = cursor else {
            let offset = match from {
                FollowFrom::End => meta.len(),
                FollowFrom::Start => 0,
            };
            f.current = Some(Reading::from_file(file, &meta, offset));
            return (f, None);
        };
        let mut reading = Reading::from_file(file, &meta, 0);
        let same_file = (meta.dev(), meta.ino()) == (cursor.dev, cursor.ino)
            && fingerprint_matches(&reading.fingerprint, &cursor.fingerprint);
        if same_file {
            if meta.len() >= cursor.offset {
                reading.offset = cursor.offset;
                f.current = Some(reading);
                return (f, None);
            }
            f.current = Some(reading);
            return (
                f,
                Some("truncated while moat was stopped; reading it from its start".into()),
            );
        }
        // Rotated while stopped: the old file may still be beside the new one.
        let note = match find_by_inode(path, cursor) {
            Some(old) => {
                let name = old.1.display().to_string();
                let mut old = old.0;
                old.offset = cursor
                    .offset
                    .min(old.file.metadata().map_or(0, |m| m.len()));
                f.retired.push(old);
                format!("rotated while moat was stopped; reading the rest of {name} first")
            }
            None => "rotated while moat was stopped and the old file is gone (compressed or \
                     deleted); reading the new file from its start"
                .into(),
        };
        f.current = Some(reading);
        (f, Some(note))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cursor of the file at the path, when one is open.
    pub fn cursor(&self) -> Option<Cursor> {
        self.current.as_ref().map(Reading::cursor)
    }

    /// Bytes in the file not yet read (for "lag" in status).
    pub fn lag(&self) -> u64 {
        self.current.as_ref().map_or(0, |r| {
            r.file.metadata().map_or(0, |m| {
                m.len().saturating_sub(r.offset + r.partial.len() as u64)
            })
        })
    }

    /// Reads everything new, in order: rotated files first, then the file at the path.
    /// `out` gets blocks of complete lines (each ending in `\n`) with the cursor to save after
    /// them, if any.
    ///
    /// Lines of a rotated file come with its cursor only until the new file has handed out
    /// lines: up to then a restart must finish the old file first (found by its inode); after
    /// that the new file's cursor is the one to keep.
    pub fn poll(&mut self, out: &mut dyn FnMut(&[u8], Option<Cursor>)) -> io::Result<PollNotes> {
        let mut notes = PollNotes::default();
        let old_cursor = !self.current.as_ref().is_some_and(|c| c.emitted);
        for old in &mut self.retired {
            notes.more |= old.read_new(old_cursor, out)?;
        }
        let now = Instant::now();
        self.retired.retain_mut(|old| {
            let keep = now.duration_since(old.last_data) < RETIRE_AFTER;
            if !keep {
                old.flush_partial(old_cursor, out);
            }
            keep
        });
        if let Some(cur) = &mut self.current {
            if cur.was_truncated()? {
                notes.truncated = true;
                // copytruncate: lines written before the copy and not yet read are in the
                // copy; read them from there first.
                if let Some(mut copy) = find_copy(&self.path, &cur.fingerprint, cur.offset) {
                    copy.offset = cur.offset;
                    notes.more |= copy.read_new(true, out)?;
                    copy.flush_partial(true, out);
                }
                cur.offset = 0;
                cur.partial.clear();
                cur.skipping = false;
                cur.fingerprint = cur.first_bytes()?;
            }
            notes.more |= cur.read_new(true, out)?;
        }
        // Does the path still name the file being read?
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let same = self
                    .current
                    .as_ref()
                    .is_some_and(|c| (c.dev, c.ino) == (meta.dev(), meta.ino()));
                if !same {
                    if let Ok(mut fresh) = Reading::open(&self.path, 0) {
                        notes.opened = true;
                        if let Some(old) = self.current.take() {
                            notes.rotated = true;
                            self.retired.push(old);
                        }
                        notes.more |= fresh.read_new(true, out)?;
                        self.current = Some(fresh);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted or between rename and create: keep reading the open handle.
            }
            Err(e) => return Err(e),
        }
        Ok(notes)
    }

    /// True while rotated files are still being drained.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }
}

/// Another file beside `path` that starts with `fingerprint` and is at least `len` long: the
/// copy copytruncate made.
fn find_copy(path: &Path, fingerprint: &[u8], len: u64) -> Option<Reading> {
    if fingerprint.is_empty() {
        return None;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let own = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.len() < len || Some((meta.dev(), meta.ino())) == own {
            continue;
        }
        let Ok(reading) = Reading::open(&entry.path(), 0) else {
            continue;
        };
        if reading.fingerprint.starts_with(fingerprint) {
            return Some(reading);
        }
    }
    None
}

fn fingerprint_matches(now: &[u8], saved: &[u8]) -> bool {
    let n = now.len().min(saved.len());
    now[..n] == saved[..n] && now.len() >= saved.len()
}

/// A file in `path`'s directory with the cursor's device and inode and a matching fingerprint.
fn find_by_inode(path: &Path, cursor: &Cursor) -> Option<(Reading, PathBuf)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if (meta.dev(), meta.ino()) != (cursor.dev, cursor.ino) || !meta.is_file() {
            continue;
        }
        let reading = Reading::open(&entry.path(), 0).ok()?;
        if fingerprint_matches(&reading.fingerprint, &cursor.fingerprint) {
            return Some((reading, entry.path()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn collect(f: &mut FileFollower) -> String {
        let mut s = String::new();
        while f
            .poll(&mut |b, _| s.push_str(std::str::from_utf8(b).unwrap()))
            .unwrap()
            .more
        {}
        s
    }

    #[test]
    fn follows_partial_lines_and_every_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "old\n");
        let (mut f, note) = FileFollower::resume(&log, None, FollowFrom::End);
        assert!(note.is_none());
        append(&log, "a\nb");
        assert_eq!(collect(&mut f), "a\n");
        append(&log, "c\n");
        assert_eq!(collect(&mut f), "bc\n");

        // rename and create, with a line written to the old file after the rename
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        append(&dir.path().join("access.log.1"), "late\n");
        append(&log, "new\n");
        assert_eq!(collect(&mut f), "late\nnew\n");

        // copytruncate, with a line written before the copy and not read yet
        append(&log, "more\n");
        assert_eq!(collect(&mut f), "more\n");
        append(&log, "unread\n");
        std::fs::copy(&log, dir.path().join("access.log.2")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "after\n");
        assert_eq!(collect(&mut f), "unread\nafter\n");
        std::fs::remove_file(dir.path().join("access.log.2")).unwrap();

        // truncated and refilled past the old offset before the poll: the fingerprint
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "0123456789 refilled beyond the old offset\n");
        assert_eq!(
            collect(&mut f),
            "0123456789 refilled beyond the old offset\n"
        );

        // delete and recreate
        append(&log, "x\n");
        std::fs::remove_file(&log).unwrap();
        assert_eq!(collect(&mut f), "x\n");
        append(&log, "y\n");
        assert_eq!(collect(&mut f), "y\n");

        // symlink retarget
        let link = dir.path().join("current.log");
        let t1 = dir.path().join("t1.log");
        let t2 = dir.path().join("t2.log");
        append(&t1, "one\n");
        std::os::unix::fs::symlink(&t1, &link).unwrap();
        let (mut f, _) = FileFollower::resume(&link, None, FollowFrom::Start);
        assert_eq!(collect(&mut f), "one\n");
        append(&t2, "two\n");
        let tmp = dir.path().join("tmp.link");
        std::os::unix::fs::symlink(&t2, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        append(&t1, "one-late\n");
        assert_eq!(collect(&mut f), "one-late\ntwo\n");
    }

    #[test]
    fn resumes_from_a_cursor_across_a_rotation_while_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "1\n2\n");
        let (mut f, _) = FileFollower::resume(&log, None, FollowFrom::Start);
        assert_eq!(collect(&mut f), "1\n2\n");
        let cur = f.cursor().unwrap();
        drop(f);
        append(&log, "3\n");
        let (mut f, note) = FileFollower::resume(&log, Some(&cur), FollowFrom::End);
        assert!(note.is_none());
        assert_eq!(collect(&mut f), "3\n");
        let cur = f.cursor().unwrap();
        drop(f);
        append(&log, "4\n");
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        append(&log, "5\n");
        let (mut f, note) = FileFollower::resume(&log, Some(&cur), FollowFrom::End);
        assert!(note.unwrap().contains("access.log.1"));
        assert_eq!(collect(&mut f), "4\n5\n");
    }

    #[test]
    fn an_overlong_line_is_cut_and_the_rest_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        append(&log, "");
        let (mut f, _) = FileFollower::resume(&log, None, FollowFrom::Start);
        let long = "z".repeat(MAX_LINE + 10);
        append(&log, &long);
        append(&log, &long);
        append(&log, "\nok\n");
        let out = collect(&mut f);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "ok");
        assert_eq!(
            f.cursor().unwrap().offset,
            std::fs::metadata(&log).unwrap().len()
        );
    }
}

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
//! - **an overlong line** (over [`MAX_LINE`]) is skipped whole and counted, never matched.
//! - **only regular files** are followed: a FIFO or a device at a followed path is an error,
//!   opened without blocking, so that whoever can write to a log directory cannot stall moat.
//!
//! The [`FileCursor`] (device, inode, offset, fingerprint of the first bytes) is what the ledger
//! saves. On restart [`FileFollower::resume`] continues from it; when the file was rotated while
//! moat was stopped, it finds the old file by its inode in the same directory and reads its rest
//! before the new one.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::LineAssembler;
use crate::vocab::FileCursor;

/// How many of a file's first bytes identify it beside its inode.
pub const FINGERPRINT_LEN: usize = 64;
/// A rotated file is kept open this long after its last new byte.
pub const RETIRE_AFTER: Duration = Duration::from_secs(10);
/// At most this much is read per file per poll, so one busy file cannot starve the others or
/// hold a large buffer.
const READ_BUDGET: usize = 1 << 20;

/// Where a file seen for the first time is read from.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FollowFrom {
    /// Only lines written from now on: old lines were somebody else's business.
    #[default]
    End,
    /// The whole file.
    Start,
}

/// An open file and how far it was consumed.
#[derive(Debug)]
struct Reading {
    file: File,
    dev: u64,
    ino: u64,
    /// The offset after the last complete line handed out (or skipped as overlong).
    offset: u64,
    fingerprint: Vec<u8>,
    /// The line after `offset`, read but without its newline yet.
    lines: LineAssembler,
    last_data: Instant,
    /// When the file was last looked at.
    looked: std::time::SystemTime,
    /// Lines were handed out from this file.
    emitted: bool,
}

impl Reading {
    fn open(path: &Path, offset: u64) -> io::Result<Reading> {
        let (file, meta) = open_regular(path)?;
        Ok(Reading::from_file(file, &meta, offset))
    }

    fn from_file(file: File, meta: &Metadata, offset: u64) -> Reading {
        let mut r = Reading {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            fingerprint: Vec::new(),
            lines: LineAssembler::default(),
            last_data: Instant::now(),
            looked: std::time::SystemTime::now(),
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

    fn cursor(&self) -> FileCursor {
        FileCursor {
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// True when the file was truncated or rewritten in place since it was read.
    fn was_truncated(&mut self) -> io::Result<bool> {
        let size = self.file.metadata()?.len();
        let read_to = self.offset + self.lines.pending();
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
        out: &mut dyn FnMut(&[u8], Option<FileCursor>),
    ) -> io::Result<bool> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut budget = READ_BUDGET;
        let mut block = Vec::new();
        while budget > 0 {
            let at = self.offset + self.lines.pending();
            let n = self.file.read_at(&mut buf[..budget.min(256 * 1024)], at)?;
            if n == 0 {
                break;
            }
            budget -= n;
            self.last_data = Instant::now();
            block.clear();
            self.lines.push(&buf[..n], &mut block);
            // Everything up to the line still open is done with, handed out or skipped.
            self.offset = at + n as u64 - self.lines.pending();
            if !block.is_empty() {
                self.emitted = true;
                out(&block, with_cursor.then(|| self.cursor()));
            }
        }
        Ok(budget == 0)
    }

    /// The bytes of a last line that will never be completed (its file was rotated away).
    fn flush_partial(&mut self, with_cursor: bool, out: &mut dyn FnMut(&[u8], Option<FileCursor>)) {
        let pending = self.lines.pending();
        let mut line = Vec::new();
        self.lines.finish(&mut line);
        self.offset += pending;
        if !line.is_empty() {
            out(&line, with_cursor.then(|| self.cursor()));
        }
    }
}

/// Opens `path` for reading if it is a regular file. Without blocking: `open()` of a FIFO
/// waits for a writer, and a device such as `/dev/zero` never ends; both are refused, after
/// the open, from the descriptor's own type, so that swapping the path between a check and
/// the open changes nothing.
pub fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = if meta.file_type().is_fifo() {
            "a FIFO"
        } else if meta.is_dir() {
            "a directory"
        } else if meta.file_type().is_char_device() || meta.file_type().is_block_device() {
            "a device"
        } else if meta.file_type().is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{kind}, not a regular file: moat follows only regular files"),
        ));
    }
    Ok((file, meta))
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
    /// Overlong lines of files no longer open.
    overlong_gone: u64,
}

impl FileFollower {
    /// Starts following `path`, from `cursor` when there is one, else from its end or start.
    /// Returns a note for the log when the saved cursor could not be honoured exactly.
    pub fn resume(
        path: &Path,
        cursor: Option<&FileCursor>,
        from: FollowFrom,
    ) -> (FileFollower, Option<String>) {
        let mut f = FileFollower {
            path: path.to_path_buf(),
            current: None,
            retired: Vec::new(),
            overlong_gone: 0,
        };
        // Not there yet (followed from its start when it appears), or not a file moat can
        // read: the first poll says why.
        let Ok((file, meta)) = open_regular(path) else {
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
    pub fn cursor(&self) -> Option<FileCursor> {
        self.current.as_ref().map(Reading::cursor)
    }

    /// Bytes in the file not yet read (for "lag" in status).
    pub fn lag(&self) -> u64 {
        self.current.as_ref().map_or(0, |r| {
            r.file
                .metadata()
                .map_or(0, |m| m.len().saturating_sub(r.offset + r.lines.pending()))
        })
    }

    /// Reads everything new, in order: rotated files first, then the file at the path.
    /// `out` gets blocks of complete lines (each ending in `\n`) with the cursor to save after
    /// them, if any.
    ///
    /// Lines of a rotated file come with its cursor only until the new file has handed out
    /// lines: up to then a restart must finish the old file first (found by its inode); after
    /// that the new file's cursor is the one to keep.
    pub fn poll(
        &mut self,
        out: &mut dyn FnMut(&[u8], Option<FileCursor>),
    ) -> io::Result<PollNotes> {
        let mut notes = PollNotes::default();
        let old_cursor = !self.current.as_ref().is_some_and(|c| c.emitted);
        for old in &mut self.retired {
            notes.more |= old.read_new(old_cursor, out)?;
        }
        let now = Instant::now();
        let mut gone = 0;
        self.retired.retain_mut(|old| {
            let keep = now.duration_since(old.last_data) < RETIRE_AFTER;
            if !keep {
                old.flush_partial(old_cursor, out);
                gone += old.lines.overlong;
            }
            keep
        });
        self.overlong_gone += gone;
        if let Some(cur) = &mut self.current {
            // Empty at the last look: the truncation of a copytruncate cannot be seen in the
            // file itself (empty, then a burst, copied, emptied, then new lines), only by the
            // copy appearing beside it since, holding what the file does not start with.
            let was_empty =
                cur.fingerprint.is_empty() && cur.offset == 0 && cur.lines.pending() == 0;
            let copy = if cur.was_truncated()? {
                Some(find_copy(&self.path, cur, &cur.fingerprint, None))
            } else if was_empty && cur.file.metadata()?.len() > 0 {
                let head = cur.first_bytes()?;
                find_copy(&self.path, cur, b"", Some(cur.looked))
                    .filter(|c| !head.starts_with(&c.fingerprint))
                    .map(Some)
            } else {
                None
            };
            if let Some(copy) = copy {
                notes.truncated = true;
                // copytruncate: lines written before the copy and not yet read are in the
                // copy; read them from there first, all of them.
                if let Some(mut copy) = copy {
                    copy.offset = cur.offset;
                    while copy.read_new(true, out)? {}
                    copy.flush_partial(true, out);
                }
                cur.offset = 0;
                cur.lines.reset();
                cur.fingerprint = cur.first_bytes()?;
            }
            notes.more |= cur.read_new(true, out)?;
            cur.looked = std::time::SystemTime::now();
        }
        // Does the path still name the file being read?
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let same = self
                    .current
                    .as_ref()
                    .is_some_and(|c| (c.dev, c.ino) == (meta.dev(), meta.ino()));
                if !same {
                    match Reading::open(&self.path, 0) {
                        Ok(mut fresh) => {
                            notes.opened = true;
                            if let Some(old) = self.current.take() {
                                notes.rotated = true;
                                self.retired.push(old);
                            }
                            notes.more |= fresh.read_new(true, out)?;
                            self.current = Some(fresh);
                        }
                        // Gone between the look and the open: the next look sees it.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        // There but not readable (permissions, a FIFO, a device): an error
                        // for status and the log, never "not there yet".
                        Err(e) => return Err(e),
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

    /// Lines skipped because they were longer than the cap.
    pub fn overlong(&self) -> u64 {
        self.current
            .iter()
            .chain(&self.retired)
            .map(|r| r.lines.overlong)
            .sum::<u64>()
            + self.overlong_gone
    }

    /// True while rotated files are still being drained.
    pub fn has_retired(&self) -> bool {
        !self.retired.is_empty()
    }
}

/// The copy copytruncate made of `path` before truncating it, when it holds bytes past the
/// offset `cur` was read to (lines written before the copy that were not read yet): another
/// regular file beside `path`, not compressed, that starts with `fingerprint`. A fingerprint shorter than
/// [`FINGERPRINT_LEN`] (the file was short, or empty, when last read) identifies little, so
/// then the copy must also be named after the file (`access.log.1`, `access.log-20261202`),
/// as logrotate names it. The most recently modified candidate wins.
///
/// `since`: only a copy modified after then, when the truncation could not be seen and only
/// the copy's appearance tells of it. File times come from a coarse clock (a tick, 4 or 10
/// ms, behind), hence a little slack; no more, or the copies of earlier rotations (made just
/// before a new file was opened) would pass for this one's.
fn find_copy(
    path: &Path,
    cur: &Reading,
    fingerprint: &[u8],
    since: Option<std::time::SystemTime>,
) -> Option<Reading> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?.to_string_lossy().into_owned();
    let weak = fingerprint.len() < FINGERPRINT_LEN;
    let since = since.map(|t| t - Duration::from_millis(20));
    let mut best: Option<(std::time::SystemTime, Reading)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        // Not the file being read (a rename moves it beside the path).
        if !meta.is_file()
            || meta.len() <= cur.offset
            || (meta.dev(), meta.ino()) == (cur.dev, cur.ino)
        {
            continue;
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if since.is_some_and(|t| modified < t) {
            continue;
        }
        if weak {
            let other = entry.file_name().to_string_lossy().into_owned();
            let named_after = other
                .strip_prefix(&name)
                .is_some_and(|rest| rest.starts_with(['.', '-', '_']));
            if !named_after {
                continue;
            }
        }
        let Ok(reading) = Reading::open(&entry.path(), 0) else {
            continue;
        };
        if !reading.fingerprint.starts_with(fingerprint)
            || reading.fingerprint.starts_with(&[0x1f, 0x8b])
        {
            continue;
        }
        if best.as_ref().is_none_or(|(m, _)| modified > *m) {
            best = Some((modified, reading));
        }
    }
    best.map(|(_, r)| r)
}

fn fingerprint_matches(now: &[u8], saved: &[u8]) -> bool {
    let n = now.len().min(saved.len());
    now[..n] == saved[..n] && now.len() >= saved.len()
}

/// A file in `path`'s directory with the cursor's device and inode and a matching fingerprint.
fn find_by_inode(path: &Path, cursor: &FileCursor) -> Option<(Reading, PathBuf)> {
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
    use crate::source::MAX_LINE;
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

    /// A burst written, copied and truncated before moat read any of it, into a file that was
    /// empty when moat last looked (so its fingerprint identifies nothing): the burst is read
    /// from the copy, once, then what follows in the truncated file.
    #[test]
    fn copytruncate_before_the_first_read_recovers_from_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "");
        // An older rotation that must not be taken for the copy.
        let old = dir.path().join("access.log.2");
        std::fs::write(&old, "old rotation\n".repeat(50)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        std::fs::write(dir.path().join("other.log"), "unrelated\n".repeat(50)).unwrap();
        let (mut f, _) = FileFollower::resume(&log, None, FollowFrom::End);
        assert_eq!(collect(&mut f), "");
        let burst: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        append(&log, &burst);
        std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "after\n");
        assert_eq!(collect(&mut f), format!("{burst}after\n"));

        // A burst larger than one read's budget is read from the copy to its end.
        std::fs::remove_file(dir.path().join("access.log.1")).unwrap();
        let big: String = (0..200_000)
            .map(|i| format!("burst line {i:08}\n"))
            .collect();
        assert!(big.len() > READ_BUDGET * 2);
        append(&log, &big);
        std::fs::copy(&log, dir.path().join("access.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "later\n");
        let got = collect(&mut f);
        assert_eq!(got.len(), big.len() + "later\n".len());
        assert!(got.ends_with("burst line 00199999\nlater\n"));

        // A new file (delete and recreate) empty when opened, with the copies of earlier
        // rotations beside it: its first lines are its own, not a copytruncate's.
        std::thread::sleep(Duration::from_millis(50));
        std::fs::remove_file(&log).unwrap();
        append(&log, "");
        assert_eq!(collect(&mut f), "");
        append(&log, "fresh\n");
        assert_eq!(collect(&mut f), "fresh\n");
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
    fn an_overlong_line_is_skipped_whole_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        append(&log, "");
        let (mut f, _) = FileFollower::resume(&log, None, FollowFrom::Start);
        // Just under the cap, then a line that is over it only once its last piece arrives
        // (the piece that completed a held partial line used to slip through uncut), then
        // one far over it.
        let under = "u".repeat(MAX_LINE);
        append(&log, &under);
        assert_eq!(collect(&mut f), "");
        append(&log, "\n");
        assert_eq!(collect(&mut f).len(), MAX_LINE + 1);
        append(&log, &"a".repeat(MAX_LINE - 10));
        assert_eq!(collect(&mut f), "");
        append(&log, &format!("{} 192.0.2.66\n", "b".repeat(100)));
        let long = "z".repeat(MAX_LINE + 10);
        append(&log, &long);
        // A restart in the middle of the overlong line resumes at its start, not inside it.
        assert_eq!(collect(&mut f), "");
        let cur = f.cursor().unwrap();
        drop(f);
        let (mut f, _) = FileFollower::resume(&log, Some(&cur), FollowFrom::End);
        append(&log, &long);
        append(&log, "\nok\n");
        assert_eq!(collect(&mut f), "ok\n");
        // Counted since this follower started (the line before the restart was the other's).
        assert_eq!(f.overlong(), 1);
        assert_eq!(
            f.cursor().unwrap().offset,
            std::fs::metadata(&log).unwrap().len()
        );
    }

    #[test]
    fn only_regular_files_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("access.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Neither the start nor a poll blocks on the FIFO (no writer ever opens it); the poll
        // says what is wrong.
        let (mut f, _) = FileFollower::resume(&fifo, None, FollowFrom::Start);
        let err = f.poll(&mut |_, _| panic!("no lines")).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let (mut f, _) = FileFollower::resume(Path::new("/dev/zero"), None, FollowFrom::Start);
        let err = f.poll(&mut |_, _| panic!("no lines")).unwrap_err();
        assert!(err.to_string().contains("a device"), "{err}");
        // A missing file is simply not there yet.
        let (mut f, _) =
            FileFollower::resume(&dir.path().join("later.log"), None, FollowFrom::Start);
        assert!(f.poll(&mut |_, _| panic!("no lines")).is_ok());
    }
}

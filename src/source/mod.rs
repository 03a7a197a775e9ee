//! Sources: where lines come from. This issue's sources are offline ones (a file, a rotated
//! `.gz`, standard input) read by `moat scan`; the live followers of the daemon build on the same
//! [`LineReader`].
//!
//! Lines are bytes, never `String`: invalid UTF-8 must not hide an attack. A line ends at `\n`;
//! a trailing `\r` is dropped; a line longer than [`MAX_LINE`] is cut there, flagged as
//! truncated, and the rest of it skipped, so one hostile line cannot grow memory without bound.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

pub use crate::detect::MAX_LINE;

/// One line: its bytes (without the line ending) and whether it was cut at [`MAX_LINE`].
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub truncated: bool,
}

/// Splits a byte stream into lines without copying them when it can.
pub struct LineReader<R> {
    inner: R,
    /// Holds a line that spans buffer refills, or the head of an overlong line.
    carry: Vec<u8>,
    max: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE)
    }

    pub fn with_max(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            carry: Vec::new(),
            max,
        }
    }

    /// Calls `each` for every line until the end of the stream. A last line without a newline
    /// is delivered too (offline reading; live followers wait for the newline instead).
    pub fn for_each_line(&mut self, mut each: impl FnMut(Line<'_>)) -> io::Result<u64> {
        let mut bytes_read = 0u64;
        let mut skipping = false; // inside the tail of an overlong line
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if !self.carry.is_empty() && !skipping {
                    let truncated = self.carry.len() > self.max;
                    self.carry.truncate(self.max);
                    each(Line {
                        bytes: trim_cr(&self.carry),
                        truncated,
                    });
                }
                self.carry.clear();
                return Ok(bytes_read);
            }
            let len = buf.len();
            let mut start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
                let end = start + nl;
                if skipping {
                    skipping = false;
                } else if self.carry.is_empty() {
                    let line = &buf[start..end];
                    let truncated = line.len() > self.max;
                    each(Line {
                        bytes: trim_cr(&line[..line.len().min(self.max)]),
                        truncated,
                    });
                } else {
                    let room = (self.max + 1).saturating_sub(self.carry.len());
                    self.carry
                        .extend_from_slice(&buf[start..end.min(start + room)]);
                    let truncated = self.carry.len() > self.max;
                    self.carry.truncate(self.max);
                    each(Line {
                        bytes: trim_cr(&self.carry),
                        truncated,
                    });
                    self.carry.clear();
                }
                start = end + 1;
            }
            if !skipping && start < len {
                // A partial line: keep at most max+1 bytes of it (the +1 tells "too long").
                let room = (self.max + 1).saturating_sub(self.carry.len());
                let take = (len - start).min(room);
                self.carry.extend_from_slice(&buf[start..start + take]);
                if self.carry.len() > self.max {
                    // Deliver the head now and skip the rest up to the next newline.
                    self.carry.truncate(self.max);
                    each(Line {
                        bytes: trim_cr(&self.carry),
                        truncated: true,
                    });
                    self.carry.clear();
                    skipping = true;
                }
            }
            self.inner.consume(len);
            bytes_read += len as u64;
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Where an offline scan reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    pub fn display(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".into(),
            Input::File(p) => p.display().to_string(),
        }
    }
}

/// An opened input: a reader that already undoes gzip when the file is compressed, and the
/// size on disk (for progress) when known.
pub struct Opened {
    pub reader: Box<dyn BufRead>,
    pub size: Option<u64>,
    pub modified: Option<std::time::SystemTime>,
    /// Bytes read from the file so far (before decompression), for progress.
    pub consumed: Arc<AtomicU64>,
}

/// Read-buffer size: big enough that the per-refill cost disappears, small enough for the
/// memory budget.
const BUF: usize = 256 * 1024;

/// Opens `input`; a file that starts with the gzip magic is decompressed (rotated
/// `access.log.2.gz`), whatever its name.
pub fn open(input: &Input) -> io::Result<Opened> {
    match input {
        Input::Stdin => Ok(Opened {
            reader: Box::new(BufReader::with_capacity(BUF, io::stdin())),
            size: None,
            modified: None,
            consumed: Arc::default(),
        }),
        Input::File(path) => open_file(path),
    }
}

fn open_file(path: &Path) -> io::Result<Opened> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory",
        ));
    }
    let consumed = Arc::<AtomicU64>::default();
    let counted = Counted {
        inner: file,
        count: consumed.clone(),
    };
    let mut reader = BufReader::with_capacity(BUF, counted);
    let gz = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::with_capacity(BUF, MultiGzDecoder::new(reader)))
    } else {
        Box::new(reader)
    };
    Ok(Opened {
        reader,
        size: Some(meta.len()),
        modified: meta.modified().ok(),
        consumed,
    })
}

/// Counts bytes pulled through a reader, for a progress bar that is right for compressed input.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize, buf: usize) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        LineReader::with_max(BufReader::with_capacity(buf, input), max)
            .for_each_line(|l| out.push((l.bytes.to_vec(), l.truncated)))
            .unwrap();
        out
    }

    #[test]
    fn splits_crlf_and_keeps_a_last_partial_line() {
        for buf in [1, 2, 3, 7, 64] {
            assert_eq!(
                lines(b"a\r\nbb\n\nccc", 100, buf),
                vec![
                    (b"a".to_vec(), false),
                    (b"bb".to_vec(), false),
                    (b"".to_vec(), false),
                    (b"ccc".to_vec(), false)
                ],
                "buffer {buf}"
            );
        }
    }

    #[test]
    fn overlong_lines_are_cut_and_flagged_and_the_next_line_survives() {
        for buf in [1, 3, 5, 64] {
            let got = lines(b"0123456789\nok\n0123456789", 4, buf);
            assert_eq!(
                got,
                vec![
                    (b"0123".to_vec(), true),
                    (b"ok".to_vec(), false),
                    (b"0123".to_vec(), true)
                ],
                "buffer {buf}"
            );
        }
        // Exactly max bytes is not truncated.
        assert_eq!(lines(b"0123\n", 4, 2), vec![(b"0123".to_vec(), false)]);
    }

    #[test]
    fn bytes_are_not_decoded() {
        assert_eq!(
            lines(b"\xff\x00x\n", 100, 8),
            vec![(b"\xff\x00x".to_vec(), false)]
        );
    }
}

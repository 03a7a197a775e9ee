//! Sources: where lines come from. [`LineReader`] reads offline inputs (a file, a rotated
//! `.gz`, standard input) for `moat scan`; [`follow`] follows files live for the daemon, and
//! [`LineAssembler`] turns the pieces a stream delivers (standard input, Docker's log frames)
//! into lines.
//!
//! Lines are bytes, never `String`: invalid UTF-8 must not hide an attack. A line ends at `\n`;
//! a trailing `\r` is dropped. A line longer than [`MAX_LINE`] is never matched, by any reader:
//! cut at the cap, a line anchored with `$` could match at the cut, where an attacker chose
//! what stands. It is counted as overlong and skipped to its newline, so one hostile line
//! cannot grow memory without bound either.

pub mod docker;
pub mod follow;
pub mod input;
pub mod journald;
pub mod stream;

use std::io::{self, BufRead};

pub use crate::vocab::lines::{split_lines, trim_cr, Line, MAX_LINE};
pub use input::{open, AlignedReader, Input, Opened, ProducedLines};

/// What the reader hands out: many complete lines at once when it can, one line otherwise.
///
/// Handing out whole blocks lets a caller search a block for what interests it and look at line
/// boundaries only around the hits, instead of paying a call per line: on an access log where
/// a few percent of lines matter, that is most of the work saved.
#[derive(Debug, Clone, Copy)]
pub enum Chunk<'a> {
    /// Complete lines, each ending with `\n` (so the block does too), none longer than the
    /// reader's maximum. Lines may end with `\r\n`.
    Lines(&'a [u8]),
    /// One line assembled across reads, cut at the maximum, or last in the stream without a
    /// newline; its line ending is already removed.
    Line(Line<'a>),
}

/// Splits a byte stream into lines without copying them when it can.
pub struct LineReader<R> {
    inner: R,
    /// Holds a line that spans buffer refills, or the head of an overlong line.
    carry: Vec<u8>,
    max: usize,
    /// Inside the tail of an overlong line, which is skipped up to its newline.
    skipping: bool,
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
            skipping: false,
        }
    }

    /// Calls `each` for every line until the end of the stream. A last line without a newline
    /// is delivered too (offline reading; live followers wait for the newline instead).
    pub fn for_each_line(&mut self, mut each: impl FnMut(Line<'_>)) -> io::Result<u64> {
        self.for_each_chunk(|chunk| match chunk {
            Chunk::Lines(block) => split_lines(block, &mut each),
            Chunk::Line(line) => each(line),
        })
    }

    /// Calls `each` with blocks of complete lines, or single lines, until the end of the
    /// stream; returns the number of bytes read.
    pub fn for_each_chunk(&mut self, mut each: impl FnMut(Chunk<'_>)) -> io::Result<u64> {
        let mut bytes_read = 0u64;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let len = buf.len();
            if len == 0 {
                if !self.carry.is_empty() && !self.skipping {
                    emit_carry(&mut self.carry, self.max, &mut each);
                }
                self.carry.clear();
                self.skipping = false;
                return Ok(bytes_read);
            }
            let mut start = 0;
            if self.skipping || !self.carry.is_empty() {
                // Finish the line begun in an earlier read (or skip the rest of a long one).
                match memchr::memchr(b'\n', buf) {
                    Some(nl) => {
                        if self.skipping {
                            self.skipping = false;
                        } else {
                            extend_carry(&mut self.carry, self.max, &buf[..nl]);
                            emit_carry(&mut self.carry, self.max, &mut each);
                        }
                        start = nl + 1;
                    }
                    None => {
                        if !self.skipping {
                            extend_carry(&mut self.carry, self.max, buf);
                            cut_if_overlong(
                                &mut self.carry,
                                self.max,
                                &mut self.skipping,
                                &mut each,
                            );
                        }
                        self.inner.consume(len);
                        bytes_read += len as u64;
                        continue;
                    }
                }
            }
            let rest = &buf[start..];
            let tail = match memchr::memrchr(b'\n', rest) {
                Some(last) => {
                    let block = &rest[..=last];
                    if block.len() <= self.max {
                        each(Chunk::Lines(block));
                    } else {
                        // Only when the read buffer is larger than the line limit: go line by
                        // line so that an overlong line is cut like any other.
                        for line in block[..block.len() - 1].split(|&b| b == b'\n') {
                            let truncated = line.len() > self.max;
                            each(Chunk::Line(Line {
                                bytes: trim_cr(&line[..line.len().min(self.max)]),
                                truncated,
                            }));
                        }
                    }
                    &rest[last + 1..]
                }
                None => rest,
            };
            if !tail.is_empty() {
                extend_carry(&mut self.carry, self.max, tail);
                cut_if_overlong(&mut self.carry, self.max, &mut self.skipping, &mut each);
            }
            self.inner.consume(len);
            bytes_read += len as u64;
        }
    }
}

/// Appends to a carried line, keeping at most max+1 bytes (the +1 says "too long").
fn extend_carry(carry: &mut Vec<u8>, max: usize, bytes: &[u8]) {
    let room = (max + 1).saturating_sub(carry.len());
    carry.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Delivers a carried line (cut at max, flagged when it was longer) and empties the carry.
fn emit_carry(carry: &mut Vec<u8>, max: usize, each: &mut impl FnMut(Chunk<'_>)) {
    let truncated = carry.len() > max;
    carry.truncate(max);
    each(Chunk::Line(Line {
        bytes: trim_cr(carry),
        truncated,
    }));
    carry.clear();
}

/// Delivers the head of a carried line that is already too long; the rest is to be skipped.
fn cut_if_overlong(
    carry: &mut Vec<u8>,
    max: usize,
    skipping: &mut bool,
    each: &mut impl FnMut(Chunk<'_>),
) {
    if carry.len() > max {
        emit_carry(carry, max, each);
        *skipping = true;
    }
}

/// Assembles complete lines from bytes that arrive in pieces (a pipe, Docker's log frames, a
/// file read in chunks), with the same cap and the same rule as [`LineReader`]: a line whose
/// bytes before its `\n` are more than `max` is dropped whole and counted.
#[derive(Debug)]
pub struct LineAssembler {
    max: usize,
    /// The start of a line whose newline has not come yet.
    partial: Vec<u8>,
    /// Inside an overlong line, which is skipped up to its newline.
    skipping: bool,
    /// Bytes since the last newline (kept in `partial` or skipped).
    pending: u64,
    /// Overlong lines dropped so far.
    pub overlong: u64,
}

impl Default for LineAssembler {
    fn default() -> Self {
        LineAssembler::with_max(MAX_LINE)
    }
}

impl LineAssembler {
    pub fn with_max(max: usize) -> LineAssembler {
        LineAssembler {
            max,
            partial: Vec::new(),
            skipping: false,
            pending: 0,
            overlong: 0,
        }
    }

    /// Bytes fed since the last newline: where the next line starts is that far back.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Feeds bytes; every complete line that is not overlong is appended to `out` with its
    /// `\n`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    let (line, rest) = data.split_at(i + 1);
                    // The line's bytes before its newline.
                    let length = self.pending + line.len() as u64 - 1;
                    if self.skipping || length > self.max as u64 {
                        self.overlong += 1;
                    } else {
                        out.extend_from_slice(&self.partial);
                        out.extend_from_slice(line);
                    }
                    self.partial.clear();
                    self.skipping = false;
                    self.pending = 0;
                    data = rest;
                }
                None => {
                    self.pending += data.len() as u64;
                    if !self.skipping {
                        if self.pending > self.max as u64 {
                            self.partial = Vec::new();
                            self.skipping = true;
                        } else {
                            self.partial.extend_from_slice(data);
                        }
                    }
                    data = &[];
                }
            }
        }
    }

    /// The end of the stream: a last line without a newline is delivered (with one added)
    /// unless it is overlong.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.skipping {
            self.overlong += 1;
        } else if !self.partial.is_empty() {
            out.extend_from_slice(&self.partial);
            out.push(b'\n');
        }
        self.partial.clear();
        self.skipping = false;
        self.pending = 0;
    }

    /// Forgets a line begun and not finished (its file was truncated under it).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.skipping = false;
        self.pending = 0;
    }
}

/// A source as configured: a path or a glob, standard input, or a stream.
pub enum SourceSpec {
    Stdin,
    /// A file, or a glob of files (`*`, `?`, `[`).
    Path(String),
    Stream(Box<dyn stream::Stream>),
}

impl SourceSpec {
    /// What `source` names; an error for a stream source that is malformed.
    pub fn parse(source: &str) -> Result<SourceSpec, String> {
        if source == "-" {
            return Ok(SourceSpec::Stdin);
        }
        match stream::parse(source) {
            Some(s) => s.map(SourceSpec::Stream),
            None => Ok(SourceSpec::Path(source.to_string())),
        }
    }

    /// Whether `source` is a path (relative ones are relative to the configuration file).
    pub fn is_path(source: &str) -> bool {
        matches!(SourceSpec::parse(source), Ok(SourceSpec::Path(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

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

    proptest::proptest! {
        #[test]
        fn lines_match_a_naive_split(
            input in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\r', b'\n', 0xff]), 0..200),
            max in 1usize..20,
            buf in 1usize..40,
        ) {
            let mut want: Vec<(Vec<u8>, bool)> = Vec::new();
            let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
            if parts.last().is_some_and(|l| l.is_empty()) {
                parts.pop();
            }
            for p in parts {
                let cut = &p[..p.len().min(max)];
                want.push((trim_cr(cut).to_vec(), p.len() > max));
            }
            proptest::prop_assert_eq!(lines(&input, max, buf), want);
        }
    }

    proptest::proptest! {
        /// The assembler keeps exactly the lines the offline reader does not flag as overlong,
        /// however the bytes are split: the daemon and `moat scan` drop the same lines.
        #[test]
        fn assembler_and_reader_agree_on_overlong_lines(
            input in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\r', b'\n']), 0..200),
            max in 1usize..20,
            cuts in proptest::collection::vec(1usize..30, 1..20),
        ) {
            let mut want: Vec<Vec<u8>> = Vec::new();
            let mut overlong = 0;
            for (line, truncated) in lines(&input, max, 7) {
                if truncated {
                    overlong += 1;
                } else {
                    want.push(line);
                }
            }
            let mut asm = LineAssembler::with_max(max);
            let mut out = Vec::new();
            let mut rest = &input[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*c).min(rest.len()));
                asm.push(piece, &mut out);
                rest = tail;
            }
            asm.finish(&mut out);
            let mut got: Vec<Vec<u8>> = Vec::new();
            split_lines(&out, &mut |l| got.push(l.bytes.to_vec()));
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(asm.overlong, overlong);
        }
    }

    #[test]
    fn assembler_drops_an_overlong_line_whole_and_counts_it() {
        let mut asm = LineAssembler::with_max(4);
        let mut out = Vec::new();
        asm.push(b"ok\n0123", &mut out);
        assert_eq!(asm.pending(), 4);
        asm.push(b"4567", &mut out);
        asm.push(b"89\nnext\n", &mut out);
        assert_eq!(out, b"ok\nnext\n");
        assert_eq!((asm.overlong, asm.pending()), (1, 0));
        // Exactly the cap is a line; one more byte is not.
        asm.push(b"abcd\nabcde\n", &mut out);
        assert_eq!(out, b"ok\nnext\nabcd\n");
        assert_eq!(asm.overlong, 2);
    }

    #[test]
    fn bytes_are_not_decoded() {
        assert_eq!(
            lines(b"\xff\x00x\n", 100, 8),
            vec![(b"\xff\x00x".to_vec(), false)]
        );
    }
}

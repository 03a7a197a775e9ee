//! Lines: the unit every source hands on and every filter matches, as bytes.

/// The longest line anything matches: a longer one is skipped whole and counted (cut at the
/// cap, a pattern anchored with `$` could match at the cut, where the attacker chose what
/// stands).
pub const MAX_LINE: usize = 1 << 20;

/// One line: its bytes (without the line ending) and whether it was longer than the cap (then
/// `bytes` is its head, for reports only: it must not be matched).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub truncated: bool,
}

/// Calls `each` for every line of a block of complete lines (each ending in `\n`).
pub fn split_lines(block: &[u8], each: &mut impl FnMut(Line<'_>)) {
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', block) {
        each(Line {
            bytes: trim_cr(&block[start..nl]),
            truncated: false,
        });
        start = nl + 1;
    }
}

/// Strips the `\r` of a CRLF line ending.
pub fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

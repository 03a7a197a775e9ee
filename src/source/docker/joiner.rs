//! Docker's json-file log, joined: Docker writes a line longer than 16 KiB as several JSON
//! entries, of which only the last ends in `\n`. [`JsonFileJoiner`] joins them back into one
//! line per stream (stdout, stderr), so that text at byte 16,384 of a user name never passes
//! for a line of its own.

/// The start of every entry Docker's json-file driver writes.
const JSON_FILE_START: &[u8] = br#"{"log":""#;
/// What follows the `log` string in such an entry: the string cannot contain it, since a
/// quote inside it is escaped.
const JSON_FILE_STREAM: &[u8] = br#"","stream":""#;

/// What [`JsonFileJoiner::feed`] made of a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined<'a> {
    /// A line to match as it is: a whole entry, or not a json-file entry at all.
    Line(&'a [u8]),
    /// A partial entry, held until its stream's line ends.
    Held,
    /// The entries of one line joined into one entry (the last one's fields, the `log`
    /// strings concatenated).
    Whole(Vec<u8>),
    /// A line whose entries together are longer than the cap: dropped, as overlong lines
    /// are everywhere.
    Overlong,
}

/// Joins the partial entries of a Docker json-file log, per stream (stdout, stderr).
#[derive(Debug, Default)]
pub struct JsonFileJoiner {
    /// The escaped `log` text held so far, per stream.
    held: [Vec<u8>; 2],
    /// A held line already went over the cap: the rest of it is dropped.
    over: [bool; 2],
}

impl JsonFileJoiner {
    /// Takes the next line of the log.
    pub fn feed<'a>(&mut self, line: &'a [u8]) -> Joined<'a> {
        let Some(entry) = Entry::parse(line) else {
            return Joined::Line(line);
        };
        let s = entry.stream;
        if entry.partial {
            if !self.over[s] {
                self.held[s].extend_from_slice(entry.log);
                if self.held[s].len() + line.len() > crate::vocab::MAX_LINE {
                    self.held[s] = Vec::new();
                    self.over[s] = true;
                }
            }
            return Joined::Held;
        }
        if self.over[s] {
            self.over[s] = false;
            return Joined::Overlong;
        }
        if self.held[s].is_empty() {
            return Joined::Line(line);
        }
        let held = std::mem::take(&mut self.held[s]);
        if held.len() + line.len() > crate::vocab::MAX_LINE {
            return Joined::Overlong;
        }
        let mut whole = Vec::with_capacity(held.len() + line.len());
        whole.extend_from_slice(JSON_FILE_START);
        whole.extend_from_slice(&held);
        whole.extend_from_slice(&line[JSON_FILE_START.len()..]);
        Joined::Whole(whole)
    }

    /// Whether a partial line is held: the next line of its stream completes it.
    pub fn holds(&self) -> bool {
        self.held.iter().any(|h| !h.is_empty()) || self.over.iter().any(|o| *o)
    }
}

/// A json-file entry's parts, found without decoding it.
struct Entry<'a> {
    /// The `log` string as escaped in the line.
    log: &'a [u8],
    /// 0 for stdout, 1 for stderr.
    stream: usize,
    /// The `log` string does not end with `\n`.
    partial: bool,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a [u8]) -> Option<Entry<'a>> {
        let rest = line.strip_prefix(JSON_FILE_START)?;
        let end = memchr::memmem::find(rest, JSON_FILE_STREAM)?;
        let log = &rest[..end];
        let after = &rest[end + JSON_FILE_STREAM.len()..];
        let stream = if after.starts_with(b"stderr\"") {
            1
        } else if after.starts_with(b"stdout\"") {
            0
        } else {
            return None;
        };
        // Ends with the escape `\n`: an `n` after an odd run of backslashes (an even run is
        // escaped backslashes, then a plain `n`).
        let ends_in_newline = log.strip_suffix(b"n").is_some_and(|before| {
            before.iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
        });
        Some(Entry {
            log,
            stream,
            partial: !ends_in_newline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log: &str, stream: &str) -> Vec<u8> {
        format!(
            r#"{{"log":{},"stream":"{stream}","time":"2026-03-28T10:00:00.5Z"}}"#,
            serde_json::to_string(log).unwrap()
        )
        .into_bytes()
    }

    #[test]
    fn json_file_partials_are_joined_per_stream() {
        let mut j = JsonFileJoiner::default();
        let whole = entry("198.51.100.7 - - x\n", "stdout");
        assert_eq!(j.feed(&whole), Joined::Line(&whole));
        // A long line in two entries, with a stderr line between them.
        let head = entry(&format!("203.0.113.5 - - {}", "u".repeat(100)), "stdout");
        let tail = entry("198.51.100.9 - - forged\n", "stdout");
        let err = entry("on stderr\n", "stderr");
        assert_eq!(j.feed(&head), Joined::Held);
        assert!(j.holds());
        assert_eq!(j.feed(&err), Joined::Line(&err));
        let Joined::Whole(joined) = j.feed(&tail) else {
            panic!("not joined")
        };
        let v: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        assert_eq!(
            v["log"].as_str().unwrap(),
            format!(
                "203.0.113.5 - - {}198.51.100.9 - - forged\n",
                "u".repeat(100)
            )
        );
        assert_eq!(v["stream"], "stdout");
        assert!(!j.holds());
        // A literal backslash before the `n` is not a newline; an escaped backslash then an
        // escaped newline is.
        assert_eq!(j.feed(&entry("ends in \\n", "stdout")), Joined::Held);
        let done = entry("x\\\n", "stdout");
        assert!(matches!(j.feed(&done), Joined::Whole(_)));
        // Not json-file: as it is.
        assert_eq!(j.feed(b"plain text"), Joined::Line(b"plain text"));
    }

    #[test]
    fn json_file_lines_over_the_cap_are_dropped_whole() {
        let mut j = JsonFileJoiner::default();
        let piece = entry(&"a".repeat(16 * 1024), "stdout");
        for _ in 0..(crate::source::MAX_LINE / (16 * 1024) + 1) {
            assert_eq!(j.feed(&piece), Joined::Held);
        }
        assert_eq!(
            j.feed(&entry("198.51.100.9 end\n", "stdout")),
            Joined::Overlong
        );
        let next = entry("next\n", "stdout");
        assert_eq!(j.feed(&next), Joined::Line(&next));
    }
}

//! journald as a source: which entries to read, and how an entry becomes a line.
//!
//! The daemon runs `journalctl --follow --output=json --all` (the stable, documented interface to
//! the journal; no C library to link) and hands each entry to [`entry_to_line`], which renders
//! it the way `journalctl -o short-iso-precise` does:
//! `2026-03-28T10:00:02.123456Z host sshd[1234]: Failed password for ...`, so the same filters
//! work on a log file and on the journal.
//!
//! A message may contain newlines; they become spaces, so that a message cannot start a line
//! of its own and pass for another program's. The journal's cursor is kept per source, so a
//! restart resumes after the last entry read.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::stream::{Following, Health, PartHealth, Resume, Stream, StreamBlock, StreamHealth};
use crate::vocab::Cursor;

/// A journald source as configured: `journald:UNIT` or `journald:FIELD=value FIELD=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalSelect {
    /// `--unit` values.
    pub units: Vec<String>,
    /// `FIELD=value` matches, ANDed (journalctl's semantics for distinct fields).
    pub matches: Vec<String>,
}

/// The prefix naming a journald source.
pub const PREFIX: &str = "journald:";

impl JournalSelect {
    /// Parses what follows `journald:`; `None` when it is not a journald source.
    pub fn parse(source: &str) -> Option<Result<JournalSelect, String>> {
        let spec = source.strip_prefix(PREFIX)?;
        let mut sel = JournalSelect {
            units: Vec::new(),
            matches: Vec::new(),
        };
        for word in spec.split_whitespace() {
            // journalctl's disjunction between groups of matches (fail2ban's journalmatch
            // writes `_SYSTEMD_UNIT=sshd.service + _COMM=sshd`).
            if word == "+" {
                if sel.matches.last().is_some_and(|m| m != "+") {
                    sel.matches.push(word.to_string());
                }
                continue;
            }
            match word.split_once('=') {
                Some((field, _)) => {
                    let ok = !field.is_empty()
                        && field
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                    if !ok {
                        return Some(Err(format!(
                            "{word:?}: a journal field name is upper-case letters, digits and _ \
                             (e.g. _SYSTEMD_UNIT=ssh.service)"
                        )));
                    }
                    sel.matches.push(word.to_string());
                }
                None => sel.units.push(word.to_string()),
            }
        }
        if sel.matches.last().is_some_and(|m| m == "+") {
            sel.matches.pop();
        }
        if sel.units.is_empty() && sel.matches.is_empty() {
            return Some(Err(
                "name a unit (journald:ssh.service) or matches (journald:_COMM=sshd)".into(),
            ));
        }
        Some(Ok(sel))
    }

    /// journalctl's arguments to read every one of these entries once, to the end (for
    /// `moat scan -c`).
    pub fn args_all(&self) -> Vec<String> {
        let mut args = self.args(None, true);
        args.retain(|a| a != "--follow");
        args
    }

    /// journalctl's arguments to follow these entries, after `cursor` or from the end (or
    /// the start).
    pub fn args(&self, cursor: Option<&str>, from_start: bool) -> Vec<String> {
        // `--all`: without it journalctl gives `null` for a message over 4096 bytes, and a
        // client could evade detection by sending long input.
        let mut args: Vec<String> = [
            "--follow",
            "--output=json",
            "--all",
            "--no-pager",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        match cursor {
            Some(c) => args.push(format!("--after-cursor={c}")),
            None if from_start => args.push("--lines=all".into()),
            None => args.push("--lines=0".into()),
        }
        for u in &self.units {
            args.push(format!("--unit={u}"));
        }
        // Matches are positional arguments; "--" keeps a value from being read as an option.
        if !self.matches.is_empty() {
            args.push("--".into());
            args.extend(self.matches.iter().cloned());
        }
        args
    }
}

/// The program that reads the journal; tests point it at a recording or a journal file.
pub fn program() -> String {
    std::env::var("MOAT_JOURNALCTL").unwrap_or_else(|_| "journalctl".into())
}

/// Every entry `select` names, rendered as lines, read from a `journalctl` that ends at the
/// end of the journal: what `moat scan -c` reads for a `journald:` source, so a configuration
/// can be tried on the past before it is enabled (Debian 12 has no auth.log by default).
pub fn read_all(select: &JournalSelect) -> std::io::Result<super::ProducedLines> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(program())
        .args(select.args_all())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run journalctl: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    Ok(super::ProducedLines::spawn(move |send| {
        let mut reader = std::io::BufReader::new(stdout);
        let mut entry = Vec::new();
        let mut block = Vec::new();
        loop {
            entry.clear();
            match reader.read_until(b'\n', &mut entry) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Some((line, _)) = entry_to_line(&entry) {
                // The cap every source shares: a longer line is not a line to match.
                if line.len() <= super::MAX_LINE + 1 {
                    block.extend_from_slice(&line);
                }
            }
            if block.len() >= 64 * 1024 && !send(std::mem::take(&mut block)) {
                return Ok(());
            }
        }
        if !block.is_empty() {
            send(block);
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "journalctl failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }))
}

/// A `journald:` source as a stream.
struct Journal {
    source: String,
    select: JournalSelect,
}

/// The stream a `journald:` source names.
pub fn stream(source: &str) -> Option<Result<Box<dyn Stream>, String>> {
    JournalSelect::parse(source).map(|r| {
        r.map(|select| {
            Box::new(Journal {
                source: source.to_string(),
                select,
            }) as Box<dyn Stream>
        })
    })
}

impl Stream for Journal {
    fn follow(&self, resume: Resume, out: mpsc::Sender<StreamBlock>, health: Health) -> Following {
        Box::pin(follow(
            self.source.clone(),
            self.select.clone(),
            resume,
            out,
            health,
        ))
    }

    fn read_all(&self) -> std::io::Result<super::ProducedLines> {
        read_all(&self.select)
    }
}

/// Follows the journal through `journalctl`, restarting it (after the last cursor) when it
/// exits, with a growing pause.
async fn follow(
    source: String,
    select: JournalSelect,
    resume: Resume,
    out: mpsc::Sender<StreamBlock>,
    health: Health,
) {
    let mut cursor = resume.cursors.get(&source).cloned();
    let from_start = resume.from_start;
    let mut pause = Duration::from_secs(1);
    let mut lines: u64 = 0;
    let mut overlong: u64 = 0;
    let set_status = |lines: u64, overlong: u64, error: Option<String>| {
        *health.lock().unwrap() = StreamHealth {
            parts: vec![PartHealth {
                name: "journal".into(),
                lines,
                overlong,
            }],
            error,
        };
    };
    set_status(0, 0, None);
    let mut first = true;
    while !out.is_closed() {
        let args = select.args(cursor.as_deref(), first && from_start);
        first = false;
        let child = tokio::process::Command::new(program())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot run journalctl: {e}");
                tracing::warn!(%source, "{msg}; retrying in {pause:?}");
                set_status(lines, overlong, Some(msg));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        tracing::info!(%source, "following the journal");
        let mut reader = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut entry = Vec::new();
        let mut block = Vec::new();
        loop {
            entry.clear();
            // An entry's JSON is the message escaped: up to six bytes per byte, and the
            // other fields.
            let fits = match read_line_within(&mut reader, &mut entry, 6 * super::MAX_LINE + 65_536)
                .await
            {
                Ok(None) | Err(_) => break,
                Ok(Some(fits)) => fits,
            };
            pause = Duration::from_secs(1);
            if !fits {
                overlong += 1;
                continue;
            }
            if let Some((line, c)) = entry_to_line(&entry) {
                cursor = Some(c);
                // The rendered line, without its newline, within the cap all sources share.
                if line.len() > super::MAX_LINE + 1 {
                    overlong += 1;
                    continue;
                }
                block.extend_from_slice(&line);
                lines += 1;
            }
            if reader.buffer().is_empty() && !block.is_empty() {
                let b = StreamBlock {
                    part: source.clone(),
                    block: std::mem::take(&mut block),
                    cursor: cursor.clone().map(Cursor::Stream),
                };
                if out.send(b).await.is_err() {
                    return;
                }
                set_status(lines, overlong, None);
            }
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        let status_code = child.wait().await.ok();
        let msg = format!(
            "journalctl ended ({}){}{}",
            status_code.map_or("killed".into(), |s| s.to_string()),
            if err.trim().is_empty() { "" } else { ": " },
            err.trim()
        );
        tracing::warn!(%source, "{msg}; restarting in {pause:?}");
        set_status(lines, overlong, Some(msg));
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// Reads one line (through its `\n`) into `buf`, keeping at most `max` bytes of it: `None` at
/// the end of the stream, else whether the whole line fit (a longer one is consumed to its
/// end and not kept).
async fn read_line_within<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    use tokio::io::AsyncBufReadExt;
    let mut fits = true;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (piece, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if fits && buf.len() + piece.len() <= max {
            buf.extend_from_slice(piece);
        } else {
            fits = false;
            buf.clear();
        }
        let n = piece.len();
        reader.consume(n);
        if done {
            return Ok(Some(fits));
        }
    }
}

/// One journal entry (a line of `journalctl -o json`) as a log line, and its cursor.
pub fn entry_to_line(json: &[u8]) -> Option<(Vec<u8>, String)> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    let micros: i64 = v.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
    let time = jiff::Timestamp::from_microsecond(micros).ok()?;
    let field = |name: &str| -> Option<Vec<u8>> {
        match v.get(name)? {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            // Non-UTF-8 fields come as arrays of bytes.
            Value::Array(a) => a.iter().map(|b| b.as_u64().map(|b| b as u8)).collect(),
            _ => None,
        }
    };
    let mut message = field("MESSAGE")?;
    for b in &mut message {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    let host = field("_HOSTNAME").unwrap_or_else(|| b"localhost".to_vec());
    let ident = field("SYSLOG_IDENTIFIER")
        .or_else(|| field("_COMM"))
        .unwrap_or_else(|| b"unknown".to_vec());
    let mut line = time
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ ")
        .to_string()
        .into_bytes();
    line.extend(host.iter().filter(|b| !b.is_ascii_whitespace()));
    line.push(b' ');
    line.extend(ident.iter().filter(|b| !b.is_ascii_whitespace()));
    if let Some(pid) = field("_PID").or_else(|| field("SYSLOG_PID")) {
        line.push(b'[');
        line.extend(pid.iter().filter(|b| b.is_ascii_digit()));
        line.push(b']');
    }
    line.extend_from_slice(b": ");
    line.extend_from_slice(&message);
    line.push(b'\n');
    Some((line, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{library, Filter, LineContext, Verdict};

    #[test]
    fn selects() {
        let s = JournalSelect::parse("journald:ssh.service _COMM=sshd")
            .unwrap()
            .unwrap();
        assert_eq!(s.units, ["ssh.service"]);
        assert_eq!(
            s.args(Some("s=abc"), false),
            [
                "--follow",
                "--output=json",
                "--all",
                "--no-pager",
                "--quiet",
                "--after-cursor=s=abc",
                "--unit=ssh.service",
                "--",
                "_COMM=sshd"
            ]
        );
        assert!(JournalSelect::parse("/var/log/x").is_none());
        assert!(JournalSelect::parse("journald:").unwrap().is_err());
        assert!(JournalSelect::parse("journald:comm=x").unwrap().is_err());
        // fail2ban's journalmatch: `+` between groups (journalctl's OR), passed on as is.
        let s = JournalSelect::parse("journald:_SYSTEMD_UNIT=sshd.service + _COMM=sshd +")
            .unwrap()
            .unwrap();
        assert_eq!(s.matches, ["_SYSTEMD_UNIT=sshd.service", "+", "_COMM=sshd"]);
        assert!(JournalSelect::parse("journald:+").unwrap().is_err());
    }

    #[test]
    fn entries_become_lines_the_sshd_filter_reads() {
        let entry = br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1774692002123456","_HOSTNAME":"host","SYSLOG_IDENTIFIER":"sshd","_PID":"1234","MESSAGE":"Failed password for root from 203.0.113.5 port 51234 ssh2"}"#;
        let (line, cursor) = entry_to_line(entry).unwrap();
        assert_eq!(cursor, "s=1;i=2");
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "2026-03-28T10:00:02.123456Z host sshd[1234]: Failed password for root from 203.0.113.5 port 51234 ssh2\n"
        );
        let f = Filter::compile(library::get("sshd").unwrap()).unwrap();
        let ctx = LineContext::utc(jiff::Timestamp::now());
        let Verdict::Failure(fail) = f.check(&line[..line.len() - 1], &ctx) else {
            panic!("sshd filter on {line:?}")
        };
        assert_eq!(fail.host.to_string(), "203.0.113.5");
    }

    #[test]
    fn a_message_cannot_forge_a_line() {
        let entry = br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1774692002000000","SYSLOG_IDENTIFIER":"app","MESSAGE":"x\n2026-03-28T10:00:02Z host sshd[1]: Failed password for root from 198.51.100.1 port 1 ssh2"}"#;
        let (line, _) = entry_to_line(entry).unwrap();
        assert_eq!(memchr::memchr_iter(b'\n', &line).count(), 1);
        let binary = br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"1774692002000000","MESSAGE":[104,105,255]}"#;
        let (line, _) = entry_to_line(binary).unwrap();
        assert!(line.ends_with(b": hi\xff\n"));
        assert!(entry_to_line(b"not json").is_none());
    }
}

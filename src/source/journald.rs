//! journald as a source: which entries to read, and how an entry becomes a line.
//!
//! The daemon runs `journalctl --follow --output=json` (the stable, documented interface to
//! the journal; no C library to link) and hands each entry to [`entry_to_line`], which renders
//! it the way `journalctl -o short-iso-precise` does:
//! `2026-03-28T10:00:02.123456Z host sshd[1234]: Failed password for ...`, so the same filters
//! work on a log file and on the journal.
//!
//! A message may contain newlines; they become spaces, so that a message cannot start a line
//! of its own and pass for another program's. The journal's cursor is kept per source, so a
//! restart resumes after the last entry read.

use serde_json::Value;

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

    /// journalctl's arguments to follow these entries, after `cursor` or from the end (or
    /// the start).
    pub fn args(&self, cursor: Option<&str>, from_start: bool) -> Vec<String> {
        let mut args: Vec<String> = ["--follow", "--output=json", "--no-pager", "--quiet"]
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
    use crate::detect::{library, Filter, TimeContext, Verdict};

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
        let ctx = TimeContext::utc(jiff::Timestamp::now());
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

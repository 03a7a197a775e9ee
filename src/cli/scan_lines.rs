//! `moat scan --json-lines`: one JSON object per failure, line by line, the equivalent of
//! `fail2ban-regex` for a single filter (see docs/cli.md).
//!
//! `{"line":N,"match":true,"host":"192.0.2.1","time":"2005-08-14T10:00:00Z","user":"bob"}`:
//! the line number within its input (and `"input"` when several are read), the address the
//! failure counts against, the line's time (RFC 3339, UTC), and the filter's `<F-*>`
//! captures. A fail2ban failure identified by something that is not an address (a host
//! name, a custom id) has `"host":null` and the identifier in `"id"`: moat does not ban it.

use std::io::Write;

use anyhow::Context;
use jiff::Timestamp;

use crate::config::JailConfig;
use crate::detect::fail2ban::adapter::clock;
use crate::detect::fail2ban::matcher::FailureId;
use crate::detect::verdict::parse_host;
use crate::detect::{Filter, LineContext, Prefilter, Verdict};
use crate::source::{self, Input, LineReader};

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// Prints every failure `jail`'s filter finds in `inputs`.
pub fn print(jail: &JailConfig, inputs: &[Input], now: Timestamp) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let several = inputs.len() > 1;
    for input in inputs {
        let opened =
            source::open(input).with_context(|| format!("cannot read {}", input.display()))?;
        let ctx = LineContext::new(
            jail.time_zone(),
            opened
                .modified
                .and_then(|m| Timestamp::try_from(m).ok())
                .unwrap_or(now),
        );
        let prefix = if several {
            format!(",\"input\":{}", json(&input.display()))
        } else {
            String::new()
        };
        let mut fail2ban = jail.filter.fail2ban.as_ref().map(|s| s.0.matcher());
        // As moat scan does: lines without the filter's literals cannot hold a failure.
        let literals = Filter::compile(&jail.filter).context("the filter")?;
        let prefilter = Prefilter::new(&[&literals]);
        let mut candidates = Vec::with_capacity(1);
        let mut filter = match fail2ban {
            Some(_) => None,
            None => Some(Filter::compile(&jail.filter).context("the filter")?),
        };
        let mut n = 0u64;
        let mut result: std::io::Result<()> = Ok(());
        LineReader::new(opened.reader)
            .for_each_line(|line| {
                n += 1;
                if result.is_err() {
                    return;
                }
                let mut objects = Vec::new();
                prefilter.candidates(line.bytes, &mut candidates);
                if candidates.is_empty() {
                    return;
                }
                if let Some(m) = fail2ban.as_mut() {
                    let text = String::from_utf8_lossy(line.bytes);
                    for f in m
                        .feed(&text, None, &clock(&ctx))
                        .into_iter()
                        .filter(|f| f.failure())
                    {
                        let id = f.id.as_ref().expect("a failure has an id");
                        let host = match id {
                            FailureId::Name(_) => None,
                            other => parse_host(other.text().as_bytes()),
                        };
                        let mut o = format!("{{\"line\":{n}{prefix},\"match\":true,\"host\":");
                        match host {
                            Some(h) => o.push_str(&json(&h.to_string())),
                            None => o.push_str(&format!("null,\"id\":{}", json(id.text()))),
                        }
                        match f.time {
                            Some(t) => o.push_str(&format!(",\"time\":{}", json(&t.to_string()))),
                            None => o.push_str(",\"time\":null"),
                        }
                        for (k, v) in f.captures() {
                            o.push_str(&format!(",{}:{}", json(k), json(v)));
                        }
                        o.push('}');
                        objects.push(o);
                    }
                } else if let Some(f) = filter.as_mut() {
                    match f.check_mut(line.bytes, &ctx) {
                        Verdict::Failure(x) => objects.push(format!(
                            "{{\"line\":{n}{prefix},\"match\":true,\"host\":{},\"time\":{}}}",
                            json(&x.host.to_string()),
                            json(&x.time.to_string())
                        )),
                        Verdict::NoTime { host } => objects.push(format!(
                            "{{\"line\":{n}{prefix},\"match\":true,\"host\":{},\"time\":null}}",
                            json(&host.to_string())
                        )),
                        _ => {}
                    }
                }
                for o in objects {
                    if let Err(e) = writeln!(out, "{o}") {
                        result = Err(e);
                    }
                }
            })
            .with_context(|| format!("cannot read {}", input.display()))?;
        result?;
    }
    out.flush()?;
    Ok(())
}

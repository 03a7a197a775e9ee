//! Rendering a [`ScanReport`]: a readable text report (what fail2ban-regex prints, laid out for
//! people) and the JSON object documented in `docs/cli.md`.

use std::fmt::Write as _;

use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use serde::Serialize;

use super::ScanReport;
use crate::vocab::terminal::visible;
use crate::vocab::time::{human_duration, utc};

/// Thousands separators for counts people read.
fn n(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Options of the text report.
pub struct TextOptions {
    /// Print at most this many bans (all with `usize::MAX`).
    pub max_bans: usize,
    /// Include the elapsed time (left out of snapshot tests).
    pub timing: bool,
}

/// The text report.
pub fn text(r: &ScanReport, opts: &TextOptions) -> String {
    let mut o = String::new();
    let files = r.inputs.len();
    let _ = write!(
        o,
        "Scanned {} {}, {} lines",
        files,
        if files == 1 { "input" } else { "inputs" },
        n(r.lines)
    );
    if opts.timing {
        let secs = r.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            r.lines as f64 / secs
        } else {
            0.0
        };
        let _ = write!(o, " in {secs:.2} s ({} lines/s)", n(rate as u64));
    }
    o.push('\n');
    for i in &r.inputs {
        let _ = writeln!(o, "  {}: {} lines", visible(&i.name), n(i.lines));
    }
    let _ = writeln!(
        o,
        "\nLines: {} read, {} matched, {} ignored, {} without readable time, {} over 1 MiB (skipped)",
        n(r.lines),
        n(r.matched()),
        n(r.ignored()),
        n(r.unparsed_time()),
        n(r.truncated)
    );

    for j in &r.jails {
        let p = &j.config.params;
        let _ = writeln!(
            o,
            "\nJail {:?} (filter {}): ban after {} failures within {}, for {}",
            j.config.name,
            j.config.filter_label,
            p.maxretry,
            human_duration(p.findtime),
            human_duration(p.bantime)
        );
        let _ = writeln!(o, "  Failregex hits:");
        for (i, (rule, hits)) in j.rules.iter().zip(&j.stats.rule_hits).enumerate() {
            let _ = writeln!(o, "    #{:<2} {:>10}  {}", i + 1, n(*hits), visible(rule));
        }
        let st = &j.stats;
        if !j.config.filter.ignoreregex.is_empty() || st.ignored > 0 {
            let _ = writeln!(o, "  Ignoreregex: {} lines vetoed", n(st.ignored));
        }
        if !st.formats.is_empty() {
            let _ = writeln!(o, "  Time formats:");
            for (f, c) in &st.formats {
                let _ = writeln!(o, "    {:>10}  {}", n(*c), f);
            }
        }
        if st.unparsed_time > 0 {
            let _ = writeln!(
                o,
                "  Without readable time (not counted): {}; e.g.",
                n(st.unparsed_time)
            );
            for l in &j.unparsed_samples {
                let _ = writeln!(o, "    | {}", visible(l));
            }
        }
        if st.bad_host > 0 {
            let _ = writeln!(
                o,
                "  Not an address at <HOST> (not counted): {}",
                n(st.bad_host)
            );
        }
        if st.too_long > 0 {
            let _ = writeln!(
                o,
                "  Too long for a look-around pattern (not matched): {}",
                n(st.too_long)
            );
        }
        let _ = writeln!(
            o,
            "  Clients: {} banned, {} still failing; failures {} from ignored addresses, {} while banned",
            n(j.bans.len() as u64),
            n(j.still_failing as u64),
            n(st.ignored_clients),
            n(st.while_banned)
        );
        if j.evicted > 0 {
            let _ = writeln!(
                o,
                "  Memory cap reached: {} stale client windows forgotten (max_clients = {})",
                n(j.evicted),
                p.max_clients
            );
        }
    }

    let bans = r.bans();
    if bans.is_empty() {
        let _ = writeln!(o, "\nNo client would have been banned.");
    } else {
        let _ = writeln!(
            o,
            "\nBans that would have happened: {}",
            n(bans.len() as u64)
        );
        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header([
                "jail",
                "client",
                "banned at (UTC)",
                "until (UTC)",
                "failures",
            ]);
        for (jail, b) in bans.iter().take(opts.max_bans) {
            table.add_row([
                jail.to_string(),
                b.key.to_string(),
                utc(b.at),
                utc(b.until),
                b.failures.to_string(),
            ]);
        }
        if let Some(col) = table.column_mut(4) {
            col.set_cell_alignment(CellAlignment::Right);
        }
        let _ = writeln!(o, "{table}");
        if bans.len() > opts.max_bans {
            let _ = writeln!(
                o,
                "... and {} more (--all-bans prints them all, --json gives them as data)",
                n((bans.len() - opts.max_bans) as u64)
            );
        }
    }
    if !r.missed_samples.is_empty() {
        let _ = writeln!(
            o,
            "\nLines no jail matched (first {}):",
            r.missed_samples.len()
        );
        for l in &r.missed_samples {
            let _ = writeln!(o, "  | {}", visible(l));
        }
    }
    o
}

#[derive(Serialize)]
struct JsonReport<'a> {
    lines: u64,
    matched: u64,
    ignored: u64,
    unparsed_time: u64,
    truncated: u64,
    bans: Vec<JsonBan<'a>>,
    jails: Vec<JsonJail<'a>>,
    inputs: Vec<JsonInput<'a>>,
}

#[derive(Serialize)]
struct JsonBan<'a> {
    jail: &'a str,
    /// As the daemon's JSON names it: a CIDR (`203.0.113.66/32`, `2001:db8:1:2::/64`).
    target: String,
    started: String,
    until: String,
    failures: u32,
}

#[derive(Serialize)]
struct JsonJail<'a> {
    name: &'a str,
    filter: &'a str,
    matched: u64,
    ignored: u64,
    unparsed_time: u64,
    bad_host: u64,
    too_long: u64,
    ignored_clients: u64,
    while_banned: u64,
    rule_hits: &'a [u64],
    bans: usize,
}

#[derive(Serialize)]
struct JsonInput<'a> {
    name: &'a str,
    lines: u64,
}

/// The JSON report: `{"lines", "matched", "ignored", "unparsed_time", "truncated", "bans": [...]}`
/// plus per-jail and per-input breakdowns.
pub fn json(r: &ScanReport) -> String {
    let report = JsonReport {
        lines: r.lines,
        matched: r.matched(),
        ignored: r.ignored(),
        unparsed_time: r.unparsed_time(),
        truncated: r.truncated,
        bans: r
            .bans()
            .into_iter()
            .map(|(jail, b)| JsonBan {
                jail,
                target: b.key.net().to_string(),
                started: utc(b.at),
                until: utc(b.until),
                failures: b.failures,
            })
            .collect(),
        jails: r
            .jails
            .iter()
            .map(|j| JsonJail {
                name: &j.config.name,
                filter: &j.config.filter_label,
                matched: j.stats.matched,
                ignored: j.stats.ignored,
                unparsed_time: j.stats.unparsed_time,
                bad_host: j.stats.bad_host,
                too_long: j.stats.too_long,
                ignored_clients: j.stats.ignored_clients,
                while_banned: j.stats.while_banned,
                rule_hits: &j.stats.rule_hits,
                bans: j.bans.len(),
            })
            .collect(),
        inputs: r
            .inputs
            .iter()
            .map(|i| JsonInput {
                name: &i.name,
                lines: i.lines,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&report).expect("report serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations() {
        assert_eq!(n(1_234_567), "1,234,567");
        assert_eq!(n(12), "12");
        assert_eq!(human_duration(jiff::SignedDuration::from_secs(1800)), "30m");
        assert_eq!(human_duration(jiff::SignedDuration::from_secs(90)), "90s");
        assert_eq!(
            utc("2026-03-28T23:31:47.9Z".parse().unwrap()),
            "2026-03-28T23:31:47Z"
        );
    }
}

//! The commands that talk to a running daemon: `status`, `bans`, `ban`, `unban`, `reload`.
//! Each sends one request over the control socket and prints the reply for people, or as
//! JSON with `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use comfy_table::{presets, ColumnConstraint, ContentArrangement, Table};

use jiff::{SignedDuration, Timestamp};

use crate::config::Config;
use crate::daemon::control::request;
use crate::daemon::protocol::{ActiveBan, BanDetail, Bans, Reply, Request, Status};
use crate::vocab::terminal::{cell, visible};
use crate::vocab::time::{human_duration, utc};
use crate::vocab::Target;

/// Where to find the daemon.
#[derive(Args, Debug, Clone)]
pub struct SocketArgs {
    /// The daemon's configuration, to find its socket.
    #[arg(short, long, default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The control socket (overrides the configuration's).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        match Config::load(&self.config) {
            Ok(c) => crate::daemon::paths(&c).1,
            // A configuration being edited may not validate (that is what `moat reload` will
            // report); its socket is still where it says.
            Err(_) => loose_socket(&self.config)
                .unwrap_or_else(|| crate::config::daemon::DEFAULT_SOCKET.into()),
        }
    }
}

/// `[daemon] socket` read from a file that may not validate as a whole.
fn loose_socket(config: &std::path::Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let socket = PathBuf::from(table.get("daemon")?.get("socket")?.as_str()?);
    Some(match config.parent() {
        Some(dir) if socket.is_relative() => dir.join(socket),
        _ => socket,
    })
}

/// `moat bans ...`.
#[derive(Subcommand, Debug)]
pub enum BansCommand {
    /// One ban in full: its evidence lines, its jail's rule, the earlier bans of the target
    /// and its escalation, which enforcers hold it and since when.
    Show {
        /// The banned address or network.
        target: String,
        /// The ban in this jail, when the target is banned in several.
        #[arg(long)]
        jail: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArgs,
    },
}

fn call(socket: &SocketArgs, req: Request) -> anyhow::Result<serde_json::Value> {
    match request(&socket.path(), &req)? {
        Reply::Ok { result, .. } => Ok(result),
        Reply::Err { error, .. } => Err(anyhow::anyhow!("{error}")),
    }
}

fn until_text(until: Option<Timestamp>) -> String {
    until.map_or("forever".into(), utc)
}

fn remaining(until: Option<Timestamp>, now: Timestamp) -> String {
    match until {
        None => "forever".into(),
        Some(u) => {
            let secs = now.duration_until(u).as_secs().max(1);
            let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
            match (d, h, m) {
                (0, 0, 0) => format!("{s}s"),
                (0, 0, _) => format!("{m}m{s:02}s"),
                (0, _, _) => format!("{h}h{m:02}m"),
                _ => format!("{d}d{h:02}h"),
            }
        }
    }
}

/// A table as people read it (fitted to the terminal) or as scripts read it (`--plain`).
struct Grid {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Columns never wrapped (addresses, times): the others give way.
    whole: Vec<usize>,
    /// Columns left out when the terminal is narrower than [`WIDE`] (what another column
    /// says too).
    optional: Vec<usize>,
}

/// Below this many columns a table drops its optional columns.
const WIDE: u16 = 120;

impl Grid {
    fn new(header: impl IntoIterator<Item = &'static str>) -> Grid {
        Grid {
            header: header.into_iter().collect(),
            rows: Vec::new(),
            whole: Vec::new(),
            optional: Vec::new(),
        }
    }

    /// Never wraps these columns.
    fn whole(mut self, columns: &[usize]) -> Grid {
        self.whole = columns.to_vec();
        self
    }

    /// Leaves these columns out on a narrow terminal.
    fn optional(mut self, columns: &[usize]) -> Grid {
        self.optional = columns.to_vec();
        self
    }

    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    /// Fitted to the terminal's width (or `COLUMNS` when standard output is not a terminal):
    /// long cells wrap rather than the table overflowing.
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic);
        if !t.is_tty() {
            if let Some(w) = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse::<u16>().ok())
            {
                t.set_width(w.max(40));
            }
        }
        t.set_header(self.header.clone());
        for r in &self.rows {
            t.add_row(r.clone());
        }
        let narrow = t.width().is_some_and(|w| w < WIDE);
        for (i, column) in t.column_iter_mut().enumerate() {
            if narrow && self.optional.contains(&i) {
                column.set_constraint(ColumnConstraint::Hidden);
            } else if self.whole.contains(&i) {
                column.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
        t
    }

    /// Tab-separated, a header line first; a tab in a cell is written `\t`, several values
    /// in one cell are separated by spaces. Cells are already terminal-safe.
    fn tsv(&self) -> String {
        let field = |c: &str| c.replace('\t', "\\t").replace('\n', " ");
        let mut out = self.header.join("\t");
        out.push('\n');
        for r in &self.rows {
            out.push_str(&r.iter().map(|c| field(c)).collect::<Vec<_>>().join("\t"));
            out.push('\n');
        }
        out
    }

    fn show(&self, plain: bool) -> String {
        if plain {
            self.tsv()
        } else {
            format!("{}\n", self.table())
        }
    }
}

fn ban_grid(bans: &[ActiveBan], now: Timestamp) -> Grid {
    // On 80 columns: target, jail, start, time left, failures, reason (the end is the start
    // plus what is left). The node column only in a fleet where other nodes' bans are in force.
    let fleet = bans.iter().any(|b| b.node.is_some());
    let mut header = vec![
        "target",
        "jail",
        "started (UTC)",
        "until (UTC)",
        "left",
        "failures",
        "reason",
    ];
    if fleet {
        header.push("node");
    }
    let mut t = Grid::new(header)
        .whole(if fleet {
            &[0, 1, 2, 4, 5, 7]
        } else {
            &[0, 1, 2, 4, 5]
        })
        .optional(&[3]);
    for b in bans {
        let mut row = vec![
            Target(b.target).to_string(),
            cell(&b.jail),
            utc(b.started),
            until_text(b.until),
            remaining(b.until, now),
            b.failures.to_string(),
            cell(&b.reason),
        ];
        if fleet {
            row.push(b.node.as_deref().map_or("(this node)".into(), cell));
        }
        t.row(row);
    }
    t
}

/// The fleet's part of `moat status`.
fn print_cluster(c: &crate::cluster::ClusterStatus, now: Timestamp) {
    println!(
        "cluster: node {} on {}: {}",
        visible(&c.node),
        visible(&c.redis),
        match (&c.degraded, c.reachable) {
            (Some(why), _) => format!("DEGRADED ({})", visible(why)),
            (None, true) => format!("reachable, {:.1} ms", c.latency_ms.unwrap_or_default()),
            (None, false) => "unreachable".into(),
        }
    );
    println!(
        "  published {}, received {}, refused {}, queued {}; in force here: {} own, {} from other nodes; last lag {}",
        c.published,
        c.received,
        c.refused,
        c.queued,
        c.own_bans,
        c.remote_bans,
        c.lag_ms.map_or("-".into(), |l| format!("{l} ms"))
    );
    if let Some(r) = &c.last_refused {
        println!("  last refused: {}", visible(r));
    }
    if let Some(l) = &c.cloudflare_lease {
        println!("  Cloudflare lease {}", visible(l));
    }
    for n in &c.nodes {
        let ago = (now.as_millisecond() - n.last_heartbeat).max(0) as f64 / 1000.0;
        println!(
            "  node {}: {} (heartbeat {ago:.0}s ago), {} bans decided, lag {}",
            visible(&n.node),
            if n.alive { "alive" } else { "SILENT" },
            n.bans,
            n.lag_ms.map_or("-".into(), |l| format!("{l} ms"))
        );
    }
}

pub fn status(
    socket: &SocketArgs,
    jail: Option<String>,
    json: bool,
    plain: bool,
) -> anyhow::Result<ExitCode> {
    let value = call(socket, Request::Status { jail: jail.clone() })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s: Status = serde_json::from_value(value)?;
    let now = Timestamp::now();
    if let Some(name) = jail {
        let Some(j) = s.jails.iter().find(|j| j.name == name) else {
            anyhow::bail!("no jail named {name:?}");
        };
        if plain {
            print!("{}", ban_grid(&j.banned, now).tsv());
            return Ok(ExitCode::SUCCESS);
        }
        println!("Jail {}", visible(&j.name));
        println!("|- Filter:            {}", visible(&j.filter));
        if j.maxretry > 0 {
            println!(
                "|- Rule:              {} failures within {} -> ban for {}",
                j.maxretry,
                human_duration(SignedDuration::from_secs(j.findtime_secs)),
                j.bantime_secs.map_or("ever".into(), |b| human_duration(
                    SignedDuration::from_secs(b)
                ))
            );
        }
        println!("|- Sources:");
        for src in &j.sources {
            let files = s.sources.iter().find(|x| &x.source == src);
            match files {
                Some(f) if !f.files.is_empty() => {
                    for file in &f.files {
                        println!(
                            "|    {} (read to byte {}, {} behind, {} lines{})",
                            visible(&file.path),
                            file.offset,
                            file.lag,
                            file.lines,
                            if file.overlong > 0 {
                                format!(", {} over 1 MiB skipped", file.overlong)
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                _ => println!("|    {} (no file yet)", visible(src)),
            }
            if let Some(e) = files.and_then(|f| f.error.as_ref()) {
                println!("|    error: {}", visible(e));
            }
        }
        println!("|- Currently failing: {}", j.currently_failing);
        println!("|- Total failed:      {}", j.total_failed);
        if j.stale > 0 {
            println!("|- Too old to count:  {}", j.stale);
        }
        if j.unparsed_time > 0 {
            println!("|- Unreadable time:   {}", j.unparsed_time);
        }
        if j.too_long > 0 {
            println!("|- Too long to match: {} (look-around pattern)", j.too_long);
        }
        if j.refused > 0 {
            println!("|- Refused (safety):  {}", j.refused);
        }
        println!("|- Currently banned:  {}", j.currently_banned);
        println!("|- Total banned:      {}", j.total_banned);
        println!(
            "`- Banned:            {}",
            j.banned
                .iter()
                .map(|b| Target(b.target).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !j.banned.is_empty() {
            print!("{}", ban_grid(&j.banned, now).show(false));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (jails, enforcers) = overview(&s);
    if plain {
        print!("{}\n{}", jails.tsv(), enforcers.tsv());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "moat {} running since {} (pid {}), {} jail{}",
        s.version,
        utc(s.started),
        s.pid,
        s.jails.len(),
        if s.jails.len() == 1 { "" } else { "s" }
    );
    println!(
        "config: {}\nledger: {}",
        visible(&s.config),
        visible(&s.ledger)
    );
    for w in &s.warnings {
        println!("warning: {}", visible(w));
    }
    if let Some(c) = &s.cluster {
        print_cluster(c, now);
    }
    print!("{}{}", jails.show(false), enforcers.show(false));
    Ok(ExitCode::SUCCESS)
}

/// The ledger's newest bans.
fn history_grid(b: &Bans) -> Grid {
    let mut t = Grid::new([
        "target",
        "jail",
        "started (UTC)",
        "until (UTC)",
        "ended (UTC)",
        "how",
        "failures",
    ])
    .whole(&[0, 1, 2, 5, 6])
    .optional(&[3]);
    for r in &b.history {
        t.row([
            Target(r.target).to_string(),
            cell(&r.jail),
            utc(r.started),
            until_text(r.until),
            r.ended.map_or("-".into(), utc),
            r.end_reason.map_or("active".into(), |e| e.as_str().into()),
            r.failures.to_string(),
        ]);
    }
    t
}

/// The jails and the enforcers of a status.
fn overview(s: &Status) -> (Grid, Grid) {
    let mut t = Grid::new([
        "jail",
        "filter",
        "failing",
        "failed (total)",
        "banned",
        "banned (total)",
        "sources",
    ]);
    for j in &s.jails {
        t.row([
            cell(&j.name),
            cell(&j.filter),
            j.currently_failing.to_string(),
            j.total_failed.to_string(),
            j.currently_banned.to_string(),
            j.total_banned.to_string(),
            j.sources
                .iter()
                .map(|s| cell(s))
                .collect::<Vec<_>>()
                .join("\n"),
        ]);
    }
    let jails = t;
    let mut t = Grid::new([
        "enforcer",
        "applied",
        "failed",
        "queued",
        "gave up",
        "repairs",
        "last error",
    ]);
    for e in &s.enforcers {
        let last = match (&e.last_error, e.last_error_at) {
            (Some(m), Some(at)) => format!("{} at {}", visible(m), utc(at)),
            (Some(m), None) => cell(m),
            _ => "-".into(),
        };
        let last = match e.next_retry {
            Some(n) => format!("{last} (next try {})", utc(n)),
            None => last,
        };
        let mut name = match &e.detail {
            Some(d) => format!("{}\n({})", visible(&e.name), visible(d)),
            None => cell(&e.name),
        };
        if let Some(r) = &e.remark {
            name = format!("{name}\n{}", visible(r));
        }
        t.row([
            name,
            e.applied.to_string(),
            e.failed.to_string(),
            e.queued.to_string(),
            e.gave_up.to_string(),
            e.repairs.to_string(),
            last,
        ]);
    }
    (jails, t)
}

pub fn bans(
    socket: &SocketArgs,
    history: Option<u32>,
    json: bool,
    plain: bool,
) -> anyhow::Result<ExitCode> {
    let value = call(socket, Request::Bans { history })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let b: Bans = serde_json::from_value(value)?;
    let now = Timestamp::now();
    if plain {
        // Scripts get one table: the active bans, or with --history the history.
        match history {
            Some(_) => print!("{}", history_grid(&b).tsv()),
            None => print!("{}", ban_grid(&b.active, now).tsv()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if b.active.is_empty() {
        println!("No active bans.");
    } else {
        println!(
            "{} active ban{}:",
            b.active.len(),
            if b.active.len() == 1 { "" } else { "s" }
        );
        print!("{}", ban_grid(&b.active, now).show(false));
    }
    if history.is_some() {
        print!("History (newest first):\n{}", history_grid(&b).show(false));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ban(
    socket: &SocketArgs,
    target: String,
    jail: Option<String>,
    duration: Option<String>,
    reason: Option<String>,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Refuse what is not an address before bothering the daemon.
    crate::vocab::parse_target(&target).map_err(|e| anyhow::anyhow!(e))?;
    let value = call(
        socket,
        Request::Ban {
            target,
            jail,
            duration,
            reason,
            force,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let b: ActiveBan = serde_json::from_value(value)?;
    println!(
        "Banned {} in jail {} until {}",
        Target(b.target),
        visible(&b.jail),
        until_text(b.until)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn unban(
    socket: &SocketArgs,
    target: Option<String>,
    all: bool,
    jail: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(t) = &target {
        crate::vocab::parse_target(t).map_err(|e| anyhow::anyhow!(e))?;
    }
    let value = call(
        socket,
        Request::Unban {
            target: target.clone(),
            all,
            jail,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let ended: Vec<ActiveBan> = serde_json::from_value(value)?;
    if ended.is_empty() {
        println!(
            "Nothing to unban: {} is not banned.",
            target.as_deref().unwrap_or("nothing")
        );
        return Ok(ExitCode::from(super::EXIT_FINDINGS));
    }
    for b in &ended {
        println!("Unbanned {} (jail {})", Target(b.target), visible(&b.jail));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reload(socket: &SocketArgs) -> anyhow::Result<ExitCode> {
    let value = call(socket, Request::Reload)?;
    println!("Reloaded: {}", visible(value.as_str().unwrap_or_default()));
    Ok(ExitCode::SUCCESS)
}

/// `moat bans show TARGET`.
pub fn show(
    socket: &SocketArgs,
    target: &str,
    jail: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    crate::vocab::parse_target(target).map_err(|e| anyhow::anyhow!(e))?;
    let value = call(
        socket,
        Request::Show {
            target: target.to_string(),
            jail,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let d: BanDetail = serde_json::from_value(value)?;
    print!("{}", show_text(&d, Timestamp::now()));
    Ok(ExitCode::SUCCESS)
}

/// What `moat bans show` prints for people: every text from a log made visible.
fn show_text(d: &BanDetail, now: Timestamp) -> String {
    use std::fmt::Write;
    let b = &d.ban;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Ban of {} in jail {} (origin {})",
        Target(b.target),
        visible(&b.jail),
        visible(&d.origin)
    );
    let _ = writeln!(
        out,
        "|- Since:       {} (UTC)\n|- Until:       {} ({})",
        utc(b.started),
        until_text(b.until),
        remaining(b.until, now)
    );
    let _ = writeln!(out, "|- Failures:    {}", b.failures);
    if !b.reason.is_empty() {
        let _ = writeln!(out, "|- Reason:      {}", visible(&b.reason));
    }
    match &d.rule {
        Some(r) => {
            let _ = writeln!(
                out,
                "|- Rule:        filter {}: {} failures within {} -> ban for {}{}",
                visible(&r.filter),
                r.maxretry,
                human_duration(SignedDuration::from_secs(r.findtime_secs)),
                r.bantime_secs.map_or("ever".into(), |s| human_duration(
                    SignedDuration::from_secs(s)
                )),
                if r.escalates { " (escalates)" } else { "" }
            );
        }
        None => {
            let _ = writeln!(out, "|- Rule:        none (a ban by hand)");
        }
    }
    let _ = writeln!(
        out,
        "|- Escalation:  {}",
        match d.escalation {
            0 => "none (no earlier ban counted)".to_string(),
            n => format!(
                "level {n} ({n} earlier ban{} counted)",
                if n == 1 { "" } else { "s" }
            ),
        }
    );
    if d.enforcers.is_empty() {
        let _ = writeln!(out, "|- Enforcers:   none holds it");
    } else {
        let _ = writeln!(out, "|- Enforcers:");
        for h in &d.enforcers {
            let _ = writeln!(
                out,
                "|    {} since {} (UTC){}",
                visible(&h.enforcer),
                utc(h.since),
                if h.pending { ", changes pending" } else { "" }
            );
        }
    }
    if d.evidence.is_empty() {
        let _ = writeln!(out, "|- Evidence:    no lines kept");
    } else {
        let _ = writeln!(out, "|- Evidence ({} lines):", d.evidence.len());
        for l in &d.evidence {
            let _ = writeln!(out, "|    {}", visible(l));
        }
    }
    if d.history.is_empty() {
        let _ = writeln!(out, "`- Earlier bans: none");
    } else {
        let _ = writeln!(out, "`- Earlier bans (newest first):");
        for r in &d.history {
            let _ = writeln!(
                out,
                "     {} {} until {} ({}), {} failures",
                utc(r.started),
                visible(&r.jail),
                until_text(r.until),
                r.end_reason.map_or("active", |e| e.as_str()),
                r.failures
            );
        }
    }
    out
}

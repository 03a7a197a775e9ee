//! `moat import fail2ban`: fail2ban's jails (`jail.conf`, `jail.d/*.conf`, `jail.local`,
//! `jail.d/*.local`, with their `paths-*.conf` includes) as an equivalent moat configuration.
//!
//! Read as fail2ban's client reads them: the files merged with fail2ban's precedence, each
//! enabled jail's options interpolated in its section (`%(sshd_log)s`, `%(action_)s`), its
//! filter read with the jail's options, `%(known/...)s` seeing the filter's values. What
//! maps: `maxretry`, `findtime`, `bantime` (fail2ban's time expressions; negative is
//! permanent), `bantime.increment` with `.factor`, `.multipliers`, `.maxtime`,
//! `.overalljails` as `escalate`, `ignoreip` addresses and networks as `ignore`, `logpath`
//! (globs) or, with `backend = systemd`, the filter's `journalmatch` as sources,
//! `port`/`protocol` as the jail's `ports`, `filter = name[opts]` as
//! `filter = "fail2ban:name[opts]"` (the jail's own `failregex`, `ignoreregex`, ... as
//! `fail2ban_options`), banning actions (`iptables*`, `nftables*`, `firewallcmd*`,
//! `shorewall*`) as the kernel enforcer, `cloudflare` and `cloudflare-token` as the Cloudflare
//! enforcer, and `recidive` as escalation across jails. Everything else is listed, with why,
//! as comments in the output and in [`Imported::notes`]: an import never drops a jail or an
//! action silently.
//!
//! Pure: files come through [`ConfigFiles`], port names through a lookup.

use std::collections::BTreeMap;
use std::fmt::Write;

use ipnet::IpNet;

use crate::detect::fail2ban::ini::{GetError, Store};
use crate::detect::fail2ban::reader::{self, ConfigFiles, FilterLocation, ReadError};

/// The result: the configuration text and what could not be carried over.
#[derive(Debug, Default)]
pub struct Imported {
    /// The moat configuration written, ready to save as a file.
    pub toml: String,
    /// One line per setting not carried over (`jail sshd: action sendmail-whois: ...`).
    pub notes: Vec<String>,
    /// The enabled jails written.
    pub jails: Vec<String>,
    /// The files read, in order.
    pub files: Vec<String>,
}

/// A port name's number (`/etc/services`): name and protocol (`tcp`, `udp`).
pub type Services<'a> = &'a dyn Fn(&str, &str) -> Option<u16>;

/// fail2ban's `str2seconds`: `600`, `10m`, `1h 30m`, `1d12h`, `1w`, `1mo`, `1y`, `-1`;
/// sums and differences of such terms.
pub fn seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a fail2ban time (e.g. 600, 10m, 1h 30m, 1d)");
    let b = t.as_bytes();
    let mut i = 0;
    let mut total = 0.0;
    let mut sign = 1.0;
    let mut any = false;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' => i += 1,
            b'+' => {
                sign = 1.0;
                i += 1;
            }
            b'-' => {
                sign = -1.0;
                i += 1;
            }
            c if c.is_ascii_digit() || c == b'.' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let n: f64 = t[start..i].parse().map_err(|_| bad())?;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                let ustart = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let unit = t[ustart..i].to_ascii_lowercase();
                let mult = match unit.as_str() {
                    "" | "s" | "ss" | "sec" | "second" | "seconds" => 1.0,
                    "m" | "mm" | "mi" | "min" | "minute" | "minutes" => 60.0,
                    "h" | "hh" | "ho" | "hou" | "hour" | "hours" => 3600.0,
                    "d" | "dd" | "da" | "day" | "days" => 86_400.0,
                    "w" | "ww" | "we" | "wee" | "week" | "weeks" => 604_800.0,
                    "mo" | "mon" | "month" | "months" => 365.25 * 86_400.0 / 12.0,
                    "y" | "yy" | "ye" | "yea" | "year" | "years" => 365.25 * 86_400.0,
                    _ => return Err(bad()),
                };
                total += sign * n * mult;
                sign = 1.0;
                any = true;
            }
            _ => return Err(bad()),
        }
    }
    if !any {
        return Err(bad());
    }
    Ok(total)
}

/// Seconds as a moat duration: `90s`, `10m`, `1h30m`, `7d`.
fn duration(secs: f64) -> String {
    let mut s = secs.round().max(1.0) as u64;
    let mut out = String::new();
    for (unit, len) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ] {
        if s >= len && (s.is_multiple_of(len) || unit != "w") {
            write!(out, "{}{unit}", s / len).expect("string");
            s %= len;
        }
    }
    out
}

fn as_bool(v: &str) -> Option<bool> {
    match v.trim().to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" | "enabled" => Some(true),
        "0" | "no" | "false" | "off" | "disabled" | "" => Some(false),
        _ => None,
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// fail2ban's `splitWithOptions`: actions separated by whitespace or newlines, each
/// `name[opt=value, ...]` with quoted values that may hold spaces.
fn split_actions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if depth > 0 => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.saturating_sub(1),
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    // `name [opts]` written apart: fail2ban joins them.
    let mut joined: Vec<String> = Vec::new();
    for a in out {
        match joined.last_mut() {
            Some(prev) if a.starts_with('[') => prev.push_str(&a),
            _ => joined.push(a),
        }
    }
    joined
}

/// What an action becomes in moat.
#[derive(Debug, PartialEq, Eq)]
enum ActionKind {
    /// A firewall action: the kernel enforcer; `all_ports` for `*-allports` actions.
    Kernel { all_ports: bool },
    /// `cloudflare` (global key, user level) or `cloudflare-token` (token, zone level).
    Cloudflare { token: bool },
    /// Nothing moat does: with the reason and a hint.
    Other(&'static str),
}

fn action_kind(name: &str) -> ActionKind {
    let n = name.trim_end_matches(".conf");
    let firewall = [
        "iptables",
        "ip6tables",
        "nftables",
        "firewallcmd",
        "shorewall",
    ];
    if firewall.iter().any(|f| n.starts_with(f)) {
        return ActionKind::Kernel {
            all_ports: n.contains("allports"),
        };
    }
    match n {
        "cloudflare" => ActionKind::Cloudflare { token: false },
        "cloudflare-token" => ActionKind::Cloudflare { token: true },
        "dummy" => ActionKind::Other("does nothing"),
        _ if n.starts_with("mail") || n.starts_with("sendmail") || n.starts_with("smtp") => {
            ActionKind::Other(
                "sends mail; moat does not (hint: an [enforce.exec] command such as a mail \
                 or webhook notifier, given {ip} and {jail})",
            )
        }
        "abuseipdb" | "blocklist_de" | "badips" | "xarf-login-attack" | "apprise" => {
            ActionKind::Other(
                "reports to an outside service; moat does not (hint: an [enforce.exec] \
                 command, given {ip} and {jail})",
            )
        }
        _ => ActionKind::Other(
            "has no equivalent in moat (hint: [enforce.exec] runs a command per ban with \
             {ip}, {jail}, {until}, {ports}; never through a shell)",
        ),
    }
}

/// The options fail2ban's jail reader sends its filter (they replace the filter's own).
const FILTER_OPTIONS: &[&str] = &[
    "failregex",
    "ignoreregex",
    "prefregex",
    "datepattern",
    "maxlines",
    "journalmatch",
];

/// Jail options moat carries over or reports; anything else in a jail section only feeds
/// interpolation (`port`, `chain`, `banaction`, ...).
struct JailRead {
    name: String,
    lines: Vec<String>,
    notes: Vec<String>,
    kernel: bool,
    cloudflare: Option<(bool, BTreeMap<String, String>)>,
    only_cloudflare: bool,
    bantime: Option<f64>,
    escalate: Option<Escalate>,
    recidive: bool,
}

#[derive(Clone, Debug)]
struct Escalate {
    /// Multipliers by earlier bans (the last repeats); `None`: fail2ban's doubling (factor 2).
    multipliers: Option<Vec<u64>>,
    max: Option<f64>,
    across: bool,
}

/// Reads the jails under `dir` and writes the moat configuration.
pub fn import(
    files: &dyn ConfigFiles,
    dir: &str,
    services: Services<'_>,
) -> Result<Imported, ReadError> {
    let (mut store, read) = reader::read_config(files, dir, "jail", "jail configuration")?;
    store.set_default("fail2ban_version", "1.0.2".into());
    store.set_default("fail2ban_confpath", dir.into());
    let mut out = Imported {
        files: read,
        ..Imported::default()
    };
    let names: Vec<String> = store
        .section_names()
        .filter(|n| *n != "INCLUDES")
        .map(str::to_string)
        .collect();
    let mut jails = Vec::new();
    let mut disabled = 0;
    let mut usedns_noted = false;
    for name in &names {
        let get = |store: &Store, key: &str| -> Result<Option<String>, ReadError> {
            store
                .get(name, key, &[])
                .map_err(|e| value_error(store, name, key, e))
        };
        let enabled = get(&store, "enabled")?
            .and_then(|v| as_bool(&v))
            .unwrap_or(false);
        if !enabled {
            disabled += 1;
            continue;
        }
        let mut j = JailRead {
            name: name.clone(),
            lines: Vec::new(),
            notes: Vec::new(),
            kernel: false,
            cloudflare: None,
            only_cloudflare: false,
            bantime: None,
            escalate: None,
            recidive: false,
        };
        let backend = get(&store, "backend")?.unwrap_or_else(|| "auto".into());
        let systemd = backend.trim().starts_with("systemd");
        let filter = get(&store, "filter")?.unwrap_or_default();
        let filter = filter.trim().to_string();
        let mut journalmatch: Vec<Vec<String>> = Vec::new();
        if filter.is_empty() {
            j.notes.push(
                "no filter: fail2ban runs it without one (bans only by hand); moat needs one, \
                 so the jail is left out"
                    .into(),
            );
            out.notes
                .extend(j.notes.iter().map(|n| format!("jail {name}: {n}")));
            continue;
        }
        let (fname, mut fopts) = reader::split_options(&filter).map_err(|m| ReadError::Value {
            origin: store
                .raw(name, "filter")
                .map(|v| v.origin.clone())
                .unwrap_or_default(),
            message: m,
        })?;
        if fname == "recidive" {
            j.recidive = true;
        }
        // fail2ban's applyAutoOptions: a journal backend reads the filter's journal form.
        if systemd && !fopts.iter().any(|(k, _)| k == "logtype") {
            let (fstore, _) =
                reader::read_config(files, dir, &format!("filter.d/{fname}"), "filter")?;
            if !fstore.has_option("Definition", "logtype", false) {
                fopts.push(("logtype".into(), "journal".into()));
            }
        }
        let location = FilterLocation::Named {
            base: dir.to_string(),
            name: fname.clone(),
        };
        let definition = reader::read_filter(files, &location, &fopts, &[])?;
        // `%(known/failregex)s` in the jail sees the filter's values.
        let known = [
            (
                "failregex",
                definition
                    .failregex
                    .iter()
                    .map(|r| r.text.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            (
                "ignoreregex",
                definition
                    .ignoreregex
                    .iter()
                    .map(|r| r.text.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            (
                "prefregex",
                definition
                    .prefregex
                    .as_ref()
                    .map(|r| r.text.clone())
                    .unwrap_or_default(),
            ),
            (
                "datepattern",
                definition
                    .datepattern
                    .as_ref()
                    .map(|r| r.text.clone())
                    .unwrap_or_default(),
            ),
        ];
        for (k, v) in known {
            // Tag text must not be read as interpolation: `%` is written `%%`.
            store.set(name, &format!("known/{k}"), v.replace('%', "%%"));
        }
        journalmatch.extend(definition.journalmatch.iter().cloned());
        let get = |key: &str| get(&store, key);
        let mut fail2ban_options: Vec<(String, String)> = Vec::new();
        for &opt in FILTER_OPTIONS {
            if let Some(v) = get(opt)? {
                fail2ban_options.push((opt.to_string(), v));
            }
        }
        let spec = if fopts.is_empty() {
            fname.clone()
        } else {
            let value = |v: &str| {
                if v.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c)) {
                    v.to_string()
                } else if !v.contains('"') {
                    format!("\"{v}\"")
                } else {
                    format!("'{v}'")
                }
            };
            format!(
                "{fname}[{}]",
                fopts
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if j.recidive {
            out.notes.push(format!(
                "jail {name}: recidive reads fail2ban's own log; in moat it becomes escalation \
                 across jails: each jail's ban of a client banned {} times within {} lasts {} \
                 (see the escalate settings)",
                get("maxretry")?.unwrap_or_else(|| "5".into()),
                get("findtime")?.unwrap_or_else(|| "1d".into()),
                get("bantime")?.unwrap_or_else(|| "1w".into()),
            ));
            jails.push((j, RecidiveParams::read(&get)?));
            continue;
        }
        j.lines
            .push(format!("filter = {}", quote(&format!("fail2ban:{spec}"))));
        if !fail2ban_options.is_empty() {
            let mut t = String::from("fail2ban_options = { ");
            t.push_str(
                &fail2ban_options
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", quote(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            t.push_str(" }");
            j.lines.push(t);
        }
        // Sources.
        if systemd {
            if journalmatch.is_empty() {
                j.notes.push(
                    "backend = systemd but the filter has no journalmatch: no journal source \
                     could be derived; hint: sources = [\"journald:UNIT\"]"
                        .into(),
                );
            } else {
                let sources: Vec<String> = journalmatch
                    .iter()
                    .map(|words| format!("journald:{}", words.join(" ")))
                    .collect();
                j.lines.push(format!("sources = {}", list(&sources)));
            }
            if backend.contains('[') {
                j.notes.push(format!(
                    "backend {backend:?}: journal options are not carried over (moat reads the \
                     system journal with journalctl)"
                ));
            }
        } else {
            let mut paths = Vec::new();
            for line in get("logpath")?.unwrap_or_default().split('\n') {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let path = match line.rsplit_once(' ') {
                    Some((p, "tail" | "head")) => p.trim(),
                    _ => line,
                };
                paths.push(path.to_string());
            }
            if paths.is_empty() {
                j.notes.push("no logpath: give the jail sources".into());
            } else {
                j.lines.push(format!("sources = {}", list(&paths)));
            }
            if !matches!(backend.trim(), "auto" | "polling" | "pyinotify" | "gamin") {
                j.notes
                    .push(format!("backend {backend:?} is read as a file backend"));
            }
        }
        // Counting.
        if let Some(v) = get("maxretry")? {
            match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => j.lines.push(format!("maxretry = {n}")),
                _ => j
                    .notes
                    .push(format!("maxretry {v:?} is not a positive number")),
            }
        }
        if let Some(v) = get("findtime")? {
            match seconds(&v) {
                Ok(s) if s > 0.0 => j.lines.push(format!("findtime = {}", quote(&duration(s)))),
                Ok(_) => j.notes.push(format!("findtime {v:?} is not positive")),
                Err(e) => j.notes.push(e),
            }
        }
        if let Some(v) = get("bantime")? {
            match seconds(&v) {
                Ok(s) if s < 0.0 => {
                    j.lines.push("bantime = \"forever\"".into());
                    j.bantime = Some(f64::INFINITY);
                }
                Ok(s) if s > 0.0 => {
                    j.lines.push(format!("bantime = {}", quote(&duration(s))));
                    j.bantime = Some(s);
                }
                Ok(_) => j
                    .notes
                    .push("bantime 0 bans for no time: left at moat's default".into()),
                Err(e) => j.notes.push(e),
            }
        }
        if get("bantime.increment")?.and_then(|v| as_bool(&v)) == Some(true) {
            j.escalate = Some(read_increment(&get, &mut j.notes)?);
        }
        // Who is never counted.
        let mut ignore = Vec::new();
        for word in get("ignoreip")?
            .unwrap_or_default()
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
        {
            let net = word
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| word.parse::<std::net::IpAddr>().map(IpNet::from));
            match net {
                Ok(n) => ignore.push(n.to_string()),
                Err(_) => j.notes.push(format!(
                    "ignoreip {word:?}: a name, not an address; moat never resolves names \
                     (hint: its addresses)"
                )),
            }
        }
        if !ignore.is_empty() {
            j.lines.push(format!("ignore = {}", list(&ignore)));
        }
        if let Some(c) = get("ignorecommand")?.filter(|c| !c.trim().is_empty()) {
            j.notes.push(format!(
                "ignorecommand {c:?}: moat runs no command to decide (hint: list the \
                 addresses in ignore)"
            ));
        }
        if get("ignoreself")?.and_then(|v| as_bool(&v)) == Some(false) {
            j.notes.push(
                "ignoreself = false: moat never bans the host's own addresses, whatever is set"
                    .into(),
            );
        }
        if let Some(v) = get("usedns")?.filter(|v| v.trim() != "no") {
            if !usedns_noted {
                usedns_noted = true;
                out.notes.push(format!(
                    "usedns = {}: refused; a name in a log line must never choose whom to ban, \
                     so moat never resolves names (lines naming a host are matched but not \
                     banned, as with usedns = no)",
                    v.trim()
                ));
            }
        }
        if let Some(z) = get("logtimezone")?.filter(|z| !z.trim().is_empty()) {
            match z.trim() {
                "UTC" | "GMT" | "Z" | "UTC+0000" => j.lines.push("timezone = \"UTC\"".into()),
                other => j.notes.push(format!(
                    "logtimezone {other:?}: write the zone's name as timezone (e.g. \
                     \"Europe/Berlin\"); fail2ban's fixed offsets are not carried over"
                )),
            }
        }
        for opt in ["bantime.rndtime", "bantime.formula"] {
            if let Some(v) = get(opt)?.filter(|v| !v.trim().is_empty()) {
                j.notes.push(format!("{opt} = {v:?} is not carried over"));
            }
        }
        // Actions.
        let actions = split_actions(&get("action")?.unwrap_or_default());
        let mut all_ports = false;
        for action in &actions {
            let (aname, aopts) =
                reader::split_options(action).unwrap_or((action.clone(), Vec::new()));
            match action_kind(&aname) {
                ActionKind::Kernel { all_ports: a } => {
                    j.kernel = true;
                    all_ports |= a;
                    if aopts
                        .iter()
                        .any(|(k, v)| k == "port" && v.contains("0:65535"))
                    {
                        all_ports = true;
                    }
                }
                ActionKind::Cloudflare { token } => {
                    let mut opts: BTreeMap<String, String> = aopts.into_iter().collect();
                    for k in ["cfzone", "cftoken", "cfuser", "cfmode", "cftarget"] {
                        if !opts.contains_key(k) {
                            if let Some(v) = get(k)? {
                                opts.insert(k.to_string(), v);
                            }
                        }
                    }
                    j.cloudflare = Some((token, opts));
                }
                ActionKind::Other(why) => {
                    j.notes.push(format!("action {aname}: {why}"));
                }
            }
        }
        if actions.is_empty() {
            j.notes.push(
                "no action: fail2ban only records failures; in moat the jail's bans go to \
                 the enforcers in [enforce] use"
                    .into(),
            );
        }
        j.only_cloudflare = j.cloudflare.is_some() && !j.kernel;
        if j.kernel && !all_ports {
            match ports(
                &get("port")?.unwrap_or_default(),
                &get("protocol")?.unwrap_or_else(|| "tcp".into()),
                services,
            ) {
                Ok(Some(p)) => j.lines.push(format!("ports = {}", list(&p))),
                Ok(None) => {}
                Err(e) => j.notes.push(e),
            }
        }
        if j.only_cloudflare {
            j.lines.push("behind = \"cloudflare\"".into());
        } else if j.cloudflare.is_some() {
            j.notes.push(
                "bans both in the firewall and at Cloudflare: in moat every jail's bans go to \
                 every enforcer in [enforce] use, except jails behind = \"cloudflare\""
                    .into(),
            );
        }
        jails.push((j, RecidiveParams::default()));
    }
    // recidive: escalation across jails for every other jail.
    let recidive = jails
        .iter()
        .find(|(j, _)| j.recidive)
        .map(|(_, r)| r.clone());
    let mut cloudflare: Option<(bool, BTreeMap<String, String>)> = None;
    let mut kernel = false;
    let mut text = String::new();
    for (mut j, _) in jails.into_iter().filter(|(j, _)| !j.recidive) {
        kernel |= j.kernel;
        if let Some(cf) = &j.cloudflare {
            if cloudflare.is_none() {
                cloudflare = Some(cf.clone());
            }
        }
        let esc = merge_recidive(&mut j, recidive.as_ref());
        if let Some(mut e) = esc {
            // Steps beyond the longest ban change nothing: capped, and the last repeats.
            if let (Some(m), Some(max), Some(base)) = (e.multipliers.as_mut(), e.max, j.bantime) {
                if base.is_finite() && max.is_finite() {
                    let cap = (max / base).ceil().max(1.0) as u64;
                    for x in m.iter_mut() {
                        *x = (*x).min(cap);
                    }
                    while m.len() > 1 && m[m.len() - 1] == m[m.len() - 2] {
                        m.pop();
                    }
                }
            }
            let mut parts = Vec::new();
            match &e.multipliers {
                None => parts.push("factor = 2".to_string()),
                Some(m) => parts.push(format!(
                    "multipliers = [{}]",
                    m.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                )),
            }
            if let Some(max) = e.max {
                parts.push(format!("max = {}", quote(&duration(max))));
            }
            if e.across {
                parts.push("across_jails = true".into());
            }
            if let Some(r) = recidive.as_ref().filter(|_| e.across) {
                parts.push(format!("within = {}", quote(&duration(r.findtime))));
            }
            j.lines
                .push(format!("escalate = {{ {} }}", parts.join(", ")));
        }
        writeln!(text, "\n[jails.{}]", toml_key(&j.name)).expect("string");
        for l in &j.lines {
            writeln!(text, "{l}").expect("string");
        }
        for n in &j.notes {
            writeln!(text, "# not carried over: {n}").expect("string");
            out.notes.push(format!("jail {}: {n}", j.name));
        }
        out.jails.push(j.name.clone());
    }
    if disabled > 0 {
        out.notes.push(format!(
            "{disabled} jails are not enabled in fail2ban and are not written"
        ));
    }
    // Header, defaults and enforcers.
    let mut head = String::new();
    writeln!(
        head,
        "# Imported from fail2ban's configuration in {dir} by `moat import fail2ban`."
    )
    .expect("string");
    writeln!(
        head,
        "# Filters are read from there at start; check with `moat check-config`."
    )
    .expect("string");
    writeln!(head, "\n[defaults]\nfail2ban_dir = {}", quote(dir)).expect("string");
    let mut uses = Vec::new();
    if kernel {
        uses.push("kernel");
    }
    if cloudflare.is_some() {
        uses.push("cloudflare");
    }
    if uses.is_empty() {
        uses.push("log");
        out.notes.push(
            "no firewall or Cloudflare action: bans are only logged (enforce use = [\"log\"])"
                .into(),
        );
    }
    writeln!(
        head,
        "\n[enforce]\nuse = [{}]",
        uses.iter().map(|u| quote(u)).collect::<Vec<_>>().join(", ")
    )
    .expect("string");
    if let Some((token, opts)) = cloudflare {
        writeln!(head, "\n[enforce.cloudflare]\nmode = \"access-rules\"").expect("string");
        if token {
            writeln!(head, "scope = \"zone\"").expect("string");
            match opts.get("cfzone") {
                Some(z) => writeln!(head, "zone_id = {}", quote(z)).expect("string"),
                None => {
                    writeln!(head, "zone_id = \"ZONE-ID\"").expect("string");
                    out.notes
                        .push("cloudflare-token without cfzone: set zone_id".into());
                }
            }
            writeln!(head, "token_env = \"CLOUDFLARE_API_TOKEN\"").expect("string");
            out.notes.push(
                "cloudflare-token's token is not copied: give it to moat in the environment \
                 variable CLOUDFLARE_API_TOKEN (or token_file)"
                    .into(),
            );
        } else {
            writeln!(head, "scope = \"user\"").expect("string");
            writeln!(
                head,
                "email = {}\nkey_file = \"/etc/moat/cloudflare.key\"",
                quote(opts.get("cfuser").map_or("EMAIL", String::as_str))
            )
            .expect("string");
            out.notes.push(
                "cloudflare's global API key is not copied: write it to \
                 /etc/moat/cloudflare.key (mode 0600), or better use a token"
                    .into(),
            );
        }
        match opts.get("cfmode").map(|m| m.trim()) {
            None | Some("block") => {}
            Some("challenge" | "js_challenge") => {
                writeln!(head, "action = \"challenge\"").expect("string")
            }
            Some("managed_challenge") => {
                writeln!(head, "action = \"managed_challenge\"").expect("string")
            }
            Some(other) => out.notes.push(format!(
                "cloudflare cfmode {other:?} is not carried over (block is used)"
            )),
        }
    }
    // A note every jail has (a [DEFAULT] setting) is said once.
    let n_jails = out.jails.len();
    if n_jails > 1 {
        let mut collapsed: Vec<String> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for note in &out.notes {
            let body = note
                .strip_prefix("jail ")
                .and_then(|r| r.split_once(": "))
                .map(|(_, b)| b.to_string());
            match body {
                Some(b) => {
                    let count = out
                        .notes
                        .iter()
                        .filter(|n| n.ends_with(&format!(": {b}")))
                        .count();
                    if count >= n_jails {
                        if !seen.contains(&b) {
                            seen.push(b.clone());
                            collapsed.push(format!("every jail: {b}"));
                        }
                    } else {
                        collapsed.push(note.clone());
                    }
                }
                None => collapsed.push(note.clone()),
            }
        }
        out.notes = collapsed;
    }
    out.toml = head + &text;
    if !out.notes.is_empty() {
        out.toml
            .push_str("\n# Not carried over (also printed on standard error):\n");
        for n in &out.notes {
            writeln!(out.toml, "#   {n}").expect("string");
        }
    }
    Ok(out)
}

fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_string()
    } else {
        quote(name)
    }
}

fn value_error(store: &Store, section: &str, key: &str, e: GetError) -> ReadError {
    ReadError::Value {
        origin: store
            .raw(section, key)
            .map(|v| v.origin.clone())
            .unwrap_or_default(),
        message: e.to_string(),
    }
}

/// `bantime.increment` as moat's escalation: fail2ban's default formula doubles the ban with
/// each earlier ban, times `bantime.factor`; `bantime.multipliers` lists the factors.
fn read_increment(
    get: &dyn Fn(&str) -> Result<Option<String>, ReadError>,
    notes: &mut Vec<String>,
) -> Result<Escalate, ReadError> {
    let factor = match get("bantime.factor")?.filter(|v| !v.trim().is_empty()) {
        None => 1.0,
        Some(v) => v.trim().parse::<f64>().unwrap_or_else(|_| {
            notes.push(format!("bantime.factor {v:?} is an expression; 1 is used"));
            1.0
        }),
    };
    let max = match get("bantime.maxtime")?.filter(|v| !v.trim().is_empty()) {
        None => None,
        Some(v) => match seconds(&v) {
            Ok(s) if s > 0.0 => Some(s),
            _ => {
                notes.push(format!("bantime.maxtime {v:?} is not a time"));
                None
            }
        },
    };
    let across = get("bantime.overalljails")?.and_then(|v| as_bool(&v)) == Some(true);
    let integral = |x: f64| (x - x.round()).abs() < 1e-9 && x >= 1.0;
    let multipliers = match get("bantime.multipliers")?.filter(|v| !v.trim().is_empty()) {
        Some(v) => {
            let m: Vec<f64> = v
                .split_whitespace()
                .filter_map(|x| x.parse::<f64>().ok())
                .collect();
            // fail2ban leaves the first ban alone and uses multipliers[n] for the n-th repeat.
            let mut list = vec![1u64];
            for (i, x) in m.iter().enumerate().skip(if m.len() > 1 { 1 } else { 0 }) {
                let f = x * factor;
                if !integral(f) {
                    notes.push(format!(
                        "bantime.multipliers {v:?} times factor {factor}: {f} at step {i} is not \
                         a whole number; rounded"
                    ));
                }
                list.push(f.round().max(1.0) as u64);
            }
            Some(list)
        }
        None if factor == 1.0 => None,
        None => {
            // bantime × factor × 2^n for the n-th repeat, the first ban untouched.
            let mut list = vec![1u64];
            for n in 1..=20u32 {
                let f = factor * f64::from(1u32 << n);
                list.push(f.round().max(1.0) as u64);
            }
            if !integral(factor) {
                notes.push(format!(
                    "bantime.factor {factor}: the multipliers are rounded"
                ));
            }
            Some(list)
        }
    };
    Ok(Escalate {
        multipliers,
        max,
        across,
    })
}

/// What the recidive jail says: bans of one client across jails within `findtime`, and the
/// long ban after `maxretry` of them.
#[derive(Clone, Debug, Default)]
struct RecidiveParams {
    maxretry: u64,
    findtime: f64,
    bantime: f64,
}

impl RecidiveParams {
    fn read(get: &dyn Fn(&str) -> Result<Option<String>, ReadError>) -> Result<Self, ReadError> {
        let num = |k: &str, d: f64| -> Result<f64, ReadError> {
            Ok(get(k)?.and_then(|v| seconds(&v).ok()).unwrap_or(d))
        };
        Ok(RecidiveParams {
            maxretry: get("maxretry")?
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(5),
            findtime: num("findtime", 86_400.0)?,
            bantime: {
                let b = num("bantime", 604_800.0)?;
                if b < 0.0 {
                    f64::INFINITY
                } else {
                    b
                }
            },
        })
    }
}

/// A jail's escalation with recidive folded in: from the `maxretry`-th ban on (within
/// recidive's findtime, in any jail), at least recidive's ban.
fn merge_recidive(j: &mut JailRead, r: Option<&RecidiveParams>) -> Option<Escalate> {
    let Some(r) = r else {
        return j.escalate.clone();
    };
    let base = j.bantime.unwrap_or(600.0);
    if base.is_infinite() {
        return j.escalate.clone();
    }
    let long = if r.bantime.is_infinite() {
        None
    } else {
        Some((r.bantime / base).ceil().max(1.0) as u64)
    };
    let step = r.maxretry.saturating_sub(1) as usize;
    let own: Vec<u64> = match j.escalate.as_ref().and_then(|e| e.multipliers.clone()) {
        Some(m) => m,
        None if j.escalate.is_some() => (0..=20u32).map(|n| 1u64 << n).collect(),
        None => vec![1],
    };
    let len = own.len().max(step + 1);
    let mut list = Vec::with_capacity(len);
    for n in 0..len {
        let mine = own[n.min(own.len() - 1)];
        let rec = match long {
            Some(l) if n >= step => l,
            _ => 1,
        };
        list.push(mine.max(rec));
    }
    j.notes.push(format!(
        "recidive bans every port for {}; here the jail's own ports",
        if r.bantime.is_infinite() {
            "ever".into()
        } else {
            duration(r.bantime)
        }
    ));
    if long.is_none() {
        j.notes
            .push("recidive bans forever: the longest ban is capped at moat's max".into());
    }
    let max = match (j.escalate.as_ref().and_then(|e| e.max), long) {
        (Some(m), Some(_)) => Some(m.max(r.bantime)),
        (m, _) => m,
    };
    if j.escalate.as_ref().is_some_and(|e| !e.across) {
        j.notes.push(
            "bantime.increment counted this jail's bans only; with recidive, bans in every \
             jail count"
                .into(),
        );
    }
    Some(Escalate {
        multipliers: Some(list),
        max,
        across: true,
    })
}

/// fail2ban's `port`/`protocol` as moat's `ports`: numbers, `a:b` ranges, service names;
/// `None` for every port.
fn ports(
    port: &str,
    protocol: &str,
    services: Services<'_>,
) -> Result<Option<Vec<String>>, String> {
    let protos: Vec<&str> = match protocol.trim() {
        "" | "tcp" => vec!["tcp"],
        "udp" => vec!["udp"],
        "all" => vec![],
        other => {
            return Err(format!(
                "protocol {other:?} is not carried over (tcp, udp or all)"
            ))
        }
    };
    let mut out = Vec::new();
    for p in port.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| -> Result<u16, String> {
            s.parse::<u16>().or_else(|_| {
                services(s, protos.first().copied().unwrap_or("tcp"))
                    .ok_or_else(|| format!("port {s:?}: no such service in /etc/services"))
            })
        };
        let (lo, hi) = match p.split_once(':') {
            Some((a, b)) => (number(a.trim())?, number(b.trim())?),
            None => {
                let n = number(p)?;
                (n, n)
            }
        };
        if lo <= 1 && hi == 65535 {
            return Ok(None);
        }
        let range = if lo == hi {
            lo.to_string()
        } else {
            format!("{}-{hi}", lo.max(1))
        };
        if protos.is_empty() {
            out.push(range);
        } else {
            for proto in &protos {
                out.push(format!("{range}/{proto}"));
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail2ban_times() {
        assert_eq!(seconds("600").unwrap(), 600.0);
        assert_eq!(seconds("10m").unwrap(), 600.0);
        assert_eq!(seconds("1h 30m").unwrap(), 5400.0);
        assert_eq!(seconds("1d12h").unwrap(), 129_600.0);
        assert_eq!(seconds("-1").unwrap(), -1.0);
        assert_eq!(seconds("1w").unwrap(), 604_800.0);
        assert!(seconds("soon").is_err());
        assert_eq!(duration(5400.0), "1h30m");
        assert_eq!(duration(604_800.0), "1w");
        assert_eq!(duration(129_600.0), "1d12h");
    }

    #[test]
    fn actions_and_ports() {
        assert_eq!(
            split_actions("iptables-multiport[port=\"ssh, 2222\", protocol=\"tcp\"]\n  sendmail-whois[name=x]"),
            ["iptables-multiport[port=\"ssh, 2222\", protocol=\"tcp\"]", "sendmail-whois[name=x]"]
        );
        assert_eq!(
            action_kind("nftables-allports"),
            ActionKind::Kernel { all_ports: true }
        );
        assert_eq!(
            action_kind("cloudflare-token"),
            ActionKind::Cloudflare { token: true }
        );
        let svc = |n: &str, _p: &str| match n {
            "ssh" => Some(22),
            "https" => Some(443),
            _ => None,
        };
        assert_eq!(
            ports("ssh,2222", "tcp", &svc).unwrap().unwrap(),
            ["22/tcp", "2222/tcp"]
        );
        assert_eq!(ports("0:65535", "tcp", &svc).unwrap(), None);
        assert_eq!(ports("https", "all", &svc).unwrap().unwrap(), ["443"]);
        assert!(ports("gopher", "tcp", &svc).is_err());
    }
}

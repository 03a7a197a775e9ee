//! Configuration: the TOML schema, its defaults, and validation that points at the mistake.
//!
//! A file has a `[defaults]` table and `[jails.NAME]` tables with the same keys; a jail inherits
//! every key it does not set. Everything is checked before anything runs: unknown keys (typos),
//! regexes that do not compile, durations, networks, filter names. An error names the file, the
//! line and the column, quotes the line, and gives a hint. `docs/config.md` documents each key.

pub mod daemon;
pub mod fail2ban;
pub mod fail2ban_import;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use serde::Deserialize;
use toml::Spanned;

use crate::detect::filter::UnwrapSpec;
use crate::detect::json::JsonSpec;
use crate::detect::{library, Filter, FilterSpec};
use crate::jail::escalate::Escalation;
use crate::jail::{IgnoreList, JailParams, DEFAULT_MAX_CLIENTS};
use crate::source::SourceSpec;
use crate::vocab::ports::PortsValue;
use crate::vocab::Net;
use daemon::{DaemonTable, EnforceSettings, EnforcerName, EscalateTable};
use value::{
    Duration, FilterName, MaxClients, MaxRetry, PatternText, PrefixLen, TimeFormatText, Zone,
    ZoneSpec,
};

/// The keys shared by `[defaults]` and `[jails.NAME]`; every one optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JailTable {
    /// `enabled`: `false` keeps the jail in the file without running it (default `true`).
    pub enabled: Option<bool>,
    /// `sources`: where lines come from: paths and globs (relative to the file's directory), as
    /// written.
    pub sources: Option<Vec<String>>,
    /// `filter`: a built-in filter or `"fail2ban:NAME[opt=value, ...]"`.
    pub filter: Option<FilterName>,
    /// `failregex`: patterns with `<HOST>`, added to the filter's; the first that matches decides.
    pub failregex: Option<Vec<PatternText>>,
    /// `ignoreregex`: a line matching one of these is not a failure; added to the filter's.
    pub ignoreregex: Option<Vec<PatternText>>,
    /// `prefregex`: a pattern every line must match first; replaces the filter's.
    pub prefregex: Option<PatternText>,
    /// `time`: how timestamps are written (`auto`, `clf`, `iso8601`, ...); the filter's when
    /// absent.
    pub time: Option<TimeFormatText>,
    /// `json`: field conditions for JSON-lines logs, instead of failregexes.
    pub json: Option<JsonSpec>,
    /// `unwrap`: the JSON field holding the text line (Docker's json-file logs) and its time.
    pub unwrap: Option<UnwrapSpec>,
    /// `timezone`: the zone of times written without an offset (default `local`).
    pub timezone: Option<Zone>,
    /// `maxretry`: failures within `findtime` that ban a client (default 5).
    pub maxretry: Option<MaxRetry>,
    /// `findtime`: the window over which failures are counted (default 10 minutes).
    pub findtime: Option<Duration>,
    /// `bantime`: how long a ban lasts, or forever (default 1 hour).
    pub bantime: Option<Duration>,
    /// `ignore`: addresses and networks whose failures are never counted.
    pub ignore: Option<Vec<Net>>,
    /// `ipv6_prefix`: the prefix length IPv6 clients are counted and banned by (default 64).
    pub ipv6_prefix: Option<PrefixLen>,
    /// `max_clients`: the most client keys the jail tracks at once (default 50,000).
    pub max_clients: Option<MaxClients>,
    /// `escalate`: longer bans for repeat offenders.
    pub escalate: Option<EscalateTable>,
    /// `ports`: the ports the jail's bans cover; every port when absent.
    pub ports: Option<PortsValue>,
    /// `behind`: what the host sits behind (`"cloudflare"`), which decides where bans go.
    pub behind: Option<Behind>,
    /// Where `filter = "fail2ban:NAME"` finds fail2ban's configuration (`/etc/fail2ban`).
    pub fail2ban_dir: Option<PathBuf>,
    /// fail2ban jail options a fail2ban filter sees (`failregex`, `ignoreregex`, `maxlines`,
    /// ... written in jail.local): they replace the filter's own, as in fail2ban.
    pub fail2ban_options: Option<BTreeMap<String, String>>,
}

/// `behind`: what the host sits behind.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Behind {
    /// Cloudflare's proxy: the jail's bans go to the Cloudflare enforcer, not the kernel,
    /// which sees only Cloudflare's addresses.
    Cloudflare,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    defaults: JailTable,
    #[serde(default)]
    jails: BTreeMap<String, Spanned<JailTable>>,
    #[serde(default)]
    daemon: DaemonTable,
    #[serde(default)]
    enforce: EnforceSettings,
    ports: Option<Spanned<crate::ports::PortsTable>>,
    cluster: Option<crate::cluster::ClusterSettings>,
}

/// A jail ready to run: its merged filter and its parameters.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The jail's name, the `NAME` of `[jails.NAME]`.
    pub name: String,
    /// Paths and globs, as written.
    pub sources: Vec<String>,
    /// How the filter was named: a built-in name, "inline", or "name + inline".
    pub filter_label: String,
    /// The merged filter: the named one with the jail's own patterns added.
    pub filter: FilterSpec,
    /// Counting and banning: `maxretry`, `findtime`, `bantime`, `ignore`, `ipv6_prefix`,
    /// `max_clients`.
    pub params: JailParams,
    /// The zone of times written without an offset, as configured.
    pub zone: ZoneSpec,
    /// Longer bans for repeat offenders, when configured.
    pub escalation: Option<Escalation>,
    /// The ports its bans cover; `None`: every port.
    pub ports: Option<crate::vocab::Ports>,
    /// Its bans go to Cloudflare (`behind = "cloudflare"`).
    pub behind_cloudflare: bool,
    /// The jail's table merged over the defaults, as written (for layering overrides).
    pub table: JailTable,
}

impl JailConfig {
    /// The zone of times written without an offset, resolved; UTC when it cannot be.
    pub fn time_zone(&self) -> TimeZone {
        self.zone.resolve().unwrap_or(TimeZone::UTC)
    }
}

/// A whole validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The main file, when loaded from one (`None` for text parsed directly).
    pub path: Option<PathBuf>,
    /// The files read, main file first, then `conf.d/*.toml` in name order.
    pub files: Vec<PathBuf>,
    /// `[defaults]`, later files' keys over earlier ones'.
    pub defaults: JailTable,
    /// The enabled jails, merged over the defaults, in name order.
    pub jails: Vec<JailConfig>,
    /// `[daemon]`, later files' keys over earlier ones'.
    pub daemon: DaemonTable,
    /// `[enforce]`: which enforcers place the bans and their settings.
    pub enforce: EnforceSettings,
    /// The port policy `[ports]` declares, if any.
    pub ports: Option<crate::ports::PortPolicy>,
    /// Where the port policy lives in the kernel (`[ports] backend`; `auto` by default).
    pub ports_backend: crate::ports::Backend,
    /// `[cluster]`: the fleet this node shares its bans with, if any.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

/// A configuration problem, located in its file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file the problem is in, as given.
    pub path: String,
    /// The line, from 1; 0 when the problem is not at a place in the file (it cannot be read).
    pub line: usize,
    /// The column in characters, from 1; 0 with line 0.
    pub column: usize,
    /// What is wrong, with a hint when there is one.
    pub message: String,
    /// The offending line of the file, for the report.
    pub source_line: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.column, self.message
        )?;
        if !self.source_line.is_empty() {
            let gutter = self.line.to_string().len();
            write!(
                f,
                "\n{:gutter$} |\n{} | {}\n{:gutter$} | {:>col$}",
                "",
                self.line,
                self.source_line,
                "",
                "^",
                col = self.column
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn at(path: &str, text: &str, span: Option<Range<usize>>, message: String) -> ConfigError {
        let offset = span.map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = text[line_start..offset].chars().count() + 1;
        let source_line = text[line_start..]
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        ConfigError {
            path: path.to_string(),
            line,
            column,
            message,
            source_line,
        }
    }
}

/// Adds "did you mean" to serde's unknown-field message.
fn with_hint(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::jaro_winkler(k, field), k))
        .filter(|(s, _)| *s > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("{message}\nhint: did you mean `{k}`?"),
        None => message.to_string(),
    }
}

impl Config {
    /// Reads and validates a configuration file and the drop-ins in `conf.d/*.toml` beside
    /// it, merged in name order: a drop-in's `[defaults]` and `[daemon]` keys override the
    /// main file's, and a jail it names is added or has the keys it sets overridden.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| ConfigError {
                path: p.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read the configuration: {e}"),
                source_line: String::new(),
            })
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let mut files = vec![(path.to_path_buf(), read(path)?)];
        let pattern = dir.join("conf.d").join("*.toml");
        if let Ok(paths) = glob::glob(&pattern.display().to_string()) {
            let mut dropins: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
            dropins.sort();
            for p in dropins {
                let text = read(&p)?;
                files.push((p, text));
            }
        }
        let shown: Vec<(String, &str)> = files
            .iter()
            .map(|(p, t)| (p.display().to_string(), t.as_str()))
            .collect();
        let mut config = Config::from_texts(&shown)?;
        // Relative sources are relative to the configuration file, not to wherever moat was
        // started from.
        for jail in &mut config.jails {
            for src in jail.sources.iter_mut() {
                if Path::new(src.as_str()).is_relative() && SourceSpec::is_path(src) {
                    *src = dir.join(&*src).display().to_string();
                }
            }
            jail.table.sources = Some(jail.sources.clone());
        }
        // So are the other paths (systemd starts moat in `/`).
        let mut paths = vec![
            &mut config.daemon.state_dir,
            &mut config.daemon.socket,
            &mut config.daemon.web_token_file,
        ];
        if let Some(cf) = config.enforce.cloudflare.as_mut() {
            paths.extend([&mut cf.token_file, &mut cf.key_file]);
        }
        if let Some(w) = config.enforce.webhook.as_mut() {
            paths.extend([&mut w.url_file, &mut w.token_file]);
        }
        if let Some(m) = config.enforce.email.as_mut() {
            paths.extend([&mut m.password_file, &mut m.ca_file]);
        }
        if let Some(a) = config.enforce.abuseipdb.as_mut() {
            if a.key_file.is_relative() {
                a.key_file = dir.join(&a.key_file);
            }
        }
        if let Some(c) = config.cluster.as_mut() {
            paths.push(&mut c.password_file);
        }
        for p in paths.into_iter().flatten() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        config.path = Some(path.to_path_buf());
        config.files = files.into_iter().map(|(p, _)| p).collect();
        Ok(config)
    }

    /// Validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        Config::from_texts(&[(path.to_string(), text)])
    }

    /// Validates and merges configuration texts, each named by its path for messages.
    fn from_texts(texts: &[(String, &str)]) -> Result<Config, ConfigError> {
        let mut defaults = JailTable::default();
        let mut daemon = DaemonTable::default();
        let mut enforce = EnforceSettings::default();
        // `[ports]` is one declaration: a later file's replaces an earlier one's whole.
        let mut ports: Option<(crate::ports::PortsTable, usize, Range<usize>)> = None;
        // `[cluster]` too: a later file's replaces an earlier one's whole.
        let mut cluster: Option<crate::cluster::ClusterSettings> = None;
        // Each jail's merged table and where it was last written, for messages.
        let mut tables: BTreeMap<String, (JailTable, usize, Range<usize>)> = BTreeMap::new();
        for (i, (path, text)) in texts.iter().enumerate() {
            let file: ConfigFile = toml::from_str(text)
                .map_err(|e| ConfigError::at(path, text, e.span(), with_hint(e.message())))?;
            defaults = merge(&defaults, &file.defaults);
            daemon = overlay_daemon(daemon, file.daemon);
            enforce = enforce.overlay(file.enforce);
            if let Some(c) = file.cluster {
                c.check().map_err(|m| {
                    ConfigError::at(path, text, text.find("[cluster]").map(|i| i..i), m)
                })?;
                cluster = Some(c);
            }
            if let Some(p) = file.ports {
                let span = p.span();
                ports = Some((p.into_inner(), i, span));
            }
            for (name, table) in file.jails {
                let span = table.span();
                let entry = tables
                    .entry(name)
                    .or_insert_with(|| (JailTable::default(), i, span.clone()));
                entry.0 = merge(&entry.0, table.get_ref());
                entry.1 = i;
                entry.2 = span;
            }
        }
        // The nodes of a fleet must share the owner: its default there is one name for all.
        enforce.cloudflare = enforce
            .cloudflare
            .map(|cf| cf.with_default_owner(cluster.is_some()));
        let (last_path, last_text) = &texts[texts.len() - 1];
        enforce
            .check()
            .map_err(|m| ConfigError::at(last_path, last_text, None, m))?;
        let mut jails = Vec::new();
        for (name, (table, file, span)) in &tables {
            let merged = merge(&defaults, table);
            if merged.enabled == Some(false) {
                continue;
            }
            let jail = resolve(name, &merged).map_err(|m| {
                let (path, text) = &texts[*file];
                ConfigError::at(
                    path,
                    text,
                    Some(span.clone()),
                    format!("jail {name:?}: {m}"),
                )
            })?;
            jails.push(jail);
        }
        if let Some(j) = jails.iter().find(|j: &&JailConfig| j.behind_cloudflare) {
            if !enforce.names().contains(&EnforcerName::Cloudflare) {
                return Err(ConfigError::at(
                    last_path,
                    last_text,
                    None,
                    format!(
                        "jail {:?} is behind = \"cloudflare\" but [enforce] does not use \
                         \"cloudflare\"; hint: use = [\"kernel\", \"cloudflare\"] and an \
                         [enforce.cloudflare] table",
                        j.name
                    ),
                ));
            }
        }
        let (ports, ports_backend) = match &ports {
            None => (None, crate::ports::Backend::default()),
            Some((table, file, span)) => {
                let policy = table.resolve().map_err(|m| {
                    let (path, text) = &texts[*file];
                    ConfigError::at(path, text, Some(span.clone()), m)
                })?;
                (Some(policy), table.backend.unwrap_or_default())
            }
        };
        Ok(Config {
            path: None,
            files: Vec::new(),
            defaults,
            jails,
            daemon,
            enforce,
            ports,
            ports_backend,
            cluster,
        })
    }

    /// The jails behind Cloudflare (`behind = "cloudflare"`).
    pub fn behind_cloudflare(&self) -> std::collections::HashSet<String> {
        self.jails
            .iter()
            .filter(|j| j.behind_cloudflare)
            .map(|j| j.name.clone())
            .collect()
    }

    /// The jail named `name`, if the configuration has one.
    pub fn jail(&self, name: &str) -> Option<&JailConfig> {
        self.jails.iter().find(|j| j.name == name)
    }
}

/// A jail's own keys over the defaults.
pub fn merge(defaults: &JailTable, jail: &JailTable) -> JailTable {
    macro_rules! pick {
        ($($f:ident),*) => { JailTable { $($f: jail.$f.clone().or_else(|| defaults.$f.clone())),* } };
    }
    pick!(
        enabled,
        sources,
        filter,
        failregex,
        ignoreregex,
        prefregex,
        time,
        json,
        unwrap,
        timezone,
        maxretry,
        findtime,
        bantime,
        ignore,
        ipv6_prefix,
        max_clients,
        escalate,
        ports,
        behind,
        fail2ban_dir,
        fail2ban_options
    )
}

/// A drop-in's `[daemon]` keys over the earlier files'.
fn overlay_daemon(base: DaemonTable, over: DaemonTable) -> DaemonTable {
    DaemonTable {
        state_dir: over.state_dir.or(base.state_dir),
        socket: over.socket.or(base.socket),
        socket_group: over.socket_group.or(base.socket_group),
        follow_from: over.follow_from.or(base.follow_from),
        metrics: over.metrics.or(base.metrics),
        checkpoint: over.checkpoint.or(base.checkpoint),
        web: over.web.or(base.web),
        web_token_file: over.web_token_file.or(base.web_token_file),
    }
}

/// Turns a merged table into a runnable jail, compiling its filter once to prove it works.
pub fn resolve(name: &str, t: &JailTable) -> Result<JailConfig, String> {
    let (mut filter, label) = match &t.filter {
        Some(name @ FilterName(n)) if name.fail2ban().is_some() => {
            let spec = name.fail2ban().expect("checked");
            let dir = t
                .fail2ban_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(fail2ban::DEFAULT_DIR));
            let inline = t.failregex.is_some()
                || t.ignoreregex.is_some()
                || t.prefregex.is_some()
                || t.time.is_some()
                || t.json.is_some()
                || t.unwrap.is_some();
            if inline {
                return Err(format!(
                    "filter {n:?} comes from fail2ban's filter.d; failregex, ignoreregex, \
                     prefregex, time, json and unwrap cannot be added in the jail; hint: put \
                     them in {}/filter.d/NAME.local as fail2ban would",
                    dir.display()
                ));
            }
            let jail_options: Vec<(String, String)> = t
                .fail2ban_options
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let compiled = fail2ban::compile_filter(&dir, spec, &jail_options)?;
            (
                FilterSpec {
                    fail2ban: Some(compiled),
                    ..FilterSpec::default()
                },
                n.clone(),
            )
        }
        Some(FilterName(n)) => (
            library::get(n).cloned().expect("validated filter name"),
            n.clone(),
        ),
        None => (FilterSpec::default(), "inline".to_string()),
    };
    let strings = |v: &Option<Vec<PatternText>>| -> Vec<String> {
        v.iter().flatten().map(|p| p.0.clone()).collect()
    };
    let extra_fail = strings(&t.failregex);
    let label = match (&t.filter, extra_fail.is_empty()) {
        (Some(_), false) => format!("{label} + inline failregex"),
        _ => label,
    };
    // As in fail2ban, a jail's own failregex and ignoreregex add to its filter's.
    filter.failregex.extend(extra_fail);
    filter.ignoreregex.extend(strings(&t.ignoreregex));
    if let Some(p) = &t.prefregex {
        filter.prefregex = Some(p.0.clone());
    }
    if let Some(tf) = &t.time {
        filter.time = Some(tf.0.clone());
    }
    if let Some(j) = &t.json {
        filter.json = Some(j.clone());
    }
    if let Some(u) = &t.unwrap {
        filter.unwrap = Some(u.clone());
    }
    filter.samples.clear();
    if t.fail2ban_options.is_some() && filter.fail2ban.is_none() {
        return Err("fail2ban_options apply to a filter = \"fail2ban:NAME\" only".into());
    }
    if filter.failregex.is_empty() && filter.json.is_none() && filter.fail2ban.is_none() {
        return Err(
            "no filter: set `filter` to a built-in name (see `moat filters list`) or \
                    write `failregex`"
                .into(),
        );
    }
    Filter::compile(&filter).map_err(|e| e.to_string())?;
    if t.findtime.is_some_and(|d| d.0 == jiff::SignedDuration::MAX) {
        return Err("findtime cannot be \"forever\"; hint: a window such as \"1d\"".into());
    }
    let escalation = t.escalate.as_ref().map(|e| e.resolve()).transpose()?;
    for src in t.sources.iter().flatten() {
        if let Err(e) = SourceSpec::parse(src) {
            return Err(format!("source {src:?}: {e}"));
        }
    }
    let params = JailParams {
        maxretry: t.maxretry.map_or(5, |m| m.0),
        findtime: t
            .findtime
            .map_or(jiff::SignedDuration::from_mins(10), |d| d.0),
        bantime: t
            .bantime
            .map_or(jiff::SignedDuration::from_hours(1), |d| d.0),
        ipv6_prefix: t.ipv6_prefix.map_or(64, |p| p.0),
        ignore: IgnoreList::new(t.ignore.iter().flatten().map(|n| n.0)),
        max_clients: t.max_clients.map_or(DEFAULT_MAX_CLIENTS, |m| m.0),
    };
    Ok(JailConfig {
        name: name.to_string(),
        sources: t.sources.clone().unwrap_or_default(),
        filter_label: label,
        filter,
        params,
        zone: t.timezone.as_ref().map_or(ZoneSpec::Local, |z| z.0.clone()),
        escalation,
        ports: t.ports.as_ref().map(|p| p.0.clone()),
        behind_cloudflare: t.behind == Some(Behind::Cloudflare),
        table: t.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "moat.toml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_inherited_and_overridden() {
        let c = Config::parse(
            r#"
[defaults]
findtime = "30m"
maxretry = 4
ignore = ["192.0.2.0/24"]

[jails.portainer]
filter = "portainer"
sources = ["/var/log/nginx/access.log"]
maxretry = 3
"#,
            "moat.toml",
        )
        .unwrap();
        let j = c.jail("portainer").unwrap();
        assert_eq!(j.params.maxretry, 3);
        assert_eq!(j.params.findtime.as_secs(), 1800);
        assert_eq!(j.params.bantime.as_secs(), 3600);
        assert!(j.params.ignore.contains("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn typo_in_a_key_is_located_and_hinted() {
        let e = err("[jails.x]\nfilter = \"portainer\"\nmaxretries = 3\n");
        assert!(
            e.starts_with("moat.toml:3:1: unknown field `maxretries`"),
            "{e}"
        );
        assert!(e.contains("did you mean `maxretry`?"), "{e}");
    }

    #[test]
    fn bad_values_are_located() {
        let e = err("[jails.x]\nfilter = \"portainer\"\nfindtime = \"10 parsecs\"\n");
        assert!(e.starts_with("moat.toml:3:12:"), "{e}");
        assert!(e.contains("hint:"), "{e}");
        let e = err("[jails.x]\nfilter = \"portainer\"\nignore = [\"192.0.2.1/24\"]\n");
        assert!(e.contains("192.0.2.0/24"), "{e}");
        let e = err("[jails.x]\nfailregex = ['^<HOST> (unclosed']\n");
        assert!(
            e.starts_with("moat.toml:2:13: invalid regex: unclosed group"),
            "{e}"
        );
        let e = err("[jails.x]\nfilter = \"sshd\"\nports = [22, \"ssh\"]\n");
        assert!(
            e.starts_with("moat.toml:3:") && e.contains("\"ssh\" is not a port"),
            "{e}"
        );
        let e = err("[jails.x]\nfilter = \"sshd\"\nbehind = \"cloudflare\"\n");
        assert!(e.contains("does not use \"cloudflare\""), "{e}");
        let e = err("[enforce]\nuse = [\"cloudflare\"]\n");
        assert!(e.contains("no [enforce.cloudflare]"), "{e}");
        let e = err("[enforce]\nuse = [\"cloudflare\"]\n[enforce.cloudflare]\ntoken_env = \"T\"\n");
        assert!(e.contains("account_id"), "{e}");
        let c = Config::parse("[jails.x]\nfilter = \"sshd\"\nports = 2222\n", "m").unwrap();
        assert_eq!(c.jails[0].ports.as_ref().unwrap().to_string(), "2222");
        let e = err("[jails.x]\nfilter = \"portaner\"\n");
        assert!(e.contains("did you mean \"portainer\""), "{e}");
        let e = err("[jails.x]\nmaxretry = 3\n");
        assert!(
            e.starts_with("moat.toml:1:") && e.contains("no filter"),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_are_relative_to_the_configuration_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("moat.toml");
        let text = "[daemon]\nstate_dir = \"state\"\n\n[enforce]\nuse = [\"cloudflare\"]\n\n\
                    [enforce.cloudflare]\ntoken_file = \"cf.token\"\naccount_id = \"a\"\n\
                    zone_id = \"z\"\n\n[jails.x]\nfilter = \"sshd\"\nsources = [\"auth.log\"]\n";
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap();
        let cf = c.enforce.cloudflare.as_ref().unwrap();
        assert_eq!(
            cf.token_file.as_deref(),
            Some(&*tmp.path().join("cf.token"))
        );
        assert_eq!(
            c.daemon.state_dir.as_deref(),
            Some(&*tmp.path().join("state"))
        );
        assert_eq!(
            c.jails[0].sources,
            [tmp.path().join("auth.log").display().to_string()]
        );
        // The global key's file too; an absolute path stays as written.
        let text = text.replace(
            "token_file = \"cf.token\"",
            "email = \"admin@example.com\"\nkey_file = \"cf.key\"",
        );
        std::fs::write(&path, text.replace("\"state\"", "\"/var/lib/moat\"")).unwrap();
        let c = Config::load(&path).unwrap();
        let cf = c.enforce.cloudflare.as_ref().unwrap();
        assert_eq!(cf.key_file.as_deref(), Some(&*tmp.path().join("cf.key")));
        assert_eq!(
            c.daemon.state_dir.as_deref(),
            Some(Path::new("/var/lib/moat"))
        );
    }

    #[test]
    fn filter_plus_inline_failregex_adds_up() {
        let c = Config::parse(
            "[jails.x]\nfilter = \"portainer\"\nfailregex = ['^<HOST> extra']\n",
            "m",
        )
        .unwrap();
        assert_eq!(c.jails[0].filter.failregex.len(), 2);
        assert_eq!(c.jails[0].filter_label, "portainer + inline failregex");
    }
}

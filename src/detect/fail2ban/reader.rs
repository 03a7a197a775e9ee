//! Reading a fail2ban filter definition (`filter.d/NAME.conf` and everything it pulls in) into
//! its final regexes, exactly as fail2ban's client does before it talks to its server.
//!
//! The steps are fail2ban's: the files (`NAME.conf`, `NAME.d/*.conf`, `NAME.local`,
//! `NAME.d/*.local`, each with its `[INCLUDES] before`/`after` files and their `.local`
//! siblings) are merged in order ([`read_config`]); the `[Definition]` options are read with
//! `%(...)s` interpolation, the jail's options (`sshd[mode=aggressive]`) shadowing the
//! filter's; `[Init]` supplies defaults for those options; and `<tag>` references between
//! options (`<mdre-<mode>>`, `<lt_<logtype>/__prefix_line>`) are substituted until none is
//! left that names an option ([`read_filter`]). Tags that name no option (`<HOST>`,
//! `<F-USER>`) stay for [`super::tags`].
//!
//! This module does no I/O: the file system is behind [`ConfigFiles`], which the loader in
//! `config` implements and tests fill from memory.

use std::collections::{HashMap, HashSet};

use super::ini::{self, GetError, IniError, IniFile, Origin, Store};

/// What the reader needs from the file system.
pub trait ConfigFiles {
    /// The text of the file at `path`; `None` when there is none, `Some(Err)` when it
    /// exists but cannot be read.
    fn read(&self, path: &str) -> Option<Result<String, String>>;
    /// The files directly in `dir` whose names end with `suffix`, sorted by name.
    fn list(&self, dir: &str, suffix: &str) -> Vec<String>;
}

/// A definition that cannot be read, with where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A file is not valid INI.
    #[error("{0}")]
    Syntax(#[from] IniError),
    /// A file exists but cannot be read.
    #[error("{path}: cannot read: {message}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why it cannot be read.
        message: String,
    },
    /// No file of the name asked for exists.
    #[error("no {what} {name:?} under {base} (looked for {tried})")]
    NotFound {
        /// What was looked for (`filter`, `filter file`), for the message.
        what: &'static str,
        /// The name (or path) asked for.
        name: String,
        /// The directory it was looked for in.
        base: String,
        /// The files tried, for the message.
        tried: String,
    },
    /// An option's value is wrong (a bad interpolation, `maxlines` not a number).
    #[error("{origin}: {message}")]
    Value {
        /// Where the option was written.
        origin: Origin,
        /// What is wrong with it.
        message: String,
    },
    /// A problem that belongs to no one option.
    #[error("{0}")]
    Other(String),
}

fn join(dir: &str, name: &str) -> String {
    if name.starts_with('/') || dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), name)
    }
}

fn dirname(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// `x.conf` → `x.local`, as `os.path.splitext(x)[0] + '.local'`.
fn local_of(path: &str) -> String {
    let stem = match path.rfind('.') {
        Some(dot) if dot > path.rfind('/').map_or(0, |s| s + 1) => &path[..dot],
        _ => path,
    };
    format!("{stem}.local")
}

/// A file reader that parses each file once.
struct Reader<'a> {
    files: &'a dyn ConfigFiles,
    parsed: HashMap<String, Option<IniFile>>,
}

impl Reader<'_> {
    fn parse(&mut self, path: &str) -> Result<Option<IniFile>, ReadError> {
        if let Some(p) = self.parsed.get(path) {
            return Ok(p.clone());
        }
        let file = match self.files.read(path) {
            None => None,
            Some(Err(message)) => {
                return Err(ReadError::Unreadable {
                    path: path.to_string(),
                    message,
                })
            }
            Some(Ok(text)) => Some(ini::parse(path, &text)?),
        };
        self.parsed.insert(path.to_string(), file.clone());
        Ok(file)
    }

    /// The files to read for `names`: each with its `.local` sibling, and each of those
    /// preceded by its `before` includes and followed by its `after` includes, recursively.
    fn with_includes(
        &mut self,
        names: &[String],
        seen: &[String],
    ) -> Result<Vec<String>, ReadError> {
        let mut expanded: Vec<String> = Vec::new();
        for name in names {
            expanded.push(name.clone());
            let local = local_of(name);
            if !names.contains(&local) && self.files.read(&local).is_some() {
                expanded.push(local);
            }
        }
        let mut out = Vec::new();
        for name in &expanded {
            out.extend(self.includes_of(name, seen)?);
        }
        Ok(out)
    }

    fn includes_of(&mut self, resource: &str, seen: &[String]) -> Result<Vec<String>, ReadError> {
        let Some(file) = self.parse(resource)? else {
            return Ok(Vec::new());
        };
        let dir = dirname(resource).to_string();
        let mut lists = [Vec::new(), Vec::new()];
        if let Some(section) = file.section("INCLUDES") {
            let mut one = Store::default();
            one.merge(&file);
            for (slot, key) in ["before", "after"].into_iter().enumerate() {
                if !section.contains(key) {
                    continue;
                }
                let value = one
                    .get("INCLUDES", key, &[])
                    .map_err(|e| value_error(section.get(key).map(|v| &v.origin), e))?
                    .unwrap_or_default();
                for include in value.split('\n').map(str::trim).filter(|s| !s.is_empty()) {
                    let path = join(&dir, include);
                    if seen.contains(&path) {
                        continue;
                    }
                    let mut deeper = seen.to_vec();
                    deeper.push(resource.to_string());
                    let found = self.with_includes(&[path], &deeper)?;
                    lists[slot].extend(found);
                }
            }
        }
        let [before, after] = lists;
        let mut out = before;
        out.push(resource.to_string());
        out.extend(after);
        Ok(out)
    }
}

fn value_error(origin: Option<&Origin>, e: GetError) -> ReadError {
    match origin {
        Some(o) => ReadError::Value {
            origin: o.clone(),
            message: e.to_string(),
        },
        None => ReadError::Other(e.to_string()),
    }
}

/// The merged configuration of `base/NAME` (`filter.d/sshd`, `jail`) as fail2ban reads it,
/// and the files read, in order.
pub fn read_config(
    files: &dyn ConfigFiles,
    base: &str,
    name: &str,
    what: &'static str,
) -> Result<(Store, Vec<String>), ReadError> {
    let stem = join(base, name);
    let dir = format!("{stem}.d");
    let mut candidates = vec![format!("{stem}.conf")];
    candidates.extend(files.list(&dir, ".conf"));
    candidates.push(format!("{stem}.local"));
    candidates.extend(files.list(&dir, ".local"));
    let existing: Vec<String> = candidates
        .iter()
        .filter(|p| files.read(p).is_some())
        .cloned()
        .collect();
    if existing.is_empty() {
        return Err(ReadError::NotFound {
            what,
            name: name.to_string(),
            base: base.to_string(),
            tried: format!("{stem}.conf, {stem}.local"),
        });
    }
    read_files(files, &existing)
}

/// One file and its includes, merged (fail2ban-regex's "foreign file": a filter outside
/// any `filter.d`).
pub fn read_explicit(
    files: &dyn ConfigFiles,
    path: &str,
) -> Result<(Store, Vec<String>), ReadError> {
    match files.read(path) {
        None => Err(ReadError::NotFound {
            what: "filter file",
            name: path.to_string(),
            base: dirname(path).to_string(),
            tried: path.to_string(),
        }),
        Some(_) => read_files(files, &[path.to_string()]),
    }
}

fn read_files(
    files: &dyn ConfigFiles,
    names: &[String],
) -> Result<(Store, Vec<String>), ReadError> {
    let mut reader = Reader {
        files,
        parsed: HashMap::new(),
    };
    let all = reader.with_includes(names, &[])?;
    let mut store = Store::default();
    let mut read = Vec::new();
    for path in &all {
        if let Some(file) = reader.parse(path)? {
            store.merge(&file);
            read.push(path.clone());
        }
    }
    Ok((store, read))
}

/// A filter name with options, `sshd[mode=aggressive, logtype=journal]`, split as fail2ban's
/// `extractOptions` does: values bare (up to `,` or `]`) or quoted with `"` or `'`; several
/// option groups may follow each other (`name[a=1][b=2]`).
pub fn split_options(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    let text = text.trim();
    let (name, rest) = match text.find('[') {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text, None),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{text:?}: no name before the options"));
    }
    let mut opts = Vec::new();
    let Some(rest) = rest else {
        return Ok((name.to_string(), opts));
    };
    let Some(inner) = rest
        .trim_end()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
    else {
        return Err(format!(
            "{text:?}: options must be written [key=value, ...]"
        ));
    };
    let b = inner.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] as char).is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_-.".contains(&b[i])) {
            i += 1;
        }
        if i == start || b.get(i) != Some(&b'=') {
            return Err(format!(
                "{text:?}: expected key=value at {:?}",
                &inner[start..inner.len().min(start + 25)]
            ));
        }
        let key = inner[start..i].to_string();
        i += 1;
        let value = match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let Some(len) = inner[i + 1..].find(q as char) else {
                    return Err(format!("{text:?}: unterminated quote in {key}="));
                };
                let v = &inner[i + 1..i + 1 + len];
                i += len + 2;
                v
            }
            _ => {
                let s = i;
                while i < b.len() && b[i] != b',' && b[i] != b']' {
                    i += 1;
                }
                &inner[s..i]
            }
        };
        opts.push((key.clone(), value.trim().to_string()));
        // A separator: `,`, `][` (another option group), or the end.
        if i >= b.len() {
            break;
        }
        if b[i] == b',' {
            i += 1;
            continue;
        }
        if b[i] == b']' {
            let mut j = i + 1;
            skip_ws(&mut j);
            if b.get(j) == Some(&b'[') {
                i = j + 1;
                continue;
            }
        }
        return Err(format!(
            "{text:?}: unexpected {:?} after {key}=",
            &inner[i..inner.len().min(i + 25)]
        ));
    }
    Ok((name.to_string(), opts))
}

/// One regex line of a definition and where its option was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegexLine {
    /// The regex, with fail2ban's tags still in it.
    pub text: String,
    /// Where its option was written.
    pub origin: Origin,
}

/// A filter's final options, everything fail2ban's client would send to its server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterDefinition {
    /// How the filter was named (`sshd`, or a file's path).
    pub name: String,
    /// The options given with the name (`mode=aggressive`).
    pub options: Vec<(String, String)>,
    /// The files read, in order.
    pub files: Vec<String>,
    /// `prefregex`: the regex a line must match before the failregexes see its `<F-CONTENT>`.
    pub prefregex: Option<RegexLine>,
    /// `failregex`: the regexes that find failures, one per line, in order.
    pub failregex: Vec<RegexLine>,
    /// `ignoreregex`: the regexes that make a line no failure, one per line.
    pub ignoreregex: Vec<RegexLine>,
    /// Date patterns, one per line (`{^LN-BEG}`, `%%d/%%b/...`); `None`: fail2ban's defaults.
    pub datepattern: Option<RegexLine>,
    /// Lines buffered for multi-line regexes (fail2ban's `maxlines`, default 1).
    pub maxlines: Option<usize>,
    /// journald matches, one list of words per line (`_SYSTEMD_UNIT=sshd.service + _COMM=sshd`).
    pub journalmatch: Vec<Vec<String>>,
    /// `usedns`, when the filter sets it.
    pub usedns: Option<String>,
}

/// The `[Definition]` options fail2ban's filter reader sends on.
const DEFINITION_OPTIONS: &[&str] = &[
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];

/// At most this many replacements of one tag within another (fail2ban's limit for loops).
const MAX_TAG_REPLACE: usize = 25;

/// Where to find a filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterLocation {
    /// `filter.d/NAME` under a configuration directory (`/etc/fail2ban`), with `.local`
    /// overlays and `NAME.d/`.
    Named {
        /// The configuration directory (`/etc/fail2ban`).
        base: String,
        /// The filter's name (`sshd`).
        name: String,
    },
    /// One file outside any `filter.d`, with its includes.
    File {
        /// The file.
        path: String,
    },
}

impl FilterLocation {
    /// As fail2ban-regex decides: a bare name is looked up in `base/filter.d`; a path inside
    /// a `filter.d` directory is read as that filter of that directory's parent; any other
    /// path is read on its own.
    pub fn of(spec: &str, base: &str) -> FilterLocation {
        if !spec.contains('/') {
            let name = spec
                .strip_suffix(".conf")
                .or_else(|| spec.strip_suffix(".local"))
                .unwrap_or(spec);
            return FilterLocation::Named {
                base: base.to_string(),
                name: name.to_string(),
            };
        }
        let dir = dirname(spec);
        let file = &spec[dir.len() + 1..];
        if dir.rsplit('/').next() == Some("filter.d") {
            let stem = file
                .strip_suffix(".conf")
                .or_else(|| file.strip_suffix(".local"))
                .unwrap_or(file);
            return FilterLocation::Named {
                base: dirname(dir).to_string(),
                name: stem.to_string(),
            };
        }
        FilterLocation::File {
            path: spec.to_string(),
        }
    }
}

/// Reads a filter with the options given with its name (`init`) and, when it runs in a
/// jail, the jail's own options (`jail`: they shadow `%(...)s` references as in fail2ban).
pub fn read_filter(
    files: &dyn ConfigFiles,
    location: &FilterLocation,
    init: &[(String, String)],
    jail: &[(String, String)],
) -> Result<FilterDefinition, ReadError> {
    let (store, read) = match location {
        FilterLocation::Named { base, name } => {
            read_config(files, base, &format!("filter.d/{name}"), "filter")?
        }
        FilterLocation::File { path } => read_explicit(files, path)?,
    };
    let name = match location {
        FilterLocation::Named { name, .. } => name.clone(),
        FilterLocation::File { path } => path.clone(),
    };
    let first_file = read.last().cloned().unwrap_or_default();
    definition_from(&store, name, read, init, jail, &first_file)
}

/// The second half of [`read_filter`], on an already merged configuration.
fn definition_from(
    store: &Store,
    name: String,
    read: Vec<String>,
    init: &[(String, String)],
    jail: &[(String, String)],
    main_file: &str,
) -> Result<FilterDefinition, ReadError> {
    // fail2ban merges the jail's options with the init options (init ones win) and uses them
    // as interpolation variables for every [Definition] value.
    let mut pvars: Vec<(String, String)> = jail.to_vec();
    for (k, v) in init {
        match pvars.iter_mut().find(|(pk, _)| pk == k) {
            Some(slot) => slot.1 = v.clone(),
            None => pvars.push((k.clone(), v.clone())),
        }
    }
    let origin_of = |key: &str| -> Origin {
        store
            .raw("Definition", key)
            .map(|v| v.origin.clone())
            .unwrap_or_else(|| Origin {
                path: main_file.to_string(),
                line: 0,
            })
    };
    let get_err = |key: &str, e: GetError| ReadError::Value {
        origin: origin_of(key),
        message: e.to_string(),
    };
    // [Definition] options, unless given as variables.
    let mut combined: Vec<(String, Option<String>)> = Vec::new();
    for &opt in DEFINITION_OPTIONS {
        if pvars.iter().any(|(k, _)| k == opt) {
            continue;
        }
        match store.get("Definition", opt, &pvars) {
            Ok(Some(v)) => combined.push((opt.to_string(), Some(v))),
            Ok(None) => {}
            Err(GetError::NoSection(_)) => combined.push((opt.to_string(), None)),
            Err(e) => return Err(get_err(opt, e)),
        }
    }
    // [Init]: the filter's defaults for its options, and `known/` copies of them.
    let mut init_opts: Vec<(String, String)> = init.to_vec();
    if let Some(section) = store.section("Init") {
        let keys: Vec<String> = section.keys().map(str::to_string).collect();
        for opt in keys {
            let value = || -> Result<String, ReadError> {
                Ok(store
                    .get("Init", &opt, &[])
                    .map_err(|e| get_err(&opt, e))?
                    .unwrap_or_default())
            };
            if !opt.starts_with("known/") {
                let v = value()?;
                set(&mut init_opts, format!("known/{opt}"), v);
            }
            if !init_opts.iter().any(|(k, _)| *k == opt) {
                let v = value()?;
                init_opts.push((opt.clone(), v));
            }
        }
    }
    for (k, v) in init_opts {
        match combined.iter_mut().find(|(ck, _)| *ck == k) {
            Some(slot) => slot.1 = Some(v),
            None => combined.push((k, Some(v))),
        }
    }
    // Conditional options (`x?family=inet6`) are not substituted, nor are their plain names.
    let mut ignore: HashSet<String> = HashSet::new();
    for (k, _) in &combined {
        if let Some(q) = k.find('?') {
            ignore.insert(k[..q].to_string());
        }
    }
    let mut cache: HashMap<String, Option<String>> = HashMap::new();
    let mut lookup_error: Option<ReadError> = None;
    let mut addrepl = |tag: &str| -> Option<String> {
        if let Some(v) = cache.get(tag) {
            return v.clone();
        }
        let v = match store.get_ex("Definition", tag, &pvars) {
            Ok(v) => v,
            Err(GetError::NoSection(_)) => None,
            Err(e) => {
                lookup_error.get_or_insert_with(|| ReadError::Value {
                    origin: origin_of(tag),
                    message: e.to_string(),
                });
                None
            }
        };
        cache.insert(tag.to_string(), v.clone());
        v
    };
    substitute_tags(&mut combined, &ignore, &mut addrepl).map_err(|message| ReadError::Value {
        origin: Origin {
            path: main_file.to_string(),
            line: 0,
        },
        message,
    })?;
    if let Some(e) = lookup_error {
        return Err(e);
    }
    // The jail's own values of these options are what fail2ban sends its server, after the
    // filter's (which it skipped above): they take the filter's place.
    for &opt in DEFINITION_OPTIONS {
        if let Some((_, v)) = jail.iter().find(|(k, _)| k == opt) {
            match combined.iter_mut().find(|(k, _)| k == opt) {
                Some(slot) => slot.1 = Some(v.clone()),
                None => combined.push((opt.to_string(), Some(v.clone()))),
            }
        }
    }
    let value = |key: &str| -> Option<&String> {
        combined
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref())
    };
    let lines = |key: &str| -> Vec<RegexLine> {
        value(key)
            .map(|v| {
                v.split('\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| RegexLine {
                        text: l.to_string(),
                        origin: origin_of(key),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let maxlines = match value("maxlines") {
        None => None,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(ReadError::Value {
                    origin: origin_of("maxlines"),
                    message: format!("maxlines must be a whole number above zero, not {v:?}"),
                })
            }
        },
    };
    let journalmatch = value("journalmatch")
        .map(|v| {
            v.split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect()
        })
        .unwrap_or_default();
    Ok(FilterDefinition {
        name,
        options: init.to_vec(),
        files: read,
        prefregex: value("prefregex")
            .filter(|v| !v.is_empty())
            .map(|v| RegexLine {
                text: v.clone(),
                origin: origin_of("prefregex"),
            }),
        failregex: lines("failregex"),
        ignoreregex: lines("ignoreregex"),
        datepattern: value("datepattern").map(|v| RegexLine {
            text: v.clone(),
            origin: origin_of("datepattern"),
        }),
        maxlines,
        journalmatch,
        usedns: value("usedns").cloned(),
    })
}

fn set(opts: &mut Vec<(String, String)>, key: String, value: String) {
    match opts.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => opts.push((key, value)),
    }
}

/// The next `<tag>` in `value` at or after `from`: fail2ban's `<([^ <>]+)>`.
fn next_tag(value: &str, from: usize) -> Option<(usize, usize)> {
    let b = value.as_bytes();
    let mut i = from;
    while i < b.len() {
        if b[i] == b'<' {
            let mut j = i + 1;
            while j < b.len() && !matches!(b[j], b' ' | b'<' | b'>') {
                j += 1;
            }
            if j < b.len() && b[j] == b'>' && j > i + 1 {
                return Some((i, j + 1));
            }
            // `<` followed by a space, another `<`, or nothing: try from the next character.
        }
        i += 1;
    }
    None
}

/// fail2ban's `substituteRecursiveTags`: replaces `<name>` in every option by the option of
/// that name (or what `lookup` finds), repeating while replacements reveal new tags.
pub fn substitute_tags(
    tags: &mut [(String, Option<String>)],
    ignore: &HashSet<String>,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), String> {
    let mut done: HashSet<String> = HashSet::new();
    let mut counts: HashMap<String, HashMap<String, usize>> = HashMap::new();
    loop {
        let mut again = false;
        for idx in 0..tags.len() {
            let tag = tags[idx].0.clone();
            if ignore.contains(&tag) || done.contains(&tag) {
                continue;
            }
            let Some(original) = tags[idx].1.clone() else {
                continue;
            };
            let mut value = original.clone();
            let mut replaced = counts.get(&tag).cloned().unwrap_or_default();
            let mut at = next_tag(&value, 0);
            while let Some((start, end)) = at {
                let name = value[start + 1..end - 1].to_string();
                if ignore.contains(&name) {
                    at = next_tag(&value, end);
                    continue;
                }
                if name == tag || replaced.get(&name).copied().unwrap_or(1) > MAX_TAG_REPLACE {
                    return Err(format!(
                        "`{tag}` refers to itself through <{name}> (a loop of tag definitions \
                         that cannot be resolved)"
                    ));
                }
                let known = tags
                    .iter()
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.clone());
                let Some(repl) = known.or_else(|| lookup(&name)) else {
                    at = next_tag(&value, end);
                    continue;
                };
                value = value.replace(&format!("<{name}>"), &repl);
                *replaced.entry(name).or_insert(0) += 1;
                at = next_tag(&value, start);
            }
            if value != original {
                if next_tag(&value, 0).is_some() {
                    counts.insert(tag.clone(), replaced);
                    again = true;
                }
                tags[idx].1 = Some(value.clone());
            }
            if !value.contains('<') {
                done.insert(tag);
            }
        }
        if !again {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Files in memory, for tests.
    #[derive(Default)]
    pub struct MemFiles(pub BTreeMap<String, String>);

    impl ConfigFiles for MemFiles {
        fn read(&self, path: &str) -> Option<Result<String, String>> {
            self.0.get(path).cloned().map(Ok)
        }
        fn list(&self, dir: &str, suffix: &str) -> Vec<String> {
            let prefix = format!("{dir}/");
            self.0
                .keys()
                .filter(|k| {
                    k.strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.contains('/') && rest.ends_with(suffix))
                })
                .cloned()
                .collect()
        }
    }

    pub fn mem(files: &[(&str, &str)]) -> MemFiles {
        MemFiles(
            files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    const COMMON: &str = "[INCLUDES]\nafter = common.local\n[DEFAULT]\nlogtype = file\n\
        _daemon = \\S*\n__prefix_line = <lt_<logtype>/__prefix_line>\n\
        datepattern = <lt_<logtype>/datepattern>\n\
        [lt_file]\n__prefix_line = F:<_daemon>:\ndatepattern = {^LN-BEG}\n\
        [lt_journal]\n__prefix_line = J:<_daemon>:\ndatepattern = %(lt_file/datepattern)s\n";

    const SSHD: &str = "[INCLUDES]\nbefore = common.conf\n[DEFAULT]\n_daemon = sshd\n\
        [Definition]\nprefregex = ^%(__prefix_line)s<F-CONTENT>.+</F-CONTENT>$\n\
        cmn = ^Failed for <F-USER>\\S+</F-USER> from <HOST>\n\
        failregex = %(cmn)s\n            <mdre-<mode>>\n\
        mdre-normal =\nmdre-aggressive = ^Bad from <HOST>\n\
        mode = normal\nmaxlines = 1\njournalmatch = _SYSTEMD_UNIT=sshd.service + _COMM=sshd\n";

    fn read(files: &MemFiles, name: &str, init: &[(&str, &str)]) -> FilterDefinition {
        let init: Vec<(String, String)> = init
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read_filter(
            files,
            &FilterLocation::Named {
                base: "/etc/fail2ban".into(),
                name: name.into(),
            },
            &init,
            &[],
        )
        .unwrap()
    }

    #[test]
    fn includes_modes_logtypes_and_locals() {
        let files = mem(&[
            ("/etc/fail2ban/filter.d/common.conf", COMMON),
            ("/etc/fail2ban/filter.d/sshd.conf", SSHD),
        ]);
        let d = read(&files, "sshd", &[]);
        assert_eq!(
            d.files,
            [
                "/etc/fail2ban/filter.d/common.conf",
                "/etc/fail2ban/filter.d/sshd.conf"
            ]
        );
        assert_eq!(
            d.prefregex.as_ref().unwrap().text,
            "^F:sshd:<F-CONTENT>.+</F-CONTENT>$"
        );
        let texts = |d: &FilterDefinition| -> Vec<String> {
            d.failregex.iter().map(|r| r.text.clone()).collect()
        };
        assert_eq!(texts(&d), ["^Failed for <F-USER>\\S+</F-USER> from <HOST>"]);
        assert_eq!(d.failregex[0].origin.line, 8);
        assert_eq!(d.datepattern.as_ref().unwrap().text, "{^LN-BEG}");
        assert_eq!(d.maxlines, Some(1));
        assert_eq!(
            d.journalmatch,
            [vec!["_SYSTEMD_UNIT=sshd.service", "+", "_COMM=sshd"]]
        );
        let d = read(
            &files,
            "sshd",
            &[("mode", "aggressive"), ("logtype", "journal")],
        );
        assert_eq!(texts(&d)[1], "^Bad from <HOST>");
        assert_eq!(
            d.prefregex.as_ref().unwrap().text,
            "^J:sshd:<F-CONTENT>.+</F-CONTENT>$"
        );
        assert_eq!(d.datepattern.as_ref().unwrap().text, "{^LN-BEG}");
        // A .local extends the .conf through %(known/...)s; common.local is read after
        // common.conf.
        let files = mem(&[
            ("/etc/fail2ban/filter.d/common.conf", COMMON),
            (
                "/etc/fail2ban/filter.d/common.local",
                "[DEFAULT]\n_daemon = sshd?\n",
            ),
            ("/etc/fail2ban/filter.d/sshd.conf", SSHD),
            (
                "/etc/fail2ban/filter.d/sshd.local",
                "[Definition]\nfailregex = %(known/failregex)s\n    ^Extra <HOST>\n",
            ),
        ]);
        let d = read(&files, "sshd", &[]);
        assert_eq!(
            texts(&d),
            [
                "^Failed for <F-USER>\\S+</F-USER> from <HOST>",
                "^Extra <HOST>"
            ]
        );
        assert_eq!(
            d.failregex[1].origin.path,
            "/etc/fail2ban/filter.d/sshd.local"
        );
        // common.local twice, as fail2ban reads it: once as common.conf's sibling, once as its
        // `after` include.
        assert_eq!(d.files.len(), 5);
    }

    #[test]
    fn init_section_supplies_tag_defaults() {
        let files = mem(&[(
            "/b/filter.d/x.conf",
            "[Definition]\nfailregex = ^<what> from <HOST>\n[Init]\nwhat = Failed\n",
        )]);
        let d = read_filter(
            &files,
            &FilterLocation::Named {
                base: "/b".into(),
                name: "x".into(),
            },
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(d.failregex[0].text, "^Failed from <HOST>");
        let d = read_filter(
            &files,
            &FilterLocation::Named {
                base: "/b".into(),
                name: "x".into(),
            },
            &[("what".into(), "Refused".into())],
            &[],
        )
        .unwrap();
        assert_eq!(d.failregex[0].text, "^Refused from <HOST>");
    }

    #[test]
    fn missing_filters_and_loops_are_errors() {
        let files = mem(&[(
            "/b/filter.d/x.conf",
            "[Definition]\nfailregex = <a>\na = <b>\nb = <a>\n",
        )]);
        let loc = |n: &str| FilterLocation::Named {
            base: "/b".into(),
            name: n.into(),
        };
        let e = read_filter(&files, &loc("nope"), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("no filter \"filter.d/nope\""), "{e}");
        let e = read_filter(&files, &loc("x"), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("refers to itself"), "{e}");
    }

    #[test]
    fn names_with_options() {
        let opts = |s: &str| split_options(s).unwrap();
        assert_eq!(opts("sshd").0, "sshd");
        assert_eq!(
            opts("sshd[mode=aggressive, logtype=\"journal\"]").1,
            [
                ("mode".to_string(), "aggressive".to_string()),
                ("logtype".to_string(), "journal".to_string())
            ]
        );
        assert_eq!(opts("x[a='1,2'][b=3]").1.len(), 2);
        assert_eq!(opts("x[a='1,2'][b=3]").1[0].1, "1,2");
        assert!(split_options("x[a]").is_err());
        assert!(split_options("[a=1]").is_err());
    }

    #[test]
    fn locations() {
        assert_eq!(
            FilterLocation::of("sshd", "/etc/fail2ban"),
            FilterLocation::Named {
                base: "/etc/fail2ban".into(),
                name: "sshd".into()
            }
        );
        assert_eq!(
            FilterLocation::of("/opt/f2b/filter.d/sshd.conf", "/etc/fail2ban"),
            FilterLocation::Named {
                base: "/opt/f2b".into(),
                name: "sshd".into()
            }
        );
        assert_eq!(
            FilterLocation::of("/tmp/mine.conf", "/etc/fail2ban"),
            FilterLocation::File {
                path: "/tmp/mine.conf".into()
            }
        );
    }
}

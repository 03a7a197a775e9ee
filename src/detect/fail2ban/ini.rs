//! fail2ban's INI dialect: Python's `configparser` as fail2ban configures it, plus fail2ban's
//! own additions (`%(section/option)s`, `%(known/option)s`, conditional sections).
//!
//! Two steps, both pure. [`parse`] reads one file's text the way `ConfigParser.read_file`
//! does: `[section]` headers, `key = value` or `key: value` (the first `=` or `:` ends the
//! key), keys folded to lower case, values continued on more-indented lines (blank lines kept
//! inside a value, comment lines skipped), `#` and `;` full-line comments, `;` inline comments
//! after whitespace, a repeated section or key in one file an error. [`Store`] then merges
//! files in the order fail2ban reads them: `[DEFAULT]` keys update the defaults, a section seen
//! again has its keys updated, and the values it replaces are kept under `KNOWN/section` so
//! that `%(known/key)s` in a `.local` can extend what the `.conf` said.
//!
//! [`Store::get`] interpolates as fail2ban's `BasicInterpolationWithName` does: `%(key)s` from
//! the given variables, then the section, then `[DEFAULT]`; `%(section/key)s` and
//! `%(default/key)s` reach into other sections; `%(__name__)s` is the section's name; `%%` is
//! a percent sign; at most ten levels deep.

use std::fmt;

/// A problem in a configuration file, located at its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IniError {
    /// The file, as the reader named it.
    pub path: String,
    /// 1-based; 0 when the problem is not on one line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.path, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for IniError {}

/// Where a value was written: the file and the line of its key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file, as the reader named it.
    pub path: String,
    /// The 1-based line of the key; 0 for a value set by code (a `known/` copy, a default).
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// A raw (not yet interpolated) value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    /// The value as written, continuation lines joined with newlines, `%(...)s` not expanded.
    pub text: String,
    /// Where it was written, for messages.
    pub origin: Origin,
}

/// A small map that keeps insertion order: fail2ban iterates options in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options(Vec<(String, RawValue)>);

impl Options {
    /// The value of `key` (already folded to lower case), if set.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// Sets `key` to `value`: a key already present keeps its place, a new one goes last.
    pub fn insert(&mut self, key: String, value: RawValue) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
    /// The keys, in the order first written.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
    /// The keys and their values, in the order first written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Whether `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// One file's sections, in the order written; `[DEFAULT]` is a section named `DEFAULT`.
#[derive(Clone, Debug, Default)]
pub struct IniFile {
    /// The file, as the reader named it.
    pub path: String,
    /// Each section's name and options, in the order written.
    pub sections: Vec<(String, Options)>,
}

impl IniFile {
    /// The options of the section called `name`, if the file has one.
    pub fn section(&self, name: &str) -> Option<&Options> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o)
    }
}

/// The name of the section whose keys every other section sees.
pub const DEFAULT: &str = "DEFAULT";

/// Parses one file's text as `configparser` does with fail2ban's settings.
pub fn parse(path: &str, text: &str) -> Result<IniFile, IniError> {
    let err = |line: usize, message: String| IniError {
        path: path.to_string(),
        line,
        message,
    };
    let mut file = IniFile {
        path: path.to_string(),
        sections: Vec::new(),
    };
    // The section being filled and the key whose value continuation lines extend.
    let mut current: Option<usize> = None;
    let mut key: Option<String> = None;
    // Lines of the value being read, joined with newlines at the end.
    let mut pending: Vec<String> = Vec::new();
    let mut indent_level = usize::MAX;
    let flush = |file: &mut IniFile,
                 current: Option<usize>,
                 key: &Option<String>,
                 pending: &mut Vec<String>| {
        if let (Some(s), Some(k)) = (current, key) {
            let value = pending.join("\n").trim_end().to_string();
            if let Some((_, opts)) = file.sections.get_mut(s) {
                if let Some(slot) = opts.0.iter_mut().find(|(name, _)| name == k) {
                    slot.1.text = value;
                }
            }
        }
        pending.clear();
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, raw) in text.split('\n').enumerate() {
        let lineno = index + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let comment_start = comment_start(raw);
        let value = raw[..comment_start.unwrap_or(raw.len())].trim();
        if value.is_empty() {
            // A blank line is kept inside a value (trailing ones are trimmed at the end); a
            // comment line is skipped without ending the value.
            if comment_start.is_none() && current.is_some() && key.is_some() {
                pending.push(String::new());
            }
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if current.is_some() && key.is_some() && indent > indent_level {
            pending.push(value.to_string());
            continue;
        }
        flush(&mut file, current, &key, &mut pending);
        indent_level = indent;
        if let Some(header) = section_header(value) {
            if file.sections.iter().any(|(n, _)| n == header) {
                return Err(err(
                    lineno,
                    format!("section [{header}] appears twice in this file"),
                ));
            }
            file.sections.push((header.to_string(), Options::default()));
            current = Some(file.sections.len() - 1);
            key = None;
            continue;
        }
        let Some(section) = current else {
            return Err(err(
                lineno,
                format!(
                    "a setting before any [section]: {value:?}; hint: start the file with \
                     [Definition] (filters) or [DEFAULT] / [jail name] (jails)"
                ),
            ));
        };
        let Some(at) = value.find(['=', ':']) else {
            return Err(err(
                lineno,
                format!(
                    "not a `key = value` line: {value:?}; hint: a continuation of the value \
                     above must be indented"
                ),
            ));
        };
        let name = value[..at].trim_end().to_lowercase();
        if name.is_empty() {
            return Err(err(lineno, format!("a value without a key: {value:?}")));
        }
        let opts = &mut file.sections[section].1;
        if opts.contains(&name) {
            return Err(err(
                lineno,
                format!(
                    "`{name}` is set twice in [{}] in this file",
                    file.sections[section].0
                ),
            ));
        }
        pending.push(value[at + 1..].trim().to_string());
        opts.insert(
            name.clone(),
            RawValue {
                text: String::new(),
                origin: Origin {
                    path: path.to_string(),
                    line: lineno,
                },
            },
        );
        key = Some(name);
    }
    flush(&mut file, current, &key, &mut pending);
    Ok(file)
}

/// Where a comment starts on a line: `#` or `;` as the first non-blank character, or `;`
/// at the start or after whitespace (an inline comment).
fn comment_start(line: &str) -> Option<usize> {
    let trimmed = line.trim();
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return Some(0);
    }
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == ';' && prev_space {
            return Some(i);
        }
        prev_space = c.is_whitespace();
    }
    None
}

/// `[name]`: everything between the first `[` and the last `]` (Python's permissive header).
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    let name = &rest[..end];
    (!name.is_empty()).then_some(name)
}

/// Several files merged in reading order.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// The `[DEFAULT]` keys, merged over every file read: every section falls back on them.
    pub defaults: Options,
    sections: Vec<(String, Options)>,
}

/// `NAME?condition`: a section whose keys apply only under a condition (`[Init?family=inet6]`).
fn split_condition(name: &str) -> Option<(&str, &str)> {
    let q = name.find('?')?;
    let (base, cond) = name.split_at(q);
    let ok =
        !base.is_empty() && base.chars().all(|c| c.is_alphanumeric() || c == '_') && cond.len() > 1;
    ok.then_some((base, cond))
}

/// The deepest interpolation Python allows.
const MAX_DEPTH: usize = 10;

impl Store {
    /// Merges a file over what was read before.
    pub fn merge(&mut self, file: &IniFile) {
        for (name, opts) in &file.sections {
            if name == DEFAULT {
                for (k, v) in opts.iter() {
                    self.defaults.insert(k.to_string(), v.clone());
                }
                continue;
            }
            let (name, opts) = match split_condition(name) {
                Some((base, cond)) => {
                    let mut renamed = Options::default();
                    for (k, v) in opts.iter() {
                        renamed.insert(format!("{k}{cond}"), v.clone());
                    }
                    (base.to_string(), renamed)
                }
                None => (name.clone(), opts.clone()),
            };
            if let Some(existing) = self.section(&name).cloned() {
                let replaced: Vec<(String, RawValue)> = existing
                    .iter()
                    .filter(|(k, _)| opts.contains(k))
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                let known = self.section_mut(&format!("KNOWN/{name}"));
                for (k, v) in replaced {
                    known.insert(k, v);
                }
                let target = self.section_mut(&name);
                for (k, v) in opts.iter() {
                    target.insert(k.to_string(), v.clone());
                }
            } else {
                self.sections.push((name, opts));
            }
        }
    }

    /// The merged options of the section called `name` (conditional and `KNOWN/` sections are named
    /// as such), if any file had it.
    pub fn section(&self, name: &str) -> Option<&Options> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o)
    }

    fn section_mut(&mut self, name: &str) -> &mut Options {
        if let Some(i) = self.sections.iter().position(|(n, _)| n == name) {
            return &mut self.sections[i].1;
        }
        self.sections.push((name.to_string(), Options::default()));
        &mut self.sections.last_mut().expect("just pushed").1
    }

    /// Sets a raw value in a section (fail2ban's `merge_section`, for `known/` copies).
    pub fn set(&mut self, section: &str, key: &str, text: String) {
        self.section_mut(section).insert(
            key.to_lowercase(),
            RawValue {
                text,
                origin: Origin::default(),
            },
        );
    }

    /// Sets a raw `[DEFAULT]` value (fail2ban's `merge_defaults`).
    pub fn set_default(&mut self, key: &str, text: String) {
        self.defaults.insert(
            key.to_lowercase(),
            RawValue {
                text,
                origin: Origin::default(),
            },
        );
    }

    /// The sections' names in reading order, without the `KNOWN/` bookkeeping.
    pub fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !n.starts_with("KNOWN/"))
    }

    /// Whether `name` is `DEFAULT` or a section some file had.
    pub fn has_section(&self, name: &str) -> bool {
        name == DEFAULT || self.section(name).is_some()
    }

    /// Whether `section` (or, with `with_defaults`, `[DEFAULT]`) sets `key`.
    pub fn has_option(&self, section: &str, key: &str, with_defaults: bool) -> bool {
        let key = key.to_lowercase();
        self.section(section).is_some_and(|s| s.contains(&key))
            || (with_defaults && self.defaults.contains(&key))
    }

    /// The raw value of `key` as `section` sees it (the section's own, else `[DEFAULT]`'s).
    pub fn raw(&self, section: &str, key: &str) -> Option<&RawValue> {
        let key = key.to_lowercase();
        if section != DEFAULT {
            if let Some(v) = self.section(section).and_then(|s| s.get(&key)) {
                return Some(v);
            }
        }
        self.defaults.get(&key)
    }

    /// A value with `%(...)s` interpolated. `vars` come first, as Python's `get(vars=...)`.
    /// `Ok(None)` when the section exists but does not set the key.
    pub fn get(
        &self,
        section: &str,
        key: &str,
        vars: &[(String, String)],
    ) -> Result<Option<String>, GetError> {
        if !self.has_section(section) {
            return Err(GetError::NoSection(section.to_string()));
        }
        let key = key.to_lowercase();
        let raw = match vars.iter().find(|(k, _)| k.to_lowercase() == key) {
            Some((_, v)) => v.clone(),
            None => match self.raw(section, &key) {
                Some(v) => v.text.clone(),
                None => return Ok(None),
            },
        };
        let mut out = String::new();
        self.interpolate(section, &key, &raw, vars, &[], 1, &mut out)?;
        Ok(Some(out))
    }

    /// `section/key` (`known/key`, `default/key`) or a plain key, as fail2ban's `get_ex`.
    pub fn get_ex(
        &self,
        section: &str,
        key: &str,
        vars: &[(String, String)],
    ) -> Result<Option<String>, GetError> {
        if let Some((sec, opt)) = split_section_option(key) {
            let candidates: Vec<String> = match sec.to_lowercase().as_str() {
                "known" => vec![format!("KNOWN/{section}"), section.to_string()],
                "default" => vec![DEFAULT.to_string()],
                _ => vec![sec.to_string()],
            };
            for sec in candidates {
                match self.get(&sec, opt, &[]) {
                    Ok(Some(v)) => return Ok(Some(v)),
                    Ok(None) | Err(GetError::NoSection(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.get(section, key, vars)
    }

    /// One level of Python's `_interpolate_some`, with fail2ban's section mapping: before a
    /// value is expanded, each `%(sec/key)s` it names is looked up and added to the map.
    #[allow(clippy::too_many_arguments)]
    fn interpolate(
        &self,
        section: &str,
        key: &str,
        rest: &str,
        vars: &[(String, String)],
        extra: &[(String, String)],
        depth: usize,
        out: &mut String,
    ) -> Result<(), GetError> {
        if depth > MAX_DEPTH {
            return Err(GetError::Depth {
                section: section.to_string(),
                key: key.to_string(),
            });
        }
        let mut extra: Vec<(String, String)> = extra.to_vec();
        for name in section_refs(rest) {
            if extra.iter().any(|(k, _)| *k == name) || vars.iter().any(|(k, _)| *k == name) {
                continue;
            }
            let Some((sec, opt)) = split_section_option(&name) else {
                continue;
            };
            let found = match sec.to_lowercase().as_str() {
                "default" => self.defaults.get(opt),
                "known" => self
                    .section(&format!("KNOWN/{section}"))
                    .and_then(|s| s.get(opt))
                    .or_else(|| self.defaults.get(opt)),
                _ => match self.section(sec) {
                    None => continue,
                    Some(s) => s.get(opt).or_else(|| self.defaults.get(opt)),
                },
            };
            if let Some(v) = found {
                extra.push((name.clone(), v.text.clone()));
            }
        }
        let mut rest = rest;
        while let Some(p) = rest.find('%') {
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            match rest.as_bytes().get(1) {
                Some(b'%') => {
                    out.push('%');
                    rest = &rest[2..];
                }
                Some(b'(') => {
                    let Some(close) = rest.find(")s").filter(|&c| !rest[2..c].contains(')')) else {
                        return Err(GetError::Syntax {
                            section: section.to_string(),
                            key: key.to_string(),
                            message: format!("bad interpolation variable reference {rest:?}"),
                        });
                    };
                    let var = rest[2..close].to_lowercase();
                    rest = &rest[close + 2..];
                    let value = self.lookup(section, &var, vars, &extra).ok_or_else(|| {
                        GetError::Missing {
                            section: section.to_string(),
                            key: key.to_string(),
                            reference: var.clone(),
                        }
                    })?;
                    if value.contains('%') {
                        self.interpolate(section, key, &value, vars, &extra, depth + 1, out)?;
                    } else {
                        out.push_str(&value);
                    }
                }
                _ => {
                    return Err(GetError::Syntax {
                        section: section.to_string(),
                        key: key.to_string(),
                        message: format!(
                            "'%' must be followed by '%' or '(', found: {rest:?}; hint: write \
                             %% for a percent sign"
                        ),
                    })
                }
            }
        }
        out.push_str(rest);
        Ok(())
    }

    /// Python's chain of maps: variables and fail2ban's additions, the section, `[DEFAULT]`.
    fn lookup(
        &self,
        section: &str,
        var: &str,
        vars: &[(String, String)],
        extra: &[(String, String)],
    ) -> Option<String> {
        if var == "__name__" {
            return Some(section.to_string());
        }
        if let Some((_, v)) = vars.iter().find(|(k, _)| k.to_lowercase() == var) {
            return Some(v.clone());
        }
        if let Some((_, v)) = extra.iter().find(|(k, _)| k == var) {
            return Some(v.clone());
        }
        self.raw(section, var).map(|v| v.text.clone())
    }
}

/// `sec/key` as fail2ban's `SECTION_OPTNAME_CRE` splits it: a section of word characters and
/// dashes, a key without spaces or `>`.
fn split_section_option(name: &str) -> Option<(&str, &str)> {
    let (sec, opt) = name.split_once('/')?;
    let sec_ok = !sec.is_empty()
        && sec
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let opt_ok = !opt.is_empty() && !opt.contains(|c: char| c.is_whitespace() || c == '>');
    (sec_ok && opt_ok).then_some((sec, opt))
}

/// The `sec/key` names of `%(sec/key)s` references in a value.
fn section_refs(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(p) = rest.find("%(") {
        rest = &rest[p + 2..];
        let Some(close) = rest.find(")s") else { break };
        let name = &rest[..close];
        if !name.contains(')') && split_section_option(name).is_some() {
            found.push(name.to_string());
        }
    }
    found
}

/// Why a value could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// The section asked for is in no file read.
    #[error("no section [{0}]")]
    NoSection(String),
    /// A `%(reference)s` names an option set nowhere it could be looked up.
    #[error("[{section}] {key}: %({reference})s names no setting")]
    Missing {
        /// The section whose value was being read.
        section: String,
        /// The option whose value was being read.
        key: String,
        /// The name inside `%(...)s` that was not found.
        reference: String,
    },
    /// A `%` not followed by `%` or `(name)s`.
    #[error("[{section}] {key}: {message}")]
    Syntax {
        /// The section whose value was being read.
        section: String,
        /// The option whose value was being read.
        key: String,
        /// What is wrong with the reference.
        message: String,
    },
    /// Interpolation went deeper than Python allows, most likely values that refer to each other.
    #[error("[{section}] {key}: interpolation deeper than {MAX_DEPTH} levels (a loop?)")]
    Depth {
        /// The section whose value was being read.
        section: String,
        /// The option whose value was being read.
        key: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(files: &[(&str, &str)]) -> Store {
        let mut s = Store::default();
        for (p, t) in files {
            s.merge(&parse(p, t).unwrap());
        }
        s
    }

    fn get(s: &Store, sec: &str, key: &str) -> String {
        s.get(sec, key, &[]).unwrap().unwrap()
    }

    #[test]
    fn multi_line_values_comments_and_case() {
        let f = parse(
            "x.conf",
            "# top\n[Definition]\nFailRegex = ^a <HOST>$\n    ^b <HOST>$\n# skipped\n\n    ^c ; inline\n\
             other: v;not-a-comment\nempty =\n[Init]\nmode = normal\n",
        )
        .unwrap();
        let d = f.section("Definition").unwrap();
        assert_eq!(
            d.get("failregex").unwrap().text,
            "^a <HOST>$\n^b <HOST>$\n\n^c"
        );
        assert_eq!(d.get("failregex").unwrap().origin.line, 3);
        assert_eq!(d.get("other").unwrap().text, "v;not-a-comment");
        assert_eq!(d.get("empty").unwrap().text, "");
        assert_eq!(
            f.section("Init").unwrap().get("mode").unwrap().text,
            "normal"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = parse("jail.local", "[sshd]\nenabled = true\nbroken line\n").unwrap_err();
        assert_eq!((e.line, e.path.as_str()), (3, "jail.local"));
        assert!(e
            .to_string()
            .starts_with("jail.local:3: not a `key = value` line"));
        let e = parse("j", "enabled = true\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("j", "[a]\nx = 1\nX = 2\n").unwrap_err();
        assert!(e.message.contains("set twice"), "{e}");
        let e = parse("j", "[a]\n[a]\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn interpolation_defaults_sections_and_known() {
        let s = store(&[
            (
                "f.conf",
                "[DEFAULT]\n_daemon = sshd\npre = <%(_daemon)s>\n[lt_file]\np = F%(pre)s\n\
                 [Definition]\nfailregex = %(pre)s x\n   %(lt_file/p)s\nname = %(__name__)s\npct = 100%%\n",
            ),
            (
                "f.local",
                "[Definition]\nfailregex = %(known/failregex)s\n  extra\n",
            ),
        ]);
        assert_eq!(
            get(&s, "Definition", "failregex"),
            "<sshd> x\nF<sshd>\nextra"
        );
        assert_eq!(get(&s, "Definition", "name"), "Definition");
        assert_eq!(get(&s, "Definition", "pct"), "100%");
        let vars = vec![("_daemon".to_string(), "dropbear".to_string())];
        assert_eq!(
            s.get("Definition", "failregex", &vars).unwrap().unwrap(),
            "<dropbear> x\nF<dropbear>\nextra"
        );
        assert_eq!(s.get("Definition", "nothing", &[]).unwrap(), None);
        assert!(matches!(
            s.get("Nowhere", "x", &[]),
            Err(GetError::NoSection(_))
        ));
        assert_eq!(
            s.get_ex("Definition", "lt_file/p", &[]).unwrap().unwrap(),
            "F<sshd>"
        );
    }

    #[test]
    fn interpolation_errors() {
        let s = store(&[("f", "[a]\nx = %(y)s\nl = %(l)s\nbad = 5%\n")]);
        assert!(matches!(
            s.get("a", "x", &[]),
            Err(GetError::Missing { .. })
        ));
        assert!(matches!(s.get("a", "l", &[]), Err(GetError::Depth { .. })));
        assert!(matches!(
            s.get("a", "bad", &[]),
            Err(GetError::Syntax { .. })
        ));
    }

    #[test]
    fn conditional_sections_rename_keys() {
        let s = store(&[("a", "[Init]\nx = 1\n[Init?family=inet6]\nx = 2\n")]);
        assert_eq!(get(&s, "Init", "x"), "1");
        assert_eq!(get(&s, "Init", "x?family=inet6"), "2");
    }
}

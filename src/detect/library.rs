//! The built-in filter library, embedded in the binary.
//!
//! Each filter is a TOML file under `src/detect/builtin/`, in the same format as a jail's inline
//! filter, carrying its own sample lines (matches with the expected client and time, and hostile
//! look-alikes that must not match). The test suite checks every sample of every filter, and
//! `moat filters test NAME` runs them on a user's machine.

use std::sync::LazyLock;

use super::{Filter, FilterSpec, LineContext, Verdict};

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("builtin/", $name, ".toml")))),*]
    };
}

/// Name and TOML text of every built-in filter, in alphabetical order.
const SOURCES: &[(&str, &str)] = builtin![
    "apache-auth",
    "authelia",
    "caddy-auth",
    "gitea",
    "grafana",
    "home-assistant",
    "jellyfin",
    "nextcloud",
    "nginx-botsearch",
    "nginx-http-auth",
    "nginx-limit-req",
    "portainer",
    "portainer-json",
    "proxmox",
    "sshd",
    "traefik-auth",
    "vaultwarden",
    "wordpress",
];

static PARSED: LazyLock<Vec<(&'static str, FilterSpec)>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(name, text)| {
            let spec = toml::from_str(text)
                .unwrap_or_else(|e| panic!("built-in filter {name} does not parse: {e}"));
            (*name, spec)
        })
        .collect()
});

/// The names of all built-in filters.
pub fn names() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|(n, _)| *n)
}

/// A built-in filter's definition.
pub fn get(name: &str) -> Option<&'static FilterSpec> {
    PARSED.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
}

/// A built-in filter's TOML text, as shipped.
pub fn source(name: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The built-in name closest to `name`, for "did you mean" hints.
pub fn closest(name: &str) -> Option<&'static str> {
    names()
        .map(|n| (strsim::jaro_winkler(n, name), n))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

/// Checks every sample of a filter against the compiled filter; returns one message per sample
/// whose verdict differs from what the sample expects. The test suite runs this on the whole
/// library, and `moat filters test NAME` on a user's machine.
pub fn check_samples(spec: &FilterSpec, filter: &Filter) -> Vec<String> {
    // Samples carry explicit zones or are read as UTC; the reference is fixed so that a syslog
    // sample's inferred year does not depend on today's date.
    let ctx = LineContext::utc("2026-11-22T12:00:00Z".parse().expect("constant"));
    let mut problems = Vec::new();
    for s in &spec.samples {
        let v = filter.check(s.line.as_bytes(), &ctx);
        let ok = match (&v, s.host) {
            (Verdict::Failure(f), Some(host)) => {
                f.host == host && s.time.is_none_or(|t| t == f.time)
            }
            (Verdict::Failure(_), None) | (_, Some(_)) => false,
            (_, None) => true,
        };
        if !ok {
            let want = match (s.host, s.time) {
                (Some(h), Some(t)) => format!("client {h} at {t}"),
                (Some(h), None) => format!("client {h}"),
                (None, _) => "no failure".into(),
            };
            problems.push(format!("{}\n  want {want}, got {v}", s.line));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_filter_compiles_and_passes_its_samples() {
        let mut failures = Vec::new();
        for name in names() {
            let spec = get(name).expect("listed");
            let filter = match Filter::compile(spec) {
                Ok(f) => f,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let matches = spec.samples.iter().filter(|s| s.host.is_some()).count();
            let rejects = spec.samples.len() - matches;
            if matches == 0 || rejects == 0 {
                failures.push(format!(
                    "{name}: needs matching and non-matching samples ({matches}/{rejects})"
                ));
            }
            if spec.description.is_empty() || spec.log_format.is_empty() {
                failures.push(format!("{name}: description and log_format are required"));
            }
            for p in check_samples(spec, &filter) {
                failures.push(format!("{name}: {p}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn every_builtin_filter_is_lint_clean() {
        let mut warnings = Vec::new();
        for name in names() {
            for w in super::super::lint::lint(get(name).expect("listed")) {
                warnings.push(format!("{name}: {}: {}", w.rule, w.message));
            }
        }
        assert!(warnings.is_empty(), "\n{}", warnings.join("\n"));
    }

    #[test]
    fn names_are_sorted_and_unique() {
        let v: Vec<&str> = names().collect();
        let mut sorted = v.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(v, sorted);
    }
}

//! Warnings about a configuration that is valid but leaves its user unprotected or lost: no
//! enforcer that blocks anything, no jails, a source that does not exist (yet), a relative path
//! that resolves somewhere logs do not live, Docker unreachable for a `docker:` source.
//!
//! `moat check-config` prints them and `moat run` logs them at its start; both call
//! [`check`], so the two never disagree. A warning never stops moat: each of these can be
//! intended (a log that appears later, a jail disabled on purpose), but none should be silent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::daemon::EnforcerName;
use crate::config::Config;
use crate::source::docker::{ContainerSelect, PREFIX as DOCKER_PREFIX};
use crate::source::journald::PREFIX as JOURNALD_PREFIX;
use crate::source::SourceSpec;

/// One thing worth telling the user about a valid configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The enforcers configured only record bans (`log`, or nothing: the default).
    NothingBlocks,
    /// No enabled jail: nothing is watched. `disabled` jails are in the file with
    /// `enabled = false`.
    NoJails { disabled: usize },
    /// A file source that does not exist, or a glob that matches nothing, now.
    SourceMissing {
        jail: String,
        source: String,
        /// How it was written, when it was relative (resolved from the configuration's
        /// directory).
        written: Option<String>,
    },
    /// A relative source that resolved into a system directory, where logs do not live.
    OddRelativeSource {
        jail: String,
        written: String,
        resolved: String,
    },
    /// Docker's API does not answer, and jails read containers' logs.
    DockerUnreachable { sources: Vec<String>, error: String },
    /// No container matches a `docker:` source at the moment.
    NoSuchContainer { jail: String, source: String },
    /// A journald source on a host without `journalctl`.
    NoJournalctl { jail: String, source: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NothingBlocks => write!(
                f,
                "no enforcer blocks traffic: bans are only recorded ([enforce] use is \
                 \"log\" or not set); hint: [enforce] use = [\"kernel\"] bans in the kernel \
                 (nftables, else iptables)"
            ),
            Warning::NoJails { disabled: 0 } => write!(
                f,
                "no jails: moat watches no log and bans nothing; hint: add a [jails.NAME] \
                 table, or run `moat init` to write a configuration for this host"
            ),
            Warning::NoJails { disabled } => write!(
                f,
                "no enabled jails ({disabled} with enabled = false): moat watches no log and \
                 bans nothing; hint: set enabled = true in the jails you want"
            ),
            Warning::SourceMissing {
                jail,
                source,
                written,
            } => {
                let what = if is_glob(source) {
                    "matches no file"
                } else {
                    "does not exist"
                };
                write!(
                    f,
                    "jail {jail:?}: source {source} {what} yet (it is followed once it appears)"
                )?;
                if let Some(w) = written {
                    write!(
                        f,
                        "; it is written {w:?}, relative to the configuration's directory, \
                         not to where moat was started; hint: write the absolute path"
                    )?;
                }
                Ok(())
            }
            Warning::OddRelativeSource {
                jail,
                written,
                resolved,
            } => write!(
                f,
                "jail {jail:?}: source {written:?} is relative and resolves to {resolved} \
                 (relative to the configuration's directory), where logs do not usually live; \
                 hint: write the absolute path, e.g. \"/var/log/{}\"",
                Path::new(written)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Warning::DockerUnreachable { sources, error } => write!(
                f,
                "Docker is unreachable ({error}), so {} cannot be read until it answers; \
                 hint: is dockerd running, and is DOCKER_HOST (or /var/run/docker.sock) \
                 right for moat?",
                sources.join(", ")
            ),
            Warning::NoSuchContainer { jail, source } => write!(
                f,
                "jail {jail:?}: no container matches {source} now (it is followed once one \
                 starts); hint: `docker ps --format '{{{{.Names}}}}'` lists the names"
            ),
            Warning::NoJournalctl { jail, source } => write!(
                f,
                "jail {jail:?}: {source} needs journalctl, which is not installed here"
            ),
        }
    }
}

/// Everything worth a warning in `config` (a loaded one: its sources are resolved).
pub fn check(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    let blocks = config.enforce.uses.iter().flatten().any(|e| {
        matches!(
            e,
            EnforcerName::Nftables
                | EnforcerName::Iptables
                | EnforcerName::Kernel
                | EnforcerName::Exec
                | EnforcerName::Cloudflare
        )
    });
    if !blocks {
        out.push(Warning::NothingBlocks);
    }
    let written = written_sources(&config.files);
    if config.jails.is_empty() {
        out.push(Warning::NoJails {
            disabled: written.disabled,
        });
    }
    let mut docker: Vec<(String, String)> = Vec::new();
    for jail in &config.jails {
        for source in &jail.sources {
            if source.starts_with(DOCKER_PREFIX) {
                docker.push((jail.name.clone(), source.clone()));
                continue;
            }
            if source.starts_with(JOURNALD_PREFIX) {
                if !on_path("journalctl") {
                    out.push(Warning::NoJournalctl {
                        jail: jail.name.clone(),
                        source: source.clone(),
                    });
                }
                continue;
            }
            if !SourceSpec::is_path(source) {
                continue;
            }
            let relative = written
                .relative
                .iter()
                .find(|(_, resolved)| resolved == Path::new(source))
                .map(|(w, _)| w.clone());
            if let Some(w) = &relative {
                if in_system_dir(Path::new(source)) {
                    out.push(Warning::OddRelativeSource {
                        jail: jail.name.clone(),
                        written: w.clone(),
                        resolved: source.clone(),
                    });
                    continue;
                }
            }
            if !exists(source) {
                out.push(Warning::SourceMissing {
                    jail: jail.name.clone(),
                    source: source.clone(),
                    written: relative,
                });
            }
        }
    }
    if !docker.is_empty() {
        out.extend(check_docker(
            &docker,
            bollard::Docker::connect_with_local_defaults().map_err(|e| e.to_string()),
        ));
    }
    out
}

/// Whether a path exists, or a glob matches something.
fn exists(source: &str) -> bool {
    if is_glob(source) {
        glob::glob(source).is_ok_and(|mut paths| paths.any(|p| p.is_ok()))
    } else {
        Path::new(source).exists()
    }
}

fn is_glob(source: &str) -> bool {
    source.contains(['*', '?', '['])
}

/// System directories: a relative source resolved into one of them is a slip (a
/// configuration in /etc/moat naming "access.log").
fn in_system_dir(path: &Path) -> bool {
    [
        "/etc", "/usr", "/bin", "/sbin", "/lib", "/boot", "/proc", "/sys",
    ]
    .iter()
    .any(|d| path.starts_with(d))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The sources as the files write them: loading resolves relative ones, and a warning must
/// say what the user wrote.
#[derive(Default)]
struct Written {
    /// (as written, as resolved) for every relative path source.
    relative: Vec<(String, PathBuf)>,
    /// Jails with `enabled = false`.
    disabled: usize,
}

fn written_sources(files: &[PathBuf]) -> Written {
    let mut w = Written::default();
    for file in files {
        let Some(table) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
        else {
            continue;
        };
        let dir = file.parent().unwrap_or(Path::new(""));
        let mut tables: Vec<&toml::Table> = Vec::new();
        if let Some(d) = table.get("defaults").and_then(|d| d.as_table()) {
            tables.push(d);
        }
        if let Some(jails) = table.get("jails").and_then(|j| j.as_table()) {
            for j in jails.values().filter_map(|j| j.as_table()) {
                if j.get("enabled").and_then(|e| e.as_bool()) == Some(false) {
                    w.disabled += 1;
                }
                tables.push(j);
            }
        }
        for t in tables {
            for s in t
                .get("sources")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
            {
                if Path::new(s).is_relative() && SourceSpec::is_path(s) {
                    w.relative.push((s.to_string(), dir.join(s)));
                }
            }
        }
    }
    w
}

/// Asks Docker (as the daemon would reach it) whether it answers and which of the containers
/// the sources (jail, source) name exist.
fn check_docker(
    sources: &[(String, String)],
    docker: Result<bollard::Docker, String>,
) -> Vec<Warning> {
    let unreachable = |error: String| {
        let mut names: Vec<String> = sources.iter().map(|(_, s)| s.clone()).collect();
        names.sort();
        names.dedup();
        vec![Warning::DockerUnreachable {
            sources: names,
            error,
        }]
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let docker = match docker {
            Ok(d) => d,
            Err(e) => return unreachable(e),
        };
        match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
            Err(_) => return unreachable("no answer within 3 s".into()),
            Ok(Err(e)) => return unreachable(e.to_string()),
            Ok(Ok(_)) => {}
        }
        let mut out = Vec::new();
        for (jail, source) in sources {
            let Some(Ok(select)) = ContainerSelect::parse(source) else {
                continue;
            };
            let list =
                docker.list_containers(Some(bollard::query_parameters::ListContainersOptions {
                    all: true,
                    filters: Some(select.filters()),
                    ..Default::default()
                }));
            match tokio::time::timeout(Duration::from_secs(3), list).await {
                Ok(Ok(found)) if found.is_empty() => out.push(Warning::NoSuchContainer {
                    jail: jail.clone(),
                    source: source.clone(),
                }),
                _ => {}
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, text: &str) -> Config {
        let path = dir.join("moat.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    }

    #[test]
    fn a_config_that_blocks_nothing_and_watches_nothing_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let w = check(&load(dir.path(), ""));
        assert_eq!(
            w,
            vec![Warning::NothingBlocks, Warning::NoJails { disabled: 0 }]
        );
        let w = check(&load(
            dir.path(),
            "[enforce]\nuse = [\"log\"]\n[jails.a]\nfilter = \"sshd\"\nsources = [\"-\"]\nenabled = false\n",
        ));
        assert_eq!(
            w,
            vec![Warning::NothingBlocks, Warning::NoJails { disabled: 1 }]
        );
        assert!(w[1].to_string().contains("1 with enabled = false"));
    }

    #[test]
    fn missing_and_misplaced_sources_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here.log"), "").unwrap();
        let w = check(&load(
            dir.path(),
            "[enforce]\nuse = [\"kernel\"]\n\
             [jails.a]\nfilter = \"sshd\"\nsources = [\"here.log\", \"gone.log\", \"/nonexistent/*.log\"]\n",
        ));
        let gone = dir.path().join("gone.log").display().to_string();
        assert_eq!(
            w,
            vec![
                Warning::SourceMissing {
                    jail: "a".into(),
                    source: gone,
                    written: Some("gone.log".into()),
                },
                Warning::SourceMissing {
                    jail: "a".into(),
                    source: "/nonexistent/*.log".into(),
                    written: None,
                },
            ]
        );
        assert!(w[0]
            .to_string()
            .contains("relative to the configuration's directory"));
        assert!(w[1].to_string().contains("matches no file"));
    }

    #[test]
    fn a_relative_source_under_etc_is_odd() {
        // A configuration in /etc/moat naming "access.log" reads /etc/moat/access.log.
        assert!(in_system_dir(Path::new("/etc/moat/access.log")));
        assert!(in_system_dir(Path::new("/usr/local/etc/x.log")));
        assert!(!in_system_dir(Path::new("/var/log/nginx/access.log")));
        assert!(!in_system_dir(Path::new("/srv/etc/x.log")));
        let w = Warning::OddRelativeSource {
            jail: "web".into(),
            written: "nginx/access.log".into(),
            resolved: "/etc/moat/nginx/access.log".into(),
        };
        assert!(
            w.to_string()
                .contains("hint: write the absolute path, e.g. \"/var/log/access.log\""),
            "{w}"
        );
    }

    #[test]
    fn docker_unreachable_is_reported_once_for_all_its_sources() {
        let dir = tempfile::tempdir().unwrap();
        let sources = [
            ("a".to_string(), "docker:vw".to_string()),
            ("b".to_string(), "docker:gitea".to_string()),
            ("c".to_string(), "docker:vw".to_string()),
        ];
        // A socket nothing listens on.
        let sock = dir.path().join("no-docker.sock");
        let docker = bollard::Docker::connect_with_unix(
            &sock.display().to_string(),
            3,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| e.to_string());
        let w = check_docker(&sources, docker);
        assert_eq!(w.len(), 1, "{w:?}");
        let text = w[0].to_string();
        assert!(
            text.contains("docker:gitea, docker:vw") && text.contains("unreachable"),
            "{text}"
        );
    }
}

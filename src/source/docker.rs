//! Docker container logs as a source: which containers, and how their log stream becomes lines.
//!
//! A source `docker:NAME` follows the container of that name; `docker:label=KEY` or
//! `docker:label=KEY=VALUE` follows every container with that label. The daemon reads the
//! logs through the Docker API with timestamps; each line's Docker timestamp is its cursor, so
//! a restart of moat, of the container, or its recreation under the same name continues after
//! the last line read. The line handed to the filters is the container's own output, without
//! Docker's timestamp.

use std::collections::HashMap;

/// The prefix naming a Docker source.
pub const PREFIX: &str = "docker:";

/// Which containers a Docker source follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerSelect {
    Name(String),
    Label(String),
}

impl ContainerSelect {
    /// Parses a `docker:` source; `None` when it is not one.
    pub fn parse(source: &str) -> Option<Result<ContainerSelect, String>> {
        let spec = source.strip_prefix(PREFIX)?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-=/".contains(&b))
        };
        Some(match spec.strip_prefix("label=") {
            Some(l) if valid(l) => Ok(ContainerSelect::Label(l.to_string())),
            None if valid(spec) && !spec.contains('=') => Ok(ContainerSelect::Name(
                spec.trim_start_matches('/').to_string(),
            )),
            _ => Err(format!(
                "{source:?}: write docker:NAME or docker:label=KEY[=VALUE] (letters, digits and \
                 _ . - / only)"
            )),
        })
    }

    /// The Docker API's container list filters for this selection.
    pub fn filters(&self) -> HashMap<String, Vec<String>> {
        let mut f = HashMap::new();
        match self {
            // The name filter is a regular expression over "/name"; anchor it, since names
            // are restricted to [a-zA-Z0-9_.-] there is nothing to escape but the dots.
            ContainerSelect::Name(n) => f.insert(
                "name".to_string(),
                vec![format!("^/{}$", n.replace('.', "\\."))],
            ),
            ContainerSelect::Label(l) => f.insert("label".to_string(), vec![l.clone()]),
        };
        f
    }
}

/// Splits Docker's `TIMESTAMP message` (the logs endpoint with timestamps on).
pub fn split_timestamp(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = memchr::memchr(b' ', frame)?;
    let (ts, rest) = frame.split_at(space);
    // RFC 3339 with nanoseconds, always "YYYY-MM-DDTHH:MM:SS.fffffffffZ" from dockerd.
    if ts.len() < 20 || ts[4] != b'-' || ts[10] != b'T' {
        return None;
    }
    Some((ts, &rest[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections() {
        assert_eq!(
            ContainerSelect::parse("docker:web").unwrap().unwrap(),
            ContainerSelect::Name("web".into())
        );
        assert_eq!(
            ContainerSelect::parse("docker:label=moat.jail=portainer")
                .unwrap()
                .unwrap()
                .filters()["label"],
            ["moat.jail=portainer"]
        );
        assert_eq!(
            ContainerSelect::Name("my.app".into()).filters()["name"],
            ["^/my\\.app$"]
        );
        assert!(ContainerSelect::parse("docker:").unwrap().is_err());
        assert!(ContainerSelect::parse("docker:a b").unwrap().is_err());
        assert!(ContainerSelect::parse("/var/log/x").is_none());
    }

    #[test]
    fn timestamps_split() {
        let (ts, msg) =
            split_timestamp(b"2026-11-22T15:53:39.123456789Z 203.0.113.9 - - x\n").unwrap();
        assert_eq!(ts, b"2026-11-22T15:53:39.123456789Z");
        assert_eq!(msg, b"203.0.113.9 - - x\n");
        assert!(split_timestamp(b"no timestamp here").is_none());
    }
}

//! Docker container logs as a source: which containers, and how their log stream becomes lines.
//!
//! A source `docker:NAME` follows the container of that name; `docker:label=KEY` or
//! `docker:label=KEY=VALUE` follows every container with that label. The daemon reads the
//! logs through the Docker API with timestamps; each line's Docker timestamp is its cursor, so
//! a restart of moat, of the container, or its recreation under the same name continues after
//! the last line read. The line handed to the filters is the container's own output, without
//! Docker's timestamp.
//!
//! Docker writes a line longer than 16 KiB as several entries, of which only the last ends in
//! `\n`: through the API as several frames, in a json-file log as several JSON lines.
//! [`JsonFileJoiner`] joins a json-file log's entries back into one line per stream, so that
//! text at byte 16,384 of a user name never passes for a line of its own.

pub mod follow;
pub mod joiner;

use std::collections::HashMap;

use super::stream::{Following, Health, Resume, Stream, StreamBlock};
pub use joiner::{Joined, JsonFileJoiner};

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

/// A `docker:` source as a stream.
struct Containers {
    source: String,
    select: ContainerSelect,
}

/// The stream a `docker:` source names.
pub fn stream(source: &str) -> Option<Result<Box<dyn Stream>, String>> {
    ContainerSelect::parse(source).map(|r| {
        r.map(|select| {
            Box::new(Containers {
                source: source.to_string(),
                select,
            }) as Box<dyn Stream>
        })
    })
}

impl Stream for Containers {
    fn follow(
        &self,
        resume: Resume,
        out: tokio::sync::mpsc::Sender<StreamBlock>,
        health: Health,
    ) -> Following {
        Box::pin(follow::follow(
            self.source.clone(),
            self.select.clone(),
            resume,
            out,
            health,
        ))
    }

    fn read_all(&self) -> std::io::Result<crate::source::ProducedLines> {
        read_all(&self.select)
    }
}

/// Every line Docker keeps of the containers `select` names (running or not), without
/// Docker's timestamps, each container's in turn: what `moat scan -c` reads for a `docker:`
/// source. Docker's partial frames are joined per stream, as the daemon does.
pub fn read_all(select: &ContainerSelect) -> std::io::Result<crate::source::ProducedLines> {
    let docker = bollard::Docker::connect_with_local_defaults()
        .map_err(|e| std::io::Error::other(format!("cannot reach Docker: {e}")))?;
    let select = select.clone();
    Ok(crate::source::ProducedLines::spawn(move |send| {
        use bollard::container::LogOutput;
        use bollard::query_parameters::{ListContainersOptions, LogsOptions};
        use futures_util::StreamExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(select.filters()),
                    ..Default::default()
                }))
                .await
                .map_err(|e| std::io::Error::other(format!("cannot list containers: {e}")))?;
            for c in list {
                let Some(id) = c.id else { continue };
                let mut logs = docker.logs(
                    &id,
                    Some(LogsOptions {
                        stdout: true,
                        stderr: true,
                        timestamps: true,
                        ..Default::default()
                    }),
                );
                let mut streams = [
                    crate::source::LineAssembler::default(),
                    crate::source::LineAssembler::default(),
                ];
                while let Some(item) = logs.next().await {
                    let (n, frame) = match item {
                        Ok(LogOutput::StdErr { message }) => (1, message),
                        Ok(out) => (0, out.into_bytes()),
                        Err(e) => {
                            return Err(std::io::Error::other(format!(
                                "cannot read the logs of container {id}: {e}"
                            )))
                        }
                    };
                    let Some((_, message)) = split_timestamp(&frame) else {
                        continue;
                    };
                    let mut block = Vec::new();
                    streams[n].push(message, &mut block);
                    if !block.is_empty() && !send(block) {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
    }))
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

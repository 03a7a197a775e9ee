//! Following container logs through the Docker API (bollard).
//!
//! One task per `docker:` source watches Docker's container events; whenever a matching
//! container starts (first start, restart, recreation under the same name) it starts a log
//! reader for it, from the saved cursor (Docker's timestamp of the last line read). When
//! dockerd goes away, the task reconnects with a growing pause; a restart of dockerd is just
//! another reconnection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{EventsOptions, ListContainersOptions, LogsOptions};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::engine::EngineMsg;
use super::protocol::{FileStatus, SourceStatus};
use crate::source::docker::{split_timestamp, ContainerSelect};
use crate::source::LineAssembler;
use crate::vocab::Cursor;

/// Where each container's log was read up to: its Docker timestamp, by cursor key.
pub type LogCursors = Arc<Mutex<HashMap<String, String>>>;

/// The cursor key of a container of a source: the source for a name, source#name for a
/// label (several containers).
fn cursor_key(source: &str, select: &ContainerSelect, name: &str) -> String {
    match select {
        ContainerSelect::Name(_) => source.to_string(),
        ContainerSelect::Label(_) => format!("{source}#{name}"),
    }
}

/// A cursor as the ledger stores it (the timestamp in the fingerprint column).
pub fn ledger_cursor(ts: &str) -> Cursor {
    Cursor {
        dev: 0,
        ino: 0,
        offset: 0,
        fingerprint: ts.as_bytes().to_vec(),
    }
}

pub struct ContainerSource {
    pub source: String,
    pub select: ContainerSelect,
    pub cursors: LogCursors,
    /// Read a container seen for the first time from its start (else from now).
    pub from_start: bool,
    pub engine: mpsc::Sender<EngineMsg>,
    pub status: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
}

impl ContainerSource {
    fn set_status(&self, files: Vec<FileStatus>, error: Option<String>) {
        self.status.lock().unwrap().insert(
            self.source.clone(),
            SourceStatus {
                source: self.source.clone(),
                files,
                error,
            },
        );
    }

    pub async fn run(self) {
        let this = Arc::new(self);
        let mut pause = Duration::from_secs(1);
        let mut readers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let lines: Arc<Mutex<BTreeMap<String, LineCounts>>> = Arc::default();
        let started = jiff::Timestamp::now();
        this.set_status(Vec::new(), None);
        loop {
            let docker = match Docker::connect_with_local_defaults() {
                Ok(d) => d,
                Err(e) => {
                    this.set_status(Vec::new(), Some(format!("cannot reach Docker: {e}")));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            let mut events = docker.events(Some(EventsOptions {
                filters: Some(HashMap::from([
                    ("type".to_string(), vec!["container".to_string()]),
                    ("event".to_string(), vec!["start".to_string()]),
                ])),
                ..Default::default()
            }));
            let mut ok = true;
            loop {
                match docker
                    .list_containers(Some(ListContainersOptions {
                        filters: Some(this.select.filters()),
                        ..Default::default()
                    }))
                    .await
                {
                    Ok(list) => {
                        pause = Duration::from_secs(1);
                        readers.retain(|_, t| !t.is_finished());
                        for c in list {
                            let (Some(id), Some(name)) =
                                (c.id, c.names.and_then(|n| n.into_iter().next()))
                            else {
                                continue;
                            };
                            let name = name.trim_start_matches('/').to_string();
                            if readers.contains_key(&id) {
                                continue;
                            }
                            tracing::info!(source = %this.source, container = %name, "following container logs");
                            lines.lock().unwrap().entry(name.clone()).or_default();
                            let task = tokio::spawn(read_logs(
                                this.clone(),
                                docker.clone(),
                                id.clone(),
                                name,
                                started,
                                lines.clone(),
                            ));
                            readers.insert(id, task);
                        }
                        let files = lines
                            .lock()
                            .unwrap()
                            .iter()
                            .map(|(name, n)| FileStatus {
                                path: format!("container {name}"),
                                offset: 0,
                                lag: 0,
                                lines: n.lines,
                                overlong: n.overlong,
                            })
                            .collect();
                        this.set_status(files, None);
                    }
                    Err(e) => {
                        tracing::warn!(source = %this.source, "cannot list containers: {e}");
                        this.set_status(Vec::new(), Some(format!("cannot list containers: {e}")));
                        ok = false;
                    }
                }
                if !ok {
                    break;
                }
                // Wait for the next container start (or dockerd going away).
                match events.next().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(source = %this.source, "Docker events: {e}");
                        break;
                    }
                    None => break,
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(60));
        }
    }
}

/// Lines read from a container, and lines skipped for being over the cap.
#[derive(Clone, Copy, Debug, Default)]
struct LineCounts {
    lines: u64,
    overlong: u64,
}

/// Reads one container's log from its cursor until the container stops.
///
/// Docker splits a line longer than 16 KiB into several entries of which only the last ends
/// in `\n`; each stream (stdout, stderr) is joined on its own until then, so that text at
/// byte 16,384 of a long line never becomes a line of its own.
async fn read_logs(
    src: Arc<ContainerSource>,
    docker: Docker,
    id: String,
    name: String,
    started: jiff::Timestamp,
    lines: Arc<Mutex<BTreeMap<String, LineCounts>>>,
) {
    let key = cursor_key(&src.source, &src.select, &name);
    let saved = src.cursors.lock().unwrap().get(&key).cloned();
    let since = match &saved {
        Some(ts) => ts
            .parse::<jiff::Timestamp>()
            .map_or(0, |t| t.as_second() as i32),
        None if src.from_start => 0,
        None => started.as_second() as i32,
    };
    let mut stream = docker.logs(
        &id,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            timestamps: true,
            since,
            ..Default::default()
        }),
    );
    let mut last = saved;
    // stdout, then stderr.
    let mut streams = [LineAssembler::default(), LineAssembler::default()];
    while let Some(item) = stream.next().await {
        let (stream_no, frame) = match item {
            Ok(LogOutput::StdErr { message }) => (1, message),
            Ok(out) => (0, out.into_bytes()),
            Err(e) => {
                tracing::debug!(container = %name, "log stream ended: {e}");
                break;
            }
        };
        let Some((ts, message)) = split_timestamp(&frame) else {
            continue;
        };
        let ts = String::from_utf8_lossy(ts).into_owned();
        // `since` has a resolution of seconds: skip what was read before.
        if last.as_ref().is_some_and(|l| !newer(&ts, l)) {
            continue;
        }
        let joiner = &mut streams[stream_no];
        let overlong = joiner.overlong;
        let mut block = Vec::new();
        joiner.push(message, &mut block);
        if joiner.overlong > overlong {
            lines
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_default()
                .overlong += 1;
        }
        if block.is_empty() {
            continue;
        }
        lines.lock().unwrap().entry(name.clone()).or_default().lines += 1;
        last = Some(ts.clone());
        src.cursors.lock().unwrap().insert(key.clone(), ts.clone());
        let msg = EngineMsg::Lines {
            read_at: std::time::Instant::now(),
            source: src.source.clone(),
            file: key.clone(),
            block,
            cursor: Some(ledger_cursor(&ts)),
        };
        if src.engine.send(msg).await.is_err() {
            return;
        }
    }
    tracing::info!(container = %name, "container stopped; its log will be followed again when it starts");
}

/// Whether Docker timestamp `a` is after `b` (both RFC 3339; parsed, since the number of
/// fraction digits varies).
fn newer(a: &str, b: &str) -> bool {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => a > b,
        _ => a > b,
    }
}

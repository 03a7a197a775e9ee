//! Following container logs through the Docker API (bollard).
//!
//! A `docker:` source watches Docker's container events; whenever a matching container
//! starts (first start, restart, recreation under the same name) it starts a log reader for
//! it, from the saved cursor (Docker's timestamp of the last line read). When dockerd goes
//! away, it reconnects with a growing pause; a restart of dockerd is just another
//! reconnection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{EventsOptions, ListContainersOptions, LogsOptions};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{split_timestamp, ContainerSelect};
use crate::source::stream::{Health, PartHealth, Resume, StreamBlock};
use crate::source::LineAssembler;
use crate::vocab::Cursor;

/// The cursor key of a container of a source: the source for a name, source#name for a
/// label (several containers).
fn cursor_key(source: &str, select: &ContainerSelect, name: &str) -> String {
    match select {
        ContainerSelect::Name(_) => source.to_string(),
        ContainerSelect::Label(_) => format!("{source}#{name}"),
    }
}

/// One `docker:` source being followed.
struct Following {
    source: String,
    select: ContainerSelect,
    /// Where each container's log was read up to: its Docker timestamp, by cursor key.
    cursors: Mutex<HashMap<String, String>>,
    /// Read a container seen for the first time from its start (else from now).
    from_start: bool,
    out: mpsc::Sender<StreamBlock>,
    health: Health,
    /// Lines per container.
    counts: Mutex<BTreeMap<String, PartHealth>>,
}

impl Following {
    fn report(&self, error: Option<String>) {
        let parts = self.counts.lock().unwrap().values().cloned().collect();
        *self.health.lock().unwrap() = crate::source::stream::StreamHealth { parts, error };
    }
}

/// Follows the containers `select` names until `out` is closed.
pub async fn follow(
    source: String,
    select: ContainerSelect,
    resume: Resume,
    out: mpsc::Sender<StreamBlock>,
    health: Health,
) {
    let this = Arc::new(Following {
        source,
        select,
        cursors: Mutex::new(resume.cursors),
        from_start: resume.from_start,
        out,
        health,
        counts: Mutex::default(),
    });
    let mut pause = Duration::from_secs(1);
    let mut readers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let started = jiff::Timestamp::now();
    this.report(None);
    while !this.out.is_closed() {
        let docker = match Docker::connect_with_local_defaults() {
            Ok(d) => d,
            Err(e) => {
                this.report(Some(format!("cannot reach Docker: {e}")));
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
                        this.counts
                            .lock()
                            .unwrap()
                            .entry(name.clone())
                            .or_insert_with(|| PartHealth {
                                name: format!("container {name}"),
                                ..PartHealth::default()
                            });
                        let task = tokio::spawn(read_logs(
                            this.clone(),
                            docker.clone(),
                            id.clone(),
                            name,
                            started,
                        ));
                        readers.insert(id, task);
                    }
                    this.report(None);
                }
                Err(e) => {
                    tracing::warn!(source = %this.source, "cannot list containers: {e}");
                    this.report(Some(format!("cannot list containers: {e}")));
                    break;
                }
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
    for t in readers.values() {
        t.abort();
    }
}

/// Reads one container's log from its cursor until the container stops.
///
/// Docker splits a line longer than 16 KiB into several entries of which only the last ends
/// in `\n`; each stream (stdout, stderr) is joined on its own until then, so that text at
/// byte 16,384 of a long line never becomes a line of its own.
async fn read_logs(
    src: Arc<Following>,
    docker: Docker,
    id: String,
    name: String,
    started: jiff::Timestamp,
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
        {
            let mut counts = src.counts.lock().unwrap();
            let part = counts.entry(name.clone()).or_default();
            part.overlong += joiner.overlong - overlong;
            part.lines += u64::from(!block.is_empty());
        }
        src.report(None);
        if block.is_empty() {
            continue;
        }
        last = Some(ts.clone());
        src.cursors.lock().unwrap().insert(key.clone(), ts.clone());
        let sent = src
            .out
            .send(StreamBlock {
                part: key.clone(),
                block,
                cursor: Some(Cursor::Stream(ts)),
            })
            .await;
        if sent.is_err() {
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

//! The sources task: follows every configured file and glob, and standard input, and sends
//! blocks of complete lines to the engine.
//!
//! It sleeps on inotify, watching the *directories* that hold the followed files: a directory
//! watch reports writes to the files in it as well as creations, renames and deletions, so
//! one watch sees a file grow, be rotated away, and be created again. A slow safety timer
//! (5 s, 1 s while a rotated file is still drained) covers what inotify cannot see, such as
//! a directory that does not exist yet. There is no busy polling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use super::engine::EngineMsg;
use super::protocol::{FileStatus, SourceStatus};
use super::Shared;
use crate::source::follow::{FileFollower, FollowFrom};
use crate::source::stream::{self, Health, Resume, StreamBlock};
use crate::source::SourceSpec;
use crate::vocab::Cursor;

/// The source name of standard input.
pub const STDIN: &str = "-";

struct Followed {
    /// The configured sources naming this file (a path and a glob may both name it); its
    /// lines go to the jails of each.
    sources: Vec<String>,
    follower: FileFollower,
    lines: u64,
    /// When a line was last read from it.
    last_line: Option<jiff::Timestamp>,
    error: Option<String>,
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files a configured source names now.
fn expand(pattern: &str) -> Vec<PathBuf> {
    if !is_glob(pattern) {
        return vec![PathBuf::from(pattern)];
    }
    let mut found: Vec<PathBuf> = glob::glob(pattern)
        .map(|paths| {
            paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The directories to watch for a path: its own, and its symlink target's.
fn dirs_of(path: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = path.parent() {
        dirs.push(d.to_path_buf());
    }
    if let Ok(target) = std::fs::canonicalize(path) {
        if let Some(d) = target.parent() {
            dirs.push(d.to_path_buf());
        }
    }
    dirs
}

/// The sources task: the files it follows and the directories it watches, the stream readers
/// it runs, and the cursors it has reached.
pub struct Sources {
    patterns: Vec<String>,
    followed: BTreeMap<PathBuf, Followed>,
    cursors: HashMap<String, Cursor>,
    from: FollowFrom,
    inotify: AsyncFd<Inotify>,
    watched: HashSet<PathBuf>,
    engine: mpsc::Sender<EngineMsg>,
    shared: Arc<Shared>,
    /// Running stream readers (journald), by source.
    streams: HashMap<String, tokio::task::JoinHandle<()>>,
    stream_health: Arc<Mutex<BTreeMap<String, Health>>>,
    first_start: bool,
}

impl Sources {
    /// The task for `patterns` (the configured sources), sending lines to `engine`. A file or
    /// a stream's part resumes from its cursor in `cursors` (keyed by path, or by the stream's
    /// source); without one it starts where `from` says, but a file that appears later is read
    /// from its start. An error when inotify cannot be set up.
    pub fn new(
        patterns: Vec<String>,
        cursors: HashMap<String, Cursor>,
        from: FollowFrom,
        engine: mpsc::Sender<EngineMsg>,
        shared: Arc<Shared>,
    ) -> std::io::Result<Sources> {
        Ok(Sources {
            patterns,
            followed: BTreeMap::new(),
            cursors,
            from,
            // SAFETY: `Inotify` owns its descriptor and closes it only when dropped, which
            // the `AsyncFd` owning it outlives.
            inotify: unsafe { AsyncFd::register(Inotify::init()?) }
                .map_err(|e| e.into_parts().1)?,
            watched: HashSet::new(),
            engine,
            streams: HashMap::new(),
            stream_health: shared.streams.clone(),
            shared,
            first_start: true,
        })
    }

    /// Follows until `shutdown` turns true; `reload` brings a new list of sources.
    pub async fn run(
        mut self,
        mut reload: mpsc::Receiver<Vec<String>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut stdin_started = false;
        let mut first = true;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !stdin_started && self.patterns.iter().any(|p| p == STDIN) {
                stdin_started = true;
                tokio::spawn(read_stdin(self.engine.clone()));
            }
            self.sync(first).await;
            first = false;
            let more = self.poll_all().await;
            let pause = if more {
                Duration::ZERO
            } else if self.followed.values().any(|f| f.follower.has_retired()) {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                ready = self.inotify.readable_mut() => {
                    if let Ok(mut guard) = ready {
                        // Drain every queued event; which file changed does not matter,
                        // every follower looks again.
                        loop {
                            match guard.get_inner_mut().read_events(&mut buf) {
                                Ok(events) => {
                                    let mut any = false;
                                    for e in events {
                                        any = true;
                                        // A watched directory went away: watch again what
                                        // exists at the next look.
                                        if e.mask.contains(EventMask::IGNORED) {
                                            self.watched.clear();
                                        }
                                    }
                                    if !any { break }
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    guard.clear_ready();
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!("inotify: {e}");
                                    break;
                                }
                            }
                        }
                    }
                }
                _ = tokio::time::sleep(pause) => {}
                patterns = reload.recv() => {
                    if let Some(p) = patterns {
                        self.patterns = p;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Starts following files the sources name and no one follows yet; stops following
    /// sources no longer configured.
    async fn sync(&mut self, first: bool) {
        let configured: HashSet<&str> = self.patterns.iter().map(String::as_str).collect();
        self.followed.retain(|_, f| {
            f.sources.retain(|s| configured.contains(s.as_str()));
            !f.sources.is_empty()
        });
        self.sync_streams();
        let mut fresh = Vec::new();
        for pattern in self.patterns.iter().filter(|p| SourceSpec::is_path(p)) {
            if is_glob(pattern) {
                // The directory part of a glob is watched when it is a plain directory.
                if let Some(dir) = Path::new(pattern)
                    .parent()
                    .filter(|d| !is_glob(&d.display().to_string()))
                {
                    fresh.push((None, vec![dir.to_path_buf()]));
                }
            }
            for path in expand(pattern) {
                if let Some(f) = self.followed.get_mut(&path) {
                    if !f.sources.contains(pattern) {
                        f.sources.push(pattern.clone());
                    }
                    continue;
                }
                let key = path.display().to_string();
                // Files present at the first start follow `follow_from`; files that appear
                // later are new, and read from their start.
                let from = if first { self.from } else { FollowFrom::Start };
                let saved = self.cursors.get(&key).and_then(Cursor::file);
                let (follower, note) = FileFollower::resume(&path, saved, from);
                if let Some(note) = note {
                    tracing::warn!(file = %key, "{note}");
                }
                tracing::info!(file = %key, source = %pattern, "following");
                fresh.push((Some(follower.cursor()), dirs_of(&path)));
                self.followed.insert(
                    path,
                    Followed {
                        sources: vec![pattern.clone()],
                        follower,
                        lines: 0,
                        last_line: None,
                        error: None,
                    },
                );
            }
        }
        // Every followed file's directories, not only the new ones': a directory that did not
        // exist when its file was first named is watched as soon as it does.
        for path in self.followed.keys() {
            fresh.push((None, dirs_of(path)));
        }
        for (_, dirs) in &fresh {
            for d in dirs {
                if self.watched.contains(d) {
                    continue;
                }
                let mask = WatchMask::MODIFY
                    | WatchMask::CREATE
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    | WatchMask::DELETE
                    | WatchMask::CLOSE_WRITE
                    | WatchMask::ATTRIB;
                match self.inotify.get_mut().watches().add(d, mask) {
                    Ok(_) => {
                        self.watched.insert(d.clone());
                    }
                    Err(e) => {
                        tracing::debug!(dir = %d.display(), "not watched yet: {e}");
                    }
                }
            }
        }
        // The engine saves a new file's starting point at once, so that a crash before its
        // first line neither skips nor re-reads.
        for (path, f) in &self.followed {
            if let Some(c) = f.follower.cursor().map(Cursor::File) {
                let key = path.display().to_string();
                if self.cursors.get(&key) != Some(&c) {
                    self.cursors.insert(key.clone(), c.clone());
                    let _ = self
                        .engine
                        .send(EngineMsg::Lines {
                            read_at: std::time::Instant::now(),
                            source: f.sources[0].clone(),
                            file: key,
                            block: Vec::new(),
                            cursor: Some(c),
                        })
                        .await;
                }
            }
        }
    }

    /// Starts a reader for each journald or Docker source not read yet; stops those no longer
    /// configured.
    fn sync_streams(&mut self) {
        let configured: HashSet<String> = self.patterns.iter().cloned().collect();
        self.streams.retain(|source, task| {
            let keep = configured.contains(source);
            if !keep {
                task.abort();
            }
            keep
        });
        self.stream_health
            .lock()
            .unwrap()
            .retain(|source, _| configured.contains(source));
        for pattern in &self.patterns {
            if self.streams.contains_key(pattern) {
                continue;
            }
            let Some(Ok(stream)) = stream::parse(pattern) else {
                continue;
            };
            // A stream's parts are saved under its source, or the source and a suffix.
            let resume = Resume {
                cursors: self
                    .cursors
                    .iter()
                    .filter(|(k, _)| k.starts_with(pattern.as_str()))
                    .filter_map(|(k, c)| Some((k.clone(), c.stream()?.to_string())))
                    .collect(),
                from_start: self.first_start && self.from == FollowFrom::Start,
            };
            let health = Health::default();
            self.stream_health
                .lock()
                .unwrap()
                .insert(pattern.clone(), health.clone());
            let (tx, mut rx) = mpsc::channel::<StreamBlock>(16);
            let following = stream.follow(resume, tx, health);
            let engine = self.engine.clone();
            let source = pattern.clone();
            let task = tokio::spawn(async move {
                let forward = async {
                    while let Some(b) = rx.recv().await {
                        let msg = EngineMsg::Lines {
                            read_at: std::time::Instant::now(),
                            source: source.clone(),
                            file: b.part,
                            block: b.block,
                            cursor: b.cursor,
                        };
                        if engine.send(msg).await.is_err() {
                            return;
                        }
                    }
                };
                // The reader ends when the forwarder is gone, and the other way round.
                tokio::select! {
                    _ = following => {}
                    _ = forward => {}
                }
            });
            self.streams.insert(pattern.clone(), task);
        }
        self.first_start = false;
    }

    /// Reads what is new in every followed file; true when some file has more to read now.
    async fn poll_all(&mut self) -> bool {
        let mut more = false;
        let mut out: Vec<(Vec<u8>, Option<Cursor>)> = Vec::new();
        let paths: Vec<PathBuf> = self.followed.keys().cloned().collect();
        for path in paths {
            let f = self.followed.get_mut(&path).expect("listed above");
            out.clear();
            let result = f
                .follower
                .poll(&mut |block, cursor| out.push((block.to_vec(), cursor.map(Cursor::File))));
            match result {
                Ok(notes) => {
                    if f.error.take().is_some() {
                        tracing::info!(file = %path.display(), "readable again");
                    }
                    if notes.rotated {
                        tracing::info!(file = %path.display(), "rotated; following the new file");
                    }
                    if notes.truncated {
                        tracing::info!(file = %path.display(), "truncated; reading from its start");
                    }
                    more |= notes.more;
                }
                Err(e) => {
                    if f.error.is_none() {
                        tracing::warn!(file = %path.display(), "cannot read: {e}");
                    }
                    f.error = Some(e.to_string());
                }
            }
            let key = path.display().to_string();
            let sources = f.sources.clone();
            for (mut block, cursor) in out.drain(..) {
                let f = self.followed.get_mut(&path).expect("listed above");
                let n = memchr::memchr_iter(b'\n', &block).count() as u64;
                f.lines += n;
                if n > 0 {
                    f.last_line = Some(jiff::Timestamp::now());
                }
                if let Some(c) = &cursor {
                    self.cursors.insert(key.clone(), c.clone());
                }
                let read_at = std::time::Instant::now();
                // Usually one source; a file two sources name goes to the jails of both.
                for (i, source) in sources.iter().enumerate() {
                    let msg = EngineMsg::Lines {
                        read_at,
                        source: source.clone(),
                        file: key.clone(),
                        block: if i + 1 == sources.len() {
                            std::mem::take(&mut block)
                        } else {
                            block.clone()
                        },
                        cursor: cursor.clone(),
                    };
                    if self.engine.send(msg).await.is_err() {
                        return false;
                    }
                }
            }
        }
        self.publish();
        more
    }

    fn publish(&self) {
        let mut by_source: BTreeMap<&str, SourceStatus> = BTreeMap::new();
        for p in &self.patterns {
            by_source.insert(
                p,
                SourceStatus {
                    source: p.clone(),
                    ..SourceStatus::default()
                },
            );
        }
        for (path, f) in &self.followed {
            for source in &f.sources {
                let s = by_source.entry(source).or_default();
                s.files.push(FileStatus {
                    path: path.display().to_string(),
                    offset: f.follower.cursor().map_or(0, |c| c.offset),
                    lag: f.follower.lag(),
                    lines: f.lines,
                    overlong: f.follower.overlong(),
                    last_line: f.last_line,
                });
                if let Some(e) = &f.error {
                    s.error = Some(format!("{}: {e}", path.display()));
                }
            }
        }
        *self.shared.sources.lock().unwrap() = by_source.into_values().collect();
    }
}

/// Reads standard input to its end, in blocks of complete lines.
async fn read_stdin(engine: mpsc::Sender<EngineMsg>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = crate::source::LineAssembler::default();
    let mut block = Vec::new();
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("standard input: {e}");
                break;
            }
        };
        lines.push(&buf[..n], &mut block);
        if !block.is_empty() {
            send_stdin(&engine, std::mem::take(&mut block)).await;
        }
    }
    lines.finish(&mut block);
    if !block.is_empty() {
        send_stdin(&engine, block).await;
    }
    if lines.overlong > 0 {
        tracing::warn!(
            count = lines.overlong,
            "standard input: lines over 1 MiB were skipped"
        );
    }
    tracing::info!("standard input closed");
}

async fn send_stdin(engine: &mpsc::Sender<EngineMsg>, block: Vec<u8>) {
    let _ = engine
        .send(EngineMsg::Lines {
            read_at: std::time::Instant::now(),
            source: STDIN.into(),
            file: STDIN.into(),
            block,
            cursor: None,
        })
        .await;
}

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

use super::containers::ContainerSource;
use super::engine::EngineMsg;
use super::protocol::{FileStatus, SourceStatus};
use super::Shared;
use crate::source::docker::ContainerSelect;
use crate::source::follow::FileFollower;
use crate::source::follow::FollowFrom;
use crate::source::journald::{self, JournalSelect};
use crate::source::MAX_LINE;
use crate::vocab::Cursor;

/// The source name of standard input.
pub const STDIN: &str = "-";

struct Followed {
    /// The configured sources naming this file (a path and a glob may both name it); its
    /// lines go to the jails of each.
    sources: Vec<String>,
    follower: FileFollower,
    lines: u64,
    error: Option<String>,
}

/// Sources that are streams from a program or an API rather than files.
fn is_stream(pattern: &str) -> bool {
    crate::config::is_stream_source(pattern)
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
    stream_status: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
    first_start: bool,
}

impl Sources {
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
            stream_status: shared.streams.clone(),
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
        for pattern in self.patterns.iter().filter(|p| !is_stream(p)) {
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
                let (follower, note) = FileFollower::resume(&path, self.cursors.get(&key), from);
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
            if let Some(c) = f.follower.cursor() {
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
        self.stream_status
            .lock()
            .unwrap()
            .retain(|source, _| configured.contains(source));
        for pattern in &self.patterns {
            if self.streams.contains_key(pattern) {
                continue;
            }
            if let Some(Ok(select)) = ContainerSelect::parse(pattern) {
                let cursors: HashMap<String, String> = self
                    .cursors
                    .iter()
                    .filter(|(k, _)| k.starts_with(pattern.as_str()))
                    .map(|(k, c)| {
                        (
                            k.clone(),
                            String::from_utf8_lossy(&c.fingerprint).into_owned(),
                        )
                    })
                    .collect();
                let task = tokio::spawn(
                    ContainerSource {
                        source: pattern.clone(),
                        select,
                        cursors: Arc::new(Mutex::new(cursors)),
                        from_start: self.first_start && self.from == FollowFrom::Start,
                        engine: self.engine.clone(),
                        status: self.stream_status.clone(),
                    }
                    .run(),
                );
                self.streams.insert(pattern.clone(), task);
                continue;
            }
            let Some(Ok(select)) = JournalSelect::parse(pattern) else {
                continue;
            };
            let cursor = self
                .cursors
                .get(pattern)
                .map(|c| String::from_utf8_lossy(&c.fingerprint).into_owned());
            let from_start = self.first_start && self.from == FollowFrom::Start;
            let task = tokio::spawn(read_journal(
                pattern.clone(),
                select,
                cursor,
                from_start,
                self.engine.clone(),
                self.stream_status.clone(),
            ));
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
                .poll(&mut |block, cursor| out.push((block.to_vec(), cursor)));
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
                f.lines += memchr::memchr_iter(b'\n', &block).count() as u64;
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
                });
                if let Some(e) = &f.error {
                    s.error = Some(format!("{}: {e}", path.display()));
                }
            }
        }
        *self.shared.sources.lock().unwrap() = by_source.into_values().collect();
    }
}

/// Follows the journal through `journalctl`, restarting it (after the last cursor) when it
/// exits, with a growing pause.
async fn read_journal(
    source: String,
    select: JournalSelect,
    mut cursor: Option<String>,
    from_start: bool,
    engine: mpsc::Sender<EngineMsg>,
    status: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
) {
    let mut pause = Duration::from_secs(1);
    let mut lines: u64 = 0;
    let mut overlong: u64 = 0;
    let set_status = |lines: u64, overlong: u64, error: Option<String>| {
        status.lock().unwrap().insert(
            source.clone(),
            SourceStatus {
                source: source.clone(),
                files: vec![FileStatus {
                    path: "journal".into(),
                    offset: 0,
                    lag: 0,
                    lines,
                    overlong,
                }],
                error,
            },
        );
    };
    set_status(0, 0, None);
    let mut first = true;
    loop {
        let args = select.args(cursor.as_deref(), first && from_start);
        first = false;
        let child = tokio::process::Command::new(journald::program())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("cannot run journalctl: {e}");
                tracing::warn!(%source, "{msg}; retrying in {pause:?}");
                set_status(lines, overlong, Some(msg));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        tracing::info!(%source, "following the journal");
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut entry = Vec::new();
        let mut block = Vec::new();
        loop {
            entry.clear();
            // An entry's JSON is the message escaped: up to six bytes per byte, and the
            // other fields.
            let fits = match read_line_within(&mut out, &mut entry, 6 * MAX_LINE + 65_536).await {
                Ok(None) | Err(_) => break,
                Ok(Some(fits)) => fits,
            };
            pause = Duration::from_secs(1);
            if !fits {
                overlong += 1;
                continue;
            }
            if let Some((line, c)) = journald::entry_to_line(&entry) {
                cursor = Some(c);
                // The rendered line, without its newline, within the cap all sources share.
                if line.len() > MAX_LINE + 1 {
                    overlong += 1;
                    continue;
                }
                block.extend_from_slice(&line);
                lines += 1;
            }
            if out.buffer().is_empty() && !block.is_empty() {
                let msg = EngineMsg::Lines {
                    read_at: std::time::Instant::now(),
                    source: source.clone(),
                    file: source.clone(),
                    block: std::mem::take(&mut block),
                    cursor: cursor.as_ref().map(|c| Cursor {
                        dev: 0,
                        ino: 0,
                        offset: 0,
                        fingerprint: c.as_bytes().to_vec(),
                    }),
                };
                if engine.send(msg).await.is_err() {
                    return;
                }
                set_status(lines, overlong, None);
            }
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        let status_code = child.wait().await.ok();
        let msg = format!(
            "journalctl ended ({}){}{}",
            status_code.map_or("killed".into(), |s| s.to_string()),
            if err.trim().is_empty() { "" } else { ": " },
            err.trim()
        );
        tracing::warn!(%source, "{msg}; restarting in {pause:?}");
        set_status(lines, overlong, Some(msg));
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// Reads one line (through its `\n`) into `buf`, keeping at most `max` bytes of it: `None` at
/// the end of the stream, else whether the whole line fit (a longer one is consumed to its
/// end and not kept).
async fn read_line_within<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    use tokio::io::AsyncBufReadExt;
    let mut fits = true;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (piece, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if fits && buf.len() + piece.len() <= max {
            buf.extend_from_slice(piece);
        } else {
            fits = false;
            buf.clear();
        }
        let n = piece.len();
        reader.consume(n);
        if done {
            return Ok(Some(fits));
        }
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

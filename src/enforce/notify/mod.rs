//! Notifiers: enforcers that block nothing and tell someone of each ban (a chat through a
//! webhook, a mailbox, AbuseIPDB).
//!
//! A notifier is an enforcer of kind [`Kind::Observer`](super::Kind::Observer): it takes every
//! jail's bans. Its [`Enforcer::apply`] only turns each ban into a [`Notice`] and puts it in
//! the notifier's own queue; a thread of its own ([`Outbox`]) delivers them through its
//! [`Channel`], so a receiver that is slow, down or rate-limiting delays nothing else: not
//! the engine, not the kernel enforcer (each enforcer has its own thread already, and this
//! one never waits on the network in it).
//!
//! The outbox batches: a notice arriving when the channel has been quiet for `digest_seconds`
//! goes at once, the next ones wait for the rest of that period and go together as one digest
//! message, so a burst of 500 bans makes two or three messages, not 500. A delivery that fails
//! is tried again with a doubling backoff (1 s, 2 s, 4 s, ... at most 5 minutes, no sooner than
//! a `Retry-After`), `retries` times, then dropped with an error in the log and in status.
//! The queue holds at most `queue` notices; beyond, new ones are counted as dropped.
//!
//! What a notice carries ([`Notice`]) is the same for every channel: the jail, the target,
//! the failures, when the ban began and ends, the node (this host's name) and the evidence
//! lines. The lines are attacker text: they reach a receiver only as a JSON string built by
//! serde_json, as a mail body built by lettre, or as a form field; each channel escapes what
//! its receiver would otherwise interpret (Markdown, mentions). Secrets (tokens, passwords,
//! webhook URLs) come from files that only their owner may read ([`read_secret`]).
//!
//! `webhook` posts JSON (presets for Slack, Discord, ntfy, Gotify, Matrix, or a generic
//! body); `email` sends mail over SMTP; `abuseipdb` reports each banned address.

pub mod abuseipdb;
pub mod email;
pub mod webhook;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;
use serde::Serialize;

use super::{BanOrder, Change, EnforceError, Enforcer, Failed, Key, RetryHint};
use crate::vocab::terminal::visible;
use crate::vocab::Target;

/// The longest evidence line a notice carries, in characters (the rest is cut, with `…`).
pub const EVIDENCE_CHARS: usize = 500;

/// The longest wait between two tries of a delivery.
const LONGEST_BACKOFF: Duration = Duration::from_secs(300);

/// How long stopping waits for the last delivery.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// One ban as a notifier tells it. Its JSON form is the `bans` item of the generic webhook
/// body (docs/notifications.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// The jail that banned (`manual` for a ban by hand).
    pub jail: String,
    /// The banned address or network, as moat prints it (`192.0.2.7`, `2001:db8::/64`).
    pub target: String,
    /// The target as a network, for channels that need its parts.
    #[serde(skip)]
    pub net: IpNet,
    /// The failures that led to the ban.
    pub failures: u32,
    /// When the ban began.
    pub started: Timestamp,
    /// When it ends; `None`: never.
    pub until: Option<Timestamp>,
    /// The host that banned (its host name).
    pub node: String,
    /// The client's last matched lines, oldest first: as read, but with control characters
    /// shown as visible escapes (`\r`, `\x1b`) and each line at most [`EVIDENCE_CHARS`].
    pub evidence: Vec<String>,
}

impl Notice {
    /// The notice for a ban placed on `node`.
    pub fn of(ban: &BanOrder, node: &str) -> Notice {
        Notice {
            jail: ban.jail.clone(),
            target: Target(ban.target).to_string(),
            net: ban.target,
            failures: ban.failures,
            started: ban.started,
            until: ban.until,
            node: node.to_string(),
            evidence: ban.evidence.iter().map(|l| evidence_line(l)).collect(),
        }
    }

    /// "until 2026-12-02T14:00:00Z" or "forever".
    pub fn until_text(&self) -> String {
        self.until
            .map_or("forever".to_string(), |u| format!("until {u}"))
    }
}

/// An evidence line as text: invalid UTF-8 replaced, control characters made visible, cut to
/// [`EVIDENCE_CHARS`].
pub fn evidence_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = visible(&text);
    match text.char_indices().nth(EVIDENCE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// "3 bans (sshd 2, portainer 1)": the count and the jails, for titles and subjects (jail
/// names come from the configuration, never from a log).
pub fn summary(notices: &[Notice]) -> String {
    let mut jails: BTreeMap<&str, usize> = BTreeMap::new();
    for n in notices {
        *jails.entry(n.jail.as_str()).or_default() += 1;
    }
    let jails: Vec<String> = jails.iter().map(|(j, c)| format!("{j} {c}")).collect();
    let count = notices.len();
    format!(
        "{count} ban{} ({})",
        if count == 1 { "" } else { "s" },
        jails.join(", ")
    )
}

/// This host's name, as notices carry it.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub use super::read_secret;

/// [`read_secret`] as the configuration is checked: a relative path is resolved against the
/// configuration file only later, so it is checked when the daemon builds the notifier.
pub fn check_secret(path: &Path) -> Result<(), String> {
    if path.is_relative() {
        return Ok(());
    }
    read_secret(path).map(|_| ())
}

/// What is wrong with an `http://` or `https://` URL, in words.
pub fn check_url(url: &str, what: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("https" | "http") => {}
        _ => {
            return Err(format!(
                "{what} {url:?} must start with https:// (or http://)"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{what} {url:?} has no host"));
    }
    Ok(())
}

/// The wait a `Retry-After` value asks for (delta-seconds; an HTTP date or anything else: a
/// minute).
pub fn retry_after(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// How the outbox delivers: the digest period, the tries, the queue's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// At most one message per this period; the notices in between make one digest.
    pub digest: Duration,
    /// How many more times a failed delivery is tried.
    pub retries: u32,
    /// The most notices waiting; beyond, new ones are dropped (and counted).
    pub queue: usize,
    /// The wait before the first retry (doubling after each).
    pub first_retry: Duration,
}

/// The default digest period: a minute.
pub fn default_digest_seconds() -> u64 {
    60
}

/// The default number of retries of a failed delivery.
pub fn default_retries() -> u32 {
    5
}

/// The default queue size.
pub fn default_queue() -> usize {
    10_000
}

/// A delivery that did not (wholly) succeed.
#[derive(Debug)]
pub struct Undelivered {
    /// The notices still to deliver (tried again when the error allows).
    pub left: Vec<Notice>,
    /// Messages that did go out before the failure.
    pub sent: u64,
    /// What went wrong.
    pub error: String,
    /// Whether trying again can help.
    pub retry: RetryHint,
}

impl Undelivered {
    /// All of `batch` failed with `error`.
    pub fn all(batch: Vec<Notice>, error: impl Into<String>, retry: RetryHint) -> Undelivered {
        Undelivered {
            left: batch,
            sent: 0,
            error: error.into(),
            retry,
        }
    }
}

/// Where a notifier's messages go. Runs on the notifier's own thread: it may block.
pub trait Channel: Send + 'static {
    /// Delivers a batch of notices (one digest message, or what the channel makes of them);
    /// the number of messages sent.
    fn deliver(&mut self, batch: Vec<Notice>) -> Result<u64, Undelivered>;

    /// What status should show of the channel beyond the outbox's counts.
    fn remark(&self) -> Option<String> {
        None
    }
}

/// What the outbox did, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages (requests, mails) that went out.
    pub messages: u64,
    /// Notices delivered in them.
    pub notices: u64,
    /// Deliveries that failed (each try).
    pub failures: u64,
    /// Notices given up on (retries spent, an error that cannot pass, a full queue).
    pub dropped: u64,
    /// The last error, and when.
    pub last_error: Option<(Timestamp, String)>,
    /// The channel's own remark.
    pub remark: Option<String>,
}

struct State {
    queue: VecDeque<Notice>,
    stop: bool,
    stats: Stats,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A notifier's queue and the thread that empties it through a [`Channel`].
pub struct Outbox {
    name: &'static str,
    node: String,
    shared: Arc<Shared>,
    queue_cap: usize,
    /// The bans it was told of and not yet lifted.
    held: HashSet<Key>,
    thread: Option<JoinHandle<()>>,
    done: Option<mpsc::Receiver<()>>,
}

impl Outbox {
    /// Starts the delivering thread of notifier `name`.
    pub fn start(name: &'static str, channel: Box<dyn Channel>, delivery: Delivery) -> Outbox {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                stop: false,
                stats: Stats::default(),
            }),
            wake: Condvar::new(),
        });
        let (done_tx, done) = mpsc::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("notify-{name}"))
            .spawn(move || {
                deliver_loop(name, &sh, channel, delivery);
                let _ = done_tx.send(());
            })
            .expect("spawn a notifier thread");
        Outbox {
            name,
            node: node_name(),
            shared,
            queue_cap: delivery.queue.max(1),
            held: HashSet::new(),
            thread: Some(thread),
            done: Some(done),
        }
    }

    /// The node name notices carry (this host's name unless set).
    pub fn with_node(mut self, node: &str) -> Outbox {
        self.node = node.to_string();
        self
    }

    /// What it did so far.
    pub fn stats(&self) -> Stats {
        self.shared.state.lock().unwrap().stats.clone()
    }

    /// Queues a notice; never blocks on delivery.
    pub fn push(&self, notice: Notice) {
        let mut st = self.shared.state.lock().unwrap();
        if st.queue.len() >= self.queue_cap {
            st.stats.dropped += 1;
            if st.stats.dropped.is_power_of_two() {
                tracing::warn!(
                    notifier = self.name,
                    dropped = st.stats.dropped,
                    "queue full: notices dropped"
                );
            }
            return;
        }
        st.queue.push_back(notice);
        drop(st);
        self.shared.wake.notify_one();
    }
}

impl Enforcer for Outbox {
    fn name(&self) -> &'static str {
        self.name
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        for change in batch {
            match change {
                Change::Ban(b) => {
                    // A ban told once: a second order for a key held (a re-sent change) is
                    // not a new ban. Another node's ban is that node's to tell.
                    if self.held.insert(b.key()) && b.node.is_none() {
                        self.push(Notice::of(b, &self.node));
                    }
                }
                Change::Unban(k) => {
                    self.held.remove(k);
                }
            }
        }
        Vec::new()
    }

    fn held(&mut self) -> Result<HashSet<Key>, EnforceError> {
        Ok(self.held.clone())
    }

    /// The bans in force at start were told when they were placed: nothing to send again.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
        self.held = wanted.iter().map(BanOrder::key).collect();
        Ok(Vec::new())
    }

    fn remark(&self) -> Option<String> {
        let s = self.stats();
        let mut text = format!(
            "{} message{} sent ({} bans), {} failed, {} dropped",
            s.messages,
            if s.messages == 1 { "" } else { "s" },
            s.notices,
            s.failures,
            s.dropped
        );
        if let Some(r) = &s.remark {
            text.push_str("; ");
            text.push_str(r);
        }
        if let Some((at, e)) = &s.last_error {
            text.push_str(&format!("; last error at {at}: {e}"));
        }
        Some(text)
    }
}

impl Drop for Outbox {
    /// Delivers what is queued (one try, without waiting for the digest period), waiting at
    /// most a few seconds for it.
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().stop = true;
        self.shared.wake.notify_one();
        let finished = self
            .done
            .take()
            .is_some_and(|d| d.recv_timeout(STOP_WAIT).is_ok());
        if let Some(t) = self.thread.take() {
            if finished {
                let _ = t.join();
            }
        }
    }
}

/// The wait before try `tried + 1` of a delivery.
fn backoff(first: Duration, tried: u32) -> Duration {
    first
        .saturating_mul(1 << tried.saturating_sub(1).min(16))
        .min(LONGEST_BACKOFF)
}

fn deliver_loop(name: &'static str, shared: &Shared, mut channel: Box<dyn Channel>, d: Delivery) {
    let mut last_sent: Option<Instant> = None;
    let mut pending: Vec<Notice> = Vec::new();
    let mut tried = 0u32;
    let mut not_before: Option<Instant> = None;
    loop {
        let mut st = shared.state.lock().unwrap();
        loop {
            if st.stop {
                break;
            }
            if st.queue.is_empty() && pending.is_empty() {
                st = shared.wake.wait(st).unwrap();
                continue;
            }
            let due = [last_sent.map(|t| t + d.digest), not_before]
                .into_iter()
                .flatten()
                .max();
            let now = Instant::now();
            match due {
                Some(t) if t > now => st = shared.wake.wait_timeout(st, t - now).unwrap().0,
                _ => break,
            }
        }
        let stopping = st.stop;
        pending.extend(st.queue.drain(..));
        drop(st);
        if pending.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let batch = std::mem::take(&mut pending);
        let count = batch.len() as u64;
        last_sent = Some(Instant::now());
        let result = channel.deliver(batch);
        let mut st = shared.state.lock().unwrap();
        st.stats.remark = channel.remark();
        match result {
            Ok(sent) => {
                st.stats.messages += sent;
                st.stats.notices += count;
                tried = 0;
                not_before = None;
            }
            Err(u) => {
                tried += 1;
                st.stats.messages += u.sent;
                st.stats.notices += count - u.left.len() as u64;
                st.stats.failures += 1;
                st.stats.last_error = Some((Timestamp::now(), u.error.clone()));
                let wait = match u.retry {
                    _ if u.left.is_empty() => None,
                    RetryHint::Never => None,
                    _ if stopping || tried > d.retries => None,
                    RetryHint::Later => Some(backoff(d.first_retry, tried)),
                    RetryHint::After(after) => Some(backoff(d.first_retry, tried).max(after)),
                };
                match wait {
                    Some(wait) => {
                        tracing::warn!(
                            notifier = name,
                            tried,
                            notices = u.left.len(),
                            "delivery failed, trying again in {wait:?}: {}",
                            u.error
                        );
                        pending = u.left;
                        not_before = Some(Instant::now() + wait);
                    }
                    None => {
                        tracing::error!(
                            notifier = name,
                            tried,
                            notices = u.left.len(),
                            "delivery failed, giving up: {}",
                            u.error
                        );
                        st.stats.dropped += u.left.len() as u64;
                        tried = 0;
                        not_before = None;
                    }
                }
            }
        }
        drop(st);
        if stopping {
            return;
        }
    }
}

/// Implements [`Enforcer`] for a notifier type holding an [`Outbox`] in its field `0`.
macro_rules! outbox_enforcer {
    ($ty:ty) => {
        impl $crate::enforce::Enforcer for $ty {
            fn name(&self) -> &'static str {
                <$ty as $crate::enforce::registry::Registered>::NAME
            }
            fn apply(&mut self, batch: &[$crate::enforce::Change]) -> Vec<$crate::enforce::Failed> {
                self.0.apply(batch)
            }
            fn held(
                &mut self,
            ) -> Result<
                std::collections::HashSet<$crate::enforce::Key>,
                $crate::enforce::EnforceError,
            > {
                self.0.held()
            }
            fn converge(
                &mut self,
                wanted: &[$crate::enforce::BanOrder],
            ) -> Result<Vec<$crate::enforce::Change>, $crate::enforce::EnforceError> {
                self.0.converge(wanted)
            }
            fn remark(&self) -> Option<String> {
                self.0.remark()
            }
        }
    };
}
pub(crate) use outbox_enforcer;

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every batch; fails the first `fail` deliveries.
    struct Recorder {
        batches: Arc<Mutex<Vec<usize>>>,
        fail: u32,
    }

    impl Channel for Recorder {
        fn deliver(&mut self, batch: Vec<Notice>) -> Result<u64, Undelivered> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(Undelivered::all(batch, "HTTP 500", RetryHint::Later));
            }
            self.batches.lock().unwrap().push(batch.len());
            Ok(1)
        }
    }

    fn ban(n: u32) -> Change {
        Change::Ban(BanOrder {
            target: format!("192.0.2.{n}/32").parse().unwrap(),
            jail: "sshd".into(),
            started: Timestamp::UNIX_EPOCH,
            until: None,
            failures: 3,
            ports: None,
            evidence: vec![b"sshd: Failed password for root from 192.0.2.1\r\x1b[2J"
                .to_vec()
                .into_boxed_slice()]
            .into(),
            node: None,
        })
    }

    #[test]
    fn another_nodes_ban_is_not_told_here() {
        let Change::Ban(mut remote) = ban(7) else {
            unreachable!()
        };
        remote.node = Some("node2".into());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut out = Outbox::start(
            "test",
            Box::new(Recorder {
                batches: batches.clone(),
                fail: 0,
            }),
            delivery(0, 0),
        );
        out.apply(&[Change::Ban(remote), ban(8)]);
        std::thread::sleep(Duration::from_millis(300));
        drop(out);
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 1);
    }

    fn delivery(digest_ms: u64, retries: u32) -> Delivery {
        Delivery {
            digest: Duration::from_millis(digest_ms),
            retries,
            queue: 100,
            first_retry: Duration::from_millis(50),
        }
    }

    #[test]
    fn a_burst_makes_a_digest_and_apply_never_waits() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut out = Outbox::start(
            "test",
            Box::new(Recorder {
                batches: batches.clone(),
                fail: 0,
            }),
            delivery(300, 0),
        );
        let t = Instant::now();
        for n in 1..=50 {
            assert!(out.apply(&[ban(n)]).is_empty());
        }
        assert!(t.elapsed() < Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(700));
        let b = batches.lock().unwrap().clone();
        assert!(b.len() <= 2, "{b:?}");
        assert_eq!(b.iter().sum::<usize>(), 50);
        // The same ban again is not news; an unban then a ban is.
        out.apply(&[ban(1)]);
        out.apply(&[
            Change::Unban(Key::all_ports("192.0.2.2/32".parse().unwrap())),
            ban(2),
        ]);
        drop(out);
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 51);
    }

    #[test]
    fn failures_are_retried_then_dropped() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let mut out = Outbox::start(
            "test",
            Box::new(Recorder {
                batches: batches.clone(),
                fail: 2,
            }),
            delivery(0, 1),
        );
        out.apply(&[ban(1)]);
        std::thread::sleep(Duration::from_millis(300));
        let s = out.stats();
        assert_eq!((s.failures, s.dropped, s.messages), (2, 1, 0));
        assert!(out.remark().unwrap().contains("HTTP 500"));
        out.apply(&[ban(2)]);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(out.stats().messages, 1);
        assert_eq!(*batches.lock().unwrap(), vec![1]);
    }

    #[test]
    fn evidence_is_visible_text_and_cut() {
        assert_eq!(
            Notice::of(
                match &ban(1) {
                    Change::Ban(b) => b,
                    _ => unreachable!(),
                },
                "host"
            )
            .evidence,
            vec![r"sshd: Failed password for root from 192.0.2.1\r\x1b[2J".to_string()]
        );
        let long = evidence_line(&[b'a'; 2000]);
        assert_eq!(long.chars().count(), EVIDENCE_CHARS + 1);
        assert_eq!(evidence_line(b"\xff ok"), "\u{fffd} ok");
    }

    #[test]
    fn secrets_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_secret(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        assert!(check_url("ftp://example.org/x", "url").is_err());
        assert!(check_url("https://", "url").is_err());
        assert!(check_url("https://hooks.example.org/x", "url").is_ok());
    }
}

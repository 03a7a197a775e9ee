//! Running the enforcers: one thread each, so a slow command or a remote API never delays
//! detection or another enforcer.
//!
//! Each thread takes every change queued since its last batch and applies them as one batch.
//! A change that fails is retried as its enforcer's [`Retry`] policy says (and no sooner than
//! a rate limit's Retry-After, not at all when the failure says it cannot pass); what failed,
//! when, and when the next try is, shows in `moat status`.
//!
//! Which jails' bans an enforcer takes follows from its [`Kind`]: with jails behind Cloudflare,
//! an edge enforcer takes theirs, a host enforcer everybody else's, an observer all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use jiff::Timestamp;

use prometheus_client::metrics::histogram::Histogram;

use super::protocol::EnforcerStatus;
use std::collections::HashSet;

use crate::enforce::registry::Built;
use crate::enforce::{BanOrder, Change, EnforceError, Enforcer, Key, Kind, Retry, RetryHint};

/// A batch this large (the active bans at start-up) leaves megabytes freed behind it.
pub(crate) const BIG_BATCH: usize = 10_000;

enum Msg {
    /// Changes, and when the line that caused them was read (for the latency histogram).
    Apply(Vec<Change>, Option<Instant>),
    Reconcile(Arc<Vec<BanOrder>>),
    /// The periodic drift check. It carries no bans: building 100,000 of them every 2 s to
    /// use them once in a blue moon cost more than the check; a state found gone is flagged
    /// (`lost`) and the engine sends the bans to restore.
    Check,
    /// A burst of changes is over (a fleet's resync): give the memory it freed back to the
    /// system once what was queued before is applied.
    GiveBack,
    Stop,
}

/// Which jails' bans an enforcer takes. Bans by hand (jail `manual`) go everywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Route {
    /// Every jail's bans (the default).
    #[default]
    All,
    /// Only these jails' bans: an edge enforcer (Cloudflare) when jails sit behind Cloudflare.
    Only(HashSet<String>),
    /// Every jail's bans but these: a host enforcer when jails sit behind Cloudflare.
    Except(HashSet<String>),
}

impl Route {
    fn takes(&self, jail: &str) -> bool {
        jail == "manual"
            || match self {
                Route::All => true,
                Route::Only(j) => j.contains(jail),
                Route::Except(j) => !j.contains(jail),
            }
    }
}

struct Runner {
    name: &'static str,
    kind: Kind,
    drifts: bool,
    route: Route,
    /// The bans it was sent and not yet lifted, so that an unban goes where its ban went
    /// (kept only for a routed enforcer).
    sent: Mutex<HashSet<Key>>,
    tx: mpsc::Sender<Msg>,
    status: Arc<Mutex<EnforcerStatus>>,
    /// Set by its thread when the drift check found its state gone: it waits for the bans.
    lost: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The running enforcers.
#[derive(Default)]
pub struct Enforcers {
    runners: Vec<Runner>,
    latency: Option<Histogram>,
}

impl Enforcers {
    /// Enforcers that record how long a ban took to reach them in `latency`.
    pub fn with_latency(latency: Histogram) -> Enforcers {
        Enforcers {
            runners: Vec::new(),
            latency: Some(latency),
        }
    }

    /// Starts a thread for an enforcer the registry built.
    pub fn add(&mut self, built: Built) {
        let Built {
            mut enforcer,
            kind,
            retry,
            detail,
        } = built;
        let (tx, rx) = mpsc::channel();
        let name = enforcer.name();
        let drifts = enforcer.drifts();
        let status = Arc::new(Mutex::new(EnforcerStatus {
            name: name.to_string(),
            detail,
            ..EnforcerStatus::default()
        }));
        let st = status.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let latency = self.latency.clone();
        let thread = std::thread::Builder::new()
            .name(format!("enforce-{name}"))
            .spawn(move || run(enforcer.as_mut(), rx, &st, &flag, retry, latency))
            .expect("spawn an enforcer thread");
        self.runners.push(Runner {
            name,
            kind,
            drifts,
            route: Route::All,
            sent: Mutex::new(HashSet::new()),
            tx,
            status,
            lost,
            thread: Some(thread),
        });
    }

    /// Applies changes not caused by a line (a ban by hand, an expiry, a reload): no latency to
    /// record.
    pub fn apply(&self, changes: Vec<Change>) {
        self.apply_read_at(changes, None);
    }

    /// Applies changes caused by a line read at `read_at`.
    pub fn apply_read_at(&self, changes: Vec<Change>, read_at: Option<Instant>) {
        for r in &self.runners {
            let mine: Vec<Change> = {
                let mut sent = r.sent.lock().unwrap();
                changes
                    .iter()
                    .filter(|c| match c {
                        // Remembered only for a routed enforcer: one that takes every ban
                        // holds every active one (100,000 keys not kept twice).
                        Change::Ban(b) => {
                            r.route.takes(&b.jail) && {
                                if r.route != Route::All {
                                    sent.insert(b.key());
                                }
                                true
                            }
                        }
                        // Routed: only where the ban went. Unrouted: everywhere, as an
                        // unban of something not held is a no-op.
                        Change::Unban(k) => r.route == Route::All || sent.remove(k),
                    })
                    .cloned()
                    .collect()
            };
            if mine.is_empty() {
                continue;
            }
            r.status.lock().unwrap().queued += mine.len();
            let _ = r.tx.send(Msg::Apply(mine, read_at));
        }
    }

    /// Routes the bans of `behind` (the jails behind Cloudflare) to the edge enforcers only,
    /// every other jail's to the host enforcers, all to the observers; no routing when it is
    /// empty. Returns
    /// whether anything changed (the caller then reconciles).
    pub fn route_behind_cloudflare(&mut self, behind: &HashSet<String>) -> bool {
        let mut changed = false;
        for r in &mut self.runners {
            let route = match (behind.is_empty(), r.kind) {
                (true, _) | (false, Kind::Observer) => Route::All,
                (false, Kind::Edge) => Route::Only(behind.clone()),
                (false, Kind::Host) => Route::Except(behind.clone()),
            };
            changed |= r.route != route;
            r.route = route;
        }
        changed
    }

    /// The active bans `r` takes, remembered as sent.
    fn wanted_by(r: &Runner, wanted: &[BanOrder]) -> Arc<Vec<BanOrder>> {
        let mine: Vec<BanOrder> = wanted
            .iter()
            .filter(|b| r.route.takes(&b.jail))
            .cloned()
            .collect();
        *r.sent.lock().unwrap() = match r.route {
            Route::All => HashSet::new(),
            Route::Only(_) | Route::Except(_) => mine.iter().map(BanOrder::key).collect(),
        };
        Arc::new(mine)
    }

    /// Live views of each enforcer's status, for readers outside the engine (metrics).
    pub fn status_handles(&self) -> Vec<Arc<Mutex<EnforcerStatus>>> {
        self.runners.iter().map(|r| r.status.clone()).collect()
    }

    /// Brings every enforcer to exactly the bans of `wanted` its route takes.
    pub fn reconcile(&self, wanted: Vec<BanOrder>) {
        for r in &self.runners {
            let _ = r.tx.send(Msg::Reconcile(Enforcers::wanted_by(r, &wanted)));
        }
    }

    /// Lifts bans that ended while moat was stopped, each `(jail, key)` from the enforcers
    /// whose route takes its jail, once per key. For an enforcer that cannot list what it
    /// holds (`exec`) this is the only way it hears of them; for the others an unban of what
    /// they no longer hold is a no-op.
    pub fn lift_ended(&self, ended: &[(String, Key)]) {
        for r in &self.runners {
            let keys: std::collections::BTreeSet<&Key> = ended
                .iter()
                .filter(|(jail, _)| r.route.takes(jail))
                .map(|(_, k)| k)
                .collect();
            if keys.is_empty() {
                continue;
            }
            let mine: Vec<Change> = keys.into_iter().cloned().map(Change::Unban).collect();
            r.status.lock().unwrap().queued += mine.len();
            let _ = r.tx.send(Msg::Apply(mine, None));
        }
    }

    /// Asks every enforcer to give back the memory a burst freed once it has applied it.
    pub fn give_back_after_burst(&self) {
        for r in &self.runners {
            let _ = r.tx.send(Msg::GiveBack);
        }
    }

    /// Checks the enforcers whose state can drift (kernel rulesets); run every few seconds.
    /// One that finds its state gone waits for [`Enforcers::restore_lost`].
    pub fn check_drifting(&self) {
        for r in self.runners.iter().filter(|r| r.drifts) {
            let _ = r.tx.send(Msg::Check);
        }
    }

    /// Sends the bans to the enforcers whose drift check found their state gone; `wanted`
    /// (the active bans) is built only when one did.
    pub fn restore_lost(&self, wanted: impl FnOnce() -> Vec<BanOrder>) {
        let lost: Vec<&Runner> = self
            .runners
            .iter()
            .filter(|r| r.lost.swap(false, Ordering::SeqCst))
            .collect();
        if lost.is_empty() {
            return;
        }
        let wanted = wanted();
        for r in lost {
            let _ = r.tx.send(Msg::Reconcile(Enforcers::wanted_by(r, &wanted)));
        }
    }

    /// Whether any enforcer needs the periodic drift check.
    pub fn any_drifting(&self) -> bool {
        self.runners.iter().any(|r| r.drifts)
    }

    /// Each enforcer's [`EnforcerStatus`], in the order they were added.
    pub fn status(&self) -> Vec<EnforcerStatus> {
        self.runners
            .iter()
            .map(|r| r.status.lock().unwrap().clone())
            .collect()
    }

    /// The enforcers the active ban with `key` was sent to, each with whether it has changes
    /// waiting (the ban may not be in place yet).
    pub fn holders(&self, key: &Key) -> Vec<(&'static str, bool)> {
        self.runners
            .iter()
            .filter(|r| r.route == Route::All || r.sent.lock().unwrap().contains(key))
            .map(|r| (r.name, r.status.lock().unwrap().queued > 0))
            .collect()
    }

    /// The enforcers' names, in the order they were added.
    pub fn names(&self) -> Vec<&'static str> {
        self.runners.iter().map(|r| r.name).collect()
    }

    /// Lets each enforcer finish what is queued (retries are abandoned), then joins it.
    pub fn stop(&mut self) {
        for r in &self.runners {
            let _ = r.tx.send(Msg::Stop);
        }
        for r in &mut self.runners {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A change waiting for its next try.
struct Pending {
    change: Change,
    attempts: u32,
    at: Instant,
}

fn run(
    enforcer: &mut dyn Enforcer,
    rx: mpsc::Receiver<Msg>,
    status: &Mutex<EnforcerStatus>,
    lost: &AtomicBool,
    policy: Retry,
    latency: Option<Histogram>,
) {
    let mut retries: VecDeque<Pending> = VecDeque::new();
    let mut stopping = false;
    loop {
        let wait = retries
            .iter()
            .map(|r| r.at.saturating_duration_since(Instant::now()))
            .min();
        let first = match wait {
            _ if stopping => None,
            Some(w) => match rx.recv_timeout(w) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        // Everything queued goes in one batch.
        let mut batch: Vec<(Change, u32)> = Vec::new();
        let mut take = |m: Msg,
                        batch: &mut Vec<(Change, u32)>,
                        stopping: &mut bool,
                        check: &mut bool,
                        give_back: &mut bool| match m {
            Msg::Apply(c, read_at) => {
                if let (Some(h), Some(at)) = (&latency, read_at) {
                    h.observe(at.elapsed().as_secs_f64());
                }
                batch.extend(c.into_iter().map(|c| (c, 0)))
            }
            Msg::Reconcile(wanted) => {
                let t = Instant::now();
                match enforcer.converge(&wanted) {
                    Ok(changes) => {
                        tracing::debug!(enforcer = enforcer.name(), wanted = wanted.len(), changes = changes.len(), took = ?t.elapsed(), "converge");
                        batch.extend(changes.into_iter().map(|c| (c, 0)))
                    }
                    Err(e) => {
                        tracing::error!(enforcer = enforcer.name(), "cannot converge: {e}");
                        note_error(status, &e);
                        batch.extend(wanted.iter().map(|b| (Change::Ban(b.clone()), 0)));
                    }
                }
            }
            // Only the latest check of those queued runs: a slow one (a remote API) must not
            // let checks pile up ahead of the changes.
            Msg::Check => *check = true,
            Msg::GiveBack => *give_back = true,
            Msg::Stop => *stopping = true,
        };
        let (mut check, mut give_back) = (false, false);
        if let Some(m) = first {
            take(m, &mut batch, &mut stopping, &mut check, &mut give_back);
        }
        while let Ok(m) = rx.try_recv() {
            take(m, &mut batch, &mut stopping, &mut check, &mut give_back);
        }
        if check {
            match enforcer.intact() {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(
                        enforcer = enforcer.name(),
                        "state gone: waiting for the bans to restore"
                    );
                    lost.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::warn!(enforcer = enforcer.name(), "drift check failed: {e}");
                    note_error(status, &e);
                }
            }
        }
        let now = Instant::now();
        while retries.front().is_some_and(|r| r.at <= now) {
            let r = retries.pop_front().unwrap();
            batch.push((r.change, r.attempts));
        }
        if !batch.is_empty() {
            // Moved out, not copied: a copy of a start-up's 100,000 orders would double what
            // the batch holds.
            let (changes, attempts): (Vec<Change>, Vec<u32>) = batch.drain(..).unzip();
            let failed = enforcer.apply(&changes);
            let mut st = status.lock().unwrap();
            st.applied += (changes.len() - failed.len()) as u64;
            for f in &failed {
                let (change, tried) = (&changes[f.index], attempts[f.index]);
                let tried = tried + 1;
                st.failed += 1;
                st.last_error = Some(format!("{change}: {}", f.error));
                st.last_error_at = Some(Timestamp::now());
                let delay = match f.error.retry {
                    RetryHint::Never => None,
                    _ if stopping || !policy.allows(tried) => None,
                    RetryHint::Later => Some(policy.backoff(tried)),
                    RetryHint::After(d) => Some(policy.backoff(tried).max(d)),
                };
                if let Some(delay) = delay {
                    tracing::warn!(enforcer = enforcer.name(), %change, tried, "failed, retrying in {delay:?}: {}", f.error);
                    retries.push_back(Pending {
                        change: change.clone(),
                        attempts: tried,
                        at: Instant::now() + delay,
                    });
                } else {
                    st.gave_up += 1;
                    tracing::error!(enforcer = enforcer.name(), %change, tried, "giving up: {}", f.error);
                }
            }
            drop(st);
            give_back |= changes.len() >= BIG_BATCH;
            // Given back once the batch itself is freed too.
            drop(changes);
            batch = Vec::new();
        }
        if give_back {
            give_back_freed_memory();
        }
        retries.make_contiguous().sort_by_key(|r| r.at);
        let mut st = status.lock().unwrap();
        st.repairs = enforcer.repairs();
        st.remark = enforcer.remark();
        st.queued = retries.len();
        st.next_retry = retries.front().map(|r| {
            Timestamp::now()
                .checked_add(r.at.saturating_duration_since(Instant::now()))
                .unwrap_or(Timestamp::MAX)
        });
        drop(st);
        if stopping {
            break;
        }
    }
}

/// Returns memory freed after a big batch to the system. glibc keeps freed memory in each
/// thread's arena: after loading 100,000 bans at start-up (the ledger's rows, the orders, the
/// nft script), moat held 134 MB resident of which 55 MB were free; trimmed, 79 MB. Called
/// by the thread that finished its part of a batch (an enforcer, the engine after a fleet's
/// resync): whichever is last gives back what the others freed too.
pub(crate) fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes the allocator's locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn note_error(status: &Mutex<EnforcerStatus>, e: &EnforceError) {
    let mut st = status.lock().unwrap();
    st.last_error = Some(e.to_string());
    st.last_error_at = Some(Timestamp::now());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::Failed;
    use std::collections::HashSet;
    use std::time::Duration;

    /// Fails every change the first `fail` times it is applied.
    struct Flaky {
        fail: u32,
        calls: Arc<Mutex<Vec<usize>>>,
    }

    impl Enforcer for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
            self.calls.lock().unwrap().push(batch.len());
            if self.fail > 0 {
                self.fail -= 1;
                return (0..batch.len())
                    .map(|index| Failed {
                        index,
                        error: EnforceError::later("down"),
                    })
                    .collect();
            }
            Vec::new()
        }
        fn held(&mut self) -> Result<HashSet<crate::enforce::Key>, EnforceError> {
            Ok(HashSet::new())
        }
    }

    fn built(enforcer: impl Enforcer + 'static, retry: Retry) -> Built {
        Built {
            enforcer: Box::new(enforcer),
            kind: Kind::Host,
            retry,
            detail: None,
        }
    }

    #[test]
    fn failures_are_retried_and_shown() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut e = Enforcers::default();
        e.add(built(
            Flaky {
                fail: 1,
                calls: calls.clone(),
            },
            Retry::times(3),
        ));
        e.apply(vec![Change::Unban(crate::enforce::Key::all_ports(
            "192.0.2.1/32".parse().unwrap(),
        ))]);
        std::thread::sleep(Duration::from_millis(200));
        let st = &e.status()[0];
        assert_eq!((st.failed, st.queued, st.applied), (1, 1, 0));
        assert!(st.last_error.as_deref().unwrap().contains("down"));
        assert!(st.next_retry.is_some());
        std::thread::sleep(Duration::from_millis(1200));
        let st = &e.status()[0];
        assert_eq!((st.applied, st.queued), (1, 0));
        e.stop();
        assert_eq!(*calls.lock().unwrap(), vec![1, 1]);
    }
}

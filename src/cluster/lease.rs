//! The Cloudflare lease: one node of a fleet at a time writes to a Cloudflare account and
//! list, so the fleet spends one request budget, not one per node.
//!
//! The lease is a Redis key ([`crate::enforce::cloudflare::lease::lease_key`]) holding the
//! holder's node name with a TTL ([`LEASE_TTL`]). Every [`RENEW_EVERY`], the holder extends
//! it with a script that extends only a key still naming it; the others try `SET NX` and, when
//! it is taken, read who holds it. A holder killed stops renewing, so another node takes over
//! within the TTL and one renewal; a holder stopped cleanly deletes the key (again only if it
//! still names it) and hands over at the next try of another node.
//!
//! The result goes to the [`Gate`] that the Cloudflare enforcer reads. When Redis stays away
//! for as long as a lease lives, nobody can know who holds it: the gate turns
//! [`Role::Alone`] (bans only, unbans wait), not `Writer` (two writers could delete each
//! other's items) nor `Standby` (nobody might write at all).
//!
//! The task has its own connection, made by the cluster's [`Link`] with its timeouts, and
//! bounds every command by [`CALL_TIMEOUT`]: a Redis that does not answer must not keep a
//! node thinking it holds a lease that ran out.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::watch;

use super::link::{Backoff, Link};
use super::status::SharedStatus;
use crate::enforce::cloudflare::lease::{Gate, Role};

/// How long a lease lives without renewal: how long a fleet goes without a Cloudflare
/// writer when the holder dies. Long enough for a few missed renewals on a loaded host
/// (every [`RENEW_EVERY`]), short enough that bans placed meanwhile wait seconds, not minutes.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews the lease, and the others try to take it.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// The longest a lease command may take; a slower answer counts as Redis unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Extends the lease when it still names this node (`ARGV[1]`): 1 when extended.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes the lease when it still names this node: 1 when deleted.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";

/// The lease task's inputs.
pub struct LeaseTask {
    /// The link to Redis (the cluster's settings and password).
    pub link: Link,
    /// This node's name: the lease's value when it holds it.
    pub node: String,
    /// The lease's key.
    pub key: String,
    /// Where the outcome goes: the Cloudflare enforcer reads it.
    pub gate: Gate,
    /// The cluster's status, where `moat status` shows the lease.
    pub status: SharedStatus,
}

/// Why a round did not decide the role.
type RoundError = String;

impl LeaseTask {
    /// Takes, renews or watches the lease until `shutdown` turns true, then releases it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut held = false;
        // From start: Redis has not answered yet, and only a lease's lifetime without it
        // makes this node alone.
        let mut last_ok = Instant::now();
        let mut backoff = Backoff::default();
        self.show();
        loop {
            let pause = match self.round(&mut conn, &mut held).await {
                Ok(role) => {
                    last_ok = Instant::now();
                    backoff.reset();
                    self.gate.set(role);
                    RENEW_EVERY
                }
                Err(e) => {
                    conn = None;
                    // A holder's lease may run out in Redis a little before this node sees
                    // a lifetime pass (the last renewal was sent before its answer came):
                    // it stops deleting a call's timeout early.
                    let away = last_ok.elapsed();
                    let limit = if held {
                        LEASE_TTL - CALL_TIMEOUT
                    } else {
                        LEASE_TTL
                    };
                    tracing::debug!(key = %self.key, "Cloudflare lease: Redis unreachable ({e})");
                    if away >= limit {
                        held = false;
                        self.gate.set(Role::Alone);
                    }
                    // The cluster's backoff, but at most a renewal period: regaining the
                    // lease when Redis is back should not wait ten seconds.
                    backoff.next_pause().min(RENEW_EVERY)
                }
            };
            self.show();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => break,
            }
        }
        // Stopping: no more writes from here, and the lease goes at once so that another
        // node takes over at its next try rather than after the TTL.
        self.gate.set(Role::Pending);
        if let (true, Some(c)) = (held, conn.as_mut()) {
            let released = self.script(c, RELEASE, 0).await;
            match released {
                Ok(1) => tracing::info!(key = %self.key, "Cloudflare lease released"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(key = %self.key, "Cloudflare lease not released ({e}): another node takes over when it runs out")
                }
            }
        }
        self.show();
    }

    /// One look at the lease: the role it gives this node.
    async fn round(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        held: &mut bool,
    ) -> Result<Role, RoundError> {
        if conn.is_none() {
            let c = tokio::time::timeout(
                super::link::CONNECT_TIMEOUT + CALL_TIMEOUT,
                self.link.connect_one(),
            )
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| e.to_string())?;
            *conn = Some(c);
        }
        let c = conn.as_mut().expect("connected");
        let ttl = LEASE_TTL.as_millis() as u64;
        if *held {
            if self.script(c, RENEW, ttl).await? == 1 {
                return Ok(Role::Writer);
            }
            *held = false;
            tracing::warn!(key = %self.key, "Cloudflare lease lost (it ran out before it was renewed)");
        }
        // Twice: the lease may run out between the SET and the GET.
        for _ in 0..2 {
            let mut set = redis::cmd("SET");
            set.arg(&self.key)
                .arg(&self.node)
                .arg("NX")
                .arg("PX")
                .arg(ttl);
            if !matches!(self.call(c, set).await?, Value::Nil) {
                *held = true;
                return Ok(Role::Writer);
            }
            let mut get = redis::cmd("GET");
            get.arg(&self.key);
            let holder = match self.call(c, get).await? {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::SimpleString(s) => s,
                _ => continue,
            };
            if holder == self.node {
                // Still ours from before a restart that came within the TTL.
                *held = self.script(c, RENEW, ttl).await? == 1;
                if *held {
                    return Ok(Role::Writer);
                }
                continue;
            }
            let holder = if super::settings::valid_name(&holder) {
                holder
            } else {
                "(a name that is not a node's)".into()
            };
            return Ok(Role::Standby { holder });
        }
        Err("the lease changed hands while it was read".into())
    }

    async fn call(
        &self,
        c: &mut MultiplexedConnection,
        cmd: redis::Cmd,
    ) -> Result<Value, RoundError> {
        tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<Value>(c))
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())
    }

    /// Runs `script` on the lease with this node's name and `ms`: its integer answer.
    async fn script(
        &self,
        c: &mut MultiplexedConnection,
        script: &str,
        ms: u64,
    ) -> Result<i64, RoundError> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(script)
            .arg(1)
            .arg(&self.key)
            .arg(&self.node)
            .arg(ms);
        match self.call(c, eval).await? {
            Value::Int(n) => Ok(n),
            other => Err(format!("unexpected answer to the lease script: {other:?}")),
        }
    }

    /// Puts the lease into the cluster's status.
    fn show(&self) {
        let role = self.gate.role();
        self.status.lock().unwrap().cloudflare_lease = Some(format!(
            "{}: {}",
            self.key,
            match role {
                Role::Writer => format!("held by this node ({})", self.node),
                Role::Standby { holder } => format!("held by {holder}"),
                Role::Alone => "unknown (Redis unreachable): adding bans only".into(),
                Role::Pending => "not known yet".into(),
            }
        ));
    }
}

//! The cluster task: one session with Redis after another, with a backoff between them.
//!
//! A session: (1) writes what this node queued while Redis was away (the engine's
//! [`Outbound`] channel is the queue), (2) makes the active set agree with this node's own
//! bans (Redis restarted empty, or missed an unban: the node's ledger is its truth), (3)
//! decides where to read the log from: the saved position, or a resync from the active set
//! when the log was trimmed past it or Redis lost it, (4) then follows the log with a
//! blocking read (push, not poll) while publishing the engine's decisions in batches and
//! writing a heartbeat every two seconds. Any error ends the session; the engine goes on
//! enforcing what it has, and `moat status` says the cluster is degraded and why.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::link::{ping, Backoff, Connections, Link};
use super::settings::ClusterSettings;
use super::status::{NodeStatus, SharedStatus};
use super::wire::{
    self, id_key, id_ms, Event, FleetBan, Heartbeat, Kind, BANS_KEY, EPOCH_KEY, LOG_KEY, NODES_KEY,
    NODE_KEY_PREFIX,
};
use super::{Inbound, Lift, Outbound};

/// How long a blocking read waits for a new entry before it asks again.
const BLOCK_MS: u64 = 2000;
/// Entries read at once.
const READ_COUNT: usize = 1000;
/// Decisions written in one round trip.
const BATCH: usize = 1000;
/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long after Redis lost its state a node looks at the active set again: time for every
/// other node to notice (its marker is checked at each heartbeat) and write its bans again,
/// also one that was between connection attempts (at most 10 s apart).
const SECOND_LOOK: Duration = Duration::from_secs(30);
/// How long its marker lives without a heartbeat.
const MARKER_TTL_MS: u64 = 15_000;

/// The cluster task's inputs.
pub struct ClusterTask {
    /// The link to Redis.
    pub link: Link,
    /// `[cluster]`.
    pub settings: ClusterSettings,
    /// This node's name.
    pub node: String,
    /// The last stream id the engine applied (saved with the cursors), if any.
    pub cursor: Option<String>,
    /// Where received decisions go (to the engine).
    pub inbound: mpsc::Sender<Inbound>,
    /// What the engine decided, to publish.
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    /// What `moat status` shows.
    pub status: SharedStatus,
    /// Where the delay of each decision received is recorded (the metrics' histogram).
    pub lag: Histogram,
    /// Redis's epoch as this node last saw it (none before its first session).
    pub epoch: Option<String>,
    /// When to look at the active set again after Redis lost its state, and when it was.
    pub second_look: Option<(tokio::time::Instant, i64)>,
}

impl ClusterTask {
    /// Runs sessions until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        let position = Arc::new(Mutex::new(self.cursor.take()));
        {
            let mut s = self.status.lock().unwrap();
            s.node = self.node.clone();
            s.redis = self.link.describe();
            s.degraded = Some("connecting to Redis".into());
        }
        loop {
            let session = async {
                let conns = self.link.connect().await.map_err(|e| e.to_string())?;
                backoff.reset();
                tracing::info!(redis = %self.link.describe(), node = %self.node, "cluster: connected");
                self.session(conns, position.clone()).await
            };
            let result = tokio::select! {
                r = session => r,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = result {
                let pause = backoff.next_pause();
                tracing::warn!(
                    "cluster: Redis unreachable ({e}); enforcing local and last-known remote \
                     bans, trying again in {pause:?}"
                );
                {
                    let mut s = self.status.lock().unwrap();
                    s.reachable = false;
                    s.degraded = Some(format!("Redis unreachable: {e}"));
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }

    async fn session(
        &mut self,
        conns: Connections,
        position: Arc<Mutex<Option<String>>>,
    ) -> Result<(), String> {
        let Connections {
            mut commands,
            follow,
        } = conns;
        let e = |e: redis::RedisError| e.to_string();
        // (1) Whether Redis lost its state since this node last saw it: its epoch changed.
        // The log cannot say so once another node has written to it again.
        let epoch = self.epoch(&mut commands).await.map_err(e)?;
        let lost = self.epoch.as_ref().is_some_and(|seen| *seen != epoch);
        self.epoch = Some(epoch);
        // (2) What was decided while Redis was away.
        self.publish_pending(&mut commands).await.map_err(e)?;
        // (3) Where the log begins and ends, then the active set, in this order: a decision
        // published in between is in the set and after the end, read twice but never missed
        // (a ban and its log entry are written in one transaction). The set is read once for
        // the refill and a resync (which takes only other nodes' bans, which the refill
        // leaves alone): with 100,000 bans a read costs a third of a second.
        let first = edge_id(&mut commands, "XRANGE", "-", "+")
            .await
            .map_err(e)?;
        let last = edge_id(&mut commands, "XREVRANGE", "+", "-")
            .await
            .map_err(e)?;
        let held = read_active(&mut commands, &self.status).await.map_err(e)?;
        // (4) The active set agrees with this node's own bans.
        self.refill(&mut commands, &held).await?;
        // (5) Where to read from.
        let (from, lost_at) = self
            .start_position(&position, (first, last), held, lost)
            .await?;
        if let Some(at) = lost_at {
            // Kept across sessions: a session that fails before it is due leaves it pending.
            self.second_look = Some((tokio::time::Instant::now() + SECOND_LOOK, at));
        }
        *position.lock().unwrap() = Some(from.clone());
        {
            let mut s = self.status.lock().unwrap();
            s.reachable = true;
            s.degraded = None;
        }
        // (6) Follow, publish, beat.
        let mut reader = tokio::spawn(follow_log(
            follow,
            from,
            self.node.clone(),
            self.inbound.clone(),
            self.status.clone(),
            self.lag.clone(),
            position,
        ));
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats: u64 = 0;
        let result = loop {
            tokio::select! {
                r = &mut reader => break match r {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) => Err("the engine stopped".into()),
                    Err(e) => Err(format!("the log reader failed: {e}")),
                },
                msg = self.outbound.recv() => {
                    let Some(msg) = msg else { break Err("the engine stopped".into()) };
                    let mut batch = vec![msg];
                    while batch.len() < BATCH {
                        match self.outbound.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    if let Err(err) = self.write(&mut commands, batch).await {
                        break Err(err.to_string());
                    }
                }
                _ = beat.tick() => {
                    beats += 1;
                    if let Err(err) = self.heartbeat(&mut commands, beats).await {
                        break Err(err);
                    }
                    if let Some((due, lost_at)) = self.second_look {
                        if tokio::time::Instant::now() >= due {
                            if let Err(err) = self.look_again(&mut commands, lost_at).await {
                                break Err(err);
                            }
                            self.second_look = None;
                        }
                    }
                }
            }
        };
        reader.abort();
        result
    }

    /// Writes everything queued now.
    async fn publish_pending(&mut self, conn: &mut MultiplexedConnection) -> RedisResult<()> {
        loop {
            let mut batch = Vec::new();
            while batch.len() < BATCH {
                match self.outbound.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return Ok(());
            }
            self.write(conn, batch).await?;
        }
    }

    /// Publishes decisions in one transaction: each a log entry, and the active set changed.
    /// A failure leaves them unwritten; the refill of the next session writes what they
    /// changed (the ledger is the truth).
    async fn write(
        &mut self,
        conn: &mut MultiplexedConnection,
        batch: Vec<Outbound>,
    ) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut published = 0;
        for msg in &batch {
            match msg {
                Outbound::Publish(ev) => {
                    self.add(&mut pipe, ev);
                    published += 1;
                }
                Outbound::Forget(id) => {
                    pipe.cmd("HDEL").arg(BANS_KEY).arg(id).ignore();
                }
            }
        }
        let r: RedisResult<()> = pipe.query_async(conn).await;
        let mut s = self.status.lock().unwrap();
        s.queued = 0;
        if r.is_ok() {
            s.published += published;
        }
        r
    }

    fn add(&self, pipe: &mut redis::Pipeline, ev: &Event) {
        let c = pipe
            .cmd("XADD")
            .arg(LOG_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.settings.log_max_len)
            .arg("*");
        for (k, v) in ev.fields() {
            c.arg(k).arg(v);
        }
        c.ignore();
        match ev.kind {
            Kind::Ban => pipe
                .cmd("HSET")
                .arg(BANS_KEY)
                .arg(ev.ban.id())
                .arg(ev.ban.to_json())
                .ignore(),
            Kind::Unban => pipe.cmd("HDEL").arg(BANS_KEY).arg(ev.ban.id()).ignore(),
        };
    }

    /// Makes the active set agree with this node's own bans: those Redis lacks are published
    /// again, those it holds that this node lifted are unbanned, ended ones are removed.
    async fn refill(
        &mut self,
        conn: &mut MultiplexedConnection,
        held: &HashMap<String, FleetBan>,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.inbound
            .send(Inbound::OwnBans(tx))
            .await
            .map_err(|_| "the engine stopped".to_string())?;
        let own = rx.await.map_err(|_| "the engine stopped".to_string())?;
        let now = jiff::Timestamp::now().as_millisecond();
        let own_ids: HashSet<String> = own.iter().map(FleetBan::id).collect();
        let mut events = Vec::new();
        let mut stale = Vec::new();
        for (id, ban) in held {
            if ban.until.is_some_and(|u| u <= now) {
                stale.push(id.clone());
            } else if ban.node == self.node && !own_ids.contains(id) {
                events.push(Event {
                    kind: Kind::Unban,
                    ban: ban.clone(),
                    by: self.node.clone(),
                });
            }
        }
        for ban in own {
            if !held.contains_key(&ban.id()) {
                events.push(Event {
                    kind: Kind::Ban,
                    ban,
                    by: self.node.clone(),
                });
            }
        }
        if !events.is_empty() || !stale.is_empty() {
            tracing::info!(
                published = events.len(),
                removed = stale.len(),
                "cluster: the active set brought in line with this node's bans"
            );
        }
        let mut batch: Vec<Outbound> = stale.into_iter().map(Outbound::Forget).collect();
        batch.extend(events.into_iter().map(Outbound::Publish));
        for chunk in batch.chunks_mut(BATCH) {
            let part: Vec<Outbound> = chunk
                .iter_mut()
                .map(|m| std::mem::replace(m, Outbound::Forget(String::new())))
                .collect();
            self.write(conn, part).await.map_err(|e| e.to_string())?;
        }
        self.set_marker(conn, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Sets this node's marker; with `only_if_there`, whether it was still there.
    async fn set_marker(
        &self,
        conn: &mut MultiplexedConnection,
        only_if_there: bool,
    ) -> RedisResult<bool> {
        let mut c = redis::cmd("SET");
        c.arg(format!("{NODE_KEY_PREFIX}{}", self.node))
            .arg(jiff::Timestamp::now().as_millisecond())
            .arg("PX")
            .arg(MARKER_TTL_MS);
        if only_if_there {
            c.arg("XX");
        }
        let v: Value = c.query_async(conn).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// Where to read the log from, given its first and last ids: the saved position when the
    /// log still holds what follows it; otherwise (first start, trimmed past it, Redis lost
    /// it) the active set `held` (read after those ids) is handed to the engine as a resync
    /// and reading starts from the log's end. When Redis lost its state, also the time of
    /// that resync, for the second look.
    async fn start_position(
        &mut self,
        position: &Arc<Mutex<Option<String>>>,
        (first, last): (Option<String>, Option<String>),
        held: HashMap<String, FleetBan>,
        lost: bool,
    ) -> Result<(String, Option<i64>), String> {
        let saved = position.lock().unwrap().clone();
        let (why, lift) = match (&saved, &first, &last) {
            _ if lost => ("Redis lost its state (a new epoch)", Lift::Nothing),
            (None, _, _) => ("first start", Lift::Missing),
            (Some(s), None, _) if s != "0-0" => {
                ("the log is empty (Redis restarted?)", Lift::Nothing)
            }
            (Some(s), Some(f), _) if id_key(f) > id_key(s) => (
                "the log was trimmed past this node's position",
                Lift::Missing,
            ),
            (Some(s), _, Some(l)) if id_key(l) < id_key(s) => (
                "the log is behind this node's position (Redis restarted?)",
                Lift::Nothing,
            ),
            _ => return Ok((saved.expect("matched above"), None)),
        };
        let from = last.unwrap_or_else(|| "0-0".into());
        let now = jiff::Timestamp::now().as_millisecond();
        let bans = self.others_active(held, now);
        tracing::info!(
            reason = why,
            bans = bans.len(),
            "cluster: resync from the active set"
        );
        self.send_resync(bans, Some(from.clone()), lift).await?;
        Ok((from, (lift == Lift::Nothing).then_some(now)))
    }

    /// Redis's epoch, written now if Redis has none (it is empty).
    async fn epoch(&self, conn: &mut MultiplexedConnection) -> RedisResult<String> {
        let mine = format!("{}/{}", self.node, jiff::Timestamp::now().as_nanosecond());
        let _: Value = redis::cmd("SET")
            .arg(EPOCH_KEY)
            .arg(&mine)
            .arg("NX")
            .query_async(conn)
            .await?;
        let now: Option<String> = redis::cmd("GET").arg(EPOCH_KEY).query_async(conn).await?;
        Ok(now.unwrap_or(mine))
    }

    /// The second look after Redis lost its state: the remote bans that started before then
    /// and that no node has written again since end.
    async fn look_again(
        &mut self,
        conn: &mut MultiplexedConnection,
        lost_at: i64,
    ) -> Result<(), String> {
        let held = read_active(conn, &self.status)
            .await
            .map_err(|e| e.to_string())?;
        let now = jiff::Timestamp::now().as_millisecond();
        let bans = self.others_active(held, now);
        tracing::info!(
            bans = bans.len(),
            "cluster: second look at the active set after Redis lost its state"
        );
        self.send_resync(bans, None, Lift::MissingBefore(lost_at))
            .await
    }

    /// The other nodes' bans of `held` not yet run out.
    fn others_active(&self, held: HashMap<String, FleetBan>, now: i64) -> Vec<FleetBan> {
        held.into_values()
            .filter(|b| b.node != self.node && b.until.is_none_or(|u| u > now))
            .collect()
    }

    async fn send_resync(
        &mut self,
        bans: Vec<FleetBan>,
        stream_id: Option<String>,
        lift: Lift,
    ) -> Result<(), String> {
        self.inbound
            .send(Inbound::Resync {
                bans,
                stream_id,
                lift,
            })
            .await
            .map_err(|_| "the engine stopped".to_string())
    }

    async fn heartbeat(
        &mut self,
        conn: &mut MultiplexedConnection,
        beats: u64,
    ) -> Result<(), String> {
        let e = |e: redis::RedisError| e.to_string();
        let rtt = ping(conn).await.map_err(e)?;
        if !self.set_marker(conn, true).await.map_err(e)? {
            tracing::warn!("cluster: this node's marker is gone from Redis (restarted empty?): writing its bans again");
            let held = read_active(conn, &self.status).await.map_err(e)?;
            self.refill(conn, &held).await?;
        }
        let (own, lag) = {
            let s = self.status.lock().unwrap();
            (s.own_bans, s.lag_ms)
        };
        let now = jiff::Timestamp::now().as_millisecond();
        let me = Heartbeat {
            at: now,
            bans: own,
            lag_ms: lag,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let json = serde_json::to_string(&me).expect("serializes");
        let _: () = redis::cmd("HSET")
            .arg(NODES_KEY)
            .arg(&self.node)
            .arg(json)
            .query_async(conn)
            .await
            .map_err(e)?;
        let all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(NODES_KEY)
            .query_async(conn)
            .await
            .map_err(e)?;
        let mut nodes: Vec<NodeStatus> = all
            .iter()
            .filter_map(|(k, v)| {
                let name = std::str::from_utf8(k).ok()?;
                if !super::settings::valid_name(name) {
                    return None;
                }
                let h = Heartbeat::parse(v)?;
                Some(NodeStatus {
                    node: name.to_string(),
                    last_heartbeat: h.at,
                    alive: now - h.at < MARKER_TTL_MS as i64,
                    bans: h.bans,
                    lag_ms: h.lag_ms,
                })
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        // Trim by age once a minute (by length at each write).
        if beats.is_multiple_of(30) {
            let min = now - self.settings.log_max_age.0.as_millis() as i64;
            let _: Value = redis::cmd("XTRIM")
                .arg(LOG_KEY)
                .arg("MINID")
                .arg("~")
                .arg(min.max(0))
                .query_async(conn)
                .await
                .map_err(e)?;
        }
        let mut s = self.status.lock().unwrap();
        s.latency_ms = Some(rtt.as_secs_f64() * 1000.0);
        s.nodes = nodes;
        s.reachable = true;
        s.degraded = None;
        Ok(())
    }
}

/// The id of the log's first (`XRANGE - +`) or last (`XREVRANGE + -`) entry.
async fn edge_id(
    conn: &mut MultiplexedConnection,
    cmd: &str,
    a: &str,
    b: &str,
) -> RedisResult<Option<String>> {
    let v: Value = redis::cmd(cmd)
        .arg(LOG_KEY)
        .arg(a)
        .arg(b)
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(entries(v).into_iter().next().map(|(id, _)| id))
}

/// The active set, each entry checked; refused ones are counted and skipped.
async fn read_active(
    conn: &mut MultiplexedConnection,
    status: &SharedStatus,
) -> RedisResult<HashMap<String, FleetBan>> {
    let all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(BANS_KEY)
        .query_async(conn)
        .await?;
    let mut out = HashMap::with_capacity(all.len());
    for (k, v) in all {
        match wire::parse_active(&k, &v) {
            Ok(b) => {
                out.insert(b.id(), b);
            }
            Err(why) => {
                let key = crate::vocab::terminal::visible(&String::from_utf8_lossy(
                    &k[..k.len().min(100)],
                ))
                .into_owned();
                tracing::warn!(%key, "cluster: active-set entry refused: {why}");
                status
                    .lock()
                    .unwrap()
                    .refuse(format!("active-set entry {key}: {why}"));
            }
        }
    }
    Ok(out)
}

/// Follows the log from `from`, handing other nodes' decisions to the engine; ends with the
/// error that ended the read.
async fn follow_log(
    mut conn: MultiplexedConnection,
    mut from: String,
    node: String,
    inbound: mpsc::Sender<Inbound>,
    status: SharedStatus,
    lag_seconds: Histogram,
    position: Arc<Mutex<Option<String>>>,
) -> Result<(), String> {
    loop {
        let v: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("STREAMS")
            .arg(LOG_KEY)
            .arg(&from)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let batch = match v {
            Value::Nil => continue,
            Value::Array(streams) => streams
                .into_iter()
                .flat_map(|s| match s {
                    Value::Array(mut kv) if kv.len() == 2 => entries(kv.pop().expect("2")),
                    _ => Vec::new(),
                })
                .collect::<Vec<_>>(),
            Value::Map(streams) => streams
                .into_iter()
                .flat_map(|(_, e)| entries(e))
                .collect::<Vec<_>>(),
            other => return Err(format!("unexpected XREAD reply: {other:?}")),
        };
        let now = jiff::Timestamp::now().as_millisecond();
        for (id, fields) in batch {
            from = id.clone();
            let event = match fields {
                Some(f) => Event::parse(&f),
                None => Err(wire::Refused::Malformed("not a list of fields".into())),
            };
            match event {
                Ok(ev) if ev.by == node => {}
                Ok(ev) => {
                    let lag = id_ms(&id).map(|ms| (now - ms).max(0) as u64);
                    if let Some(ms) = lag {
                        lag_seconds.observe(ms as f64 / 1000.0);
                    }
                    {
                        let mut s = status.lock().unwrap();
                        s.received += 1;
                        s.lag_ms = lag.or(s.lag_ms);
                    }
                    if inbound
                        .send(Inbound::Event {
                            event: ev,
                            stream_id: id.clone(),
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(why) => {
                    tracing::warn!(entry = %id, "cluster: log entry refused: {why}");
                    status
                        .lock()
                        .unwrap()
                        .refuse(format!("log entry {id}: {why}"));
                }
            }
            *position.lock().unwrap() = Some(from.clone());
        }
    }
}

/// The entries of an XRANGE-shaped reply: each id with its fields (`None`: not fields).
#[allow(clippy::type_complexity)]
fn entries(v: Value) -> Vec<(String, Option<Vec<(Vec<u8>, Vec<u8>)>>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop().expect("2");
            let id = match pair.pop().expect("1") {
                Value::BulkString(b) => String::from_utf8(b).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            let fields = match fields {
                Value::Array(flat) if flat.len().is_multiple_of(2) => {
                    let mut out = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    let mut ok = true;
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        match (k, v) {
                            (Value::BulkString(k), Value::BulkString(v)) => out.push((k, v)),
                            _ => ok = false,
                        }
                    }
                    ok.then_some(out)
                }
                _ => None,
            };
            Some((id, fields))
        })
        .collect()
}

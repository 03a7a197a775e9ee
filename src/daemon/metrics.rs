//! Prometheus metrics, served where `[daemon] metrics` says (loopback, or an address written
//! there explicitly, which the daemon logs).
//!
//! Counters and the latency histogram are updated where things happen (the engine, the
//! enforcer threads); gauges that describe state (source lag, enforcer queues) are read from
//! the shared status at scrape time, and so are the enforcers' totals (applied, errors,
//! repairs), which are counters: they only grow, and a scrape adds what grew since the last.
//!
//! The HTTP side is written here rather than pulled in as a server framework: it answers one
//! `GET /metrics` on loopback, reads at most 8 KiB of request with a timeout, and closes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Shared;
use crate::cluster::status::SharedStatus;

/// The label of a per-source metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source's name, as its jail's `sources` writes it.
    pub source: String,
}

/// The label of a per-jail metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JailLabel {
    /// The jail's name.
    pub jail: String,
}

/// The label of a per-enforcer metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnforcerLabel {
    /// The enforcer's name (`nftables`, `cloudflare`, ...).
    pub enforcer: String,
}

/// Every metric moat exports.
pub struct Metrics {
    /// `moat_lines_read_total`: lines read, per source.
    pub lines: Family<SourceLabel, Counter>,
    /// `moat_source_lag_bytes`: bytes written to a followed file and not read yet, per source; set
    /// at scrape time.
    pub lag: Family<SourceLabel, Gauge>,
    /// `moat_matches_total`: failures counted, per jail.
    pub matches: Family<JailLabel, Counter>,
    /// `moat_bans_total`: bans decided, per jail.
    pub bans: Family<JailLabel, Counter>,
    /// `moat_active_bans`: bans in force now.
    pub active_bans: Gauge,
    /// `moat_enforcer_applied_total`: changes an enforcer applied; grown from its totals at scrape
    /// time.
    pub enforcer_applied: Family<EnforcerLabel, Counter>,
    /// `moat_enforcer_errors_total`: changes an enforcer failed to apply, each attempt counted.
    pub enforcer_errors: Family<EnforcerLabel, Counter>,
    /// `moat_enforcer_queue`: changes waiting for an enforcer, retries included; set at scrape
    /// time.
    pub enforcer_queue: Family<EnforcerLabel, Gauge>,
    /// `moat_enforcer_repairs_total`: times an enforcer found its state gone or changed and
    /// restored it.
    pub enforcer_repairs: Family<EnforcerLabel, Counter>,
    /// `moat_refused_bans_total`: bans the safety rules refused (own addresses, loopback, too
    /// wide), per jail.
    pub refused: Family<JailLabel, Counter>,
    /// Times the port policy was found gone or changed and restored.
    pub ports_repairs: Counter,
    /// Published container ports the port policy blocks.
    pub ports_blocked: Gauge,
    /// From reading the line that completed a window to the enforcer receiving the ban.
    pub ban_latency: Histogram,
    /// `moat_cluster_lag_seconds`: from another node's decision entering the shared log to
    /// this node receiving it.
    pub cluster_lag: Histogram,
    /// `moat_cluster_published_total`: decisions this node published to the fleet.
    cluster_published: Counter,
    /// `moat_cluster_received_total`: other nodes' decisions received.
    cluster_received: Counter,
    /// `moat_cluster_refused_total`: entries of the shared state refused (malformed, hostile,
    /// or a target the safety rules refuse here).
    cluster_refused: Counter,
    /// `moat_cluster_reachable`: 1 while Redis answers.
    cluster_reachable: Gauge,
    /// `moat_cluster_queued`: decisions waiting to be published (Redis unreachable).
    cluster_queued: Gauge,
    /// `moat_cluster_remote_bans`: other nodes' bans in force here.
    cluster_remote_bans: Gauge,
    /// The cluster's status, once this node joined a fleet: the cluster metrics are read
    /// from it at scrape time (and exported only then).
    cluster: OnceLock<SharedStatus>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `moat_` prefix.
    pub fn new() -> Metrics {
        let m = Metrics {
            lines: Family::default(),
            lag: Family::default(),
            matches: Family::default(),
            bans: Family::default(),
            active_bans: Gauge::default(),
            enforcer_applied: Family::default(),
            enforcer_errors: Family::default(),
            enforcer_queue: Family::default(),
            enforcer_repairs: Family::default(),
            refused: Family::default(),
            ports_repairs: Counter::default(),
            ports_blocked: Gauge::default(),
            // 50 µs to ~3 s.
            ban_latency: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            // 1 ms to ~16 s.
            cluster_lag: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            cluster_published: Counter::default(),
            cluster_received: Counter::default(),
            cluster_refused: Counter::default(),
            cluster_reachable: Gauge::default(),
            cluster_queued: Gauge::default(),
            cluster_remote_bans: Gauge::default(),
            cluster: OnceLock::new(),
            registry: Registry::with_prefix("moat"),
        };
        let mut r = Registry::with_prefix("moat");
        r.register("lines_read", "Lines read per source", m.lines.clone());
        r.register(
            "source_lag_bytes",
            "Bytes written to a followed file and not read yet",
            m.lag.clone(),
        );
        r.register("matches", "Failures counted per jail", m.matches.clone());
        r.register("bans", "Bans decided per jail", m.bans.clone());
        r.register("active_bans", "Bans in force", m.active_bans.clone());
        r.register(
            "enforcer_applied",
            "Changes an enforcer applied",
            m.enforcer_applied.clone(),
        );
        r.register(
            "enforcer_errors",
            "Changes an enforcer failed to apply (each attempt)",
            m.enforcer_errors.clone(),
        );
        r.register(
            "enforcer_queue",
            "Changes waiting for an enforcer, retries included",
            m.enforcer_queue.clone(),
        );
        r.register(
            "enforcer_repairs",
            "Times an enforcer found its state gone or changed (a ruleset flush) and restored it",
            m.enforcer_repairs.clone(),
        );
        r.register(
            "refused_bans",
            "Bans refused by the safety rules (own addresses, loopback, too wide)",
            m.refused.clone(),
        );
        r.register(
            "ports_repairs",
            "Times the port policy was found gone or changed (a flush, a reload) and restored",
            m.ports_repairs.clone(),
        );
        r.register(
            "ports_blocked_publications",
            "Ports published by containers or services that the port policy blocks",
            m.ports_blocked.clone(),
        );
        r.register(
            "ban_latency_seconds",
            "From reading the failure that completes a window to the enforcer receiving the ban",
            m.ban_latency.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// From now on the cluster's metrics are exported, read from `status` at each scrape.
    pub fn join_fleet(&mut self, status: SharedStatus) {
        let r = &mut self.registry;
        r.register(
            "cluster_lag_seconds",
            "From another node's decision entering the shared log to this node receiving it",
            self.cluster_lag.clone(),
        );
        r.register(
            "cluster_published",
            "Decisions this node published to the fleet",
            self.cluster_published.clone(),
        );
        r.register(
            "cluster_received",
            "Decisions of other nodes received",
            self.cluster_received.clone(),
        );
        r.register(
            "cluster_refused",
            "Entries of the shared state refused (malformed, hostile, or refused by the safety rules)",
            self.cluster_refused.clone(),
        );
        r.register(
            "cluster_reachable",
            "1 while Redis answers, 0 while the fleet is degraded",
            self.cluster_reachable.clone(),
        );
        r.register(
            "cluster_queued",
            "Decisions waiting to be published (Redis unreachable)",
            self.cluster_queued.clone(),
        );
        r.register(
            "cluster_remote_bans",
            "Bans of other nodes in force here",
            self.cluster_remote_bans.clone(),
        );
        let _ = self.cluster.set(status);
    }

    /// The text exposition, after refreshing the gauges read from `shared`.
    pub fn render(&self, shared: &Shared, enforcers: &[super::protocol::EnforcerStatus]) -> String {
        for s in shared.sources.lock().unwrap().iter() {
            let lag: u64 = s.files.iter().map(|f| f.lag).sum();
            self.lag
                .get_or_create(&SourceLabel {
                    source: s.source.clone(),
                })
                .set(lag as i64);
        }
        for e in enforcers {
            let l = EnforcerLabel {
                enforcer: e.name.clone(),
            };
            catch_up(&self.enforcer_applied.get_or_create(&l), e.applied);
            catch_up(&self.enforcer_errors.get_or_create(&l), e.failed);
            self.enforcer_queue.get_or_create(&l).set(e.queued as i64);
            catch_up(&self.enforcer_repairs.get_or_create(&l), e.repairs);
        }
        if let Some(c) = self.cluster.get() {
            let c = c.lock().unwrap().clone();
            catch_up(&self.cluster_published, c.published);
            catch_up(&self.cluster_received, c.received);
            catch_up(&self.cluster_refused, c.refused);
            self.cluster_reachable.set(i64::from(c.reachable));
            self.cluster_queued.set(c.queued as i64);
            self.cluster_remote_bans.set(c.remote_bans as i64);
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Brings a counter up to a total counted elsewhere (an enforcer's status). A total that went
/// down (the enforcer was rebuilt by a reload) adds nothing: a counter never goes back.
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    enforcers: Arc<dyn Fn() -> Vec<super::protocol::EnforcerStatus> + Send + Sync>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, shared, enforcers) = (metrics.clone(), shared.clone(), enforcers.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            // Read the request head: up to the blank line, 8 KiB, or 5 s.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match stream.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            let response = if read.is_err() {
                return;
            } else if buf[..n].starts_with(b"GET /metrics ") || buf[..n].starts_with(b"GET / ") {
                let body = metrics.render(&shared, &enforcers());
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_counters_and_states_are_gauges() {
        let m = Metrics::new();
        let shared = Shared {
            started: jiff::Timestamp::now(),
            config: String::new(),
            warnings: Default::default(),
            sources: Default::default(),
            streams: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
            ports: Default::default(),
        };
        let mut e = super::super::protocol::EnforcerStatus {
            name: "nftables".into(),
            applied: 5,
            failed: 2,
            queued: 3,
            repairs: 1,
            ..Default::default()
        };
        let text = m.render(&shared, std::slice::from_ref(&e));
        for line in [
            "# TYPE moat_enforcer_applied counter",
            "moat_enforcer_applied_total{enforcer=\"nftables\"} 5",
            "# TYPE moat_enforcer_errors counter",
            "moat_enforcer_errors_total{enforcer=\"nftables\"} 2",
            "# TYPE moat_enforcer_repairs counter",
            "moat_enforcer_repairs_total{enforcer=\"nftables\"} 1",
            "# TYPE moat_enforcer_queue gauge",
            "moat_enforcer_queue{enforcer=\"nftables\"} 3",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        // A scrape adds what grew; a total that went down (a rebuilt enforcer) adds nothing.
        e.failed = 4;
        e.applied = 1;
        let text = m.render(&shared, &[e]);
        assert!(text.contains("moat_enforcer_errors_total{enforcer=\"nftables\"} 4"));
        assert!(text.contains("moat_enforcer_applied_total{enforcer=\"nftables\"} 5"));
    }
}

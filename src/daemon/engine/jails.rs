//! The engine's detection side: the configured jails on the [pipeline](crate::pipeline), one
//! route per configured source, and the daemon's sink, which keeps the recent lines of each
//! client (the evidence stored with a ban) and counts matches for the metrics.

use std::collections::{HashMap, VecDeque};

use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;

use super::super::metrics::{JailLabel, Metrics, SourceLabel};
use crate::config::JailConfig;
use crate::detect::{Filter, Proxies};
use crate::jail::{BanDecision, Jail};
use crate::ledger::{JailCheckpoint, NewBan, Progress, SAMPLE_LINES, SAMPLE_LINE_MAX};
use crate::pipeline::{JailStage, Pipeline, Route, RouteState, Sink, Timing};
use crate::vocab::{ClientKey, Ports};

/// Matched lines kept per jail for the samples stored with a ban.
const SAMPLE_RING: usize = 256;

/// One jail as the engine runs it.
pub struct JailRuntime {
    /// Its configuration.
    pub config: JailConfig,
    /// Its filter, failure windows and counts.
    pub stage: JailStage,
    /// Recent matched lines with their key, for the samples stored with a ban.
    samples: VecDeque<(ClientKey, Box<[u8]>)>,
    matches: Counter,
    /// `moat_bans_total` for this jail.
    pub bans: Counter,
}

impl JailRuntime {
    /// A jail from its configuration, its window and total restored from `progress` when
    /// given.
    pub fn new(config: JailConfig, progress: Option<&dyn Progress>, metrics: &Metrics) -> Self {
        let filter = Filter::compile(&config.filter).expect("validated with the config");
        let saved = progress.and_then(|p| p.jail_checkpoint(&config.name).ok().flatten());
        let window = saved
            .as_ref()
            .and_then(|cp| Jail::restore(config.params.clone(), &cp.windows))
            .unwrap_or_else(|| Jail::new(config.params.clone()));
        let mut stage = JailStage::with_window(filter, window, config.time_zone());
        stage.stats.failed = saved.map_or(0, |cp| cp.failed_total);
        let label = JailLabel {
            jail: config.name.clone(),
        };
        JailRuntime {
            matches: metrics.matches.get_or_create(&label).clone(),
            bans: metrics.bans.get_or_create(&label).clone(),
            stage,
            config,
            samples: VecDeque::new(),
        }
    }
}

/// The last lines of `key` in a ring, oldest first.
fn samples_of(ring: &VecDeque<(ClientKey, Box<[u8]>)>, key: &ClientKey) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = ring
        .iter()
        .rev()
        .filter(|(k, _)| k == key)
        .take(SAMPLE_LINES)
        .map(|(_, l)| l.to_vec())
        .collect();
    lines.reverse();
    lines
}

/// A ban a jail decided, with its evidence.
pub struct Decided {
    /// The jail, by its index in [`Jails`].
    pub jail: usize,
    /// Who is banned and why.
    pub decision: BanDecision,
    /// The client's last matched lines, oldest first, stored with the ban as evidence.
    pub samples: Vec<Vec<u8>>,
}

struct SourceRoute {
    route: Route,
    lines: Counter,
}

/// The jails, their routes, and the state each file carries between blocks.
pub struct Jails {
    pipeline: Pipeline,
    runtimes: Vec<JailParts>,
    routes: HashMap<String, SourceRoute>,
    /// Per file: Docker json-file entries held until their line ends.
    states: HashMap<String, RouteState>,
}

/// A runtime without its stage (which lives in the pipeline).
struct JailParts {
    config: JailConfig,
    samples: VecDeque<(ClientKey, Box<[u8]>)>,
    matches: Counter,
    bans: Counter,
}

/// The daemon's sink.
struct Record<'a> {
    parts: &'a mut [JailParts],
    decided: Vec<(usize, BanDecision)>,
}

impl Sink for Record<'_> {
    fn failure(&mut self, jail: usize, key: ClientKey, line: &[u8]) {
        let p = &mut self.parts[jail];
        p.matches.inc();
        if p.samples.len() == SAMPLE_RING {
            p.samples.pop_front();
        }
        p.samples
            .push_back((key, line[..line.len().min(SAMPLE_LINE_MAX)].into()));
    }

    fn banned(&mut self, jail: usize, decision: BanDecision) {
        self.decided.push((jail, decision));
    }
}

impl Jails {
    /// The jails in configuration order, with each source routed to the jails that read it.
    pub fn new(runtimes: Vec<JailRuntime>, metrics: &Metrics, proxies: &Proxies) -> Jails {
        let mut stages = Vec::with_capacity(runtimes.len());
        let mut parts = Vec::with_capacity(runtimes.len());
        for r in runtimes {
            stages.push(r.stage);
            parts.push(JailParts {
                config: r.config,
                samples: r.samples,
                matches: r.matches,
                bans: r.bans,
            });
        }
        let mut pipeline = Pipeline::new(stages);
        pipeline.set_proxies(proxies);
        let mut by_source: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in parts.iter().enumerate() {
            for s in &p.config.sources {
                by_source.entry(s.clone()).or_default().push(i);
            }
        }
        let routes = by_source
            .into_iter()
            .map(|(source, jails)| {
                let lines = metrics
                    .lines
                    .get_or_create(&SourceLabel {
                        source: source.clone(),
                    })
                    .clone();
                let route = pipeline.route(jails);
                (source, SourceRoute { route, lines })
            })
            .collect();
        Jails {
            pipeline,
            runtimes: parts,
            routes,
            states: HashMap::new(),
        }
    }

    /// Takes the jails apart again (for a reload).
    pub fn into_runtimes(self) -> Vec<JailRuntime> {
        self.pipeline
            .jails
            .into_iter()
            .zip(self.runtimes)
            .map(|(stage, p)| JailRuntime {
                config: p.config,
                stage,
                samples: p.samples,
                matches: p.matches,
                bans: p.bans,
            })
            .collect()
    }

    /// How many jails run.
    pub fn len(&self) -> usize {
        self.runtimes.len()
    }

    /// Whether no jail runs.
    pub fn is_empty(&self) -> bool {
        self.runtimes.is_empty()
    }

    /// The configuration of jail number `jail`.
    pub fn config(&self, jail: usize) -> &JailConfig {
        &self.runtimes[jail].config
    }

    /// The filter, windows and counts of jail number `jail`.
    pub fn stage(&self, jail: usize) -> &JailStage {
        &self.pipeline.jails[jail]
    }

    /// The filter, windows and counts of jail number `jail`, to change.
    pub fn stage_mut(&mut self, jail: usize) -> &mut JailStage {
        &mut self.pipeline.jails[jail]
    }

    /// Every jail's configuration, in order.
    pub fn configs(&self) -> impl Iterator<Item = &JailConfig> {
        self.runtimes.iter().map(|p| &p.config)
    }

    /// The jail named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.runtimes.iter().position(|p| p.config.name == name)
    }

    /// The ports a jail's bans cover (`None`: every port, also for bans not from a jail).
    pub fn ports_of(&self, jail: &str) -> Option<Ports> {
        self.index(jail)
            .and_then(|j| self.runtimes[j].config.ports.clone())
    }

    /// Counts a ban of jail number `jail` in `moat_bans_total`.
    pub fn count_ban(&self, jail: usize) {
        self.runtimes[jail].bans.inc();
    }

    /// The trusted proxies whose headers are believed for the client's address, replaced.
    pub fn set_proxies(&mut self, proxies: &Proxies) {
        self.pipeline.set_proxies(proxies);
    }

    /// Runs a block of lines read from `file` of `source` through its jails.
    pub fn lines(
        &mut self,
        source: &str,
        file: &str,
        block: &[u8],
        now: Timestamp,
    ) -> Vec<Decided> {
        let Some(r) = self.routes.get(source) else {
            return Vec::new();
        };
        r.lines
            .inc_by(memchr::memchr_iter(b'\n', block).count() as u64);
        let state = match self.states.get_mut(file) {
            Some(s) => s,
            None => {
                let fresh = self.pipeline.state(&r.route);
                self.states.entry(file.to_string()).or_insert(fresh)
            }
        };
        let mut sink = Record {
            parts: &mut self.runtimes,
            decided: Vec::new(),
        };
        self.pipeline
            .block(&r.route, state, block, Timing::Live { now }, &mut sink);
        let decided = sink.decided;
        decided
            .into_iter()
            .map(|(jail, decision)| {
                let samples = samples_of(&self.runtimes[jail].samples, &decision.key);
                Decided {
                    jail,
                    decision,
                    samples,
                }
            })
            .collect()
    }

    /// Holds a ban's client in its jail's window, so that its failures while banned do not
    /// count (after a restart, a manual ban).
    pub fn hold(&mut self, ban: &NewBan) {
        if let Some(j) = self.index(&ban.jail) {
            let stage = &mut self.pipeline.jails[j];
            if let Some(key) = stage.params().key_of_target(ban.target) {
                stage.window.hold(key, ban.until.unwrap_or(Timestamp::MAX));
            }
        }
    }

    /// Empties a lifted ban's client's window in its jail.
    pub fn lift(&mut self, ban: &NewBan) {
        if let Some(j) = self.index(&ban.jail) {
            let stage = &mut self.pipeline.jails[j];
            if let Some(key) = stage.params().key_of_target(ban.target) {
                stage.window.lift(&key);
            }
        }
    }

    /// Every jail's state for a checkpoint.
    pub fn checkpoints(&self) -> Vec<(String, JailCheckpoint)> {
        self.runtimes
            .iter()
            .zip(&self.pipeline.jails)
            .map(|(p, s)| {
                (
                    p.config.name.clone(),
                    JailCheckpoint {
                        windows: s.window.snapshot(),
                        failed_total: s.stats.failed,
                    },
                )
            })
            .collect()
    }
}

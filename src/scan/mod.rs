//! `moat scan`: the offline run of the [pipeline](crate::pipeline) over inputs, and its report.
//!
//! Each input is read once, whatever the number of jails reading it: the pipeline's prefilter
//! searches each block once for every filter, only candidate lines run their regexes, and a
//! failure goes to its jail's window. No enforcer is involved: this module's sink collects the
//! would-be bans and the examples the report shows, and [`report`] renders a [`ScanReport`]
//! for people or as JSON.
//!
//! The jails are the daemon's jails; only the timing differs. Offline, a line's own time is
//! the only time, and a syslog line's missing year is inferred from the file's modification
//! time.

pub mod report;

use std::io;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::config::JailConfig;
use crate::detect::Filter;
use crate::jail::BanDecision;
use crate::pipeline::{JailStage, JailStats, Pipeline, Sink, Timing};
use crate::source::{self, Chunk, Input, LineReader};
use crate::vocab::ClientKey;

/// One jail's part of a scan.
#[derive(Debug)]
pub struct JailScan {
    pub config: JailConfig,
    pub rules: Vec<String>,
    pub stats: JailStats,
    /// Up to a few matched lines without a readable time, for the report.
    pub unparsed_samples: Vec<String>,
    pub bans: Vec<BanDecision>,
    /// Keys still in a window (failing, not banned) at the end.
    pub still_failing: usize,
    pub evicted: u64,
}

/// Per-input counts.
#[derive(Debug, Clone)]
pub struct InputStats {
    pub name: String,
    pub lines: u64,
    pub bytes: u64,
}

/// Everything a scan found.
#[derive(Debug)]
pub struct ScanReport {
    pub inputs: Vec<InputStats>,
    pub lines: u64,
    /// Lines over the cap (1 MiB), counted and never matched.
    pub truncated: u64,
    pub jails: Vec<JailScan>,
    /// Lines no jail matched, when asked for.
    pub missed_samples: Vec<String>,
    pub elapsed: Duration,
}

impl ScanReport {
    pub fn matched(&self) -> u64 {
        self.jails.iter().map(|j| j.stats.matched).sum()
    }
    pub fn ignored(&self) -> u64 {
        self.jails.iter().map(|j| j.stats.ignored).sum()
    }
    pub fn unparsed_time(&self) -> u64 {
        self.jails.iter().map(|j| j.stats.unparsed_time).sum()
    }
    /// Every ban of every jail, in time order.
    pub fn bans(&self) -> Vec<(&str, &BanDecision)> {
        let mut all: Vec<(&str, &BanDecision)> = self
            .jails
            .iter()
            .flat_map(|j| j.bans.iter().map(move |b| (j.config.name.as_str(), b)))
            .collect();
        all.sort_by(|a, b| a.1.at.cmp(&b.1.at).then(a.0.cmp(b.0)));
        all
    }
}

/// An input that could not be read; names it.
#[derive(Debug, thiserror::Error)]
#[error("{input}: {source}")]
pub struct ScanError {
    pub input: String,
    #[source]
    pub source: io::Error,
}

/// How to run a scan.
pub struct ScanOptions {
    /// Keep up to this many lines that no jail matched.
    pub missed_samples: usize,
    /// The instant used to infer missing years for stdin (files use their modification time).
    pub now: Timestamp,
    /// Called now and then with (bytes consumed so far, total bytes if known).
    pub progress: Option<Box<dyn FnMut(u64)>>,
}

const UNPARSED_SAMPLES: usize = 5;

/// The scan's sink: the would-be bans, and the examples the report shows.
struct Collect {
    bans: Vec<Vec<BanDecision>>,
    unparsed: Vec<Vec<String>>,
    missed: Vec<String>,
    missed_max: usize,
}

impl Sink for Collect {
    fn wants_missed(&self) -> bool {
        self.missed_max > 0
    }

    fn missed(&mut self, line: &[u8]) {
        if self.missed.len() < self.missed_max {
            self.missed.push(String::from_utf8_lossy(line).into_owned());
        }
    }

    fn unparsed(&mut self, jail: usize, line: &[u8]) {
        let samples = &mut self.unparsed[jail];
        if samples.len() < UNPARSED_SAMPLES {
            samples.push(String::from_utf8_lossy(line).into_owned());
        }
    }

    fn failure(&mut self, _jail: usize, _key: ClientKey, _line: &[u8]) {}

    fn banned(&mut self, jail: usize, decision: BanDecision) {
        self.bans[jail].push(decision);
    }
}

/// Runs `jails` over `inputs`: `reads[i]` lists the jails (indices) that read input `i`.
pub fn run(
    jails: Vec<JailConfig>,
    inputs: &[Input],
    reads: &[Vec<usize>],
    mut options: ScanOptions,
) -> Result<ScanReport, ScanError> {
    let started = Instant::now();
    let mut pipeline = Pipeline::new(
        jails
            .iter()
            .map(|j| {
                let filter =
                    Filter::compile(&j.filter).expect("filters are validated with the config");
                JailStage::new(filter, j.params.clone(), j.time_zone())
            })
            .collect(),
    );
    let mut sink = Collect {
        bans: vec![Vec::new(); jails.len()],
        unparsed: vec![Vec::new(); jails.len()],
        missed: Vec::new(),
        missed_max: options.missed_samples,
    };
    let mut report_inputs = Vec::new();
    let mut total_lines = 0;
    let mut truncated = 0;
    let mut consumed_before = 0u64;

    for (input, readers) in inputs.iter().zip(reads) {
        let fail = |source| ScanError {
            input: input.display(),
            source,
        };
        let opened = source::open(input).map_err(fail)?;
        let route = pipeline.route(readers.clone());
        let mut state = pipeline.state(&route);
        pipeline.set_reference(
            &route,
            opened
                .modified
                .and_then(|m| Timestamp::try_from(m).ok())
                .unwrap_or(options.now),
        );
        let consumed = opened.consumed.clone();
        let mut lines = 0u64;
        let mut since_progress = 0u64;
        let mut reader = LineReader::new(opened.reader);
        let bytes = reader
            .for_each_chunk(|chunk| {
                match chunk {
                    Chunk::Lines(block) => {
                        lines += memchr::memchr_iter(b'\n', block).count() as u64;
                        pipeline.block(&route, &mut state, block, Timing::Offline, &mut sink);
                    }
                    Chunk::Line(line) => {
                        lines += 1;
                        // Over the cap: never matched (cut short, a line could match where
                        // the whole line does not), only counted.
                        truncated += u64::from(line.truncated);
                        pipeline.line(&route, &mut state, line, Timing::Offline, &mut sink);
                    }
                }
                if lines - since_progress >= 65_536 {
                    since_progress = lines;
                    if let Some(p) = options.progress.as_mut() {
                        p(consumed_before + consumed.load(std::sync::atomic::Ordering::Relaxed));
                    }
                }
            })
            .map_err(fail)?;
        truncated += state.overlong;
        let file_bytes = opened.size.unwrap_or(bytes);
        consumed_before += file_bytes;
        if let Some(p) = options.progress.as_mut() {
            p(consumed_before);
        }
        total_lines += lines;
        report_inputs.push(InputStats {
            name: input.display(),
            lines,
            bytes: file_bytes,
        });
    }

    let jails = jails
        .into_iter()
        .zip(pipeline.jails)
        .zip(sink.bans.into_iter().zip(sink.unparsed))
        .map(|((config, stage), (bans, unparsed_samples))| JailScan {
            rules: stage.filter.rule_names(),
            still_failing: stage.window.failing(),
            evicted: stage.window.evicted(),
            config,
            stats: stage.stats,
            unparsed_samples,
            bans,
        })
        .collect();
    Ok(ScanReport {
        inputs: report_inputs,
        lines: total_lines,
        truncated,
        jails,
        missed_samples: sink.missed,
        elapsed: started.elapsed(),
    })
}

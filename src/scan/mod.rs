//! The offline pipeline behind `moat scan`: inputs → lines → filters → jails → would-be bans.
//!
//! Each input is read once, whatever the number of jails reading it: one [`Prefilter`] search
//! per line picks the filters that could match, only those run their regexes, and a failure
//! goes to its jail's window. No enforcer is involved; the result is a [`ScanReport`] that
//! [`report`] renders for people or as JSON.
//!
//! The jails are the daemon's jails; only the clock differs. Offline, a line's own time is the
//! only time, and a syslog line's missing year is inferred from the file's modification time.

pub mod report;

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::config::JailConfig;
use crate::detect::time::FoundFormat;
use crate::detect::{Filter, Prefilter, TimeContext, Verdict};
use crate::jail::{BanDecision, Jail, Outcome};
use crate::source::{self, Chunk, Input, LineReader};

/// Per-jail counts, the numbers fail2ban-regex prints and a few it does not.
#[derive(Debug, Default, Clone)]
pub struct JailStats {
    /// Lines a failregex matched and no ignoreregex vetoed.
    pub matched: u64,
    /// Lines a failregex matched and an ignoreregex vetoed.
    pub ignored: u64,
    /// Matched lines whose time could not be read (not counted).
    pub unparsed_time: u64,
    /// Matched lines whose `<HOST>` text was not an address (not counted).
    pub bad_host: u64,
    /// Failures from addresses in the jail's ignore list.
    pub ignored_clients: u64,
    /// Failures of a client while its ban was running.
    pub while_banned: u64,
    /// Matches per failregex, in order.
    pub rule_hits: Vec<u64>,
    /// Which time formats the matched lines used.
    pub formats: BTreeMap<FoundFormat, u64>,
    /// Up to a few matched lines without a readable time, for the report.
    pub unparsed_samples: Vec<String>,
}

/// One jail's part of a scan.
#[derive(Debug)]
pub struct JailScan {
    pub config: JailConfig,
    pub rules: Vec<String>,
    pub stats: JailStats,
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

/// One jail's running state during a scan.
struct JailRun {
    filter: Filter,
    window: Jail,
    stats: JailStats,
    bans: Vec<BanDecision>,
}

impl JailRun {
    /// Runs the filter on a line and feeds a failure to the window; true when the filter
    /// matched (whatever became of the match).
    fn line(&mut self, line: &[u8], ctx: &TimeContext) -> bool {
        let st = &mut self.stats;
        match self.filter.check_mut(line, ctx) {
            Verdict::Miss => return false,
            Verdict::Ignored => st.ignored += 1,
            Verdict::BadHost => {
                st.matched += 1;
                st.bad_host += 1;
            }
            Verdict::NoTime { .. } => {
                st.matched += 1;
                st.unparsed_time += 1;
                if st.unparsed_samples.len() < UNPARSED_SAMPLES {
                    st.unparsed_samples
                        .push(String::from_utf8_lossy(line).into_owned());
                }
            }
            Verdict::Failure(f) => {
                st.matched += 1;
                st.rule_hits[f.rule] += 1;
                *st.formats.entry(f.format).or_default() += 1;
                match self.window.observe(f.host, f.time) {
                    Outcome::Counted { .. } => {}
                    Outcome::Banned(d) => self.bans.push(d),
                    Outcome::WhileBanned => st.while_banned += 1,
                    Outcome::Ignored => st.ignored_clients += 1,
                }
            }
        }
        true
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
    let zones: Vec<_> = jails.iter().map(JailConfig::time_zone).collect();
    let mut runs: Vec<JailRun> = jails
        .iter()
        .map(|j| {
            let filter = Filter::compile(&j.filter).expect("filters are validated with the config");
            JailRun {
                stats: JailStats {
                    rule_hits: vec![0; filter.rule_names().len()],
                    ..JailStats::default()
                },
                filter,
                window: Jail::new(j.params.clone()),
                bans: Vec::new(),
            }
        })
        .collect();
    let mut report_inputs = Vec::new();
    let mut total_lines = 0;
    let mut truncated = 0;
    let mut missed = Vec::new();
    let mut consumed_before = 0u64;

    for (input, readers) in inputs.iter().zip(reads) {
        let fail = |source| ScanError {
            input: input.display(),
            source,
        };
        let opened = source::open(input).map_err(fail)?;
        let reference = opened
            .modified
            .and_then(|m| Timestamp::try_from(m).ok())
            .unwrap_or(options.now);
        let ctxs: Vec<TimeContext> = readers
            .iter()
            .map(|&j| TimeContext {
                zone: zones[j].clone(),
                reference,
            })
            .collect();
        let prefilter = {
            let local: Vec<&Filter> = readers.iter().map(|&j| &runs[j].filter).collect();
            Prefilter::new(&local)
        };
        // Searching whole blocks and visiting only the lines that contain a literal is the
        // fast path; sampling missed lines needs to see every line.
        let skim = prefilter.can_skip_lines() && options.missed_samples == 0;
        let consumed = opened.consumed.clone();
        let mut candidates = Vec::with_capacity(readers.len());
        let mut lines = 0u64;
        let mut since_progress = 0u64;
        let one_line = |line: &[u8], cands: &[usize], runs: &mut [JailRun]| -> bool {
            let mut any = false;
            for &c in cands {
                any |= runs[readers[c]].line(line, &ctxs[c]);
            }
            any
        };
        let mut reader = LineReader::new(opened.reader);
        let bytes = reader
            .for_each_chunk(|chunk| {
                match chunk {
                    Chunk::Lines(block) if skim => {
                        lines += memchr::memchr_iter(b'\n', block).count() as u64;
                        prefilter.for_each_candidate_line(block, &mut candidates, |line, c| {
                            one_line(line, c, &mut runs);
                        });
                    }
                    Chunk::Lines(block) => source::split_lines(block, &mut |line| {
                        lines += 1;
                        prefilter.candidates(line.bytes, &mut candidates);
                        let any = one_line(line.bytes, &candidates, &mut runs);
                        if !any && missed.len() < options.missed_samples {
                            missed.push(String::from_utf8_lossy(line.bytes).into_owned());
                        }
                    }),
                    Chunk::Line(line) => {
                        lines += 1;
                        truncated += u64::from(line.truncated);
                        prefilter.candidates(line.bytes, &mut candidates);
                        let any = one_line(line.bytes, &candidates, &mut runs);
                        if !any && missed.len() < options.missed_samples {
                            missed.push(String::from_utf8_lossy(line.bytes).into_owned());
                        }
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
        .zip(runs)
        .map(|(config, run)| JailScan {
            rules: run.filter.rule_names(),
            still_failing: run.window.failing(),
            evicted: run.window.evicted(),
            config,
            stats: run.stats,
            bans: run.bans,
        })
        .collect();
    Ok(ScanReport {
        inputs: report_inputs,
        lines: total_lines,
        truncated,
        jails,
        missed_samples: missed,
        elapsed: started.elapsed(),
    })
}

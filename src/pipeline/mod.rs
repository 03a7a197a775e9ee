//! The one pipeline from lines to ban decisions: route → prefilter → filter → jail, pushing
//! what happens into a [`Sink`].
//!
//! `moat scan` and the daemon are two sinks of the same pipeline, as ripgrep's searcher hands
//! matches to a sink: the scan's counts and reports, the daemon's places bans. Both get the
//! same rules and the same fast path:
//!
//! - a [`Route`] is the jails reading one source, with one [`Prefilter`] over their filters:
//!   a whole block of lines is searched for the literals the filters need, and only the lines
//!   around a hit are looked at ([`Pipeline::block`]); a line's filters run only when it holds
//!   one of their literals;
//! - Docker's json-file entries are joined first when a jail unwraps them ([`RouteState`]);
//! - a [`JailStage`] runs its filter, counts the verdict ([`JailStats`]) and feeds a failure to
//!   its window, at the failure's own time. [`Timing`] is the one difference between offline
//!   and live: live, a time too far ahead is taken as now and a failure older than findtime
//!   when read is counted as stale, not toward a ban.
//!
//! Pure: no I/O, no clock (the live "now" comes with each block).

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::detect::time::FoundFormat;
use crate::detect::{Filter, LineContext, Prefilter, Proxies, Verdict};
use crate::jail::{BanDecision, Jail, JailParams, Outcome};
use crate::source::docker::{Joined, JsonFileJoiner};
use crate::vocab::lines::split_lines;
use crate::vocab::{ClientKey, Line};

/// How far in the future a line's time may be, live, before it is taken as "now".
pub const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_secs(60);

/// What happens in the pipeline, as it happens. Every method but [`Sink::banned`] has a
/// default that ignores it.
pub trait Sink {
    /// Whether to call [`Sink::missed`] (then every line is looked at: no block fast path).
    fn wants_missed(&self) -> bool {
        false
    }

    /// A line no jail of the route matched.
    fn missed(&mut self, _line: &[u8]) {}

    /// A failure of `key` that `jail` counted (or saw while the key was banned).
    fn failure(&mut self, _jail: usize, _key: ClientKey, _line: &[u8]) {}

    /// A line `jail`'s filter matched but whose time could not be read.
    fn unparsed(&mut self, _jail: usize, _line: &[u8]) {}

    /// `jail`'s window filled: a ban.
    fn banned(&mut self, jail: usize, decision: BanDecision);
}

/// Offline, a line's own time is the only time; live, it is checked against now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// `moat scan`: lines keep their own times, however old.
    Offline,
    /// The daemon: a failure older than findtime is stale (not counted), one from the future
    /// counts as now, and a missing year is inferred from now.
    Live {
        /// The instant the daemon read the block at.
        now: Timestamp,
    },
}

/// What a jail made of the lines it saw.
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
    /// Lines too long for a look-around pattern of the filter (not matched).
    pub too_long: u64,
    /// Failures from addresses in the jail's ignore list.
    pub ignored_clients: u64,
    /// Failures counted toward a ban, or seen while the client was banned.
    pub failed: u64,
    /// Failures of a client while its ban was running.
    pub while_banned: u64,
    /// Live: failures older than findtime when read (a catch-up after downtime).
    pub stale: u64,
    /// Matches per failregex, in order.
    pub rule_hits: Vec<u64>,
    /// Which time formats the matched lines used.
    pub formats: BTreeMap<FoundFormat, u64>,
}

/// One jail's part of the pipeline: its filter, its window, and what it counted.
#[derive(Debug)]
pub struct JailStage {
    /// The jail's filter, with its state (a fail2ban filter's buffers).
    pub filter: Filter,
    /// The jail's sliding windows and bans.
    pub window: Jail,
    /// What the filter needs from outside: zone, reference time, trusted proxies.
    pub ctx: LineContext,
    /// What the jail made of its lines so far.
    pub stats: JailStats,
}

impl JailStage {
    /// A stage with empty windows; `zone` is the zone of times written without one.
    pub fn new(filter: Filter, params: JailParams, zone: TimeZone) -> JailStage {
        JailStage::with_window(filter, Jail::new(params), zone)
    }

    /// A stage whose window was restored (from a checkpoint).
    pub fn with_window(filter: Filter, window: Jail, zone: TimeZone) -> JailStage {
        JailStage {
            stats: JailStats {
                rule_hits: vec![0; filter.rule_names().len()],
                ..JailStats::default()
            },
            filter,
            window,
            ctx: LineContext::new(zone, Timestamp::UNIX_EPOCH),
        }
    }

    /// The jail's settings.
    pub fn params(&self) -> &JailParams {
        self.window.params()
    }

    /// Runs the filter on a line and feeds a failure to the window; true when the filter
    /// matched (whatever became of the match).
    fn observe(&mut self, j: usize, line: &[u8], timing: Timing, sink: &mut impl Sink) -> bool {
        let st = &mut self.stats;
        let f = match self.filter.check_mut(line, &self.ctx) {
            Verdict::Miss => return false,
            Verdict::TooLong => {
                st.too_long += 1;
                return false;
            }
            Verdict::Ignored => {
                st.ignored += 1;
                return true;
            }
            Verdict::BadHost => {
                st.matched += 1;
                st.bad_host += 1;
                return true;
            }
            Verdict::NoTime { .. } => {
                st.matched += 1;
                st.unparsed_time += 1;
                sink.unparsed(j, line);
                return true;
            }
            Verdict::Failure(f) => f,
        };
        st.matched += 1;
        st.rule_hits[f.rule] += 1;
        *st.formats.entry(f.format).or_default() += 1;
        let mut at = f.time;
        if let Timing::Live { now } = timing {
            if at > now + FUTURE_TOLERANCE {
                at = now;
            }
            if now.duration_since(at) > self.window.params().findtime {
                st.stale += 1;
                return true;
            }
        }
        let key = self.window.params().key_of(f.host);
        match self.window.observe(f.host, at) {
            Outcome::Ignored => st.ignored_clients += 1,
            Outcome::Counted { .. } => {
                st.failed += 1;
                sink.failure(j, key, line);
            }
            Outcome::WhileBanned => {
                st.failed += 1;
                st.while_banned += 1;
                sink.failure(j, key, line);
            }
            Outcome::Banned(d) => {
                st.failed += 1;
                sink.failure(j, key, line);
                sink.banned(j, d);
            }
        }
        true
    }
}

/// The jails reading one source, and the prefilter over their filters.
#[derive(Debug)]
pub struct Route {
    /// Indices into [`Pipeline::jails`].
    pub jails: Vec<usize>,
    prefilter: Prefilter,
    /// A jail reads Docker's json-file entries: their partial entries are joined first.
    joins: bool,
}

/// What a route carries from one block of a file to the next.
#[derive(Debug, Default)]
pub struct RouteState {
    joiner: Option<JsonFileJoiner>,
    /// Entries over the cap once joined (dropped).
    pub overlong: u64,
}

/// The jails, and the work of pushing lines through them.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// The jails, in configuration order: a route's and a sink's jail numbers index this.
    pub jails: Vec<JailStage>,
    candidates: Vec<usize>,
}

impl Pipeline {
    /// A pipeline of `jails`.
    pub fn new(jails: Vec<JailStage>) -> Pipeline {
        Pipeline {
            jails,
            candidates: Vec::new(),
        }
    }

    /// A route for the jails `jails` (indices) reading one source.
    pub fn route(&self, jails: Vec<usize>) -> Route {
        let filters: Vec<&Filter> = jails.iter().map(|&j| &self.jails[j].filter).collect();
        Route {
            prefilter: Prefilter::new(&filters),
            joins: filters.iter().any(|f| f.unwraps_docker_log()),
            jails,
        }
    }

    /// A fresh state for a file (or input) read through `route`.
    pub fn state(&self, route: &Route) -> RouteState {
        RouteState {
            joiner: route.joins.then(JsonFileJoiner::default),
            overlong: 0,
        }
    }

    /// Sets the instant the route's jails infer a missing year from.
    pub fn set_reference(&mut self, route: &Route, reference: Timestamp) {
        for &j in &route.jails {
            self.jails[j].ctx.reference = reference;
        }
    }

    /// Sets the trusted proxies of every jail.
    pub fn set_proxies(&mut self, proxies: &Proxies) {
        for j in &mut self.jails {
            j.ctx.proxies = proxies.clone();
        }
    }

    /// A block of complete lines (each ending in `\n`, none over the cap).
    pub fn block(
        &mut self,
        route: &Route,
        state: &mut RouteState,
        block: &[u8],
        timing: Timing,
        sink: &mut impl Sink,
    ) {
        if let Timing::Live { now } = timing {
            self.set_reference(route, now);
        }
        // Searching the whole block and looking only at the lines around a literal is the
        // fast path; joining entries, or reporting missed lines, needs every line.
        if route.prefilter.can_skip_lines() && state.joiner.is_none() && !sink.wants_missed() {
            let jails = &mut self.jails;
            route
                .prefilter
                .for_each_candidate_line(block, &mut self.candidates, |line, cands| {
                    for &c in cands {
                        let j = route.jails[c];
                        jails[j].observe(j, line, timing, sink);
                    }
                });
            return;
        }
        split_lines(block, &mut |line| {
            self.one(route, state, line.bytes, timing, sink);
        });
    }

    /// One line; a line over the cap is never matched (the caller counts it).
    pub fn line(
        &mut self,
        route: &Route,
        state: &mut RouteState,
        line: Line<'_>,
        timing: Timing,
        sink: &mut impl Sink,
    ) {
        if !line.truncated {
            self.one(route, state, line.bytes, timing, sink);
        }
    }

    fn one(
        &mut self,
        route: &Route,
        state: &mut RouteState,
        line: &[u8],
        timing: Timing,
        sink: &mut impl Sink,
    ) {
        let joined;
        let line = match state.joiner.as_mut().map(|j| j.feed(line)) {
            None | Some(Joined::Line(_)) => line,
            Some(Joined::Held) => return,
            Some(Joined::Overlong) => {
                state.overlong += 1;
                return;
            }
            Some(Joined::Whole(w)) => {
                joined = w;
                &joined[..]
            }
        };
        route.prefilter.candidates(line, &mut self.candidates);
        let mut any = false;
        for &c in &self.candidates {
            let j = route.jails[c];
            any |= self.jails[j].observe(j, line, timing, sink);
        }
        if !any && sink.wants_missed() {
            sink.missed(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::FilterSpec;

    #[derive(Default)]
    struct Collect {
        bans: Vec<(usize, BanDecision)>,
        failures: usize,
        missed: Vec<Vec<u8>>,
        want_missed: bool,
    }

    impl Sink for Collect {
        fn wants_missed(&self) -> bool {
            self.want_missed
        }
        fn missed(&mut self, line: &[u8]) {
            self.missed.push(line.to_vec());
        }
        fn failure(&mut self, _: usize, _: ClientKey, _: &[u8]) {
            self.failures += 1;
        }
        fn banned(&mut self, jail: usize, d: BanDecision) {
            self.bans.push((jail, d));
        }
    }

    fn pipeline() -> Pipeline {
        let filter = |re: &str| {
            Filter::compile(&FilterSpec {
                failregex: vec![re.into()],
                time: Some("iso8601".into()),
                ..FilterSpec::default()
            })
            .unwrap()
        };
        let params = JailParams {
            maxretry: 2,
            ..JailParams::default()
        };
        Pipeline::new(vec![
            JailStage::new(
                filter(r"^\S+ login failed from <HOST>$"),
                params.clone(),
                TimeZone::UTC,
            ),
            JailStage::new(filter(r"^\S+ denied <HOST>$"), params, TimeZone::UTC),
        ])
    }

    const LOG: &[u8] = b"2026-03-28T10:00:00Z login failed from 203.0.113.5\n\
        2026-03-28T10:00:01Z nothing here\n\
        2026-03-28T10:00:02Z login failed from 203.0.113.5\n\
        2026-03-28T10:00:03Z denied 203.0.113.6\n";

    #[test]
    fn the_block_path_and_the_line_path_decide_the_same() {
        for want_missed in [false, true] {
            let mut p = pipeline();
            let route = p.route(vec![0, 1]);
            let mut state = p.state(&route);
            let mut sink = Collect {
                want_missed,
                ..Collect::default()
            };
            p.block(&route, &mut state, LOG, Timing::Offline, &mut sink);
            assert_eq!(sink.bans.len(), 1);
            assert_eq!(sink.bans[0].1.key.to_string(), "203.0.113.5");
            assert_eq!(sink.failures, 3);
            assert_eq!(sink.missed.len(), usize::from(want_missed));
            assert_eq!((p.jails[0].stats.matched, p.jails[1].stats.matched), (2, 1));
        }
    }

    #[test]
    fn live_timing_clamps_the_future_and_counts_the_stale() {
        let mut p = pipeline();
        let route = p.route(vec![0]);
        let mut state = p.state(&route);
        let mut sink = Collect::default();
        // An hour after the log: both failures are older than findtime (10 min).
        let now: Timestamp = "2026-03-28T11:00:00Z".parse().unwrap();
        p.block(&route, &mut state, LOG, Timing::Live { now }, &mut sink);
        assert!(sink.bans.is_empty());
        assert_eq!(p.jails[0].stats.stale, 2);
        // A day before the log: its times are in the future, taken as now, and they ban.
        let now: Timestamp = "2026-03-27T10:00:00Z".parse().unwrap();
        p.block(&route, &mut state, LOG, Timing::Live { now }, &mut sink);
        assert_eq!(sink.bans.len(), 1);
        assert_eq!(sink.bans[0].1.at, now);
    }

    #[test]
    fn an_overlong_line_is_never_matched() {
        let mut p = pipeline();
        let route = p.route(vec![0]);
        let mut state = p.state(&route);
        let mut sink = Collect::default();
        let line = b"2026-03-28T10:00:00Z login failed from 203.0.113.5";
        for truncated in [true, true, false, false] {
            p.line(
                &route,
                &mut state,
                Line {
                    bytes: line,
                    truncated,
                },
                Timing::Offline,
                &mut sink,
            );
        }
        assert_eq!(p.jails[0].stats.matched, 2);
    }
}

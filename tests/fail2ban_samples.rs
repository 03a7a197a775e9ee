//! fail2ban 1.0.2's own sample suite, run through moat's reading of fail2ban's filters.
//!
//! Debian's `fail2ban` package ships the filters (`/etc/fail2ban/filter.d`) and the suite
//! (`fail2ban/tests/files/logs/*`: log lines, each preceded by a `# failJSON:` assertion).
//! This test walks the files exactly as fail2ban's `tests/samplestestcase.py` does: one test
//! per stock filter, `# filterOptions:` blocks re-reading the filter with each option
//! combination (a combination keeps its state across blocks and files), `# fileOptions:`,
//! `# addFILE:`, `constraint` and `test.condition` expressions, the test clock frozen at
//! 2005-08-14 12:00 CEST in the zone `CET-01CEST-02,M3.5.0,M10.5.0`, every failregex tried
//! on every line (exactly one may yield a failure), `logtype = journal` lines handed over
//! with the clock's time instead of a date. An assertion holds when the line's failure (or
//! its absence), its host, its time to the second and every other field named agree.
//!
//! The target is all 1,381 assertions; below 99.5% the test fails. It prints the score and
//! every assertion that does not hold. The filters are read from the installation at test
//! time (copied to a temporary directory without `.local` overrides); moat carries none of
//! them.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use moat::config::fail2ban::load_filter;
use moat::detect::fail2ban::dates::Clock;
use moat::detect::fail2ban::matcher::{Fail2banFilter, FailureId, Found, Matcher, Value};
use serde_json::Value as Json;

const SUITE: &str = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs";
const FILTERS: &str = "/etc/fail2ban/filter.d";
/// fail2ban's `TEST_NOW`.
const TEST_NOW: i64 = 1_124_013_600;
const TEST_TZ: &str = "CET-01CEST-02,M3.5.0,M10.5.0";
const EXPECTED: usize = 1381;

/// A filter and the options it was read with, with its state.
struct FilterTest {
    key: String,
    opts: BTreeMap<String, String>,
    all_opts: serde_json::Map<String, Json>,
}

struct Outcome {
    /// Distinct regexes (failregex and prefregex) of the filters read, and how many need the
    /// backtracking engine.
    regexes: BTreeMap<String, bool>,
    held: usize,
    total: usize,
    failed: Vec<String>,
    unused: Vec<String>,
}

fn filter_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("filter.d")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".conf") && !n.ends_with("common.conf"))
        .map(|n| n.trim_end_matches(".conf").to_string())
        .collect();
    names.sort();
    names
}

/// The filters as installed, without any `.local` a user may have added.
fn pristine_filters() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let fd = dir.path().join("filter.d");
    std::fs::create_dir(&fd).expect("mkdir");
    for e in std::fs::read_dir(FILTERS).expect("filter.d").flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".conf") && e.path().is_file() {
            std::fs::copy(e.path(), fd.join(&name)).expect("copy");
        }
    }
    dir
}

/// The few Python expressions the suite's `constraint` and `test.condition` use.
fn eval(expr: &str, name: &str, opts: &serde_json::Map<String, Json>) -> bool {
    let expr = expr.trim();
    let (lhs, op, rhs) = if let Some((l, r)) = expr.split_once("==") {
        (l.trim(), "==", r.trim())
    } else if let Some((l, r)) = expr.split_once("!=") {
        (l.trim(), "!=", r.trim())
    } else {
        panic!("unsupported expression {expr:?}");
    };
    let literal = rhs.trim_matches(|c| c == '\'' || c == '"');
    let value: Option<String> = if lhs == "name" {
        Some(name.to_string())
    } else if let Some(key) = lhs
        .strip_prefix("opts.get(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let key = key.trim_matches(|c| c == '\'' || c == '"');
        opts.get(key).and_then(|v| v.as_str()).map(str::to_string)
    } else {
        panic!("unsupported expression {expr:?}");
    };
    let equal = value.as_deref() == Some(literal);
    if op == "==" {
        equal
    } else {
        !equal
    }
}

/// fail2ban's `IPAddr` equality: addresses compare as addresses (an IPv4-mapped IPv6 as
/// IPv4), anything else as text.
fn same_host(id: &FailureId, expected: &str) -> bool {
    let parse = |s: &str| -> Option<IpAddr> {
        let s = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s);
        s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
    };
    match (parse(id.text()), parse(expected)) {
        (Some(a), Some(b)) => a == b,
        (None, None) => id.text() == expected,
        _ => false,
    }
}

/// A failJSON time, as Python's `strptime("%Y-%m-%dT%H:%M:%S[.%f]")` reads it (one-digit
/// fields allowed), in the test's zone.
fn json_time(text: &str, zone: &TimeZone) -> Timestamp {
    let (date, time) = text.split_once('T').expect("failJSON time with T");
    let (time, frac) = time.split_once('.').unwrap_or((time, ""));
    let nums = |s: &str, sep: char| -> Vec<i64> {
        s.split(sep)
            .map(|p| p.parse().expect("failJSON time field"))
            .collect()
    };
    let (d, t) = (nums(date, '-'), nums(time, ':'));
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")[..6]
            .parse()
            .expect("failJSON fraction")
    };
    let dt = jiff::civil::date(d[0] as i16, d[1] as i8, d[2] as i8).at(
        t[0] as i8,
        t[1] as i8,
        t[2] as i8,
        (micros * 1000) as i32,
    );
    dt.to_zoned(zone.clone()).expect("in zone").timestamp()
}

fn value_matches(found: &Found, key: &str, expected: &Json) -> Result<(), String> {
    let actual = found.data.get(key);
    let show = |v: Option<&Value>| format!("{v:?}");
    match (key, actual) {
        ("host", None) => {
            let Some(id) = &found.id else {
                return Err("no host".into());
            };
            let want = expected.as_str().unwrap_or_default();
            if same_host(id, want) {
                Ok(())
            } else {
                Err(format!("host {:?}, expected {want:?}", id.text()))
            }
        }
        ("attempts", None) => {
            let n = found.attempts() as u64;
            if expected.as_u64() == Some(n) {
                Ok(())
            } else {
                Err(format!("attempts {n}, expected {expected}"))
            }
        }
        (_, Some(Value::Set(set))) => {
            let want: BTreeSet<String> = expected
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if *set == want {
                Ok(())
            } else {
                Err(format!("{key} {set:?}, expected {want:?}"))
            }
        }
        (_, Some(Value::Text(t))) if expected.as_str() == Some(t.as_str()) => Ok(()),
        (_, None) if expected.is_null() => Ok(()),
        _ => Err(format!("{key} {}, expected {expected}", show(actual))),
    }
}

fn run_suite(filters_dir: &Path, suite: &Path) -> Outcome {
    let zone = TimeZone::posix(TEST_TZ).expect("POSIX zone");
    let clock = Clock {
        zone: zone.clone(),
        now: Timestamp::from_second(TEST_NOW).expect("time"),
    };
    let year = Timestamp::now().to_zoned(TimeZone::UTC).year();
    let mut out = Outcome {
        regexes: BTreeMap::new(),
        held: 0,
        total: 0,
        failed: Vec::new(),
        unused: Vec::new(),
    };
    for name in filter_names(&filters_dir.join("filter.d")) {
        let mut filenames = vec![name.clone()];
        // Per filter test: the filters read so far (by option combination), with the rules
        // that yielded something.
        let mut readers: HashMap<String, (Matcher, BTreeSet<usize>)> = HashMap::new();
        let mut tests: Option<Vec<FilterTest>> = None;
        let mut common: serde_json::Map<String, Json> = serde_json::Map::new();
        let mut i = 0;
        while i < filenames.len() {
            let file = filenames[i].clone();
            i += 1;
            let path = suite.join(&file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let lines: Vec<&str> = text.split('\n').collect();
            let mut ignore_block = false;
            let mut n = 0;
            while n < lines.len() {
                let raw = lines[n];
                n += 1;
                let lineno = n;
                let mut faildata = serde_json::Map::new();
                let mut line = raw;
                if let Some((kind, json)) = directive(raw) {
                    let parsed: Json = serde_json::from_str(json)
                        .unwrap_or_else(|e| panic!("{file}:{lineno}: {e}"));
                    match kind {
                        "fileOptions" => {
                            common = parsed.as_object().cloned().unwrap_or_default();
                            continue;
                        }
                        "filterOptions" => {
                            let mut list = Vec::new();
                            ignore_block = false;
                            let entries = match parsed {
                                Json::Array(a) => a,
                                other => vec![other],
                            };
                            for entry in entries {
                                let mut opts = common.clone();
                                for (k, v) in entry.as_object().cloned().unwrap_or_default() {
                                    opts.insert(k, v);
                                }
                                if let Some(c) = opts.get("test.condition").and_then(Json::as_str) {
                                    ignore_block = !eval(c, &name, &opts);
                                }
                                if !ignore_block {
                                    let filter_opts: BTreeMap<String, String> = opts
                                        .iter()
                                        .filter(|(k, _)| !k.starts_with("test."))
                                        .map(|(k, v)| {
                                            (
                                                k.clone(),
                                                v.as_str().map_or(v.to_string(), str::to_string),
                                            )
                                        })
                                        .collect();
                                    let key =
                                        match opts.get("test.filter-name").and_then(Json::as_str) {
                                            Some(n) => format!("{name}{n}"),
                                            None if filter_opts.is_empty() => name.clone(),
                                            None => format!("{name}{filter_opts:?}"),
                                        };
                                    list.push(FilterTest {
                                        key,
                                        opts: filter_opts,
                                        all_opts: opts,
                                    });
                                }
                            }
                            tests = Some(list);
                            continue;
                        }
                        "addFILE" => {
                            filenames.push(parsed.as_str().expect("file name").to_string());
                            continue;
                        }
                        _ => {
                            faildata = parsed.as_object().cloned().unwrap_or_default();
                            if n >= lines.len() {
                                break;
                            }
                            line = lines[n];
                            n += 1;
                        }
                    }
                } else if ignore_block || raw.starts_with('#') || raw.trim().is_empty() {
                    continue;
                }
                if ignore_block {
                    continue;
                }
                if tests.as_ref().is_none_or(Vec::is_empty) {
                    tests = Some(vec![FilterTest {
                        key: name.clone(),
                        opts: BTreeMap::new(),
                        all_opts: serde_json::Map::new(),
                    }]);
                }
                let mut line = line.trim_end_matches(['\r', '\n']).to_string();
                for test in tests.as_ref().expect("set") {
                    if let Some(c) = faildata.get("constraint").and_then(Json::as_str) {
                        if !eval(c, &name, &test.all_opts) {
                            continue;
                        }
                    }
                    let (matcher, used) = readers.entry(test.key.clone()).or_insert_with(|| {
                        let opts: Vec<(String, String)> = test
                            .opts
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        let spec = if opts.is_empty() {
                            name.clone()
                        } else {
                            format!(
                                "{name}[{}]",
                                opts.iter()
                                    .map(|(k, v)| format!("{k}=\"{v}\""))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        let def = load_filter(filters_dir, &spec, &[])
                            .unwrap_or_else(|e| panic!("{spec}: {e}"));
                        let filter = Fail2banFilter::compile(def, year)
                            .unwrap_or_else(|e| panic!("{spec}: {e}"));
                        let mut m = Arc::new(filter).matcher();
                        m.check_all = true;
                        (m, BTreeSet::new())
                    });
                    let journal = test.opts.get("logtype").map(String::as_str) == Some("journal");
                    let known = journal.then_some(clock.now);
                    if journal {
                        if let Some(p) =
                            test.all_opts.get("test.prefix-line").and_then(Json::as_str)
                        {
                            line = format!("{p}{line}");
                        }
                    }
                    let found = matcher.feed(&line, known, &clock);
                    let mut failures = Vec::new();
                    for f in found {
                        used.insert(f.rule);
                        if f.failure() {
                            failures.push(f);
                        }
                    }
                    if faildata.is_empty() {
                        continue;
                    }
                    out.total += 1;
                    let expect_match = faildata
                        .get("match")
                        .and_then(Json::as_bool)
                        .unwrap_or(false);
                    let verdict: Result<(), String> = (|| {
                        if failures.is_empty() {
                            return if expect_match {
                                Err("no failure, expected one".into())
                            } else {
                                Ok(())
                            };
                        }
                        if !expect_match {
                            return Err(format!(
                                "a failure ({}), expected none",
                                failures[0].id.as_ref().map(FailureId::text).unwrap_or("?")
                            ));
                        }
                        if failures.len() > 1 {
                            return Err(format!(
                                "{} regexes matched: {:?}",
                                failures.len(),
                                failures.iter().map(|f| f.rule).collect::<Vec<_>>()
                            ));
                        }
                        let f = &failures[0];
                        for (k, v) in &faildata {
                            if matches!(k.as_str(), "time" | "match" | "desc" | "constraint") {
                                continue;
                            }
                            value_matches(f, k, v)?;
                        }
                        if let Some(t) = faildata.get("time").and_then(Json::as_str) {
                            let want = json_time(t, &zone);
                            match f.time {
                                Some(got) if got == want => {}
                                got => {
                                    return Err(format!(
                                        "time {}, expected {t} ({want})",
                                        got.map(|g| g.to_string()).unwrap_or("none".into())
                                    ))
                                }
                            }
                        }
                        Ok(())
                    })();
                    match verdict {
                        Ok(()) => out.held += 1,
                        Err(why) => out
                            .failed
                            .push(format!("{file}:{lineno} [{}]: {why}\n    {line}", test.key)),
                    }
                }
            }
        }
        // As fail2ban: a failregex has samples when some line used it in this combination,
        // or used the same regex in another combination of the filter.
        let used_texts: BTreeSet<&str> = readers
            .values()
            .flat_map(|(m, used)| {
                let res = m.filter().failregexes();
                used.iter().map(move |&i| res[i].python.as_str())
            })
            .collect();
        for (matcher, _) in readers.values() {
            let f = matcher.filter();
            for re in f.failregexes().iter().chain(f.prefregex()) {
                out.regexes.insert(re.python.clone(), re.is_backtracking());
            }
        }
        for (key, (matcher, used)) in &readers {
            for (i, re) in matcher.filter().failregexes().iter().enumerate() {
                if !used.contains(&i) && !used_texts.contains(re.python.as_str()) {
                    out.unused.push(format!(
                        "{key}: failregex #{} has no sample: {}",
                        i + 1,
                        re.python
                    ));
                }
            }
        }
    }
    out
}

/// `# failJSON: {...}` and the other directives: the kind and the JSON text.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start_matches('#');
    if rest.len() == line.len() {
        return None;
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    for kind in ["failJSON", "fileOptions", "filterOptions", "addFILE"] {
        if let Some(json) = rest.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) {
            if !json.is_empty() {
                return Some((kind, json));
            }
        }
    }
    None
}

#[test]
fn fail2ban_sample_suite() {
    let suite = PathBuf::from(SUITE);
    if !suite.is_dir() || !Path::new(FILTERS).is_dir() {
        support::skip(
            "fail2ban_sample_suite",
            "Debian's fail2ban package is not installed (apt-get install fail2ban)",
        );
        return;
    }
    let filters = pristine_filters();
    let out = run_suite(filters.path(), &suite);
    let score = out.held as f64 * 100.0 / out.total.max(1) as f64;
    println!(
        "fail2ban sample suite: {} of {} assertions hold ({score:.2}%)",
        out.held, out.total
    );
    let backtracking = out.regexes.values().filter(|b| **b).count();
    println!(
        "{} distinct regexes (failregex and prefregex, tags expanded): {} on the linear engine, \
         {backtracking} need backtracking (look-around or back-references)",
        out.regexes.len(),
        out.regexes.len() - backtracking
    );
    for f in &out.failed {
        println!("  does not hold: {f}");
    }
    for u in &out.unused {
        println!("  {u}");
    }
    assert_eq!(
        out.total, EXPECTED,
        "the suite has {EXPECTED} assertions; walked {}",
        out.total
    );
    assert!(
        out.unused.is_empty(),
        "{} failregexes have no sample that matches (fail2ban's own suite has none)",
        out.unused.len()
    );
    assert!(
        score >= 99.5,
        "{} of {} assertions hold ({score:.2}%), below 99.5%",
        out.held,
        out.total
    );
}

/// Skipping the lines that contain none of a filter's skim literals (what `moat scan` and the
/// daemon's prefilter do, before any date is looked for) loses no failure: on every sample
/// file, with each filter's default options, the failures found among the kept lines are the
/// failures found among all lines.
#[test]
fn skipped_lines_hold_no_failure() {
    let suite = PathBuf::from(SUITE);
    if !suite.is_dir() || !Path::new(FILTERS).is_dir() {
        support::skip(
            "skipped_lines_hold_no_failure",
            "Debian's fail2ban package is not installed (apt-get install fail2ban)",
        );
        return;
    }
    let filters = pristine_filters();
    let clock = Clock {
        zone: TimeZone::posix(TEST_TZ).expect("POSIX zone"),
        now: Timestamp::from_second(TEST_NOW).expect("time"),
    };
    let year = Timestamp::now().to_zoned(TimeZone::UTC).year();
    let mut skimming = 0;
    for name in filter_names(&filters.path().join("filter.d")) {
        let Ok(text) = std::fs::read_to_string(suite.join(&name)) else {
            continue;
        };
        let def = load_filter(filters.path(), &name, &[]).expect("filter");
        let filter = Arc::new(Fail2banFilter::compile(def, year).expect("compiles"));
        let Some(lits) = filter.skim_literals().map(<[Vec<u8>]>::to_vec) else {
            continue;
        };
        skimming += 1;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        let run = |keep: &dyn Fn(&str) -> bool| -> Vec<(usize, String)> {
            let mut m = filter.matcher();
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                if !keep(l) {
                    continue;
                }
                for f in m.feed(l, None, &clock) {
                    if f.failure() {
                        out.push((i, f.id.map(|id| id.text().to_string()).unwrap_or_default()));
                    }
                }
            }
            out
        };
        let all = run(&|_| true);
        let kept = run(&|l: &str| {
            lits.iter()
                .any(|lit| l.as_bytes().windows(lit.len()).any(|w| w == lit.as_slice()))
        });
        assert_eq!(kept, all, "{name}: skipping lines changed the failures");
    }
    assert!(skimming > 50, "only {skimming} filters can skip lines");
}

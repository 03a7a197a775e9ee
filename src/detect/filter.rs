//! A filter: what turns one log line into a failure `{client, time}` or into nothing.
//!
//! Two kinds share one [`Filter`] type. A regex filter has failregexes with `<HOST>`, optional
//! ignoreregexes and prefregex (fail2ban's vocabulary, so an importer of `filter.d` fits), and a
//! time format. A JSON filter reads JSON-lines logs (Traefik, Caddy, Docker's json-file): field
//! conditions decide, and named fields hold the client and the time.
//!
//! The order of work is the order of cost: the caller's prefilter has already rejected lines
//! without the required literals; then failregexes run in order (first match wins); only a
//! matching line is checked against ignoreregexes; only then is the time parsed and the host
//! text turned into an address.

use std::net::IpAddr;

use jiff::Timestamp;
use serde::Deserialize;

use super::json::{JsonFilter, JsonSpec};
use super::pattern::{Pattern, PatternError};
use super::time::{self, TimeFormat};
use super::verdict::{real_client, Failure, Verdict};
use super::LineContext;

/// A filter as written in TOML: a built-in library file or a jail's inline definition.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// One line saying what the filter catches.
    #[serde(default)]
    pub description: String,
    /// The log format the filter expects, in words (shown by `moat filters show`).
    #[serde(default)]
    pub log_format: String,
    /// Patterns with `<HOST>`; the first that matches decides.
    #[serde(default)]
    pub failregex: Vec<String>,
    /// Patterns that veto a failregex match.
    #[serde(default)]
    pub ignoreregex: Vec<String>,
    /// A pattern every line must match first; `<F-CONTENT>` marks what failregexes see.
    #[serde(default)]
    pub prefregex: Option<String>,
    /// `auto`, `clf`, `iso8601`, `syslog`, `epoch` or a strftime pattern.
    #[serde(default)]
    pub time: Option<String>,
    /// Field conditions for JSON-lines logs, instead of failregexes.
    #[serde(default)]
    pub json: Option<JsonSpec>,
    /// For text lines wrapped in JSON (Docker's json-file): the failregexes run on this field.
    #[serde(default)]
    pub unwrap: Option<UnwrapSpec>,
    /// Example lines with the expected verdict, checked by the test suite and
    /// `moat filters test NAME`.
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// A filter read from fail2ban's `filter.d` (`filter = "fail2ban:sshd"`), compiled when
    /// the configuration was read; never written in TOML.
    #[serde(skip)]
    pub fail2ban: Option<super::fail2ban::adapter::Fail2banSpec>,
}

/// Where the application's own line is, when each log line is a JSON object wrapping it, as
/// Docker's json-file driver writes a container's output:
/// `{"log":"198.51.100.7 - - [...] \"POST /api/auth HTTP/1.1\" 422 ...\n","stream":"stdout","time":"..."}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UnwrapSpec {
    /// Dotted path of the string field holding the line (`log` for Docker).
    pub field: String,
    /// Dotted path of a field with the time, used when the line itself has none readable.
    #[serde(default)]
    pub time: Option<String>,
}

/// One example line of a filter's log format and what the filter must make of it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The line, as the log writes it.
    pub line: String,
    /// The client the line must yield; absent for a line that must not match.
    #[serde(default)]
    pub host: Option<IpAddr>,
    /// The time the line must yield, RFC 3339.
    #[serde(default)]
    pub time: Option<Timestamp>,
    /// Why this sample is here (what look-alike it guards against).
    #[serde(default)]
    pub note: String,
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    kind: Kind,
    time_format: TimeFormat,
    /// The field paths of [`UnwrapSpec`]: the line, and the fallback time.
    unwrap: Option<(Vec<String>, Option<Vec<String>>)>,
}

#[derive(Debug)]
enum Kind {
    Regex {
        prefregex: Option<Pattern>,
        failregex: Vec<Pattern>,
        ignoreregex: Vec<Pattern>,
    },
    Json(JsonFilter),
    /// A fail2ban filter and its state (multi-line buffer, date detector, connection ids).
    Fail2ban(Box<super::fail2ban::Matcher>),
}

/// A filter definition that cannot be compiled; `what` names the offending entry.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct FilterError {
    /// The entry: `failregex #2`, `prefregex`, `json`, ...
    pub what: String,
    /// Why it cannot be compiled.
    #[source]
    pub source: PatternError,
}

fn at(what: impl Into<String>) -> impl FnOnce(PatternError) -> FilterError {
    let what = what.into();
    move |source| FilterError { what, source }
}

impl Filter {
    /// Compiles a filter definition: its regexes (or JSON rules, or fail2ban filter), its time
    /// format and its unwrapping; the first entry that cannot be compiled is the error.
    pub fn compile(spec: &FilterSpec) -> Result<Filter, FilterError> {
        if let Some(f2b) = &spec.fail2ban {
            return Ok(Filter {
                kind: Kind::Fail2ban(Box::new(f2b.0.matcher())),
                time_format: TimeFormat::Auto,
                unwrap: None,
            });
        }
        let time_format = match &spec.time {
            None => TimeFormat::Auto,
            Some(t) => TimeFormat::from_name(t).map_err(|m| FilterError {
                what: "time".into(),
                source: PatternError { message: m },
            })?,
        };
        if let Some(json) = &spec.json {
            if !spec.failregex.is_empty() || spec.prefregex.is_some() {
                return Err(FilterError {
                    what: "json".into(),
                    source: PatternError {
                        message: "a filter has either failregex or json conditions, not both"
                            .into(),
                    },
                });
            }
            if spec.unwrap.is_some() {
                return Err(FilterError {
                    what: "unwrap".into(),
                    source: PatternError {
                        message: "unwrap applies to failregex filters; a json filter already \
                                  reads fields"
                            .into(),
                    },
                });
            }
            let kind = Kind::Json(JsonFilter::compile(json).map_err(at("json"))?);
            return Ok(Filter {
                kind,
                time_format,
                unwrap: None,
            });
        }
        if spec.failregex.is_empty() {
            return Err(FilterError {
                what: "failregex".into(),
                source: PatternError {
                    message: "no failregex: a filter needs at least one pattern with <HOST>, \
                              or json conditions"
                        .into(),
                },
            });
        }
        let prefregex = match &spec.prefregex {
            Some(p) => Some(Pattern::compile(p).map_err(at("prefregex"))?),
            None => None,
        };
        let pref_host = prefregex.as_ref().is_some_and(|p| p.has_host);
        let failregex = spec
            .failregex
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let what = format!("failregex #{}", i + 1);
                let pat = Pattern::compile(p).map_err(at(what.clone()))?;
                if !pat.has_host && !pref_host {
                    return Err(FilterError {
                        what,
                        source: PatternError {
                            message: "no <HOST> in the pattern: moat takes the client only \
                                      from the position <HOST> marks"
                                .into(),
                        },
                    });
                }
                Ok(pat)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ignoreregex = spec
            .ignoreregex
            .iter()
            .enumerate()
            .map(|(i, p)| Pattern::compile(p).map_err(at(format!("ignoreregex #{}", i + 1))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Filter {
            kind: Kind::Regex {
                prefregex,
                failregex,
                ignoreregex,
            },
            time_format,
            unwrap: spec.unwrap.as_ref().map(|u| {
                (
                    super::json::path(&u.field),
                    u.time.as_deref().map(super::json::path),
                )
            }),
        })
    }

    /// The literals of which a line must contain at least one to possibly match; `None` when
    /// some rule has no usable literal, so that every line is a candidate.
    pub fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        match &self.kind {
            Kind::Regex {
                prefregex,
                failregex,
                ..
            } => {
                let wrapped = self.unwrap.is_some();
                let usable = |lit: &Option<Vec<u8>>| -> Option<Vec<u8>> {
                    let lit = lit.as_ref()?;
                    if wrapped {
                        as_in_json(lit)
                    } else {
                        Some(lit.clone())
                    }
                };
                if let Some(lit) = prefregex.as_ref().and_then(|p| usable(&p.required_literal)) {
                    return Some(vec![lit]);
                }
                failregex
                    .iter()
                    .map(|p| usable(&p.required_literal))
                    .collect()
            }
            Kind::Json(j) => j.required_literal().map(|l| vec![l]),
            // Only when skipping lines cannot change a result: not with multi-line buffers,
            // nor with date patterns whose cut could join a literal together.
            Kind::Fail2ban(m) => m.filter().skim_literals().map(<[Vec<u8>]>::to_vec),
        }
    }

    /// Whether the filter reads the `log` field of Docker's json-file entries, whose partial
    /// entries must then be joined before it sees them.
    pub fn unwraps_docker_log(&self) -> bool {
        self.unwrap
            .as_ref()
            .is_some_and(|(field, _)| field == &["log"])
    }

    /// The failregexes as written, for reports; a JSON filter has one pseudo-rule.
    pub fn rule_names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Regex { failregex, .. } => failregex.iter().map(|p| p.source.clone()).collect(),
            Kind::Json(j) => vec![j.describe()],
            Kind::Fail2ban(m) => m
                .filter()
                .definition
                .failregex
                .iter()
                .map(|r| r.text.clone())
                .collect(),
        }
    }

    /// Decides what `line` is, as the next line of a stream: a fail2ban filter remembers
    /// what earlier lines said (multi-line failures, the last date); other filters do not,
    /// and this is [`Filter::check`].
    pub fn check_mut(&mut self, line: &[u8], ctx: &LineContext) -> Verdict {
        match &mut self.kind {
            Kind::Fail2ban(m) => super::fail2ban::adapter::check(m, line, ctx),
            _ => self.check(line, ctx),
        }
    }

    /// Decides what `line` is. Pure: the context supplies zone and reference time. A
    /// fail2ban filter judges the line as the first of a stream (see [`Filter::check_mut`]).
    pub fn check(&self, line: &[u8], ctx: &LineContext) -> Verdict {
        if let Kind::Fail2ban(m) = &self.kind {
            let mut fresh = m.filter().matcher();
            return super::fail2ban::adapter::check(&mut fresh, line, ctx);
        }
        let Some((field, time_field)) = &self.unwrap else {
            return self.check_text(line, ctx, None);
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(line) else {
            return Verdict::Miss;
        };
        let Some(inner) = super::json::lookup(&doc, field).and_then(|v| v.as_str()) else {
            return Verdict::Miss;
        };
        let inner = inner.strip_suffix('\n').unwrap_or(inner);
        let inner = inner.strip_suffix('\r').unwrap_or(inner);
        let outer_time = time_field
            .as_ref()
            .and_then(|p| super::json::lookup(&doc, p))
            .and_then(|v| v.as_str());
        self.check_text(inner.as_bytes(), ctx, outer_time.map(str::as_bytes))
    }

    /// `fallback_time` is text to read the time from when the line has none (the wrapper's).
    fn check_text(&self, line: &[u8], ctx: &LineContext, fallback_time: Option<&[u8]>) -> Verdict {
        match &self.kind {
            Kind::Fail2ban(_) => unreachable!("checked in Filter::check"),
            Kind::Json(j) => j.check(line, &self.time_format, ctx),
            Kind::Regex {
                prefregex,
                failregex,
                ignoreregex,
            } => {
                let mut text = line;
                let mut pref_host = None;
                let mut pref_time = None;
                if let Some(pref) = prefregex {
                    let Some(spans) = pref.find(line) else {
                        return if pref.runs_on(line) {
                            Verdict::Miss
                        } else {
                            Verdict::TooLong
                        };
                    };
                    pref_host = spans.host.map(|r| &line[r]);
                    pref_time = spans.time.map(|r| &line[r]);
                    if let Some(content) = spans.content {
                        text = &line[content];
                    }
                }
                let Some((rule, spans)) = failregex
                    .iter()
                    .enumerate()
                    .find_map(|(i, p)| p.find(text).map(|s| (i, s)))
                else {
                    return if failregex.iter().all(|p| p.runs_on(text)) {
                        Verdict::Miss
                    } else {
                        Verdict::TooLong
                    };
                };
                if ignoreregex.iter().any(|p| p.is_match(line)) {
                    return Verdict::Ignored;
                }
                // An ignoreregex that cannot run on the line cannot veto it: no failure
                // rather than one it might have vetoed.
                if !ignoreregex.iter().all(|p| p.runs_on(line)) {
                    return Verdict::TooLong;
                }
                let host_text = spans.host.map(|r| &text[r]).or(pref_host);
                let peer_text = spans.peer.map(|r| &text[r]);
                let Some(host) = real_client(host_text, peer_text, &ctx.proxies) else {
                    return Verdict::BadHost;
                };
                // The time is read from the `time` capture when the pattern has one, else
                // searched in the whole line.
                let time_text = spans.time.map(|r| &text[r]).or(pref_time).unwrap_or(line);
                let parsed = time::parse(time_text, &self.time_format, ctx)
                    .or_else(|| fallback_time.and_then(|t| time::parse(t, &TimeFormat::Auto, ctx)));
                match parsed {
                    Some((time, format)) => Verdict::Failure(Failure {
                        host,
                        time,
                        rule,
                        format,
                    }),
                    None => Verdict::NoTime { host },
                }
            }
        }
    }
}

/// The part of a required literal that is sure to appear verbatim once the line has been
/// written as a JSON string: encoders escape `"`, `\\` and control characters, Go's (Docker's)
/// also `<`, `>` and `&`, PHP's `/`. The longest piece without any of those, if it is long enough
/// to be worth a search.
fn as_in_json(lit: &[u8]) -> Option<Vec<u8>> {
    lit.split(|&b| b < 0x20 || b"\"\\<>&/".contains(&b))
        .max_by_key(|piece| piece.len())
        .filter(|piece| piece.len() >= 3)
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fail: &[&str]) -> FilterSpec {
        FilterSpec {
            failregex: fail.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn ctx() -> LineContext {
        LineContext::utc("2022-11-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn peer_decides_whether_the_header_client_counts() {
        let f = Filter::compile(&spec(&[
            r#"^<PEER> \S+ \S+ \[[^\]]+\] "POST /api/auth [^"]*" 422 .* cf=<HOST>$"#,
        ]))
        .unwrap();
        let host = |peer: &str, header: &str| {
            let line = format!(
                r#"{peer} - - [26/Oct/2022:20:55:11 +0000] "POST /api/auth HTTP/1.1" 422 52 "-" "bot" cf={header}"#
            );
            match f.check(line.as_bytes(), &ctx()) {
                Verdict::Failure(x) => Some(x.host.to_string()),
                Verdict::BadHost => Some("bad".into()),
                _ => None,
            }
        };
        assert_eq!(
            host("162.158.1.1", "203.0.113.9").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            host("198.51.100.7", "203.0.113.9").as_deref(),
            Some("198.51.100.7")
        );
        assert_eq!(host("162.158.1.1", "999.1.1.1").as_deref(), Some("bad"));
        assert!(Pattern::compile("<PEER> <HOST>").is_ok());
    }

    #[test]
    fn failure_with_time_and_host() {
        let f =
            Filter::compile(&spec(&[r#"^<HOST> \S+ \S+ \[[^\]]+\] "POST /api/auth "#])).unwrap();
        let v = f.check(
            br#"::ffff:198.51.100.7 - - [26/Oct/2022:20:55:11 +0200] "POST /api/auth HTTP/2.0" 422 59"#,
            &ctx(),
        );
        let Verdict::Failure(fail) = v else {
            panic!("{v:?}")
        };
        assert_eq!(fail.host.to_string(), "198.51.100.7");
        assert_eq!(fail.time.to_string(), "2022-10-26T18:55:11Z");
    }

    #[test]
    fn ignoreregex_and_bad_host_and_no_time() {
        let mut s = spec(&[r"^<HOST> login failed"]);
        s.ignoreregex = vec!["user=healthcheck".into()];
        let f = Filter::compile(&s).unwrap();
        assert_eq!(
            f.check(
                b"192.0.2.1 login failed user=healthcheck 2022-01-01T00:00:00Z",
                &ctx()
            ),
            Verdict::Ignored
        );
        assert_eq!(
            f.check(b"999.0.2.1 login failed 2022-01-01T00:00:00Z", &ctx()),
            Verdict::BadHost
        );
        assert_eq!(
            f.check(b"192.0.2.1 login failed", &ctx()),
            Verdict::NoTime {
                host: "192.0.2.1".parse().unwrap()
            }
        );
        assert_eq!(f.check(b"192.0.2.1 login ok", &ctx()), Verdict::Miss);
    }

    #[test]
    fn prefregex_content_is_what_failregexes_see() {
        let mut s = spec(&[r"^Invalid user \S+ from <HOST>$"]);
        s.prefregex = Some(r"^\S+ \S+ \S+ \S+ sshd\[\d+\]: <F-CONTENT>.+</F-CONTENT>$".into());
        let f = Filter::compile(&s).unwrap();
        let v = f.check(
            b"Oct 26 20:55:11 host sshd[12]: Invalid user admin from 203.0.113.5",
            &ctx(),
        );
        assert!(matches!(v, Verdict::Failure(f) if f.host.to_string() == "203.0.113.5"));
    }

    #[test]
    fn docker_json_file_lines_are_unwrapped() {
        let mut s = spec(&[r#"^<HOST> \S+ \S+ \[[^\]]+\] "POST /api/auth HTTP/[0-9.]+" 422 "#]);
        s.unwrap = Some(UnwrapSpec {
            field: "log".into(),
            time: Some("time".into()),
        });
        let f = Filter::compile(&s).unwrap();
        let line = br#"{"log":"198.51.100.7 - - [28/Mar/2026:10:00:00 +0000] \"POST /api/auth HTTP/1.1\" 422 59 \"-\" \"-\"\n","stream":"stdout","time":"2026-03-28T10:00:00.5Z"}"#;
        let Verdict::Failure(fail) = f.check(line, &ctx()) else {
            panic!("{:?}", f.check(line, &ctx()))
        };
        assert_eq!(fail.host.to_string(), "198.51.100.7");
        assert_eq!(fail.time.to_string(), "2026-03-28T10:00:00Z");
        // The literal the prefilter looks for is one the JSON encoding leaves alone.
        let lits = f.required_literals().unwrap();
        assert!(
            lits.iter().all(|l| memchr::memmem::find(line, l).is_some()),
            "{lits:?}"
        );
        // A line that is not JSON, or JSON without the field, is no failure.
        assert_eq!(f.check(&line[1..], &ctx()), Verdict::Miss);
        assert_eq!(f.check(br#"{"msg":"x"}"#, &ctx()), Verdict::Miss);
    }

    #[test]
    fn backtracking_patterns_skip_lines_too_long_for_them() {
        // Unanchored look-ahead: quadratic in the line, so it only runs on short lines.
        let f = Filter::compile(&spec(&[r"(?=.*failed)<HOST> \S+ failed"])).unwrap();
        let line = |pad: usize| {
            format!(
                "2022-01-01T00:00:00Z {}203.0.113.5 x failed",
                "z ".repeat(pad / 2)
            )
        };
        assert!(matches!(
            f.check(line(100).as_bytes(), &ctx()),
            Verdict::Failure(_)
        ));
        let long = line(super::super::pattern::FANCY_UNANCHORED_MAX);
        assert_eq!(f.check(long.as_bytes(), &ctx()), Verdict::TooLong);
        // Anchored: one start position, so it runs on much longer lines.
        let f = Filter::compile(&spec(&[r"^\S+ (?=.*failed)(?:z )*<HOST> \S+ failed"])).unwrap();
        let v = f.check(long.as_bytes(), &ctx());
        assert!(matches!(v, Verdict::Failure(_)), "{v:?}");
        let huge = line(super::super::pattern::FANCY_ANCHORED_MAX);
        assert_eq!(f.check(huge.as_bytes(), &ctx()), Verdict::TooLong);
        // An ignoreregex that cannot run on the line cannot let the failure through.
        let mut s = spec(&[r"^\S+ (?:z )*<HOST> \S+ failed"]);
        s.ignoreregex = vec![r"(?=.*healthcheck)".into()];
        let f = Filter::compile(&s).unwrap();
        assert!(matches!(
            f.check(line(100).as_bytes(), &ctx()),
            Verdict::Failure(_)
        ));
        assert_eq!(f.check(long.as_bytes(), &ctx()), Verdict::TooLong);
    }

    #[test]
    fn missing_host_is_refused() {
        let e = Filter::compile(&spec(&["login failed"])).unwrap_err();
        assert!(e.to_string().contains("<HOST>"), "{e}");
    }
}

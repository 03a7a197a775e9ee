//! Filters for JSON-lines logs: Traefik's and Caddy's access logs, Docker's json-file.
//!
//! Matching is by field, never by searching the serialised text, so a request path or a user
//! agent that contains `"DownstreamStatus":401` or an address is just the value of its own
//! field. The client is read from the one field the filter names and must be an address (or
//! `address:port`) in full; a string field the attacker controls cannot supply it.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::Value;

use super::pattern::{Pattern, PatternError};
use super::time::{self, FoundFormat, TimeFormat};
use super::verdict::{parse_host, Failure, Verdict};
use super::LineContext;

/// The `json` table of a filter.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JsonSpec {
    /// Dotted path of the field holding the client (`ClientHost`, `request.client_ip`); when a
    /// list, the first present field is used.
    pub host: OneOrMany,
    /// Dotted path of the field holding the TCP peer, when `host` is a header's client
    /// (CF-Connecting-IP): the header is believed only when the peer is one of Cloudflare's
    /// proxies; otherwise the peer is the client.
    #[serde(default)]
    pub peer: Option<String>,
    /// Dotted path of the field holding the time; a string in any known format or epoch seconds.
    pub time: OneOrMany,
    /// All of these must hold.
    #[serde(default, rename = "match")]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn paths(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One condition on one field.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    /// The field equals this string or number.
    #[serde(default)]
    pub equals: Option<Scalar>,
    /// The field equals one of these.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Scalar>>,
    /// The field (as text) matches this regex.
    #[serde(default)]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Str(String),
    Bool(bool),
}

impl Scalar {
    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
            // Some loggers write status codes as strings.
            (Scalar::Int(i), Value::String(s)) => s.parse::<i64>().ok() == Some(*i),
            (Scalar::Str(s), Value::String(t)) => s == t,
            (Scalar::Bool(b), Value::Bool(c)) => b == c,
            _ => false,
        }
    }

    /// Bytes that must appear verbatim in the serialised line when the field has this value.
    /// JSON encoders leave ASCII letters, digits and ` -_.:` alone, but some (PHP's
    /// `json_encode`) write `/` as `\/`: a string with slashes contributes its longest
    /// slash-free piece; a string with anything else contributes nothing.
    fn raw_literal(&self) -> Option<Vec<u8>> {
        match self {
            Scalar::Int(i) => Some(i.to_string().into_bytes()),
            Scalar::Str(s)
                if s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b" /-_.:".contains(&b)) =>
            {
                s.split('/')
                    .max_by_key(|piece| piece.len())
                    .map(|piece| piece.as_bytes().to_vec())
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Test {
    OneOf(Vec<Scalar>),
    Regex(Pattern),
}

#[derive(Debug)]
pub struct JsonFilter {
    host: Vec<Vec<String>>,
    peer: Option<Vec<String>>,
    time: Vec<Vec<String>>,
    conditions: Vec<(Vec<String>, Test)>,
}

pub(crate) fn path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_string).collect()
}

pub(crate) fn lookup<'v>(v: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k.as_str()))
}

impl JsonFilter {
    pub fn compile(spec: &JsonSpec) -> Result<JsonFilter, PatternError> {
        let mut conditions = Vec::new();
        for c in &spec.conditions {
            let set = [c.equals.is_some(), c.one_of.is_some(), c.regex.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                return Err(PatternError {
                    message: format!(
                        "condition on {:?} needs exactly one of equals, in, regex",
                        c.field
                    ),
                });
            }
            let test = if let Some(v) = &c.equals {
                Test::OneOf(vec![v.clone()])
            } else if let Some(v) = &c.one_of {
                Test::OneOf(v.clone())
            } else {
                let re = Pattern::compile(c.regex.as_deref().unwrap_or_default())?;
                if re.has_host {
                    return Err(PatternError {
                        message: "<HOST> is not allowed in a JSON condition: the client comes \
                                  from the json.host field"
                            .into(),
                    });
                }
                Test::Regex(re)
            };
            conditions.push((path(&c.field), test));
        }
        Ok(JsonFilter {
            host: spec.host.paths().iter().map(|p| path(p)).collect(),
            peer: spec.peer.as_deref().map(path),
            time: spec.time.paths().iter().map(|p| path(p)).collect(),
            conditions,
        })
    }

    pub fn describe(&self) -> String {
        let conds: Vec<String> = self
            .conditions
            .iter()
            .map(|(p, t)| match t {
                Test::OneOf(v) if v.len() == 1 => format!("{} = {:?}", p.join("."), v[0]),
                Test::OneOf(v) => format!("{} in {:?}", p.join("."), v),
                Test::Regex(r) => format!("{} ~ {}", p.join("."), r.source),
            })
            .collect();
        format!("json: {}", conds.join(", "))
    }

    /// The longest value that must appear verbatim in a matching line.
    pub fn required_literal(&self) -> Option<Vec<u8>> {
        self.conditions
            .iter()
            .filter_map(|(_, t)| match t {
                Test::OneOf(v) if v.len() == 1 => v[0].raw_literal(),
                Test::Regex(r) => r.required_literal.clone(),
                _ => None,
            })
            .filter(|l| l.len() >= 3)
            .max_by_key(|l| l.len())
    }

    pub fn check(&self, line: &[u8], format: &TimeFormat, ctx: &LineContext) -> Verdict {
        let Ok(doc) = serde_json::from_slice::<Value>(line) else {
            return Verdict::Miss;
        };
        let all = self.conditions.iter().all(|(p, test)| {
            let Some(v) = lookup(&doc, p) else {
                return false;
            };
            match test {
                Test::OneOf(options) => options.iter().any(|o| o.matches(v)),
                Test::Regex(re) => match v {
                    Value::String(s) => re.is_match(s.as_bytes()),
                    other => re.is_match(other.to_string().as_bytes()),
                },
            }
        });
        if !all {
            return Verdict::Miss;
        }
        let header = self
            .host
            .iter()
            .find_map(|p| lookup(&doc, p))
            .and_then(Value::as_str)
            .and_then(host_of);
        let host = match &self.peer {
            None => header,
            Some(p) => match lookup(&doc, p).and_then(Value::as_str).and_then(host_of) {
                Some(peer) if ctx.proxies.contains(peer) => header,
                Some(peer) => Some(peer),
                // A peer field named but absent or not an address: the client is unknown.
                None => None,
            },
        };
        let Some(host) = host else {
            return Verdict::BadHost;
        };
        let when = self.time.iter().find_map(|p| lookup(&doc, p));
        let parsed = match when {
            Some(Value::String(s)) => time::parse(s.as_bytes(), format, ctx),
            // From the number's text, not its f64 value: 1774692000.123 as an f64 is
            // 1774692000.12299990654.
            Some(Value::Number(n)) => time::parse_epoch(n.to_string().as_bytes())
                .or_else(|| n.as_f64().and_then(time::from_epoch_f64))
                .map(|t| (t, FoundFormat::Epoch)),
            _ => None,
        };
        match parsed {
            Some((time, format)) => Verdict::Failure(Failure {
                host,
                time,
                rule: 0,
                format,
            }),
            None => Verdict::NoTime { host },
        }
    }
}

/// An address, or `address:port` / `[v6]:port` as Traefik's `ClientAddr` writes it.
fn host_of(s: &str) -> Option<IpAddr> {
    parse_host(s.as_bytes()).or_else(|| {
        s.parse::<SocketAddr>()
            .ok()
            .map(|sa| sa.ip().to_canonical())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::filter::{Filter, FilterSpec};

    fn traefik() -> Filter {
        let spec: FilterSpec = toml::from_str(
            r#"
            [json]
            host = "ClientHost"
            time = "time"
            match = [
              { field = "RequestMethod", equals = "POST" },
              { field = "RequestPath", equals = "/api/auth" },
              { field = "DownstreamStatus", equals = 422 },
            ]
            "#,
        )
        .unwrap();
        Filter::compile(&spec).unwrap()
    }

    fn ctx() -> LineContext {
        LineContext::utc("2022-11-01T00:00:00Z".parse().unwrap())
    }

    #[test]
    fn matches_by_field() {
        let f = traefik();
        let line = br#"{"ClientHost":"198.51.100.7","RequestMethod":"POST","RequestPath":"/api/auth","DownstreamStatus":422,"time":"2022-10-26T20:55:11Z"}"#;
        let Verdict::Failure(fail) = f.check(line, &ctx()) else {
            panic!()
        };
        assert_eq!(fail.host.to_string(), "198.51.100.7");
        // "/api/auth" may be written "\/api\/auth": the longest piece without a slash is sure.
        assert_eq!(f.required_literals(), Some(vec![b"auth".to_vec()]));
    }

    #[test]
    fn attacker_text_in_other_fields_changes_nothing() {
        let f = traefik();
        // The path carries the whole success pattern and an address; the status is 200.
        let line = br#"{"ClientHost":"198.51.100.7","RequestMethod":"POST","RequestPath":"/api/auth\",\"DownstreamStatus\":422,\"ClientHost\":\"192.0.2.1","DownstreamStatus":200,"time":"2022-10-26T20:55:11Z"}"#;
        assert_eq!(f.check(line, &ctx()), Verdict::Miss);
        // A user agent that is an address cannot become the client.
        let line = br#"{"ClientHost":"not-an-ip","request_User-Agent":"192.0.2.1","RequestMethod":"POST","RequestPath":"/api/auth","DownstreamStatus":422,"time":"2022-10-26T20:55:11Z"}"#;
        assert_eq!(f.check(line, &ctx()), Verdict::BadHost);
    }

    #[test]
    fn a_header_client_counts_only_from_cloudflare() {
        let spec: FilterSpec = toml::from_str(
            r#"
            [json]
            host = "cf_connecting_ip"
            peer = "remote_addr"
            time = "time"
            match = [{ field = "status", equals = 422 }]
            "#,
        )
        .unwrap();
        let f = Filter::compile(&spec).unwrap();
        let host = |line: &str| match f.check(line.as_bytes(), &ctx()) {
            Verdict::Failure(x) => Some(x.host.to_string()),
            _ => None,
        };
        let line = |peer: &str, header: &str| {
            format!(
                r#"{{"remote_addr":"{peer}","cf_connecting_ip":"{header}","status":422,"time":"2022-10-26T20:55:11Z"}}"#
            )
        };
        // Through Cloudflare: the header names the client.
        assert_eq!(
            host(&line("172.70.1.2", "203.0.113.9")).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            host(&line("2400:cb00::5", "2001:db8::9")).as_deref(),
            Some("2001:db8::9")
        );
        // Straight to the origin with a forged header: the peer is the client.
        assert_eq!(
            host(&line("198.51.100.7", "203.0.113.9")).as_deref(),
            Some("198.51.100.7")
        );
        // From Cloudflare without a usable header: nobody to ban (never Cloudflare).
        assert_eq!(host(&line("172.70.1.2", "-")), None);
    }

    #[test]
    fn client_addr_with_port() {
        assert_eq!(
            host_of("[2001:db8::1]:443").unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            host_of("198.51.100.7:5555").unwrap().to_string(),
            "198.51.100.7"
        );
        assert_eq!(host_of("198.51.100.7:x"), None);
    }
}

//! The `abuseipdb` notifier: reports each banned address to AbuseIPDB (`POST /api/v2/report`,
//! form fields `ip`, `categories`, `comment`, `timestamp`; the key in the `Key` header).
//!
//! AbuseIPDB takes one report per address and reporter every 15 minutes (a second one is
//! answered 429 "You can only report the same IP address ... once in 15 minutes") and a
//! daily number of requests (1,000 on the free plan; beyond, 429 with `Retry-After`). moat
//! keeps both itself: an address reported less than `cooldown_minutes` ago is not sent, and
//! once `daily_quota` reports went out in a UTC day, or the API said the day's limit is
//! reached, the rest of that day's bans are not reported (counted in status). Bans by hand
//! (jail `manual`) and bans of networks (an IPv6 /64) are not reported: AbuseIPDB takes
//! addresses, and a report should rest on what moat saw.
//!
//! The comment is the jail, the failures and the evidence lines, with this host's own
//! addresses replaced by `[this host]`, cut to AbuseIPDB's 1,024 characters.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{outbox_enforcer, Channel, Delivery, Notice, Outbox, Undelivered};
use crate::enforce::registry::Registered;
use crate::enforce::{EnforceError, Kind, Retry, RetryHint};

/// AbuseIPDB's API, where no other base is configured.
pub const API: &str = "https://api.abuseipdb.com/api/v2";

/// The longest comment AbuseIPDB keeps.
const COMMENT_MAX: usize = 1024;

/// `[enforce.abuseipdb]` as written, defaults filled in.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AbuseIpdbSettings {
    /// A file holding the API key, readable by its owner only.
    pub key_file: PathBuf,
    /// The categories of each jail's reports (<https://www.abuseipdb.com/categories>), e.g.
    /// `{ sshd = [18, 22], portainer = [18, 21] }`.
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<u8>>,
    /// The categories of a jail `categories` does not name (default: 18, Brute-Force).
    #[serde(default = "default_categories")]
    pub default_categories: Vec<u8>,
    /// The most reports per UTC day (the free plan allows 1,000).
    #[serde(default = "default_quota")]
    pub daily_quota: u32,
    /// An address is reported at most once per this many minutes (AbuseIPDB's rule: 15).
    #[serde(default = "default_cooldown")]
    pub cooldown_minutes: u64,
    /// The API's base URL.
    #[serde(default = "default_api")]
    pub api: String,
    /// How many more times a failed report is tried.
    #[serde(default = "super::default_retries")]
    pub retries: u32,
    /// The most bans waiting to be reported.
    #[serde(default = "super::default_queue")]
    pub queue: usize,
    /// How long a request may take.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_categories() -> Vec<u8> {
    vec![18]
}
fn default_quota() -> u32 {
    1000
}
fn default_cooldown() -> u64 {
    15
}
fn default_api() -> String {
    API.into()
}
fn default_timeout() -> u64 {
    10
}

impl AbuseIpdbSettings {
    /// What is wrong with the settings, in words.
    pub fn check(&self) -> Result<(), String> {
        super::check_secret(&self.key_file)
            .map_err(|e| format!("[enforce.abuseipdb] key_file: {e}"))?;
        super::check_url(&self.api, "[enforce.abuseipdb] api")?;
        for (jail, cats) in self
            .categories
            .iter()
            .map(|(j, c)| (j.as_str(), c))
            .chain([("default_categories", &self.default_categories)])
        {
            if cats.is_empty() || cats.iter().any(|c| !(1..=30).contains(c)) {
                return Err(format!(
                    "[enforce.abuseipdb] categories of {jail}: {cats:?}: one or more of \
                     AbuseIPDB's category numbers (1 to 30; 18 is Brute-Force, 22 SSH, 21 Web \
                     App Attack)"
                ));
            }
        }
        if self.cooldown_minutes < 15 {
            return Err(
                "[enforce.abuseipdb] cooldown_minutes below 15: AbuseIPDB refuses a second \
                 report of an address within 15 minutes"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The comment of a report: what moat saw, without this host's addresses.
pub fn comment(n: &Notice, own: &[IpAddr]) -> String {
    let mut text = format!(
        "moat: {} failures in jail {}, banned {}",
        n.failures,
        n.jail,
        n.until_text()
    );
    for line in &n.evidence {
        text.push('\n');
        text.push_str(line);
    }
    // Longer addresses first, so that 192.0.2.10 is not half-replaced as 192.0.2.1.
    let mut own: Vec<String> = own.iter().map(|a| a.to_string()).collect();
    own.sort_by_key(|a| std::cmp::Reverse(a.len()));
    for a in own {
        text = text.replace(&a, "[this host]");
    }
    if text.len() > COMMENT_MAX {
        let mut cut = COMMENT_MAX - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

struct Reporter {
    s: AbuseIpdbSettings,
    key: String,
    agent: ureq::Agent,
    /// When each address was last reported (or found reported).
    reported: HashMap<IpAddr, Instant>,
    /// The UTC day and the reports sent in it.
    day: (jiff::civil::Date, u32),
    /// The API said the day's limit is reached (for this UTC day).
    exhausted: Option<jiff::civil::Date>,
    skipped: u64,
}

impl Reporter {
    fn today() -> jiff::civil::Date {
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
    }

    fn categories(&self, jail: &str) -> String {
        let cats = self
            .s
            .categories
            .get(jail)
            .unwrap_or(&self.s.default_categories);
        cats.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    }
}

/// What one report came to.
enum Sent {
    Reported,
    /// AbuseIPDB had it from us within 15 minutes.
    Cooldown,
    /// The day's limit is reached.
    Exhausted,
    /// Refused for good (a bad key, a bad field): said, not tried again.
    Refused(String),
}

impl Reporter {
    fn report(&mut self, n: &Notice, ip: IpAddr) -> Result<Sent, (String, RetryHint)> {
        let own = crate::enforce::safety::own_addresses();
        let comment = comment(n, &own);
        let ip_text = ip.to_string();
        let cats = self.categories(&n.jail);
        let timestamp = n.started.to_string();
        let resp = self
            .agent
            .post(format!("{}/report", self.s.api.trim_end_matches('/')))
            .header("Key", &self.key)
            .header("Accept", "application/json")
            .header("User-Agent", concat!("moat/", env!("CARGO_PKG_VERSION")))
            .send_form([
                ("ip", ip_text.as_str()),
                ("categories", cats.as_str()),
                ("comment", comment.as_str()),
                ("timestamp", timestamp.as_str()),
            ])
            .map_err(|e| (e.to_string(), RetryHint::Later))?;
        let status = resp.status().as_u16();
        let after = super::retry_after(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp.into_body().read_to_string().unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["detail"].as_str().map(String::from))
            .unwrap_or_else(|| body.chars().take(200).collect());
        let detail = crate::vocab::terminal::cell(&detail);
        Ok(match status {
            200..=299 => Sent::Reported,
            429 if detail.contains("15 minutes") || detail.contains("same IP") => Sent::Cooldown,
            429 => {
                tracing::warn!(notifier = "abuseipdb", retry_after = ?after, "daily limit reached: {detail}");
                Sent::Exhausted
            }
            500..=599 => return Err((format!("HTTP {status}"), RetryHint::Later)),
            _ => Sent::Refused(format!("HTTP {status}: {detail}")),
        })
    }
}

impl Channel for Reporter {
    fn deliver(&mut self, batch: Vec<Notice>) -> Result<u64, Undelivered> {
        let mut sent = 0;
        let mut refused = None;
        let cooldown = Duration::from_secs(self.s.cooldown_minutes * 60);
        let mut rest = batch.into_iter();
        while let Some(n) = rest.next() {
            let today = Reporter::today();
            if self.day.0 != today {
                self.day = (today, 0);
            }
            let host = n.net.prefix_len() == n.net.max_prefix_len();
            let ip = n.net.addr();
            let recent = self
                .reported
                .get(&ip)
                .is_some_and(|t| t.elapsed() < cooldown);
            if n.jail == "manual" || !host || recent {
                continue;
            }
            if self.exhausted == Some(today) || self.day.1 >= self.s.daily_quota {
                self.skipped += 1;
                continue;
            }
            match self.report(&n, ip) {
                Ok(Sent::Reported) => {
                    sent += 1;
                    self.day.1 += 1;
                    self.reported.insert(ip, Instant::now());
                }
                Ok(Sent::Cooldown) => {
                    self.day.1 += 1;
                    self.reported.insert(ip, Instant::now());
                }
                Ok(Sent::Exhausted) => {
                    self.exhausted = Some(today);
                    self.skipped += 1;
                }
                Ok(Sent::Refused(e)) => {
                    self.day.1 += 1;
                    tracing::error!(notifier = "abuseipdb", ip = %ip, "report refused: {e}");
                    refused = Some(e);
                }
                Err((error, retry)) => {
                    let mut left = vec![n];
                    left.extend(rest);
                    return Err(Undelivered {
                        left,
                        sent,
                        error,
                        retry,
                    });
                }
            }
        }
        match refused {
            Some(error) => Err(Undelivered {
                left: Vec::new(),
                sent,
                error,
                retry: RetryHint::Never,
            }),
            None => Ok(sent),
        }
    }

    fn remark(&self) -> Option<String> {
        let left = self.s.daily_quota.saturating_sub(self.day.1);
        let left = if self.exhausted == Some(self.day.0) {
            0
        } else {
            left
        };
        Some(format!(
            "{} reports left today, {} bans not reported for the quota",
            left, self.skipped
        ))
    }
}

/// The `abuseipdb` notifier.
pub struct AbuseIpdbEnforcer(Outbox);

outbox_enforcer!(AbuseIpdbEnforcer);

impl AbuseIpdbEnforcer {
    /// The notifier `settings` describe, its thread started.
    pub fn new(settings: &AbuseIpdbSettings) -> Result<AbuseIpdbEnforcer, String> {
        settings.check()?;
        let key = super::read_secret(&settings.key_file)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(settings.timeout_seconds.max(1))))
            .http_status_as_error(false)
            .build()
            .into();
        let channel = Reporter {
            s: settings.clone(),
            key,
            agent,
            reported: HashMap::new(),
            day: (Reporter::today(), 0),
            exhausted: None,
            skipped: 0,
        };
        let delivery = Delivery {
            digest: Duration::ZERO,
            retries: settings.retries,
            queue: settings.queue,
            first_retry: Duration::from_secs(1),
        };
        Ok(AbuseIpdbEnforcer(Outbox::start(
            "abuseipdb",
            Box::new(channel),
            delivery,
        )))
    }
}

impl Registered for AbuseIpdbEnforcer {
    type Settings = AbuseIpdbSettings;
    const NAME: &'static str = "abuseipdb";
    const KIND: Kind = Kind::Observer;
    const REQUIRES_TABLE: Option<&'static str> =
        Some("add [enforce.abuseipdb] with key_file (docs/notifications.md)");

    fn check(settings: &AbuseIpdbSettings) -> Result<(), String> {
        settings.check()
    }

    /// The outbox retries by itself; the runner never sees a failure.
    fn retry(_: Option<&AbuseIpdbSettings>) -> Retry {
        Retry::times(1)
    }

    fn build(s: Option<&AbuseIpdbSettings>) -> Result<(Self, Option<String>), EnforceError> {
        let s = s.ok_or_else(|| EnforceError::never("no [enforce.abuseipdb] table"))?;
        let e = AbuseIpdbEnforcer::new(s).map_err(EnforceError::never)?;
        Ok((
            e,
            Some(format!(
                "{} reports a day at most, an address once per {} minutes",
                s.daily_quota, s.cooldown_minutes
            )),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_hide_this_host_and_fit() {
        let n = Notice {
            jail: "sshd".into(),
            target: "192.0.2.7".into(),
            net: "192.0.2.7/32".parse().unwrap(),
            failures: 5,
            started: jiff::Timestamp::UNIX_EPOCH,
            until: None,
            node: "web1".into(),
            evidence: vec![format!(
                "Failed password for root from 192.0.2.7 to 198.51.100.10 {}",
                "é".repeat(900)
            )],
        };
        let own: Vec<IpAddr> = vec![
            "198.51.100.1".parse().unwrap(),
            "198.51.100.10".parse().unwrap(),
        ];
        let c = comment(&n, &own);
        assert!(c.contains("to [this host] "), "{c}");
        assert!(!c.contains("198.51.100.1"));
        assert!(c.contains("192.0.2.7"));
        assert!(c.len() <= COMMENT_MAX);
    }
}

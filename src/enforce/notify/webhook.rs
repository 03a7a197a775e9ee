//! The `webhook` notifier: one JSON request per digest, in the shape a chat service takes.
//!
//! Every body is a [`serde_json::Value`] built field by field, so log text is always a JSON
//! string and cannot end one or add a field. What a receiver interprets inside that string is
//! escaped for it: Slack's `&`, `<` and `>` (which start its mentions and links) become
//! entities; evidence in Markdown code blocks has its backticks replaced so that it cannot
//! close the block; Discord gets `allowed_mentions: {parse: []}` (an `@everyone` in a log line
//! pings nobody); Matrix gets an empty `m.mentions` and `@room` broken. The presets and the
//! generic body are documented in docs/notifications.md.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{outbox_enforcer, summary, Channel, Delivery, Notice, Outbox, Undelivered};
use crate::enforce::registry::Registered;
use crate::enforce::{EnforceError, Kind, Retry, RetryHint};

/// `[enforce.webhook]` as written, defaults filled in.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The shape of the body and how it is sent.
    #[serde(default)]
    pub preset: Preset,
    /// Where the request goes (ntfy: the topic's URL; Matrix: the room's `send/m.room.message`
    /// URL, moat adds the transaction id).
    pub url: Option<String>,
    /// A file holding the URL instead (Slack's and Discord's URLs are secrets), readable by its
    /// owner only.
    pub url_file: Option<PathBuf>,
    /// A file holding a token (Gotify's application token, Matrix's access token; a bearer
    /// token for ntfy and generic), readable by its owner only.
    pub token_file: Option<PathBuf>,
    /// At most one message per this many seconds; the bans in between make one digest.
    #[serde(default = "super::default_digest_seconds")]
    pub digest_seconds: u64,
    /// How many more times a failed request is tried (1 s, 2 s, 4 s, ... apart).
    #[serde(default = "super::default_retries")]
    pub retries: u32,
    /// The most bans waiting to be sent.
    #[serde(default = "super::default_queue")]
    pub queue: usize,
    /// How long a request may take.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    10
}

/// The shape of a webhook's body.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// moat's own body: the bans as JSON objects, and a text (docs/notifications.md).
    #[default]
    Generic,
    /// A Slack incoming webhook: `{"text": ...}` in Slack's mrkdwn.
    Slack,
    /// A Discord webhook: `{"content": ..., "allowed_mentions": {"parse": []}}`.
    Discord,
    /// ntfy's JSON publishing: `{"topic", "title", "message", "tags"}` to the server's root.
    Ntfy,
    /// Gotify's `POST /message` with the application token.
    Gotify,
    /// A Matrix room message (`m.notice`), sent with PUT and an access token.
    Matrix,
}

impl Preset {
    /// The longest text the receiver takes in one message, in characters, with room to
    /// spare.
    fn budget(self) -> usize {
        match self {
            Preset::Discord => 1900,
            Preset::Slack => 3500,
            Preset::Ntfy => 3500,
            Preset::Gotify | Preset::Generic => 8000,
            Preset::Matrix => 16000,
        }
    }

    fn style(self) -> Style {
        match self {
            Preset::Slack => Style::Slack,
            Preset::Discord => Style::Markdown,
            Preset::Matrix => Style::Matrix,
            _ => Style::Plain,
        }
    }
}

impl WebhookSettings {
    /// What is wrong with the settings: the URL, the secrets, what the preset needs.
    pub fn check(&self) -> Result<(), String> {
        match (&self.url, &self.url_file) {
            (None, Some(p)) if p.is_relative() => {}
            _ => {
                self.url()?;
            }
        }
        let needs_token = matches!(self.preset, Preset::Gotify | Preset::Matrix);
        match &self.token_file {
            Some(p) => {
                super::check_secret(p).map_err(|e| format!("[enforce.webhook] token_file: {e}"))?;
            }
            None if needs_token => {
                return Err(format!(
                    "[enforce.webhook] preset {:?} needs token_file (the {})",
                    self.preset,
                    if self.preset == Preset::Gotify {
                        "application token"
                    } else {
                        "access token"
                    }
                ))
            }
            None => {}
        }
        if self.timeout_seconds == 0 {
            return Err("[enforce.webhook] timeout_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// The URL, from `url` or `url_file` (exactly one), checked.
    fn url(&self) -> Result<String, String> {
        let url = match (&self.url, &self.url_file) {
            (Some(u), None) => u.clone(),
            (None, Some(p)) => {
                super::read_secret(p).map_err(|e| format!("[enforce.webhook] url_file: {e}"))?
            }
            _ => {
                return Err(
                    "[enforce.webhook] needs exactly one of url and url_file; hint: \
                     url_file = \"/etc/moat/webhook.url\" (readable by root only)"
                        .into(),
                )
            }
        };
        super::check_url(&url, "[enforce.webhook] url")?;
        if self.preset == Preset::Ntfy && topic_of(&url).is_none() {
            return Err(format!(
                "[enforce.webhook] url {url:?}: ntfy needs the topic's URL, e.g. \
                 \"https://ntfy.example.org/moat-bans\""
            ));
        }
        Ok(url)
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            digest: Duration::from_secs(self.digest_seconds),
            retries: self.retries,
            queue: self.queue,
            first_retry: Duration::from_secs(1),
        }
    }
}

/// ntfy: the topic URL's server root and topic (`https://h/x/topic` → `https://h/x`, `topic`).
fn topic_of(url: &str) -> Option<(String, String)> {
    let trimmed = url.trim_end_matches('/');
    let (root, topic) = trimmed.rsplit_once('/')?;
    if topic.is_empty() || root.ends_with('/') || !root.contains("://") {
        return None;
    }
    Some((root.to_string(), topic.to_string()))
}

/// How attacker text is made harmless for a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Shown as it is (ntfy, Gotify, generic).
    Plain,
    /// Slack's mrkdwn: `&`, `<`, `>` as entities, evidence in a code block.
    Slack,
    /// Discord's Markdown: evidence in a code block.
    Markdown,
    /// Matrix plain text: `@room` broken.
    Matrix,
}

/// Text from a log made inert for `style` (evidence, inside a code block where there is one).
fn escape(text: &str, style: Style) -> String {
    match style {
        Style::Plain => text.to_string(),
        Style::Slack => text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('`', "\u{2035}"),
        Style::Markdown => text.replace('`', "\u{2035}"),
        Style::Matrix => text.replace("@room", "@\u{2060}room"),
    }
}

/// The digest as text for `style`, at most `budget` characters: a title line, then per ban a
/// line and its evidence, and how many did not fit.
pub fn digest_text(notices: &[Notice], style: Style, budget: usize) -> String {
    let node = notices.first().map_or("", |n| n.node.as_str());
    let mut text = format!("moat on {}: {}", escape(node, style), summary(notices));
    let fence = matches!(style, Style::Slack | Style::Markdown);
    for (i, n) in notices.iter().enumerate() {
        let mut block = format!(
            "\n\n{} banned by jail {} {} after {} failure{}",
            n.target,
            escape(&n.jail, style),
            n.until_text(),
            n.failures,
            if n.failures == 1 { "" } else { "s" }
        );
        if !n.evidence.is_empty() {
            block.push_str(if fence { "\n```\n" } else { "\n" });
            for line in &n.evidence {
                if !fence {
                    block.push_str("    ");
                }
                block.push_str(&escape(line, style));
                block.push('\n');
            }
            if fence {
                block.push_str("```");
            }
        }
        let left = notices.len() - i;
        // Room for the line that says how many more there are.
        let reserve = if left > 1 { 40 } else { 0 };
        if text.chars().count() + block.chars().count() + reserve > budget {
            text.push_str(&format!("\n\n… and {left} more"));
            break;
        }
        text.push_str(&block);
    }
    text
}

/// The request a preset makes of a digest: method, URL, body.
pub fn request(preset: Preset, url: &str, notices: &[Notice], txn: u64) -> (String, String, Value) {
    let text = digest_text(notices, preset.style(), preset.budget());
    let node = notices.first().map_or("", |n| n.node.as_str());
    let title = format!("moat on {node}: {}", summary(notices));
    match preset {
        Preset::Generic => (
            "POST".into(),
            url.into(),
            json!({
                "source": "moat",
                "node": node,
                "count": notices.len(),
                "bans": notices,
                "text": text,
            }),
        ),
        Preset::Slack => ("POST".into(), url.into(), json!({ "text": text })),
        Preset::Discord => (
            "POST".into(),
            url.into(),
            json!({
                "username": "moat",
                "content": text,
                "allowed_mentions": { "parse": [] },
            }),
        ),
        Preset::Ntfy => {
            let (root, topic) = topic_of(url).unwrap_or_else(|| (url.into(), "moat".into()));
            (
                "POST".into(),
                root,
                json!({
                    "topic": topic,
                    "title": title,
                    "message": text,
                    "tags": ["no_entry"],
                }),
            )
        }
        Preset::Gotify => (
            "POST".into(),
            url.into(),
            json!({ "title": title, "message": text, "priority": 5 }),
        ),
        Preset::Matrix => (
            "PUT".into(),
            format!("{}/moat-{txn}", url.trim_end_matches('/')),
            json!({ "msgtype": "m.notice", "body": text, "m.mentions": {} }),
        ),
    }
}

/// Sends digests to a webhook.
struct Webhook {
    preset: Preset,
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Matrix transaction ids: unique per message (the start time, then counting).
    txn: u64,
}

impl Channel for Webhook {
    fn deliver(&mut self, batch: Vec<Notice>) -> Result<u64, Undelivered> {
        self.txn += 1;
        let (method, url, body) = request(self.preset, &self.url, &batch, self.txn);
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url)
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("moat/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            req = match self.preset {
                Preset::Gotify => req.header("X-Gotify-Key", token),
                _ => req.header("Authorization", format!("Bearer {token}")),
            };
        }
        let req = match req.body(body.to_string().into_bytes()) {
            Ok(r) => r,
            Err(e) => return Err(Undelivered::all(batch, e.to_string(), RetryHint::Never)),
        };
        let resp = match self.agent.run(req) {
            Ok(r) => r,
            Err(e) => return Err(Undelivered::all(batch, e.to_string(), RetryHint::Later)),
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(1),
            429 => {
                let after = super::retry_after(
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                );
                Err(Undelivered::all(
                    batch,
                    "HTTP 429 (rate limited)",
                    RetryHint::After(after),
                ))
            }
            500..=599 | 408 => Err(Undelivered::all(
                batch,
                format!("HTTP {status}"),
                RetryHint::Later,
            )),
            _ => {
                let text = resp.into_body().read_to_string().unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                Err(Undelivered::all(
                    batch,
                    format!("HTTP {status}: {}", crate::vocab::terminal::visible(&text)),
                    RetryHint::Never,
                ))
            }
        }
    }
}

/// The `webhook` notifier.
pub struct WebhookEnforcer(Outbox);

outbox_enforcer!(WebhookEnforcer);

impl WebhookEnforcer {
    /// The notifier `settings` describe, its thread started.
    pub fn new(settings: &WebhookSettings) -> Result<WebhookEnforcer, String> {
        let url = settings.url()?;
        let token = settings
            .token_file
            .as_deref()
            .map(super::read_secret)
            .transpose()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(settings.timeout_seconds)))
            .http_status_as_error(false)
            .build()
            .into();
        let channel = Webhook {
            preset: settings.preset,
            url,
            token,
            agent,
            txn: jiff::Timestamp::now().as_millisecond() as u64 * 1000,
        };
        Ok(WebhookEnforcer(Outbox::start(
            "webhook",
            Box::new(channel),
            settings.delivery(),
        )))
    }
}

impl Registered for WebhookEnforcer {
    type Settings = WebhookSettings;
    const NAME: &'static str = "webhook";
    const KIND: Kind = Kind::Observer;
    const REQUIRES_TABLE: Option<&'static str> =
        Some("add [enforce.webhook] with preset and url_file (docs/notifications.md)");

    fn check(settings: &WebhookSettings) -> Result<(), String> {
        settings.check()
    }

    /// The outbox retries by itself; the runner never sees a failure.
    fn retry(_: Option<&WebhookSettings>) -> Retry {
        Retry::times(1)
    }

    fn build(s: Option<&WebhookSettings>) -> Result<(Self, Option<String>), EnforceError> {
        let s = s.ok_or_else(|| EnforceError::never("no [enforce.webhook] table"))?;
        let e = WebhookEnforcer::new(s).map_err(EnforceError::never)?;
        Ok((
            e,
            Some(format!(
                "{:?} preset, a digest at most every {} s",
                s.preset, s.digest_seconds
            )),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(evidence: &str) -> Notice {
        Notice {
            jail: "sshd".into(),
            target: "192.0.2.7".into(),
            net: "192.0.2.7/32".parse().unwrap(),
            failures: 5,
            started: jiff::Timestamp::UNIX_EPOCH,
            until: None,
            node: "web1".into(),
            evidence: vec![evidence.into()],
        }
    }

    const HOSTILE: &str = "\"}, \"x\": 1, {\" <!channel> <@&1> @everyone @room ``` **b** <script>alert(1)</script> &amp;";

    #[test]
    fn hostile_text_stays_inside_its_string() {
        let n = vec![notice(HOSTILE)];
        for preset in [
            Preset::Generic,
            Preset::Slack,
            Preset::Discord,
            Preset::Ntfy,
            Preset::Gotify,
            Preset::Matrix,
        ] {
            let (_, _, body) = request(preset, "https://hooks.example.org/a/topic", &n, 7);
            let text = body.to_string();
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, body);
            assert!(back.get("x").is_none(), "{preset:?}: {text}");
        }
        let (_, _, slack) = request(Preset::Slack, "https://h.example.org/", &n, 1);
        let t = slack["text"].as_str().unwrap();
        assert!(!t.contains("<!channel>") && !t.contains("<script>"), "{t}");
        assert!(t.contains("&lt;!channel&gt;") && t.contains("&amp;amp;"));
        // The evidence cannot close its code block.
        assert_eq!(t.matches("```").count(), 2, "{t}");
        let (_, _, discord) = request(Preset::Discord, "https://h.example.org/", &n, 1);
        assert_eq!(discord["allowed_mentions"], json!({ "parse": [] }));
        assert_eq!(
            discord["content"].as_str().unwrap().matches("```").count(),
            2
        );
        let (method, url, matrix) = request(
            Preset::Matrix,
            "https://m.example.org/_matrix/client/v3/rooms/!r:example.org/send/m.room.message",
            &n,
            9,
        );
        assert_eq!(method, "PUT");
        assert!(url.ends_with("/send/m.room.message/moat-9"));
        assert!(!matrix["body"].as_str().unwrap().contains("@room"));
        assert_eq!(matrix["m.mentions"], json!({}));
    }

    #[test]
    fn digests_fit_the_receiver() {
        let many: Vec<Notice> = (0..500).map(|_| notice(&"x".repeat(400))).collect();
        let (_, _, discord) = request(Preset::Discord, "https://h.example.org/", &many, 1);
        let content = discord["content"].as_str().unwrap();
        assert!(content.chars().count() <= 2000, "{}", content.len());
        assert!(content.starts_with("moat on web1: 500 bans (sshd 500)"));
        assert!(content.ends_with("more"), "{content}");
        let (_, _, generic) = request(Preset::Generic, "https://h.example.org/", &many, 1);
        assert_eq!(generic["bans"].as_array().unwrap().len(), 500);
        assert_eq!(generic["count"], 500);
        let (_, root, ntfy) = request(Preset::Ntfy, "https://ntfy.example.org/moat", &many, 1);
        assert_eq!(root, "https://ntfy.example.org");
        assert_eq!(ntfy["topic"], "moat");
    }
}

//! The `email` notifier: one mail per digest over SMTP (lettre), with STARTTLS, implicit TLS,
//! or plain SMTP to a relay on this host.
//!
//! Every header is built by lettre's typed builders from the configuration: the sender, the
//! recipients, and a subject of fixed text, the host's name and the jails' names. Log text
//! goes into the body only, which lettre encodes; a CR or LF in a log line is shown as `\r`
//! and can neither end a header nor add one.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::Deserialize;

use super::webhook::{digest_text, Style};
use super::{outbox_enforcer, summary, Channel, Delivery, Notice, Outbox, Undelivered};
use crate::enforce::registry::Registered;
use crate::enforce::{EnforceError, Kind, Retry, RetryHint};

/// `[enforce.email]` as written, defaults filled in.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// The SMTP server's host name (checked against its certificate) or address.
    pub server: String,
    /// Its port; by default 587 (STARTTLS), 465 (TLS) or 25 (plain).
    pub port: Option<u16>,
    /// How the connection is protected.
    #[serde(default)]
    pub security: Security,
    /// The user to log in as (with `password_file`).
    pub username: Option<String>,
    /// A file holding the password, readable by its owner only.
    pub password_file: Option<PathBuf>,
    /// A PEM file of a certificate authority to trust besides the usual ones (a private
    /// relay's).
    pub ca_file: Option<PathBuf>,
    /// The sender, e.g. `"moat <moat@example.org>"`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// At most one mail per this many seconds; the bans in between make one digest.
    #[serde(default = "default_digest_seconds")]
    pub digest_seconds: u64,
    /// How many more times a failed mail is tried (1 s, 2 s, 4 s, ... apart).
    #[serde(default = "super::default_retries")]
    pub retries: u32,
    /// The most bans waiting to be sent.
    #[serde(default = "super::default_queue")]
    pub queue: usize,
    /// How long an SMTP exchange may take.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_digest_seconds() -> u64 {
    300
}

fn default_timeout() -> u64 {
    30
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a server on this host (a local relay).
    Plain,
}

impl EmailSettings {
    fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::Plain => 25,
        })
    }

    /// What is wrong with the settings, in words.
    pub fn check(&self) -> Result<(), String> {
        self.mailboxes()?;
        if self.server.trim().is_empty() {
            return Err("[enforce.email] server is empty".into());
        }
        if self.security == Security::Plain && !is_loopback(&self.server) {
            return Err(format!(
                "[enforce.email] security = \"plain\" sends the password and the evidence in \
                 clear: only to a server on this host (127.0.0.1, ::1, localhost), not {:?}; \
                 hint: security = \"starttls\" or \"tls\"",
                self.server
            ));
        }
        match (&self.username, &self.password_file) {
            (Some(_), Some(p)) => {
                super::check_secret(p).map_err(|e| format!("[enforce.email] password_file: {e}"))?
            }
            (None, None) => {}
            _ => return Err("[enforce.email] username and password_file go together".to_string()),
        }
        if let Some(ca) = &self.ca_file {
            if ca.is_absolute() {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("[enforce.email] ca_file {}: {e}", ca.display()))?;
                Certificate::from_pem(&pem)
                    .map_err(|e| format!("[enforce.email] ca_file {}: {e}", ca.display()))?;
            }
        }
        if self.timeout_seconds == 0 {
            return Err("[enforce.email] timeout_seconds must be at least 1".into());
        }
        Ok(())
    }

    /// The sender and the recipients, parsed.
    fn mailboxes(&self) -> Result<(Mailbox, Vec<Mailbox>), String> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e| format!("[enforce.email] from {:?}: {e}", self.from))?;
        if self.to.is_empty() {
            return Err("[enforce.email] to names no recipient".into());
        }
        let to = self
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| format!("[enforce.email] to {t:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((from, to))
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            digest: Duration::from_secs(self.digest_seconds),
            retries: self.retries,
            queue: self.queue,
            first_retry: Duration::from_secs(1),
        }
    }

    /// The transport these settings describe.
    fn transport(&self) -> Result<SmtpTransport, String> {
        let mut builder = SmtpTransport::builder_dangerous(self.server.as_str())
            .port(self.port())
            .timeout(Some(Duration::from_secs(self.timeout_seconds)));
        if self.security != Security::Plain {
            let mut params = TlsParameters::builder(self.server.clone());
            if let Some(ca) = &self.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| e.to_string())?;
            builder = builder.tls(match self.security {
                Security::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(p)) = (&self.username, &self.password_file) {
            let password = super::read_secret(p)?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }
}

/// Whether `server` names this host.
fn is_loopback(server: &str) -> bool {
    let s = server.trim_start_matches('[').trim_end_matches(']');
    s.eq_ignore_ascii_case("localhost")
        || s.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The mail for a digest.
pub fn message(from: &Mailbox, to: &[Mailbox], notices: &[Notice]) -> Result<Message, String> {
    let node = notices.first().map_or("", |n| n.node.as_str());
    let mut b = Message::builder()
        .from(from.clone())
        .subject(format!("[moat] {node}: {}", summary(notices)));
    for t in to {
        b = b.to(t.clone());
    }
    let mut body = digest_text(notices, Style::Plain, 1_000_000);
    body.push_str("\n\n-- \nmoat (docs/notifications.md)\n");
    b.header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| e.to_string())
}

struct Mailer {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Channel for Mailer {
    fn deliver(&mut self, batch: Vec<Notice>) -> Result<u64, Undelivered> {
        let msg = match message(&self.from, &self.to, &batch) {
            Ok(m) => m,
            Err(e) => return Err(Undelivered::all(batch, e, RetryHint::Never)),
        };
        match self.transport.send(&msg) {
            Ok(_) => Ok(1),
            Err(e) => {
                // A permanent refusal (5xx: bad credentials, a recipient refused) will not
                // pass by itself; everything else (4xx, the network, TLS) may.
                let retry = if e.is_permanent() {
                    RetryHint::Never
                } else {
                    RetryHint::Later
                };
                Err(Undelivered::all(batch, format!("SMTP: {e}"), retry))
            }
        }
    }
}

/// The `email` notifier.
pub struct EmailEnforcer(Outbox);

outbox_enforcer!(EmailEnforcer);

impl EmailEnforcer {
    /// The notifier `settings` describe, its thread started.
    pub fn new(settings: &EmailSettings) -> Result<EmailEnforcer, String> {
        settings.check()?;
        let (from, to) = settings.mailboxes()?;
        let channel = Mailer {
            transport: settings.transport()?,
            from,
            to,
        };
        Ok(EmailEnforcer(Outbox::start(
            "email",
            Box::new(channel),
            settings.delivery(),
        )))
    }
}

impl Registered for EmailEnforcer {
    type Settings = EmailSettings;
    const NAME: &'static str = "email";
    const KIND: Kind = Kind::Observer;
    const REQUIRES_TABLE: Option<&'static str> =
        Some("add [enforce.email] with server, from and to (docs/notifications.md)");

    fn check(settings: &EmailSettings) -> Result<(), String> {
        settings.check()
    }

    /// The outbox retries by itself; the runner never sees a failure.
    fn retry(_: Option<&EmailSettings>) -> Retry {
        Retry::times(1)
    }

    fn build(s: Option<&EmailSettings>) -> Result<(Self, Option<String>), EnforceError> {
        let s = s.ok_or_else(|| EnforceError::never("no [enforce.email] table"))?;
        let e = EmailEnforcer::new(s).map_err(EnforceError::never)?;
        Ok((
            e,
            Some(format!(
                "{}:{} ({:?}), a digest at most every {} s",
                s.server,
                s.port(),
                s.security,
                s.digest_seconds
            )),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> EmailSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn plain_smtp_only_to_this_host() {
        let base = "from = \"moat <moat@example.org>\"\nto = [\"admin@example.org\"]\n";
        let s = settings(&format!(
            "server = \"smtp.example.org\"\nsecurity = \"plain\"\n{base}"
        ));
        assert!(s
            .check()
            .unwrap_err()
            .contains("only to a server on this host"));
        let s = settings(&format!(
            "server = \"127.0.0.1\"\nsecurity = \"plain\"\n{base}"
        ));
        assert!(s.check().is_ok());
        assert_eq!(s.port(), 25);
        let s = settings(&format!("server = \"smtp.example.org\"\n{base}"));
        assert_eq!((s.security, s.port()), (Security::Starttls, 587));
        let s = settings("server = \"smtp.example.org\"\nfrom = \"not an address\"\nto = []\n");
        assert!(s.check().unwrap_err().contains("from"));
        let s = settings(&format!(
            "server = \"smtp.example.org\"\nusername = \"u\"\n{base}"
        ));
        assert!(s.check().unwrap_err().contains("go together"));
    }

    #[test]
    fn log_text_reaches_the_body_only() {
        let n = Notice {
            jail: "sshd".into(),
            target: "192.0.2.7".into(),
            net: "192.0.2.7/32".parse().unwrap(),
            failures: 5,
            started: jiff::Timestamp::UNIX_EPOCH,
            until: None,
            node: "web1".into(),
            evidence: vec![super::super::evidence_line(
                b"Failed password\r\nBcc: victim@example.org\r\n\r\n<b>x</b>",
            )],
        };
        let from: Mailbox = "moat <moat@example.org>".parse().unwrap();
        let to: Vec<Mailbox> = vec!["admin@example.org".parse().unwrap()];
        let msg = message(&from, &to, &[n]).unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.to_ascii_lowercase().contains("bcc"), "{head}");
        assert!(
            head.contains("Subject: [moat] web1: 1 ban (sshd 1)"),
            "{head}"
        );
        assert!(
            body.contains("Failed password\\r\\nBcc: victim@example.org"),
            "{body}"
        );
        assert_eq!(msg.envelope().to().len(), 1);
    }
}

//! The enforcers moat has, each registered once.
//!
//! An enforcer is one file in [`crate::enforce`] that implements [`Enforcer`] and
//! [`Registered`] (its name, its settings table with their defaults, its [`Kind`], its
//! [`Retry`] policy, how it is built), and one line in the `registry!` list below. From that
//! list come the names `[enforce] use` accepts ([`EnforcerName`]), the `[enforce]` table with
//! one `[enforce.NAME]` table per enforcer ([`EnforceSettings`]), how drop-ins override it, the
//! checks run when the configuration is read, and [`EnforceSettings::build`], the one place
//! the daemon turns a name into a running enforcer. `kernel` (alias `auto`) is not an
//! enforcer of its own: it picks `nftables` where that works, else `iptables`.

use std::fmt::Debug;

use serde::Deserialize;

use super::notify::{abuseipdb, email, webhook};
use super::{cloudflare, exec, iptables, log, nftables};
use super::{EnforceError, Enforcer, Kind, Retry};

/// What an enforcer tells the registry about itself.
pub trait Registered: Enforcer + Sized + 'static {
    /// Its `[enforce.NAME]` table; [`NoSettings`] when it has none.
    type Settings: for<'de> Deserialize<'de> + Clone + Debug + PartialEq;
    /// Its name in `[enforce] use`, status and logs.
    const NAME: &'static str;
    /// Where its bans take effect, which decides which jails' bans it takes.
    const KIND: Kind;
    /// The hint when `use` names it and its table is missing; `None`: the table is optional.
    const REQUIRES_TABLE: Option<&'static str> = None;

    /// What is wrong with its settings, in words (checked when the configuration is read).
    fn check(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// How its failed changes are tried again.
    fn retry(settings: Option<&Self::Settings>) -> Retry;

    /// Builds it, with a line for status saying how it works; an error says why it cannot
    /// work here.
    fn build(settings: Option<&Self::Settings>) -> Result<(Self, Option<String>), EnforceError>;
}

/// The settings of an enforcer that has none: its table, if written, must be empty.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

/// An enforcer ready to run, with what the daemon needs to run it.
pub struct Built {
    /// The enforcer itself.
    pub enforcer: Box<dyn Enforcer>,
    /// Which jails' bans it takes.
    pub kind: Kind,
    /// How its failed changes are tried again.
    pub retry: Retry,
    /// Why this enforcer, or how it works (status).
    pub detail: Option<String>,
}

impl Built {
    /// An enforcer built by its own code rather than [`Registered::build`] (the Cloudflare
    /// enforcer of a fleet's node, which shares the lease's gate with the cluster task).
    pub fn of<E: Registered>(
        enforcer: E,
        settings: Option<&E::Settings>,
        detail: Option<String>,
    ) -> Built {
        Built {
            enforcer: Box::new(enforcer),
            kind: E::KIND,
            retry: E::retry(settings),
            detail,
        }
    }
}

fn build<E: Registered>(settings: Option<&E::Settings>) -> Result<Built, EnforceError> {
    let (enforcer, detail) = E::build(settings).map_err(|e| EnforceError {
        message: format!("the {} enforcer cannot work here: {}", E::NAME, e.message),
        retry: e.retry,
    })?;
    Ok(Built {
        enforcer: Box::new(enforcer),
        kind: E::KIND,
        retry: E::retry(settings),
        detail,
    })
}

fn check<E: Registered>(settings: Option<&E::Settings>) -> Result<(), String> {
    match (settings, E::REQUIRES_TABLE) {
        (Some(s), _) => E::check(s),
        (None, None) => Ok(()),
        (None, Some(hint)) => Err(format!(
            "[enforce] uses \"{0}\" but there is no [enforce.{0}] table; hint: {hint}",
            E::NAME
        )),
    }
}

macro_rules! registry {
    ($( $(#[$doc:meta])* $variant:ident => $field:ident : $ty:ty, )*) => {
        /// An enforcer `[enforce] use` may name.
        #[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[serde(rename_all = "lowercase")]
        pub enum EnforcerName {
            $( $(#[$doc])* $variant, )*
            /// nftables where it works, else iptables/ipset (`auto` is the same).
            #[serde(alias = "auto")]
            Kernel,
        }

        impl EnforcerName {
            /// As `[enforce] use` writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( EnforcerName::$variant => <$ty as Registered>::NAME, )*
                    EnforcerName::Kernel => "kernel",
                }
            }
        }

        /// `[enforce]` as written: the enforcers every ban goes to, and each one's table.
        #[derive(Clone, Debug, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct EnforceSettings {
            /// The enforcers every ban goes to (default: `log`).
            #[serde(rename = "use")]
            pub uses: Option<Vec<EnforcerName>>,
            /// Lift every ban from the enforcers when moat stops (default: they stay in force,
            /// and kernel bans end by their own timeouts).
            pub lift_on_stop: Option<bool>,
            $(
                /// This enforcer's `[enforce.NAME]` table, when written.
                pub $field: Option<<$ty as Registered>::Settings>,
            )*
        }

        impl EnforceSettings {
            /// A later file's `[enforce]` over an earlier one's: each key it writes, and each
            /// table whole.
            pub fn overlay(self, over: EnforceSettings) -> EnforceSettings {
                EnforceSettings {
                    uses: over.uses.or(self.uses),
                    lift_on_stop: over.lift_on_stop.or(self.lift_on_stop),
                    $( $field: over.$field.or(self.$field), )*
                }
            }

            /// What is wrong with the tables of the enforcers `use` names.
            pub fn check(&self) -> Result<(), String> {
                for name in self.names() {
                    match name {
                        $( EnforcerName::$variant => check::<$ty>(self.$field.as_ref())?, )*
                        EnforcerName::Kernel => {
                            check::<nftables::NftEnforcer>(self.nftables.as_ref())?;
                            check::<iptables::IptablesEnforcer>(self.iptables.as_ref())?;
                        }
                    }
                }
                Ok(())
            }

            /// Builds the enforcer `name` stands for.
            pub fn build(&self, name: EnforcerName) -> Result<Built, EnforceError> {
                match name {
                    $( EnforcerName::$variant => build::<$ty>(self.$field.as_ref()), )*
                    EnforcerName::Kernel => self.kernel(),
                }
            }

            /// The kind of the enforcer `name` stands for.
            pub fn kind(name: EnforcerName) -> Kind {
                match name {
                    $( EnforcerName::$variant => <$ty as Registered>::KIND, )*
                    EnforcerName::Kernel => Kind::Host,
                }
            }
        }
    };
}

registry! {
    /// Records decisions in the log and the ledger only.
    Log => log: log::LogEnforcer,
    /// Runs a command per ban and unban.
    Exec => exec: exec::ExecEnforcer,
    /// Sets in moat's own nftables table, before Docker's DNAT.
    Nftables => nftables: nftables::NftEnforcer,
    /// ipset sets matched in iptables' raw PREROUTING (hosts without nftables).
    Iptables => iptables: iptables::IptablesEnforcer,
    /// Cloudflare's edge: an IP list and a WAF rule, or IP Access Rules.
    Cloudflare => cloudflare: cloudflare::CloudflareEnforcer,
    /// A JSON request per digest of bans (Slack, Discord, ntfy, Gotify, Matrix, generic).
    Webhook => webhook: webhook::WebhookEnforcer,
    /// A mail per digest of bans over SMTP (STARTTLS, TLS, or plain to this host).
    Email => email: email::EmailEnforcer,
    /// Reports each banned address to AbuseIPDB, within its cooldown and daily quota.
    Abuseipdb => abuseipdb: abuseipdb::AbuseIpdbEnforcer,
}

impl EnforceSettings {
    /// The enforcers `use` names, each once (`log` when it names none).
    pub fn names(&self) -> Vec<EnforcerName> {
        let mut names = self.uses.clone().unwrap_or_else(|| vec![EnforcerName::Log]);
        names.sort();
        names.dedup();
        names
    }

    /// Whether the enforcers named include one that blocks traffic (not only observers).
    pub fn blocks(&self) -> bool {
        self.names()
            .into_iter()
            .any(|n| EnforceSettings::kind(n) != Kind::Observer)
    }

    /// `kernel`: nftables where it works, else iptables/ipset, saying why.
    fn kernel(&self) -> Result<Built, EnforceError> {
        match build::<nftables::NftEnforcer>(self.nftables.as_ref()) {
            Ok(mut b) => {
                let why = format!(
                    "chosen by `kernel`: nftables works here ({})",
                    b.detail.take().unwrap_or_default()
                );
                tracing::info!("{why}");
                b.detail = Some(why);
                Ok(b)
            }
            Err(nft) => {
                let mut b =
                    build::<iptables::IptablesEnforcer>(self.iptables.as_ref()).map_err(|ipt| {
                        EnforceError::never(format!(
                            "no kernel enforcer works here: {}; {}",
                            nft.message, ipt.message
                        ))
                    })?;
                let why = format!("chosen by `kernel`: {}", nft.message);
                tracing::warn!("{why}; using iptables/ipset");
                b.detail = Some(why);
                Ok(b)
            }
        }
    }
}

//! `[enforce.cloudflare]`: the account, the zone, the credential, and how bans are carried,
//! with every default in one place. Checked as the configuration is read.

use std::path::PathBuf;

use serde::Deserialize;

use crate::vocab::time::Duration;

/// Cloudflare's API, where no other base is configured.
pub const API: &str = "https://api.cloudflare.com/client/v4";

/// `[enforce.cloudflare]` as written, defaults filled in.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudflareSettings {
    /// Which API carries the bans.
    #[serde(default)]
    pub mode: Mode,
    /// A file holding the API token (readable by its owner only).
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the API token.
    pub token_env: Option<String>,
    /// The legacy global API key: the account's email and a file holding the key.
    pub email: Option<String>,
    /// A file holding the legacy global API key (readable by its owner only), with `email`.
    pub key_file: Option<PathBuf>,
    /// The account's id: where the IP list lives (list mode), or account-level access rules.
    pub account_id: Option<String>,
    /// The zone's id: where the rule blocking the list lives (list mode), or zone-level
    /// access rules.
    pub zone_id: Option<String>,
    /// The IP list's name (list mode): lowercase letters, digits, `_`, at most 50.
    #[serde(default = "default_list")]
    pub list: String,
    /// What Cloudflare does with a banned client's requests.
    #[serde(default)]
    pub action: Action,
    /// Access rules at `zone`, `account` or `user` level.
    #[serde(default)]
    pub scope: Scope,
    /// Most list items moat places.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// Which bans to keep when the list is full.
    #[serde(default)]
    pub keep: Keep,
    /// IPv6 targets longer than this go to Cloudflare as this prefix.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// The API's base URL.
    #[serde(default = "default_api")]
    pub api: String,
    /// The most requests moat sends a second (its pace; the budget below bounds the five
    /// minutes).
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: f64,
    /// Requests per five minutes (Cloudflare's limit is 1,200 per user).
    #[serde(default = "default_budget")]
    pub budget: usize,
    /// How often what moat holds at Cloudflare is read back and converged.
    #[serde(default = "default_reconcile")]
    pub reconcile: Duration,
    /// Whose entries these are: written into each item's comment (each rule's notes), and
    /// only entries of this owner are moat's to change or delete. Other moat hosts on the
    /// same account take another owner; the nodes of one fleet take the same. Letters,
    /// digits, `.`, `-`, `_`, at most [`OWNER_MAX`]. When not written: [`FLEET_OWNER`] in a
    /// fleet (`[cluster]`), the host name otherwise ([`CloudflareSettings::owner`]).
    pub owner: Option<String>,
}

/// The owner of a fleet's entries when `owner` is not written: every node of a fleet must
/// write and recognise the same owner (the lease passes the writing from node to node, and
/// the new writer must take the old one's entries as its own), so the host name, which
/// differs from node to node, cannot be the default there.
pub const FLEET_OWNER: &str = "fleet";

/// The longest `owner` (a DNS label's length).
pub const OWNER_MAX: usize = 63;

/// Whether `owner` is one moat writes and reads back: letters, digits, `.`, `-`, `_`, at most
/// [`OWNER_MAX`], not empty.
pub fn owner_ok(owner: &str) -> bool {
    crate::vocab::names::is_plain_name(owner, OWNER_MAX)
}

/// The host name, cut to what `owner` may hold (`moat` when nothing is left).
pub fn host_owner() -> String {
    crate::vocab::names::plain_name_of(&crate::enforce::notify::node_name(), OWNER_MAX, "moat")
}

fn default_list() -> String {
    "moat_block".into()
}
fn default_capacity() -> usize {
    10_000
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_api() -> String {
    API.into()
}
fn default_requests_per_second() -> f64 {
    4.0
}
fn default_budget() -> usize {
    1200
}
fn default_reconcile() -> Duration {
    Duration(jiff::SignedDuration::from_mins(10))
}

/// Which API carries the bans.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// An account IP list, blocked by one custom rule of the zone.
    #[default]
    List,
    /// One IP Access Rule per ban.
    AccessRules,
}

impl Mode {
    /// As the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::List => "list",
            Mode::AccessRules => "access-rules",
        }
    }
}

/// What Cloudflare does with a banned client's requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse the request.
    #[default]
    Block,
    /// Show an interactive challenge.
    Challenge,
    /// Let Cloudflare choose the challenge (often none a human notices).
    ManagedChallenge,
}

impl Action {
    /// As Cloudflare's API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Challenge => "challenge",
            Action::ManagedChallenge => "managed_challenge",
        }
    }
}

/// Where access rules live.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The zone's rules (`zone_id`): only this site.
    #[default]
    Zone,
    /// The account's rules (`account_id`): every zone of the account.
    Account,
    /// The user's rules: every zone the credential's user owns.
    User,
}

impl Scope {
    /// As the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Zone => "zone",
            Scope::Account => "account",
            Scope::User => "user",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which bans to keep when the list is full.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The most recent bans.
    #[default]
    Newest,
    /// The bans that end last (forever first).
    Longest,
}

/// Whether `id` can be an account's or a zone's id: letters and digits (Cloudflare's are 32
/// hex digits), at most 64. It goes into URLs and into the lease's key in Redis, so a `/`,
/// `:`, `*` or space must never reach either.
pub fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

impl CloudflareSettings {
    /// Whose entries these are: `owner` as written, else the host name (a fleet's
    /// configuration fills in [`FLEET_OWNER`] as it is read).
    pub fn owner(&self) -> String {
        self.owner.clone().unwrap_or_else(host_owner)
    }

    /// `owner` filled in when not written: [`FLEET_OWNER`] when `in_fleet`, else the host
    /// name.
    pub fn with_default_owner(mut self, in_fleet: bool) -> CloudflareSettings {
        if self.owner.is_none() {
            self.owner = Some(if in_fleet {
                FLEET_OWNER.to_string()
            } else {
                host_owner()
            });
        }
        self
    }

    /// What is missing or contradictory, in words.
    pub fn check(&self) -> Result<(), String> {
        let credentials = [
            self.token_file.is_some(),
            self.token_env.is_some(),
            self.email.is_some() || self.key_file.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if credentials != 1 {
            return Err(
                "[enforce.cloudflare] needs exactly one credential: token_file, \
                        token_env, or email with key_file (the legacy global key); hint: \
                        token_file = \"/etc/moat/cloudflare.token\""
                    .into(),
            );
        }
        if self.email.is_some() != self.key_file.is_some() {
            return Err("[enforce.cloudflare] the global key needs both email and key_file".into());
        }
        let need_account = self.mode == Mode::List || self.scope == Scope::Account;
        let need_zone = self.mode == Mode::List || self.scope == Scope::Zone;
        if need_account && self.account_id.is_none() {
            return Err(
                "[enforce.cloudflare] needs account_id (the IP list belongs to the \
                        account); hint: it is on the zone's overview page in the dashboard"
                    .into(),
            );
        }
        if need_zone && self.zone_id.is_none() {
            return Err(
                "[enforce.cloudflare] needs zone_id (the zone whose custom rule or \
                        access rules block); hint: it is on the zone's overview page"
                    .into(),
            );
        }
        for (key, id) in [("account_id", &self.account_id), ("zone_id", &self.zone_id)] {
            if let Some(id) = id.as_deref().filter(|id| !id_ok(id)) {
                return Err(format!(
                    "[enforce.cloudflare] {key} {id:?}: letters and digits only, at most 64; \
                     hint: the 32 hex digits on the zone's overview page"
                ));
            }
        }
        let name = &self.list;
        let list_ok = !name.is_empty()
            && name.len() <= 50
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !list_ok {
            return Err(format!(
                "[enforce.cloudflare] list {name:?}: Cloudflare list names are lowercase \
                 letters, digits and _, at most 50; hint: \"moat_block\""
            ));
        }
        if let Some(owner) = self.owner.as_deref().filter(|o| !owner_ok(o)) {
            return Err(format!(
                "[enforce.cloudflare] owner {owner:?}: letters, digits, '.', '-' and '_', at \
                 most {OWNER_MAX}; hint: the host's name, the same on every node of a fleet"
            ));
        }
        if !(12..=128).contains(&self.ipv6_prefix) {
            return Err(format!(
                "[enforce.cloudflare] ipv6_prefix {}: between 12 and 128",
                self.ipv6_prefix
            ));
        }
        if self.mode == Mode::List && self.action == Action::Challenge {
            return Err(
                "[enforce.cloudflare] a custom rule has no `challenge` action; hint: \
                        managed_challenge"
                    .into(),
            );
        }
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 50.0) {
            return Err("[enforce.cloudflare] requests_per_second: between 0 and 50".into());
        }
        Ok(())
    }

    /// How often the converge runs.
    pub fn reconcile_every(&self) -> std::time::Duration {
        self.reconcile.0.unsigned_abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> CloudflareSettings {
        toml::from_str(&format!(
            "token_file = \"cf.token\"\naccount_id = \"a\"\nzone_id = \"z\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn the_owner_defaults_to_the_host_name_and_is_checked() {
        let s = settings("");
        assert!(owner_ok(&s.owner()), "{:?}", s.owner());
        assert_eq!(s.check(), Ok(()));
        assert_eq!(settings("owner = \"web-1\"").owner(), "web-1");
        // In a fleet the default is one owner for every node, not each host's name.
        assert_eq!(settings("").with_default_owner(true).owner(), FLEET_OWNER);
        assert_eq!(settings("").with_default_owner(false).owner(), host_owner());
        assert_eq!(
            settings("owner = \"web-1\"")
                .with_default_owner(true)
                .owner(),
            "web-1"
        );
        for bad in ["", "web 1", "web-1;rm", "wéb"] {
            let e = settings(&format!("owner = {bad:?}")).check().unwrap_err();
            assert!(e.contains("owner") && e.contains("at most 63"), "{e}");
        }
        let long = "a".repeat(64);
        assert!(settings(&format!("owner = \"{long}\"")).check().is_err());
    }

    #[test]
    fn ids_cannot_carry_what_breaks_a_url_or_a_redis_key() {
        for bad in ["a:b", "a/b", "a*", "a b", "", &"a".repeat(65)] {
            let mut s = settings("");
            s.account_id = Some(bad.to_string());
            assert!(s.check().unwrap_err().contains("account_id"), "{bad:?}");
            let mut s = settings("");
            s.zone_id = Some(bad.to_string());
            assert!(s.check().unwrap_err().contains("zone_id"), "{bad:?}");
        }
        assert!(id_ok("023e105f4ecef8ad9ca31a8372d0c353"));
    }
}

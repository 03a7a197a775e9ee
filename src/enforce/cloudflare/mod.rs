//! The Cloudflare enforcer: bans at Cloudflare's edge, for hosts behind Cloudflare, where the
//! kernel only ever sees Cloudflare's addresses.
//!
//! Two modes:
//! - `list` (the default): an account IP list (created when missing) that one WAF custom rule
//!   in the zone's `http_request_firewall_custom` phase blocks (`ip.src in $moat_block`,
//!   created when missing; the phase's other rules are left alone). Bans and unbans go in
//!   batches of list item operations, which Cloudflare runs asynchronously; moat polls each to
//!   completion with backoff. 10,000 bans take two requests and their polls.
//! - `access-rules`: one IP Access Rule per ban at zone, account or user scope, with notes
//!   naming moat and the jail. The unban deletes the rule by its id after checking it still
//!   holds that address (fail2ban once deleted another address's rule); a duplicate (code
//!   10009) is looked up and adopted.
//!
//! What moat holds at Cloudflare is read back at start and every few minutes (list items and
//! rules whose comment or notes are moat's and name this host's `owner`, or no owner) and converged to the ledger's active bans:
//! a ban not yet placed (moat was stopped, Cloudflare was down) is placed, an unban not yet
//! done is done, one that became moot is dropped. The ledger is the outbox; Cloudflare's state
//! is compared with it, never trusted blindly.
//!
//! Nothing moat did not create is touched: an entry whose comment or notes are not moat's, or
//! name another owner (another moat host on the account), is someone else's (`parse_comment`
//! is the one place that decides). A list item of theirs
//! for an address moat bans is never overwritten (a POST would replace its comment) nor
//! deleted at the unban; the ban is held by their item, and status counts such bans. What
//! the list holds for the addresses a batch changes is looked up first, unless the list was
//! read just before (a converge's changes).
//!
//! In list mode the same look checks that the list and its blocking rule are still there:
//! without the rule the bans sit in the list and block nothing. A rule or list found deleted
//! is put back (the list with every ban), logged as an error and counted in `repairs`.
//!
//! IPv6 targets go to Cloudflare as their /64 (configurable): a client rotating through its
//! /64 is one entry. Ports do not exist at Cloudflare's edge; a ban covers the site.
//!
//! In a fleet, one node at a time writes: [`lease::Gate`] says whether this node holds the
//! lease (it writes), another does (no calls at all), or Redis is away (bans only, unbans
//! wait). A node that gains the lease converges at its next periodic check.

pub mod api;
pub mod lease;
mod list;
pub mod ranges;
mod rules;
pub mod settings;
pub mod verify;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;

use super::registry::{Built, Registered};
use super::{read_secret, BanOrder, Change, EnforceError, Enforcer, Failed, Key};
use crate::vocab::Target;
use api::{Api, CallError};
pub use settings::CloudflareSettings;
use settings::Mode;

/// Items per list operation: 10,000 bans in two requests (Cloudflare documents no smaller
/// limit per request; its account capacity is 10,000 items).
const BATCH: usize = 5_000;
/// Items per page when reading a list (the API's maximum).
const PAGE: usize = 500;
/// Rules per page when reading access rules.
const RULES_PAGE: usize = 100;

/// Who holds an address in the list, as moat found it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Holder {
    /// An item of moat's, by its id.
    Moat(String),
    /// An item moat did not create: never overwritten, never deleted.
    Other,
}

/// One entry at Cloudflare: its id when known, and the bans it stands for.
#[derive(Clone, Debug, Default)]
struct Remote {
    id: Option<String>,
    keys: BTreeSet<Key>,
    /// When the latest of its bans ends (`None`: forever), for the capacity choice.
    until: Option<Timestamp>,
    /// When the newest of its bans began, for `keep = "newest"`.
    started: Option<Timestamp>,
}

/// The `cloudflare` enforcer: what moat holds at Cloudflare, in list or access-rules mode,
/// through one rate-limited API client.
pub struct CloudflareEnforcer {
    api: Api,
    pub(crate) s: CloudflareSettings,
    /// Whose entries are moat's: `s.owner()`, resolved once.
    owner: String,
    /// In a fleet: whether this node holds the lease (`None`: no fleet, it always writes).
    gate: Option<lease::Gate>,
    /// The role the last periodic check saw: gaining the lease (or coming back from
    /// [`lease::Role::Alone`]) converges at once.
    seen: Option<lease::Role>,
    /// List mode: the list's id once found or created, and the zone rule checked.
    list_id: Option<String>,
    /// List mode: the list and its rule were in place since start, so finding one gone means
    /// someone deleted it.
    in_place: bool,
    /// List mode: moat's rule is there but disabled (an admin's doing; moat leaves it so, and
    /// says so in status).
    rule_disabled: bool,
    /// How many times the list or the rule was found deleted and restored.
    repairs: u64,
    /// What moat holds at Cloudflare, by the address as Cloudflare writes it.
    remote: HashMap<String, Remote>,
    /// Whether `remote` was read from Cloudflare since start.
    known: bool,
    /// List mode: the addresses the list holds by items moat did not create, as last seen.
    foreign: HashSet<String>,
    /// Bans held by an entry moat did not create (an admin's list item or access rule), by
    /// address: moat places nothing of its own for them and deletes nothing at their unban.
    held_by_others: HashMap<String, BTreeSet<Key>>,
    /// List mode: the list was read for the changes about to be applied (a converge's), so
    /// what it holds for them is known without asking again.
    list_fresh: bool,
    last_reconcile: Option<Instant>,
    reconciles: u64,
    /// Bans that could not be placed (full list, a target Cloudflare cannot take).
    /// Bans not in force at Cloudflare now: left out or evicted for capacity, refused, or a
    /// target Cloudflare cannot take. Tried again at each reconcile, ranked as oldest.
    refused: HashSet<Key>,
}

/// The address as Cloudflare stores it, or why Cloudflare cannot take this target.
fn remote_of(target: &IpNet, ipv6_prefix: u8, mode: Mode) -> Result<String, String> {
    let target = match target {
        IpNet::V6(n) if n.prefix_len() > ipv6_prefix => IpNet::V6(
            ipnet::Ipv6Net::new(n.addr(), ipv6_prefix)
                .expect("valid")
                .trunc(),
        ),
        t => *t,
    };
    let prefix = target.prefix_len();
    match (mode, target) {
        (Mode::List, IpNet::V4(_)) if prefix < 8 => Err(format!(
            "{target}: Cloudflare's lists take IPv4 networks of /8 or narrower"
        )),
        (Mode::List, IpNet::V6(_)) if prefix < 12 => Err(format!(
            "{target}: Cloudflare's lists take IPv6 networks of /12 or narrower"
        )),
        (Mode::AccessRules, IpNet::V4(_)) if prefix != 32 && prefix != 24 && prefix != 16 => Err(
            format!("{target}: IP Access Rules take single IPv4 addresses, /16 or /24 only"),
        ),
        (Mode::AccessRules, IpNet::V6(_)) if ![128, 64, 48, 32].contains(&prefix) => Err(format!(
            "{target}: IP Access Rules take single IPv6 addresses, /32, /48 or /64 only"
        )),
        _ => Ok(Target(target).to_string()),
    }
}

/// The longest jail name a comment carries (the rest is cut): with the owner, the comment
/// stays under Cloudflare's limits on comments and notes.
const JAIL_MAX: usize = 64;

/// The comment or notes moat writes: what identifies moat's entries, whose they are
/// (`owner`), and the ban they carry.
fn comment_of(b: &BanOrder, owner: &str) -> String {
    // Whole seconds: shorter, and all that ranking by them needs.
    let secs = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
    let until = b
        .until
        .map_or("forever".to_string(), |u| secs(u).to_string());
    let jail: String = b
        .jail
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(JAIL_MAX)
        .collect();
    format!(
        "moat {jail} {} since {} until {until} owner {owner}",
        Target(b.target),
        secs(b.started)
    )
}

/// What a comment moat wrote says of its ban: target, start, end.
struct Carried {
    target: IpNet,
    started: Option<Timestamp>,
    until: Option<Timestamp>,
}

/// The one place that reads the comments and notes moat writes: `None` for an entry that is
/// not this moat's. An entry is this moat's when its comment is of moat's form and names
/// `owner`, or names no owner at all (written by a moat before owners: an upgraded host
/// goes on converging its own old entries). A comment naming another owner, an owner moat
/// would not write, or more than one owner is someone else's.
fn parse_comment(c: &str, owner: &str) -> Option<Carried> {
    let mut f = c.strip_prefix("moat ")?.split_whitespace();
    let _jail = f.next()?;
    let target = crate::vocab::parse_target(f.next()?).ok()?;
    let (mut started, mut until, mut named) = (None, None, None);
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        match k {
            "since" => started = v.parse().ok(),
            "until" if v != "forever" => until = v.parse().ok(),
            "owner" if named.is_some() || !settings::owner_ok(v) => return None,
            "owner" => named = Some(v),
            _ => {}
        }
    }
    if named.is_some_and(|n| n != owner) {
        return None;
    }
    Some(Carried {
        target,
        started,
        until,
    })
}

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(a.max(b)),
    }
}

/// Errors of a call failing a batch: every change of it, with the message.
fn fail_all(indexes: impl IntoIterator<Item = usize>, e: &CallError) -> Vec<Failed> {
    indexes
        .into_iter()
        .map(|index| Failed {
            index,
            error: e.clone().into(),
        })
        .collect()
}

impl From<CallError> for EnforceError {
    /// A rate limit says when to try again; anything else may pass later (a token fixed, a
    /// list emptied, Cloudflare back).
    fn from(e: CallError) -> EnforceError {
        let retry = match &e {
            CallError::Limited(d) => super::RetryHint::After(*d),
            _ => super::RetryHint::Later,
        };
        EnforceError {
            message: e.to_string(),
            retry,
        }
    }
}

impl CloudflareEnforcer {
    /// An enforcer calling `api` as `s` says; it reads nothing from Cloudflare until its first
    /// batch or read-back.
    pub fn new(api: Api, s: CloudflareSettings) -> CloudflareEnforcer {
        CloudflareEnforcer {
            api,
            owner: s.owner(),
            s,
            gate: None,
            seen: None,
            list_id: None,
            in_place: false,
            rule_disabled: false,
            repairs: 0,
            remote: HashMap::new(),
            known: false,
            foreign: HashSet::new(),
            held_by_others: HashMap::new(),
            list_fresh: false,
            last_reconcile: None,
            reconciles: 0,
            refused: HashSet::new(),
        }
    }

    /// In a fleet: writes only as `gate` says (the lease's holder writes, the others wait).
    pub fn with_gate(mut self, gate: lease::Gate) -> CloudflareEnforcer {
        self.gate = Some(gate);
        self
    }

    /// The lease's role now; `Writer` without a fleet.
    fn role(&self) -> lease::Role {
        self.gate
            .as_ref()
            .map_or(lease::Role::Writer, lease::Gate::role)
    }

    /// Whether unbans and evictions are done now (without a fleet, or holding the lease).
    fn may_delete(&self) -> bool {
        self.role().deletes()
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.api.counters.requests
    }

    fn account(&self) -> &str {
        self.s.account_id.as_deref().unwrap_or_default()
    }

    fn zone(&self) -> &str {
        self.s.zone_id.as_deref().unwrap_or_default()
    }

    /// Reads what moat holds at Cloudflare into `remote`, keeping the bans known to stand for
    /// each entry (a comment names one; moat may have placed more on the same /64).
    fn refresh(&mut self) -> Result<(), CallError> {
        let entries = match self.s.mode {
            Mode::List => {
                let list = self.ensure_list()?;
                self.read_list(&list, None)
                    .inspect_err(|e| self.note_list_error(e))?
            }
            Mode::AccessRules => self.read_rules(None)?,
        };
        let mut fresh: HashMap<String, Remote> = HashMap::new();
        let mut foreign = HashSet::new();
        for (addr, id, comment) in entries {
            let Some(carried) = parse_comment(&comment, &self.owner) else {
                foreign.insert(addr); // not moat's
                continue;
            };
            let mut r = self.remote.remove(&addr).unwrap_or_default();
            if r.keys.is_empty() {
                r.keys.insert(Key::all_ports(carried.target));
                r.until = carried.until;
                r.started = carried.started;
            }
            r.id = Some(id);
            fresh.insert(addr, r);
        }
        self.remote = fresh;
        // A ban stays held by someone else's item while the item is there. Access rules
        // are not read whole (only moat's notes): their bans are looked for again at the
        // converge, which bans again what is not held.
        match self.s.mode {
            Mode::List => self.held_by_others.retain(|a, _| foreign.contains(a)),
            Mode::AccessRules => self.held_by_others.clear(),
        }
        self.foreign = foreign;
        self.list_fresh = self.s.mode == Mode::List;
        self.known = true;
        self.last_reconcile = Some(Instant::now());
        Ok(())
    }
}

/// The credentials `[enforce.cloudflare]` names.
pub fn auth_of(t: &CloudflareSettings) -> Result<api::Auth, String> {
    if let Some(path) = &t.token_file {
        return Ok(api::Auth::Token(read_secret(path)?));
    }
    if let Some(var) = &t.token_env {
        let token = std::env::var(var)
            .map_err(|_| format!("the environment variable {var} (token_env) is not set"))?;
        return Ok(api::Auth::Token(token.trim().to_string()));
    }
    match (&t.email, &t.key_file) {
        (Some(email), Some(key)) => {
            tracing::warn!(
                "Cloudflare: the global API key can do anything the account can; an API token \
                 limited to the permissions moat needs is safer (docs/cloudflare.md)"
            );
            Ok(api::Auth::GlobalKey {
                email: email.clone(),
                key: read_secret(key)?,
            })
        }
        _ => Err("no Cloudflare credential configured".into()),
    }
}

/// The enforcer `[enforce.cloudflare]` describes.
pub fn from_settings(t: &CloudflareSettings) -> Result<CloudflareEnforcer, String> {
    let auth = auth_of(t)?;
    let budget = api::Budget::new(t.requests_per_second, t.budget, Duration::from_secs(300));
    let api = Api::new(&t.api, auth, budget);
    Ok(CloudflareEnforcer::new(api, t.clone()))
}

/// The enforcer of a fleet's node, writing as the lease's `gate` says.
pub fn build_with_gate(s: &CloudflareSettings, gate: lease::Gate) -> Result<Built, EnforceError> {
    let cf = from_settings(s)
        .map_err(|e| {
            EnforceError::never(format!(
                "the {} enforcer cannot work here: {e}",
                CloudflareEnforcer::NAME
            ))
        })?
        .with_gate(gate);
    let detail = cf.detail();
    Ok(Built::of(cf, Some(s), Some(detail)))
}

impl CloudflareEnforcer {
    /// What status shows of how it works.
    pub fn detail(&self) -> String {
        format!(
            "{} mode, {} requests/s at most, {} per 5 minutes",
            self.s.mode.as_str(),
            self.s.requests_per_second,
            self.s.budget
        )
    }
}

impl super::registry::Registered for CloudflareEnforcer {
    type Settings = CloudflareSettings;
    const NAME: &'static str = "cloudflare";
    const KIND: super::Kind = super::Kind::Edge;
    const REQUIRES_TABLE: Option<&'static str> =
        Some("add [enforce.cloudflare] with token_file, account_id and zone_id");

    fn check(settings: &CloudflareSettings) -> Result<(), String> {
        settings.check()
    }

    /// A remote change is never given up on.
    fn retry(_: Option<&CloudflareSettings>) -> super::Retry {
        super::Retry::FOREVER
    }

    fn build(
        settings: Option<&CloudflareSettings>,
    ) -> Result<(Self, Option<String>), EnforceError> {
        let s = settings.ok_or_else(|| EnforceError::never("no [enforce.cloudflare] table"))?;
        let cf = from_settings(s).map_err(EnforceError::never)?;
        let detail = cf.detail();
        Ok((cf, Some(detail)))
    }
}

impl CloudflareEnforcer {
    /// The changes that bring what moat holds at Cloudflare to exactly `wanted`, from a
    /// fresh read.
    fn converge_all(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
        let held = self.held()?;
        let wanted_keys: HashSet<Key> = wanted.iter().map(BanOrder::key).collect();
        for keys in self.held_by_others.values_mut() {
            keys.retain(|k| wanted_keys.contains(k));
        }
        self.held_by_others.retain(|_, keys| !keys.is_empty());
        let changes = super::reconcile(wanted, &held);
        // Without changes there is no apply now, and the next batch must look for itself.
        self.list_fresh &= !changes.is_empty();
        Ok(changes)
    }
}

impl Enforcer for CloudflareEnforcer {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// In a fleet, only the lease's holder writes: a standby sends nothing (and fails
    /// nothing: the holder places the fleet's bans), and a node without Redis places bans
    /// but leaves unbans to whoever holds the lease next (its converge lifts them).
    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        let role = self.role();
        if !role.calls() {
            // Another node writes meanwhile: what this one read is stale from now on.
            self.known = false;
            return Vec::new();
        }
        let apply = |cf: &mut Self, b: &[Change]| match cf.s.mode {
            Mode::List => cf.apply_list(b),
            Mode::AccessRules => cf.apply_rules(b),
        };
        if role.deletes() {
            return apply(self, batch);
        }
        let bans: Vec<usize> = (0..batch.len())
            .filter(|&i| matches!(batch[i], Change::Ban(_)))
            .collect();
        if bans.len() < batch.len() {
            tracing::info!(
                skipped = batch.len() - bans.len(),
                "Cloudflare: unbans wait for the lease (Redis unreachable)"
            );
        }
        if bans.is_empty() {
            return Vec::new();
        }
        let only: Vec<Change> = bans.iter().map(|&i| batch[i].clone()).collect();
        let mut failed = apply(self, &only);
        for f in &mut failed {
            f.index = bans[f.index];
        }
        failed
    }

    /// The changes from a fresh read; they are applied right away, on what that read found.
    /// A standby reads nothing and changes nothing; without Redis, only the bans missing.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
        let role = self.role();
        if !role.calls() {
            return Ok(Vec::new());
        }
        let mut changes = self.converge_all(wanted)?;
        if !role.deletes() {
            changes.retain(|c| matches!(c, Change::Ban(_)));
            self.list_fresh &= !changes.is_empty();
        }
        Ok(changes)
    }

    /// Bans held by moat's own entries (not those held by someone else's: a converge offers
    /// those again, and they are placed when that entry is gone).
    fn held(&mut self) -> Result<HashSet<Key>, EnforceError> {
        self.refresh()?;
        Ok(self
            .remote
            .values()
            .flat_map(|r| r.keys.iter().cloned())
            .collect())
    }

    /// Cloudflare's state can change behind moat's back (someone edits the list): read back
    /// and converged every `reconcile_every`.
    fn drifts(&self) -> bool {
        true
    }

    /// In a fleet, a standby checks nothing (no calls); a node that just gained the lease,
    /// or lost Redis, converges at once: it may find bans that ended while nobody wrote (a
    /// dead holder's) and bans nobody placed.
    fn intact(&mut self) -> Result<bool, EnforceError> {
        let role = self.role();
        let changed = self.seen.as_ref() != Some(&role);
        self.seen = Some(role.clone());
        if !role.calls() {
            self.known = false;
            return Ok(true);
        }
        let due = (changed && self.gate.is_some())
            || self
                .last_reconcile
                .is_none_or(|t| t.elapsed() >= self.s.reconcile_every());
        if !due {
            return Ok(true);
        }
        self.reconciles += 1;
        // Converging reads Cloudflare's state afresh; whether that works or not, the next
        // look is a period away (retries of failed changes go on meanwhile).
        self.known = false;
        self.last_reconcile = Some(Instant::now());
        if self.s.mode == Mode::List {
            // The list and its rule are what make the bans block, and either can be deleted
            // behind moat's back.
            self.check_list_and_rule()?;
        }
        Ok(false)
    }

    fn repairs(&self) -> u64 {
        self.repairs
    }

    fn remark(&self) -> Option<String> {
        let lease = match &self.gate {
            Some(g) => format!("{}; ", g.role().describe()),
            None => String::new(),
        };
        let mut r = format!(
            "{lease}{} requests, {} entries at Cloudflare",
            self.api.counters.requests,
            self.remote.len()
        );
        let by_others: usize = self.held_by_others.values().map(BTreeSet::len).sum();
        if by_others > 0 {
            let entry = match self.s.mode {
                Mode::List => "an item",
                Mode::AccessRules => "a rule",
            };
            r.push_str(&format!(
                "; {by_others} bans held by {entry} moat did not create (left as it is)"
            ));
        }
        if self.rule_disabled {
            r.push_str("; the blocking rule is DISABLED at Cloudflare: the bans block nothing");
        }
        if !self.refused.is_empty() {
            r.push_str(&format!(
                "; {} bans NOT placed (capacity {}, keep {:?}, or refused: see the log)",
                self.refused.len(),
                self.s.capacity,
                self.s.keep
            ));
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_go_to_cloudflare_as_it_takes_them() {
        let t = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            remote_of(&t("203.0.113.7/32"), 64, Mode::List).unwrap(),
            "203.0.113.7"
        );
        assert_eq!(
            remote_of(&t("2001:db8:1:2:3::1/128"), 64, Mode::List).unwrap(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            remote_of(&t("2001:db8:1:2:3::1/128"), 128, Mode::AccessRules).unwrap(),
            "2001:db8:1:2:3::1"
        );
        assert!(remote_of(&t("198.51.100.0/27"), 64, Mode::AccessRules).is_err());
        assert!(remote_of(&t("198.51.100.0/24"), 64, Mode::AccessRules).is_ok());
        assert!(remote_of(&t("10.0.0.0/7"), 64, Mode::List).is_err());
    }

    #[test]
    fn comments_carry_the_ban_back() {
        let b = BanOrder {
            target: "2001:db8::1/128".parse().unwrap(),
            jail: "portainer".into(),
            started: Timestamp::from_second(1_700_000_000).unwrap(),
            until: Some(Timestamp::from_second(1_800_000_000).unwrap()),
            failures: 5,
            ports: None,
            evidence: Default::default(),
            node: None,
        };
        let c = comment_of(&b, "web-1");
        assert!(
            c.starts_with("moat portainer 2001:db8::1 since 2023-11-14T22:13:20Z until 2027-"),
            "{c}"
        );
        assert!(c.ends_with(" owner web-1"), "{c}");
        let x = parse_comment(&c, "web-1").unwrap();
        assert_eq!(
            (x.target, x.started, x.until),
            (b.target, Some(b.started), b.until)
        );
        assert!(parse_comment("banned by hand", "web-1").is_none());
        let forever = BanOrder { until: None, ..b };
        assert_eq!(
            parse_comment(&comment_of(&forever, "web-1"), "web-1")
                .unwrap()
                .until,
            None
        );
    }

    fn order(jail: &str) -> BanOrder {
        BanOrder {
            target: "203.0.113.9/32".parse().unwrap(),
            jail: jail.into(),
            started: Timestamp::from_second(1_700_000_000).unwrap(),
            until: None,
            failures: 1,
            ports: None,
            evidence: Default::default(),
            node: None,
        }
    }

    #[test]
    fn an_entry_is_moats_only_when_it_names_this_owner() {
        let c = comment_of(&order("sshd"), "web-1");
        // Its own.
        assert!(parse_comment(&c, "web-1").is_some());
        // Another host's on the same account: not this moat's.
        assert!(parse_comment(&c, "web-2").is_none());
        assert!(parse_comment(&c, "web-10").is_none());
        assert!(parse_comment(&c, "web").is_none());
        // Written before owners existed: this host's (an upgrade converges its old items).
        let legacy = "moat sshd 203.0.113.9 since 2023-11-14T22:13:20Z until forever";
        let x = parse_comment(legacy, "web-1").unwrap();
        assert_eq!(x.target, "203.0.113.9/32".parse::<IpNet>().unwrap());
        assert_eq!(x.until, None);
    }

    #[test]
    fn hostile_comments_are_not_taken_as_moats() {
        let since = "since 2023-11-14T22:13:20Z until forever";
        for c in [
            // Two owners, whichever comes first.
            format!("moat sshd 203.0.113.9 {since} owner web-1 owner web-2"),
            format!("moat sshd 203.0.113.9 {since} owner web-2 owner web-1"),
            format!("moat sshd 203.0.113.9 {since} owner web-1 owner web-1"),
            // An owner moat never writes.
            format!("moat sshd 203.0.113.9 {since} owner web-1;rm"),
            format!("moat sshd 203.0.113.9 {since} owner {}", "a".repeat(64)),
            format!("moat sshd 203.0.113.9 {since} owner <b>web-1</b>"),
            // Not moat's form at all.
            format!("Moat sshd 203.0.113.9 {since} owner web-1"),
            format!(" moat sshd 203.0.113.9 {since} owner web-1"),
            format!("moat sshd not-an-address {since} owner web-1"),
            "moat".to_string(),
            "moat ".to_string(),
        ] {
            assert!(parse_comment(&c, "web-1").is_none(), "{c}");
        }
        // The owner compares exactly (no case folding, no prefix).
        let c = comment_of(&order("sshd"), "Web-1");
        assert!(parse_comment(&c, "web-1").is_none());
        assert!(parse_comment(&c, "Web-1").is_some());
    }

    #[test]
    fn a_long_jail_name_keeps_the_comment_short_and_readable() {
        let owner = "o".repeat(settings::OWNER_MAX);
        let mut b = order(&"j".repeat(500));
        b.target = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff/128"
            .parse()
            .unwrap();
        b.until = Some(Timestamp::from_second(1_800_000_000).unwrap());
        let c = comment_of(&b, &owner);
        assert!(c.len() <= 255, "{} chars: {c}", c.len());
        assert!(parse_comment(&c, &owner).is_some(), "{c}");
        // A jail with a space cannot shift the fields.
        let c = comment_of(&order("a owner web-2"), "web-1");
        assert!(parse_comment(&c, "web-1").is_some(), "{c}");
        assert!(parse_comment(&c, "web-2").is_none(), "{c}");
    }

    #[test]
    fn a_standby_calls_nothing_and_a_node_alone_lifts_nothing() {
        // Nothing listens there: any call would be counted, and fail.
        let s: CloudflareSettings = toml::from_str(
            "token_env = \"X\"\naccount_id = \"a1\"\nzone_id = \"z1\"\n\
             api = \"http://127.0.0.1:9/client/v4\"",
        )
        .unwrap();
        let budget = api::Budget::new(50.0, 1000, Duration::from_secs(300));
        let api = Api::new(&s.api, api::Auth::Token("t".into()), budget);
        let gate = lease::Gate::new();
        let mut cf = CloudflareEnforcer::new(api, s).with_gate(gate.clone());
        let ban = Change::Ban(order("sshd"));
        let unban = Change::Unban(order("sshd").key());
        for role in [
            lease::Role::Pending,
            lease::Role::Standby {
                holder: "node1".into(),
            },
        ] {
            gate.set(role);
            assert!(cf.apply(&[ban.clone(), unban.clone()]).is_empty());
            assert_eq!(cf.intact(), Ok(true));
            assert!(cf.converge(&[order("sshd")]).unwrap().is_empty());
        }
        gate.set(lease::Role::Alone);
        assert!(cf.apply(&[unban]).is_empty());
        assert_eq!(cf.requests(), 0);
        assert!(cf
            .remark()
            .unwrap()
            .starts_with("Redis unreachable: adding bans only"));
    }

    #[test]
    fn the_owner_is_checked_with_the_settings() {
        assert!(settings::owner_ok("web-1.example_b"));
        for bad in ["", "web 1", "web/1", "wéb", &"a".repeat(64)] {
            assert!(!settings::owner_ok(bad), "{bad:?}");
        }
        assert!(settings::owner_ok(&"a".repeat(63)));
    }
}

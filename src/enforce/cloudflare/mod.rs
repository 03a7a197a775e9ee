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
//! rules whose comment or notes start with `moat`) and converged to the ledger's active bans:
//! a ban not yet placed (moat was stopped, Cloudflare was down) is placed, an unban not yet
//! done is done, one that became moot is dropped. The ledger is the outbox; Cloudflare's state
//! is compared with it, never trusted blindly.
//!
//! Nothing moat did not create is touched: an entry whose comment or notes are not moat's
//! (`parse_comment` is the one place that decides) is someone else's. A list item of theirs
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

pub mod api;
pub mod ranges;
pub mod settings;
pub mod verify;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::registry::Registered;
use super::{BanOrder, Change, EnforceError, Enforcer, Failed, Key};
use crate::vocab::Target;
use api::{encode, Api, CallError};
pub use settings::CloudflareSettings;
use settings::{Keep, Mode, Scope};

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

pub struct CloudflareEnforcer {
    api: Api,
    pub(crate) s: CloudflareSettings,
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

/// The comment or notes moat writes: what identifies moat's entries, and the ban they carry.
fn comment_of(b: &BanOrder) -> String {
    // Whole seconds: shorter, and all that ranking by them needs.
    let secs = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
    let until = b
        .until
        .map_or("forever".to_string(), |u| secs(u).to_string());
    format!(
        "moat {} {} since {} until {until}",
        b.jail,
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
/// not moat's.
fn parse_comment(c: &str) -> Option<Carried> {
    let mut f = c.strip_prefix("moat ")?.split_whitespace();
    let _jail = f.next()?;
    let target = crate::vocab::parse_target(f.next()?).ok()?;
    let (mut started, mut until) = (None, None);
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        match k {
            "since" => started = v.parse().ok(),
            "until" if v != "forever" => until = v.parse().ok(),
            _ => {}
        }
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
    pub fn new(api: Api, s: CloudflareSettings) -> CloudflareEnforcer {
        CloudflareEnforcer {
            api,
            s,
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

    /// List mode: the list's id, finding or creating the list and its rule when not known.
    pub(crate) fn ensure_list(&mut self) -> Result<String, CallError> {
        match &self.list_id {
            Some(id) => Ok(id.clone()),
            None => self.check_list_and_rule(),
        }
    }

    /// List mode: finds the list and the zone rule that blocks it, creating what is missing.
    /// Without either, the bans block nothing and nothing says so: one that was in place and
    /// is gone (someone deleted it) is restored, logged as an error and counted in `repairs`.
    /// A list created again is empty: what moat held is forgotten, and the converge that
    /// follows places every ban again.
    fn check_list_and_rule(&mut self) -> Result<String, CallError> {
        let path = format!("/accounts/{}/rules/lists", self.account());
        let lists = self.api.result("GET", &path, None)?;
        let found = lists
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == self.s.list.as_str())
            .and_then(|l| l["id"].as_str().map(String::from));
        let had = self.list_id.take();
        let existed = found.is_some();
        let id = match found {
            Some(id) => {
                if let Some(old) = had.filter(|old| *old != id) {
                    self.repairs += 1;
                    tracing::error!(list = %self.s.list, %old, new = %id,
                        "the Cloudflare IP list was replaced by another of the same name: \
                         moat's bans are placed in it again");
                    self.forget();
                }
                id
            }
            None => {
                let body = json!({"name": self.s.list, "kind": "ip",
                                  "description": "Bans placed by moat; items are managed by moat"});
                let l = self.api.result("POST", &path, Some(&body))?;
                if self.in_place {
                    self.repairs += 1;
                    tracing::error!(list = %self.s.list,
                        "the Cloudflare IP list was deleted: its bans blocked nothing; \
                         created it again, and every ban is placed in it again");
                    self.forget();
                } else {
                    tracing::info!(list = %self.s.list, "created the Cloudflare IP list");
                }
                l["id"].as_str().unwrap_or_default().to_string()
            }
        };
        // A list that was there already should have its rule; a new one has none yet.
        self.ensure_rule(self.in_place || existed)?;
        self.list_id = Some(id.clone());
        self.in_place = true;
        Ok(id)
    }

    /// Forgets what moat held in the list (it is gone): the next read starts afresh.
    fn forget(&mut self) {
        self.remote.clear();
        self.known = false;
    }

    /// The custom rule `ip.src in $LIST` in the zone's entry point ruleset; other rules stay.
    /// `expected`: the rule should be there, so its absence is a repair.
    fn ensure_rule(&mut self, expected: bool) -> Result<(), CallError> {
        let expression = format!("ip.src in ${}", self.s.list);
        let rule = json!({"description": "moat: block the clients moat banned",
                          "expression": expression, "action": self.s.action.as_str(), "enabled": true});
        let entry = format!(
            "/zones/{}/rulesets/phases/http_request_firewall_custom/entrypoint",
            self.zone()
        );
        let done = match self.api.result("GET", &entry, None) {
            Ok(rs) => {
                let ours = rs["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["expression"] == expression.as_str());
                if let Some(r) = ours {
                    // Disabled by hand, perhaps on purpose: said loudly, not overridden.
                    self.rule_disabled = r["enabled"] == Value::Bool(false);
                    if self.rule_disabled {
                        tracing::error!(rule = %expression,
                            "the blocking rule is disabled in the zone's custom rules: moat's \
                             bans block nothing until it is enabled again");
                    }
                    return Ok(());
                }
                let id = rs["id"].as_str().unwrap_or_default().to_string();
                let path = format!("/zones/{}/rulesets/{id}/rules", self.zone());
                self.api.result("POST", &path, Some(&rule))?;
                "added the blocking rule to the zone's custom rules"
            }
            Err(CallError::Api { status: 404, .. }) => {
                self.api
                    .result("PUT", &entry, Some(&json!({"rules": [rule]})))?;
                "created the zone's custom rules with the blocking rule"
            }
            Err(e) => return Err(e),
        };
        self.rule_disabled = false;
        if expected {
            self.repairs += 1;
            tracing::error!(rule = %expression,
                "the blocking rule was deleted, so moat's bans blocked nothing: {done} again");
        } else {
            tracing::info!(rule = %expression, "{done}");
        }
        Ok(())
    }

    /// After a call on the list failed: a 404 says the list is gone (deleted behind moat's
    /// back). It is looked for again at the next call, and the reconcile that restores it
    /// with every ban is due now rather than in `reconcile_every`.
    fn note_list_error(&mut self, e: &CallError) {
        if matches!(e, CallError::Api { status: 404, .. }) && self.list_id.is_some() {
            tracing::warn!(list = %self.s.list, "Cloudflare does not find the IP list: {e}");
            self.list_id = None;
            self.last_reconcile = None;
        }
    }

    /// Waits for a list operation to finish: `Ok(None)` completed, `Ok(Some(error))` failed.
    fn poll(&mut self, op: &str) -> Result<Option<String>, CallError> {
        let path = format!(
            "/accounts/{}/rules/lists/bulk_operations/{op}",
            self.account()
        );
        let mut delay = Duration::from_millis(100);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let r = self.api.result("GET", &path, None)?;
            match r["status"].as_str() {
                Some("completed") => return Ok(None),
                Some("failed") => {
                    return Ok(Some(r["error"].as_str().unwrap_or("failed").to_string()))
                }
                _ if Instant::now() > deadline => {
                    return Err(CallError::Unavailable(format!(
                        "list operation {op} did not finish within 5 minutes"
                    )))
                }
                _ => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads the items of moat's list, every one or those whose address starts with
    /// `search`: (address, id, comment).
    fn read_list(
        &mut self,
        list: &str,
        search: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, CallError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!(
                "/accounts/{}/rules/lists/{list}/items?per_page={PAGE}",
                self.account()
            );
            if let Some(s) = search {
                path.push_str(&format!("&search={}", encode(s)));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode(c)));
            }
            let v = self.api.call("GET", &path, None)?;
            for i in v["result"].as_array().into_iter().flatten() {
                out.push((
                    i["ip"].as_str().unwrap_or_default().to_string(),
                    i["id"].as_str().unwrap_or_default().to_string(),
                    i["comment"].as_str().unwrap_or_default().to_string(),
                ));
            }
            cursor = v["result_info"]["cursors"]["after"]
                .as_str()
                .map(String::from);
            if cursor.is_none() {
                return Ok(out);
            }
        }
    }

    pub(crate) fn rules_path(&self) -> String {
        match self.s.scope {
            Scope::Account => format!("/accounts/{}/firewall/access_rules/rules", self.account()),
            Scope::User => "/user/firewall/access_rules/rules".to_string(),
            Scope::Zone => format!("/zones/{}/firewall/access_rules/rules", self.zone()),
        }
    }

    /// Reads moat's access rules (notes moat wrote): address → (id, notes).
    fn read_rules(
        &mut self,
        value: Option<&str>,
    ) -> Result<Vec<(String, String, String)>, CallError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let mut path = format!(
                "{}?notes=moat&per_page={RULES_PAGE}&page={page}",
                self.rules_path()
            );
            if let Some(v) = value {
                path.push_str(&format!("&configuration.value={}", encode(v)));
            }
            let v = self.api.call("GET", &path, None)?;
            for r in v["result"].as_array().into_iter().flatten() {
                let notes = r["notes"].as_str().unwrap_or_default();
                if parse_comment(notes).is_some() {
                    out.push((
                        r["configuration"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        r["id"].as_str().unwrap_or_default().to_string(),
                        notes.to_string(),
                    ));
                }
            }
            let pages = v["result_info"]["total_pages"].as_u64().unwrap_or(1) as usize;
            if page >= pages {
                return Ok(out);
            }
            page += 1;
        }
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
            let Some(carried) = parse_comment(&comment) else {
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

    /// Who holds each of `addrs` in the list now (absent: no item). From the list just read
    /// when `fresh`; else looked up: few addresses one by one (the API's `search` is a prefix
    /// match, so the exact address is picked out of its answer), many by reading the whole
    /// list when that takes fewer requests.
    fn holders(
        &mut self,
        list: &str,
        addrs: &[String],
        fresh: bool,
    ) -> Result<HashMap<String, Holder>, CallError> {
        if fresh {
            return Ok(addrs
                .iter()
                .filter_map(|a| {
                    let holder = if self.foreign.contains(a) {
                        Holder::Other
                    } else {
                        Holder::Moat(self.remote.get(a)?.id.clone()?)
                    };
                    Some((a.clone(), holder))
                })
                .collect());
        }
        let wanted: HashSet<&str> = addrs.iter().map(String::as_str).collect();
        let pages = (self.remote.len() + self.foreign.len()) / PAGE + 1;
        let items = if wanted.len() > pages {
            self.read_list(list, None)?
        } else {
            let mut items = Vec::new();
            for a in &wanted {
                // The address without its prefix length: all an item for it can start with.
                let search = a.split('/').next().unwrap_or(a);
                items.extend(self.read_list(list, Some(search))?);
            }
            items
        };
        let mut out = HashMap::new();
        for (addr, id, comment) in items {
            if !wanted.contains(addr.as_str()) {
                continue;
            }
            let holder = if parse_comment(&comment).is_some() {
                if let Some(r) = self.remote.get_mut(&addr) {
                    r.id = Some(id.clone());
                }
                Holder::Moat(id)
            } else {
                Holder::Other
            };
            out.insert(addr, holder);
        }
        for a in addrs {
            if out.get(a) == Some(&Holder::Other) {
                self.foreign.insert(a.clone());
            } else {
                self.foreign.remove(a);
            }
        }
        Ok(out)
    }

    /// Picks which new bans fit in the list, evicting held ones when `keep` prefers the new;
    /// returns the addresses to evict and the new bans left out. A ban refused before ranks
    /// as the oldest, so that placing it again never pushes out one that took its place.
    fn make_room(
        &self,
        new: &mut Vec<(String, BanOrder)>,
        leaving: &HashSet<String>,
    ) -> (Vec<String>, Vec<(String, BanOrder)>) {
        let cap = self.s.capacity;
        let staying = self.remote.len() - leaving.len().min(self.remote.len());
        if staying + new.len() <= cap {
            return (Vec::new(), Vec::new());
        }
        // Everyone competing for a place: (held?, address, until, when the ban began).
        let mut all: Vec<(bool, String, Option<Timestamp>, Timestamp)> = self
            .remote
            .iter()
            .filter(|(a, _)| !leaving.contains(*a))
            .map(|(a, r)| {
                (
                    true,
                    a.clone(),
                    r.until,
                    r.started.unwrap_or(Timestamp::UNIX_EPOCH),
                )
            })
            .chain(new.iter().map(|(a, b)| {
                let began = if self.refused.contains(&b.key()) {
                    Timestamp::UNIX_EPOCH
                } else {
                    b.started
                };
                (false, a.clone(), b.until, began)
            }))
            .collect();
        match self.s.keep {
            Keep::Newest => all.sort_by_key(|a| std::cmp::Reverse(a.3)),
            // Forever first, then the latest end.
            Keep::Longest => all.sort_by(|a, b| match (a.2, b.2) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, _) => std::cmp::Ordering::Less,
                (_, None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => y.cmp(&x),
            }),
        }
        let losers = &all[cap.min(all.len())..];
        let evict: Vec<String> = losers.iter().filter(|l| l.0).map(|l| l.1.clone()).collect();
        let out: HashSet<&String> = losers.iter().filter(|l| !l.0).map(|l| &l.1).collect();
        let (kept, left): (Vec<_>, Vec<_>) = std::mem::take(new)
            .into_iter()
            .partition(|(a, _)| !out.contains(a));
        *new = kept;
        (evict, left)
    }

    fn apply_list(&mut self, batch: &[Change]) -> Vec<Failed> {
        let list = match self.ensure_list() {
            Ok(l) => l,
            Err(e) => return fail_all(0..batch.len(), &e),
        };
        if !self.known {
            if let Err(e) = self.refresh() {
                return fail_all(0..batch.len(), &e);
            }
        }
        // A converge's changes come right after its read of the list; any other batch looks
        // up what the list holds for the addresses it changes.
        let fresh = std::mem::take(&mut self.list_fresh);
        let mut failed = Vec::new();
        // In batch order: new addresses to add, addresses no ban stands for any more.
        let mut adds: Vec<(String, BanOrder)> = Vec::new();
        let mut add_index: HashMap<String, Vec<usize>> = HashMap::new();
        // The bans each new address stands for (two bans in one /64 are one item).
        let mut add_keys: HashMap<String, BTreeSet<Key>> = HashMap::new();
        let mut gone: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, c) in batch.iter().enumerate() {
            let addr = match remote_of(&c.target(), self.s.ipv6_prefix, Mode::List) {
                Ok(a) => a,
                Err(why) => {
                    if let Change::Ban(b) = c {
                        tracing::warn!("not sent to Cloudflare: {why}");
                        self.refused.insert(b.key());
                    }
                    continue;
                }
            };
            match c {
                Change::Ban(b) => {
                    if let Some(pos) = gone.iter().position(|(a, _)| a == &addr) {
                        gone.remove(pos); // banned again before it went
                    }
                    if let Some(r) = self.remote.get_mut(&addr) {
                        r.keys.insert(b.key());
                        r.until = later(r.until, b.until);
                        r.started = Some(r.started.map_or(b.started, |s| s.max(b.started)));
                    } else {
                        match adds.iter().position(|(a, _)| a == &addr) {
                            Some(pos) => adds[pos].1.until = later(adds[pos].1.until, b.until),
                            None => adds.push((addr.clone(), b.clone())),
                        }
                        add_index.entry(addr.clone()).or_default().push(i);
                        add_keys.entry(addr).or_default().insert(b.key());
                    }
                }
                Change::Unban(k) => {
                    self.refused.remove(k);
                    if let Some(keys) = self.held_by_others.get_mut(&addr) {
                        keys.remove(k);
                        if keys.is_empty() {
                            self.held_by_others.remove(&addr);
                        }
                    }
                    if let Some(r) = self.remote.get_mut(&addr) {
                        r.keys.remove(k);
                        if r.keys.is_empty() && !gone.iter().any(|(a, _)| a == &addr) {
                            gone.push((addr, vec![i]));
                        }
                    } else if let Some(keys) = add_keys.get_mut(&addr) {
                        keys.remove(k);
                        if keys.is_empty() {
                            adds.retain(|(a, _)| a != &addr); // lifted before it was placed
                        }
                    }
                }
            }
        }
        // An address the list holds by an item moat did not create keeps that item (a POST
        // would replace its comment): the ban is held by it.
        if !adds.is_empty() {
            let addrs: Vec<String> = adds.iter().map(|(a, _)| a.clone()).collect();
            match self.holders(&list, &addrs, fresh) {
                Ok(holders) => {
                    let (theirs, ours): (Vec<_>, Vec<_>) = std::mem::take(&mut adds)
                        .into_iter()
                        .partition(|(a, _)| holders.get(a) == Some(&Holder::Other));
                    adds = ours;
                    for (a, _) in theirs {
                        let keys = add_keys.remove(&a).unwrap_or_default();
                        for k in &keys {
                            self.refused.remove(k);
                        }
                        if !self.held_by_others.contains_key(&a) {
                            tracing::info!(addr = %a, "the Cloudflare list holds this address by \
                                an item moat did not create: the ban is held by that item, which \
                                moat leaves as it is");
                        }
                        self.held_by_others.entry(a).or_default().extend(keys);
                    }
                }
                Err(e) => {
                    self.note_list_error(&e);
                    let idx = adds.iter().flat_map(|(a, _)| add_index[a].clone());
                    failed.extend(fail_all(idx, &e));
                    adds.clear();
                }
            }
        }
        let leaving: HashSet<String> = gone.iter().map(|(a, _)| a.clone()).collect();
        let (evict, left_out) = self.make_room(&mut adds, &leaving);
        if !left_out.is_empty() {
            self.refused.extend(left_out.iter().map(|(_, b)| b.key()));
            tracing::warn!(
                left_out = left_out.len(),
                capacity = self.s.capacity,
                "Cloudflare list is full: bans not placed (keep = {:?})",
                self.s.keep
            );
        }
        if !evict.is_empty() {
            for a in &evict {
                if let Some(r) = self.remote.get(a) {
                    self.refused.extend(r.keys.iter().cloned());
                }
            }
            tracing::warn!(
                evicted = ?evict,
                capacity = self.s.capacity,
                "Cloudflare list is full: these bans make room for ones that matter more (keep = {:?})",
                self.s.keep
            );
        }
        for a in evict {
            gone.push((a, Vec::new()));
        }
        if !gone.is_empty() {
            if let Err(e) = self.delete_items(&list, &gone, fresh) {
                self.note_list_error(&e);
                let idx: Vec<usize> = gone.iter().flat_map(|g| g.1.clone()).collect();
                failed.extend(fail_all(idx, &e));
            }
        }
        // The bans that matter most first: when the account turns out to be full, they are
        // the ones placed.
        match self.s.keep {
            Keep::Newest => adds.reverse(),
            Keep::Longest => adds.sort_by(|x, y| match (x.1.until, y.1.until) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, _) => std::cmp::Ordering::Less,
                (_, None) => std::cmp::Ordering::Greater,
                (Some(p), Some(q)) => q.cmp(&p),
            }),
        }
        for chunk in adds.chunks(BATCH) {
            let refused = match self.place(&list, chunk) {
                Ok(r) => r,
                Err(e) => {
                    self.note_list_error(&e);
                    let idx = chunk
                        .iter()
                        .flat_map(|(a, _)| add_index.get(a).cloned().unwrap_or_default());
                    failed.extend(fail_all(idx, &e));
                    continue;
                }
            };
            // Exactly the bans a placed item stands for (not one lifted in this batch).
            for (addr, _) in chunk {
                if let (Some(r), Some(keys)) = (self.remote.get_mut(addr), add_keys.get(addr)) {
                    r.keys.clone_from(keys);
                }
            }
            for (i, error) in refused {
                let (addr, b) = &chunk[i];
                self.refused.insert(b.key());
                failed.extend(
                    add_index
                        .get(addr)
                        .into_iter()
                        .flatten()
                        .map(|&index| Failed {
                            index,
                            error: EnforceError::later(format!("Cloudflare: {error}")),
                        }),
                );
            }
        }
        failed
    }

    /// Adds `chunk` to the list in one operation. When Cloudflare refuses it for being full
    /// (the account's capacity is shared by all its lists), halves it and places what fits,
    /// first half first. Returns the positions Cloudflare refused, with its message.
    fn place(
        &mut self,
        list: &str,
        chunk: &[(String, BanOrder)],
    ) -> Result<Vec<(usize, String)>, CallError> {
        let items: Vec<Value> = chunk
            .iter()
            .map(|(a, b)| json!({"ip": a, "comment": comment_of(b)}))
            .collect();
        let path = format!("/accounts/{}/rules/lists/{list}/items", self.account());
        let v = self.api.result("POST", &path, Some(&Value::Array(items)))?;
        let op = v["operation_id"].as_str().unwrap_or_default().to_string();
        match self.poll(&op)? {
            None => {
                for (a, b) in chunk {
                    let r = self.remote.entry(a.clone()).or_default();
                    r.keys.insert(b.key());
                    r.until = b.until;
                    r.started = Some(r.started.map_or(b.started, |s| s.max(b.started)));
                    self.refused.remove(&b.key());
                }
                Ok(Vec::new())
            }
            Some(error) if error.contains("maximum number") && chunk.len() > 1 => {
                let mid = chunk.len() / 2;
                let first = self.place(list, &chunk[..mid])?;
                if first.len() == mid {
                    // Not even the first half fitted: the second will not either.
                    let mut all = first;
                    all.extend((mid..chunk.len()).map(|i| (i, error.clone())));
                    return Ok(all);
                }
                let second = self.place(list, &chunk[mid..])?;
                Ok(first
                    .into_iter()
                    .chain(second.into_iter().map(|(i, e)| (i + mid, e)))
                    .collect())
            }
            Some(error) => {
                tracing::error!(bans = chunk.len(), %error, "Cloudflare refused a list operation");
                Ok((0..chunk.len()).map(|i| (i, error.clone())).collect())
            }
        }
    }

    /// Deletes moat's items for `gone` (addresses no ban stands for any more), by the ids
    /// the list holds now (`holders`). An item that is not moat's any more (its comment was
    /// changed) stays; an address the list does not hold is moot.
    fn delete_items(
        &mut self,
        list: &str,
        gone: &[(String, Vec<usize>)],
        fresh: bool,
    ) -> Result<(), CallError> {
        let addrs: Vec<String> = gone.iter().map(|(a, _)| a.clone()).collect();
        let holders = self.holders(list, &addrs, fresh)?;
        let mut ids = Vec::new();
        for a in &addrs {
            match holders.get(a) {
                Some(Holder::Moat(id)) => ids.push(json!({"id": id})),
                Some(Holder::Other) => tracing::warn!(addr = %a,
                    "the Cloudflare list item for this address is no longer moat's (its comment \
                     was changed): not deleted"),
                None => {}
            }
        }
        for chunk in ids.chunks(BATCH) {
            let path = format!("/accounts/{}/rules/lists/{list}/items", self.account());
            let v = self
                .api
                .result("DELETE", &path, Some(&json!({"items": chunk})))?;
            let op = v["operation_id"].as_str().unwrap_or_default().to_string();
            if let Some(error) = self.poll(&op)? {
                return Err(CallError::Api {
                    status: 200,
                    code: 0,
                    message: error,
                });
            }
        }
        for (a, _) in gone {
            self.remote.remove(a);
        }
        Ok(())
    }

    fn apply_rules(&mut self, batch: &[Change]) -> Vec<Failed> {
        if !self.known {
            if let Err(e) = self.refresh() {
                return fail_all(0..batch.len(), &e);
            }
        }
        let mut failed = Vec::new();
        for (i, c) in batch.iter().enumerate() {
            let r = match c {
                Change::Ban(b) => self.ban_rule(b),
                Change::Unban(k) => self.unban_rule(k),
            };
            if let Err(e) = r {
                failed.push(Failed {
                    index: i,
                    error: e.into(),
                });
            }
        }
        failed
    }

    fn ban_rule(&mut self, b: &BanOrder) -> Result<(), CallError> {
        let addr = match remote_of(&b.target, self.s.ipv6_prefix, Mode::AccessRules) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!("not sent to Cloudflare: {why}");
                self.refused.insert(b.key());
                return Ok(());
            }
        };
        if let Some(r) = self.remote.get_mut(&addr) {
            r.keys.insert(b.key());
            return Ok(());
        }
        if let Some(keys) = self.held_by_others.get_mut(&addr) {
            keys.insert(b.key());
            return Ok(());
        }
        let target = match addr.parse::<IpNet>() {
            Ok(_) => "ip_range",
            Err(_) if addr.contains(':') => "ip6",
            Err(_) => "ip",
        };
        let body = json!({"mode": self.s.action.as_str(),
                          "configuration": {"target": target, "value": addr},
                          "notes": comment_of(b)});
        let path = self.rules_path();
        let id = match self.api.result("POST", &path, Some(&body)) {
            Ok(v) => v["id"].as_str().map(String::from),
            Err(e) if e.code() == Some(10009) => {
                // Already there: adopt moat's rule; another's rule blocks it already (and is
                // never deleted by moat).
                let found = self.read_rules(Some(&addr))?;
                found
                    .into_iter()
                    .find(|(a, ..)| a == &addr)
                    .map(|(_, id, _)| id)
            }
            Err(e) => return Err(e),
        };
        let Some(id) = id else {
            tracing::info!(%addr, "an access rule moat did not create holds this address: the \
                ban is held by it, which moat leaves as it is");
            self.held_by_others.entry(addr).or_default().insert(b.key());
            self.refused.remove(&b.key());
            return Ok(());
        };
        let id = Some(id);
        let r = self.remote.entry(addr).or_default();
        r.id = id;
        r.keys.insert(b.key());
        r.until = b.until;
        r.started = Some(b.started);
        self.refused.remove(&b.key());
        Ok(())
    }

    fn unban_rule(&mut self, k: &Key) -> Result<(), CallError> {
        self.refused.remove(k);
        let Ok(addr) = remote_of(&k.target, self.s.ipv6_prefix, Mode::AccessRules) else {
            return Ok(());
        };
        if let Some(keys) = self.held_by_others.get_mut(&addr) {
            keys.remove(k);
            if keys.is_empty() {
                self.held_by_others.remove(&addr);
            }
            return Ok(()); // someone else's rule: never deleted
        }
        let Some(r) = self.remote.get_mut(&addr) else {
            return Ok(()); // never placed: moot
        };
        r.keys.remove(k);
        if !r.keys.is_empty() {
            return Ok(());
        }
        let Some(id) = r.id.clone() else {
            // Adopted from another's rule, or unknown: leave it.
            self.remote.remove(&addr);
            return Ok(());
        };
        let path = format!("{}/{id}", self.rules_path());
        // The rule must still be moat's rule for this address before it goes.
        let check = if self.s.scope == Scope::User {
            self.read_rules(Some(&addr))
                .map(|rules| rules.iter().any(|(a, rid, _)| a == &addr && rid == &id))
        } else {
            match self.api.result("GET", &path, None) {
                Ok(v) => Ok(v["configuration"]["value"] == addr.as_str()),
                Err(CallError::Api { status: 404, .. }) => Ok(false),
                Err(e) => Err(e),
            }
        };
        if !check? {
            tracing::warn!(%addr, %id, "the access rule no longer holds this address: not deleted");
            self.remote.remove(&addr);
            return Ok(());
        }
        match self.api.result("DELETE", &path, None) {
            Ok(_) | Err(CallError::Api { status: 404, .. }) => {
                self.remote.remove(&addr);
                Ok(())
            }
            Err(e) => {
                self.remote.get_mut(&addr).map(|r| r.keys.insert(k.clone()));
                Err(e)
            }
        }
    }
}

/// Reads a secret from `path`, refusing a file others may read.
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o044 != 0 {
        return Err(format!(
            "{} is readable by others (mode {:o}); hint: chmod 600 {}",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret)
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

impl Enforcer for CloudflareEnforcer {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn apply(&mut self, batch: &[Change]) -> Vec<Failed> {
        match self.s.mode {
            Mode::List => self.apply_list(batch),
            Mode::AccessRules => self.apply_rules(batch),
        }
    }

    /// The changes from a fresh read; they are applied right away, on what that read found.
    fn converge(&mut self, wanted: &[BanOrder]) -> Result<Vec<Change>, EnforceError> {
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

    fn intact(&mut self) -> Result<bool, EnforceError> {
        let due = self
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
        let mut r = format!(
            "{} requests, {} entries at Cloudflare",
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
        };
        let c = comment_of(&b);
        assert!(
            c.starts_with("moat portainer 2001:db8::1 since 2023-11-14T22:13:20Z until 2027-"),
            "{c}"
        );
        let x = parse_comment(&c).unwrap();
        assert_eq!(
            (x.target, x.started, x.until),
            (b.target, Some(b.started), b.until)
        );
        assert!(parse_comment("banned by hand").is_none());
        let forever = BanOrder { until: None, ..b };
        assert_eq!(parse_comment(&comment_of(&forever)).unwrap().until, None);
    }
}

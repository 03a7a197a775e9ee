//! List mode: an account IP list that one custom rule of the zone blocks. Bans and unbans
//! are list item operations (asynchronous at Cloudflare, polled to completion), in batches;
//! the list and its rule are found or created, checked at each reconcile and put back when
//! deleted. Items moat did not create are never overwritten or deleted.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{json, Value};

use super::api::{encode, CallError};
use super::settings::{Keep, Mode};
use super::{
    comment_of, fail_all, later, parse_comment, remote_of, CloudflareEnforcer, Holder, BATCH, PAGE,
};
use crate::enforce::{BanOrder, Change, EnforceError, Failed, Key};

impl CloudflareEnforcer {
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
    pub(super) fn check_list_and_rule(&mut self) -> Result<String, CallError> {
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
    pub(super) fn forget(&mut self) {
        self.remote.clear();
        self.known = false;
    }

    /// The custom rule `ip.src in $LIST` in the zone's entry point ruleset; other rules stay.
    /// `expected`: the rule should be there, so its absence is a repair.
    pub(super) fn ensure_rule(&mut self, expected: bool) -> Result<(), CallError> {
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
    pub(super) fn note_list_error(&mut self, e: &CallError) {
        if matches!(e, CallError::Api { status: 404, .. }) && self.list_id.is_some() {
            tracing::warn!(list = %self.s.list, "Cloudflare does not find the IP list: {e}");
            self.list_id = None;
            self.last_reconcile = None;
        }
    }

    /// Waits for a list operation to finish: `Ok(None)` completed, `Ok(Some(error))` failed.
    pub(super) fn poll(&mut self, op: &str) -> Result<Option<String>, CallError> {
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
    pub(super) fn read_list(
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

    /// Who holds each of `addrs` in the list now (absent: no item). From the list just read
    /// when `fresh`; else looked up: few addresses one by one (the API's `search` is a prefix
    /// match, so the exact address is picked out of its answer), many by reading the whole
    /// list when that takes fewer requests.
    pub(super) fn holders(
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
            let holder = if parse_comment(&comment, &self.owner).is_some() {
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
    pub(super) fn make_room(
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
        if !self.may_delete() {
            // Without the lease (Redis unreachable) nothing is deleted, evictions neither:
            // what the list holds stays ahead of every newcomer (a stable sort keeps the
            // order among each).
            all.sort_by_key(|a| !a.0);
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

    pub(super) fn apply_list(&mut self, batch: &[Change]) -> Vec<Failed> {
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
    pub(super) fn place(
        &mut self,
        list: &str,
        chunk: &[(String, BanOrder)],
    ) -> Result<Vec<(usize, String)>, CallError> {
        let items: Vec<Value> = chunk
            .iter()
            .map(|(a, b)| json!({"ip": a, "comment": comment_of(b, &self.owner)}))
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
    pub(super) fn delete_items(
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
}

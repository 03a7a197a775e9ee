//! Access-rules mode: one IP Access Rule per ban at zone, account or user scope. The unban
//! deletes the rule by its id after checking it still holds that address; a duplicate (code
//! 10009) is looked up and adopted when it is moat's, and left alone when it is someone
//! else's.

use ipnet::IpNet;
use serde_json::json;

use super::api::{encode, CallError};
use super::settings::{Mode, Scope};
use super::{comment_of, fail_all, parse_comment, remote_of, CloudflareEnforcer, RULES_PAGE};
use crate::enforce::{BanOrder, Change, Failed, Key};

impl CloudflareEnforcer {
    pub(crate) fn rules_path(&self) -> String {
        match self.s.scope {
            Scope::Account => format!("/accounts/{}/firewall/access_rules/rules", self.account()),
            Scope::User => "/user/firewall/access_rules/rules".to_string(),
            Scope::Zone => format!("/zones/{}/firewall/access_rules/rules", self.zone()),
        }
    }

    /// Reads moat's access rules (notes moat wrote): address → (id, notes).
    pub(super) fn read_rules(
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
                if parse_comment(notes, &self.owner).is_some() {
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

    pub(super) fn apply_rules(&mut self, batch: &[Change]) -> Vec<Failed> {
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

    pub(super) fn ban_rule(&mut self, b: &BanOrder) -> Result<(), CallError> {
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
                          "notes": comment_of(b, &self.owner)});
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

    pub(super) fn unban_rule(&mut self, k: &Key) -> Result<(), CallError> {
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
                // Still this address, and still this owner's (not rewritten by another).
                Ok(v) => Ok(v["configuration"]["value"] == addr.as_str()
                    && parse_comment(v["notes"].as_str().unwrap_or_default(), &self.owner)
                        .is_some()),
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

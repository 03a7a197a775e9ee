//! What the engine answers on the control socket: status, the bans, a ban or an unban by
//! hand. A hand-made ban passes the same safety rules as a jail's, and never touches an
//! address a jail ignores.

use jiff::{SignedDuration, Timestamp};

use super::super::protocol::{ActiveBan, Bans, JailStatus, Reply, Request, Status};
use super::book::Active;
use super::{Engine, MANUAL_JAIL};
use crate::config::value::parse_duration;
use crate::ledger::{EndReason, NewBan, Origin};
use crate::vocab::{parse_target, Target};

impl Engine {
    pub(super) fn control(&mut self, req: Request, now: Timestamp) -> Reply {
        match req {
            Request::Ping => Reply::ok("pong"),
            Request::Status { jail } => match self.status(jail.as_deref()) {
                Ok(s) => Reply::ok(s),
                Err(e) => Reply::err(e),
            },
            Request::Bans { history } => {
                let mut active: Vec<ActiveBan> = self.book.iter().map(|(_, a)| view(a)).collect();
                active.sort_by(|a, b| a.started.cmp(&b.started).then(a.target.cmp(&b.target)));
                let history = match history {
                    Some(n) => match self.book.history(n) {
                        Ok(h) => h,
                        Err(e) => return Reply::err(e.to_string()),
                    },
                    None => Vec::new(),
                };
                Reply::ok(Bans { active, history })
            }
            Request::Ban {
                target,
                jail,
                duration,
                reason,
                force,
            } => match self.manual_ban(&target, jail, duration, reason, force, now) {
                Ok(b) => Reply::ok(b),
                Err(e) => Reply::err(e),
            },
            Request::Unban { target, all, jail } => match self.unban(target, all, jail, now) {
                Ok(ended) => Reply::ok(ended),
                Err(e) => Reply::err(e),
            },
            Request::Show { target, jail } => match self.show(&target, jail.as_deref(), now) {
                Ok(d) => Reply::ok(d),
                Err(e) => Reply::err(e),
            },
            Request::Dashboard => match self.dashboard(now) {
                Ok(d) => Reply::ok(d),
                Err(e) => Reply::err(e),
            },
            Request::Reload => Reply::err("reload is handled by the daemon, not the engine"),
        }
    }

    /// The jail names a request may name: the configured ones, and `manual` for bans by hand.
    fn known_jail(&self, name: &str) -> bool {
        name == MANUAL_JAIL || self.jails.index(name).is_some()
    }

    fn unban(
        &mut self,
        target: Option<String>,
        all: bool,
        jail: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<ActiveBan>, String> {
        if let Some(j) = &jail {
            if !self.known_jail(j) {
                return Err(format!("no jail named {j:?}"));
            }
        }
        let target = if all {
            None
        } else {
            let t = target.ok_or("name an address or network, or --all")?;
            Some(parse_target(&t)?)
        };
        let slots = self.book.matching(target, jail.as_deref());
        let ended = self.end(&slots, now, EndReason::Unbanned);
        Ok(ended.iter().map(view_ban).collect())
    }

    fn manual_ban(
        &mut self,
        target: &str,
        jail: Option<String>,
        duration: Option<String>,
        reason: Option<String>,
        force: bool,
        now: Timestamp,
    ) -> Result<ActiveBan, String> {
        let target = parse_target(target)?;
        if let Some(why) = self.protected.refuse(&target, force) {
            tracing::warn!(ip = %Target(target), "ban refused: {why}");
            return Err(format!("refused: {why}"));
        }
        // Never an address a jail was told to ignore (the office, the monitor).
        let ignored = self.jails.configs().find_map(|j| {
            j.params
                .ignore
                .overlapping(&target)
                .map(|n| (j.name.clone(), n))
        });
        if let Some((jail, net)) = ignored {
            let why = format!("{target} overlaps {net}, which jail {jail:?} ignores");
            tracing::warn!(ip = %Target(target), "ban refused: {why}");
            return Err(format!("refused: {why}"));
        }
        let jail_bantime = match &jail {
            Some(name) if name != MANUAL_JAIL => Some(
                self.jails
                    .index(name)
                    .map(|j| self.jails.config(j).params.bantime)
                    .ok_or_else(|| format!("no jail named {name:?}"))?,
            ),
            _ => None,
        };
        let bantime = match duration.as_deref() {
            Some("forever" | "permanent") => SignedDuration::MAX,
            Some(d) => {
                let d = parse_duration(d)?;
                if d <= SignedDuration::ZERO {
                    return Err("the duration must be positive".into());
                }
                d
            }
            None => jail_bantime.unwrap_or(self.default_bantime),
        };
        let ban = NewBan {
            jail: jail.unwrap_or_else(|| MANUAL_JAIL.to_string()),
            target,
            started: now,
            until: now.checked_add(bantime).ok(),
            failures: 0,
            origin: Origin::Manual,
            reason: reason.unwrap_or_default(),
            node: None,
        };
        self.jails.hold(&ban);
        let shown = view_ban(&ban);
        self.place(ban, Vec::new(), now, None);
        Ok(shown)
    }

    pub(super) fn status(&self, only: Option<&str>) -> Result<Status, String> {
        if let Some(name) = only {
            if !self.known_jail(name) {
                let names: Vec<&str> = self.jails.configs().map(|j| j.name.as_str()).collect();
                return Err(format!(
                    "no jail named {name:?}; the jails are: {}",
                    names.join(", ")
                ));
            }
        }
        let totals = self.book.store().bans_per_jail().unwrap_or_default();
        let banned_in = |jail: &str| {
            let mut banned: Vec<ActiveBan> = self
                .book
                .iter()
                .filter(|(_, a)| a.ban.jail == jail)
                .map(|(_, a)| view(a))
                .collect();
            banned.sort_by(|a, b| a.started.cmp(&b.started).then(a.target.cmp(&b.target)));
            banned
        };
        let mut jails = Vec::new();
        for j in 0..self.jails.len() {
            let config = self.jails.config(j);
            if only.is_some_and(|n| n != config.name) {
                continue;
            }
            let stage = self.jails.stage(j);
            let banned = banned_in(&config.name);
            let p = &config.params;
            jails.push(JailStatus {
                name: config.name.clone(),
                filter: config.filter_label.clone(),
                sources: config.sources.clone(),
                maxretry: p.maxretry,
                findtime_secs: p.findtime.as_secs(),
                bantime_secs: (p.bantime != SignedDuration::MAX).then(|| p.bantime.as_secs()),
                currently_failing: stage.window.failing(),
                total_failed: stage.stats.failed,
                currently_banned: banned.len(),
                total_banned: totals.get(&config.name).copied().unwrap_or(0),
                stale: stage.stats.stale,
                unparsed_time: stage.stats.unparsed_time,
                too_long: stage.stats.too_long,
                refused: self.refused.get(&config.name).copied().unwrap_or(0),
                banned,
            });
        }
        // Hand-made bans outside any jail.
        if only.is_none() || only == Some(MANUAL_JAIL) {
            let manual: Vec<ActiveBan> = self
                .book
                .iter()
                .filter(|(_, a)| self.jails.index(&a.ban.jail).is_none())
                .map(|(_, a)| view(a))
                .collect();
            if !manual.is_empty() || only == Some(MANUAL_JAIL) {
                jails.push(JailStatus {
                    name: MANUAL_JAIL.into(),
                    filter: "-".into(),
                    sources: Vec::new(),
                    maxretry: 0,
                    findtime_secs: 0,
                    bantime_secs: None,
                    currently_failing: 0,
                    total_failed: 0,
                    currently_banned: manual.len(),
                    total_banned: totals.get(MANUAL_JAIL).copied().unwrap_or(0),
                    stale: 0,
                    unparsed_time: 0,
                    too_long: 0,
                    refused: 0,
                    banned: manual,
                });
            }
        }
        let mut status = self.shared.status(
            jails,
            self.enforcers.status(),
            &self.book.store().location(),
        );
        status.cluster = self
            .fleet
            .as_ref()
            .map(|f| f.status.lock().unwrap().clone());
        Ok(status)
    }
}

pub(super) fn view(a: &Active) -> ActiveBan {
    view_ban(&a.ban)
}

fn view_ban(b: &NewBan) -> ActiveBan {
    ActiveBan {
        target: b.target,
        jail: b.jail.clone(),
        started: b.started,
        until: b.until,
        failures: b.failures,
        reason: b.reason.clone(),
        node: b.node.clone(),
    }
}

//! The engine's answers for people who look rather than read: one ban in full (`moat bans
//! show`) and everything the web dashboard shows. Both are read from the ban book, the
//! ledger and [`Recent`](super::recent::Recent): no second copy of the state.

use jiff::{SignedDuration, Timestamp};

use super::super::protocol::{BanDetail, Dashboard, Holder, Rule, DASHBOARD_BANS};
use super::book::Active;
use super::recent::SPAN;
use super::requests::view;
use super::Engine;
use crate::ledger::Origin;
use crate::vocab::parse_target;

/// Earlier bans listed with a ban.
const HISTORY: u32 = 20;
/// Entries in each top list.
const TOP: usize = 10;

impl Engine {
    /// One active ban in full: the newest of `target`'s (in `jail` when given).
    pub(super) fn show(
        &self,
        target: &str,
        jail: Option<&str>,
        now: Timestamp,
    ) -> Result<BanDetail, String> {
        let net = parse_target(target)?;
        let found = self
            .book
            .iter()
            .filter(|((j, t), _)| *t == net && jail.is_none_or(|want| want == j))
            .map(|(_, a)| a)
            .max_by_key(|a| a.ban.started);
        match found {
            Some(a) => Ok(self.detail(a, true, now)),
            None => Err(match jail {
                Some(j) => format!("{target} is not banned in jail {j:?}"),
                None => format!("{target} is not banned"),
            }),
        }
    }

    /// A ban with its evidence, rule, history and enforcers; `history` reads the target's
    /// earlier bans from the ledger.
    fn detail(&self, a: &Active, history: bool, _now: Timestamp) -> BanDetail {
        let store = self.book.store();
        let evidence =
            a.id.and_then(|id| store.ban_lines(id).ok())
                .unwrap_or_default()
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
        let jail = self.jails.index(&a.ban.jail).map(|j| self.jails.config(j));
        let rule = jail.map(|c| Rule {
            filter: c.filter_label.clone(),
            maxretry: c.params.maxretry,
            findtime_secs: c.params.findtime.as_secs(),
            bantime_secs: (c.params.bantime != SignedDuration::MAX)
                .then(|| c.params.bantime.as_secs()),
            escalates: c.escalation.is_some(),
        });
        let escalation = jail
            .and_then(|c| {
                let esc = c.escalation.as_ref()?;
                let (_, earlier) = self.book.escalated(
                    esc,
                    &c.name,
                    a.ban.target,
                    c.params.bantime,
                    a.ban.started,
                );
                Some(earlier)
            })
            .unwrap_or(0);
        let history = if history {
            store
                .bans_of(a.ban.target, HISTORY + 1)
                .unwrap_or_default()
                .into_iter()
                .filter(|b| Some(b.id) != a.id)
                .take(HISTORY as usize)
                .collect()
        } else {
            Vec::new()
        };
        let since = a.ban.started.max(self.shared.started);
        let enforcers = self
            .enforcers
            .holders(&a.key())
            .into_iter()
            .map(|(name, pending)| Holder {
                enforcer: name.to_string(),
                since,
                pending,
            })
            .collect();
        BanDetail {
            ban: view(a),
            // A remote ban says which node of the fleet decided it.
            origin: match &a.ban.node {
                Some(node) => format!("node {node}"),
                None => origin_name(a.ban.origin).to_string(),
            },
            evidence,
            rule,
            history,
            escalation,
            enforcers,
        }
    }

    /// Everything the dashboard shows.
    pub(super) fn dashboard(&self, now: Timestamp) -> Result<Dashboard, String> {
        let status = self.status(None)?;
        let mut active: Vec<&Active> = self.book.iter().map(|(_, a)| a).collect();
        active.sort_by(|a, b| {
            b.ban
                .started
                .cmp(&a.ban.started)
                .then(a.ban.target.cmp(&b.ban.target))
        });
        let bans = active
            .iter()
            .take(DASHBOARD_BANS)
            .map(|a| self.detail(a, false, now))
            .collect();
        let jails: Vec<String> = self.jails.configs().map(|j| j.name.clone()).collect();
        let (top_targets, top_networks, top_jails) = self.recent.top(TOP);
        Ok(Dashboard {
            status,
            bans,
            active: active.len(),
            day: self
                .recent
                .timeline(now, SignedDuration::from_hours(24), 300, &jails),
            week: self.recent.timeline(now, SPAN, 3600, &jails),
            top_targets,
            top_networks,
            top_jails,
            ports: self.shared.ports.lock().unwrap().clone(),
        })
    }
}

/// An origin as the dashboard and `moat bans show` name it.
pub fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Jail => "log",
        Origin::Manual => "manual",
    }
}

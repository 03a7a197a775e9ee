//! `moat cloudflare verify`: whether the configured credential, account and zone work, and
//! whether the credential may do what the configured mode needs, in plain words.
//!
//! Reads only, and only the endpoints the daemon itself uses: a read a permission allows
//! shows the permission is there (Cloudflare grants Read with Edit), and the same read shows
//! that the account or zone is one the token may use. Nothing else is asked for (the
//! account's or zone's details need permissions moat never uses, so a token with exactly
//! the documented ones would fail). That moat may also write shows at the first ban, or with
//! `--write`, which creates the list and the rule moat would create anyway.

use super::api::{Api, Auth, CallError};
use super::{CloudflareEnforcer, Mode};

/// One check and its outcome.
#[derive(Debug, serde::Serialize)]
pub struct Check {
    /// What was checked (the credential, the account, the zone, a permission), in words.
    pub what: String,
    /// Whether it works.
    pub ok: bool,
    /// What was found, or what is missing and how to fix it.
    pub detail: String,
}

/// The permission groups, as the dashboard names them (docs/cloudflare.md lists them per mode).
const LISTS: &str = "Account · Account Filter Lists · Edit";
const WAF: &str = "Zone · WAF · Edit";
const ZONE_FIREWALL: &str = "Zone · Firewall Services · Edit";
const ACCOUNT_FIREWALL: &str = "Account · Account Firewall Access Rules · Edit";

/// A failed check in words; `on` names what the request was about (`account_id ...`), since
/// Cloudflare refuses a wrong id as it refuses a missing permission.
fn explain(e: &CallError, permission: &str, on: &str) -> String {
    match e {
        CallError::Api { status: 403, .. } | CallError::Api { code: 10000, .. } => format!(
            "refused: the token lacks \"{permission}\" (add it to the token in the dashboard: \
             My Profile → API Tokens), or {on} is not one the token may use"
        ),
        CallError::Api {
            status: 400,
            message,
            ..
        } => {
            format!("the credential is malformed: {message}")
        }
        e => e.to_string(),
    }
}

/// Runs the checks for `cf`'s mode; `write` also creates the list and the zone rule.
pub fn verify(cf: &mut CloudflareEnforcer, auth: &Auth, write: bool) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |what: &str, r: Result<String, String>| {
        out.push(Check {
            what: what.to_string(),
            ok: r.is_ok(),
            detail: r.unwrap_or_else(|e| e),
        })
    };
    let rules_path = cf.rules_path();
    let api: &mut Api = &mut cf.api;
    match auth {
        Auth::Token(_) => check(
            "token",
            match api.result("GET", "/user/tokens/verify", None) {
                Ok(v) if v["status"] == "active" => Ok("valid and active".into()),
                Ok(v) => Err(format!("not active: {}", v["status"])),
                Err(e) => Err(match e {
                    CallError::Api { .. } => {
                        format!("not accepted by Cloudflare ({e}); check the token's text")
                    }
                    e => e.to_string(),
                }),
            },
        ),
        Auth::GlobalKey { email, .. } => check(
            "global key",
            Ok(format!(
                "{email}: the global key can do anything the account can; an API token limited \
                 to what moat needs is safer"
            )),
        ),
    }
    let account = format!(
        "account_id {}",
        cf.s.account_id.as_deref().unwrap_or_default()
    );
    let zone = format!("zone_id {}", cf.s.zone_id.as_deref().unwrap_or_default());
    match cf.s.mode {
        Mode::List => {
            let a = cf.s.account_id.clone().unwrap_or_default();
            check(
                "IP lists",
                api.result("GET", &format!("/accounts/{a}/rules/lists"), None)
                    .map(|v| {
                        let n = v.as_array().map_or(0, Vec::len);
                        let ours = v
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|l| l["name"] == cf.s.list.as_str());
                        match ours {
                            Some(l) => format!(
                                "{n} list(s) in account {a}; {} holds {} item(s)",
                                cf.s.list, l["num_items"]
                            ),
                            None => {
                                format!("{n} list(s) in account {a}; {} will be created", cf.s.list)
                            }
                        }
                    })
                    .map_err(|e| explain(&e, LISTS, &account)),
            );
            let z = cf.s.zone_id.clone().unwrap_or_default();
            let entry =
                format!("/zones/{z}/rulesets/phases/http_request_firewall_custom/entrypoint");
            check(
                "custom rules",
                match api.result("GET", &entry, None) {
                    Ok(v) => Ok(format!(
                        "{} rule(s) in zone {z}'s custom rules",
                        v["rules"].as_array().map_or(0, Vec::len)
                    )),
                    Err(CallError::Api { status: 404, .. }) => Ok(format!(
                        "none yet in zone {z}; moat will create the phase's rules"
                    )),
                    Err(e) => Err(explain(&e, WAF, &zone)),
                },
            );
        }
        Mode::AccessRules => {
            let path = format!("{rules_path}?per_page=1");
            let (permission, on) = match cf.s.scope.as_str() {
                "account" => (ACCOUNT_FIREWALL, account.as_str()),
                "user" => ("the global API key (user-level rules)", "the user"),
                _ => (ZONE_FIREWALL, zone.as_str()),
            };
            check(
                "IP Access Rules",
                api.result("GET", &path, None)
                    .map(|_| format!("readable at {} level", cf.s.scope))
                    .map_err(|e| explain(&e, permission, on)),
            );
        }
    }
    if write && cf.s.mode == Mode::List {
        let r = cf
            .ensure_list()
            .map(|id| format!("list {} ({id}) and its rule are in place", cf.s.list));
        out.push(Check {
            what: "write".into(),
            ok: r.is_ok(),
            detail: r.unwrap_or_else(|e| {
                explain(
                    &e,
                    &format!("{LISTS}\" and \"{WAF}"),
                    "account_id or zone_id",
                )
            }),
        });
    }
    out
}

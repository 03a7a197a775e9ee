//! `moat cloudflare verify`: whether the configured credential, account and zone work, and
//! whether the credential may do what the configured mode needs, in plain words.
//!
//! Reads only: a read a permission allows shows the permission is there (Cloudflare grants
//! Read with Edit); that moat may also write shows at the first ban, or with `--write`, which
//! creates the list and the rule moat would create anyway.

use serde_json::Value;

use super::api::{Api, Auth, CallError};
use super::{CloudflareEnforcer, Mode};

/// One check and its outcome.
#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    /// What was found, or what is missing and how to fix it.
    pub detail: String,
}

fn explain(e: &CallError, permission: &str) -> String {
    match e {
        CallError::Api { status: 403, .. } | CallError::Api { code: 10000, .. } => format!(
            "refused: the token lacks \"{permission}\" (add it to the token in the dashboard: \
             My Profile → API Tokens)"
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
    let (account, zone) = (cf.s.account_id.clone(), cf.s.zone_id.clone());
    let name = |v: &Value| v["name"].as_str().unwrap_or("?").to_string();
    if let Some(a) = &account {
        check(
            "account",
            api.result("GET", &format!("/accounts/{a}"), None)
                .map(|v| format!("{a} ({})", name(&v)))
                .map_err(|e| explain(&e, "Account Settings Read")),
        );
    }
    if let Some(z) = &zone {
        check(
            "zone",
            api.result("GET", &format!("/zones/{z}"), None)
                .map(|v| format!("{z} ({})", name(&v)))
                .map_err(|e| explain(&e, "Zone Read")),
        );
    }
    match cf.s.mode {
        Mode::List => {
            let a = account.unwrap_or_default();
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
                                "{n} list(s); {} holds {} item(s)",
                                cf.s.list, l["num_items"]
                            ),
                            None => format!("{n} list(s); {} will be created", cf.s.list),
                        }
                    })
                    .map_err(|e| explain(&e, "Account Filter Lists Edit")),
            );
            let z = zone.unwrap_or_default();
            let entry =
                format!("/zones/{z}/rulesets/phases/http_request_firewall_custom/entrypoint");
            check(
                "custom rules",
                match api.result("GET", &entry, None) {
                    Ok(v) => Ok(format!(
                        "{} rule(s) in the zone's custom rules",
                        v["rules"].as_array().map_or(0, Vec::len)
                    )),
                    Err(CallError::Api { status: 404, .. }) => {
                        Ok("none yet; moat will create the phase's rules".into())
                    }
                    Err(e) => Err(explain(&e, "Zone WAF Edit")),
                },
            );
        }
        Mode::AccessRules => {
            let path = format!("{rules_path}?per_page=1");
            let permission = match cf.s.scope.as_str() {
                "account" => "Account Firewall Access Rules Edit",
                "user" => "the global API key (user-level rules)",
                _ => "Zone Firewall Services Edit",
            };
            check(
                "IP Access Rules",
                api.result("GET", &path, None)
                    .map(|_| format!("readable at {} level", cf.s.scope))
                    .map_err(|e| explain(&e, permission)),
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
            detail: r
                .unwrap_or_else(|e| explain(&e, "Account Filter Lists Edit and Zone WAF Edit")),
        });
    }
    out
}

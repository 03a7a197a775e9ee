//! The Cloudflare enforcer end to end: the real daemon and CLI against the stateful fake of
//! Cloudflare's API in tests/support/cloudflare.rs (no test can reach Cloudflare). No root
//! needed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::cloudflare::{
    AccessRule, Fake, Item, List, Options, Outage, LISTS_EDIT, WAF_EDIT, ZONE_FIREWALL_EDIT,
};
use support::{write_config, Daemon};

fn eventually(secs: u64, what: &str, d: &Daemon, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "not within {secs}s: {what}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn token_file(dir: &Path, token: &str) -> String {
    let p = dir.join("cf.token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn config(dir: &Path, fake: &Fake, extra: &str) {
    let token = token_file(dir, "good-token");
    std::fs::write(dir.join("access.log"), "").unwrap();
    write_config(
        dir,
        &format!(
            "[enforce]\nuse = [\"cloudflare\"]\n\n[enforce.cloudflare]\ntoken_file = \"{token}\"\n\
             account_id = \"{}\"\nzone_id = \"{}\"\napi = \"{}\"\n{extra}\n\
             [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
            fake.account(),
            fake.zone(),
            fake.url
        ),
    );
}

fn items(fake: &Fake) -> Vec<String> {
    fake.state.lock().unwrap().items()
}

fn failure(ip: &str) -> String {
    let now = jiff::Zoned::now()
        .strftime("%d/%b/%Y:%H:%M:%S %z")
        .to_string();
    format!("{ip} - - [{now}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"bot\"\n")
}

#[test]
fn list_mode_bans_and_unbans_at_the_edge() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());

    d.json(&["ban", "203.0.113.7", "--for", "3s", "--json"]);
    eventually(10, "203.0.113.7 is in the list", &d, || {
        items(&fake).contains(&"203.0.113.7".to_string())
    });
    {
        let st = fake.state.lock().unwrap();
        let list = st.lists.values().find(|l| l.name == "moat_block").unwrap();
        let item = list.items.values().find(|i| i.ip == "203.0.113.7").unwrap();
        assert!(
            item.comment.starts_with("moat manual 203.0.113.7 since "),
            "{item:?}"
        );
        let (_, _, rules) = st.entrypoint.as_ref().expect("the zone rule was created");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["expression"], "ip.src in $moat_block");
        assert_eq!(rules[0]["action"], "block");
    }
    // IPv6 goes as its /64.
    d.json(&["ban", "2001:db8:1:2::1", "--for", "1h", "--json"]);
    eventually(10, "the /64 is in the list", &d, || {
        items(&fake).contains(&"2001:db8:1:2::/64".to_string())
    });
    // From the log: five failed logins.
    let log = tmp.path().join("access.log");
    let lines: String = (0..5).map(|_| failure("198.51.100.9")).collect();
    std::fs::write(&log, lines).unwrap();
    eventually(10, "the bot is in the list", &d, || {
        items(&fake).contains(&"198.51.100.9".to_string())
    });
    // Cloudflare's own ranges and Class E pseudo-IPv4 addresses are never sent.
    for never in ["104.16.0.1", "240.16.0.1"] {
        let out = d.moat(&["ban", never]);
        assert!(!out.status.success(), "{never} refused");
    }
    // The ban ends: the item goes. An unban by hand: the /64 goes.
    eventually(
        15,
        "203.0.113.7 left the list when its ban ended",
        &d,
        || !items(&fake).contains(&"203.0.113.7".to_string()),
    );
    d.json(&["unban", "2001:db8:1:2::1", "--json"]);
    eventually(10, "the /64 left the list", &d, || {
        !items(&fake).contains(&"2001:db8:1:2::/64".to_string())
    });
    let st = fake.state.lock().unwrap();
    assert!(
        st.items()
            .iter()
            .all(|i| !i.starts_with("104.16") && !i.starts_with("240.")),
        "{:?}",
        st.items()
    );
    // Never a PUT of the items (which would replace the whole list).
    assert!(
        !st.requests
            .iter()
            .any(|r| r.starts_with("PUT") && r.contains("/items")),
        "{:?}",
        st.requests
    );
}

#[test]
fn reconcile_adds_the_missing_removes_the_stale_and_leaves_the_foreign() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    d.json(&["ban", "203.0.113.30", "--for", "1h", "--json"]);
    eventually(10, "placed", &d, || {
        items(&fake).contains(&"203.0.113.30".to_string())
    });
    d.stop();
    // Behind moat's back: its item removed, a stale item of moat's, someone else's item.
    {
        let mut st = fake.state.lock().unwrap();
        let list: &mut List = st.lists.values_mut().next().unwrap();
        list.items.retain(|_, i| i.ip != "203.0.113.30");
        for (id, ip, comment) in [
            (
                "stale",
                "198.51.100.50",
                "moat old 198.51.100.50 until forever",
            ),
            ("foreign", "198.51.100.60", "added by hand"),
        ] {
            list.items.insert(
                id.into(),
                Item {
                    id: id.into(),
                    ip: ip.into(),
                    comment: comment.into(),
                },
            );
        }
    }
    let d = Daemon::start(tmp.path());
    eventually(10, "the missing ban is back", &d, || {
        items(&fake).contains(&"203.0.113.30".to_string())
    });
    eventually(10, "the stale item is gone", &d, || {
        !items(&fake).contains(&"198.51.100.50".to_string())
    });
    assert!(
        items(&fake).contains(&"198.51.100.60".to_string()),
        "foreign item kept"
    );
}

/// How many rules of the zone's custom rules block moat's list.
fn blocking_rules(fake: &Fake) -> usize {
    let st = fake.state.lock().unwrap();
    st.entrypoint.as_ref().map_or(0, |(_, _, rules)| {
        rules
            .iter()
            .filter(|r| r["expression"] == "ip.src in $moat_block")
            .count()
    })
}

fn repairs(d: &Daemon) -> u64 {
    d.json(&["status", "--json"])["enforcers"][0]["repairs"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_deleted_blocking_rule_or_list_is_restored_and_counted() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "reconcile = \"2s\"\n");
    let d = Daemon::start(tmp.path());
    d.json(&["ban", "203.0.113.130", "--for", "1h", "--json"]);
    d.json(&["ban", "2001:db8:7::1", "--for", "1h", "--json"]);
    eventually(10, "both placed", &d, || items(&fake).len() == 2);
    assert_eq!(blocking_rules(&fake), 1);
    assert_eq!(repairs(&d), 0);
    // Someone deletes moat's rule (and adds one of their own): the bans stay in the list and
    // block nothing. The next reconcile puts the rule back, next to theirs.
    {
        let mut st = fake.state.lock().unwrap();
        let rules = &mut st.entrypoint.as_mut().unwrap().2;
        rules.clear();
        rules.push(serde_json::json!({"id": "theirs", "action": "block",
                                      "expression": "ip.src eq 198.51.100.1"}));
    }
    eventually(15, "the blocking rule is back", &d, || {
        blocking_rules(&fake) == 1
    });
    eventually(5, "the repair is counted", &d, || repairs(&d) == 1);
    {
        let st = fake.state.lock().unwrap();
        let rules = &st.entrypoint.as_ref().unwrap().2;
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0]["id"], "theirs", "{rules:?}");
    }
    assert!(d.log().contains("blocking rule was deleted"), "{}", d.log());
    // The list deleted too (Cloudflare deletes no list a rule refers to: the rule went first).
    // It is created again, with every ban, and blocked again: two repairs.
    {
        let mut st = fake.state.lock().unwrap();
        st.lists.clear();
        st.entrypoint
            .as_mut()
            .unwrap()
            .2
            .retain(|r| r["id"] == "theirs");
    }
    eventually(
        15,
        "the list is back with every ban, and blocked",
        &d,
        || {
            let i = items(&fake);
            i.contains(&"203.0.113.130".to_string())
                && i.contains(&"2001:db8:7::/64".to_string())
                && blocking_rules(&fake) == 1
        },
    );
    eventually(5, "both repairs are counted", &d, || repairs(&d) == 3);
    assert!(d.log().contains("list was deleted"), "{}", d.log());
    // Disabled by hand: left so (perhaps on purpose), and said in status.
    {
        let mut st = fake.state.lock().unwrap();
        for r in st.entrypoint.as_mut().unwrap().2.iter_mut() {
            r["enabled"] = serde_json::json!(false);
        }
    }
    eventually(15, "the disabled rule shows in status", &d, || {
        d.json(&["status", "--json"])["enforcers"][0]["remark"]
            .as_str()
            .is_some_and(|r| r.contains("blocking rule is DISABLED"))
    });
    assert_eq!(repairs(&d), 3);
}

#[test]
fn a_list_deleted_between_reconciles_is_restored_at_the_next_ban() {
    // The default reconcile, 10 minutes away: the failing ban itself finds the list gone.
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    d.json(&["ban", "203.0.113.140", "--for", "1h", "--json"]);
    eventually(10, "placed", &d, || {
        items(&fake).contains(&"203.0.113.140".to_string())
    });
    {
        let mut st = fake.state.lock().unwrap();
        st.lists.clear();
        st.entrypoint.as_mut().unwrap().2.clear();
    }
    d.json(&["ban", "203.0.113.141", "--for", "1h", "--json"]);
    eventually(
        15,
        "the list is back with both bans, and blocked",
        &d,
        || {
            let i = items(&fake);
            i.contains(&"203.0.113.140".to_string())
                && i.contains(&"203.0.113.141".to_string())
                && blocking_rules(&fake) == 1
        },
    );
    eventually(5, "the list and the rule are counted", &d, || {
        repairs(&d) == 2
    });
}

/// The item moat's list holds for `ip`: its id and comment.
fn item(fake: &Fake, ip: &str) -> Option<(String, String)> {
    let st = fake.state.lock().unwrap();
    st.lists
        .values()
        .flat_map(|l| l.items.values())
        .find(|i| i.ip == ip)
        .map(|i| (i.id.clone(), i.comment.clone()))
}

fn remark(d: &Daemon) -> String {
    d.json(&["status", "--json"])["enforcers"][0]["remark"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Puts an item of the admin's in moat's list.
fn admins_item(fake: &Fake, id: &str, ip: &str, comment: &str) {
    let mut st = fake.state.lock().unwrap();
    let list: &mut List = st.lists.values_mut().next().unwrap();
    list.items.insert(
        id.into(),
        Item {
            id: id.into(),
            ip: ip.into(),
            comment: comment.into(),
        },
    );
}

const HELD_BY_OTHERS: &str = "1 bans held by an item moat did not create";

#[test]
fn items_moat_did_not_create_are_never_changed_or_deleted() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    d.json(&["ban", "203.0.113.150", "--for", "1h", "--json"]);
    eventually(10, "the list is made", &d, || {
        item(&fake, "203.0.113.150").is_some()
    });
    // The admin puts an address of their own in moat's list, after moat read it; moat bans
    // that address too: the admin's item holds the ban, and stays as it is.
    admins_item(&fake, "admins", "203.0.113.151", "added by the admin");
    let admins = Some(("admins".to_string(), "added by the admin".to_string()));
    d.json(&["ban", "203.0.113.151", "--for", "1h", "--json"]);
    d.json(&["ban", "203.0.113.152", "--for", "1h", "--json"]);
    eventually(10, "the next ban is placed", &d, || {
        item(&fake, "203.0.113.152").is_some()
    });
    assert_eq!(item(&fake, "203.0.113.151"), admins);
    eventually(
        5,
        "status counts the ban held by the admin's item",
        &d,
        || remark(&d).contains(HELD_BY_OTHERS),
    );
    // The unban deletes moat's item only.
    d.json(&["unban", "203.0.113.151", "--json"]);
    d.json(&["unban", "203.0.113.152", "--json"]);
    eventually(10, "moat's item is deleted", &d, || {
        item(&fake, "203.0.113.152").is_none()
    });
    assert_eq!(item(&fake, "203.0.113.151"), admins);
    eventually(5, "no ban is held by the admin's item now", &d, || {
        !remark(&d).contains("held by an item")
    });
    // An item moat placed (its id read back at a restart) that the admin then took over, by
    // rewriting its comment, is the admin's: the unban leaves it.
    d.json(&["ban", "203.0.113.153", "--for", "1h", "--json"]);
    eventually(10, "placed", &d, || item(&fake, "203.0.113.153").is_some());
    d.stop();
    let d = Daemon::start(tmp.path());
    eventually(10, "moat read its items back", &d, || {
        remark(&d).contains("2 entries at Cloudflare")
    });
    {
        let mut st = fake.state.lock().unwrap();
        let list: &mut List = st.lists.values_mut().next().unwrap();
        let i = list
            .items
            .values_mut()
            .find(|i| i.ip == "203.0.113.153")
            .unwrap();
        i.comment = "kept by the admin".into();
    }
    d.json(&["unban", "203.0.113.153", "--json"]);
    d.json(&["ban", "203.0.113.154", "--for", "1h", "--json"]);
    eventually(10, "the next ban is placed", &d, || {
        item(&fake, "203.0.113.154").is_some()
    });
    assert_eq!(
        item(&fake, "203.0.113.153").map(|i| i.1).as_deref(),
        Some("kept by the admin"),
        "{}",
        d.log()
    );
    let st = fake.state.lock().unwrap();
    assert!(
        !st.requests
            .iter()
            .any(|r| r.starts_with("PUT") && r.contains("/items")),
        "{:?}",
        st.requests
    );
}

#[test]
fn reconcile_leaves_items_moat_did_not_create_and_takes_over_when_they_go() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "reconcile = \"2s\"\n");
    let d = Daemon::start(tmp.path());
    d.json(&["ban", "203.0.113.160", "--for", "1h", "--json"]);
    eventually(10, "the list is made", &d, || {
        item(&fake, "203.0.113.160").is_some()
    });
    admins_item(&fake, "admins", "203.0.113.161", "added by the admin");
    let admins = Some(("admins".to_string(), "added by the admin".to_string()));
    d.json(&["ban", "203.0.113.161", "--for", "1h", "--json"]);
    eventually(5, "held by the admin's item", &d, || {
        remark(&d).contains(HELD_BY_OTHERS)
    });
    // Reconciles, every 2 s, leave it as it is and go on counting it.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(item(&fake, "203.0.113.161"), admins);
    assert!(remark(&d).contains(HELD_BY_OTHERS), "{}", remark(&d));
    // The admin's item goes while moat's ban stands: moat places its own.
    fake.state
        .lock()
        .unwrap()
        .lists
        .values_mut()
        .next()
        .unwrap()
        .items
        .remove("admins");
    eventually(15, "moat's own item takes over", &d, || {
        item(&fake, "203.0.113.161").is_some_and(|i| i.1.starts_with("moat manual 203.0.113.161 "))
    });
    eventually(5, "no ban is held by another's item now", &d, || {
        !remark(&d).contains("held by an item")
    });
}

#[test]
fn an_outage_and_a_restart_with_changes_pending_lose_nothing() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    fake.outage(Outage::Errors);
    d.json(&["ban", "203.0.113.40", "--for", "1h", "--json"]);
    eventually(40, "the failure shows in status", &d, || {
        let s = d.json(&["status", "--json"]);
        s["enforcers"][0]["failed"].as_u64().unwrap_or(0) > 0
    });
    // Cloudflare comes back: the ban is placed by the retries, without a restart.
    fake.outage(Outage::None);
    eventually(30, "placed after the outage", &d, || {
        items(&fake).contains(&"203.0.113.40".to_string())
    });
    // Connections dropped without an answer; moat is stopped with the ban still queued.
    fake.outage(Outage::Drop);
    d.json(&["ban", "203.0.113.41", "--for", "1h", "--json"]);
    std::thread::sleep(Duration::from_millis(500));
    d.stop();
    assert!(!items(&fake).contains(&"203.0.113.41".to_string()));
    fake.outage(Outage::None);
    let d = Daemon::start(tmp.path());
    eventually(
        15,
        "the pending ban is placed after the restart",
        &d,
        || items(&fake).contains(&"203.0.113.41".to_string()),
    );
    assert!(items(&fake).contains(&"203.0.113.40".to_string()));
}

#[test]
fn the_rate_limit_is_respected_and_a_lockout_is_waited_out() {
    // Cloudflare allows 6 requests per 4 s here; moat reads the Ratelimit header and pauses
    // before it would exceed that.
    let fake = Fake::start(Options {
        limit: 6,
        window: Duration::from_secs(4),
        lockout: Duration::from_secs(300),
        ..Options::default()
    });
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    for i in 1..=6 {
        d.json(&[
            "ban",
            &format!("203.0.113.{}", 50 + i),
            "--for",
            "1h",
            "--json",
        ]);
        std::thread::sleep(Duration::from_millis(300));
    }
    eventually(60, "every ban placed", &d, || {
        (51..=56).all(|i| items(&fake).contains(&format!("203.0.113.{i}")))
    });
    assert_eq!(
        fake.state.lock().unwrap().limited,
        0,
        "never over the limit"
    );
    // Another client used the token up: Cloudflare locks it out for 3 s. moat waits for
    // Retry-After instead of hammering, then places the ban.
    fake.lock_out("good-token", Duration::from_secs(3));
    d.json(&["ban", "203.0.113.57", "--for", "1h", "--json"]);
    eventually(30, "placed after the lockout", &d, || {
        items(&fake).contains(&"203.0.113.57".to_string())
    });
    let limited = fake.state.lock().unwrap().limited;
    assert!(
        (1..=2).contains(&limited),
        "requests answered 429: {limited}"
    );
}

#[test]
fn access_rules_mode_adopts_duplicates_and_deletes_only_its_own() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[ZONE_FIREWALL_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(
        tmp.path(),
        &fake,
        "mode = \"access-rules\"\naction = \"managed_challenge\"\n",
    );
    // Someone's own rule for an address moat will ban.
    let zone = fake.zone();
    fake.state.lock().unwrap().access_rules.push(AccessRule {
        id: "f0f0".into(),
        mode: "block".into(),
        target: "ip".into(),
        value: "203.0.113.60".into(),
        notes: "blocked by the admin".into(),
        scope: ("zone".into(), zone),
        seq: 0,
    });
    let d = Daemon::start(tmp.path());
    let rules = |fake: &Fake| -> Vec<(String, String, String)> {
        fake.state
            .lock()
            .unwrap()
            .access_rules
            .iter()
            .map(|r| (r.value.clone(), r.mode.clone(), r.notes.clone()))
            .collect()
    };
    d.json(&["ban", "203.0.113.61", "--for", "1h", "--json"]);
    d.json(&["ban", "2001:db8:5::1", "--for", "1h", "--json"]);
    d.json(&["ban", "203.0.113.60", "--for", "1h", "--json"]);
    eventually(10, "rules placed", &d, || rules(&fake).len() == 3);
    let r = rules(&fake);
    assert!(r.iter().any(|(v, m, n)| v == "203.0.113.61"
        && m == "managed_challenge"
        && n.starts_with("moat manual 203.0.113.61")));
    assert!(r.iter().any(|(v, ..)| v == "2001:db8:5::/64"), "{r:?}");
    eventually(
        5,
        "status counts the ban the admin's rule holds",
        &d,
        || remark(&d).contains("1 bans held by a rule moat did not create"),
    );
    // Unbanning: moat's rule goes; the admin's rule (a duplicate moat adopted) stays.
    d.json(&["unban", "203.0.113.61", "--json"]);
    d.json(&["unban", "203.0.113.60", "--json"]);
    eventually(10, "moat's rule deleted", &d, || {
        !rules(&fake).iter().any(|(v, ..)| v == "203.0.113.61")
    });
    assert!(rules(&fake)
        .iter()
        .any(|(v, _, n)| v == "203.0.113.60" && n == "blocked by the admin"));
    // A rule id that no longer holds the address it was placed for is not deleted.
    {
        let mut st = fake.state.lock().unwrap();
        let r = st
            .access_rules
            .iter_mut()
            .find(|r| r.value == "2001:db8:5::/64")
            .unwrap();
        r.value = "2001:db8:6::/64".into();
    }
    d.json(&["unban", "2001:db8:5::1", "--json"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(rules(&fake).iter().any(|(v, ..)| v == "2001:db8:6::/64"));
    assert!(
        d.log().contains("no longer holds this address"),
        "{}",
        d.log()
    );
}

#[test]
fn bad_credentials_are_refused_with_a_reason() {
    let fake = Fake::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    // A token file others can read is refused before anything is sent.
    std::fs::set_permissions(
        tmp.path().join("cf.token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["run", "-c"])
        .arg(tmp.path().join("moat.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("readable by others"),
        "{err}"
    );
    assert_eq!(fake.requests(), 0);
}

/// `moat cloudflare verify` on `dir`'s configuration, started in `cwd`: exit code and output.
fn verify_in(cwd: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .current_dir(cwd)
        .args(["cloudflare", "verify", "-c"])
        .arg(dir.join("moat.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn verify_says_what_the_token_lacks() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let verify = |args: &[&str]| verify_in(tmp.path(), tmp.path(), args);
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("token: valid and active"), "{out}");
    assert!(out.contains("moat_block will be created"), "{out}");
    assert!(
        fake.state.lock().unwrap().lists.is_empty(),
        "verify only reads"
    );
    let (code, out) = verify(&["--write"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(fake.state.lock().unwrap().lists.len(), 1);
    // A token without the lists permission: named.
    fake.token("good-token", &[WAF_EDIT]);
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL IP lists") && out.contains(LISTS_EDIT),
        "{out}"
    );
    // A token Cloudflare does not know.
    std::fs::write(tmp.path().join("cf.token"), "wrong\n").unwrap();
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL token"), "{out}");
}

/// The permissions docs/cloudflare.md tells users to give the token, in the row of its table
/// whose first cell is `row`.
fn documented_permissions(row: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cloudflare.md"))
        .unwrap();
    let line = doc
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("| {row} |")))
        .unwrap_or_else(|| panic!("docs/cloudflare.md has no row {row}"));
    line.split("**")
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Every address moat holds at the fake: list items and access rules.
fn at_edge(fake: &Fake) -> Vec<String> {
    let st = fake.state.lock().unwrap();
    let mut all = st.items();
    all.extend(st.access_rules.iter().map(|r| r.value.clone()));
    all
}

#[test]
fn a_token_with_only_the_documented_permissions_verifies_and_bans() {
    for (row, extra) in [
        ("`list` (the default)", ""),
        (
            "`access-rules`, `scope = \"zone\"`",
            "mode = \"access-rules\"\n",
        ),
        (
            "`access-rules`, `scope = \"account\"`",
            "mode = \"access-rules\"\nscope = \"account\"\n",
        ),
    ] {
        let perms = documented_permissions(row);
        assert!(!perms.is_empty(), "{row}");
        let fake = Fake::start(Options::default());
        fake.token(
            "good-token",
            &perms.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let tmp = tempfile::tempdir().unwrap();
        config(tmp.path(), &fake, extra);
        let (code, out) = verify_in(tmp.path(), tmp.path(), &[]);
        assert_eq!(code, Some(0), "{row} with {perms:?}: {out}");
        // The daemon does its work with them: list mode creates the list and its rule first.
        let d = Daemon::start(tmp.path());
        d.json(&["ban", "203.0.113.120", "--for", "1h", "--json"]);
        eventually(10, "banned at the edge", &d, || {
            at_edge(&fake).contains(&"203.0.113.120".to_string())
        });
        d.json(&["unban", "203.0.113.120", "--json"]);
        eventually(10, "lifted at the edge", &d, || {
            !at_edge(&fake).contains(&"203.0.113.120".to_string())
        });
        let s = d.json(&["status", "--json"]);
        assert_eq!(s["enforcers"][0]["failed"], 0, "{row}: {s:#}\n{}", d.log());
    }
}

#[test]
fn a_relative_token_file_is_read_beside_the_configuration() {
    // systemd starts moat in /; the token file sits beside the configuration.
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let path = tmp.path().join("moat.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let absolute = tmp.path().join("cf.token").display().to_string();
    std::fs::write(&path, text.replace(&absolute, "cf.token")).unwrap();
    let (code, out) = verify_in(Path::new("/"), tmp.path(), &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("token: valid and active"), "{out}");
}

#[test]
fn jails_behind_cloudflare_ban_there_and_only_there() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = token_file(dir, "good-token");
    for log in ["access.log", "other.log"] {
        std::fs::write(dir.join(log), "").unwrap();
    }
    // A local enforcer standing for the kernel: a file per address it bans.
    write_config(
        dir,
        &format!(
            "[enforce]\nuse = [\"exec\", \"cloudflare\"]\n\n[enforce.exec]\n\
             ban = [\"/usr/bin/touch\", \"{d}/local-{{ip}}\"]\n\n\
             [enforce.cloudflare]\ntoken_file = \"{token}\"\naccount_id = \"{}\"\n\
             zone_id = \"{}\"\napi = \"{}\"\n\n\
             [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nbehind = \"cloudflare\"\n\n\
             [jails.direct]\nfilter = \"portainer\"\nsources = [\"other.log\"]\n",
            fake.account(),
            fake.zone(),
            fake.url,
            d = dir.display()
        ),
    );
    let d = Daemon::start(dir);
    d.json(&[
        "ban",
        "203.0.113.70",
        "--jail",
        "portainer",
        "--for",
        "1h",
        "--json",
    ]);
    d.json(&[
        "ban",
        "203.0.113.71",
        "--jail",
        "direct",
        "--for",
        "1h",
        "--json",
    ]);
    eventually(10, "the behind-Cloudflare ban is at Cloudflare", &d, || {
        items(&fake).contains(&"203.0.113.70".to_string())
    });
    eventually(10, "the direct jail's ban is local", &d, || {
        dir.join("local-203.0.113.71").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !dir.join("local-203.0.113.70").exists(),
        "not sent to the local enforcer"
    );
    assert!(
        !items(&fake).contains(&"203.0.113.71".to_string()),
        "not sent to Cloudflare"
    );
    // A ban by hand without a jail goes everywhere.
    d.json(&["ban", "203.0.113.72", "--for", "1h", "--json"]);
    eventually(10, "a hand ban goes to both", &d, || {
        items(&fake).contains(&"203.0.113.72".to_string())
            && dir.join("local-203.0.113.72").exists()
    });
}

#[test]
fn ranges_cloudflare_publishes_later_are_never_banned() {
    let mut options = Options::default();
    options.ips.push("198.51.100.0/24".into()); // a range "added" after this build
    let fake = Fake::start(options);
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    eventually(10, "the published ranges are fetched", &d, || {
        d.log()
            .contains("Cloudflare's published ranges are never banned")
    });
    let out = d.moat(&["ban", "198.51.100.5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("Cloudflare"), "{err}");
}

#[test]
fn a_full_list_keeps_what_matters_and_says_so() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "capacity = 3\nkeep = \"longest\"\n");
    let d = Daemon::start(tmp.path());
    for (ip, dur) in [
        ("203.0.113.81", "1h"),
        ("203.0.113.82", "2h"),
        ("203.0.113.83", "forever"),
    ] {
        d.json(&["ban", ip, "--for", dur, "--json"]);
    }
    eventually(10, "three placed", &d, || items(&fake).len() == 3);
    // Longer than the shortest held: it takes that one's place.
    d.json(&["ban", "203.0.113.84", "--for", "3h", "--json"]);
    eventually(10, "the 1h ban made room", &d, || {
        let i = items(&fake);
        i.contains(&"203.0.113.84".to_string()) && !i.contains(&"203.0.113.81".to_string())
    });
    // Shorter than everything held: not placed.
    d.json(&["ban", "203.0.113.85", "--for", "10m", "--json"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!items(&fake).contains(&"203.0.113.85".to_string()));
    assert_eq!(items(&fake).len(), 3);
    let s = d.json(&["status", "--json"]);
    let remark = s["enforcers"][0]["remark"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(remark.contains("2 bans NOT placed"), "{remark}");
    assert!(d.log().contains("Cloudflare list is full"), "{}", d.log());
}

#[test]
fn the_account_capacity_refusal_is_an_error_not_silence() {
    // The account holds 2 items across its lists (another list may use the rest).
    let fake = Fake::start(Options {
        capacity: 2,
        ..Options::default()
    });
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    for ip in ["203.0.113.91", "203.0.113.92", "203.0.113.93"] {
        d.json(&["ban", ip, "--for", "1h", "--json"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    eventually(15, "the refusal shows in status", &d, || {
        let s = d.json(&["status", "--json"]);
        s["enforcers"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("maximum number of items"))
    });
    assert_eq!(items(&fake).len(), 2);
}

/// A stand-in for Portainer's login on loopback; its port.
fn portainer_on_loopback() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || support::answer_portainer_login(conn));
        }
    });
    port
}

/// The seed's setup behind Cloudflare: nginx in front of Portainer restores the visitor's
/// address from CF-Connecting-IP for requests from the proxy (here loopback stands for
/// Cloudflare's ranges: tests reach no other address), moat follows nginx's log with the
/// portainer filter, and the bot is blocked at Cloudflare's edge within seconds.
#[test]
fn seed_behind_cloudflare_nginx_real_ip_and_a_ban_at_the_edge() {
    const TEST: &str = "seed_behind_cloudflare_nginx_real_ip_and_a_ban_at_the_edge";
    for p in ["/usr/sbin/nginx", "/usr/bin/curl"] {
        if !Path::new(p).exists() {
            return support::skip(
                TEST,
                &format!("{p} is missing (apt-get install nginx-light curl)"),
            );
        }
    }
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let upstream = portainer_on_loopback();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let d = dir.display();
    let user = if support::is_root() {
        "user root;\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\n\
             http {{\n  access_log {d}/access.log combined;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             # Behind Cloudflare: every Cloudflare range here (loopback stands for them).\n\
             set_real_ip_from 127.0.0.1;\n  real_ip_header CF-Connecting-IP;\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://127.0.0.1:{upstream}; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("access.log"), "").unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        // SIGTERM, not SIGKILL: nginx's master then stops its worker, which a SIGKILL would
        // leave running with the test's inherited descriptors (a `flock` around cargo stayed
        // held by it).
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
    let _nginx = Kill(
        std::process::Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let login = |visitor: &str, password: &str| -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
            ])
            .args(["-H", &format!("CF-Connecting-IP: {visitor}")])
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(format!(
                "{{\"username\":\"admin\",\"password\":\"{password}\"}}"
            ))
            .arg(format!("http://127.0.0.1:{port}/api/auth"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while login("203.0.113.77", "right") != "200" {
        assert!(Instant::now() < deadline, "nginx did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = token_file(dir, "good-token");
    write_config(
        dir,
        &format!(
            "[enforce]\nuse = [\"cloudflare\"]\n\n[enforce.cloudflare]\ntoken_file = \"{token}\"\n\
             account_id = \"{}\"\nzone_id = \"{}\"\napi = \"{}\"\n\n\
             [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 5\n\
             behind = \"cloudflare\"\n",
            fake.account(),
            fake.zone(),
            fake.url
        ),
    );
    let moat = Daemon::start(dir);
    for _ in 0..5 {
        assert_eq!(login("203.0.113.66", "guess"), "422");
        assert_eq!(login("203.0.113.77", "right"), "200");
    }
    let t = Instant::now();
    eventually(10, "the bot is blocked at the edge", &moat, || {
        items(&fake).contains(&"203.0.113.66".to_string())
    });
    eprintln!("fifth failure → item at Cloudflare: {:?}", t.elapsed());
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap();
    assert!(
        log.contains("203.0.113.66 - -"),
        "nginx logs the visitor: {log}"
    );
    assert!(!log.contains("127.0.0.1 - -"), "not the proxy: {log}");
    assert!(
        !items(&fake).contains(&"203.0.113.77".to_string()),
        "the user stays"
    );
}

#[test]
fn a_burst_into_the_lockout_is_waited_out_not_hammered() {
    // No rate-limit headers to pace by: moat's burst runs into the limit (6 per window), and
    // Cloudflare locks it out for 3 s with a 429 and Retry-After.
    let fake = Fake::start(Options {
        limit: 6,
        lockout: Duration::from_secs(3),
        ratelimit_headers: false,
        ..Options::default()
    });
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "");
    let d = Daemon::start(tmp.path());
    for i in 1..=4 {
        d.json(&[
            "ban",
            &format!("203.0.113.{}", 100 + i),
            "--for",
            "1h",
            "--json",
        ]);
        std::thread::sleep(Duration::from_millis(400));
    }
    eventually(30, "every ban placed after the lockout", &d, || {
        (101..=104).all(|i| items(&fake).contains(&format!("203.0.113.{i}")))
    });
    let limited = fake.state.lock().unwrap().limited;
    assert!(
        (1..=2).contains(&limited),
        "requests answered 429: {limited}"
    );
}

#[test]
fn keep_newest_and_a_restart_do_not_churn_the_list() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let tmp = tempfile::tempdir().unwrap();
    config(tmp.path(), &fake, "capacity = 2\nkeep = \"newest\"\n");
    let d = Daemon::start(tmp.path());
    for ip in ["203.0.113.111", "203.0.113.112", "203.0.113.113"] {
        d.json(&["ban", ip, "--for", "1h", "--json"]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let newest = || {
        let mut i = items(&fake);
        i.sort();
        i == ["203.0.113.112", "203.0.113.113"]
    };
    eventually(10, "the two newest are held", &d, newest);
    d.stop();
    // The start-up reconcile finds the oldest ban missing: it stays out.
    let d = Daemon::start(tmp.path());
    std::thread::sleep(Duration::from_secs(3));
    assert!(newest(), "{:?}\n{}", items(&fake), d.log());
    let s = d.json(&["status", "--json"]);
    let remark = s["enforcers"][0]["remark"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(remark.contains("1 bans NOT placed"), "{remark}");
}

/// Two moat hosts on one Cloudflare account, each with its own owner and directory.
fn two_hosts(fake: &Fake, extra: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    config(a.path(), fake, &format!("owner = \"web-1\"\n{extra}"));
    config(b.path(), fake, &format!("owner = \"web-2\"\n{extra}"));
    (a, b)
}

#[test]
fn two_hosts_on_one_list_never_delete_each_others_items() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[LISTS_EDIT, WAF_EDIT]);
    let (a, b) = two_hosts(&fake, "reconcile = \"2s\"\n");
    let d1 = Daemon::start(a.path());
    d1.json(&["ban", "203.0.113.171", "--for", "1h", "--json"]);
    eventually(10, "web-1's ban is in the list", &d1, || {
        item(&fake, "203.0.113.171").is_some()
    });
    let first = item(&fake, "203.0.113.171").unwrap();
    assert!(first.1.ends_with(" owner web-1"), "{first:?}");
    // The second host starts (reads the list, converges to its own ledger: empty) and bans.
    let d2 = Daemon::start(b.path());
    d2.json(&["ban", "203.0.113.172", "--for", "1h", "--json"]);
    eventually(10, "web-2's ban is in the list", &d2, || {
        item(&fake, "203.0.113.172").is_some()
    });
    let second = item(&fake, "203.0.113.172").unwrap();
    assert!(second.1.ends_with(" owner web-2"), "{second:?}");
    // Reconciles on both, every 2 s: each leaves the other's item as it is.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(item(&fake, "203.0.113.171"), Some(first.clone()));
    assert_eq!(item(&fake, "203.0.113.172"), Some(second.clone()));
    // web-1 bans web-2's address too: held by web-2's item, never overwritten.
    d1.json(&["ban", "203.0.113.172", "--for", "1h", "--json"]);
    eventually(5, "web-1 counts the ban web-2's item holds", &d1, || {
        remark(&d1).contains(HELD_BY_OTHERS)
    });
    assert_eq!(item(&fake, "203.0.113.172"), Some(second.clone()));
    // web-1's unban of it, and web-2's unban of web-1's address (never its ban), delete
    // nothing.
    d1.json(&["unban", "203.0.113.172", "--json"]);
    d2.json(&["unban", "203.0.113.171", "--json"]);
    eventually(5, "web-1 holds nothing by another's item now", &d1, || {
        !remark(&d1).contains("held by an item")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(item(&fake, "203.0.113.171"), Some(first.clone()));
    assert_eq!(item(&fake, "203.0.113.172"), Some(second.clone()));
    // Restarts: each reads back only its own items.
    d1.stop();
    let d1 = Daemon::start(a.path());
    eventually(10, "web-1 read back its one item", &d1, || {
        remark(&d1).contains("1 entries at Cloudflare")
    });
    d2.stop();
    let d2 = Daemon::start(b.path());
    eventually(10, "web-2 read back its one item", &d2, || {
        remark(&d2).contains("1 entries at Cloudflare")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(item(&fake, "203.0.113.171"), Some(first.clone()));
    assert_eq!(item(&fake, "203.0.113.172"), Some(second));
    // web-2's own unban deletes its own item, and only that.
    d2.json(&["unban", "203.0.113.172", "--json"]);
    eventually(10, "web-2's item is deleted", &d2, || {
        item(&fake, "203.0.113.172").is_none()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(item(&fake, "203.0.113.171"), Some(first));
    drop(d1);
}

#[test]
fn two_hosts_with_access_rules_never_delete_each_others_rules() {
    let fake = Fake::start(Options::default());
    fake.token("good-token", &[ZONE_FIREWALL_EDIT]);
    let (a, b) = two_hosts(&fake, "mode = \"access-rules\"\nreconcile = \"2s\"\n");
    let rule = |ip: &str| -> Option<String> {
        let st = fake.state.lock().unwrap();
        st.access_rules
            .iter()
            .find(|r| r.value == ip)
            .map(|r| r.notes.clone())
    };
    let d1 = Daemon::start(a.path());
    d1.json(&["ban", "203.0.113.181", "--for", "1h", "--json"]);
    eventually(10, "web-1's rule", &d1, || rule("203.0.113.181").is_some());
    let d2 = Daemon::start(b.path());
    d2.json(&["ban", "203.0.113.182", "--for", "1h", "--json"]);
    eventually(10, "web-2's rule", &d2, || rule("203.0.113.182").is_some());
    assert!(rule("203.0.113.181").unwrap().ends_with(" owner web-1"));
    assert!(rule("203.0.113.182").unwrap().ends_with(" owner web-2"));
    // web-1 bans web-2's address: the duplicate is web-2's rule, which holds the ban.
    d1.json(&["ban", "203.0.113.182", "--for", "1h", "--json"]);
    eventually(5, "web-1 counts the ban web-2's rule holds", &d1, || {
        remark(&d1).contains("1 bans held by a rule moat did not create")
    });
    d1.json(&["unban", "203.0.113.182", "--json"]);
    d2.json(&["unban", "203.0.113.181", "--json"]);
    // Reconciles and a restart of each: nothing of the other's goes.
    std::thread::sleep(Duration::from_secs(5));
    d1.stop();
    let d1 = Daemon::start(a.path());
    d2.stop();
    let d2 = Daemon::start(b.path());
    eventually(10, "web-2 read back its one rule", &d2, || {
        remark(&d2).contains("1 entries at Cloudflare")
    });
    eventually(10, "web-1 read back its one rule", &d1, || {
        remark(&d1).contains("1 entries at Cloudflare")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(rule("203.0.113.181").unwrap().ends_with(" owner web-1"));
    assert!(rule("203.0.113.182").unwrap().ends_with(" owner web-2"));
    d2.json(&["unban", "203.0.113.182", "--json"]);
    eventually(10, "web-2's rule is deleted", &d2, || {
        rule("203.0.113.182").is_none()
    });
    assert!(rule("203.0.113.181").is_some());
    drop(d1);
}

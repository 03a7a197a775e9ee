//! moat's reading of fail2ban's filter files against fail2ban's own reader: for every stock
//! filter and a set of option combinations, the final failregex, ignoreregex, prefregex,
//! datepattern, maxlines and journalmatch must be what fail2ban's `FilterReader` produces
//! (run through Debian's `/usr/bin/python3` and its fail2ban package).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use moat::config::fail2ban::load_filter;
use serde_json::{json, Value};

const COMBOS: &[&[(&str, &str)]] = &[
    &[],
    &[("mode", "aggressive")],
    &[("mode", "ddos")],
    &[("mode", "extra")],
    &[("logtype", "journal")],
    &[("logtype", "short")],
    &[("logtype", "rfc5424")],
    &[("mode", "auth")],
    &[("logging", "webapp")],
    &[("logtype", "journal"), ("mode", "aggressive")],
];

/// fail2ban's reader, for each filter and combination: JSON by "name|k=v,...".
const PYTHON: &str = r#"
import json, os, sys
from fail2ban.client.filterreader import FilterReader
base, combos = sys.argv[1], json.loads(sys.argv[2])
out = {}
for name in sorted(f[:-5] for f in os.listdir(base + "/filter.d")
                   if f.endswith(".conf") and not f.endswith("common.conf")):
    for combo in combos:
        fr = FilterReader(name, "jail", dict(combo), basedir=base)
        fr.read(); fr.getOptions({})
        d = {"failregex": [], "ignoreregex": [], "prefregex": None, "datepattern": None,
             "maxlines": None, "journalmatch": []}
        for opt in fr.convert():
            k, vals = opt[2], (opt[3] if opt[0] == "multi-set" else [opt[3]])
            if k == "addfailregex": d["failregex"] += vals
            elif k == "addignoreregex": d["ignoreregex"] += vals
            elif k == "addjournalmatch": d["journalmatch"].append(opt[3:])
            elif k == "maxlines": d[k] = int(opt[3])
            elif k in ("prefregex", "datepattern"): d[k] = opt[3]
        out[name + "|" + ",".join("%s=%s" % kv for kv in sorted(combo.items()))] = d
print(json.dumps(out))
"#;

#[test]
fn filters_read_as_fail2ban_reads_them() {
    let base = Path::new("/etc/fail2ban");
    let python = Path::new("/usr/bin/python3");
    let has_f2b = python.is_file()
        && Command::new(python)
            .args(["-c", "import fail2ban.client.filterreader"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !has_f2b || !base.join("filter.d").is_dir() {
        support::skip(
            "filters_read_as_fail2ban_reads_them",
            "Debian's fail2ban package (and /usr/bin/python3) is not installed",
        );
        return;
    }
    let combos: Vec<BTreeMap<&str, &str>> =
        COMBOS.iter().map(|c| c.iter().copied().collect()).collect();
    let out = Command::new(python)
        .args([
            "-c",
            PYTHON,
            base.to_str().unwrap(),
            &serde_json::to_string(&combos).unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut differ = Vec::new();
    for (key, want) in &theirs {
        let (name, combo) = key.split_once('|').unwrap();
        let spec = if combo.is_empty() {
            name.to_string()
        } else {
            format!("{name}[{combo}]")
        };
        let d = load_filter(base, &spec, &[]).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let ours = json!({
            "failregex": d.failregex.iter().map(|r| r.text.clone()).collect::<Vec<_>>(),
            "ignoreregex": d.ignoreregex.iter().map(|r| r.text.clone()).collect::<Vec<_>>(),
            "prefregex": d.prefregex.map(|r| r.text),
            "datepattern": d.datepattern.map(|r| r.text),
            "maxlines": d.maxlines,
            "journalmatch": d.journalmatch,
        });
        if &ours != want {
            differ.push(format!("{spec}:\n  fail2ban: {want}\n  moat:     {ours}"));
        }
    }
    println!("{} filter readings compared with fail2ban's", theirs.len());
    assert!(theirs.len() >= 800, "only {} readings", theirs.len());
    assert!(
        differ.is_empty(),
        "{} differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

//! A [`Plan`] as a commented configuration file, and as the summary `moat init` prints.

use std::fmt::Write;

use super::plan::{toml_string, Cloudflare, Plan};

/// The configuration text: every choice with the reason for it in a comment, the port policy
/// and the Cloudflare enforcer proposed but commented out.
pub fn config(plan: &Plan, path: &str, date: &str) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# {path}: moat's configuration, written by `moat init` (moat {}) on {date}\n\
         # from what it found on this host. See moat.toml(5) for every key.\n\
         #\n\
         # Before starting, see what it would have banned on the logs you already have:\n\
         #   moat scan -c {path}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(w, "\n[enforce]");
    let _ = writeln!(w, "# {}.", plan.enforcer.1);
    let mut uses = vec![toml_string(plan.enforcer.0)];
    if plan.cloudflare.is_some() {
        let _ = writeln!(
            w,
            "# Behind Cloudflare, add \"cloudflare\" (and fill in [enforce.cloudflare] below) to ban at its edge."
        );
        uses.truncate(1);
    }
    let _ = writeln!(w, "use = [{}]", uses.join(", "));
    if matches!(plan.cloudflare, Some(Cloudflare::RealIpRestored { .. })) {
        let _ = writeln!(
            w,
            "\n# Bans at Cloudflare's edge, for the jails with behind = \"cloudflare\" (see\n\
             # docs/cloudflare.md; `moat cloudflare verify` checks the token and permissions).\n\
             # [enforce.cloudflare]\n\
             # token_file = \"/etc/moat/cloudflare.token\"   # readable by root only\n\
             # account_id = \"...\"\n\
             # zone_id = \"...\""
        );
    }

    let _ = writeln!(w, "\n[defaults]");
    let _ = writeln!(w, "findtime = \"10m\"\nbantime = \"1h\"\nmaxretry = 5");
    if plan.ignore.is_empty() {
        let _ = writeln!(w, "# Never banned: your office, your monitoring, your other servers.\n# ignore = [\"203.0.113.0/24\"]");
    } else {
        let _ = writeln!(
            w,
            "# Never banned (add your office, your monitoring, your other servers):"
        );
        let _ = writeln!(w, "ignore = [");
        for (net, why) in &plan.ignore {
            let _ = writeln!(w, "  {},  # {why}", toml_string(net));
        }
        let _ = writeln!(w, "]");
    }

    for j in &plan.jails {
        let _ = writeln!(w);
        for n in &j.notes {
            let _ = writeln!(w, "# {n}");
        }
        let _ = writeln!(w, "[jails.{}]", j.name);
        if !j.enabled {
            let _ = writeln!(w, "enabled = false");
        }
        let _ = writeln!(w, "filter = {}", toml_string(j.filter));
        let sources: Vec<String> = j.sources.iter().map(|s| toml_string(s)).collect();
        let _ = writeln!(w, "sources = [{}]", sources.join(", "));
        for (k, v) in &j.settings {
            let _ = writeln!(w, "{k} = {v}");
        }
        if j.web_behind_cloudflare {
            let _ = writeln!(
                w,
                "# behind = \"cloudflare\"   # ban at Cloudflare's edge (needs [enforce.cloudflare])"
            );
        }
    }

    let p = &plan.ports;
    let _ = writeln!(
        w,
        "\n# A port policy for this host, from what listens and what containers publish: every\n\
         # other new connection on the public interface would be dropped, whatever a container\n\
         # publishes. Read it, then uncomment it and apply it with a rollback (docs/ports.md):\n\
         #   moat ports plan; moat ports apply --confirm-within 60s; moat ports confirm"
    );
    let _ = writeln!(w, "# [ports]");
    let _ = writeln!(
        w,
        "# interfaces = [{}]{}",
        toml_string(p.interface.as_deref().unwrap_or("eth0")),
        if p.interface.is_some() {
            "   # the interface of the default route"
        } else {
            "   # no default route seen: name your public interface"
        }
    );
    let open: Vec<String> = p.open.iter().map(|(s, _)| toml_string(s)).collect();
    let _ = writeln!(w, "# open = [{}]", open.join(", "));
    for (spec, who) in &p.open {
        let _ = writeln!(w, "#   {spec}: {who}");
    }
    if !p.allow.is_empty() {
        let _ = writeln!(w, "# allow = [");
        for (spec, from, why) in &p.allow {
            let _ = writeln!(
                w,
                "#   {{ ports = [{}], from = [{}] }},   # {why}",
                toml_string(spec),
                toml_string(from)
            );
        }
        let _ = writeln!(w, "# ]");
    }
    if !p.closed.is_empty() {
        let _ = writeln!(
            w,
            "# In use now and closed by this policy (open them above if the internet needs them):"
        );
        for (spec, who) in &p.closed {
            let _ = writeln!(w, "#   {spec}: {who}");
        }
    }
    let _ = writeln!(
        w,
        "# In a Swarm, add the other nodes: swarm_peers = [\"198.51.100.2\", ...]"
    );
    out
}

/// What `moat init` found, decided and recommends, for a person.
pub fn summary(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "moat init looked at this host.");
    for f in &plan.found {
        let _ = writeln!(w, "  found:     {f}");
    }
    for m in &plan.missing {
        let _ = writeln!(w, "  not found: {m}");
    }
    let enabled: Vec<&str> = plan
        .jails
        .iter()
        .filter(|j| j.enabled)
        .map(|j| j.name.as_str())
        .collect();
    let disabled: Vec<&str> = plan
        .jails
        .iter()
        .filter(|j| !j.enabled)
        .map(|j| j.name.as_str())
        .collect();
    if enabled.is_empty() {
        let _ = writeln!(
            w,
            "Nothing to protect was found: no web server log, no SSH log, no container of a \
             known application."
        );
    } else {
        let _ = writeln!(w, "Jails: {} ({})", enabled.join(", "), enabled.len());
    }
    if !disabled.is_empty() {
        let _ = writeln!(
            w,
            "Written disabled (see their comments): {}",
            disabled.join(", ")
        );
    }
    for a in &plan.advice {
        let _ = writeln!(w, "Note: {a}.");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::init::plan::{JailPlan, PortsProposal};

    fn plan() -> Plan {
        Plan {
            enforcer: ("nftables", "nftables works here".into()),
            ignore: vec![
                ("198.51.100.10".into(), "your SSH session".into()),
                (
                    "203.0.113.0/24".into(),
                    "this host's network on eth0".into(),
                ),
            ],
            jails: vec![
                JailPlan {
                    name: "portainer".into(),
                    filter: "portainer",
                    sources: vec!["/var/log/nginx/access.log".into()],
                    notes: vec!["Portainer's failed logins".into()],
                    settings: Vec::new(),
                    enabled: true,
                    web_behind_cloudflare: true,
                },
                JailPlan {
                    name: "vaultwarden-vw-2".into(),
                    filter: "vaultwarden",
                    sources: vec!["docker:vw.2".into()],
                    notes: vec!["a \"quoted\" note".into()],
                    settings: vec![("timezone", "\"UTC\"".into())],
                    enabled: true,
                    web_behind_cloudflare: false,
                },
                JailPlan {
                    name: "nextcloud".into(),
                    filter: "nextcloud",
                    sources: vec!["/path/to/data/nextcloud.log".into()],
                    notes: Vec::new(),
                    settings: Vec::new(),
                    enabled: false,
                    web_behind_cloudflare: false,
                },
            ],
            cloudflare: Some(Cloudflare::RealIpRestored {
                listed: 22,
                total: 22,
            }),
            ports: PortsProposal {
                interface: Some("eth0".into()),
                open: vec![
                    ("80/tcp".into(), "nginx".into()),
                    ("443/tcp".into(), "nginx".into()),
                ],
                allow: vec![("22/tcp".into(), "198.51.100.10".into(), "SSH".into())],
                closed: vec![("8080/tcp".into(), "container vw".into())],
            },
            found: vec!["nginx".into()],
            missing: vec!["web servers: Apache".into()],
            advice: vec!["behind Cloudflare".into()],
        }
    }

    #[test]
    fn the_file_validates_and_so_does_its_proposal_uncommented() {
        let text = config(&plan(), "/etc/moat/moat.toml", "2026-12-02");
        let c = Config::parse(&text, "moat.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.jails.len(), 2, "the disabled one is not run");
        assert!(c
            .jail("portainer")
            .unwrap()
            .params
            .ignore
            .contains("198.51.100.10".parse().unwrap()));
        assert!(c.ports.is_none());
        assert!(text.contains("# behind = \"cloudflare\""));
        // Uncommenting the proposals (the port policy, Cloudflare's table, behind) gives a
        // configuration that validates too, once the Cloudflare placeholders are filled in.
        let uncomment = [
            "[ports]",
            "interfaces =",
            "open =",
            "allow =",
            "{ ports",
            "]",
            "[enforce.cloudflare]",
            "token_file =",
        ];
        let mut lines = Vec::new();
        for l in text.lines() {
            let bare = l.trim_start_matches('#').trim_start();
            if l.starts_with('#') && uncomment.iter().any(|u| bare.starts_with(u)) {
                lines.push(bare.to_string());
            } else if bare.starts_with("account_id") || bare.starts_with("zone_id") {
                let k = bare.split_whitespace().next().unwrap();
                lines.push(format!("{k} = \"0123456789abcdef0123456789abcdef\""));
            } else if bare.starts_with("behind =") {
                lines.push("behind = \"cloudflare\"".into());
            } else if l.starts_with("use = ") {
                lines.push("use = [\"nftables\", \"cloudflare\"]".into());
            } else {
                lines.push(l.to_string());
            }
        }
        // [enforce.cloudflare] must come before the jails; it already does, [ports] last.
        let uncommented = lines.join("\n");
        let c = Config::parse(&uncommented, "moat.toml")
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let policy = c.ports.as_ref().expect("the port policy");
        assert_eq!(policy.interfaces, ["eth0"]);
        assert!(c.jail("portainer").unwrap().behind_cloudflare);
    }

    #[test]
    fn the_summary_names_jails_and_what_was_missing() {
        let s = summary(&plan());
        assert!(s.contains("Jails: portainer, vaultwarden-vw-2 (2)"), "{s}");
        assert!(
            s.contains("Written disabled (see their comments): nextcloud"),
            "{s}"
        );
        assert!(s.contains("not found: web servers: Apache"), "{s}");
    }
}

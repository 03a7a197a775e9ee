//! From what the host has to what moat should do about it: which jails (filter and source for
//! each log and container found), which enforcer, whom never to ban, what Cloudflare in front
//! means, and a port policy to propose. Pure: a [`Host`] in, a [`Plan`] out.

use std::net::IpAddr;

use super::host::{Docker, Host, Kernel, LogKind, Proto, Server, SshLog, WebLog};
use super::nginx::LogFormat;

/// A jail to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailPlan {
    /// The jail's name, its `[jails.NAME]` table (unique in the plan).
    pub name: String,
    /// The built-in filter it uses.
    pub filter: &'static str,
    /// What it reads: log paths, or `docker:NAME` for a container's output.
    pub sources: Vec<String>,
    /// Comment lines above the table: what it watches and why.
    pub notes: Vec<String>,
    /// Further keys, as TOML: ("bantime", "\"1d\"").
    pub settings: Vec<(&'static str, String)>,
    /// `false`: written with `enabled = false`, since its log cannot be read yet.
    pub enabled: bool,
    /// Its bans would not stop visitors who come through Cloudflare: `behind = "cloudflare"`
    /// is proposed (commented out).
    pub web_behind_cloudflare: bool,
}

/// What Cloudflare in front of the host means.
#[derive(Clone, Debug, PartialEq)]
pub enum Cloudflare {
    /// nginx restores visitors' addresses from CF-Connecting-IP, trusting `listed` of
    /// Cloudflare's `total` ranges.
    RealIpRestored {
        /// How many of Cloudflare's ranges `set_real_ip_from` lists.
        listed: usize,
        /// How many ranges Cloudflare has.
        total: usize,
    },
    /// The log's clients are mostly Cloudflare's addresses: the visitors' are not restored.
    LogShowsCloudflare {
        /// The log's path.
        path: String,
        /// The share of its sampled clients that are Cloudflare's (0 to 1).
        share: f64,
    },
}

/// A proposed `[ports]`, written commented out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortsProposal {
    /// The interface the policy applies to (the default route's).
    pub interface: Option<String>,
    /// ("443/tcp", why).
    pub open: Vec<(String, String)>,
    /// ("22/tcp", from, why).
    pub allow: Vec<(String, String, String)>,
    /// Ports in use that the policy would close: ("8080/tcp", who).
    pub closed: Vec<(String, String)>,
}

/// Everything `moat init` decided, and what it tells the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// "nftables", "iptables" or "kernel", and why.
    pub enforcer: (&'static str, String),
    /// Never banned: (address or network, why).
    pub ignore: Vec<(String, String)>,
    /// The jails to write, in order.
    pub jails: Vec<JailPlan>,
    /// What Cloudflare in front means, when it is there.
    pub cloudflare: Option<Cloudflare>,
    /// The port policy proposed.
    pub ports: PortsProposal,
    /// Summary lines: what was found, what was not, and what to look at.
    pub found: Vec<String>,
    /// What was looked for and not found.
    pub missing: Vec<String>,
    /// What the user should look at or change.
    pub advice: Vec<String>,
}

impl Plan {
    /// Whether there is anything to protect.
    pub fn protects_something(&self) -> bool {
        self.jails.iter().any(|j| j.enabled)
    }
}

/// Where an application's failed logins are seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppLog {
    /// In the container's own output.
    Output,
    /// Not in its own log (no client address): only in a reverse proxy's access log.
    ProxyOnly,
    /// In a file of its data, under the container's mount at `mount`, at `file` below it.
    DataFile {
        mount: &'static str,
        file: &'static str,
    },
}

/// An application moat has a filter for, known by its image.
struct App {
    name: &'static str,
    /// Image repositories, without registry, tag or digest.
    images: &'static [&'static str],
    filter: &'static str,
    log: AppLog,
    /// Its log's times carry no zone: the jail gets the container's TZ (UTC when unset).
    zoneless: bool,
    note: &'static str,
}

const APPS: &[App] = &[
    App {
        name: "portainer",
        images: &["portainer/portainer-ce", "portainer/portainer-ee", "portainer/portainer"],
        filter: "portainer",
        log: AppLog::ProxyOnly,
        zoneless: false,
        note: "Portainer logs failed logins without the client's address",
    },
    App {
        name: "vaultwarden",
        images: &["vaultwarden/server"],
        filter: "vaultwarden",
        log: AppLog::Output,
        zoneless: true,
        note: "failed logins in the container's output; behind a proxy, set IP_HEADER",
    },
    App {
        name: "gitea",
        images: &["gitea/gitea", "forgejo/forgejo"],
        filter: "gitea",
        log: AppLog::Output,
        zoneless: true,
        note: "failed sign-ins in the container's output",
    },
    App {
        name: "grafana",
        images: &["grafana/grafana", "grafana/grafana-oss", "grafana/grafana-enterprise"],
        filter: "grafana",
        log: AppLog::Output,
        zoneless: false,
        note: "needs router logging ([server] router_logging = true, or GF_SERVER_ROUTER_LOGGING=true)",
    },
    App {
        name: "nextcloud",
        images: &["nextcloud", "linuxserver/nextcloud"],
        filter: "nextcloud",
        log: AppLog::DataFile {
            mount: "/var/www/html",
            file: "data/nextcloud.log",
        },
        zoneless: false,
        note: "failed logins in nextcloud.log, in its data directory",
    },
    App {
        name: "jellyfin",
        images: &["jellyfin/jellyfin", "linuxserver/jellyfin"],
        filter: "jellyfin",
        log: AppLog::Output,
        zoneless: false,
        note: "denied authentications in the container's output",
    },
    App {
        name: "authelia",
        images: &["authelia/authelia"],
        filter: "authelia",
        log: AppLog::Output,
        zoneless: false,
        note: "failed first and second factors in the container's output (text log format)",
    },
    App {
        name: "home-assistant",
        images: &["homeassistant/home-assistant", "home-assistant/home-assistant", "linuxserver/homeassistant"],
        filter: "home-assistant",
        log: AppLog::Output,
        zoneless: true,
        note: "invalid authentications in the container's output",
    },
    App {
        name: "wordpress",
        images: &["wordpress"],
        filter: "wordpress",
        log: AppLog::Output,
        zoneless: false,
        note: "login and XML-RPC brute force in the access log the image writes to its output",
    },
    App {
        name: "nginx",
        images: &["nginx", "nginxinc/nginx-unprivileged"],
        filter: "nginx-botsearch",
        log: AppLog::Output,
        zoneless: false,
        note: "the official image writes its access log (combined) to its output",
    },
];

/// An image's repository without registry, tag, digest or `library/`.
pub fn repository(image: &str) -> String {
    let image = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = image.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    let mut repo = parts.join("/");
    if let Some(i) = repo.rfind(':') {
        if !repo[i..].contains('/') {
            repo.truncate(i);
        }
    }
    repo.strip_prefix("library/").unwrap_or(&repo).to_string()
}

fn app_of(image: &str) -> Option<&'static App> {
    let repo = repository(image);
    APPS.iter().find(|a| a.images.contains(&repo.as_str()))
}

/// A jail name from a container name: the characters TOML keys take bare.
fn key(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// What moat should do on `host`.
pub fn plan(host: &Host) -> Plan {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut advice = Vec::new();
    let mut jails: Vec<JailPlan> = Vec::new();

    // The enforcer.
    let enforcer = match &host.kernel {
        Kernel::Nftables(how) => (
            "nftables",
            format!("nftables works here (through {how}): bans go into moat's own table, before Docker's DNAT"),
        ),
        Kernel::Iptables(nft) => (
            "iptables",
            format!("nftables does not work here ({nft}); iptables and ipset do: bans go into ipset sets matched before Docker's DNAT"),
        ),
        Kernel::Neither(nft, ipt) => {
            advice.push(format!(
                "no kernel enforcer works here now (nftables: {nft}; iptables: {ipt}); \
                 run moat init as root, or install nftables, before starting moat"
            ));
            (
                "kernel",
                "nftables or iptables, whichever works when moat starts (neither worked when \
                 moat init looked)"
                    .to_string(),
            )
        }
    };
    found.push(format!("kernel enforcer: {}", enforcer.1));

    // Containers.
    let containers = match &host.docker {
        Docker::Containers(c) => c.clone(),
        Docker::Absent => {
            missing.push("Docker: no Docker here".to_string());
            Vec::new()
        }
        Docker::Unreachable(e) => {
            missing.push(format!(
                "Docker: not reachable ({e}); containers were not looked at"
            ));
            Vec::new()
        }
    };
    let portainer_container = containers
        .iter()
        .find(|c| app_of(&c.image).is_some_and(|a| a.name == "portainer"));

    // Web servers on the host.
    let combined: Vec<&WebLog> = host
        .web
        .iter()
        .filter(|l| l.kind == LogKind::Access(LogFormat::Combined))
        .collect();
    let mut absent = Vec::new();
    for server in [
        Server::Nginx,
        Server::Apache,
        Server::Traefik,
        Server::Caddy,
    ] {
        let logs: Vec<&WebLog> = host.web.iter().filter(|l| l.server == server).collect();
        if logs.is_empty() {
            absent.push(server.name());
            continue;
        }
        let shown: Vec<String> = logs
            .iter()
            .map(|l| {
                format!(
                    "{}{}",
                    l.path,
                    if l.exists { "" } else { " (not written yet)" }
                )
            })
            .collect();
        found.push(format!("{}: {}", server.name(), shown.join(", ")));
        for l in logs {
            if l.kind == LogKind::Access(LogFormat::Other) {
                advice.push(format!(
                    "{} is written in a format of its own, which the built-in filters do not \
                     read; log in nginx's \"combined\" format (or JSON with Traefik) to watch it",
                    l.path
                ));
            }
        }
    }
    if !absent.is_empty() {
        missing.push(format!("web servers: {}", absent.join(", ")));
    }
    let behind = cloudflare(host, &combined);
    let web_behind = matches!(behind, Some(Cloudflare::RealIpRestored { .. }));

    // Portainer: its failed logins only show in the proxy's access log.
    let portainer_logs: Vec<String> = {
        let sites: Vec<&&WebLog> = combined.iter().filter(|l| l.portainer_site).collect();
        if !sites.is_empty() {
            sites.iter().map(|l| l.path.clone()).collect()
        } else if portainer_container.is_some() {
            combined.iter().map(|l| l.path.clone()).collect()
        } else {
            Vec::new()
        }
    };
    let traefik_json: Vec<String> = host
        .web
        .iter()
        .filter(|l| l.server == Server::Traefik && l.kind == LogKind::Access(LogFormat::Json))
        .map(|l| l.path.clone())
        .collect();
    if !portainer_logs.is_empty() {
        let via = if host.web.iter().any(|l| l.portainer_site) {
            "a site proxying to Portainer"
        } else {
            "the web server in front of it"
        };
        jails.push(JailPlan {
            name: "portainer".into(),
            filter: "portainer",
            sources: portainer_logs,
            notes: vec![format!(
                "Portainer's failed logins (POST /api/auth answered 422), in the access log of {via}"
            )],
            settings: Vec::new(),
            enabled: true,
            web_behind_cloudflare: web_behind,
        });
    }
    if !traefik_json.is_empty() && (portainer_container.is_some() || !jails.is_empty()) {
        jails.push(JailPlan {
            name: "portainer-traefik".into(),
            filter: "portainer-json",
            sources: traefik_json.clone(),
            notes: vec!["Portainer's failed logins in Traefik's JSON access log".into()],
            settings: Vec::new(),
            enabled: true,
            web_behind_cloudflare: web_behind,
        });
    }
    if let Some(p) = portainer_container {
        if jails.iter().all(|j| !j.filter.starts_with("portainer")) {
            advice.push(format!(
                "Portainer runs (container {}), but no reverse proxy's access log was found: \
                 Portainer's own log does not name the client of a failed login. Put it behind \
                 nginx or Traefik with an access log, then run moat init again",
                p.name
            ));
        }
    }
    let clf: Vec<String> = combined.iter().map(|l| l.path.clone()).collect();
    if !clf.is_empty() {
        jails.push(JailPlan {
            name: "scanners".into(),
            filter: "nginx-botsearch",
            sources: clf.clone(),
            notes: vec![
                "scanners probing for /.env, /wp-login.php and the like (answered 404)".into(),
            ],
            settings: vec![("bantime", "\"1d\"".into())],
            enabled: true,
            web_behind_cloudflare: web_behind,
        });
    }
    let wordpress_here = [
        "/var/www/html/wp-login.php",
        "/var/www/wordpress/wp-login.php",
    ]
    .iter()
    .any(|p| host.root.join(p.trim_start_matches('/')).exists());
    if wordpress_here && !clf.is_empty() {
        jails.push(JailPlan {
            name: "wordpress".into(),
            filter: "wordpress",
            sources: clf.clone(),
            notes: vec!["WordPress login and XML-RPC brute force".into()],
            settings: Vec::new(),
            enabled: true,
            web_behind_cloudflare: web_behind,
        });
    }
    for (server, filter, what) in [
        (
            Server::Traefik,
            "traefik-auth",
            "Traefik basic-auth failures (401 with a user name)",
        ),
        (
            Server::Caddy,
            "caddy-auth",
            "Caddy basic-auth failures (401)",
        ),
    ] {
        let wanted = if server == Server::Traefik {
            LogFormat::Combined
        } else {
            LogFormat::Json
        };
        let logs: Vec<String> = host
            .web
            .iter()
            .filter(|l| l.server == server && l.kind == LogKind::Access(wanted))
            .map(|l| l.path.clone())
            .collect();
        if !logs.is_empty() {
            jails.push(JailPlan {
                name: filter.into(),
                filter,
                sources: logs,
                notes: vec![what.into()],
                settings: Vec::new(),
                enabled: true,
                web_behind_cloudflare: web_behind,
            });
        }
    }
    let errors = |server: Server| -> Vec<String> {
        host.web
            .iter()
            .filter(|l| l.server == server && l.kind == LogKind::Error)
            .map(|l| l.path.clone())
            .collect()
    };
    if let Some(n) = &host.nginx {
        let logs = errors(Server::Nginx);
        if !logs.is_empty() {
            if n.basic_auth {
                jails.push(JailPlan {
                    name: "nginx-http-auth".into(),
                    filter: "nginx-http-auth",
                    sources: logs.clone(),
                    notes: vec!["nginx basic-auth failures (auth_basic is configured)".into()],
                    settings: Vec::new(),
                    enabled: true,
                    web_behind_cloudflare: web_behind,
                });
            }
            if n.limit_req {
                jails.push(JailPlan {
                    name: "nginx-limit-req".into(),
                    filter: "nginx-limit-req",
                    sources: logs,
                    notes: vec!["clients that keep hitting a limit_req zone".into()],
                    settings: Vec::new(),
                    enabled: true,
                    web_behind_cloudflare: web_behind,
                });
            }
        }
    }
    let apache_errors = errors(Server::Apache);
    if !apache_errors.is_empty() {
        jails.push(JailPlan {
            name: "apache-auth".into(),
            filter: "apache-auth",
            sources: apache_errors,
            notes: vec!["Apache basic and digest authentication failures".into()],
            settings: Vec::new(),
            enabled: true,
            web_behind_cloudflare: web_behind,
        });
    }

    // Containers of known applications.
    if let Docker::Containers(list) = &host.docker {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for c in list {
            match app_of(&c.image) {
                Some(app) => {
                    known.push(format!("{} ({})", c.name, c.image));
                    if let Some(j) = container_jail(app, c, &jails, web_behind) {
                        jails.push(j);
                    }
                }
                None => unknown.push(format!("{} ({})", c.name, c.image)),
            }
        }
        found.push(format!(
            "Docker: {} container{}{}{}",
            list.len(),
            if list.len() == 1 { "" } else { "s" },
            if known.is_empty() {
                String::new()
            } else {
                format!("; known: {}", known.join(", "))
            },
            if unknown.is_empty() {
                String::new()
            } else {
                format!("; no filter for: {}", unknown.join(", "))
            }
        ));
    }

    // SSH.
    match &host.ssh {
        Some(SshLog::File(path)) => {
            found.push(format!("SSH: {path}"));
            jails.push(JailPlan {
                name: "sshd".into(),
                filter: "sshd",
                sources: vec![path.clone()],
                notes: vec!["SSH: wrong passwords, unknown users, too many attempts".into()],
                settings: Vec::new(),
                enabled: true,
                web_behind_cloudflare: false,
            });
        }
        Some(SshLog::Journal(unit)) => {
            found.push(format!("SSH: the journal ({unit})"));
            jails.push(JailPlan {
                name: "sshd".into(),
                filter: "sshd",
                sources: vec![format!("journald:{unit}")],
                notes: vec![
                    "SSH: wrong passwords, unknown users, too many attempts (from the journal)"
                        .into(),
                ],
                settings: Vec::new(),
                enabled: true,
                web_behind_cloudflare: false,
            });
        }
        None => missing.push("SSH: no sshd log (auth.log) and no sshd in the journal".into()),
    }

    // Never banned.
    let mut ignore = Vec::new();
    match &host.admin {
        Some(a) => {
            found.push(format!(
                "your SSH session comes from {}: it is never banned",
                a.client
            ));
            ignore.push((
                a.client.to_string(),
                "your SSH session, as moat init saw it (SSH_CONNECTION)".into(),
            ));
        }
        None => missing.push(
            "your SSH session: not seen (no SSH_CONNECTION); add your own address to ignore".into(),
        ),
    }
    for (iface, net) in &host.networks {
        let s = net.to_string();
        if !ignore.iter().any(|(n, _)| *n == s) {
            ignore.push((s, format!("this host's network on {iface}")));
        }
    }

    match &behind {
        Some(Cloudflare::RealIpRestored { listed, total }) => {
            found.push(format!(
                "Cloudflare in front: nginx restores visitors' addresses from CF-Connecting-IP \
                 ({listed} of Cloudflare's {total} ranges trusted)"
            ));
            advice.push(
                "behind Cloudflare, visitors' packets come from Cloudflare, so a kernel ban \
                 stops only those who reach this host directly. To ban at Cloudflare's edge, \
                 fill in [enforce.cloudflare] (the commented block; `moat cloudflare verify` \
                 checks the token), add \"cloudflare\" to [enforce] use, and uncomment \
                 behind = \"cloudflare\" in the web jails (docs: cloudflare.md)"
                    .into(),
            );
            if listed < total {
                advice.push(format!(
                    "set_real_ip_from lists {listed} of Cloudflare's {total} ranges: visitors \
                     through the others are logged as Cloudflare (and never banned); list them \
                     all (https://www.cloudflare.com/ips/)"
                ));
            }
        }
        Some(Cloudflare::LogShowsCloudflare { path, share }) => {
            advice.push(format!(
                "{:.0}% of the clients in {path} are Cloudflare's addresses: the visitors' \
                 addresses are not restored, so the web jails cannot ban anyone (moat never \
                 bans Cloudflare). Fix real_ip first: set_real_ip_from with Cloudflare's ranges \
                 and real_ip_header CF-Connecting-IP (docs: cloudflare.md), then run moat init \
                 again",
                share * 100.0
            ));
        }
        None if !combined.is_empty() => found.push(
            "Cloudflare: not in front (no real_ip settings, no Cloudflare addresses in the logs)"
                .into(),
        ),
        None => {}
    }

    Plan {
        enforcer,
        ignore,
        ports: ports(host, &containers),
        jails,
        cloudflare: behind,
        found,
        missing,
        advice,
    }
}

fn cloudflare(host: &Host, combined: &[&WebLog]) -> Option<Cloudflare> {
    let ranges = crate::detect::proxies::Proxies::default().ranges().to_vec();
    if let Some(n) = &host.nginx {
        let header = n
            .real_ip_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("CF-Connecting-IP"));
        let listed = ranges
            .iter()
            .filter(|r| {
                n.real_ip_from
                    .iter()
                    .filter_map(|f| f.parse::<ipnet::IpNet>().ok())
                    .any(|f| f == **r || f.contains(*r))
            })
            .count();
        if header && listed > 0 {
            return Some(Cloudflare::RealIpRestored {
                listed,
                total: ranges.len(),
            });
        }
    }
    combined
        .iter()
        .filter_map(|l| l.cloudflare_share.map(|(s, n)| (l, s, n)))
        .find(|(_, share, n)| *share >= 0.5 && *n >= 20)
        .map(|(l, share, _)| Cloudflare::LogShowsCloudflare {
            path: l.path.clone(),
            share,
        })
}

fn container_jail(
    app: &App,
    c: &super::host::Container,
    jails: &[JailPlan],
    web_behind: bool,
) -> Option<JailPlan> {
    let name = if jails.iter().any(|j| j.name == app.name) {
        format!("{}-{}", app.name, key(&c.name))
    } else {
        app.name.to_string()
    };
    let mut notes = vec![format!("{}: {} ({})", c.name, app.note, c.image)];
    let mut settings = Vec::new();
    let mut enabled = true;
    let sources = match app.log {
        AppLog::ProxyOnly => return None,
        AppLog::Output => vec![format!("docker:{}", c.name)],
        AppLog::DataFile { mount, file } => match c.mounts.iter().find(|(_, d)| d == mount) {
            Some((src, _)) => vec![format!("{}/{file}", src.trim_end_matches('/'))],
            None => {
                notes.push(format!(
                    "its {mount} is not mounted from the host, so its log cannot be read: \
                     enable this jail once it is, with the path of {file} there"
                ));
                enabled = false;
                vec![format!("/path/to/{file}")]
            }
        },
    };
    if app.zoneless {
        let tz = c.tz.clone().unwrap_or_else(|| "UTC".into());
        settings.push(("timezone", toml_string(&tz)));
        notes.push(format!(
            "its log's times have no zone: the container's ({tz}{})",
            if c.tz.is_none() {
                ", as TZ is not set"
            } else {
                ""
            }
        ));
    }
    if !c.running {
        notes.push("the container is not running now: it is followed once it starts".into());
    }
    Some(JailPlan {
        name,
        filter: app.filter,
        sources,
        notes,
        settings,
        enabled,
        web_behind_cloudflare: web_behind && matches!(app.name, "nginx" | "wordpress"),
    })
}

/// A TOML string literal.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn ports(host: &Host, containers: &[super::host::Container]) -> PortsProposal {
    let mut p = PortsProposal {
        interface: host.default_interface.clone(),
        ..Default::default()
    };
    // Who uses each public port: host programs and containers' publications.
    let mut users: Vec<(u16, Proto, String)> = Vec::new();
    for l in &host.listening {
        if l.addr.is_loopback() {
            continue;
        }
        let who = l
            .process
            .clone()
            .unwrap_or_else(|| "a program moat init could not name".into());
        // Published ports show up as docker-proxy's sockets too; the container is named below.
        if who == "docker-proxy" {
            continue;
        }
        users.push((l.port, l.proto, who));
    }
    for c in containers {
        for (ip, port, proto) in &c.published {
            if ip.parse::<IpAddr>().is_ok_and(|a| a.is_loopback()) {
                continue;
            }
            let proto = if proto == "udp" {
                Proto::Udp
            } else {
                Proto::Tcp
            };
            users.push((*port, proto, format!("container {}", c.name)));
        }
    }
    users.sort();
    users.dedup();
    let ssh_port = host.admin.map(|a| a.server_port).or_else(|| {
        users
            .iter()
            .find(|(_, proto, who)| *proto == Proto::Tcp && who.starts_with("sshd"))
            .map(|(port, _, _)| *port)
    });
    let mut seen: Vec<String> = Vec::new();
    for (port, proto, _) in &users {
        let spec = format!("{port}/{}", proto.as_str());
        if seen.contains(&spec) {
            continue;
        }
        seen.push(spec.clone());
        let whos: Vec<&str> = users
            .iter()
            .filter(|(p, pr, _)| p == port && pr == proto)
            .map(|(_, _, w)| w.as_str())
            .collect();
        let who = whos.join(", ");
        if Some(*port) == ssh_port && *proto == Proto::Tcp {
            continue;
        }
        if matches!(
            (port, proto),
            (80, Proto::Tcp) | (443, Proto::Tcp) | (443, Proto::Udp)
        ) {
            p.open.push((spec, who));
        } else {
            p.closed.push((spec, who));
        }
    }
    if let Some(port) = ssh_port {
        let spec = format!("{port}/tcp");
        match host.admin {
            Some(a) => p.allow.push((
                spec,
                a.client.to_string(),
                "SSH from your address only; add your other admins' networks".into(),
            )),
            None => p
                .open
                .push((spec, "SSH (open to everyone: narrow it with allow)".into())),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::host::{AdminSession, Container, Listening};

    fn host() -> Host {
        Host {
            root: "/".into(),
            web: vec![
                WebLog {
                    server: Server::Nginx,
                    path: "/var/log/nginx/access.log".into(),
                    kind: LogKind::Access(LogFormat::Combined),
                    exists: true,
                    portainer_site: false,
                    cloudflare_share: Some((0.0, 100)),
                },
                WebLog {
                    server: Server::Nginx,
                    path: "/var/log/nginx/portainer.log".into(),
                    kind: LogKind::Access(LogFormat::Combined),
                    exists: true,
                    portainer_site: true,
                    cloudflare_share: None,
                },
                WebLog {
                    server: Server::Nginx,
                    path: "/var/log/nginx/error.log".into(),
                    kind: LogKind::Error,
                    exists: true,
                    portainer_site: false,
                    cloudflare_share: None,
                },
            ],
            nginx: None,
            docker: Docker::Containers(vec![
                Container {
                    name: "portainer".into(),
                    image: "portainer/portainer-ce:2.21.0".into(),
                    running: true,
                    published: vec![("127.0.0.1".into(), 9000, "tcp".into())],
                    mounts: Vec::new(),
                    args: Vec::new(),
                    tz: None,
                },
                Container {
                    name: "vw".into(),
                    image: "docker.io/vaultwarden/server:latest".into(),
                    running: true,
                    published: vec![("0.0.0.0".into(), 8080, "tcp".into())],
                    mounts: Vec::new(),
                    args: Vec::new(),
                    tz: Some("Europe/Berlin".into()),
                },
                Container {
                    name: "cloud".into(),
                    image: "nextcloud:29-apache".into(),
                    running: false,
                    published: Vec::new(),
                    mounts: vec![("/srv/nextcloud/".into(), "/var/www/html".into())],
                    args: Vec::new(),
                    tz: None,
                },
                Container {
                    name: "thing".into(),
                    image: "example/thing:1".into(),
                    running: true,
                    published: Vec::new(),
                    mounts: Vec::new(),
                    args: Vec::new(),
                    tz: None,
                },
            ]),
            ssh: Some(SshLog::Journal("ssh.service".into())),
            admin: Some(AdminSession {
                client: "198.51.100.10".parse().unwrap(),
                server_port: 22,
            }),
            networks: vec![
                ("eth0".into(), "203.0.113.0/24".parse().unwrap()),
                ("docker0".into(), "198.18.0.0/24".parse().unwrap()),
            ],
            kernel: Kernel::Nftables("libnftables".into()),
            listening: vec![
                Listening {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 80,
                    proto: Proto::Tcp,
                    process: Some("nginx".into()),
                },
                Listening {
                    addr: "::".parse().unwrap(),
                    port: 22,
                    proto: Proto::Tcp,
                    process: Some("sshd".into()),
                },
                Listening {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 5432,
                    proto: Proto::Tcp,
                    process: Some("postgres".into()),
                },
                Listening {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 8080,
                    proto: Proto::Tcp,
                    process: Some("docker-proxy".into()),
                },
            ],
            default_interface: Some("eth0".into()),
        }
    }

    #[test]
    fn images_are_recognised_whatever_the_registry_and_tag() {
        assert_eq!(
            repository("portainer/portainer-ce:2.21.0"),
            "portainer/portainer-ce"
        );
        assert_eq!(repository("docker.io/library/nginx:1.27"), "nginx");
        assert_eq!(
            repository("ghcr.io/home-assistant/home-assistant:stable"),
            "home-assistant/home-assistant"
        );
        assert_eq!(
            repository("localhost:5000/vaultwarden/server@sha256:abc"),
            "vaultwarden/server"
        );
        assert_eq!(
            repository("codeberg.org/forgejo/forgejo:9"),
            "forgejo/forgejo"
        );
        assert!(app_of("example/portainer-fan:1").is_none());
    }

    #[test]
    fn a_docker_host_gets_its_jails_its_ignore_list_and_a_port_proposal() {
        let p = plan(&host());
        let names: Vec<&str> = p.jails.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["portainer", "scanners", "vaultwarden", "nextcloud", "sshd"]
        );
        let j = |n: &str| p.jails.iter().find(|j| j.name == n).unwrap();
        assert_eq!(j("portainer").sources, ["/var/log/nginx/portainer.log"]);
        assert_eq!(j("scanners").sources.len(), 2);
        assert_eq!(j("vaultwarden").sources, ["docker:vw"]);
        assert!(j("vaultwarden")
            .settings
            .contains(&("timezone", "\"Europe/Berlin\"".into())));
        assert_eq!(
            j("nextcloud").sources,
            ["/srv/nextcloud/data/nextcloud.log"]
        );
        assert!(j("nextcloud")
            .notes
            .iter()
            .any(|n| n.contains("not running")));
        assert_eq!(j("sshd").sources, ["journald:ssh.service"]);
        assert_eq!(p.enforcer.0, "nftables");
        let ignored: Vec<&str> = p.ignore.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            ignored,
            ["198.51.100.10", "203.0.113.0/24", "198.18.0.0/24"]
        );
        assert_eq!(p.ports.interface.as_deref(), Some("eth0"));
        assert_eq!(p.ports.open, [("80/tcp".to_string(), "nginx".to_string())]);
        assert_eq!(p.ports.allow[0].0, "22/tcp");
        assert_eq!(p.ports.allow[0].1, "198.51.100.10");
        assert_eq!(
            p.ports.closed,
            [("8080/tcp".to_string(), "container vw".to_string())]
        );
        assert!(
            p.found.iter().any(|f| f.contains("no filter for: thing")),
            "{:?}",
            p.found
        );
        assert!(p.protects_something());
    }

    #[test]
    fn portainer_without_a_proxy_log_is_explained_not_guessed() {
        let mut h = host();
        h.web.clear();
        let p = plan(&h);
        assert!(p.jails.iter().all(|j| j.filter != "portainer"));
        assert!(
            p.advice
                .iter()
                .any(|a| a.contains("no reverse proxy's access log")),
            "{:?}",
            p.advice
        );
    }

    #[test]
    fn cloudflare_in_front_or_in_the_log() {
        let mut h = host();
        h.nginx = Some(crate::init::nginx::Nginx {
            real_ip_headers: vec!["CF-Connecting-IP".into()],
            real_ip_from: vec!["173.245.48.0/20".into(), "2400:cb00::/32".into()],
            ..Default::default()
        });
        let p = plan(&h);
        assert!(matches!(
            p.cloudflare,
            Some(Cloudflare::RealIpRestored { listed: 2, .. })
        ));
        assert!(
            p.jails
                .iter()
                .find(|j| j.name == "portainer")
                .unwrap()
                .web_behind_cloudflare
        );
        assert!(
            !p.jails
                .iter()
                .find(|j| j.name == "sshd")
                .unwrap()
                .web_behind_cloudflare
        );
        assert!(
            p.advice.iter().any(|a| a.contains("2 of Cloudflare's")),
            "{:?}",
            p.advice
        );

        let mut h = host();
        h.web[0].cloudflare_share = Some((0.9, 500));
        let p = plan(&h);
        assert!(matches!(
            p.cloudflare,
            Some(Cloudflare::LogShowsCloudflare { .. })
        ));
        assert!(
            p.advice.iter().any(|a| a.contains("Fix real_ip first")),
            "{:?}",
            p.advice
        );
    }

    #[test]
    fn nothing_to_protect() {
        let h = Host {
            web: Vec::new(),
            docker: Docker::Unreachable("no socket".into()),
            ssh: None,
            admin: None,
            ..host()
        };
        let p = plan(&h);
        assert!(!p.protects_something());
        assert!(p
            .missing
            .iter()
            .any(|m| m.starts_with("Docker: not reachable")));
        assert!(p.missing.iter().any(|m| m.starts_with("SSH:")));
    }
}

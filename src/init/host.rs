//! What `moat init` sees on the host: web servers and their logs, Docker containers, the SSH
//! server's log, the admin's own SSH session, the host's networks and listening sockets, and
//! which kernel enforcer works. [`observe`] does all the looking (files, `/proc`, the Docker
//! API, a probe of nftables and iptables); what to make of it is [`super::plan`]'s business.
//!
//! Looking is cheap and never changes anything: configuration files are read, never run
//! (`nginx -T` would need nginx and a valid configuration), logs are sampled from their end.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::nginx::{self, LogFormat};

/// The web servers moat has filters for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// nginx.
    Nginx,
    /// Apache httpd.
    Apache,
    /// Traefik.
    Traefik,
    /// Caddy.
    Caddy,
}

impl Server {
    /// Its name as `moat init` shows it to the user.
    pub fn name(self) -> &'static str {
        match self {
            Server::Nginx => "nginx",
            Server::Apache => "Apache",
            Server::Traefik => "Traefik",
            Server::Caddy => "Caddy",
        }
    }
}

/// Which of a server's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// An access log, in this format.
    Access(LogFormat),
    /// An error log.
    Error,
}

/// A web server's log, found in its configuration or at its usual place.
#[derive(Clone, Debug, PartialEq)]
pub struct WebLog {
    /// The server that writes it.
    pub server: Server,
    /// The path to read, as it is on this machine.
    pub path: String,
    /// Access or error log, and an access log's format.
    pub kind: LogKind,
    /// Whether the file is there now (a configured log may not be written yet).
    pub exists: bool,
    /// The site writing it proxies to something that looks like Portainer (its ports 9000 or
    /// 9443, or "portainer" in a name).
    pub portainer_site: bool,
    /// Of the addresses sampled from the log's end, the share that are Cloudflare's, and how
    /// many were sampled.
    pub cloudflare_share: Option<(f64, usize)>,
}

/// A container and what identifies its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The image as Docker reports it (`vaultwarden/server:latest`, `ghcr.io/x/y@sha256:...`).
    pub image: String,
    /// Whether it is running now.
    pub running: bool,
    /// Published ports: (host address, port, protocol).
    pub published: Vec<(String, u16, String)>,
    /// Bind mounts and volumes: (source on the host, destination in the container).
    pub mounts: Vec<(String, String)>,
    /// The arguments its entrypoint is started with (empty when inspecting it failed).
    pub args: Vec<String>,
    /// The container's `TZ`, when set.
    pub tz: Option<String>,
}

/// What the Docker API said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Docker {
    /// No socket at all: not a Docker host.
    Absent,
    /// A socket, but the API did not answer: why.
    Unreachable(String),
    /// The containers, running or not.
    Containers(Vec<Container>),
}

/// Where sshd's messages are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshLog {
    /// A log file, by its path on this machine.
    File(String),
    /// The journal, by unit name.
    Journal(String),
}

/// The admin's SSH session, from `SSH_CONNECTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSession {
    /// The admin's address, which the plan puts in the ignore list.
    pub client: IpAddr,
    /// The port sshd answered on, which the proposed port policy allows from `client`.
    pub server_port: u16,
}

/// Which kernel enforcer works here, and why the others do not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// nftables works (through libnftables or the nft program).
    Nftables(String),
    /// nftables does not (the reason); iptables and ipset do.
    Iptables(String),
    /// Neither: (nftables' reason, iptables' reason).
    Neither(String, String),
}

/// A transport protocol, for listening sockets and published ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// As a port policy writes it (`443/tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A socket listening for connections (TCP) or bound for datagrams (UDP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The local address it is bound to (unspecified: every address).
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// TCP or UDP.
    pub proto: Proto,
    /// The program holding it, when it can be found.
    pub process: Option<String>,
}

/// Everything `moat init` looked at.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// Where the host's files were read (`/`, or `--root`).
    pub root: PathBuf,
    /// The web servers' logs found.
    pub web: Vec<WebLog>,
    /// nginx's configuration, when there is one.
    pub nginx: Option<nginx::Nginx>,
    /// What the Docker API said.
    pub docker: Docker,
    /// Where sshd logs, when sshd is found.
    pub ssh: Option<SshLog>,
    /// The admin's SSH session, when `moat init` runs in one.
    pub admin: Option<AdminSession>,
    /// The host's networks, by interface (loopback and link-local left out).
    pub networks: Vec<(String, IpNet)>,
    /// Which kernel enforcer works here.
    pub kernel: Kernel,
    /// The sockets listening or bound now.
    pub listening: Vec<Listening>,
    /// The interface of the default route.
    pub default_interface: Option<String>,
}

/// Looks at the host. `root` is where its files are (`/`, or another tree for tests);
/// `/proc`, the network and Docker are always this machine's.
pub fn observe(root: &Path) -> Host {
    let fs = Fs {
        root: root.to_path_buf(),
    };
    let (nginx, mut web) = web_servers(&fs);
    for log in &mut web {
        if let LogKind::Access(LogFormat::Combined) = log.kind {
            log.cloudflare_share = cloudflare_share(Path::new(&log.path));
        }
    }
    Host {
        root: root.to_path_buf(),
        web,
        nginx,
        docker: docker(),
        ssh: ssh(&fs),
        admin: admin_session(),
        networks: networks(),
        kernel: kernel(),
        listening: listening(),
        default_interface: default_interface(),
    }
}

/// The host's files, under a root.
struct Fs {
    root: PathBuf,
}

impl Fs {
    /// Where `path` (as the host names it) is on this machine. A path already under the root
    /// (a test's configuration names its own files) is taken as it is.
    fn at(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if self.root == Path::new("/") || p.starts_with(&self.root) || !p.is_absolute() {
            return p.to_path_buf();
        }
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    fn exists(&self, path: &str) -> bool {
        self.at(path).exists()
    }
}

fn web_servers(fs: &Fs) -> (Option<nginx::Nginx>, Vec<WebLog>) {
    let mut logs = Vec::new();
    let mut add = |server, path: PathBuf, kind, portainer_site| {
        let path_s = path.display().to_string();
        if !logs.iter().any(|l: &WebLog| l.path == path_s) {
            logs.push(WebLog {
                server,
                exists: path.exists(),
                path: path_s,
                kind,
                portainer_site,
                cloudflare_share: None,
            });
        }
    };
    // nginx: its configuration says where each site logs.
    let conf = fs.at("/etc/nginx/nginx.conf");
    let nginx = nginx::read(&conf, &|p| fs.at(p));
    if let Some(n) = &nginx {
        for l in &n.access_logs {
            let portainer = l.server_names.iter().any(|s| s.contains("portainer"))
                || l.proxies.iter().any(|p| looks_like_portainer(p));
            add(
                Server::Nginx,
                fs.at(&l.path),
                LogKind::Access(l.format),
                portainer,
            );
        }
        for e in &n.error_logs {
            add(Server::Nginx, fs.at(e), LogKind::Error, false);
        }
    } else if fs.exists("/var/log/nginx/access.log") {
        add(
            Server::Nginx,
            fs.at("/var/log/nginx/access.log"),
            LogKind::Access(LogFormat::Combined),
            false,
        );
    }
    // Apache (Debian's apache2, or httpd): CustomLog and ErrorLog lines.
    let re = regex::Regex::new(r"(?mi)^\s*(CustomLog|ErrorLog)\s+(\S+)(?:\s+(\S+))?").unwrap();
    for (dir, logdir) in [
        ("/etc/apache2", "/var/log/apache2"),
        ("/etc/httpd", "/var/log/httpd"),
    ] {
        if !fs.exists(dir) {
            continue;
        }
        let mut found = false;
        for file in glob::glob(&format!("{}/**/*.conf", fs.at(dir).display()))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for c in re.captures_iter(&text) {
                let path = c[2].trim_matches('"').replace("${APACHE_LOG_DIR}", logdir);
                if path.starts_with('|') || path.contains("${") {
                    continue;
                }
                let path = if Path::new(&path).is_absolute() {
                    path
                } else {
                    // Relative to ServerRoot, whose logs directory links to the log dir.
                    format!("{logdir}/{}", path.trim_start_matches("logs/"))
                };
                found = true;
                let kind = if c[1].eq_ignore_ascii_case("ErrorLog") {
                    LogKind::Error
                } else {
                    match c.get(3).map(|m| m.as_str()) {
                        Some("combined") | Some("common") | None => {
                            LogKind::Access(LogFormat::Combined)
                        }
                        _ => LogKind::Access(LogFormat::Other),
                    }
                };
                add(Server::Apache, fs.at(&path), kind, false);
            }
        }
        if !found {
            for (name, kind) in [
                ("access.log", LogKind::Access(LogFormat::Combined)),
                ("access_log", LogKind::Access(LogFormat::Combined)),
                ("error.log", LogKind::Error),
                ("error_log", LogKind::Error),
            ] {
                let p = format!("{logdir}/{name}");
                if fs.exists(&p) {
                    add(Server::Apache, fs.at(&p), kind, false);
                }
            }
        }
    }
    // Traefik: the access log's file path in its static configuration, else the usual place.
    let mut traefik: Vec<(String, bool)> = Vec::new();
    let file_path = regex::Regex::new(r#"(?i)filePath\s*[:=]\s*["']?([^"'\s]+)"#).unwrap();
    let json_format = regex::Regex::new(r#"(?i)format\s*[:=]\s*["']?json"#).unwrap();
    for f in [
        "/etc/traefik/traefik.yml",
        "/etc/traefik/traefik.yaml",
        "/etc/traefik/traefik.toml",
    ] {
        if let Ok(text) = std::fs::read_to_string(fs.at(f)) {
            let path = file_path.captures(&text).map(|c| c[1].to_string());
            let json = json_format.is_match(&text);
            if let Some(p) = path {
                traefik.push((p, json));
            }
        }
    }
    if traefik.is_empty() && fs.exists("/var/log/traefik/access.log") {
        traefik.push(("/var/log/traefik/access.log".into(), false));
    }
    for (p, json) in traefik {
        let path = fs.at(&p);
        let format = sniff_format(&path).unwrap_or(if json {
            LogFormat::Json
        } else {
            LogFormat::Combined
        });
        add(Server::Traefik, path, LogKind::Access(format), false);
    }
    // Caddy: `output file` in the Caddyfile, else the usual directory. JSON by default.
    let mut caddy: Vec<String> = Vec::new();
    if let Ok(text) = std::fs::read_to_string(fs.at("/etc/caddy/Caddyfile")) {
        for c in regex::Regex::new(r"(?m)\boutput\s+file\s+(\S+)")
            .unwrap()
            .captures_iter(&text)
        {
            caddy.push(c[1].to_string());
        }
    }
    if caddy.is_empty() {
        for p in glob::glob(&format!("{}/*.log", fs.at("/var/log/caddy").display()))
            .into_iter()
            .flatten()
            .flatten()
        {
            caddy.push(p.display().to_string());
        }
    }
    for p in caddy {
        let path = fs.at(&p);
        let format = sniff_format(&path).unwrap_or(LogFormat::Json);
        add(Server::Caddy, path, LogKind::Access(format), false);
    }
    (nginx, logs)
}

/// An upstream that looks like Portainer: its default ports, or its name.
fn looks_like_portainer(proxy: &str) -> bool {
    let p = proxy.to_ascii_lowercase();
    p.contains("portainer") || p.contains(":9000") || p.contains(":9443")
}

/// The last bytes of a file, up to `max`.
fn tail(path: &Path, max: u64) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max))).ok()?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// JSON or text, from the log's last complete line.
fn sniff_format(path: &Path) -> Option<LogFormat> {
    let text = tail(path, 4096)?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(if line.trim_start().starts_with('{') {
        LogFormat::Json
    } else {
        LogFormat::Combined
    })
}

/// The share of Cloudflare's addresses among the clients of the log's last lines (the first
/// field of each line, as in the combined format).
fn cloudflare_share(path: &Path) -> Option<(f64, usize)> {
    let text = tail(path, 256 * 1024)?;
    let mut total = 0usize;
    let mut cloudflare = 0usize;
    // The first line may be cut by the tail.
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let cloudflare_ranges = crate::detect::proxies::Proxies::default();
    for line in lines.iter().rev().take(2000) {
        let Some(ip) = line
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<IpAddr>().ok())
        else {
            continue;
        };
        total += 1;
        if cloudflare_ranges.contains(ip) {
            cloudflare += 1;
        }
    }
    (total > 0).then(|| (cloudflare as f64 / total as f64, total))
}

fn docker() -> Docker {
    let host = std::env::var("DOCKER_HOST").ok();
    if host.is_none() && !Path::new("/var/run/docker.sock").exists() {
        return Docker::Absent;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Docker::Unreachable("cannot start an async runtime".into());
    };
    runtime.block_on(async {
        let api = match bollard::Docker::connect_with_local_defaults() {
            Ok(d) => d,
            Err(e) => return Docker::Unreachable(e.to_string()),
        };
        let list = api.list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        }));
        let list = match tokio::time::timeout(Duration::from_secs(5), list).await {
            Err(_) => return Docker::Unreachable("no answer within 5 s".into()),
            Ok(Err(e)) => return Docker::Unreachable(e.to_string()),
            Ok(Ok(l)) => l,
        };
        let mut out = Vec::new();
        for c in list {
            let Some(name) = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            let mut container = Container {
                name: name.clone(),
                image: c.image.clone().unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
                published: c
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p.ip.clone().unwrap_or_default(),
                            p.public_port?,
                            p.typ.map_or("tcp".to_string(), |t| t.to_string()),
                        ))
                    })
                    .collect(),
                mounts: c
                    .mounts
                    .iter()
                    .flatten()
                    .filter_map(|m| Some((m.source.clone()?, m.destination.clone()?)))
                    .collect(),
                args: Vec::new(),
                tz: None,
            };
            container.published.sort();
            container.published.dedup();
            let inspect = api.inspect_container(&name, None);
            if let Ok(Ok(i)) = tokio::time::timeout(Duration::from_secs(5), inspect).await {
                container.args = i.args.unwrap_or_default();
                container.tz = i
                    .config
                    .and_then(|c| c.env)
                    .into_iter()
                    .flatten()
                    .find_map(|e| e.strip_prefix("TZ=").map(str::to_string));
            }
            out.push(container);
        }
        Docker::Containers(out)
    })
}

fn ssh(fs: &Fs) -> Option<SshLog> {
    for f in ["/var/log/auth.log", "/var/log/secure"] {
        if fs.exists(f) {
            return Some(SshLog::File(fs.at(f).display().to_string()));
        }
    }
    let sshd = fs.exists("/usr/sbin/sshd");
    let journal = fs.exists("/var/log/journal") || Path::new("/run/log/journal").exists();
    if sshd && journal {
        let debian = [
            "/lib/systemd/system/ssh.service",
            "/usr/lib/systemd/system/ssh.service",
        ]
        .iter()
        .any(|u| fs.exists(u));
        return Some(SshLog::Journal(
            if debian {
                "ssh.service"
            } else {
                "sshd.service"
            }
            .into(),
        ));
    }
    None
}

/// `SSH_CONNECTION` of this process or, when sudo dropped it, of the nearest ancestor that
/// has it.
fn admin_session() -> Option<AdminSession> {
    let parse = |v: &str| -> Option<AdminSession> {
        let mut w = v.split_whitespace();
        let client: IpAddr = w.next()?.parse().ok()?;
        let _client_port = w.next()?;
        let _server = w.next()?;
        let server_port: u16 = w.next()?.parse().ok()?;
        Some(AdminSession {
            client: client.to_canonical(),
            server_port,
        })
    };
    if let Ok(v) = std::env::var("SSH_CONNECTION") {
        return parse(&v);
    }
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..32 {
        if pid <= 1 {
            break;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            for var in env.split(|b| *b == 0) {
                if let Some(v) = var.strip_prefix(b"SSH_CONNECTION=") {
                    return parse(&String::from_utf8_lossy(v));
                }
            }
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        pid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
    }
    None
}

fn networks() -> Vec<(String, IpNet)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in addrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let net = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            IpNet::with_netmask(IpAddr::V4(a.ip()), IpAddr::V4(m.ip())).ok()
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            IpNet::with_netmask(IpAddr::V6(a.ip()), IpAddr::V6(m.ip())).ok()
        } else {
            None
        };
        let Some(net) = net.map(|n| n.trunc()) else {
            continue;
        };
        let ip = net.addr();
        let skip = ip.is_loopback()
            || match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
        if !skip && !out.iter().any(|(_, n)| *n == net) {
            out.push((ifa.interface_name.clone(), net));
        }
    }
    out
}

fn kernel() -> Kernel {
    match crate::netfilter::nft::Nft::probe() {
        Ok(how) => Kernel::Nftables(how),
        Err(nft) => match crate::enforce::iptables::IptablesEnforcer::probe() {
            Ok(()) => Kernel::Iptables(nft),
            Err(ipt) => Kernel::Neither(nft, ipt),
        },
    }
}

/// Listening TCP sockets and bound UDP sockets, from `/proc/net`, with their programs.
fn listening() -> Vec<Listening> {
    let owners = socket_owners();
    let mut out = Vec::new();
    for (file, proto, v6) in [
        ("/proc/net/tcp", Proto::Tcp, false),
        ("/proc/net/tcp6", Proto::Tcp, true),
        ("/proc/net/udp", Proto::Udp, false),
        ("/proc/net/udp6", Proto::Udp, true),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            // TCP: state 0A is LISTEN. UDP: 07 is an unconnected (bound) socket.
            let wanted = if proto == Proto::Tcp { "0A" } else { "07" };
            if f[3] != wanted {
                continue;
            }
            let Some((addr, port)) = f[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            let Some(addr) = proc_addr(addr, v6) else {
                continue;
            };
            let l = Listening {
                addr,
                port,
                proto,
                process: owners.get(f[9]).cloned(),
            };
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// An address as /proc/net writes it: each 32-bit word of the address as it lies in memory
/// (network order), printed as a native integer in hex.
fn proc_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    if !v6 {
        let n = u32::from_str_radix(hex, 16).ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(n.to_ne_bytes())));
    }
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for w in 0..4 {
        let word = u32::from_str_radix(&hex[w * 8..w * 8 + 8], 16).ok()?;
        bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical())
}

/// Socket inode → the name of a program holding it.
fn socket_owners() -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                let name = comm
                    .get_or_insert_with(|| {
                        std::fs::read_to_string(p.path().join("comm"))
                            .map(|c| c.trim().to_string())
                            .unwrap_or_default()
                    })
                    .clone();
                out.entry(inode.to_string()).or_insert(name);
            }
        }
    }
    out
}

fn default_interface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" && f[7] == "00000000" {
            return Some(f[0].to_string());
        }
    }
    let text = std::fs::read_to_string("/proc/net/ipv6_route").ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 10 && f[0] == "0".repeat(32) && f[1] == "00" && f[9] != "lo")
            .then(|| f[9].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            proc_addr("0100007F", false),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            proc_addr("017100CB", false),
            Some("203.0.113.1".parse().unwrap())
        );
        assert_eq!(
            proc_addr("00000000000000000000000000000000", true),
            Some("::".parse().unwrap())
        );
        assert_eq!(
            proc_addr("B80D0120000000000000000001000000", true),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn paths_under_a_root() {
        let fs = Fs {
            root: "/srv/test".into(),
        };
        assert_eq!(
            fs.at("/etc/nginx/nginx.conf"),
            Path::new("/srv/test/etc/nginx/nginx.conf")
        );
        assert_eq!(
            fs.at("/srv/test/var/log/x.log"),
            Path::new("/srv/test/var/log/x.log")
        );
        let fs = Fs { root: "/".into() };
        assert_eq!(
            fs.at("/etc/nginx/nginx.conf"),
            Path::new("/etc/nginx/nginx.conf")
        );
    }

    #[test]
    fn the_share_of_cloudflare_in_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let mut text = String::from("cut line\n");
        for i in 0..30 {
            let ip = if i % 3 == 0 {
                "203.0.113.5"
            } else {
                "173.245.48.7"
            };
            text.push_str(&format!(
                "{ip} - - [x] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"\n"
            ));
        }
        std::fs::write(&log, text).unwrap();
        let (share, n) = cloudflare_share(&log).unwrap();
        assert_eq!(n, 30);
        assert!((share - 20.0 / 30.0).abs() < 1e-9, "{share}");
    }
}

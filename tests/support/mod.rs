//! Shared by the integration tests: skipping with a reason (a failure under
//! MOAT_TEST_STRICT=1, which CI sets), and a real Docker engine in a network namespace.

#![allow(dead_code)]

pub mod cloudflare;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Says why a test cannot run here; under MOAT_TEST_STRICT=1 that is a failure.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("MOAT_TEST_STRICT").is_some_and(|v| v == "1") {
        panic!("{test} cannot run here and MOAT_TEST_STRICT=1: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Appends `text` to the file at `path` (created when missing), as a logging program does.
pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The time now as nginx's access log writes it (UTC).
pub fn clf_now() -> String {
    jiff::Timestamp::now()
        .strftime("%d/%b/%Y:%H:%M:%S +0000")
        .to_string()
}

/// Whether `program` is on PATH (or is a path to a file).
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || Path::new(program).is_file()
}

/// A finished command's standard output then its standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Docker engine (Debian's docker.io) started inside its own network namespace, with its
/// own data root, bridge range 198.18.0.0/24, and a locally built busybox image
/// `moat-test/busybox:1` (no registry is reachable).
pub struct Dockerd {
    pub netns: String,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts one, or says why it cannot.
    pub fn start(tag: &str) -> Result<Dockerd, String> {
        if !is_root() {
            return Err("needs root to create a network namespace and run dockerd".into());
        }
        for p in ["dockerd", "docker", "ip", "nsenter"] {
            if !have(p) {
                return Err(format!(
                    "{p} is not installed (apt-get install docker.io iproute2)"
                ));
            }
        }
        if !Path::new("/bin/busybox").is_file() {
            return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
        }
        let netns = format!("moat-{tag}-{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &netns]).status();
        if !ok.is_ok_and(|s| s.success()) {
            return Err(format!("ip netns add {netns} failed"));
        }
        let _ = Command::new("ip")
            .args(["-n", &netns, "link", "set", "lo", "up"])
            .status();
        let dir = tempfile::Builder::new()
            .prefix("moat-dockerd-")
            .tempdir()
            .unwrap();
        let mut d = Dockerd {
            netns,
            dir,
            child: None,
        };
        d.spawn()?;
        d.import_busybox()?;
        Ok(d)
    }

    /// Starts dockerd in the namespace and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let run = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.join("dockerd.log"))
            .unwrap();
        // nsenter, not `ip netns exec`: the latter mounts a fresh /sys that hides the cgroup
        // mounts dockerd needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg(format!("--host=unix://{}/docker.sock", run.display()))
            .arg(format!("--data-root={}/data", run.display()))
            .arg(format!("--exec-root={}/exec", run.display()))
            .arg(format!("--pidfile={}/docker.pid", run.display()))
            .args([
                "--bip=198.18.0.1/24",
                // Networks Docker makes itself (Swarm's docker_gwbridge) stay in the
                // benchmarking range too.
                "--default-address-pool=base=198.19.0.0/17,size=24",
                "--iptables=true",
                "--storage-driver=vfs",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker(&["info"]).status.success() {
            if Instant::now() > deadline {
                return Err(format!("dockerd did not come up:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Stops dockerd (SIGTERM, as `systemctl stop docker` does), leaving its containers.
    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `systemctl restart docker`: dockerd stops and starts again, rebuilding its iptables
    /// chains; containers with a restart policy come back.
    pub fn restart(&mut self) -> Result<(), String> {
        self.terminate();
        self.spawn()
    }

    pub fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.path().display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs docker and fails the test with its stderr when it fails.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn import_busybox(&self) -> Result<(), String> {
        let root = self.dir.path().join("image");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "httpd", "nc", "echo", "sleep", "date", "cat", "seq", "head", "tr",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(["import", "-", "moat-test/busybox:1"])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        let _ = tar.wait();
        if !out.status.success() {
            return Err(format!(
                "docker import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(["rm", "-f", "-v"])
            .args(String::from_utf8_lossy(&self.docker(&["ps", "-aq"]).stdout).split_whitespace())
            .output();
        self.terminate();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Runs `f` on a thread inside network namespace `ns` (sockets it opens live there).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Runs a command inside `ns` and fails the test when it fails.
pub fn ns_run(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "in {ns}: {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Network namespaces made by a test, deleted when dropped.
pub struct Netns(pub Vec<String>);

impl Netns {
    pub fn new(names: &[&str]) -> Netns {
        let names: Vec<String> = names
            .iter()
            .map(|n| format!("moat-{n}-{}", std::process::id()))
            .collect();
        for n in &names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
            assert!(Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .unwrap()
                .success());
            // No duplicate address detection: addresses are usable at once, not after ~2 s.
            ns_run(
                n,
                "ip link set lo up; sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
            );
        }
        Netns(names)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A real nginx with the configuration `conf` (in namespace `ns`, when given), in the
/// foreground, stopped when dropped. SIGTERM, not SIGKILL: nginx's master then stops its workers, where a killed
/// master leaves a worker behind that holds the test's descriptors (and any lock the test
/// command held) long after the test.
pub struct Nginx(Child);

impl Nginx {
    pub fn start(ns: Option<&str>, conf: &Path) -> Nginx {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nginx"]);
                c
            }
            None => Command::new("/usr/sbin/nginx"),
        };
        Nginx(
            cmd.arg("-c")
                .arg(conf)
                .args(["-g", "daemon off;"])
                // Without our stdout: a leftover nginx must not keep the harness waiting.
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Listens on `addr` inside `ns` and hands each connection to `handle` on a thread of its own;
/// returns once listening, runs until the namespace goes.
pub fn serve_in_netns(ns: &str, addr: std::net::SocketAddr, handle: fn(std::net::TcpStream)) {
    let path = format!("/var/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || handle(conn));
        }
    });
    rx.recv().unwrap();
}

/// A TCP server in `ns` on `addr` that answers every connection with "ok\n".
pub fn tcp_server(ns: &str, addr: std::net::SocketAddr) {
    serve_in_netns(ns, addr, |mut conn| {
        use std::io::Write;
        let _ = conn.write_all(b"ok\n");
    });
}

/// A TCP connection from `from` to `to`, made inside `ns` (the returned stream's socket lives
/// there), with one-second timeouts; `None` when it cannot be made.
pub fn connect_from(
    ns: &str,
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> Option<std::net::TcpStream> {
    in_netns(ns, move || {
        let domain = if to.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).ok()?;
        s.bind(&std::net::SocketAddr::new(from, 0).into()).ok()?;
        s.connect_timeout(&to.into(), Duration::from_millis(1000))
            .ok()?;
        let stream: std::net::TcpStream = s.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .ok()?;
        Some(stream)
    })
}

/// Whether a TCP connection from `from` (inside `ns`) to `to` gets the server's "ok" within
/// a second.
pub fn reaches(ns: &str, from: std::net::IpAddr, to: std::net::SocketAddr) -> bool {
    use std::io::Read;
    let Some(mut stream) = connect_from(ns, from, to) else {
        return false;
    };
    let mut buf = [0u8; 3];
    stream.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
}

/// Whether an HTTP request from `from` (inside `ns`) to `to` gets any HTTP response within a
/// second.
pub fn http_reaches(ns: &str, from: std::net::IpAddr, to: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Some(mut stream) = connect_from(ns, from, to) else {
        return false;
    };
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1."
}

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// moat's daemon run in a namespace with `dir/moat.toml`, and its commands.
pub struct Moat {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Moat {
    pub fn start(ns: &str, dir: &Path) -> Moat {
        Moat::start_with_path(ns, dir, None)
    }

    /// With `bin` first in moat's PATH (programs standing in for the usual ones).
    pub fn start_with_path(ns: &str, dir: &Path, bin: Option<&Path>) -> Moat {
        Moat::start_with_env(ns, dir, bin, &[])
    }

    /// With `env` set for the daemon as well.
    pub fn start_with_env(ns: &str, dir: &Path, bin: Option<&Path>, env: &[(&str, &str)]) -> Moat {
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let mut cmd = Command::new("ip");
        cmd.envs(env.iter().copied());
        if let Some(bin) = bin {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
        let child = cmd
            .args(["netns", "exec", ns, MOAT, "run", "-c"])
            .arg(dir.join("moat.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let m = Moat {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.cli(&["status"]).0 {
            assert!(Instant::now() < deadline, "moat did not start: {}", m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(MOAT)
            .args(args)
            .arg("-c")
            .arg(self.dir.join("moat.toml"))
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
    pub fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.cli(args);
        assert!(ok, "moat {args:?}: {out}");
        out
    }
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` passes the signal on to moat, its only child.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Moat {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `f` holds, up to `secs`.
pub fn eventually(secs: u64, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "not within {secs}s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A daemon in a temporary directory with its config, logs, state and socket.
pub struct Daemon {
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Daemon {
    pub fn config(&self) -> PathBuf {
        self.dir.join("moat.toml")
    }

    /// Starts `moat run` and waits until it answers.
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(MOAT);
        cmd.args(["run", "-c"])
            .arg(dir.join("moat.toml"))
            .envs(env.iter().copied());
        Daemon::start_command(dir, cmd)
    }

    /// Starts `cmd` (a `moat run` for `dir`, perhaps behind a wrapper such as `setpriv`) with
    /// the daemon's log in `dir`, and waits until it answers.
    pub fn start_command(dir: &Path, mut cmd: Command) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        if std::env::var_os("MOAT_LOG").is_none() && !cmd.get_envs().any(|(k, _)| k == "MOAT_LOG") {
            cmd.env("MOAT_LOG", "info");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = d.moat(&["status", "--json"]);
            if out.status.success() {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn moat(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(MOAT);
        cmd.args(args).arg("-c").arg(self.config());
        cmd.output().unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.moat(args);
        assert!(
            out.status.success(),
            "moat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn jail(&self, name: &str) -> Value {
        let s = self.json(&["status", name, "--json"]);
        s["jails"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()
            .clone()
    }

    /// Waits until `f` holds for this jail's status.
    pub fn wait_jail(&self, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        // Generous: CI runs these tests in parallel on two cores.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = self.jail(name);
            if f(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status {j:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "moat run exited with {status}: {}",
            self.log()
        );
        self.log()
    }

    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn write_config(dir: &Path, body: &str) {
    let text = format!(
        "[daemon]\nstate_dir = \"state\"\nsocket = \"run/moat.sock\"\nfollow_from = \"start\"\n\n{body}"
    );
    std::fs::write(dir.join("moat.toml"), text).unwrap();
}

/// Answers one connection as Portainer's login API does: `POST /api/auth` gets 200 when the
/// body holds the right password ("right"), 422 otherwise.
pub fn answer_portainer_login(conn: std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut conn = conn;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    // Headers, then as much body as Content-Length says.
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&req).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if req.len() >= end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&req);
    let ok = text.contains("\"password\":\"right\"");
    let (status, body) = if ok {
        ("200 OK", "{\"jwt\":\"x\"}")
    } else {
        (
            "422 Unprocessable Entity",
            "{\"message\":\"Invalid credentials\"}",
        )
    };
    let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

/// Whether the kernel tests can run here (root, nft, iptables, ip); says why not otherwise.
pub fn can_use_netfilter(test: &str) -> bool {
    if !is_root() {
        skip(test, "needs root for network namespaces and nftables");
        return false;
    }
    for p in ["nft", "iptables", "ip"] {
        if Command::new(p).arg("--version").output().is_err() {
            skip(
                test,
                &format!("{p} is not installed (apt-get install nftables iptables iproute2)"),
            );
            return false;
        }
    }
    true
}

/// A veth pair: `vw` in namespace `w`, `vh` in namespace `h`.
pub fn veth(w: &str, h: &str) {
    let st = Command::new("ip")
        .args([
            "link", "add", "vw", "netns", w, "type", "veth", "peer", "name", "vh", "netns", h,
        ])
        .status()
        .unwrap();
    assert!(st.success(), "ip link add vw/vh between {w} and {h}");
}

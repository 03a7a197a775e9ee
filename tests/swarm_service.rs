//! moat as a Swarm global service, as `Dockerfile` and `dist/swarm/moat-stack.yml` ship it, on
//! a real two-node Swarm: two dockerds in two network namespaces on one bridge, `swarm init`
//! and `swarm join`. The image is built from the Dockerfile on a Debian base made here without
//! a registry (debootstrap from the machine's own apt mirror, then `docker import`; the tarball
//! is cached under target/ so later runs skip it), with this test run's moat binary copied in
//! (nothing is compiled in the image). `docker stack deploy` then starts moat on both nodes
//! with no step on either, and each bans the attacker of its own log in its own kernel.
//!
//! No registry is reachable, so the image is carried to the second node with `docker save |
//! docker load`, where a real Swarm would pull it. Root only.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{eventually, have, ns_run, reaches, tcp_server, text, Dockerd, Netns};

const TEST: &str = "moat_runs_on_every_swarm_node_and_bans_in_each_nodes_kernel";
/// The cached base image: Debian bookworm (minbase) with moat's kernel tools.
const BASE_TAR: &str = concat!(
    env!("CARGO_TARGET_TMPDIR"),
    "/moat-debian-bookworm-base-v1.tar"
);
const BASE_PACKAGES: &str = "nftables,iptables,ipset";

/// The machine's Debian mirror, from its apt sources (the first that carries bookworm).
fn mirror() -> String {
    let mut texts: Vec<String> = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path()
                    .extension()
                    .is_some_and(|x| x == "sources" || x == "list")
                {
                    texts.extend(std::fs::read_to_string(e.path()).ok());
                }
            }
        }
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    for t in &texts {
        // deb822: a stanza's URIs with Suites naming bookworm (not the security archive).
        for stanza in t.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
                if suites.split_whitespace().any(|s| s == "bookworm") {
                    return uris.split_whitespace().next().unwrap().to_string();
                }
            }
        }
        for l in t.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() >= 3 && w[0] == "deb" && w.contains(&"bookworm") {
                if let Some(url) = w.iter().find(|x| x.starts_with("http")) {
                    return url.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// The base image's tarball, made once: debootstrap, trimmed of what an image does not need.
fn base_tarball() -> Result<PathBuf, String> {
    let tar = PathBuf::from(BASE_TAR);
    if tar.is_file() {
        return Ok(tar);
    }
    let parent = tar.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let work = tempfile::Builder::new()
        .prefix("moat-debootstrap-")
        .tempdir_in(parent)
        .unwrap();
    let root = work.path().join("root");
    let t0 = Instant::now();
    let out = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={BASE_PACKAGES}"),
            "bookworm",
        ])
        .arg(&root)
        .arg(mirror())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!("debootstrap failed: {}", text(&out)));
    }
    let trim = format!(
        "cd {} && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* usr/share/doc/* \
         usr/share/man/* usr/share/info/* usr/share/locale/*",
        root.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &trim])
        .status()
        .unwrap()
        .success());
    let partial = work.path().join("base.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&partial)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the base");
    std::fs::rename(&partial, &tar).unwrap();
    eprintln!("base image made with debootstrap in {:?}", t0.elapsed());
    Ok(tar)
}

/// A Swarm node: a dockerd in its own namespace, on the bridge at `addr`.
struct Node {
    docker: Dockerd,
    addr: &'static str,
}

impl Node {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.docker.host())
            .env("DOCKER_BUILDKIT", "0")
            .args(args);
        c
    }

    fn id(&self) -> String {
        self.docker.must(&["info", "--format", "{{.Swarm.NodeID}}"])
    }

    /// The id of the moat task's container on this node, once there is one running.
    fn moat_container(&self) -> Option<String> {
        let ids = self.docker.must(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.swarm.service.name=moat_moat",
            "--filter",
            "status=running",
        ]);
        ids.lines().next().map(str::to_string)
    }
}

/// Leaves the stack and the Swarm on both nodes, whatever happens.
struct Cleanup<'a>(&'a [Node]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0[0].docker.docker(&["stack", "rm", "moat"]);
        for n in self.0.iter().rev() {
            let _ = n.docker.docker(&["swarm", "leave", "--force"]);
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn moat_runs_on_every_swarm_node_and_bans_in_each_nodes_kernel() {
    if !support::can_use_netfilter(TEST) {
        return;
    }
    for p in ["debootstrap", "strip", "tar"] {
        if !have(p) {
            return support::skip(
                TEST,
                &format!("{p} is not installed (apt-get install debootstrap binutils tar)"),
            );
        }
    }
    let t0 = Instant::now();
    let base = match base_tarball() {
        Ok(t) => t,
        Err(why) => return support::skip(TEST, &why),
    };
    let mut nodes = Vec::new();
    for (tag, addr) in [("inst-sw1", "203.0.113.11"), ("inst-sw2", "203.0.113.12")] {
        match Dockerd::start(tag) {
            Ok(docker) => nodes.push(Node { docker, addr }),
            Err(why) => return support::skip(TEST, &why),
        }
    }
    // One bridge in a namespace of its own joins the nodes; the clients sit on it too.
    let lan = Netns::new(&["inst-swlan"]);
    let l = lan.0[0].clone();
    ns_run(&l, "ip link add br0 type bridge; ip link set br0 up; ip addr add 203.0.113.254/24 dev br0; \
                ip addr add 203.0.113.66/24 dev br0; ip addr add 203.0.113.67/24 dev br0; ip addr add 203.0.113.77/24 dev br0");
    for (i, n) in nodes.iter().enumerate() {
        let port = format!("sw{}", i + 1);
        let st = Command::new("ip")
            .args([
                "link", "add", &port, "netns", &l, "type", "veth", "peer", "name", "eth1",
            ])
            .args(["netns", &n.docker.netns])
            .status()
            .unwrap();
        assert!(st.success());
        ns_run(
            &l,
            &format!("ip link set {port} master br0; ip link set {port} up"),
        );
        ns_run(
            &n.docker.netns,
            &format!("ip link set eth1 up; ip addr add {}/24 dev eth1", n.addr),
        );
        tcp_server(&n.docker.netns, "0.0.0.0:2222".parse().unwrap());
    }
    let _cleanup = Cleanup(&nodes);

    // The Swarm.
    let (m, w) = (&nodes[0], &nodes[1]);
    m.docker.must(&[
        "swarm",
        "init",
        "--advertise-addr",
        m.addr,
        "--listen-addr",
        &format!("{}:2377", m.addr),
        "--default-addr-pool",
        "198.19.128.0/17",
        "--default-addr-pool-mask-length",
        "24",
    ]);
    let token = m.docker.must(&["swarm", "join-token", "-q", "worker"]);
    w.docker.must(&[
        "swarm",
        "join",
        "--token",
        &token,
        "--advertise-addr",
        w.addr,
        &format!("{}:2377", m.addr),
    ]);
    eventually(60, "two nodes ready", || {
        m.docker
            .must(&["node", "ls", "--format", "{{.Status}}"])
            .lines()
            .filter(|s| *s == "Ready")
            .count()
            == 2
    });
    eprintln!("two-node Swarm ready after {:?}", t0.elapsed());

    // The image: the Debian base imported, moat's Dockerfile built on it with this run's
    // binary, then carried to the other node.
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("context");
    std::fs::create_dir_all(ctx.join("target/release")).unwrap();
    std::fs::create_dir_all(ctx.join("dist")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["Dockerfile", ".dockerignore", "dist/moat.toml"] {
        std::fs::copy(repo.join(f), ctx.join(f)).unwrap();
    }
    let st = Command::new("strip")
        .arg("-o")
        .arg(ctx.join("target/release/moat"))
        .arg(env!("CARGO_BIN_EXE_moat"))
        .status()
        .unwrap();
    assert!(st.success(), "strip");
    let out = m
        .cmd(&[
            "import",
            base.to_str().unwrap(),
            "moat-test/debian:bookworm",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker import: {}", text(&out));
    let out = m
        .cmd(&[
            "build",
            "--build-arg",
            "BASE=moat-test/debian:bookworm",
            "-t",
            "moat-test/moat:1",
        ])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build: {}", text(&out));
    eprintln!("image built on node 1 after {:?}", t0.elapsed());
    let mut save = m
        .cmd(&["save", "moat-test/moat:1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = w
        .cmd(&["load"])
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        save.wait().unwrap().success() && out.status.success(),
        "load: {}",
        text(&out)
    );
    let version = m
        .docker
        .must(&["run", "--rm", "moat-test/moat:1", "--version"]);
    assert_eq!(version, format!("moat {}", env!("CARGO_PKG_VERSION")));
    eprintln!("image built and on both nodes after {:?}", t0.elapsed());

    // Each node's logs and Docker socket, under a directory named by its node id (the stack
    // file's mount sources take Swarm's {{.Node.ID}} template).
    let ids: Vec<String> = nodes.iter().map(Node::id).collect();
    for (n, id) in nodes.iter().zip(&ids) {
        let logs = tmp.path().join("logs").join(id).join("nginx");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("access.log"), "").unwrap();
        let sock = tmp.path().join("sock").join(id);
        std::fs::create_dir_all(&sock).unwrap();
        std::os::unix::fs::symlink(
            n.docker.data_dir().join("docker.sock"),
            sock.join("docker.sock"),
        )
        .unwrap();
    }
    // The stack as shipped, beside the configuration it deploys as a Docker config.
    let stack = tmp.path().join("stack");
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::copy(
        repo.join("dist/swarm/moat-stack.yml"),
        stack.join("moat-stack.yml"),
    )
    .unwrap();
    std::fs::write(
        stack.join("moat.toml"),
        "[enforce]\nuse = [\"nftables\"]\n\n[jails.portainer]\nfilter = \"portainer\"\n\
         sources = [\"/var/log/nginx/access.log\"]\nmaxretry = 3\n",
    )
    .unwrap();
    let out = m
        .cmd(&["stack", "deploy", "-c", "moat-stack.yml", "moat"])
        .current_dir(&stack)
        .env("MOAT_IMAGE", "moat-test/moat:1")
        .env("MOAT_LOG_DIR", tmp.path().join("logs/{{.Node.ID}}"))
        .env(
            "DOCKER_SOCKET",
            tmp.path().join("sock/{{.Node.ID}}/docker.sock"),
        )
        .env("MOAT_CONFIG", "moat-test-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "stack deploy: {}", text(&out));

    // It runs on both nodes, and answers there.
    let mut containers = Vec::new();
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(90);
        let id = loop {
            if let Some(c) = n.moat_container() {
                if n.docker
                    .docker(&["exec", &c, "moat", "status"])
                    .status
                    .success()
                {
                    break c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "moat did not start on {}: {}\n{}",
                n.addr,
                m.docker.must(&["service", "ps", "--no-trunc", "moat_moat"]),
                n.docker.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        containers.push(id);
    }
    eprintln!("moat running on both nodes after {:?}", t0.elapsed());

    // Each node's attacker in its own log: 203.0.113.66 fails on node 1, .67 on node 2.
    let stamp = jiff::Timestamp::now()
        .strftime("%d/%b/%Y:%H:%M:%S +0000")
        .to_string();
    for (id, attacker) in ids.iter().zip(["203.0.113.66", "203.0.113.67"]) {
        let line =
            format!("{attacker} - - [{stamp}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"bot\"\n");
        let path = tmp.path().join("logs").join(id).join("nginx/access.log");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        for _ in 0..3 {
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let service = |n: &Node| -> SocketAddr { format!("{}:2222", n.addr).parse().unwrap() };
    eventually(20, "node 1 bans its attacker", || {
        !reaches(&l, ip("203.0.113.66"), service(m))
    });
    eventually(20, "node 2 bans its attacker", || {
        !reaches(&l, ip("203.0.113.67"), service(w))
    });
    // Each ban is in that node's kernel only.
    assert!(
        reaches(&l, ip("203.0.113.67"), service(m)),
        "node 1 did not ban node 2's attacker"
    );
    assert!(
        reaches(&l, ip("203.0.113.66"), service(w)),
        "node 2 did not ban node 1's attacker"
    );
    for n in &nodes {
        assert!(
            reaches(&l, ip("203.0.113.77"), service(n)),
            "a client that did nothing"
        );
    }
    let set1 = ns_run(&m.docker.netns, "nft list set inet moat ban4");
    let set2 = ns_run(&w.docker.netns, "nft list set inet moat ban4");
    assert!(
        set1.contains("203.0.113.66") && !set1.contains("203.0.113.67"),
        "{set1}"
    );
    assert!(
        set2.contains("203.0.113.67") && !set2.contains("203.0.113.66"),
        "{set2}"
    );
    let status = w
        .docker
        .must(&["exec", &containers[1], "moat", "status", "portainer"]);
    assert!(status.contains("203.0.113.67"), "{status}");
    eprintln!("done after {:?}", t0.elapsed());
}

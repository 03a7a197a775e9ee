//! A fleet of three moat nodes sharing bans through a real Redis (Debian's redis-server, with
//! an ACL user and a password), each node in its own network namespace with the nftables
//! enforcer, and an attacker whose real connections are dropped or not. Root only; skipped
//! with the reason elsewhere (a failure under MOAT_TEST_STRICT=1).

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;
use support::{eventually, ns_run, reaches, tcp_server, Moat, Netns};

const REDIS: &str = "192.0.2.5";
const NODES: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
const ATTACKER: &str = "192.0.2.100";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// redis-server in the `lan` namespace, no persistence, the default user off and one user
/// `moat` limited to moat's keys.
struct Redis {
    ns: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start(ns: &str, dir: &Path) -> Redis {
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "bind {REDIS}\nport 6379\nsave \"\"\nappendonly no\ndir {}\n\
                 user default off\nuser moat on >s3cret ~moat:* +@all -@dangerous +ping +info\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut r = Redis {
            ns: ns.into(),
            dir: dir.into(),
            child: None,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        self.child = Some(
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "redis-server"])
                .arg(self.dir.join("redis.conf"))
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        eventually(10, "redis answers", || self.cli(&["PING"]).trim() == "PONG");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "redis-cli", "--no-auth-warning"])
            .args(["-h", REDIS, "--user", "moat", "--pass", "s3cret"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Fleet {
    ns: Netns,
    dirs: Vec<PathBuf>,
}

impl Fleet {
    fn lan(&self) -> &str {
        &self.ns.0[0]
    }
    fn attacker(&self) -> &str {
        &self.ns.0[1]
    }
    fn node_ns(&self, i: usize) -> &str {
        &self.ns.0[2 + i]
    }

    fn build(tmp: &Path) -> Fleet {
        let ns = Netns::new(&["cl-lan", "cl-att", "cl-n1", "cl-n2", "cl-n3"]);
        let lan = ns.0[0].clone();
        ns_run(
            &lan,
            &format!(
                "ip link add br0 type bridge; ip link set br0 up; ip addr add {REDIS}/24 dev br0"
            ),
        );
        let mut addrs = vec![(ns.0[1].clone(), ATTACKER.to_string())];
        for (i, a) in NODES.iter().enumerate() {
            addrs.push((ns.0[2 + i].clone(), a.to_string()));
        }
        for (i, (n, a)) in addrs.iter().enumerate() {
            let st = Command::new("ip")
                .args([
                    "link", "add", "eth0", "netns", n, "type", "veth", "peer", "name",
                ])
                .arg(format!("p{i}"))
                .args(["netns", &lan])
                .status()
                .unwrap();
            assert!(st.success());
            ns_run(
                &lan,
                &format!("ip link set p{i} master br0; ip link set p{i} up"),
            );
            ns_run(
                n,
                &format!("ip link set eth0 up; ip addr add {a}/24 dev eth0"),
            );
        }
        // More attacker addresses, for bans by hand.
        ns_run(
            &ns.0[1],
            "for i in 101 102 103 104; do ip addr add 192.0.2.$i/24 dev eth0; done",
        );
        let mut dirs = Vec::new();
        for (i, addr) in NODES.iter().enumerate() {
            let n = ns.0[2 + i].clone();
            tcp_server(&n, format!("{}:2222", addr).parse().unwrap());
            let dir = tmp.join(format!("node{}", i + 1));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("access.log"), "").unwrap();
            std::fs::write(dir.join("redis.pass"), "s3cret\n").unwrap();
            std::fs::set_permissions(
                dir.join("redis.pass"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::fs::write(
                dir.join("moat.toml"),
                format!(
                    "[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\ncheckpoint = \"1s\"\n\
                     metrics = \"127.0.0.1:9717\"\n\n\
                     [enforce]\nuse = [\"nftables\"]\n\n\
                     [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n\n\
                     [cluster]\nredis = \"redis://{REDIS}:6379/0\"\nusername = \"moat\"\n\
                     password_file = \"redis.pass\"\nnode = \"node{}\"\n",
                    i + 1
                ),
            )
            .unwrap();
            dirs.push(dir);
        }
        Fleet { ns, dirs }
    }

    fn start(&self, i: usize) -> Moat {
        Moat::start(self.node_ns(i), &self.dirs[i])
    }

    fn reaches(&self, from: &str, i: usize) -> bool {
        let to: SocketAddr = format!("{}:2222", NODES[i]).parse().unwrap();
        reaches(self.attacker(), ip(from), to)
    }

    fn set(&self, i: usize) -> String {
        ns_run(self.node_ns(i), "nft list table inet moat")
    }

    fn has(&self, i: usize, addr: &str) -> bool {
        self.set(i).contains(&format!("{addr} "))
    }

    /// A metric of node `i`, as its Prometheus endpoint (on the node's loopback) says.
    fn metric(&self, i: usize, name: &str) -> f64 {
        let text = ns_run(self.node_ns(i), "curl -sS http://127.0.0.1:9717/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in node {i}'s metrics:\n{text}"))
    }
}

fn status(m: &Moat) -> serde_json::Value {
    serde_json::from_str(&m.must(&["status", "--json"])).unwrap()
}

fn fail_twice(dir: &Path, from: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("access.log"))
        .unwrap();
    for _ in 0..2 {
        let line = format!(
            "{from} - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"x\"\n",
            jiff::Timestamp::now().strftime("%d/%b/%Y:%H:%M:%S +0000")
        );
        f.write_all(line.as_bytes()).unwrap();
    }
}

#[test]
fn three_nodes_share_bans_through_redis() {
    let test = "three_nodes_share_bans_through_redis";
    if !support::can_use_netfilter(test) {
        return;
    }
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip(
            test,
            "redis-server is not installed (apt-get install redis-server)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::build(tmp.path());
    let rdir = tmp.path().join("redis");
    std::fs::create_dir_all(&rdir).unwrap();
    let mut redis = Redis::start(fleet.lan(), &rdir);
    // The ACL holds: the default user cannot read moat's keys.
    let anon = Command::new("ip")
        .args([
            "netns",
            "exec",
            fleet.lan(),
            "redis-cli",
            "-h",
            REDIS,
            "HLEN",
            "moat:bans",
        ])
        .output()
        .unwrap();
    let anon = String::from_utf8_lossy(&anon.stdout);
    assert!(anon.contains("NOAUTH"), "the default user is off: {anon}");

    let n1 = fleet.start(0);
    let n2 = fleet.start(1);
    let mut n3 = Some(fleet.start(2));
    for i in 0..3 {
        assert!(fleet.reaches(ATTACKER, i), "before any ban, node {i}");
    }
    eventually(10, "every node sees the others' heartbeats", || {
        status(&n1)["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)
    });

    // The attacker fails on node 1's log; nodes 2 and 3 drop it too.
    fail_twice(&fleet.dirs[0], ATTACKER);
    eventually(5, "node 1 drops the attacker", || {
        !fleet.reaches(ATTACKER, 0)
    });
    eventually(5, "nodes 2 and 3 drop it", || {
        !fleet.reaches(ATTACKER, 1) && !fleet.reaches(ATTACKER, 2)
    });
    let bans = n2.must(&["bans"]);
    assert!(
        bans.contains("node1"),
        "moat bans marks the remote ban: {bans}"
    );

    // An unban on node 3 lifts it everywhere.
    n3.as_ref().unwrap().must(&["unban", ATTACKER]);
    eventually(5, "lifted on every node", || {
        (0..3).all(|i| fleet.reaches(ATTACKER, i))
    });

    // Node 3 killed with -9; bans and unbans on node 1 meanwhile; node 3 back: exactly those.
    drop(n3.take());
    n1.must(&["ban", "192.0.2.101", "--for", "1h"]);
    n1.must(&["ban", "192.0.2.102", "--for", "1h"]);
    n1.must(&["unban", "192.0.2.102"]);
    eventually(5, "node 2 follows", || {
        fleet.has(1, "192.0.2.101") && !fleet.has(1, "192.0.2.102")
    });
    let back = fleet.start(2);
    eventually(5, "node 3 caught up", || {
        fleet.has(2, "192.0.2.101") && !fleet.has(2, "192.0.2.102")
    });
    assert!(!fleet.reaches("192.0.2.101", 2) && fleet.reaches("192.0.2.102", 2));

    // Hostile entries written straight into Redis: refused, counted, nothing crashes.
    let good = |target: &str| {
        format!(
            "{{\"node\":\"node1\",\"jail\":\"manual\",\"target\":\"{target}\",\"started\":{},\
             \"until\":null,\"failures\":0,\"origin\":\"manual\"}}",
            jiff::Timestamp::now().as_millisecond()
        )
    };
    let huge = "x".repeat(100_000);
    let refused_before = status(&n2)["cluster"]["refused"].as_u64().unwrap();
    for fields in [
        vec!["kind", "ban", "by", "node1", "ban", "garbage"],
        vec!["kind", "ban", "by", "node1", "ban", &good("0.0.0.0/0")],
        vec!["kind", "ban", "by", "node1", "ban", &good("127.0.0.1/32")],
        vec![
            "kind",
            "ban",
            "by",
            "node1",
            "ban",
            &good(&format!("{}/32", NODES[1])),
        ],
        vec!["kind", "ban", "by", "node1", "ban", &huge],
        vec!["nonsense", "1"],
    ] {
        let mut args = vec!["XADD", "moat:log", "*"];
        args.extend(fields.iter().copied());
        let id = redis.cli(&args);
        assert!(id.contains('-'), "XADD: {id}");
    }
    eventually(5, "node 2 refused the six", || {
        status(&n2)["cluster"]["refused"].as_u64().unwrap() >= refused_before + 6
    });
    for m in [&n1, &n2, &back] {
        m.must(&["status"]);
    }
    // The same counts in Prometheus: published, received (with their delay), refused.
    assert!(fleet.metric(0, "moat_cluster_published_total") >= 4.0);
    assert!(fleet.metric(1, "moat_cluster_received_total") >= 4.0);
    assert!(fleet.metric(1, "moat_cluster_lag_seconds_count") >= 4.0);
    assert!(fleet.metric(1, "moat_cluster_refused_total") >= 6.0);
    assert_eq!(fleet.metric(1, "moat_cluster_reachable"), 1.0);
    assert!(fleet.metric(1, "moat_cluster_remote_bans") >= 1.0);
    for i in 0..3 {
        let set = fleet.set(i);
        assert!(
            !set.contains("0.0.0.0/0") && !set.contains("127.0.0.1"),
            "{set}"
        );
    }
    assert!(!fleet.has(1, NODES[1]), "node 2 never bans its own address");

    // Redis killed and restarted empty: the nodes write their bans again.
    redis.restart();
    assert_eq!(redis.cli(&["HLEN", "moat:bans"]).trim(), "0");
    eventually(20, "the active set is refilled", || {
        redis.cli(&["HKEYS", "moat:bans"]).contains("192.0.2.101")
    });
    n1.must(&["ban", "192.0.2.103", "--for", "1h"]);
    eventually(15, "bans flow again after the restart", || {
        fleet.has(1, "192.0.2.103") && fleet.has(2, "192.0.2.103")
    });

    // Redis unreachable from node 2: it keeps enforcing and deciding; then it converges.
    ns_run(
        fleet.node_ns(1),
        &format!("nft add table inet cut; nft add chain inet cut out '{{ type filter hook output priority 0; }}'; nft add rule inet cut out ip daddr {REDIS} drop"),
    );
    eventually(30, "node 2 says the cluster is degraded", || {
        status(&n2)["cluster"]["degraded"].is_string()
    });
    assert_eq!(fleet.metric(1, "moat_cluster_reachable"), 0.0);
    n1.must(&["ban", "192.0.2.104", "--for", "1h"]);
    fail_twice(&fleet.dirs[1], ATTACKER);
    eventually(5, "node 2 still bans on its own", || {
        !fleet.reaches(ATTACKER, 1)
    });
    assert!(fleet.has(1, "192.0.2.101"), "last-known remote bans stay");
    ns_run(fleet.node_ns(1), "nft delete table inet cut");
    eventually(30, "everything converges", || {
        fleet.has(1, "192.0.2.104") && fleet.has(0, ATTACKER) && fleet.has(2, ATTACKER)
    });
    std::thread::sleep(Duration::from_secs(1));
    // No duplicates: one active entry per ban.
    let keys = redis.cli(&["HKEYS", "moat:bans"]);
    let attacker_keys = keys.lines().filter(|k| k.contains(ATTACKER)).count();
    assert_eq!(attacker_keys, 1, "{keys}");
    let bans: serde_json::Value = serde_json::from_str(&back.must(&["bans", "--json"])).unwrap();
    let active = bans["active"].as_array().unwrap();
    let n101 = active
        .iter()
        .filter(|b| b["target"] == "192.0.2.101/32")
        .count();
    assert_eq!(n101, 1, "{active:?}");
    drop(n2);
    drop(n1);
}

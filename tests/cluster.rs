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

/// The ACL rule docs/cluster.md gives each node's user (after its password), so that the
/// tests run with exactly what users are told to configure.
fn documented_acl() -> String {
    let doc = include_str!("../docs/cluster.md");
    let line = doc
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("user moat-node1 on >PASSWORD1 "))
        .expect("docs/cluster.md has the ACL line of moat-node1");
    line["user moat-node1 on >PASSWORD1 ".len()..].to_string()
}

/// redis-server (in a namespace, or on loopback), no persistence, the default user off and
/// one user `moat` with the rule docs/cluster.md gives.
struct Redis {
    ns: Option<String>,
    host: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start(ns: &str, dir: &Path) -> Redis {
        Redis::start_at(Some(ns), REDIS, 6379, dir)
    }

    fn start_at(ns: Option<&str>, host: &str, port: u16, dir: &Path) -> Redis {
        Redis::start_with(ns, host, port, dir, "")
    }

    /// With `extra` lines of configuration (replication, more users).
    fn start_with(ns: Option<&str>, host: &str, port: u16, dir: &Path, extra: &str) -> Redis {
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "bind {host}\nport {port}\nsave \"\"\nappendonly no\ndir {}\n\
                 user default off\nuser moat on >s3cret {}\n{extra}",
                dir.display(),
                documented_acl()
            ),
        )
        .unwrap();
        let mut r = Redis {
            ns: ns.map(String::from),
            host: host.into(),
            port,
            dir: dir.into(),
            child: None,
        };
        r.restart();
        r
    }

    /// `program` run in the namespace, if any.
    fn command(&self, program: &str) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        self.child = Some(
            self.command("redis-server")
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
        let out = self
            .command("redis-cli")
            .arg("--no-auth-warning")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(["--user", "moat", "--pass", "s3cret"])
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

    /// Three nodes whose `[cluster]` reaches Redis with `connection` (the rest is the same).
    fn build(tmp: &Path, connection: &str) -> Fleet {
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
            // Node 2 counts the earlier bans the other nodes decided when it escalates.
            let escalate = if i == 1 {
                "escalate = { factor = 3, across_nodes = true }\n"
            } else {
                ""
            };
            std::fs::write(
                dir.join("moat.toml"),
                format!(
                    "[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\ncheckpoint = \"1s\"\n\
                     metrics = \"127.0.0.1:9717\"\n\n\
                     [enforce]\nuse = [\"nftables\"]\n\n\
                     [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n\
                     bantime = \"10m\"\n{escalate}\n\
                     [cluster]\n{connection}\nusername = \"moat\"\n\
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
    if !support::have("redis-server") {
        support::skip(
            test,
            "redis-server is not installed (apt-get install redis-server)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::build(tmp.path(), &format!("redis = \"redis://{REDIS}:6379/0\""));
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

    // Redis killed and restarted empty while nodes 1 and 2 are cut off from it. Node 3 is
    // back first and writes its own ban again; node 2 then finds a log that goes on past its
    // position and an active set without node 1's bans: Redis lost them (its epoch changed),
    // they were not lifted, and node 2 keeps them. Node 1 back, it writes them again.
    back.must(&["ban", "192.0.2.105", "--for", "1h"]);
    eventually(5, "node 2 has node 3's ban", || fleet.has(1, "192.0.2.105"));
    let cut = format!(
        "nft add table inet cut; nft add chain inet cut out '{{ type filter hook output priority 0; }}'; nft add rule inet cut out ip daddr {REDIS} drop"
    );
    ns_run(fleet.node_ns(0), &cut);
    ns_run(fleet.node_ns(1), &cut);
    redis.restart();
    eventually(20, "node 3 wrote its ban again", || {
        redis.cli(&["HKEYS", "moat:bans"]).contains("192.0.2.105")
    });
    ns_run(fleet.node_ns(1), "nft delete table inet cut");
    eventually(30, "node 2 is back on the restarted Redis", || {
        // Its second resync (the first was at its start), whatever the reason it gives.
        n2.log().matches("resync from the active set").count() >= 2
            && status(&n2)["cluster"]["degraded"].is_null()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        fleet.has(1, "192.0.2.101"),
        "node 2 keeps node 1's ban that Redis lost"
    );
    ns_run(fleet.node_ns(0), "nft delete table inet cut");
    eventually(30, "the active set is refilled", || {
        redis.cli(&["HKEYS", "moat:bans"]).contains("192.0.2.101")
    });
    n1.must(&["ban", "192.0.2.103", "--for", "1h"]);
    eventually(15, "bans flow again after the restart", || {
        fleet.has(1, "192.0.2.103") && fleet.has(2, "192.0.2.103")
    });

    // Redis unreachable from node 2: it keeps enforcing and deciding; then it converges.
    ns_run(fleet.node_ns(1), &cut);
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
    // Node 1's earlier ban of the attacker counts on node 2 (`across_nodes`): 3 × 10 min.
    let bans: serde_json::Value = serde_json::from_str(&n2.must(&["bans", "--json"])).unwrap();
    let ban = bans["active"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == format!("{ATTACKER}/32"))
        .cloned()
        .unwrap_or_else(|| panic!("node 2's ban of the attacker: {bans}"));
    let at = |k: &str| ban[k].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert_eq!(
        at("until").duration_since(at("started")).as_secs(),
        30 * 60,
        "escalated across nodes: {ban}"
    );
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

/// A `redis-sentinel` of the test: its own configuration file (Sentinel rewrites it), killed
/// when dropped.
struct Sentinel {
    ns: String,
    port: u16,
    child: Child,
}

impl Sentinel {
    /// A sentinel on `port` watching the master `moat` at `REDIS:6379`, quick to call it down.
    fn start(ns: &str, port: u16, dir: &Path) -> Sentinel {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "bind {REDIS}\nport {port}\ndir {}\n\
                 sentinel monitor moat {REDIS} 6379 2\n\
                 sentinel down-after-milliseconds moat 1000\n\
                 sentinel failover-timeout moat 10000\n\
                 sentinel auth-user moat sentinel\nsentinel auth-pass moat sentinel-pass\n",
                dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("sentinel-{port}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "redis-sentinel"])
            .arg(&conf)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Sentinel {
            ns: ns.into(),
            port,
            child,
        };
        eventually(10, "the sentinel answers", || {
            s.cli(&["PING"]).trim() == "PONG"
        });
        s
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "redis-cli"])
            .args(["-h", REDIS, "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the master the sentinel names now.
    fn master_port(&self) -> String {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", "moat"]);
        out.lines().nth(1).unwrap_or_default().trim().to_string()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon whose log a failed wait shows.
trait Logged {
    fn log(&self) -> String;
}

impl Logged for Moat {
    fn log(&self) -> String {
        Moat::log(self)
    }
}

impl Logged for support::Daemon {
    fn log(&self) -> String {
        support::Daemon::log(self)
    }
}

/// Waits until `f` holds, up to `secs`; shows every node's log when it does not.
fn wait(secs: u64, what: &str, nodes: &[&dyn Logged], f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        if std::time::Instant::now() >= deadline {
            let logs: Vec<String> = nodes.iter().map(|d| d.log()).collect();
            panic!("not within {secs}s: {what}\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_fleet_follows_a_sentinel_failover() {
    let test = "the_fleet_follows_a_sentinel_failover";
    if !support::can_use_netfilter(test) {
        return;
    }
    if !support::have("redis-sentinel") {
        support::skip(
            test,
            "redis-sentinel is not installed (apt-get install redis-sentinel)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::build(
        tmp.path(),
        &format!(
            "redis = \"redis://sentinel-chosen/0\"\nmaster_name = \"moat\"\n\
             sentinels = [\"{REDIS}:26379\", \"{REDIS}:26380\", \"{REDIS}:26381\"]"
        ),
    );
    // A master and its replica, with the users Redis's documentation gives replication and
    // Sentinel, and the documented moat user.
    let users = "user repl on >repl-pass +psync +replconf +ping\n\
                 user sentinel on >sentinel-pass allchannels +multi +slaveof +ping +exec \
                 +subscribe +config|rewrite +role +publish +info +client|setname +client|kill \
                 +script|kill\n\
                 masteruser repl\nmasterauth repl-pass\n";
    let dirs: Vec<PathBuf> = ["master", "replica", "sentinels"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut master = Redis::start_with(Some(fleet.lan()), REDIS, 6379, &dirs[0], users);
    let replica = Redis::start_with(
        Some(fleet.lan()),
        REDIS,
        6380,
        &dirs[1],
        &format!("{users}replicaof {REDIS} 6379\n"),
    );
    eventually(10, "the replica is in sync", || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let sentinels: Vec<Sentinel> = [26379, 26380, 26381]
        .iter()
        .map(|p| Sentinel::start(fleet.lan(), *p, &dirs[2]))
        .collect();
    eventually(20, "the sentinels know each other and the replica", || {
        let s = &sentinels[0];
        s.cli(&["SENTINEL", "sentinels", "moat"])
            .matches("runid")
            .count()
            == 2
            && s.cli(&["SENTINEL", "replicas", "moat"]).contains("6380")
    });

    let n1 = fleet.start(0);
    let n2 = fleet.start(1);
    wait(10, "the nodes see each other", &[&n1, &n2], || {
        status(&n1)["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    });
    n1.must(&["ban", "192.0.2.101", "--for", "1h"]);
    wait(5, "node 2 has node 1's ban", &[&n1, &n2], || {
        fleet.has(1, "192.0.2.101")
    });

    // The master dies; the sentinels promote the replica; the fleet follows it.
    master.kill();
    let killed = std::time::Instant::now();
    eventually(30, "the sentinels promote the replica", || {
        sentinels.iter().all(|s| s.master_port() == "6380")
    });
    n1.must(&["ban", "192.0.2.102", "--for", "1h"]);
    wait(
        30,
        "a ban after the failover reaches node 2",
        &[&n1, &n2],
        || fleet.has(1, "192.0.2.102"),
    );
    eprintln!(
        "{test}: from the master's death to a new ban in force on node 2: {:.1} s",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        !fleet.reaches("192.0.2.102", 1),
        "node 2 drops the new ban's traffic"
    );
    assert!(
        replica.cli(&["HKEYS", "moat:bans"]).contains("192.0.2.102"),
        "the ban is in the new master"
    );
    n2.must(&["unban", "192.0.2.101"]);
    wait(
        10,
        "an unban after the failover lifts it on node 1",
        &[&n1, &n2],
        || !fleet.has(0, "192.0.2.101"),
    );
    for n in [&n1, &n2] {
        let st = status(n);
        assert!(
            st["cluster"]["degraded"].is_null(),
            "the cluster is whole again: {st}"
        );
    }
    // Each ban once in the new master: the reconnection published nothing twice (a ban
    // published again with another start would be a second entry).
    let keys = replica.cli(&["HKEYS", "moat:bans"]);
    assert_eq!(
        keys.lines().filter(|k| k.contains("192.0.2.102")).count(),
        1,
        "{keys}"
    );
}

/// One node of the Cloudflare fleet below: its own directory, its own token (so that the
/// fake can tell who wrote), the same account, list and (default) owner as the others.
fn cloudflare_node(
    tmp: &Path,
    name: &str,
    token: &str,
    fake: &support::cloudflare::Fake,
    redis_port: u16,
) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, secret) in [("cf.token", token), ("redis.pass", "s3cret")] {
        std::fs::write(dir.join(file), format!("{secret}\n")).unwrap();
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(dir.join("access.log"), "").unwrap();
    support::write_config(
        &dir,
        &format!(
            "[enforce]\nuse = [\"cloudflare\"]\n\n\
             [enforce.cloudflare]\ntoken_file = \"cf.token\"\naccount_id = \"{}\"\n\
             zone_id = \"{}\"\napi = \"{}\"\n\n\
             [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n\n\
             [cluster]\nredis = \"redis://127.0.0.1:{redis_port}/0\"\nusername = \"moat\"\n\
             password_file = \"redis.pass\"\nnode = \"{name}\"\n",
            fake.account(),
            fake.zone(),
            fake.url
        ),
    );
    dir
}

/// The Cloudflare enforcer's remark in `moat status --json`.
fn cf_remark(d: &support::Daemon) -> String {
    d.json(&["status", "--json"])["enforcers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "cloudflare")
        .and_then(|e| e["remark"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The fake list's items for `ip`: (id, comment) each.
fn cf_items(fake: &support::cloudflare::Fake, ip: &str) -> Vec<(String, String)> {
    let st = fake.state.lock().unwrap();
    st.lists
        .values()
        .flat_map(|l| l.items.values())
        .filter(|i| i.ip == ip)
        .map(|i| (i.id.clone(), i.comment.clone()))
        .collect()
}

#[test]
fn one_node_writes_cloudflare_for_the_fleet_and_another_takes_over() {
    use support::cloudflare::{Fake, Item, Options, LISTS_EDIT, WAF_EDIT};
    let test = "one_node_writes_cloudflare_for_the_fleet_and_another_takes_over";
    if !support::have("redis-server") || !support::have("redis-cli") {
        support::skip(
            test,
            "redis-server is not installed (apt-get install redis-server)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rdir = tmp.path().join("redis");
    std::fs::create_dir_all(&rdir).unwrap();
    let mut redis = Redis::start_at(None, "127.0.0.1", port, &rdir);
    let fake = Fake::start(Options::default());
    fake.token("token-a", &[LISTS_EDIT, WAF_EDIT]);
    fake.token("token-b", &[LISTS_EDIT, WAF_EDIT]);
    let key = format!("moat:lease:cloudflare:{}:moat_block", fake.account());
    let dir_a = cloudflare_node(tmp.path(), "node-a", "token-a", &fake, port);
    let dir_b = cloudflare_node(tmp.path(), "node-b", "token-b", &fake, port);

    // Node A first: it takes the lease and creates the list.
    let a = support::Daemon::start(&dir_a);
    wait(15, "node A holds the lease", &[&a], || {
        cf_remark(&a).starts_with("writing for the fleet (holds the lease)")
    });
    assert_eq!(redis.cli(&["GET", &key]).trim(), "node-a");
    wait(10, "node A created the list", &[&a], || {
        !fake.state.lock().unwrap().lists.is_empty()
    });
    // The admin's own item, in the list throughout.
    let admin = Item {
        id: "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a".into(),
        ip: "198.51.100.50".into(),
        comment: "office VPN, added by hand".into(),
    };
    {
        let mut st = fake.state.lock().unwrap();
        let list = st.lists.values_mut().next().unwrap();
        list.items.insert(admin.id.clone(), admin.clone());
    }
    let admins_item_stays = || {
        let items = cf_items(&fake, &admin.ip);
        assert_eq!(
            items,
            vec![(admin.id.clone(), admin.comment.clone())],
            "the admin's item is never changed or deleted"
        );
    };

    let b = support::Daemon::start(&dir_b);
    wait(15, "node B is standby", &[&a, &b], || {
        cf_remark(&b).starts_with("standby: node node-a writes to Cloudflare")
    });
    let lease = b.json(&["status", "--json"])["cluster"]["cloudflare_lease"].clone();
    assert_eq!(lease, format!("{key}: held by node-a"), "{lease}");

    // 1. A ban decided on B is placed once, by A; B makes no request at all.
    b.json(&["ban", "203.0.113.10", "--for", "1h", "--json"]);
    wait(10, "the ban of B is in the list", &[&a, &b], || {
        !cf_items(&fake, "203.0.113.10").is_empty()
    });
    // And the ones that stay (1 h), and one that ends while nobody writes (6 s), by A.
    a.json(&["ban", "203.0.113.20", "--for", "1h", "--json"]);
    a.json(&["ban", "203.0.113.30", "--for", "6s", "--json"]);
    wait(10, "A's bans are in the list", &[&a, &b], || {
        !cf_items(&fake, "203.0.113.20").is_empty() && !cf_items(&fake, "203.0.113.30").is_empty()
    });
    let stay: Vec<(String, String)> = ["203.0.113.10", "203.0.113.20"]
        .iter()
        .map(|ip| {
            let items = cf_items(&fake, ip);
            assert_eq!(items.len(), 1, "{ip} placed exactly once: {items:?}");
            assert!(items[0].1.ends_with(" owner fleet"), "{items:?}");
            items[0].clone()
        })
        .collect();
    assert!(
        fake.calls_by("token-b").is_empty(),
        "the standby made no Cloudflare request: {:?}",
        fake.calls_by("token-b")
    );
    let writes_a = fake.writes_by("token-a");
    assert!(
        writes_a
            .iter()
            .any(|w| w.starts_with("POST ") && w.contains("/items")),
        "{writes_a:?}"
    );
    admins_item_stays();

    // 2./3. The holder killed: B takes the lease within the TTL and a few seconds.
    let killed = std::time::Instant::now();
    a.kill9();
    wait(25, "node B takes over", &[&b], || {
        cf_remark(&b).starts_with("writing for the fleet (holds the lease)")
    });
    let took = killed.elapsed();
    eprintln!("node B took the lease {took:?} after node A was killed");
    assert!(took <= Duration::from_secs(16), "{took:?}");
    assert_eq!(redis.cli(&["GET", &key]).trim(), "node-b");
    b.json(&["ban", "203.0.113.40", "--for", "1h", "--json"]);
    wait(10, "the new writer places a new ban", &[&b], || {
        !cf_items(&fake, "203.0.113.40").is_empty()
    });
    wait(15, "the dead node's ended ban is lifted", &[&b], || {
        cf_items(&fake, "203.0.113.30").is_empty()
    });
    let writes_b = fake.writes_by("token-b");
    assert!(
        writes_b.iter().any(|w| w.starts_with("DELETE ")),
        "B lifted it: {writes_b:?}"
    );
    for (ip, item) in ["203.0.113.10", "203.0.113.20"].iter().zip(&stay) {
        assert_eq!(
            cf_items(&fake, ip),
            vec![item.clone()],
            "{ip} stays, never deleted and placed again"
        );
    }
    admins_item_stays();

    // 4. Redis gone: after the TTL, B adds bans but lifts none.
    redis.kill();
    wait(25, "B is alone", &[&b], || {
        cf_remark(&b).starts_with("Redis unreachable: adding bans only")
    });
    let lease = b.json(&["status", "--json"])["cluster"]["cloudflare_lease"].clone();
    assert!(
        lease.as_str().unwrap().contains("Redis unreachable"),
        "{lease}"
    );
    b.json(&["ban", "203.0.113.60", "--for", "1h", "--json"]);
    wait(10, "a ban is placed without Redis", &[&b], || {
        !cf_items(&fake, "203.0.113.60").is_empty()
    });
    b.json(&["unban", "203.0.113.40", "--json"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        cf_items(&fake, "203.0.113.40").len(),
        1,
        "no unban without the lease"
    );
    // Redis back (empty): B takes the lease again and does the unban.
    redis.restart();
    wait(20, "B holds the lease again", &[&b], || {
        cf_remark(&b).starts_with("writing for the fleet (holds the lease)")
    });
    wait(10, "the unban is done", &[&b], || {
        cf_items(&fake, "203.0.113.40").is_empty()
    });
    // B's own bans stay. (Redis came back empty: the dead node A's bans are gone from the
    // fleet's active set, as after any empty restart with their node away, so the resync
    // lifts 203.0.113.20 everywhere; that is the cluster's rule, not the lease's.)
    for ip in ["203.0.113.10", "203.0.113.60"] {
        assert_eq!(cf_items(&fake, ip).len(), 1, "{ip} stays");
    }
    admins_item_stays();

    // A clean stop hands the lease over at once.
    b.stop();
    assert_eq!(redis.cli(&["GET", &key]).trim(), "", "released");
}

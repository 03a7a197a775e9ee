//! Bans in a real kernel: network namespaces with veth pairs and documentation addresses, a
//! host service, a "container" reached through DNAT of a published port with Docker-like
//! iptables-nft chains, and moat's nftables enforcer in the host namespace. Root only; skipped
//! with the reason elsewhere (a failure under MOAT_TEST_STRICT=1).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{eventually, ns_run, reaches, tcp_server, Moat, Netns};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// wan (attacker 192.0.2.100, legit 192.0.2.200; v6 attacker 2001:db8:a::1 and ::2 in one
/// /64, legit 2001:db8:b::1) ── veth ── host (192.0.2.1, 2001:db8:1::1; service :2222;
/// publishes :8080 → container 198.18.0.2:80 by DNAT) ── veth ── container.
struct Lab {
    ns: Netns,
}

impl Lab {
    fn wan(&self) -> &str {
        &self.ns.0[0]
    }
    fn host(&self) -> &str {
        &self.ns.0[1]
    }
    fn container(&self) -> &str {
        &self.ns.0[2]
    }

    fn build(tag: &str) -> Lab {
        let ns = Netns::new(&[&format!("{tag}w"), &format!("{tag}h"), &format!("{tag}c")]);
        let lab = Lab { ns };
        let (w, h, c) = (lab.wan(), lab.host(), lab.container());
        let run = |cmd: &str| {
            let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
            assert!(st.success(), "{cmd}");
        };
        run(&format!(
            "ip link add vw netns {w} type veth peer name vh netns {h}"
        ));
        run(&format!(
            "ip link add vc netns {c} type veth peer name vhc netns {h}"
        ));
        ns_run(w, "ip link set vw up; ip addr add 192.0.2.100/24 dev vw; ip addr add 192.0.2.200/24 dev vw; \
                   ip -6 addr add 2001:db8:1::2/64 dev vw nodad; \
                   ip -6 addr add 2001:db8:a::1/128 dev lo; ip -6 addr add 2001:db8:a::2/128 dev lo; ip -6 addr add 2001:db8:b::1/128 dev lo; \
                   ip -6 route add default via 2001:db8:1::1");
        ns_run(h, "ip link set vh up; ip addr add 192.0.2.1/24 dev vh; ip -6 addr add 2001:db8:1::1/64 dev vh nodad; \
                   ip -6 route add 2001:db8:a::/64 via 2001:db8:1::2; ip -6 route add 2001:db8:b::/64 via 2001:db8:1::2; \
                   ip link set vhc up; ip addr add 198.18.0.1/24 dev vhc; \
                   sysctl -qw net.ipv4.ip_forward=1");
        ns_run(c, "ip link set vc up; ip addr add 198.18.0.2/24 dev vc; ip route add default via 198.18.0.1");
        // Docker's layout, as iptables-nft writes it: nat PREROUTING → DOCKER → DNAT of the
        // published port; FORWARD → DOCKER-USER, then the per-container ACCEPT; policy DROP.
        ns_run(h, "iptables -t nat -N DOCKER; \
                   iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER; \
                   iptables -t nat -A DOCKER ! -i vhc -p tcp --dport 8080 -j DNAT --to-destination 198.18.0.2:80; \
                   iptables -N DOCKER-USER; iptables -A DOCKER-USER -j RETURN; \
                   iptables -P FORWARD DROP; \
                   iptables -A FORWARD -j DOCKER-USER; \
                   iptables -A FORWARD -o vhc -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT; \
                   iptables -A FORWARD -d 198.18.0.2/32 ! -i vhc -o vhc -p tcp --dport 80 -j ACCEPT; \
                   iptables -A FORWARD -i vhc -j ACCEPT");
        tcp_server(h, sa("0.0.0.0:2222"));
        tcp_server(h, sa("[::]:2223"));
        tcp_server(c, sa("0.0.0.0:80"));
        lab
    }
}

fn can_run(test: &str) -> bool {
    support::can_use_netfilter(test)
}

#[test]
fn nftables_bans_cover_host_services_and_published_ports() {
    if can_run("nftables_bans_cover_host_services_and_published_ports") {
        bans_cover_host_services_and_published_ports("nftables", "kn");
    }
}

#[test]
fn iptables_bans_cover_host_services_and_published_ports() {
    if can_run("iptables_bans_cover_host_services_and_published_ports") {
        bans_cover_host_services_and_published_ports("iptables", "ki");
    }
}

/// The iptables enforcer on a host whose `iptables` is iptables-legacy (x_tables, not
/// nf_tables), as on older distributions; Docker's chains stay iptables-nft's here, as the
/// two coexist in one kernel.
#[test]
fn iptables_legacy_bans_cover_host_services_and_published_ports() {
    if can_run("iptables_legacy_bans_cover_host_services_and_published_ports") {
        bans_cover_host_services_and_published_ports("iptables-legacy", "kl");
    }
}

fn bans_cover_host_services_and_published_ports(variant: &str, tag: &str) {
    let lab = Lab::build(tag);
    let (w, h) = (lab.wan().to_string(), lab.host().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bin = dir.join("bin");
    let enforcer = if variant == "iptables-legacy" {
        std::fs::create_dir(&bin).unwrap();
        for prog in ["iptables", "ip6tables"] {
            let legacy = format!("/usr/sbin/{prog}-legacy");
            assert!(
                Path::new(&legacy).exists(),
                "{legacy} (Debian's iptables package)"
            );
            std::os::unix::fs::symlink(legacy, bin.join(prog)).unwrap();
        }
        "iptables"
    } else {
        variant
    };
    std::fs::write(dir.join("access.log"), "").unwrap();
    std::fs::write(dir.join("auth.log"), "").unwrap();
    std::fs::write(
        dir.join("moat.toml"),
        format!("[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\n\n[enforce]\nuse = [\"{enforcer}\"]\n\n\
         [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 2\n\n\
         [jails.ssh]\nfilter = \"sshd\"\nsources = [\"auth.log\"]\nports = [2222, \"60000-60010/udp\"]\n"),
    )
    .unwrap();
    let (attacker, legit) = (ip("192.0.2.100"), ip("192.0.2.200"));
    let (service, published) = (sa("192.0.2.1:2222"), sa("192.0.2.1:8080"));
    let service6 = sa("[2001:db8:1::1]:2223");
    let (a6, a6b, l6) = (
        ip("2001:db8:a::1"),
        ip("2001:db8:a::2"),
        ip("2001:db8:b::1"),
    );
    for (from, to) in [
        (attacker, service),
        (attacker, published),
        (legit, service),
        (legit, published),
        (a6, service6),
        (l6, service6),
    ] {
        assert!(reaches(&w, from, to), "before any ban, {from} reaches {to}");
    }
    let mut moat = Moat::start_with_path(&h, dir, bin.exists().then_some(bin.as_path()));

    // A ban from the log: two failed logins.
    for _ in 0..2 {
        let line = format!(
            "192.0.2.100 - - [{}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"x\"\n",
            jiff::Timestamp::now().strftime("%d/%b/%Y:%H:%M:%S +0000")
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("access.log"))
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
    eventually(5, "the attacker is dropped", || {
        !reaches(&w, attacker, service)
    });
    assert!(
        !reaches(&w, attacker, published),
        "the published port is covered too"
    );
    assert!(
        reaches(&w, legit, service) && reaches(&w, legit, published),
        "the legitimate client is not"
    );
    let table = if enforcer == "nftables" {
        ns_run(&h, "nft list table inet moat")
    } else {
        ns_run(&h, "ipset list moat-ban4")
    };
    assert!(table.contains("192.0.2.100 timeout"), "{table}");
    // Nothing else was touched: Docker's chains are still there.
    let nat = ns_run(&h, "iptables -t nat -S DOCKER");
    assert!(nat.contains("DNAT"), "{nat}");
    if variant == "iptables-legacy" {
        let raw = ns_run(&h, "iptables-legacy -t raw -S PREROUTING");
        assert!(
            raw.contains("moat-ban4"),
            "moat's rule is iptables-legacy's: {raw}"
        );
    }

    // IPv6: a /64 ban catches the attacker's rotated address.
    moat.must(&["ban", "2001:db8:a::/64", "--for", "1h"]);
    eventually(5, "the /64 is dropped", || !reaches(&w, a6, service6));
    assert!(!reaches(&w, a6b, service6), "a rotated address in the /64");
    assert!(reaches(&w, l6, service6), "another /64 still reaches");

    // Unban restores access.
    moat.must(&["unban", "192.0.2.100"]);
    eventually(5, "the unbanned client is back", || {
        reaches(&w, attacker, service) && reaches(&w, attacker, published)
    });

    // A jail with `ports` bans only there: the host service on 2222, not the published 8080;
    // the same client banned on every port by another jail is held apart and lifted apart.
    moat.must(&["ban", "192.0.2.100", "--jail", "ssh", "--for", "1h"]);
    eventually(5, "dropped on the jail's port", || {
        !reaches(&w, attacker, service)
    });
    assert!(reaches(&w, attacker, published), "other ports stay open");
    moat.must(&["ban", "192.0.2.100", "--jail", "portainer", "--for", "1h"]);
    eventually(5, "dropped everywhere", || {
        !reaches(&w, attacker, published)
    });
    moat.must(&["unban", "192.0.2.100", "--jail", "portainer"]);
    eventually(5, "the every-port ban lifted", || {
        reaches(&w, attacker, published)
    });
    assert!(!reaches(&w, attacker, service), "the port ban holds");
    moat.must(&["unban", "192.0.2.100"]);
    eventually(5, "both lifted", || reaches(&w, attacker, service));

    // A ban that ends while moat runs, its element already gone from the kernel (as when the
    // kernel's timeout ends it first): lifting it is no failure and no repair.
    moat.must(&["ban", "198.51.100.77", "--for", "2s"]);
    eventually(5, "the short ban is in the kernel", || {
        let held = if enforcer == "nftables" {
            ns_run(&h, "nft list set inet moat ban4")
        } else {
            ns_run(&h, "ipset list moat-ban4")
        };
        held.contains("198.51.100.77")
    });
    if enforcer == "nftables" {
        ns_run(&h, "nft delete element inet moat ban4 '{ 198.51.100.77 }'");
    } else {
        ns_run(&h, "ipset del moat-ban4 198.51.100.77");
    }
    eventually(5, "moat lifted the short ban", || {
        !moat.must(&["bans"]).contains("198.51.100.77")
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = moat.must(&["status", "--json"]);
    assert!(
        status.contains("\"failed\": 0") && status.contains("\"repairs\": 0"),
        "{status}"
    );
    assert!(!moat.log().contains("batch failed"), "{}", moat.log());

    // `nft flush ruleset` is healed within 5 s (Docker's rules are gone too, so only the host
    // service is checked). With iptables-nft it removes the raw rules as well; the ipsets
    // are not nftables objects and are destroyed by hand.
    moat.must(&["ban", "192.0.2.100", "--for", "1h"]);
    eventually(5, "banned again", || !reaches(&w, attacker, service));
    ns_run(&h, "nft flush ruleset");
    if enforcer == "iptables" {
        // (moat's rule is in iptables-nft's raw table, which the flush removed, or in
        // iptables-legacy's, which it did not.)
        ns_run(&h, "iptables-legacy -t raw -F PREROUTING 2>/dev/null; ip6tables-legacy -t raw -F PREROUTING 2>/dev/null; \
                     ipset destroy moat-ban4; ipset destroy moat-ban6");
    }
    assert!(reaches(&w, attacker, service), "the flush lifted the ban");
    let t0 = Instant::now();
    eventually(6, "the table is restored", || {
        !reaches(&w, attacker, service)
    });
    assert!(t0.elapsed() < Duration::from_secs(6));
    assert!(reaches(&w, legit, service));
    let status = moat.must(&["status", "--json"]);
    assert!(
        status.contains("\"repairs\": 1") || status.contains("\"repairs\": 2"),
        "{status}"
    );
    assert!(moat.log().contains("restoring"), "{}", moat.log());

    // Kernel-side timeouts: a 2 s ban ends even with moat stopped, and stopping moat leaves
    // the other bans in place.
    moat.must(&["unban", "192.0.2.100"]);
    moat.must(&["ban", "192.0.2.100", "--for", "2s"]);
    eventually(5, "the short ban", || !reaches(&w, attacker, service));
    moat.stop();
    assert!(!reaches(&w, a6, service6), "bans stay when moat stops");
    eventually(6, "the kernel expired the ban", || {
        reaches(&w, attacker, service)
    });
}

#[test]
fn a_hundred_thousand_bans_and_packets_still_decide_right() {
    if !can_run("a_hundred_thousand_bans_and_packets_still_decide_right") {
        return;
    }
    let lab = Lab::build("b");
    let (w, h) = (lab.wan().to_string(), lab.host().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 100,000 clients in 2001:db8:c::/48 (one ban each, /128) plus the attacker, from the log.
    let mut text = String::with_capacity(100_001 * 110);
    let stamp = jiff::Timestamp::now()
        .strftime("%d/%b/%Y:%H:%M:%S +0000")
        .to_string();
    for n in 0..100_000u32 {
        text.push_str(&format!(
            "2001:db8:c::{:x}:{:x} - - [{stamp}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"x\"\n",
            n >> 16,
            n & 0xffff
        ));
    }
    text.push_str(&format!(
        "192.0.2.100 - - [{stamp}] \"POST /api/auth HTTP/1.1\" 422 52 \"-\" \"x\"\n"
    ));
    std::fs::write(dir.join("access.log"), text).unwrap();
    std::fs::write(
        dir.join("moat.toml"),
        "[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\nfollow_from = \"start\"\n\n[enforce]\nuse = [\"nftables\"]\n\n\
         [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 1\nipv6_prefix = 128\nmax_clients = 200000\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let mut moat = Moat::start(&h, dir);
    // The attacker's line is the last: once it is dropped, every ban before it is in.
    eventually(120, "the last ban", || {
        !reaches(&w, ip("192.0.2.100"), sa("192.0.2.1:2222"))
    });
    eprintln!(
        "100,001 bans read, recorded and in the kernel after {:?}",
        t0.elapsed()
    );
    let count = ns_run(
        &h,
        "nft -j list table inet moat | grep -o '\"2001:db8:c::' | wc -l",
    );
    assert_eq!(count.trim(), "100000");
    assert!(reaches(&w, ip("192.0.2.200"), sa("192.0.2.1:2222")));
    // Restart: the 100,001 active bans are re-applied in one batch.
    moat.stop();
    ns_run(&h, "nft delete table inet moat");
    let t0 = Instant::now();
    let _moat = Moat::start(&h, dir);
    eventually(10, "re-applied at start", || {
        !reaches(&w, ip("192.0.2.100"), sa("192.0.2.1:2222"))
    });
    eprintln!("100,001 bans re-applied at start in {:?}", t0.elapsed());
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{}", _moat.log());
    }
    assert!(reaches(&w, ip("192.0.2.200"), sa("192.0.2.1:2222")));
}

/// The same with a real Docker engine: a container published with `-p 8080:80` is cut off from
/// a banned client and from no one else, and comes back on unban.
#[test]
fn a_real_docker_published_port_is_banned_and_unbanned() {
    if !can_run("a_real_docker_published_port_is_banned_and_unbanned") {
        return;
    }
    let mut docker = match support::Dockerd::start("kd") {
        Ok(d) => d,
        Err(why) => {
            return support::skip("a_real_docker_published_port_is_banned_and_unbanned", &why)
        }
    };
    let wan = Netns::new(&["kdw"]);
    let (w, h) = (wan.0[0].clone(), docker.netns.clone());
    support::veth(&w, &h);
    ns_run(
        &w,
        "ip link set vw up; ip addr add 192.0.2.100/24 dev vw; ip addr add 192.0.2.200/24 dev vw",
    );
    ns_run(&h, "ip link set vh up; ip addr add 192.0.2.1/24 dev vh");
    docker.must(&[
        "run",
        "-d",
        "--name",
        "web",
        "--restart",
        "always",
        "-p",
        "8080:80",
        "moat-test/busybox:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/",
    ]);
    let (attacker, legit, web) = (ip("192.0.2.100"), ip("192.0.2.200"), sa("192.0.2.1:8080"));
    eventually(20, "the published port answers", || {
        support::http_reaches(&w, legit, web)
    });
    assert!(support::http_reaches(&w, attacker, web));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("moat.toml"),
        "[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\n\n[enforce]\nuse = [\"nftables\"]\n\n\
         [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("access.log"), "").unwrap();
    let moat = Moat::start(&h, dir);
    moat.must(&["ban", "192.0.2.100", "--for", "1h"]);
    eventually(5, "the banned client is cut off", || {
        !support::http_reaches(&w, attacker, web)
    });
    assert!(
        support::http_reaches(&w, legit, web),
        "the other client still reaches the container"
    );
    // Docker's own rules are untouched.
    let nat = ns_run(&h, "iptables -t nat -S DOCKER");
    assert!(
        nat.contains("--dport 8080") && nat.contains("DNAT"),
        "{nat}"
    );
    // Docker restarts (its chains flushed and rebuilt, the container started again): the
    // ban still holds, since nothing of Docker's touches moat's table.
    docker.restart().unwrap();
    assert_eq!(
        docker.log().matches("API listen on").count(),
        2,
        "{}",
        docker.log()
    );
    eventually(30, "the container answers again after the restart", || {
        support::http_reaches(&w, legit, web)
    });
    assert!(
        !support::http_reaches(&w, attacker, web),
        "the ban survives a Docker restart"
    );
    moat.must(&["unban", "192.0.2.100"]);
    eventually(5, "the unbanned client is back", || {
        support::http_reaches(&w, attacker, web)
    });
}

/// The seed scenario end to end: a real nginx in front of Portainer's login, bots guessing
/// passwords with curl from the internet, moat following nginx's access log with the built-in
/// `portainer` filter and banning in the kernel; the legitimate user logs in throughout.
#[test]
fn seed_scenario_nginx_portainer_and_a_password_guessing_bot() {
    const TEST: &str = "seed_scenario_nginx_portainer_and_a_password_guessing_bot";
    if !can_run(TEST) {
        return;
    }
    for p in ["nginx", "curl"] {
        if !Path::new(&format!("/usr/sbin/{p}")).exists()
            && !Path::new(&format!("/usr/bin/{p}")).exists()
        {
            return support::skip(
                TEST,
                &format!("{p} is not installed (apt-get install nginx-light curl)"),
            );
        }
    }
    let lab = Lab::build("s");
    let (w, h) = (lab.wan().to_string(), lab.host().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    support::serve_in_netns(&h, sa("127.0.0.1:9000"), support::answer_portainer_login);
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\n\
             http {{\n  access_log {d}/access.log combined;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{\n    listen 192.0.2.1:80;\n    location / {{ proxy_pass http://127.0.0.1:9000; }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("access.log"), "").unwrap();
    let _nginx = support::Nginx::start(Some(&h), &dir.join("nginx.conf"));
    let login = |from: &str, password: &str| -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &w,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "2",
                "--interface",
                from,
            ])
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(format!(
                "{{\"username\":\"admin\",\"password\":\"{password}\"}}"
            ))
            .arg("http://192.0.2.1/api/auth")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually(10, "nginx answers", || {
        login("192.0.2.200", "right") == "200"
    });
    std::fs::write(
        dir.join("moat.toml"),
        "[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\n\n[enforce]\nuse = [\"kernel\"]\n\n\
         [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\nmaxretry = 5\n",
    )
    .unwrap();
    let moat = Moat::start(&h, dir);
    // The bot guesses until its connections are dropped; the user keeps logging in.
    let mut answered = 0;
    for _ in 0..20 {
        let code = login("192.0.2.100", "guess");
        if code == "000" {
            break;
        }
        assert_eq!(code, "422");
        answered += 1;
        assert_eq!(
            login("192.0.2.200", "right"),
            "200",
            "the user logs in meanwhile"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        (5..=7).contains(&answered),
        "the bot got {answered} answers before its ban"
    );
    assert_eq!(
        login("192.0.2.100", "right"),
        "000",
        "banned, even with the right password"
    );
    assert_eq!(login("192.0.2.200", "right"), "200");
    let status = moat.must(&["status", "portainer"]);
    assert!(
        status.contains("192.0.2.100") && status.contains("Currently banned:  1"),
        "{status}"
    );
}

/// `[enforce] lift_on_stop = true`: stopping moat lifts its kernel bans; starting it again puts
/// them back from the ledger.
#[test]
fn lift_on_stop_lifts_and_a_restart_restores() {
    if !can_run("lift_on_stop_lifts_and_a_restart_restores") {
        return;
    }
    let lab = Lab::build("l");
    let (w, h) = (lab.wan().to_string(), lab.host().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("access.log"), "").unwrap();
    std::fs::write(
        dir.join("moat.toml"),
        "[daemon]\nstate_dir = \"state\"\nsocket = \"moat.sock\"\n\n[enforce]\nuse = [\"nftables\"]\nlift_on_stop = true\n\n\
         [jails.portainer]\nfilter = \"portainer\"\nsources = [\"access.log\"]\n",
    )
    .unwrap();
    let (attacker, service) = (ip("192.0.2.100"), sa("192.0.2.1:2222"));
    let mut moat = Moat::start(&h, dir);
    moat.must(&["ban", "192.0.2.100", "--for", "1h"]);
    eventually(5, "banned", || !reaches(&w, attacker, service));
    moat.stop();
    assert!(reaches(&w, attacker, service), "lifted at stop");
    let _moat = Moat::start(&h, dir);
    eventually(5, "banned again from the ledger", || {
        !reaches(&w, attacker, service)
    });
}

//! `moat init` on a host made for the purpose: a network namespace with a real nginx (a
//! Portainer-style site in front of a Portainer login stand-in, its access logs), a real
//! dockerd running containers named and imaged like Portainer and Vaultwarden (busybox
//! stand-ins tagged with those image names), an sshd log, and the admin logged in over SSH
//! (SSH_CONNECTION). The configuration init writes must validate and work as written: a bot's
//! failed logins through nginx get it banned in the kernel, a Vaultwarden failure read from
//! the container's output gets another banned, and the admin, guessing wrong just as often,
//! is never banned. And on a host with nothing to protect, init says so and writes nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::{eventually, ns_run, Dockerd, Moat, Netns};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// `moat init ...` inside `ns` with `env`; (exit code, stdout, stderr).
fn init(ns: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, MOAT, "init"])
        .args(args)
        .env_remove("SSH_CONNECTION")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_writes_a_configuration_that_bans_the_bot_and_never_the_admin() {
    const TEST: &str = "init_writes_a_configuration_that_bans_the_bot_and_never_the_admin";
    if !support::can_use_netfilter(TEST) {
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
    let docker = match Dockerd::start("inst-ih") {
        Ok(d) => d,
        Err(why) => return support::skip(TEST, &why),
    };
    let h = docker.netns.clone();
    let wan = Netns::new(&["inst-iw"]);
    let w = wan.0[0].clone();
    support::veth(&w, &h);
    // The internet: the bot (198.51.100.66), the Vaultwarden guesser (.67) and the admin
    // (.10) behind a router at 203.0.113.254; the host is 203.0.113.1 on its public interface.
    ns_run(
        &w,
        "ip link set vw up; ip addr add 203.0.113.254/24 dev vw; \
         ip addr add 198.51.100.66/32 dev lo; ip addr add 198.51.100.67/32 dev lo; \
         ip addr add 198.51.100.10/32 dev lo",
    );
    ns_run(
        &h,
        "ip link set vh up; ip addr add 203.0.113.1/24 dev vh; \
         ip route add default via 203.0.113.254",
    );

    // The host's files under a root of their own.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let r = root.display().to_string();
    for d in [
        "etc/nginx/sites-enabled",
        "etc/moat/conf.d",
        "var/log/nginx",
        "nginx",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/nginx/nginx.conf"),
        format!(
            "user root;\nworker_processes 1;\npid {r}/nginx/nginx.pid;\nerror_log {r}/var/log/nginx/error.log;\n\
             events {{}}\nhttp {{\n  access_log {r}/var/log/nginx/access.log;\n  client_body_temp_path {r}/nginx/body;\n  \
             proxy_temp_path {r}/nginx/proxy;\n  fastcgi_temp_path {r}/nginx/fcgi;\n  uwsgi_temp_path {r}/nginx/uwsgi;\n  \
             scgi_temp_path {r}/nginx/scgi;\n  include sites-enabled/*;\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/nginx/sites-enabled/portainer"),
        format!(
            "server {{\n  listen 203.0.113.1:80;\n  server_name portainer.example.com;\n  \
             access_log {r}/var/log/nginx/portainer.access.log;\n  \
             location / {{ proxy_pass http://127.0.0.1:9000; }}\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("var/log/auth.log"),
        "Dec  1 10:00:00 host sshd[100]: Accepted publickey for admin from 198.51.100.10 port 50022 ssh2\n",
    )
    .unwrap();
    // The package's default, as a fresh install leaves it: init replaces it.
    std::fs::write(
        root.join("etc/moat/moat.toml"),
        include_str!("../dist/moat.toml"),
    )
    .unwrap();
    support::serve_in_netns(
        &h,
        "127.0.0.1:9000".parse().unwrap(),
        support::answer_portainer_login,
    );
    let _nginx = support::Nginx::start(Some(&h), &root.join("etc/nginx/nginx.conf"));
    // Containers of known applications (busybox under their images' names), and one unknown.
    for image in ["portainer/portainer-ce:latest", "vaultwarden/server:latest"] {
        docker.must(&["tag", "moat-test/busybox:1", image]);
    }
    docker.must(&[
        "run",
        "-d",
        "--name",
        "portainer",
        "portainer/portainer-ce:latest",
        "sleep",
        "3600",
    ]);
    docker.must(&[
        "run",
        "-d",
        "--name",
        "vaultwarden",
        "-p",
        "8080:80",
        "vaultwarden/server:latest",
        "sleep",
        "3600",
    ]);
    docker.must(&[
        "run",
        "-d",
        "--name",
        "thing",
        "moat-test/busybox:1",
        "sleep",
        "3600",
    ]);

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
            ])
            .args(["--max-time", "2", "--interface", from])
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(format!(
                "{{\"username\":\"admin\",\"password\":\"{password}\"}}"
            ))
            .arg("http://203.0.113.1/api/auth")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eventually(10, "nginx answers", || {
        login("198.51.100.10", "right") == "200"
    });

    // moat init, as the admin would run it over SSH.
    let config = root.join("etc/moat/moat.toml");
    let c = config.display().to_string();
    let host = docker.host();
    let env = [
        ("SSH_CONNECTION", "198.51.100.10 50022 203.0.113.1 22"),
        ("DOCKER_HOST", host.as_str()),
    ];
    let (code, out, err) = init(&h, &env, &["--root", &r, "--config", &c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Jails: portainer, scanners, vaultwarden, sshd (4)"),
        "{out}"
    );
    assert!(out.contains("(it held the package's default)"), "{out}");
    assert!(
        out.contains("no filter for: thing (moat-test/busybox:1)"),
        "{out}"
    );
    assert!(
        out.contains("your SSH session comes from 198.51.100.10"),
        "{out}"
    );
    assert!(out.contains("moat scan -c"), "{out}");
    let text = std::fs::read_to_string(&config).unwrap();
    for want in [
        "use = [\"nftables\"]".to_string(),
        "\"198.51.100.10\",  # your SSH session".to_string(),
        "\"203.0.113.0/24\",  # this host's network on vh".to_string(),
        format!("[jails.portainer]\nfilter = \"portainer\"\nsources = [\"{r}/var/log/nginx/portainer.access.log\"]"),
        "[jails.vaultwarden]\nfilter = \"vaultwarden\"\nsources = [\"docker:vaultwarden\"]\ntimezone = \"UTC\"".to_string(),
        format!("[jails.sshd]\nfilter = \"sshd\"\nsources = [\"{r}/var/log/auth.log\"]"),
        "# interfaces = [\"vh\"]".to_string(),
        "#   80/tcp: nginx".to_string(),
        "{ ports = [\"22/tcp\"], from = [\"198.51.100.10\"] }".to_string(),
        "#   8080/tcp: container vaultwarden".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("thing"), "{text}");

    // It validates, as moat check-config sees it.
    let check = Command::new(MOAT)
        .args(["check-config", "-c", &c])
        .env("DOCKER_HOST", &host)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("OK, 4 jails"),
        "{said}"
    );

    // An edited file is not replaced without --force; --dry-run shows the same proposal.
    std::fs::write(&config, format!("{text}\n# edited\n")).unwrap();
    let (code, out, err) = init(&h, &env, &["--root", &r, "--config", &c]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("not replacing it"), "{err}");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .ends_with("# edited\n"));
    let (code, dry, _) = init(&h, &env, &["--root", &r, "--config", &c, "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(dry, text, "--dry-run prints what init writes");
    let (code, out, err) = init(&h, &env, &["--root", &r, "--config", &c, "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("the previous one is"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(root.join("etc/moat"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("moat.toml.bak-")
        })
        .collect();
    assert_eq!(kept.len(), 1);

    // Run it as written; a drop-in only keeps the state and socket in the test's directory.
    std::fs::write(
        root.join("etc/moat/conf.d/test.toml"),
        format!(
            "[daemon]\nstate_dir = \"{}\"\nsocket = \"{}\"\n",
            tmp.path().join("state").display(),
            tmp.path().join("moat.sock").display()
        ),
    )
    .unwrap();
    let moat = Moat::start_with_env(&h, &root.join("etc/moat"), None, &[("DOCKER_HOST", &host)]);

    // The admin mistypes more often than maxretry: never banned.
    for _ in 0..7 {
        assert_eq!(login("198.51.100.10", "wrong"), "422");
    }
    // The bot guesses until its connections are dropped.
    let mut answered = 0;
    for _ in 0..20 {
        let code = login("198.51.100.66", "guess");
        if code == "000" {
            break;
        }
        assert_eq!(code, "422");
        answered += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        (5..=7).contains(&answered),
        "the bot got {answered} answers before its ban\n{}",
        moat.log()
    );
    assert_eq!(
        login("198.51.100.66", "right"),
        "000",
        "banned in the kernel"
    );
    assert_eq!(
        login("198.51.100.10", "right"),
        "200",
        "the admin still logs in"
    );
    let table = ns_run(&h, "nft list table inet moat");
    assert!(table.contains("198.51.100.66"), "{table}");
    assert!(!table.contains("198.51.100.10"), "{table}");

    // Vaultwarden's failures, read from the container's output through the Docker API.
    let stamp = "$(date -u '+%Y-%m-%d %H:%M:%S')";
    let line = format!(
        "[{stamp}.000][vaultwarden::api::identity][ERROR] Username or password is incorrect. \
         Try again. IP: 198.51.100.67. Username: x."
    );
    eventually(
        30,
        "the vaultwarden jail bans from the container's log",
        || {
            docker.must(&[
                "exec",
                "vaultwarden",
                "sh",
                "-c",
                &format!("echo \"{line}\" > /proc/1/fd/1"),
            ]);
            std::thread::sleep(Duration::from_millis(300));
            ns_run(&h, "nft list set inet moat ban4").contains("198.51.100.67")
        },
    );
    let status = moat.must(&["status", "vaultwarden"]);
    assert!(status.contains("198.51.100.67"), "{status}");
    let status = moat.must(&["status", "portainer"]);
    assert!(
        status.contains("198.51.100.66") && !status.contains("198.51.100.10"),
        "{status}"
    );
}

#[test]
fn init_on_a_host_with_nothing_to_protect_says_so_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let config = root.join("etc/moat/moat.toml");
    let no_docker = format!("unix://{}/docker.sock", tmp.path().display());
    let out = Command::new(MOAT)
        .args(["init", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(&config)
        .env("DOCKER_HOST", &no_docker)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Nothing to protect was found"), "{err}");
    assert!(err.contains("Nothing written"), "{err}");
    assert!(err.contains("Docker: not reachable"), "{err}");
    assert!(err.contains("SSH: no sshd log"), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        !config.exists() && !root.join("etc").exists(),
        "nothing written"
    );
    // The same with --dry-run: nothing on standard output either.
    let out = Command::new(MOAT)
        .args(["init", "--dry-run", "--root"])
        .arg(&root)
        .env("DOCKER_HOST", &no_docker)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

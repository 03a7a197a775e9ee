//! Shared by the integration tests: skipping with a reason (a failure under
//! MOAT_TEST_STRICT=1, which CI sets), and a real Docker engine in a network namespace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || Path::new(program).is_file()
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
        let run = dir.path();
        let log = std::fs::File::create(run.join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: the latter mounts a fresh /sys that hides the cgroup
        // mounts dockerd needs.
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{netns}"))
            .arg("dockerd")
            .arg(format!("--host=unix://{}/docker.sock", run.display()))
            .arg(format!("--data-root={}/data", run.display()))
            .arg(format!("--exec-root={}/exec", run.display()))
            .arg(format!("--pidfile={}/docker.pid", run.display()))
            .args([
                "--bip=198.18.0.1/24",
                "--iptables=true",
                "--storage-driver=vfs",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let d = Dockerd {
            netns,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["info"]).status.success() {
            if Instant::now() > deadline {
                return Err(format!("dockerd did not come up:\n{}", d.log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        d.import_busybox()?;
        Ok(d)
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
        for applet in ["sh", "httpd", "nc", "echo", "sleep", "date", "cat", "seq"] {
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
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

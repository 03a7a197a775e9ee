//! The Debian package, end to end on the machine itself: built by `scripts/package` (from this
//! test run's own binary, so no release build), checked by lintian, installed with dpkg,
//! `moat --version`, `man moat`, the bash completion, `systemd-analyze verify` on the units,
//! the default configuration, an upgrade that keeps a modified conffile, removal, and a purge
//! that leaves nothing behind.
//!
//! This installs into the real root filesystem, which is acceptable on CI's fresh machine; a
//! drop guard purges the package whatever happens, so no `/usr/bin/moat` from the package is
//! left for other tests (they run `target/debug/moat`). Root only; refused (skipped with the
//! reason) where a `moat` package or a `/usr/bin/moat` of someone else's is already there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{have, is_root, skip, text};

const TEST: &str = "the_debian_package_installs_upgrades_and_purges_clean";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// dpkg, waiting while another dpkg or apt holds the lock (others share this machine).
fn dpkg(args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        if out.status.success() {
            return t;
        }
        assert!(
            t.contains("lock") && Instant::now() < deadline,
            "dpkg {args:?}: {t}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn status() -> String {
    String::from_utf8_lossy(&run("dpkg-query", &["-W", "-f=${Status} ${Version}", "moat"]).stdout)
        .into_owned()
}

/// Purges the package when the test ends, however it ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if !status().is_empty() {
            let _ = Command::new("dpkg")
                .args(["--purge", "moat"])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// Every path whose name contains "moat" where a package puts things.
fn moat_paths() -> Vec<String> {
    let out = run(
        "find",
        &[
            "/etc",
            "/usr/bin",
            "/usr/sbin",
            "/usr/share/man",
            "/usr/share/doc",
            "/usr/share/bash-completion",
            "/usr/share/zsh",
            "/usr/share/fish",
            "/usr/lib/systemd",
            "/lib/systemd",
            "/var/lib/moat",
            "/var/lib/systemd",
            "/var/lib/dpkg/info",
            "/run/moat",
            "-name",
            "*moat*",
        ],
    );
    let mut paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    paths.sort();
    paths
}

/// `scripts/package` on this run's binary, with its own target directory.
fn build(dir: &Path, revision: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = dir.join(format!("out-{revision}"));
    let out = Command::new(root.join("scripts/package"))
        .args(["--fast", "--output"])
        .arg(&out_dir)
        .env("MOAT_BINARY", env!("CARGO_BIN_EXE_moat"))
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env("DEB_REVISION", revision)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/package: {}", text(&out));
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("moat_{}-{revision}_", env!("CARGO_PKG_VERSION"))),
        "{}",
        deb.display()
    );
    deb
}

fn cargo_deb_found() -> bool {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/cargo-deb");
    tools.is_file() || have("cargo-deb")
}

#[test]
fn the_debian_package_installs_upgrades_and_purges_clean() {
    if !is_root() {
        return skip(TEST, "needs root to install a package with dpkg");
    }
    for p in ["dpkg", "dpkg-shlibdeps", "lintian", "man", "bash", "strip"] {
        if !have(p) {
            return skip(
                TEST,
                &format!("{p} is not installed (apt-get install dpkg-dev lintian man-db binutils)"),
            );
        }
    }
    if !cargo_deb_found() {
        return skip(
            TEST,
            "cargo-deb is not installed (scripts/test installs it into target/tools)",
        );
    }
    if !status().is_empty() {
        return skip(
            TEST,
            "a moat package is installed here already; not touching it",
        );
    }
    if Path::new("/usr/bin/moat").exists() {
        return skip(
            TEST,
            "/usr/bin/moat exists and is no package's; not replacing it",
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let first = build(tmp.path(), "1");
    let second = build(tmp.path(), "2");
    eprintln!("two packages built in {:?}", t0.elapsed());

    // lintian: no errors (warnings such as "initial upload closes no bugs" concern Debian's
    // archive, not this package).
    let out = run("lintian", &[first.to_str().unwrap()]);
    let report = text(&out);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");

    let before = moat_paths();
    let _purge = Purge;
    dpkg(&["-i", first.to_str().unwrap()]);
    assert!(
        status().starts_with("install ok installed 0.1.0-1"),
        "{}",
        status()
    );

    let version = must("/usr/bin/moat", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("moat {}", env!("CARGO_PKG_VERSION"))
    );

    // The manual pages render, found by name as a user asks for them.
    for page in [&["moat"][..], &["moat-scan"], &["5", "moat.toml"]] {
        let out = Command::new("man")
            .args(page)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "man {page:?}: {}", text(&out));
        assert!(
            shown.contains("NAME") || shown.contains("N\u{8}NA"),
            "man {page:?}: {shown}"
        );
    }
    let page = must("sh", &["-c", "MANWIDTH=80 man moat | col -b"]);
    assert!(
        page.contains("moat-check-config(1)") && page.contains("moat.toml(5)"),
        "{page}"
    );

    // The bash completion loads and completes moat.
    let complete = must(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/moat && complete -p moat",
        ],
    );
    assert!(
        complete.contains("complete") && complete.trim_end().ends_with(" moat"),
        "{complete}"
    );
    let words = must(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/moat; COMP_WORDS=(moat che); \
             COMP_CWORD=1; COMP_LINE='moat che'; COMP_POINT=8; _moat moat che moat; \
             printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    );
    assert!(words.lines().any(|w| w == "check-config"), "{words}");
    for f in [
        "/usr/share/zsh/vendor-completions/_moat",
        "/usr/share/fish/vendor_completions.d/moat.fish",
    ] {
        assert!(Path::new(f).is_file(), "{f}");
    }

    // The units, as systemd reads them (where systemd-analyze exists).
    if have("systemd-analyze") {
        let out = run(
            "systemd-analyze",
            &[
                "verify",
                "/lib/systemd/system/moat.service",
                "/lib/systemd/system/moat-ports.service",
            ],
        );
        assert!(
            out.status.success() && text(&out).trim().is_empty(),
            "systemd-analyze verify: {}",
            text(&out)
        );
    } else {
        eprintln!("(systemd-analyze verify not run: systemd-analyze is not installed here)");
    }
    assert!(
        Path::new("/etc/systemd/system/multi-user.target.wants/moat.service").exists(),
        "moat.service is enabled"
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/moat-ports.service").exists(),
        "moat-ports.service is not (it is the alternative to the daemon)"
    );
    let meta = std::fs::metadata("/var/lib/moat").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // The default configuration is valid and says it protects nothing yet.
    let out = run("/usr/bin/moat", &["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("/etc/moat/moat.toml: OK, 0 jails"), "{said}");
    assert!(
        said.contains("no enabled jails (3 with enabled = false)"),
        "{said}"
    );

    // Upgrade with a modified conffile: the admin's file stays.
    let conf = "/etc/moat/moat.toml";
    let mut edited = std::fs::read_to_string(conf).unwrap();
    edited.push_str("\n# edited by the package test\n");
    std::fs::write(conf, &edited).unwrap();
    dpkg(&["-i", second.to_str().unwrap()]);
    assert!(
        status().starts_with("install ok installed 0.1.0-2"),
        "{}",
        status()
    );
    assert_eq!(
        std::fs::read_to_string(conf).unwrap(),
        edited,
        "the conffile was kept"
    );
    assert!(!Path::new("/etc/moat/moat.toml.dpkg-new").exists());

    // Remove: the program goes, the configuration stays.
    let files: Vec<String> = dpkg(&["-L", "moat"])
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(str::to_string)
        .collect();
    dpkg(&["-r", "moat"]);
    assert!(!Path::new("/usr/bin/moat").exists());
    assert!(Path::new(conf).exists(), "remove keeps the conffile");
    assert!(
        status().starts_with("deinstall ok config-files"),
        "{}",
        status()
    );

    // Purge: nothing is left, neither the package's files nor what its scripts made.
    dpkg(&["-P", "moat"]);
    assert!(
        status().is_empty() || status().starts_with("unknown ok not-installed"),
        "{}",
        status()
    );
    let left: Vec<&String> = files
        .iter()
        .filter(|f| {
            let p = Path::new(f.as_str());
            // Shared directories (/usr, /etc, ...) stay, of course; the package's own go.
            p.exists()
                && !(p.is_dir() && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()))
        })
        .collect();
    assert!(left.is_empty(), "left by the purge: {left:?}");
    let after = moat_paths();
    let new: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.is_empty(), "left by the purge: {new:?}");
    assert!(!Path::new("/var/lib/moat").exists() && !Path::new("/etc/moat").exists());
    eprintln!("package test done in {:?}", t0.elapsed());
}

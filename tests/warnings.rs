//! A valid configuration that would leave the user lost: `moat check-config` says so on
//! standard error (and still exits 0), and `moat run` logs the same warnings as it starts.

use std::process::Command;

mod support;
use support::{eventually, write_config, Daemon};

const MOAT: &str = env!("CARGO_BIN_EXE_moat");

const BODY: &str = "[jails.web]\nfilter = \"portainer\"\nsources = [\"not-yet.log\"]\n\n\
                    [jails.vault]\nfilter = \"vaultwarden\"\nsources = [\"docker:vw\"]\n";

#[test]
fn check_config_and_run_warn_about_a_configuration_that_protects_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir, BODY);
    let no_docker = format!("unix://{}/docker.sock", dir.display());
    let out = Command::new(MOAT)
        .args(["check-config", "-c"])
        .arg(dir.join("moat.toml"))
        .env("DOCKER_HOST", &no_docker)
        .output()
        .unwrap();
    assert!(out.status.success(), "warnings are not errors");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK, 2 jails"));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "moat: warning: no enforcer blocks traffic",
        "not-yet.log does not exist yet",
        "written \"not-yet.log\", relative to the configuration's directory",
        "Docker is unreachable",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }

    let d = Daemon::start_with(dir, &[("DOCKER_HOST", &no_docker)]);
    eventually(10, "the daemon logs the warnings", || {
        let log = d.log();
        log.contains("no enforcer blocks traffic") && log.contains("Docker is unreachable")
    });
    d.stop();

    // Nothing at all: both said.
    std::fs::write(dir.join("empty.toml"), "").unwrap();
    let out = Command::new(MOAT)
        .args(["check-config", "-c"])
        .arg(dir.join("empty.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no enforcer blocks traffic"), "{err}");
    assert!(err.contains("no jails: moat watches no log"), "{err}");
}

//! Snapshots of `moat scan`'s reports on the bundled example: the layout people read and the
//! JSON that scripts parse are both part of the interface.

use std::path::PathBuf;

use moat::config::Config;
use moat::scan::{self, report, ScanOptions};
use moat::source::Input;

fn example_report() -> scan::ScanReport {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::load(&root.join("examples/moat.toml")).unwrap();
    for j in &mut config.jails {
        // Times in the example carry offsets; pin the zone anyway so nothing depends on the
        // machine.
        j.zone = moat::config::value::ZoneSpec::Named("UTC".into());
    }
    let inputs = vec![Input::File(PathBuf::from("examples/access.log"))];
    let reads = vec![vec![0, 1]];
    std::env::set_current_dir(&root).unwrap();
    scan::run(
        config.jails,
        &inputs,
        &reads,
        ScanOptions {
            missed_samples: 3,
            now: "2026-11-22T00:00:00Z".parse().unwrap(),
            progress: None,
        },
    )
    .unwrap()
}

#[test]
fn text_report() {
    let r = example_report();
    insta::assert_snapshot!(report::text(
        &r,
        &report::TextOptions {
            max_bans: 50,
            timing: false
        }
    ));
}

#[test]
fn json_report() {
    let r = example_report();
    insta::assert_snapshot!(report::json(&r));
}

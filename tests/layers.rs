//! The layer map of `src/lib.rs`, enforced: a module may use the modules of the layers below
//! its own, never one above nor one beside it. A `use crate::...` that runs upward or sideways
//! fails this test, naming the file and the line.
//!
//! Unit tests (`#[cfg(test)]` modules) may reach anything; they are not checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom up. Keep in step with the Layout section of `src/lib.rs`.
const LAYERS: &[&[&str]] = &[
    &["vocab"],
    &["source", "detect", "jail"],
    &["pipeline"],
    &["ledger"],
    &["netfilter"],
    &["enforce", "ports"],
    &["cluster"],
    &["config"],
    &["daemon", "scan", "init"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules of this crate a file's code (not its unit tests) names with `crate::`, with
/// the line numbers.
fn uses(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((name, n + 1));
            }
        }
    }
    found
}

#[test]
fn imports_run_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            wrong.push(format!(
                "{}: module {module} is in no layer of tests/layers.rs (and src/lib.rs)",
                rel.display()
            ));
            continue;
        };
        *seen.entry(module.clone()).or_default() += 1;
        let text = std::fs::read_to_string(file).unwrap();
        for (used, line) in uses(&text) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(l) if l < own => {}
                Some(l) => wrong.push(format!(
                    "{}:{line}: {module} (layer {own}) uses {used} (layer {l}): {}",
                    rel.display(),
                    if l == own { "beside it" } else { "above it" }
                )),
                None => wrong.push(format!(
                    "{}:{line}: {module} uses crate::{used}, which is in no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer map:\n{}",
        wrong.join("\n")
    );
    // The check looked at the code it means to.
    assert!(seen.len() >= 10, "{seen:?}");
}

#[test]
fn the_check_sees_an_upward_import() {
    let text = "use crate::vocab::Target;\nuse crate::daemon::Shared; // upward\n#[cfg(test)]\nmod tests { use crate::cli::x; }\n";
    assert_eq!(
        uses(text),
        [("vocab".to_string(), 1), ("daemon".to_string(), 2)]
    );
}

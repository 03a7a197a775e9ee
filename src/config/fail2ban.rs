//! The thin I/O layer under [`crate::detect::fail2ban`]: fail2ban's configuration files read
//! from a directory (`/etc/fail2ban` by default), handed to the pure reader.

use std::path::Path;

use std::sync::Arc;

use crate::detect::fail2ban::adapter::Fail2banSpec;
use crate::detect::fail2ban::reader::{self, ConfigFiles, FilterLocation, ReadError};
use crate::detect::fail2ban::{Fail2banFilter, FilterDefinition};

/// The fail2ban configuration directory when none is configured.
pub const DEFAULT_DIR: &str = "/etc/fail2ban";

/// The real file system.
pub struct FsFiles;

impl ConfigFiles for FsFiles {
    fn read(&self, path: &str) -> Option<Result<String, String>> {
        match std::fs::read(path) {
            Ok(bytes) => Some(String::from_utf8(bytes).map_err(|e| {
                format!("not UTF-8 (fail2ban reads its configuration as UTF-8): {e}")
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // A directory where a file is expected, as Python's open() would fail on it.
            Err(_) if Path::new(path).is_dir() => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    fn list(&self, dir: &str, suffix: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
            .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
            .collect();
        found.sort();
        found
    }
}

/// Reads the filter named by `spec`: a name in `dir/filter.d` (`sshd`), or a path, each with
/// options (`sshd[mode=aggressive]`). `jail` are the options of the jail it runs in.
pub fn load_filter(
    dir: &Path,
    spec: &str,
    jail: &[(String, String)],
) -> Result<FilterDefinition, ReadError> {
    let (name, options) = reader::split_options(spec).map_err(ReadError::Other)?;
    let location = FilterLocation::of(&name, &dir.display().to_string());
    let location = match location {
        // A relative path is relative to where moat runs, as for fail2ban-regex.
        FilterLocation::File { path } if !path.starts_with('/') => FilterLocation::File {
            path: std::env::current_dir()
                .map(|d| d.join(&path).display().to_string())
                .unwrap_or(path),
        },
        other => other,
    };
    reader::read_filter(&FsFiles, &location, &options, jail)
}

/// Reads and compiles a fail2ban filter for a jail; the message names the file, the line,
/// the regex and what stands in the way.
pub fn compile_filter(
    dir: &Path,
    spec: &str,
    jail: &[(String, String)],
) -> Result<Fail2banSpec, String> {
    let definition = load_filter(dir, spec, jail).map_err(|e| e.to_string())?;
    // fail2ban accepts %ExY years up to three years ahead of the current one.
    let year = jiff::Zoned::now().year();
    let filter = Fail2banFilter::compile(definition, year).map_err(|e| {
        let construct = e
            .construct
            .as_deref()
            .map(|c| format!(" (construct: {c})"))
            .unwrap_or_default();
        format!("{e}{construct}")
    })?;
    Ok(Fail2banSpec(Arc::new(filter)))
}

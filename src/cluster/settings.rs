//! `[cluster]`: where the fleet's Redis is, who this node is, and what it shares, with every
//! default in one place. Checked as the configuration is read; the password file is read
//! (and refused when others may read it) when the daemon starts.

use std::path::PathBuf;

use serde::Deserialize;

use crate::vocab::time::Duration;

/// The shared log's length when none is configured: about 100,000 decisions.
pub const DEFAULT_LOG_MAX_LEN: u64 = 100_000;
/// The shared log's age when none is configured: a week.
pub const DEFAULT_LOG_MAX_AGE_SECS: i64 = 7 * 86_400;

/// `[cluster]` as written, defaults filled in.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `redis://host:port/db` or `rediss://` (TLS). With `sentinels`, only its database
    /// number and TLS scheme count.
    pub redis: String,
    /// The Redis ACL user (`AUTH username password`).
    pub username: Option<String>,
    /// A file holding the password, readable by its owner only.
    pub password_file: Option<PathBuf>,
    /// This node's name in the fleet (default: the host name).
    pub node: Option<String>,
    /// The jails whose bans this node publishes (default: every jail); bans by hand are
    /// always published.
    pub share: Option<Vec<String>>,
    /// Whether this node's jails' `ignore` lists hold for bans from other nodes.
    #[serde(default = "yes")]
    pub ignore_remote: bool,
    /// Redis Sentinel: `host:port` of each sentinel; the master is asked of them.
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// The master's name the sentinels know (with `sentinels`).
    pub master_name: Option<String>,
    /// The shared log is trimmed to about this many decisions.
    #[serde(default = "default_log_max_len")]
    pub log_max_len: u64,
    /// ... and of decisions older than this.
    #[serde(default = "default_log_max_age")]
    pub log_max_age: Duration,
}

fn yes() -> bool {
    true
}

fn default_log_max_len() -> u64 {
    DEFAULT_LOG_MAX_LEN
}

fn default_log_max_age() -> Duration {
    Duration(jiff::SignedDuration::from_secs(DEFAULT_LOG_MAX_AGE_SECS))
}

/// The longest node name: it is part of every fleet-wide ban id and key.
pub const NODE_NAME_MAX: usize = 64;

/// Whether `name` can name a node or a jail in the fleet: 1 to 64 ASCII letters, digits,
/// `-`, `_` or `.` (nothing a terminal, a Redis key pattern or a shell would read).
pub fn valid_name(name: &str) -> bool {
    crate::vocab::names::is_plain_name(name, NODE_NAME_MAX)
}

impl ClusterSettings {
    /// Checks what can be checked without reading files or the network.
    pub fn check(&self) -> Result<(), String> {
        let scheme = self.redis.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err(format!(
                "[cluster] redis = {:?} is not a Redis URL; hint: \"redis://192.0.2.5:6379/0\" \
                 or \"rediss://\" for TLS",
                self.redis
            ));
        }
        if redis::parse_redis_url(&self.redis).is_none() {
            return Err(format!(
                "[cluster] redis = {:?} is not a valid URL",
                self.redis
            ));
        }
        if self.redis.contains('@') {
            return Err(
                "[cluster] redis: put no password in the URL (it would show in \
                        `moat status` and logs); hint: username and password_file"
                    .into(),
            );
        }
        if let Some(n) = &self.node {
            if !valid_name(n) {
                return Err(format!(
                    "[cluster] node = {n:?}: 1 to {NODE_NAME_MAX} letters, digits, '-', '_' or '.'"
                ));
            }
        }
        if let Some(u) = &self.username {
            if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "[cluster] username = {u:?} is not a Redis user name"
                ));
            }
        }
        if self.sentinels.is_empty() != self.master_name.is_none() {
            return Err(
                "[cluster] sentinels and master_name go together; hint: sentinels = \
                        [\"192.0.2.5:26379\"], master_name = \"mymaster\""
                    .into(),
            );
        }
        for s in &self.sentinels {
            if !s.contains(':') {
                return Err(format!(
                    "[cluster] sentinels: {s:?} is not host:port; hint: \"192.0.2.5:26379\""
                ));
            }
        }
        if self.log_max_len < 100 {
            return Err("[cluster] log_max_len: at least 100".into());
        }
        if self.log_max_age.0 < jiff::SignedDuration::from_secs(60) {
            return Err("[cluster] log_max_age: at least 1m".into());
        }
        Ok(())
    }

    /// This node's name: `node`, or the host name (cut to a valid name).
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        // The kernel's host name (of the UTS namespace moat runs in).
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        crate::vocab::names::plain_name_of(&host, NODE_NAME_MAX, "node")
    }

    /// Whether bans of `jail` are published (`manual`: whether the ban was made by hand).
    pub fn shares(&self, jail: &str, manual: bool) -> bool {
        manual
            || self
                .share
                .as_ref()
                .is_none_or(|s| s.iter().any(|j| j == jail))
    }

    /// The password from `password_file`, if one is configured; refused when the file is
    /// readable by its group or others.
    pub fn password(&self) -> Result<Option<String>, String> {
        match &self.password_file {
            None => Ok(None),
            // The one reading of secret files, as the enforcers' (owner only, not empty).
            Some(p) => crate::enforce::read_secret(p).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn parse(text: &str) -> Result<ClusterSettings, String> {
        let s: ClusterSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    #[test]
    fn defaults_and_checks() {
        let s = parse("redis = \"redis://192.0.2.5:6379/0\"\nnode = \"node1\"\n").unwrap();
        assert!(s.ignore_remote);
        assert_eq!(s.log_max_len, DEFAULT_LOG_MAX_LEN);
        assert!(s.shares("anything", false));
        assert_eq!(s.node_name(), "node1");
        let s = parse("redis = \"rediss://192.0.2.5:6380\"\nshare = [\"sshd\"]\n").unwrap();
        assert!(s.shares("sshd", false) && !s.shares("web", false) && s.shares("web", true));
        assert!(valid_name(&s.node_name()));
        for bad in [
            "redis = \"http://192.0.2.5\"",
            "redis = \"192.0.2.5:6379\"",
            "redis = \"redis://u:secret@192.0.2.5\"",
            "redis = \"redis://192.0.2.5\"\nnode = \"a b\"",
            "redis = \"redis://192.0.2.5\"\nnode = \"\"",
            "redis = \"redis://192.0.2.5\"\nmaster_name = \"m\"",
            "redis = \"redis://192.0.2.5\"\nsentinels = [\"x\"]\nmaster_name = \"m\"",
            "redis = \"redis://192.0.2.5\"\nlog_max_len = 3",
            "redis = \"redis://192.0.2.5\"\ntypo = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut s = parse("redis = \"redis://192.0.2.5\"").unwrap();
        s.password_file = Some(p.clone());
        assert!(s
            .password()
            .unwrap_err()
            .contains("readable by its group or others"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(s.password().unwrap().as_deref(), Some("s3cret"));
    }
}

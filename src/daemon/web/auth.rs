//! Who may act on the dashboard: the token, the sessions it opens, and the checks on every
//! request that changes something (a session cookie, a CSRF token in a header, compared in
//! constant time, and an `Origin` naming this very server).
//!
//! The token lives in a file (`moat web token` makes it, mode 0600; a file others can read
//! is refused). It is read again at each login, so a token made or replaced while moat runs
//! counts at once. A login exchanges it for a session: a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie and a random CSRF token the page is given in a meta tag. The
//! checks themselves are pure functions, tested here.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use subtle::ConstantTimeEq;

/// The cookie that carries a session.
pub const COOKIE: &str = "moat_session";
/// The header a page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-moat-csrf";
/// Sessions kept at once; the oldest is forgotten first.
const MAX_SESSIONS: usize = 64;
/// How long a session lasts (the cookie's `Max-Age` says the same to the browser).
pub const SESSION_SECS: u64 = 12 * 3600;

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `n` random bytes from the kernel, as lowercase hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// There is none yet.
    #[error("{0}: no token yet (`moat web token` makes one)")]
    Missing(String),
    /// Its group or others may read it.
    #[error("{path}: others can read it (mode {mode:o}); `chmod 600 {path}`")]
    Readable {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// It cannot be read or written, or holds no token.
    #[error("{0}")]
    Io(String),
}

/// Reads the token in `path`, refusing a file its group or others can read.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TokenError::Missing(shown))
        }
        Err(e) => return Err(TokenError::Io(format!("{shown}: {e}"))),
    };
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Readable { path: shown, mode });
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| TokenError::Io(format!("{shown}: {e}")))?;
    let token = text.trim().to_string();
    if token.len() < 16 {
        return Err(TokenError::Io(format!(
            "{shown}: the token is shorter than 16 characters"
        )));
    }
    Ok(token)
}

/// The token in `path`, made (32 random bytes, mode 0600) when there is none.
pub fn ensure_token(path: &Path) -> Result<String, TokenError> {
    match read_token(path) {
        Err(TokenError::Missing(_)) => {}
        other => return other,
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| TokenError::Io(format!("{}: {e}", dir.display())))?;
    }
    let token = random_hex(32).map_err(|e| TokenError::Io(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TokenError::Io(format!("{}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())
        .map_err(|e| TokenError::Io(format!("{}: {e}", path.display())))?;
    // create_new honours the umask; make sure of 0600 whatever it was.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| TokenError::Io(format!("{}: {e}", path.display())))?;
    Ok(token)
}

/// A logged-in browser.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    csrf: String,
    opened: std::time::Instant,
}

/// The token file and the sessions it opened.
#[derive(Debug)]
pub struct Auth {
    token_file: PathBuf,
    sessions: Mutex<VecDeque<Session>>,
}

impl Auth {
    /// Sessions opened with the token in `token_file`.
    pub fn new(token_file: PathBuf) -> Auth {
        Auth {
            token_file,
            sessions: Mutex::default(),
        }
    }

    /// The token file.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// Opens a session when `given` is the token: its (cookie id, CSRF token).
    pub fn login(&self, given: &str) -> Result<(String, String), String> {
        let token = read_token(&self.token_file).map_err(|e| e.to_string())?;
        if !same_secret(given.trim(), &token) {
            return Err("wrong token".into());
        }
        let session = Session {
            id: random_hex(32).map_err(|e| e.to_string())?,
            csrf: random_hex(32).map_err(|e| e.to_string())?,
            opened: std::time::Instant::now(),
        };
        let mut s = self.sessions.lock().unwrap();
        if s.len() == MAX_SESSIONS {
            s.pop_front();
        }
        s.push_back(session.clone());
        Ok((session.id, session.csrf))
    }

    /// The CSRF token of the session whose id is `cookie`, when it is one.
    pub fn session(&self, cookie: Option<&str>) -> Option<String> {
        let cookie = cookie?;
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|s| s.opened.elapsed().as_secs() < SESSION_SECS);
        sessions
            .iter()
            .find(|s| same_secret(&s.id, cookie))
            .map(|s| s.csrf.clone())
    }

    /// Ends the session whose id is `cookie`.
    pub fn logout(&self, cookie: Option<&str>) {
        if let Some(c) = cookie {
            self.sessions
                .lock()
                .unwrap()
                .retain(|s| !same_secret(&s.id, c));
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Why a request that changes something is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No session: the page was not opened with the token.
    #[error("not logged in: open the dashboard with the token from `moat web token`")]
    NoSession,
    /// The CSRF header is missing or wrong.
    #[error("missing or wrong CSRF token")]
    Csrf,
    /// The `Origin` header is missing or names another site.
    #[error("the request's Origin is not this dashboard")]
    Origin,
}

/// Checks a request that changes something: its session's CSRF token (`expected`, `None`
/// without a session) against the header's, and its `Origin` against its `Host`.
pub fn check_change(
    expected: Option<&str>,
    csrf_header: Option<&str>,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<(), Refused> {
    let expected = expected.ok_or(Refused::NoSession)?;
    if !same_origin(origin, host) {
        return Err(Refused::Origin);
    }
    match csrf_header {
        Some(h) if same_secret(h, expected) => Ok(()),
        _ => Err(Refused::Csrf),
    }
}

/// Whether `origin` (an `Origin` header) is `http://HOST` or `https://HOST` for the request's
/// `Host`. A missing Origin is refused: browsers send one with every POST.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let (Some(origin), Some(host)) = (origin, host) else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| !host.is_empty() && r.eq_ignore_ascii_case(host))
}

/// Whether a `Host` header names this host by address or as `localhost`: a page read
/// without a session must not answer another name (DNS rebinding).
pub fn host_is_literal(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, _)) => return inside.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abcdef", "abcdef"));
        assert!(!same_secret("abcdef", "abcdeg"));
        assert!(!same_secret("abcdef", "abcde"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn changes_need_session_origin_and_csrf() {
        let host = Some("127.0.0.1:9718");
        let ok = Some("http://127.0.0.1:9718");
        assert_eq!(check_change(Some("c"), Some("c"), ok, host), Ok(()));
        assert_eq!(
            check_change(None, Some("c"), ok, host),
            Err(Refused::NoSession)
        );
        assert_eq!(check_change(Some("c"), None, ok, host), Err(Refused::Csrf));
        assert_eq!(
            check_change(Some("c"), Some("d"), ok, host),
            Err(Refused::Csrf)
        );
        for bad in [
            None,
            Some("http://198.51.100.7:9718"),
            Some("null"),
            Some("http://127.0.0.1:9718.example.org"),
        ] {
            assert_eq!(
                check_change(Some("c"), Some("c"), bad, host),
                Err(Refused::Origin),
                "{bad:?}"
            );
        }
        assert!(same_origin(
            Some("https://moat.example.org"),
            Some("MOAT.example.org")
        ));
    }

    #[test]
    fn only_literal_hosts_read_without_a_session() {
        for h in [
            "127.0.0.1:9718",
            "localhost:9718",
            "[::1]:9718",
            "192.0.2.1",
        ] {
            assert!(host_is_literal(Some(h)), "{h}");
        }
        for h in [
            "attacker.example:9718",
            "[::1",
            "",
            "127.0.0.1.example.org:80",
        ] {
            assert!(!host_is_literal(Some(h)), "{h}");
        }
        assert!(!host_is_literal(None));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = "a=1; moat_session=xyz; b=2";
        assert_eq!(cookie(h, COOKIE), Some("xyz"));
        assert_eq!(cookie(h, "c"), None);
    }

    #[test]
    fn the_token_file_is_private_and_opens_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/web.token");
        assert!(matches!(read_token(&path), Err(TokenError::Missing(_))));
        let token = ensure_token(&path).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ensure_token(&path).unwrap(), token, "made once");
        let auth = Auth::new(path.clone());
        assert!(auth.login("wrong").is_err());
        let (id, csrf) = auth.login(&token).unwrap();
        assert_eq!(auth.session(Some(&id)), Some(csrf));
        assert_eq!(auth.session(Some("other")), None);
        auth.logout(Some(&id));
        assert_eq!(auth.session(Some(&id)), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_token(&path),
            Err(TokenError::Readable { .. })
        ));
        assert!(
            auth.login(&token).is_err(),
            "a readable token file is refused"
        );
    }
}

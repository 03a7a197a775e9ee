//! The ledger in an embedded SQLite database: `moat.db` in the state directory, in WAL mode,
//! readable with the `sqlite3` CLI. One file holds both parts, the decisions and this node's
//! progress, through one connection.
//!
//! A file SQLite cannot read is moved aside (never deleted) and a new one started. The
//! directory is created 0700 and the file 0600 (SQLite gives its `-wal` and `-shm` the
//! file's mode), whatever the umask: the ledger keeps log lines, which may carry tokens and
//! user names. Recording a ban is idempotent on (jail, target, start): a replay after a crash
//! decides the same ban again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    BanRecord, Deciders, DecisionStore, EndReason, JailCheckpoint, LedgerError, NewBan, Origin,
    Progress, SAMPLE_LINES, SAMPLE_LINE_MAX,
};
use crate::vocab::{Cursor, FileCursor};

/// The migrations, in order; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: bans, their sample lines, cursors, jail checkpoints.
    "CREATE TABLE bans (
        id INTEGER PRIMARY KEY,
        jail TEXT NOT NULL,
        target TEXT NOT NULL,
        started INTEGER NOT NULL,
        until INTEGER,
        failures INTEGER NOT NULL,
        origin TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        ended INTEGER,
        end_reason TEXT
    );
    -- A replay after a crash decides the same ban again, active or already expired; it must
    -- not be recorded twice. A ban lifted by hand and decided anew in the same second is a
    -- new ban.
    CREATE UNIQUE INDEX bans_once ON bans (jail, target, started)
        WHERE end_reason IS NOT 'unbanned';
    CREATE INDEX bans_active ON bans (until) WHERE ended IS NULL;
    CREATE INDEX bans_target ON bans (target, started);
    CREATE INDEX bans_jail ON bans (jail);
    CREATE TABLE ban_lines (
        ban INTEGER NOT NULL REFERENCES bans (id) ON DELETE CASCADE,
        n INTEGER NOT NULL,
        line BLOB NOT NULL,
        PRIMARY KEY (ban, n)
    );
    CREATE TABLE cursors (
        source TEXT PRIMARY KEY,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        fingerprint BLOB NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE TABLE jails (
        name TEXT PRIMARY KEY,
        windows BLOB NOT NULL,
        failed_total INTEGER NOT NULL,
        updated INTEGER NOT NULL
    );",
    // 2: what kind of cursor a row holds: a file's position, or a stream's own cursor
    // (journald's, Docker's timestamp), which version 1 kept in the fingerprint column.
    "ALTER TABLE cursors ADD COLUMN kind TEXT NOT NULL DEFAULT 'file';
    UPDATE cursors SET kind = 'stream'
        WHERE source LIKE 'journald:%' OR source LIKE 'docker:%';",
    // 3: the fleet node that decided a ban (NULL: this one), for bans received from a cluster.
    "ALTER TABLE bans ADD COLUMN node TEXT;",
];

/// The database file's name in the state directory.
pub const FILE_NAME: &str = "moat.db";

/// The open ledger: a handle, cloned for the decisions and the progress, to one connection.
#[derive(Clone)]
pub struct SqliteLedger {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
}

struct Inner {
    conn: Connection,
    /// The file's device and inode when it was opened (none in memory).
    identity: Option<(u64, u64)>,
}

/// Runs `body` as a transaction of its own, or as part of the batch open on `conn` (the
/// batch commits it). Not a savepoint inside a batch: each savepoint's statement journal
/// copied every page it touched, a third of a 100,000-ban resync.
fn in_transaction<T>(
    conn: &mut Connection,
    body: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if conn.is_autocommit() {
        let tx = conn.transaction()?;
        let out = body(&tx)?;
        tx.commit()?;
        Ok(out)
    } else {
        body(conn)
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn from_ms(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap_or(Timestamp::MAX)
}

impl SqliteLedger {
    /// Opens (creating when needed) the ledger in `dir`. When the file exists but is not a
    /// readable database, it is renamed to `moat.db.damaged-<time>` and a new one started; the
    /// second value is then the name it was moved to, for the caller to report.
    pub fn open(dir: &Path) -> Result<(SqliteLedger, Option<PathBuf>), LedgerError> {
        let dir_err = |source| LedgerError::Dir {
            path: dir.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        let path = dir.join(FILE_NAME);
        make_private(&path).map_err(dir_err)?;
        match SqliteLedger::open_file(&path) {
            Ok(l) => Ok((l, None)),
            Err(LedgerError::Sqlite { source, .. }) if is_damage(&source) => {
                let aside = path.with_file_name(format!(
                    "{FILE_NAME}.damaged-{}",
                    Timestamp::now().as_second()
                ));
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    if from.exists() {
                        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                        std::fs::rename(&from, &to).map_err(|source| LedgerError::Dir {
                            path: from.display().to_string(),
                            source,
                        })?;
                    }
                }
                make_private(&path).map_err(dir_err)?;
                Ok((SqliteLedger::open_file(&path)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    /// A ledger in memory, for when the state directory cannot hold one: decisions still
    /// work, and are lost at exit.
    pub fn open_in_memory() -> Result<SqliteLedger, LedgerError> {
        SqliteLedger::open_file(Path::new(":memory:"))
    }

    /// Makes the open batch's COMMIT fail, as a full disk would: a line of a ban that does not
    /// exist, with its foreign key checked only at the commit.
    #[cfg(test)]
    pub(crate) fn spoil_batch(&self) {
        self.inner()
            .conn
            .execute_batch(
                "PRAGMA defer_foreign_keys = ON;
                 INSERT INTO ban_lines (ban, n, line) VALUES (-1, 0, x'00');",
            )
            .unwrap();
    }

    fn open_file(path: &Path) -> Result<SqliteLedger, LedgerError> {
        let err = |source| LedgerError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        // A locked database (another moat, or the sqlite3 CLI in a transaction) waits a while
        // rather than failing at once.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            )));
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(err)?;
        migrate(&mut conn).map_err(err)?;
        Ok(SqliteLedger {
            inner: Arc::new(Mutex::new(Inner {
                conn,
                identity: identity(path),
            })),
            path: path.to_path_buf(),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Poisoned only if a query panicked; the connection is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn select(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<BanRecord>, LedgerError> {
        let sql = format!(
            "SELECT id, jail, target, started, until, failures, origin, reason, ended, end_reason, node
             FROM bans {filter}"
        );
        let run = || -> rusqlite::Result<Vec<BanRecord>> {
            let inner = self.inner();
            let conn = &inner.conn;
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, |r| {
                let target: String = r.get(2)?;
                Ok(BanRecord {
                    id: r.get(0)?,
                    jail: r.get(1)?,
                    target: target
                        .parse()
                        .unwrap_or_else(|_| IpNet::from(IpAddr::from([0, 0, 0, 0]))),
                    started: from_ms(r.get(3)?),
                    until: r.get::<_, Option<i64>>(4)?.map(from_ms),
                    failures: r.get(5)?,
                    origin: Origin::from_stored(&r.get::<_, String>(6)?),
                    reason: r.get(7)?,
                    ended: r.get::<_, Option<i64>>(8)?.map(from_ms),
                    end_reason: r
                        .get::<_, Option<String>>(9)?
                        .as_deref()
                        .and_then(EndReason::from_stored),
                    node: r.get(10)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }
}

impl DecisionStore for SqliteLedger {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn is_gone(&self) -> bool {
        let known = self.inner().identity;
        known.is_some() && identity(&self.path) != known
    }

    /// A new file where the old one was; both handles (decisions, progress) use it.
    fn recreate(&mut self) -> Result<(), LedgerError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let (fresh, _) = SqliteLedger::open(dir)?;
        let fresh = Arc::try_unwrap(fresh.inner)
            .ok()
            .expect("a ledger just opened has one handle")
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        *self.inner() = fresh;
        Ok(())
    }

    /// Records a ban and its sample lines. Returns its id, or `None` when the same ban (jail,
    /// target, start) is already recorded and was not lifted by hand, as after a replay.
    fn record_ban(&mut self, ban: &NewBan, lines: &[Vec<u8>]) -> Result<Option<i64>, LedgerError> {
        let run = |conn: &Connection| -> rusqlite::Result<Option<i64>> {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO bans (jail, target, started, until, failures, origin, reason, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    ban.jail,
                    ban.target.to_string(),
                    ms(ban.started),
                    ban.until.map(ms),
                    ban.failures,
                    ban.origin.as_str(),
                    ban.reason,
                    ban.node
                ])?;
            if inserted == 0 {
                return Ok(None);
            }
            let id = conn.last_insert_rowid();
            let mut insert =
                conn.prepare_cached("INSERT INTO ban_lines (ban, n, line) VALUES (?1, ?2, ?3)")?;
            for (n, line) in lines.iter().take(SAMPLE_LINES).enumerate() {
                let line = &line[..line.len().min(SAMPLE_LINE_MAX)];
                insert.execute(params![id, n as i64, line])?;
            }
            Ok(Some(id))
        };
        in_transaction(&mut self.inner().conn, run).map_err(|e| self.err(e))
    }

    fn begin_batch(&mut self) -> Result<(), LedgerError> {
        let r = self.inner().conn.execute_batch("BEGIN");
        r.map_err(|e| self.err(e))
    }

    fn end_batch(&mut self) -> Result<(), LedgerError> {
        let inner = self.inner();
        let r = inner.conn.execute_batch("COMMIT");
        if r.is_err() && !inner.conn.is_autocommit() {
            // A failed COMMIT can leave the transaction open: end it, so that the next write
            // is not silently part of a batch nobody will commit.
            let _ = inner.conn.execute_batch("ROLLBACK");
        }
        drop(inner);
        r.map_err(|e| self.err(e))
    }

    /// Ends the given bans at `at` for `reason` ("expired", "unbanned", ...).
    fn end_bans(
        &mut self,
        ids: &[i64],
        at: Timestamp,
        reason: EndReason,
    ) -> Result<(), LedgerError> {
        let run = |conn: &Connection| -> rusqlite::Result<()> {
            let mut stmt = conn.prepare_cached(
                "UPDATE bans SET ended = ?2, end_reason = ?3 WHERE id = ?1 AND ended IS NULL",
            )?;
            for id in ids {
                stmt.execute(params![id, ms(at), reason.as_str()])?;
            }
            Ok(())
        };
        in_transaction(&mut self.inner().conn, run).map_err(|e| self.err(e))
    }

    /// Bans not yet ended, in no particular order (sorting 100,000 of them at start-up would
    /// cost more than reading them).
    fn active(&self) -> Result<Vec<BanRecord>, LedgerError> {
        self.select("WHERE ended IS NULL", [])
    }

    /// The newest `limit` bans, active or not, newest first.
    fn recent(&self, limit: u32) -> Result<Vec<BanRecord>, LedgerError> {
        self.select("ORDER BY started DESC, id DESC LIMIT ?1", [limit])
    }

    /// How many bans of `target` started in `[since, before)`, in `jail` or in any jail,
    /// decided here (`node IS NULL`) or anywhere.
    fn earlier_bans(
        &self,
        target: IpNet,
        jail: Option<&str>,
        deciders: Deciders,
        since: Timestamp,
        before: Timestamp,
    ) -> Result<u32, LedgerError> {
        let any_node = deciders == Deciders::AnyNode;
        self.inner()
            .conn
            .query_row(
                "SELECT count(*) FROM bans WHERE target = ?1 AND started >= ?2 AND started < ?3
                 AND (?4 IS NULL OR jail = ?4) AND (?5 OR node IS NULL)",
                params![target.to_string(), ms(since), ms(before), jail, any_node],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// How many bans each jail ever made (as far as the ledger remembers).
    fn bans_per_jail(&self) -> Result<HashMap<String, u64>, LedgerError> {
        let run = || -> rusqlite::Result<HashMap<String, u64>> {
            let inner = self.inner();
            let conn = &inner.conn;
            let mut stmt = conn.prepare_cached("SELECT jail, count(*) FROM bans GROUP BY jail")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// The sample lines kept with a ban.
    fn ban_lines(&self, id: i64) -> Result<Vec<Vec<u8>>, LedgerError> {
        let run = || -> rusqlite::Result<Vec<Vec<u8>>> {
            let inner = self.inner();
            let conn = &inner.conn;
            let mut stmt =
                conn.prepare_cached("SELECT line FROM ban_lines WHERE ban = ?1 ORDER BY n")?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// The newest `limit` bans of `target`, newest first (by the target index).
    fn bans_of(&self, target: IpNet, limit: u32) -> Result<Vec<BanRecord>, LedgerError> {
        self.select(
            "WHERE target = ?1 ORDER BY started DESC, id DESC LIMIT ?2",
            params![target.to_string(), limit],
        )
    }
}

impl Progress for SqliteLedger {
    /// Saves the cursors and the jails' states together: the point a restart resumes from.
    fn checkpoint(
        &mut self,
        cursors: &[(String, Cursor)],
        jails: &[(String, JailCheckpoint)],
        now: Timestamp,
    ) -> Result<(), LedgerError> {
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut c = tx.prepare_cached(
                    "INSERT OR REPLACE INTO cursors
                         (source, kind, dev, ino, offset, fingerprint, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (source, cur) in cursors {
                    let (kind, dev, ino, offset, bytes) = match cur {
                        Cursor::File(f) => {
                            ("file", f.dev, f.ino, f.offset, f.fingerprint.as_slice())
                        }
                        Cursor::Stream(s) => ("stream", 0, 0, 0, s.as_bytes()),
                    };
                    c.execute(params![
                        source,
                        kind,
                        dev as i64,
                        ino as i64,
                        offset as i64,
                        bytes,
                        ms(now)
                    ])?;
                }
                let mut j = tx.prepare_cached(
                    "INSERT OR REPLACE INTO jails (name, windows, failed_total, updated)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (name, cp) in jails {
                    j.execute(params![name, cp.windows, cp.failed_total as i64, ms(now)])?;
                }
            }
            tx.commit()
        };
        run(&mut self.inner().conn).map_err(|e| self.err(e))
    }

    /// The cursors saved at the last checkpoint, by source.
    fn cursors(&self) -> Result<HashMap<String, Cursor>, LedgerError> {
        let run = || -> rusqlite::Result<HashMap<String, Cursor>> {
            let inner = self.inner();
            let conn = &inner.conn;
            let mut stmt =
                conn.prepare("SELECT source, kind, dev, ino, offset, fingerprint FROM cursors")?;
            let rows = stmt.query_map([], |r| {
                let bytes: Vec<u8> = r.get(5)?;
                let cursor = match r.get::<_, String>(1)?.as_str() {
                    "stream" => Cursor::Stream(String::from_utf8_lossy(&bytes).into_owned()),
                    _ => Cursor::File(FileCursor {
                        dev: r.get::<_, i64>(2)? as u64,
                        ino: r.get::<_, i64>(3)? as u64,
                        offset: r.get::<_, i64>(4)? as u64,
                        fingerprint: bytes,
                    }),
                };
                Ok((r.get::<_, String>(0)?, cursor))
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// A jail's state at the last checkpoint.
    fn jail_checkpoint(&self, name: &str) -> Result<Option<JailCheckpoint>, LedgerError> {
        self.inner()
            .conn
            .query_row(
                "SELECT windows, failed_total FROM jails WHERE name = ?1",
                [name],
                |r| {
                    Ok(JailCheckpoint {
                        windows: r.get(0)?,
                        failed_total: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

/// Brings the schema to this build's version.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "the ledger has schema version {version}, newer than this moat knows \
                 ({}); run the newer moat or move the file aside",
                MIGRATIONS.len()
            )),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Creates the database file 0600 when it does not exist; takes the world's access away from
/// one that does (an older moat created it 0644), and from its `-wal` and `-shm`.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if meta.is_file() && mode & 0o007 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o770))?;
        }
    }
    Ok(())
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(jail: &str, target: &str, at: i64) -> NewBan {
        NewBan {
            jail: jail.into(),
            target: target.parse().unwrap(),
            started: Timestamp::from_second(at).unwrap(),
            until: Some(Timestamp::from_second(at + 600).unwrap()),
            failures: 5,
            origin: Origin::Jail,
            reason: String::new(),
            node: None,
        }
    }

    #[test]
    fn a_batch_keeps_all_its_writes_or_none() {
        let mut l = SqliteLedger::open_in_memory().unwrap();
        l.begin_batch().unwrap();
        let a = l.record_ban(&ban("ssh", "192.0.2.1/32", 1000), &[b"x".to_vec()]);
        let b = l.record_ban(&ban("ssh", "192.0.2.2/32", 1000), &[]);
        l.end_bans(
            &[a.unwrap().unwrap()],
            Timestamp::from_second(1001).unwrap(),
            EndReason::Unbanned,
        )
        .unwrap();
        assert!(b.unwrap().is_some());
        l.end_batch().unwrap();
        let active = l.active().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].target.to_string(), "192.0.2.2/32");
        assert_eq!(l.recent(10).unwrap().len(), 2);

        // A batch whose commit fails keeps nothing, and leaves no transaction open: the next
        // write is a transaction of its own again.
        l.begin_batch().unwrap();
        l.record_ban(&ban("ssh", "192.0.2.3/32", 1000), &[])
            .unwrap();
        l.spoil_batch();
        assert!(l.end_batch().is_err());
        assert!(l.inner().conn.is_autocommit());
        assert_eq!(l.active().unwrap().len(), 1);
        l.record_ban(&ban("ssh", "192.0.2.3/32", 1000), &[])
            .unwrap();
        assert_eq!(l.active().unwrap().len(), 2);
    }

    #[test]
    fn earlier_bans_of_other_nodes_count_only_when_asked() {
        let mut l = SqliteLedger::open_in_memory().unwrap();
        l.record_ban(&ban("ssh", "192.0.2.1/32", 1000), &[])
            .unwrap();
        let remote = NewBan {
            node: Some("node2".into()),
            ..ban("ssh", "192.0.2.1/32", 2000)
        };
        l.record_ban(&remote, &[]).unwrap();
        let t = |s| Timestamp::from_second(s).unwrap();
        let target = "192.0.2.1/32".parse().unwrap();
        let count = |deciders| {
            l.earlier_bans(target, Some("ssh"), deciders, t(0), t(5000))
                .unwrap()
        };
        assert_eq!(count(Deciders::ThisNode), 1);
        assert_eq!(count(Deciders::AnyNode), 2);
    }

    #[test]
    fn bans_are_recorded_once_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, moved) = SqliteLedger::open(dir.path()).unwrap();
        assert!(moved.is_none());
        let lines = vec![b"a".to_vec(), vec![b'x'; 5000]];
        let id = l
            .record_ban(&ban("ssh", "192.0.2.1/32", 1000), &lines)
            .unwrap()
            .unwrap();
        assert_eq!(
            l.record_ban(&ban("ssh", "192.0.2.1/32", 1000), &[])
                .unwrap(),
            None
        );
        l.record_ban(&ban("web", "192.0.2.1/32", 2000), &[])
            .unwrap()
            .unwrap();
        let t = |s| Timestamp::from_second(s).unwrap();
        let target = "192.0.2.1/32".parse().unwrap();
        let count = |l: &SqliteLedger, jail, deciders, before| {
            l.earlier_bans(target, jail, deciders, t(0), t(before))
                .unwrap()
        };
        assert_eq!(count(&l, Some("ssh"), Deciders::ThisNode, 5000), 1);
        assert_eq!(count(&l, None, Deciders::ThisNode, 5000), 2);
        assert_eq!(count(&l, None, Deciders::ThisNode, 2000), 1);
        assert_eq!(l.ban_lines(id).unwrap()[1].len(), SAMPLE_LINE_MAX);
        assert_eq!(l.active().unwrap().len(), 2);
        l.end_bans(&[id], t(1200), EndReason::Expired).unwrap();
        let active = l.active().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].jail, "web");
        drop(l);
        let (l, _) = SqliteLedger::open(dir.path()).unwrap();
        assert_eq!(l.recent(10).unwrap().len(), 2);
        let of = l.bans_of(target, 10).unwrap();
        assert_eq!(
            of.iter().map(|b| b.jail.as_str()).collect::<Vec<_>>(),
            ["web", "ssh"]
        );
        assert!(l
            .bans_of("192.0.2.2/32".parse().unwrap(), 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, _) = SqliteLedger::open(dir.path()).unwrap();
        let cur = Cursor::File(FileCursor {
            dev: 1,
            ino: 2,
            offset: 3,
            fingerprint: b"abc".to_vec(),
        });
        let cp = JailCheckpoint {
            windows: vec![1, 2, 3],
            failed_total: 7,
        };
        l.checkpoint(
            &[("/a".into(), cur.clone())],
            &[("ssh".into(), cp)],
            Timestamp::now(),
        )
        .unwrap();
        assert_eq!(l.cursors().unwrap()["/a"], cur);
        let back = l.jail_checkpoint("ssh").unwrap().unwrap();
        assert_eq!((back.windows, back.failed_total), (vec![1, 2, 3], 7));
        assert!(l.jail_checkpoint("web").unwrap().is_none());
    }

    #[test]
    fn a_deleted_ledger_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (l, _) = SqliteLedger::open(&state).unwrap();
        assert!(!l.is_gone());
        std::fs::remove_dir_all(&state).unwrap();
        assert!(l.is_gone());
        let (again, _) = SqliteLedger::open(&state).unwrap();
        assert!(l.is_gone() && !again.is_gone());
        assert!(!SqliteLedger::open_in_memory().unwrap().is_gone());
    }

    #[test]
    fn the_directory_and_the_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        // Under the usual umask (022) the directory would be 0755 and the files 0644.
        let dir = tmp.path().join("state/moat");
        let (mut l, _) = SqliteLedger::open(&dir).unwrap();
        l.record_ban(&ban("ssh", "192.0.2.1/32", 1000), &[b"line".to_vec()])
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
        for f in ["moat.db", "moat.db-wal", "moat.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        drop(l);
        // A file an older moat left world-readable loses the world's access.
        std::fs::set_permissions(dir.join(FILE_NAME), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let (l, _) = SqliteLedger::open(&dir).unwrap();
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o640);
        drop(l);
    }

    #[test]
    fn a_damaged_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 8192]).unwrap();
        let (l, moved) = SqliteLedger::open(dir.path()).unwrap();
        let moved = moved.expect("moved aside");
        assert_eq!(std::fs::read(&moved).unwrap(), vec![0x5a; 8192]);
        assert!(l.active().unwrap().is_empty());
    }
}

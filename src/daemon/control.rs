//! The control socket: a Unix socket the `moat` commands talk to.
//!
//! Only root, the user moat runs as, and members of the configured group may use it: the
//! socket file is mode 0600 (0660 with a group), and each connection's peer credentials are
//! checked as well, so a permissive mount or a copied file descriptor does not open it. A
//! request is one JSON line of at most [`MAX_REQUEST`] bytes that must arrive within a few
//! seconds; anything else gets an error reply and the connection is closed.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Uid};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::engine::EngineMsg;
use super::protocol::{Reply, Request, MAX_REQUEST};

const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may use the socket.
#[derive(Clone, Debug)]
pub struct Access {
    pub group: Option<Gid>,
}

/// A request the daemon itself answers (the engine answers the rest).
pub enum DaemonRequest {
    Reload(oneshot::Sender<Reply>),
}

/// Binds the socket, refusing to steal it from a running daemon.
pub async fn bind(path: &Path, access: &Access) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        // Only a socket is moat's to replace: a file, a directory or a link there is someone
        // else's, and a typo in `[daemon] socket` must not delete it.
        if !meta.file_type().is_socket() {
            let what = if meta.is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_file() {
                "a regular file"
            } else {
                "a device or a pipe"
            };
            anyhow::bail!(
                "{} is not a socket ({what}); moat does not delete it. Move it away, or set \
                 [daemon] socket to another path",
                path.display()
            );
        }
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another moat is already running on {} (stop it first, or set [daemon] socket)",
                path.display()
            );
        }
        std::fs::remove_file(path).map_err(|e| {
            anyhow::anyhow!("cannot remove the stale socket {}: {e}", path.display())
        })?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    let mode = if access.group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = access.group {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| anyhow::anyhow!("cannot give {} to group {gid}: {e}", path.display()))?;
    }
    Ok(listener)
}

/// Serves connections until the listener is dropped.
pub async fn serve(
    listener: UnixListener,
    access: Access,
    engine: mpsc::Sender<EngineMsg>,
    daemon: mpsc::Sender<DaemonRequest>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (engine, daemon, access) = (engine.clone(), daemon.clone(), access.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &access, engine, daemon).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

fn allowed(stream: &UnixStream, access: &Access) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read peer credentials: {e}"))?;
    let uid = cred.uid();
    if uid == 0 || uid == Uid::effective().as_raw() {
        return Ok(());
    }
    if let Some(gid) = access.group {
        if cred.gid() == gid.as_raw() || cred.pid().is_some_and(|p| in_group(p, gid.as_raw())) {
            return Ok(());
        }
    }
    Err(format!(
        "permission denied: uid {uid} may not control moat (root, moat's own user{} only)",
        if access.group.is_some() {
            " and the configured socket_group"
        } else {
            ""
        }
    ))
}

/// Whether process `pid` has `gid` among its supplementary groups (SO_PEERCRED carries only
/// the primary group).
fn in_group(pid: i32, gid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(str::to_string))
        })
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

async fn handle(
    stream: UnixStream,
    access: &Access,
    engine: mpsc::Sender<EngineMsg>,
    daemon: mpsc::Sender<DaemonRequest>,
) -> std::io::Result<()> {
    let denied = allowed(&stream, access).err();
    let (read, mut write) = stream.into_split();
    let reply = match denied {
        Some(e) => {
            tracing::warn!("control socket: {e}");
            Reply::err(e)
        }
        None => {
            let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
            let mut line = Vec::new();
            match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
                Err(_) => Reply::err("no request within 5 s"),
                Ok(Err(e)) => Reply::err(format!("cannot read the request: {e}")),
                Ok(Ok(_)) if line.len() > MAX_REQUEST => Reply::err("request too long"),
                Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
                    Err(e) => Reply::err(format!("bad request: {e}")),
                    Ok(req) => dispatch(req, &engine, &daemon).await,
                },
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

async fn dispatch(
    req: Request,
    engine: &mpsc::Sender<EngineMsg>,
    daemon: &mpsc::Sender<DaemonRequest>,
) -> Reply {
    let (tx, rx) = oneshot::channel();
    let sent = match req {
        Request::Reload => daemon.send(DaemonRequest::Reload(tx)).await.is_ok(),
        req => engine.send(EngineMsg::Control(req, tx)).await.is_ok(),
    };
    if !sent {
        return Reply::err("moat is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| Reply::err("moat is shutting down"))
}

/// Sends one request to the daemon at `socket` and returns its reply.
pub fn request(socket: &Path, req: &Request) -> Result<Reply, ClientError> {
    use std::io::{BufRead, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|e| ClientError::NotRunning {
            socket: socket.to_path_buf(),
            reason: e,
        })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(ClientError::Io)?;
    let mut line = serde_json::to_vec(req).expect("requests serialise");
    line.push(b'\n');
    stream.write_all(&line).map_err(ClientError::Io)?;
    let mut reply = Vec::new();
    std::io::BufReader::new(stream)
        .read_until(b'\n', &mut reply)
        .map_err(ClientError::Io)?;
    serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}", not_running(socket, reason))]
    NotRunning {
        socket: PathBuf,
        reason: std::io::Error,
    },
    #[error("talking to moat: {0}")]
    Io(std::io::Error),
    #[error("moat answered something unexpected: {0}")]
    BadReply(String),
}

fn not_running(socket: &Path, reason: &std::io::Error) -> String {
    match reason.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot use {}: permission denied; run this as root (or as a member of the \
             configured socket_group)",
            socket.display()
        ),
        _ => format!(
            "moat is not running (no daemon at {}: {reason}); start it with \
             `systemctl start moat` or `moat run -c /etc/moat/moat.toml`",
            socket.display()
        ),
    }
}

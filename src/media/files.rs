//! Where attachment files are read from: the Mac over the account's SSH connection (one lazily
//! opened SFTP session, or `cat` over an exec channel when the server refuses the `sftp` subsystem),
//! over a connection of our own to `remoteHost` when imsg runs through a wrapper that is not
//! transparent (docs/attachments.md, "remoteHost"), or this machine's file system when imsg runs
//! locally.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};

use crate::config::Account;
use crate::dropin::link_source::LinkSource;
use crate::transport::Peer;
use crate::transport::link::{Link, LinkOptions};
use crate::transport::resolve::{self, Plan};
use crate::transport::ssh::exec::Captured;
use crate::transport::ssh::{ExecChannel, ExecEvent, Sftp, SftpError, SshError, quote};

/// Bytes read per request from the source; SFTP pipelines several of these underneath.
const CHUNK: usize = 256 * 1024;
/// Concurrent pulls per connection: enough to overlap latency, few enough to leave room for RPC.
pub const MAX_CONCURRENT_PULLS: usize = 4;

/// Why a file could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    NotFound,
    #[error("permission denied{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    Denied(String),
    #[error("not a regular file")]
    NotAFile,
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Other(String),
}

impl FileError {
    /// Whether trying again later can help (the file may still be arriving or the session may heal).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FileError::NotFound | FileError::Timeout | FileError::Other(_)
        )
    }
}

/// A resolved file: its real path (symlinks and `..` resolved) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub real_path: String,
    pub size: u64,
}

/// How files are reached, reported by `doctor` and `attachments check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Local,
    Sftp,
    /// `cat` over an exec channel: the server refused the `sftp` subsystem.
    ExecCat,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Local => "local file system",
            Method::Sftp => "sftp",
            Method::ExecCat => "exec cat (the server refused the sftp subsystem)",
        })
    }
}

/// The files of one account connection.
#[derive(Clone)]
pub enum Files {
    Local,
    Remote(Arc<RemoteFiles>),
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Files::Local => f.write_str("Files::Local"),
            Files::Remote(_) => f.write_str("Files::Remote"),
        }
    }
}

impl Files {
    /// How attachment files are reached through `peer`: over its SSH connection, else in place.
    pub fn for_peer(peer: &Peer, sftp_timeout: Duration) -> Files {
        match peer.connection() {
            Some(connection) => Files::remote(Link::Direct(connection.clone()), sftp_timeout),
            None => Files::Local,
        }
    }

    /// As [`Files::for_peer`], except that a process peer with a `remote_host` reads the Mac's
    /// files over a connection of its own to that host, opened on first use.
    pub fn for_session(peer: &Peer, remote_host: Option<RemoteHost>, sftp_timeout: Duration) -> Files {
        match (peer.connection(), remote_host) {
            (None, Some(host)) => Files::Remote(Arc::new(RemoteFiles::on_demand(host, sftp_timeout))),
            _ => Files::for_peer(peer, sftp_timeout),
        }
    }

    /// The Mac's files over `link`; each SFTP request is bounded by `sftp_timeout`.
    pub fn remote(link: Link, sftp_timeout: Duration) -> Files {
        Files::Remote(Arc::new(RemoteFiles::new(link, sftp_timeout)))
    }

    pub async fn method(&self) -> Method {
        match self {
            Files::Local => Method::Local,
            Files::Remote(remote) => remote.method().await,
        }
    }

    /// Resolve `path` and stat it; refuses anything but a regular file.
    pub async fn probe(&self, path: &str) -> Result<Probe, FileError> {
        match self {
            Files::Local => local_probe(path).await,
            Files::Remote(remote) => remote.probe(path).await,
        }
    }

    /// Copy the file at `real_path` into `out`; more than `limit` bytes is an error.
    pub async fn read_into(
        &self,
        real_path: &str,
        limit: u64,
        out: &mut (impl AsyncWrite + Unpin + Send),
    ) -> Result<u64, FileError> {
        match self {
            Files::Local => {
                let file = tokio::fs::File::open(real_path).await.map_err(io_error)?;
                copy_limited(file, limit, out).await
            }
            Files::Remote(remote) => remote.read_into(real_path, limit, out).await,
        }
    }
}

async fn local_probe(path: &str) -> Result<Probe, FileError> {
    let real = tokio::fs::canonicalize(path).await.map_err(io_error)?;
    let meta = tokio::fs::metadata(&real).await.map_err(io_error)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    Ok(Probe {
        real_path: real.display().to_string(),
        size: meta.len(),
    })
}

fn io_error(err: std::io::Error) -> FileError {
    match err.kind() {
        std::io::ErrorKind::NotFound => FileError::NotFound,
        std::io::ErrorKind::PermissionDenied => FileError::Denied(String::new()),
        _ => FileError::Other(err.to_string()),
    }
}

/// Copy at most `limit` bytes; one byte more is `TooLarge` (the source may have grown since stat).
async fn copy_limited(
    mut from: impl AsyncRead + Unpin,
    limit: u64,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, FileError> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await.map_err(io_error)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        if total > limit {
            return Err(FileError::TooLarge { limit });
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| FileError::Other(format!("cannot write the local copy: {e}")))?;
    }
}

/// The Mac named by `remoteHost` of an account whose imsg runs as a local process: OpenClaw's shape
/// for a wrapper that is not transparent (docs/configuration.md, `remoteHost`). imsg's answers name
/// files on that Mac, so they are read over SSH there, never from this machine's disk.
#[derive(Debug, Clone)]
pub struct RemoteHost {
    /// `host` or `user@host`, as configured.
    host: String,
    /// Keys, known_hosts and the other `ssh` settings the connection uses.
    account: Account,
    options: LinkOptions,
}

impl RemoteHost {
    /// The remote host of `account` when its transport is a process (`plan`) and `remoteHost` is
    /// set; None otherwise (an SSH transport reads over its own connection already).
    pub fn of(account: &Account, plan: &Plan, state_dir: &Path) -> Option<RemoteHost> {
        if !matches!(plan, Plan::Process { .. }) {
            return None;
        }
        let host = target_of(account.remote_host.as_deref()?, account.ssh.as_ref());
        Some(RemoteHost {
            host,
            account: account.clone(),
            // A direct connection: `run` keeps it for the account's life, so sharing gains nothing.
            options: LinkOptions {
                state_dir: state_dir.to_path_buf(),
                persist: Duration::ZERO,
                master_args: Vec::new(),
            },
        })
    }

    /// `host` or `user@host`, for logs.
    pub fn display(&self) -> &str {
        &self.host
    }
}

/// `remoteHost` as a `[user@]host[:port]` target: it has no port of its own and may lack the user,
/// so the account's `ssh.port` and `ssh.user` fill them in (docs/configuration.md, `remoteHost`).
fn target_of(remote_host: &str, ssh: Option<&crate::config::SshConfig>) -> String {
    let mut target = match ssh.and_then(|s| s.user.as_deref()) {
        Some(user) if !remote_host.contains('@') => format!("{user}@{remote_host}"),
        _ => remote_host.to_string(),
    };
    if let Some(port) = ssh.and_then(|s| s.port) {
        target.push_str(&format!(":{port}"));
    }
    target
}

/// How a [`RemoteFiles`] reaches the Mac.
enum Source {
    /// A link the caller opened and owns (the account's SSH transport, the drop-in).
    Fixed(Link),
    /// `remoteHost`: resolved and connected on first use, reconnected when it closed.
    OnDemand(Box<OnDemand>),
}

struct OnDemand {
    host: RemoteHost,
    /// None until the target is resolved (`~/.ssh/config`, keys) on first use.
    source: Mutex<Option<LinkSource>>,
}

impl OnDemand {
    /// The open link, or a new one; one caller connects while the others wait for it.
    async fn link(&self) -> Result<Link, SshError> {
        let mut source = self.source.lock().await;
        if source.is_none() {
            let target = resolve::target_from_cli(&self.host.host, &self.host.account)
                .await
                // The same one-line text the connect errors give; there is no better variant.
                .map_err(|e| SshError::Shared(format!("remoteHost {}: {e}", self.host.host)))?;
            *source = Some(LinkSource::new(target, self.host.options.clone()));
        }
        let Some(source) = source.as_mut() else {
            return Err(SshError::Shared(format!(
                "remoteHost {}: no target",
                self.host.host
            )));
        };
        let link = source.link().await;
        match &link {
            Ok(link) => debug!(target = %link.display(), "connected to remoteHost for attachments"),
            Err(err) => warn!(host = %self.host.host, "cannot connect to remoteHost for attachments: {err}"),
        }
        link
    }
}

/// The link of a [`RemoteFiles`] as its users see it: the calls of [`Link`] they make, connecting
/// first when the files are reached on demand.
pub struct RemoteLink<'a>(&'a Source);

impl RemoteLink<'_> {
    /// Whether the connection is gone for good. An on-demand link never is: its next use reconnects.
    pub fn is_closed(&self) -> bool {
        match self.0 {
            Source::Fixed(link) => link.is_closed(),
            Source::OnDemand(_) => false,
        }
    }

    pub async fn exec(&self, command: &str) -> Result<ExecChannel, SshError> {
        self.current().await?.exec(command).await
    }

    pub async fn capture(&self, command: &str, timeout: Duration) -> Result<Captured, SshError> {
        self.current().await?.capture(command, timeout).await
    }

    /// `user@host:port` for logs; an on-demand link names the configured `remoteHost`.
    pub fn display(&self) -> String {
        match self.0 {
            Source::Fixed(link) => link.display(),
            Source::OnDemand(on_demand) => on_demand.host.host.clone(),
        }
    }

    async fn current(&self) -> Result<Link, SshError> {
        match self.0 {
            Source::Fixed(link) => Ok(link.clone()),
            Source::OnDemand(on_demand) => on_demand.link().await,
        }
    }
}

/// Files on the Mac, over the account's SSH connection (its own, or a shared one).
pub struct RemoteFiles {
    link: Source,
    request_timeout: Duration,
    state: Mutex<SftpState>,
    pulls: Semaphore,
}

enum SftpState {
    /// Not opened yet, or dropped after a failure: opened on next use.
    Closed,
    Open(Arc<Sftp>),
    /// The server refused the subsystem: use exec `cat` for this connection.
    Refused,
}

impl RemoteFiles {
    /// `request_timeout` bounds each SFTP request (≥ 60 s: a slow relayed link may take long to
    /// fill the pipelined reads).
    pub fn new(link: Link, request_timeout: Duration) -> Self {
        Self::with_source(Source::Fixed(link), request_timeout)
    }

    /// The files of `host`, over a connection opened on first use and reopened after it closed.
    pub fn on_demand(host: RemoteHost, request_timeout: Duration) -> Self {
        let on_demand = OnDemand {
            host,
            source: Mutex::new(None),
        };
        Self::with_source(Source::OnDemand(Box::new(on_demand)), request_timeout)
    }

    fn with_source(link: Source, request_timeout: Duration) -> Self {
        Self {
            link,
            request_timeout,
            state: Mutex::new(SftpState::Closed),
            pulls: Semaphore::new(MAX_CONCURRENT_PULLS),
        }
    }

    pub fn link(&self) -> RemoteLink<'_> {
        RemoteLink(&self.link)
    }

    pub async fn method(&self) -> Method {
        match self.sftp().await {
            Some(_) => Method::Sftp,
            None => Method::ExecCat,
        }
    }

    /// The SFTP session, opened on first use; None when the server refuses the subsystem (or no
    /// connection can be made to an on-demand host).
    pub async fn sftp(&self) -> Option<Arc<Sftp>> {
        self.session().await.ok().flatten()
    }

    /// The SFTP session (None: refused, use exec), or the SSH error when an on-demand host cannot
    /// be reached: then there is no exec to fall back to either, and the file fails with it.
    async fn session(&self) -> Result<Option<Arc<Sftp>>, FileError> {
        let mut state = self.state.lock().await;
        match &*state {
            // An on-demand connection that closed under the session takes a new one (and a new session).
            SftpState::Open(session) if !self.reconnects() => return Ok(Some(session.clone())),
            SftpState::Refused => return Ok(None),
            SftpState::Open(_) | SftpState::Closed => {}
        }
        let link = self
            .link()
            .current()
            .await
            .map_err(|e| FileError::Other(e.to_string()))?;
        match link.sftp(self.request_timeout).await {
            Ok(session) => {
                let session = Arc::new(session);
                *state = SftpState::Open(session.clone());
                Ok(Some(session))
            }
            Err(SftpError::Refused) => {
                info!(target = %link.display(), "the server refused the sftp subsystem; reading files with cat over exec");
                *state = SftpState::Refused;
                Ok(None)
            }
            Err(err) => {
                // Not a refusal: leave it closed so the next use tries again, and use exec meanwhile.
                warn!(target = %link.display(), "cannot open sftp: {err}");
                *state = SftpState::Closed;
                Ok(None)
            }
        }
    }

    /// Whether the open SFTP session must be replaced: its on-demand connection closed.
    fn reconnects(&self) -> bool {
        match &self.link {
            Source::Fixed(_) => false,
            Source::OnDemand(on_demand) => on_demand
                .source
                .try_lock()
                .ok()
                .and_then(|source| source.as_ref().and_then(LinkSource::current))
                .is_some_and(|link| link.is_closed()),
        }
    }

    /// Forget a session that failed in a way a new one may fix.
    async fn drop_sftp(&self, broken: &Arc<Sftp>) {
        let mut state = self.state.lock().await;
        if let SftpState::Open(current) = &*state
            && Arc::ptr_eq(current, broken)
        {
            debug!("dropping the sftp session after an error; the next pull reopens it");
            *state = SftpState::Closed;
        }
    }

    /// What an SFTP failure means for the file; a broken session is dropped to be reopened.
    async fn sftp_error(&self, session: &Arc<Sftp>, err: SftpError) -> FileError {
        if err.breaks_session() {
            self.drop_sftp(session).await;
        }
        match err {
            SftpError::NotFound { .. } => FileError::NotFound,
            SftpError::Denied { message } => FileError::Denied(message),
            SftpError::Timeout => FileError::Timeout,
            other => FileError::Other(other.to_string()),
        }
    }

    pub async fn probe(&self, path: &str) -> Result<Probe, FileError> {
        let Some(sftp) = self.session().await? else {
            return self.exec_probe(path).await;
        };
        let real = match sftp.realpath(path).await {
            Ok(real) => real,
            Err(err) => return Err(self.sftp_error(&sftp, err).await),
        };
        let stat = match sftp.stat(&real).await {
            Ok(stat) => stat,
            Err(err) => return Err(self.sftp_error(&sftp, err).await),
        };
        if !stat.is_file {
            return Err(FileError::NotAFile);
        }
        Ok(Probe {
            real_path: real,
            size: stat.size,
        })
    }

    /// The login's home folder on the Mac (None without SFTP).
    pub async fn home(&self) -> Option<String> {
        self.sftp().await?.realpath(".").await.ok()
    }

    /// How many entries the folder at `path` lists (SFTP only).
    pub async fn count_entries(&self, path: &str) -> Result<usize, FileError> {
        let Some(sftp) = self.sftp().await else {
            return Err(FileError::Other("no sftp".into()));
        };
        match sftp.count_entries(path).await {
            Ok(n) => Ok(n),
            Err(err) => Err(self.sftp_error(&sftp, err).await),
        }
    }

    pub async fn read_into(
        &self,
        real_path: &str,
        limit: u64,
        out: &mut (impl AsyncWrite + Unpin + Send),
    ) -> Result<u64, FileError> {
        let _permit = self
            .pulls
            .acquire()
            .await
            .map_err(|_| FileError::Other("the connection is closing".into()))?;
        let Some(sftp) = self.session().await? else {
            return self.exec_cat(real_path, limit, out).await;
        };
        let file = match sftp.open(real_path).await {
            Ok(file) => file,
            Err(err) => return Err(self.sftp_error(&sftp, err).await),
        };
        let result = copy_limited(file, limit, out).await;
        if let Err(FileError::Other(_) | FileError::Timeout) = &result {
            self.drop_sftp(&sftp).await;
        }
        result
    }

    /// Resolve and stat with the remote shell: `realpath` (macOS 13+, GNU coreutils) then `wc -c`.
    async fn exec_probe(&self, path: &str) -> Result<Probe, FileError> {
        let command = format!(
            "p={}; r=$(realpath -- \"$p\" 2>/dev/null) || {{ [ -e \"$p\" ] && echo ERR || echo MISSING; exit 0; }}; \
             if [ ! -f \"$r\" ]; then echo NOTFILE; elif [ ! -r \"$r\" ]; then echo DENIED; \
             else printf 'OK %s\\n%s\\n' \"$(wc -c < \"$r\" | tr -d ' ')\" \"$r\"; fi",
            quote::quote(path)
        );
        let captured = self
            .link()
            .capture(&command, self.request_timeout)
            .await
            .map_err(|e| FileError::Other(e.to_string()))?;
        let mut lines = captured.stdout.lines();
        let first = lines.next().unwrap_or_default();
        match first.split_once(' ').map_or((first, ""), |(a, b)| (a, b)) {
            ("OK", size) => Ok(Probe {
                size: size
                    .trim()
                    .parse()
                    .map_err(|_| FileError::Other(format!("unexpected size {size:?}")))?,
                real_path: lines.next().unwrap_or_default().to_string(),
            }),
            ("MISSING", _) => Err(FileError::NotFound),
            ("NOTFILE", _) => Err(FileError::NotAFile),
            ("DENIED", _) => Err(FileError::Denied(String::new())),
            _ => Err(FileError::Other(format!(
                "cannot resolve the path on the Mac: {}",
                captured.stderr.trim()
            ))),
        }
    }

    /// Stream `cat -- <path>` from an exec channel into `out`, at most `limit` bytes; each step
    /// (the exec's start, every chunk) is bounded by the request timeout.
    async fn exec_cat(
        &self,
        real_path: &str,
        limit: u64,
        out: &mut (impl AsyncWrite + Unpin + Send),
    ) -> Result<u64, FileError> {
        let command = format!("/bin/cat -- {}", quote::quote(real_path));
        let mut exec = tokio::time::timeout(self.request_timeout, self.link().exec(&command))
            .await
            .map_err(|_| FileError::Timeout)?
            .map_err(|e| FileError::Other(e.to_string()))?;
        let mut total = 0u64;
        let mut status = None;
        let mut stderr = Vec::new();
        loop {
            let event = tokio::time::timeout(self.request_timeout, exec.next())
                .await
                .map_err(|_| FileError::Timeout)?;
            match event {
                Some(ExecEvent::Stdout(data)) => {
                    total += data.len() as u64;
                    if total > limit {
                        let _ = exec.close().await;
                        return Err(FileError::TooLarge { limit });
                    }
                    out.write_all(&data)
                        .await
                        .map_err(|e| FileError::Other(format!("cannot write the local copy: {e}")))?;
                }
                Some(ExecEvent::Stderr(data)) if stderr.len() < 4096 => stderr.extend_from_slice(&data),
                Some(ExecEvent::Exited(code)) => status = Some(code),
                None => break,
                Some(_) => {}
            }
        }
        cat_outcome(status, &String::from_utf8_lossy(&stderr), total)
    }
}

/// What `cat` ending with `status` and `stderr` means for the file.
fn cat_outcome(status: Option<i32>, stderr: &str, total: u64) -> Result<u64, FileError> {
    match status {
        Some(0) => Ok(total),
        _ if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") => {
            Err(FileError::Denied(stderr.trim().to_string()))
        }
        _ if stderr.contains("No such file") => Err(FileError::NotFound),
        _ => Err(FileError::Other(format!("cat failed: {}", stderr.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_remote_host_target_from_the_ssh_block() {
        let ssh = |user: Option<&str>, port: Option<u16>| crate::config::SshConfig {
            user: user.map(str::to_string),
            port,
            ..Default::default()
        };
        let table = [
            ("mac", None, "mac"),
            ("bot@mac", Some(ssh(Some("other"), None)), "bot@mac"),
            ("mac", Some(ssh(Some("bot"), Some(2222))), "bot@mac:2222"),
            ("[::1]", Some(ssh(None, Some(22))), "[::1]:22"),
        ];
        for (remote_host, ssh, want) in table {
            assert_eq!(target_of(remote_host, ssh.as_ref()), want, "{remote_host}");
        }
    }

    #[test]
    fn a_finished_cat_yields_the_bytes_read() {
        assert_eq!(cat_outcome(Some(0), "", 42).ok(), Some(42));
    }

    #[test]
    fn a_failed_cat_is_told_apart_by_what_it_said_on_stderr() {
        let denied = cat_outcome(Some(1), "cat: x: Operation not permitted\n", 0);
        assert!(
            matches!(&denied, Err(FileError::Denied(d)) if d == "cat: x: Operation not permitted"),
            "{denied:?}"
        );
        let missing = cat_outcome(Some(1), "cat: x: No such file or directory", 0);
        assert!(matches!(missing, Err(FileError::NotFound)), "{missing:?}");
        let killed = cat_outcome(None, "", 10);
        assert!(
            matches!(&killed, Err(FileError::Other(m)) if m == "cat failed: "),
            "{killed:?}"
        );
    }
}

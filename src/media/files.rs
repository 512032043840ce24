//! Where attachment files are read from: the Mac over the account's SSH connection (one lazily
//! opened SFTP session, or `cat` over an exec channel when the server refuses the `sftp` subsystem),
//! or this machine's file system when imsg runs locally.

use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};

use crate::transport::ssh::{SshConnection, quote};

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

/// Files on the Mac, over the account's SSH connection.
pub struct RemoteFiles {
    connection: Arc<SshConnection>,
    request_timeout: Duration,
    state: Mutex<SftpState>,
    pulls: Semaphore,
}

enum SftpState {
    /// Not opened yet, or dropped after a failure: opened on next use.
    Closed,
    Open(Arc<SftpSession>),
    /// The server refused the subsystem: use exec `cat` for this connection.
    Refused,
}

impl RemoteFiles {
    /// `request_timeout` bounds each SFTP request (≥ 60 s: a slow relayed link may take long to
    /// fill the pipelined reads).
    pub fn new(connection: Arc<SshConnection>, request_timeout: Duration) -> Self {
        Self {
            connection,
            request_timeout,
            state: Mutex::new(SftpState::Closed),
            pulls: Semaphore::new(MAX_CONCURRENT_PULLS),
        }
    }

    pub fn connection(&self) -> &Arc<SshConnection> {
        &self.connection
    }

    pub async fn method(&self) -> Method {
        match self.sftp().await {
            Some(_) => Method::Sftp,
            None => Method::ExecCat,
        }
    }

    /// The SFTP session, opened on first use; None when the server refuses the subsystem.
    pub async fn sftp(&self) -> Option<Arc<SftpSession>> {
        let mut state = self.state.lock().await;
        match &*state {
            SftpState::Open(session) => return Some(session.clone()),
            SftpState::Refused => return None,
            SftpState::Closed => {}
        }
        match self.open_sftp().await {
            Ok(Some(session)) => {
                let session = Arc::new(session);
                *state = SftpState::Open(session.clone());
                Some(session)
            }
            Ok(None) => {
                info!(target = %self.connection.target().display(), "the server refused the sftp subsystem; reading files with cat over exec");
                *state = SftpState::Refused;
                None
            }
            Err(err) => {
                // Not a refusal: leave it closed so the next use tries again, and use exec meanwhile.
                warn!(target = %self.connection.target().display(), "cannot open sftp: {err}");
                None
            }
        }
    }

    async fn open_sftp(&self) -> Result<Option<SftpSession>, String> {
        let mut channel = self
            .connection
            .handle()
            .channel_open_session()
            .await
            .map_err(|e| e.to_string())?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => return Ok(None),
                None => return Err("the channel closed before the sftp subsystem started".into()),
                Some(_) => {}
            }
        }
        let config = russh_sftp::client::Config {
            request_timeout_secs: self.request_timeout.as_secs().max(1),
            ..Default::default()
        };
        SftpSession::new_with_config(channel.into_stream(), config)
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Forget a session that failed in a way a new one may fix.
    async fn drop_sftp(&self, broken: &Arc<SftpSession>) {
        let mut state = self.state.lock().await;
        if let SftpState::Open(current) = &*state
            && Arc::ptr_eq(current, broken)
        {
            debug!("dropping the sftp session after an error; the next pull reopens it");
            *state = SftpState::Closed;
        }
    }

    async fn sftp_error(
        &self,
        session: &Arc<SftpSession>,
        err: russh_sftp::client::error::Error,
    ) -> FileError {
        use russh_sftp::client::error::Error;
        match err {
            Error::Status(status) => match status.status_code {
                StatusCode::NoSuchFile => FileError::NotFound,
                StatusCode::PermissionDenied => FileError::Denied(status.error_message),
                _ => FileError::Other(format!("{}: {}", status.status_code, status.error_message)),
            },
            Error::Timeout => {
                self.drop_sftp(session).await;
                FileError::Timeout
            }
            other => {
                self.drop_sftp(session).await;
                FileError::Other(other.to_string())
            }
        }
    }

    pub async fn probe(&self, path: &str) -> Result<Probe, FileError> {
        let Some(sftp) = self.sftp().await else {
            return self.exec_probe(path).await;
        };
        let real = match sftp.canonicalize(path).await {
            Ok(real) => real,
            Err(err) => return Err(self.sftp_error(&sftp, err).await),
        };
        let meta = match sftp.metadata(real.as_str()).await {
            Ok(meta) => meta,
            Err(err) => return Err(self.sftp_error(&sftp, err).await),
        };
        if !meta.is_regular() {
            return Err(FileError::NotAFile);
        }
        Ok(Probe {
            real_path: real,
            size: meta.len(),
        })
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
        let Some(sftp) = self.sftp().await else {
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
        let captured =
            crate::transport::ssh::exec::exec_capture(&self.connection, &command, self.request_timeout)
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

    /// Stream `cat -- <path>` from an exec channel into `out`, at most `limit` bytes.
    async fn exec_cat(
        &self,
        real_path: &str,
        limit: u64,
        out: &mut (impl AsyncWrite + Unpin + Send),
    ) -> Result<u64, FileError> {
        let command = format!("/bin/cat -- {}", quote::quote(real_path));
        let other = |e: russh::Error| FileError::Other(e.to_string());
        let mut channel = self
            .connection
            .handle()
            .channel_open_session()
            .await
            .map_err(other)?;
        channel.exec(true, command.as_str()).await.map_err(other)?;
        let mut total = 0u64;
        let mut status = None;
        let mut stderr = Vec::new();
        loop {
            let message = tokio::time::timeout(self.request_timeout, channel.wait())
                .await
                .map_err(|_| FileError::Timeout)?;
            match message {
                Some(ChannelMsg::Data { data }) => {
                    total += data.len() as u64;
                    if total > limit {
                        let _ = channel.close().await;
                        return Err(FileError::TooLarge { limit });
                    }
                    out.write_all(&data)
                        .await
                        .map_err(|e| FileError::Other(format!("cannot write the local copy: {e}")))?;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) if stderr.len() < 4096 => {
                    stderr.extend_from_slice(&data)
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Failure) => {
                    return Err(FileError::Other(format!("the server refused `{command}`")));
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        let stderr = String::from_utf8_lossy(&stderr);
        match status {
            Some(0) => Ok(total),
            _ if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") => {
                Err(FileError::Denied(stderr.trim().to_string()))
            }
            _ if stderr.contains("No such file") => Err(FileError::NotFound),
            _ => Err(FileError::Other(format!("cat failed: {}", stderr.trim()))),
        }
    }
}

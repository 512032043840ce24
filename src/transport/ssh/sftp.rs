//! SFTP on the account's connection: the `sftp` subsystem started on a session channel of it (a
//! refusal told apart from a failure, so attachments can fall back to exec), and [`Sftp`], the few
//! operations attachments need, with errors in our own terms. Reads keep the SFTP client's
//! pipelining and its per-request timeout (docs/attachments.md).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use russh_sftp::client::error::Error as ClientError;
use russh_sftp::client::fs::File;
use russh_sftp::client::{Config, SftpSession};
use russh_sftp::protocol::{FileAttributes, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use russh::ChannelStream;
use russh::client::Msg;

use super::SshConnection;
use super::channel::{Reply, wait_reply};

/// Why an SFTP operation failed. The texts are the SFTP client's own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SftpError {
    /// The server refused the `sftp` subsystem: files must be reached another way.
    #[error("the server refused the sftp subsystem")]
    Refused,
    #[error("No such file: {message}")]
    NotFound { message: String },
    #[error("Permission denied: {message}")]
    Denied { message: String },
    /// Any other error status the server answered with; the session is fine.
    #[error("{code}: {message}")]
    Status { code: String, message: String },
    /// A request got no answer within the request timeout.
    #[error("Timeout")]
    Timeout,
    /// The session failed (I/O, protocol, the channel closed): a new one may work.
    #[error("{0}")]
    Session(String),
}

impl SftpError {
    /// Whether the session itself is in doubt, rather than the server having answered.
    pub fn breaks_session(&self) -> bool {
        matches!(self, SftpError::Timeout | SftpError::Session(_))
    }
}

impl From<ClientError> for SftpError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Status(status) => {
                let message = status.error_message;
                match status.status_code {
                    StatusCode::NoSuchFile => SftpError::NotFound { message },
                    StatusCode::PermissionDenied => SftpError::Denied { message },
                    code => SftpError::Status {
                        code: code.to_string(),
                        message,
                    },
                }
            }
            ClientError::Timeout => SftpError::Timeout,
            other => SftpError::Session(other.to_string()),
        }
    }
}

impl SshConnection {
    /// Start the `sftp` subsystem on a new channel of this connection; each request then times out
    /// after `request_timeout` (whole seconds, at least one).
    pub async fn sftp(&self, request_timeout: Duration) -> Result<Sftp, SftpError> {
        Sftp::over_stream(self.sftp_channel().await?, request_timeout).await
    }

    /// The raw byte stream of a new `sftp` subsystem channel: a sharing master pipes it to a
    /// client, which runs the SFTP client over its socket.
    pub async fn sftp_channel(&self) -> Result<ChannelStream<Msg>, SftpError> {
        let session = |e: russh::Error| SftpError::Session(e.to_string());
        let mut channel = self.handle.channel_open_session().await.map_err(session)?;
        channel.request_subsystem(true, "sftp").await.map_err(session)?;
        match wait_reply(&mut channel).await {
            Reply::Accepted => Ok(channel.into_stream()),
            Reply::Refused => Err(SftpError::Refused),
            Reply::Closed => Err(SftpError::Session(
                "the channel closed before the sftp subsystem started".into(),
            )),
        }
    }
}

/// What a stat says about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    /// A regular file (not a folder, device, …).
    pub is_file: bool,
}

/// An SFTP session on the connection. Requests from several tasks run concurrently.
pub struct Sftp {
    session: SftpSession,
}

impl std::fmt::Debug for Sftp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sftp")
    }
}

impl Sftp {
    /// The SFTP client over any byte stream that reaches an `sftp` server: a subsystem channel, or
    /// a sharing master's socket piped to one. Each request times out after `request_timeout`
    /// (whole seconds, at least one).
    pub async fn over_stream<S>(stream: S, request_timeout: Duration) -> Result<Sftp, SftpError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = Config {
            request_timeout_secs: request_timeout.as_secs().max(1),
            ..Default::default()
        };
        let session = SftpSession::new_with_config(stream, config).await?;
        Ok(Sftp { session })
    }

    /// The absolute path with symlinks and `..` resolved on the server (`.` is the login's home).
    pub async fn realpath(&self, path: &str) -> Result<String, SftpError> {
        Ok(self.session.canonicalize(path).await?)
    }

    /// Follows symlinks.
    pub async fn stat(&self, path: &str) -> Result<Stat, SftpError> {
        let meta = self.session.metadata(path).await?;
        Ok(Stat {
            size: meta.len(),
            is_file: meta.is_regular(),
        })
    }

    /// Open a file for reading.
    pub async fn open(&self, path: &str) -> Result<SftpFile, SftpError> {
        Ok(SftpFile(self.session.open(path).await?))
    }

    /// Create (or truncate) a file for writing.
    pub async fn create(&self, path: &str) -> Result<SftpFile, SftpError> {
        Ok(SftpFile(self.session.create(path).await?))
    }

    pub async fn create_dir(&self, path: &str) -> Result<(), SftpError> {
        Ok(self.session.create_dir(path).await?)
    }

    /// Set the permission bits of `path` (e.g. 0o700).
    pub async fn set_mode(&self, path: &str, mode: u32) -> Result<(), SftpError> {
        let mut attributes = FileAttributes::empty();
        attributes.permissions = Some(mode);
        Ok(self.session.set_metadata(path, attributes).await?)
    }

    pub async fn remove_file(&self, path: &str) -> Result<(), SftpError> {
        Ok(self.session.remove_file(path).await?)
    }

    /// Remove an empty folder.
    pub async fn remove_dir(&self, path: &str) -> Result<(), SftpError> {
        Ok(self.session.remove_dir(path).await?)
    }

    /// How many entries a folder lists.
    pub async fn count_entries(&self, path: &str) -> Result<usize, SftpError> {
        Ok(self.session.read_dir(path).await?.count())
    }
}

/// An open remote file. Reading it keeps several read requests in flight (the SFTP client's
/// pipelining); the bytes go straight into the caller's buffer.
pub struct SftpFile(File);

impl AsyncRead for SftpFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SftpFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh_sftp::protocol::Status;

    fn status(code: StatusCode, message: &str) -> ClientError {
        ClientError::Status(Status {
            id: 7,
            status_code: code,
            error_message: message.into(),
            language_tag: String::new(),
        })
    }

    #[test]
    fn errors_keep_the_sftp_clients_wording() {
        for err in [
            status(StatusCode::NoSuchFile, "gone.jpg"),
            status(StatusCode::PermissionDenied, "private.jpg"),
            status(StatusCode::Failure, "disk full"),
            ClientError::Timeout,
            ClientError::IO("broken pipe".into()),
        ] {
            assert_eq!(SftpError::from(err.clone()).to_string(), err.to_string());
        }
    }

    #[test]
    fn only_timeouts_and_broken_sessions_call_for_a_new_session() {
        let broken = |err: ClientError| SftpError::from(err).breaks_session();
        assert!(!broken(status(StatusCode::NoSuchFile, "")));
        assert!(!broken(status(StatusCode::PermissionDenied, "")));
        assert!(!broken(status(StatusCode::Failure, "")));
        assert!(broken(ClientError::Timeout));
        assert!(broken(ClientError::UnexpectedPacket));
        assert!(!SftpError::Refused.breaks_session());
    }

    #[test]
    fn names_missing_and_denied_files_apart_from_other_statuses() {
        assert!(matches!(
            SftpError::from(status(StatusCode::NoSuchFile, "x")),
            SftpError::NotFound { .. }
        ));
        assert!(matches!(
            SftpError::from(status(StatusCode::PermissionDenied, "no FDA")),
            SftpError::Denied { message } if message == "no FDA"
        ));
        assert!(matches!(
            SftpError::from(status(StatusCode::OpUnsupported, "")),
            SftpError::Status { .. }
        ));
    }
}

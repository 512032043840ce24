//! How this process reaches the Mac: its own SSH connection, or a connection-sharing master's through
//! the control socket (docs/ssh.md, "Connection sharing"). Everything that runs commands or opens
//! SFTP on the Mac (attachments, uploads, the drop-in) asks a [`Link`], so it works the same way
//! over either.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::control::{self, ControlClient, client::Spawner};
use super::ssh::exec::Captured;
use super::ssh::{self, ExecChannel, Sftp, SftpError, SshConnection, SshError, SshTarget};

/// How this process reaches the Mac: its own SSH connection, or a master's through the control socket.
#[derive(Clone, Debug)]
pub enum Link {
    Direct(Arc<SshConnection>),
    Shared(Arc<ControlClient>),
}

/// What [`open`] needs to share a connection.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// The bridge's stateDir; sockets live in its `control/` folder.
    pub state_dir: PathBuf,
    /// How long a master outlives its last client; zero turns sharing off.
    pub persist: Duration,
    /// The global options a spawned master needs to resolve the same target (`--config P`,
    /// `--account ID`, `--target T`); `control-master --socket PATH` is appended.
    pub master_args: Vec<OsString>,
}

impl Link {
    /// Run `command` on a new session channel; returns once the server has accepted the exec
    /// (see [`SshConnection::exec`]).
    pub async fn exec(&self, command: &str) -> Result<ExecChannel, SshError> {
        match self {
            Link::Direct(connection) => connection.exec(command).await,
            Link::Shared(client) => client.exec(command).await,
        }
    }

    /// Start `imsg rpc` (`command`) for this process: its own exec channel on a direct link; on a
    /// shared link, a seat on the master's warm one (no handshake, no imsg start).
    pub async fn rpc(&self, command: &str) -> Result<ExecChannel, SshError> {
        match self {
            Link::Direct(connection) => connection.exec(command).await,
            Link::Shared(client) => client.rpc(command).await,
        }
    }

    /// A new SFTP session; each request times out after `request_timeout`.
    pub async fn sftp(&self, request_timeout: Duration) -> Result<Sftp, SftpError> {
        match self {
            Link::Direct(connection) => connection.sftp(request_timeout).await,
            Link::Shared(client) => client.sftp(request_timeout).await,
        }
    }

    /// Whether the connection is gone. Shared: only when the master said it cannot connect, or no
    /// master could be reached (the master reconnects on the next request by itself).
    pub fn is_closed(&self) -> bool {
        match self {
            Link::Direct(connection) => connection.is_closed(),
            Link::Shared(client) => client.is_closed(),
        }
    }

    /// `user@host:port` (plus ` via master` when shared), for logs.
    pub fn display(&self) -> String {
        match self {
            Link::Direct(connection) => control::target_key(connection.target()),
            Link::Shared(client) => format!("{} via master", client.target()),
        }
    }

    /// Run a short command and collect its output (bounded) and exit status, like
    /// [`ssh::exec::exec_capture`] on a connection.
    pub async fn capture(&self, command: &str, timeout: Duration) -> Result<Captured, SshError> {
        match self {
            Link::Direct(connection) => ssh::exec::exec_capture(connection, command, timeout).await,
            Link::Shared(_) => tokio::time::timeout(timeout, self.capture_unbounded(command))
                .await
                .map_err(|_| SshError::Timeout {
                    what: "running",
                    addr: format!("`{command}` on {}", self.display()),
                    after: timeout,
                })?,
        }
    }

    async fn capture_unbounded(&self, command: &str) -> Result<Captured, SshError> {
        Ok(ssh::exec::collect(self.exec(command).await?).await)
    }
}

/// persist == 0: Direct(connect(target)). Else: the socket for this target; connect to it when a
/// master listens; otherwise spawn a master, then connect. Any failure to set up sharing (folder not
/// writable or not private, path too long for `sun_path`, spawn failed) falls back to Direct — never
/// an error of its own. An SSH failure the master reports (host key, authentication, …) is returned
/// as the same one-line error a direct connect gives.
pub async fn open(target: &SshTarget, options: &LinkOptions) -> Result<Link, SshError> {
    if options.persist.is_zero() {
        return direct(target).await;
    }
    let socket = match control::prepare(&options.state_dir, target) {
        Ok(socket) => socket,
        Err(err) if err.is_unsafe() => {
            warn!("{err}");
            return direct(target).await;
        }
        Err(err) => {
            debug!("connection sharing off: {err}");
            return direct(target).await;
        }
    };
    let spawner = match std::env::current_exe() {
        Ok(program) => Some(Spawner {
            program,
            args: options.master_args.clone(),
            wait: target.connect_timeout,
        }),
        Err(err) => {
            debug!("cannot find our own executable to start a master: {err}");
            None
        }
    };
    let client = ControlClient::new(socket, control::target_key(target), spawner);
    if !client.master_listens().await
        && let Err(err) = client.start_master().await
    {
        debug!("connection sharing off: no master came up: {err}");
        return direct(target).await;
    }
    match client.check().await {
        Ok(()) => Ok(Link::Shared(Arc::new(client))),
        Err(err @ SshError::Shared(_)) => Err(err),
        Err(err) => {
            debug!("connection sharing off: {err}");
            direct(target).await
        }
    }
}

async fn direct(target: &SshTarget) -> Result<Link, SshError> {
    Ok(Link::Direct(Arc::new(ssh::connect(target).await?)))
}

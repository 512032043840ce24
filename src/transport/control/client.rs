//! The client end of a control socket: each exec or SFTP request is one new connection to the
//! master's socket (header line, answer line, then the stream). When no master listens any more
//! (it exited `controlPersistMs` after its last client), the client starts a new one, as it did at
//! first.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tracing::debug;

use super::protocol::{self, Answer, FailureKind, Header, Op, VERSION};
use crate::transport::ssh::{ExecChannel, Sftp, SftpError, SshError};
use crate::util::lock;

/// A master's `<socket>.log` past this size is started over by the next master.
const LOG_MAX_BYTES: u64 = 1024 * 1024;
/// How often a client looks for the socket of a master it just started: a connect to a socket that
/// is not there yet costs microseconds, and every cold start pays half a pause on average.
const POLL: Duration = Duration::from_millis(2);

/// How to start a master for this socket: `<program> <args…> control-master --socket <path>`.
#[derive(Debug, Clone)]
pub struct Spawner {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// How long a new master may take to listen (the target's connect timeout).
    pub wait: Duration,
}

/// A connection to the Mac through a master's socket.
#[derive(Debug)]
pub struct ControlClient {
    socket: PathBuf,
    target: String,
    spawner: Option<Spawner>,
    /// The master said the SSH connection cannot be made, or no master could be reached.
    closed: AtomicBool,
    /// The last master we started, reaped once it exits so it never lingers as a zombie.
    child: Mutex<Option<Child>>,
}

/// What a request came back with, before it is turned into the caller's error type.
enum Refusal {
    /// The master answered `ok: false`.
    Answered { kind: FailureKind, error: String },
    /// The socket failed.
    Socket(SshError),
}

impl ControlClient {
    /// A client for the master at `socket`; `target` names the Mac in logs. With a `spawner`, a
    /// missing master is started again on the next request.
    pub fn new(socket: PathBuf, target: String, spawner: Option<Spawner>) -> ControlClient {
        ControlClient {
            socket,
            target,
            spawner,
            closed: AtomicBool::new(false),
            child: Mutex::new(None),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `user@host:port` of the shared connection.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether a master accepts connections on the socket right now.
    pub async fn master_listens(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }

    /// Start a master (its own process group, so a terminal's ^C to us does not stop it; stderr
    /// appended to `<socket>.log`) and wait until it listens.
    pub async fn start_master(&self) -> Result<(), SshError> {
        let Some(spawner) = &self.spawner else {
            return Err(self.socket_error(std::io::ErrorKind::NotFound.into()));
        };
        let child = spawn_master(spawner, &self.socket).map_err(|e| self.socket_error(e))?;
        debug!(socket = %self.socket.display(), pid = child.id(), "started a connection-sharing master");
        if let Some(mut previous) = lock(&self.child).replace(child) {
            let _ = previous.try_wait();
        }
        let deadline = tokio::time::Instant::now() + spawner.wait;
        loop {
            match UnixStream::connect(&self.socket).await {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(self.socket_error(err)),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Ask the master to have the SSH connection up: the error a direct connect would give, if any.
    pub async fn check(&self) -> Result<(), SshError> {
        match self.request(Op::Connect).await {
            Ok(_) => Ok(()),
            Err(Refusal::Answered { error, .. }) => Err(SshError::Shared(error)),
            Err(Refusal::Socket(err)) => Err(err),
        }
    }

    /// Run `command` through the master; returns once the server accepted the exec.
    pub async fn exec(&self, command: &str) -> Result<ExecChannel, SshError> {
        let op = Op::Exec {
            command: command.to_string(),
        };
        self.channel(op, command).await
    }

    /// Join the master's warm `imsg rpc` for `command` (the master starts it when none runs): the
    /// channel carries this client's JSON-RPC lines only, and the end of its stdin ends only it.
    pub async fn rpc(&self, command: &str) -> Result<ExecChannel, SshError> {
        let op = Op::Rpc {
            command: command.to_string(),
        };
        self.channel(op, command).await
    }

    /// A command channel through the master (`op` is an exec or an rpc of `command`).
    async fn channel(&self, op: Op, command: &str) -> Result<ExecChannel, SshError> {
        match self.request(op).await {
            Ok(stream) => Ok(ExecChannel::over_control(
                stream,
                self.socket.display().to_string(),
            )),
            Err(Refusal::Answered {
                kind: FailureKind::Refused,
                ..
            }) => Err(SshError::ExecRefused {
                command: command.to_string(),
            }),
            Err(Refusal::Answered { error, .. }) => Err(SshError::Shared(error)),
            Err(Refusal::Socket(err)) => Err(err),
        }
    }

    /// An SFTP session whose bytes the master pipes to a new `sftp` subsystem channel.
    pub async fn sftp(&self, request_timeout: Duration) -> Result<Sftp, SftpError> {
        match self.request(Op::Sftp).await {
            Ok(stream) => Sftp::over_stream(stream, request_timeout).await,
            Err(Refusal::Answered {
                kind: FailureKind::Refused,
                ..
            }) => Err(SftpError::Refused),
            Err(Refusal::Answered { error, .. }) => Err(SftpError::Session(error)),
            Err(Refusal::Socket(err)) => Err(SftpError::Session(err.to_string())),
        }
    }

    /// One request. A master that stopped just as we connected closes the socket without an
    /// answer; `connect` and `sftp` are then asked once more (of a new master), an exec is not: the
    /// command may have started.
    async fn request(&self, op: Op) -> Result<UnixStream, Refusal> {
        let idempotent = !matches!(op, Op::Exec { .. } | Op::Rpc { .. });
        match self.request_once(op.clone()).await {
            Err(Refusal::Socket(err)) if idempotent => {
                debug!(socket = %self.socket.display(), "asking again: {err}");
                self.request_once(op).await
            }
            result => result,
        }
    }

    /// Connect (starting a master when none listens), send the header, read the answer.
    async fn request_once(&self, op: Op) -> Result<UnixStream, Refusal> {
        let mut stream = match UnixStream::connect(&self.socket).await {
            Ok(stream) => stream,
            Err(err) if self.spawner.is_none() => return Err(self.dead(self.socket_error(err))),
            Err(err) => {
                debug!(socket = %self.socket.display(), "no master listens ({err}); starting one");
                self.start_master().await.map_err(|e| self.dead(e))?;
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|e| self.dead(self.socket_error(e)))?
            }
        };
        let header = Header { v: VERSION, op };
        stream
            .write_all(&protocol::line(&header))
            .await
            .map_err(|e| self.dead(self.socket_error(e)))?;
        let line = protocol::read_line(&mut stream)
            .await
            .map_err(|e| self.dead(self.socket_error(std::io::Error::other(e.to_string()))))?
            .ok_or_else(|| {
                self.dead(self.socket_error(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the master closed the socket without an answer",
                )))
            })?;
        let answer: Answer = serde_json::from_str(&line)
            .map_err(|e| self.dead(self.socket_error(std::io::Error::other(format!("bad answer: {e}")))))?;
        if answer.ok {
            self.closed.store(false, Ordering::Relaxed);
            return Ok(stream);
        }
        let kind = answer.kind.unwrap_or(FailureKind::Other);
        if kind == FailureKind::Connect {
            self.closed.store(true, Ordering::Relaxed);
        }
        Err(Refusal::Answered {
            kind,
            error: answer
                .error
                .unwrap_or_else(|| "the master refused the request".into()),
        })
    }

    fn dead(&self, err: SshError) -> Refusal {
        self.closed.store(true, Ordering::Relaxed);
        Refusal::Socket(err)
    }

    fn socket_error(&self, source: std::io::Error) -> SshError {
        SshError::ControlSocket {
            socket: self.socket.display().to_string(),
            source,
        }
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        // Reap a master that has already exited; a running one carries on without us.
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = child.try_wait();
        }
    }
}

/// `<program> <args…> control-master --socket <socket>`, detached from our stdio and process group.
fn spawn_master(spawner: &Spawner, socket: &Path) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut log_path = socket.as_os_str().to_os_string();
    log_path.push(".log");
    let log_path = PathBuf::from(log_path);
    // One master's log is kept whole; a log grown past the bound starts over, so it never grows
    // without end.
    let too_big = std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_MAX_BYTES);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(!too_big)
        .write(true)
        .truncate(too_big)
        .open(log_path)?;
    Command::new(&spawner.program)
        .args(&spawner.args)
        .arg("control-master")
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()
}

//! The master end of a control socket: it binds the socket first (one master per socket, by an
//! flock on `<socket>.lock`), then connects SSH eagerly and reconnects on demand, and serves each
//! client connection in its own tracked task: an exec channel framed over the socket, or an `sftp`
//! subsystem channel piped byte for byte. It stays up while any client is connected and exits
//! `persist` after the last one left (docs/ssh.md, "Connection sharing").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::protocol::{self, Answer, FailureKind, Header, Op, ToClient, ToMaster, VERSION};
use super::shared_rpc::SharedRpcs;
use crate::transport::ssh::{self, ExecChannel, ExecEvent, SftpError, SshConnection, SshError, SshTarget};

/// How long a client may take to send its header line.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a master could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Serve `target` on `socket` until cancelled, or until `persist` passed with no client connected
/// (counted from the start too, so a master nobody uses goes away). Returns Ok at once when another
/// master already serves this socket. Removes its socket when it stops listening.
pub async fn serve(
    target: SshTarget,
    socket: &Path,
    persist: Duration,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    serve_with(target, socket, persist, Connect::Eagerly, cancel).await
}

/// When the master makes its SSH connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// At once: a spawned master exists because a client is about to ask.
    Eagerly,
    /// At the first request: `run` serves its accounts' sockets whether or not a drop-in comes.
    OnDemand,
}

/// [`serve`], choosing when to connect. A `persist` too long to add to the clock (`Duration::MAX`)
/// never times out.
pub async fn serve_with(
    target: SshTarget,
    socket: &Path,
    persist: Duration,
    connect: Connect,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    let Some(lock) = take_lock(socket)? else {
        debug!(socket = %socket.display(), "another master holds the lock; leaving it to serve");
        return Ok(());
    };
    if socket.exists() {
        if UnixStream::connect(socket).await.is_ok() {
            debug!(socket = %socket.display(), "another master is listening");
            return Ok(());
        }
        // A master that died without cleaning up: its socket refuses connections.
        debug!(socket = %socket.display(), "removing a stale socket");
        let _ = std::fs::remove_file(socket);
    }
    let bind = |source| ServeError::Bind {
        path: socket.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(socket).map_err(bind)?;
    super::restrict_socket(socket).map_err(bind)?;
    let uid = super::own_uid().map_err(bind)?;
    info!(socket = %socket.display(), target = %super::target_key(&target), "sharing the SSH connection");

    let tracker = TaskTracker::new();
    let tasks = cancel.child_token();
    let master = Arc::new(Master {
        target,
        connection: Mutex::new(None),
        shared: SharedRpcs::new(tracker.clone(), tasks.clone()),
    });
    if connect == Connect::Eagerly {
        // Connect now, so the first client waits less; a failure is reported to each client.
        let master = master.clone();
        let tasks = tasks.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = tasks.cancelled() => {}
                result = master.connection() => if let Err(err) = result {
                    warn!("{err}");
                },
            }
        });
    }

    let (active_tx, mut active) = watch::channel(0usize);
    let active_tx = Arc::new(active_tx);
    let mut idle_since = Some(Instant::now());
    loop {
        let deadline = idle_since.and_then(|since| since.checked_add(persist));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = async { if let Some(deadline) = deadline { tokio::time::sleep_until(deadline).await } }, if deadline.is_some() => {
                debug!("no client for {} ms; stopping", persist.as_millis());
                break;
            }
            changed = active.changed() => {
                if changed.is_ok() && *active.borrow_and_update() == 0 {
                    idle_since = Some(Instant::now());
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    idle_since = None;
                    admit(stream, uid, &master, &active_tx, &tracker, &tasks);
                }
                Err(err) => {
                    warn!("control socket: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Stop listening first: a client that finds no socket starts a new master, which may take over
    // the lock as soon as we release it. Connections already queued are still served.
    let _ = std::fs::remove_file(socket);
    while let Ok(Ok((stream, _))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await {
        admit(stream, uid, &master, &active_tx, &tracker, &tasks);
    }
    drop(listener);
    drop(lock);
    // The warm imsg rpcs end once their last client is served: no new client can join them now.
    master.shared.close().await;
    tracker.close();
    tracker.wait().await;
    if let Some(connection) = master.connection.lock().await.take() {
        connection.disconnect().await;
    }
    info!(socket = %socket.display(), "stopped sharing the SSH connection");
    Ok(())
}

/// Take `<socket>.lock`; None when another master holds it.
fn take_lock(socket: &Path) -> Result<Option<std::fs::File>, ServeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut path = socket.as_os_str().to_os_string();
    path.push(".lock");
    let path = PathBuf::from(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| ServeError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(source)) => Err(ServeError::Lock { path, source }),
    }
}

/// Check the peer is us, count it as active, and serve it in a tracked task.
fn admit(
    stream: UnixStream,
    uid: u32,
    master: &Arc<Master>,
    active: &Arc<watch::Sender<usize>>,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == uid => {}
        Ok(cred) => {
            warn!(
                uid = cred.uid(),
                "control socket: dropping a connection from another user"
            );
            return;
        }
        Err(err) => {
            warn!("control socket: cannot tell who connected ({err}); dropping it");
            return;
        }
    }
    active.send_modify(|n| *n += 1);
    let guard = Active(active.clone());
    let master = master.clone();
    let cancel = cancel.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = master.handle(stream) => {}
        }
        drop(guard);
    });
}

/// One connected client; the count drops when it ends.
struct Active(Arc<watch::Sender<usize>>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The shared connection, made on first need and again after it closed.
struct Master {
    target: SshTarget,
    connection: Mutex<Option<Arc<SshConnection>>>,
    /// Warm `imsg rpc`s shared by the clients (op `rpc`).
    shared: SharedRpcs,
}

impl Master {
    /// The live connection; one connect at a time, shared by every request waiting for it.
    async fn connection(&self) -> Result<Arc<SshConnection>, SshError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && !connection.is_closed()
        {
            return Ok(connection.clone());
        }
        if slot.is_some() {
            info!(target = %super::target_key(&self.target), "the shared SSH connection closed; reconnecting");
        }
        let connection = Arc::new(ssh::connect(&self.target).await?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn handle(&self, mut stream: UnixStream) {
        let header = match tokio::time::timeout(HEADER_TIMEOUT, protocol::read_line(&mut stream)).await {
            Ok(Ok(Some(line))) => serde_json::from_str::<Header>(&line).map_err(|e| e.to_string()),
            Ok(Ok(None)) => return,
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no header line in time".to_string()),
        };
        let op = match header {
            Ok(Header { v: VERSION, op }) => op,
            Ok(Header { v, .. }) => {
                let text =
                    format!("control protocol version {v} is not supported (this master speaks {VERSION})");
                return answer(&mut stream, Answer::failed(FailureKind::Other, text)).await;
            }
            Err(err) => {
                debug!("control socket: bad header: {err}");
                let text = format!("bad control header: {err}");
                return answer(&mut stream, Answer::failed(FailureKind::Other, text)).await;
            }
        };
        let connection = match self.connection().await {
            Ok(connection) => connection,
            Err(err) => return answer(&mut stream, Answer::failed(FailureKind::Connect, err)).await,
        };
        match op {
            Op::Connect => answer(&mut stream, Answer::ok()).await,
            Op::Exec { command } => {
                debug!(command = %command, "exec for a client");
                match self.exec(connection, &command).await {
                    Ok(channel) => {
                        if answer_ok(&mut stream).await {
                            pump_exec(channel, stream).await;
                        }
                    }
                    Err(SshError::ExecRefused { command }) => {
                        let text = SshError::ExecRefused { command };
                        answer(&mut stream, Answer::failed(FailureKind::Refused, text)).await;
                    }
                    Err(err) => answer(&mut stream, Answer::failed(FailureKind::Other, err)).await,
                }
            }
            Op::Rpc { command } => {
                debug!(command = %command, "shared rpc for a client");
                match self.shared.join(&command, self.exec(connection, &command)).await {
                    Ok(joined) => {
                        if answer_ok(&mut stream).await {
                            self.shared.serve(joined, stream).await;
                        }
                    }
                    Err(SshError::ExecRefused { command }) => {
                        let text = SshError::ExecRefused { command };
                        answer(&mut stream, Answer::failed(FailureKind::Refused, text)).await;
                    }
                    Err(err) => answer(&mut stream, Answer::failed(FailureKind::Other, err)).await,
                }
            }
            Op::Sftp => match connection.sftp_channel().await {
                Ok(mut channel) => {
                    if answer_ok(&mut stream).await {
                        let _ = tokio::io::copy_bidirectional(&mut stream, &mut channel).await;
                    }
                }
                Err(SftpError::Refused) => {
                    answer(
                        &mut stream,
                        Answer::failed(FailureKind::Refused, SftpError::Refused),
                    )
                    .await
                }
                Err(err) => answer(&mut stream, Answer::failed(FailureKind::Other, err)).await,
            },
        }
    }

    /// Exec on the connection; when it fails because the connection just died, once more on a new one.
    async fn exec(&self, connection: Arc<SshConnection>, command: &str) -> Result<ExecChannel, SshError> {
        match connection.exec(command).await {
            Err(SshError::Ssh(_)) if connection.is_closed() => self.connection().await?.exec(command).await,
            result => result,
        }
    }
}

async fn answer(stream: &mut UnixStream, answer: Answer) {
    let _ = stream.write_all(&protocol::line(&answer)).await;
}

async fn answer_ok(stream: &mut UnixStream) -> bool {
    stream.write_all(&protocol::line(&Answer::ok())).await.is_ok()
}

/// Pump a remote command both ways: its output as frames to the client, the client's frames to
/// its stdin. The output side never waits on the client's input, so the channel is always drained
/// as fast as the client reads.
async fn pump_exec(channel: ExecChannel, stream: UnixStream) {
    let (mut output, input) = channel.split();
    let (read, mut write) = stream.into_split();
    let finished = CancellationToken::new();
    let outgoing = async {
        let mut client_gone = false;
        while let Some(event) = output.next().await {
            if client_gone {
                continue;
            }
            let frames = match event {
                ExecEvent::Stdout(data) => data
                    .chunks(protocol::MAX_FRAME)
                    .map(|c| ToClient::Stdout(c.to_vec()).encode())
                    .collect(),
                ExecEvent::Stderr(data) => data
                    .chunks(protocol::MAX_FRAME)
                    .map(|c| ToClient::Stderr(c.to_vec()).encode())
                    .collect(),
                ExecEvent::Exited(code) => vec![ToClient::Exited(code).encode()],
                ExecEvent::Killed {
                    signal,
                    number,
                    message,
                } => vec![
                    ToClient::Killed {
                        number,
                        signal,
                        message,
                    }
                    .encode(),
                ],
                ExecEvent::Eof => vec![ToClient::Eof.encode()],
            };
            for frame in frames {
                if write.write_all(&frame).await.is_err() {
                    // Keep draining the channel until it closes (the input side closes it).
                    client_gone = true;
                    break;
                }
            }
        }
        let _ = write.shutdown().await;
        finished.cancel();
    };
    let incoming = async {
        let mut read = BufReader::new(read);
        let mut stdin_ended = false;
        loop {
            let frame = tokio::select! {
                _ = finished.cancelled() => return,
                frame = protocol::read_frame(&mut read) => frame,
            };
            match frame.map(|f| f.map(|(tag, payload)| ToMaster::decode(tag, payload))) {
                Ok(Some(Ok(ToMaster::Stdin(data)))) => {
                    if input.send(&data[..]).await.is_err() {
                        let _ = input.close().await;
                        return;
                    }
                }
                Ok(Some(Ok(ToMaster::StdinEof))) => {
                    let _ = input.eof().await;
                    stdin_ended = true;
                }
                Ok(Some(Ok(ToMaster::Close))) => {
                    let _ = input.close().await;
                    return;
                }
                // A client that ended stdin and then its side of the socket still reads the output
                // (as `ssh` with stdin at EOF): closing the channel now would lose it.
                Ok(None) if stdin_ended => {
                    finished.cancelled().await;
                    return;
                }
                // The client went away or sent something we cannot read: nobody wants the output.
                Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    let _ = input.close().await;
                    return;
                }
            }
        }
    };
    tokio::join!(outgoing, incoming);
}

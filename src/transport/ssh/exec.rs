//! `imsg rpc` as a JSON-RPC peer over SSH, and short commands whose output we capture; both run on
//! the connection's one exec helper ([`SshConnection::exec`]).
//!
//! The rpc channel is read in a dedicated task that never waits on anything slow: one undrained
//! channel stalls the whole connection, keepalives included.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use super::channel::{ExecChannel, ExecEvent, ExecInput, ExecOutput};
use super::{SshConnection, SshError};
use crate::rpc::{ClientOptions, ExitInfo, PeerInfo, RpcClient, StderrRing, truncate_chars};

/// In-process pipe between the channel tasks and the RPC client.
const PIPE_BYTES: usize = 256 * 1024;
/// How long a stopping remote command gets to exit after stdin EOF before we close the channel.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The remote `imsg rpc`. Dropping it closes the channel.
#[derive(Debug)]
pub struct ExecHandle {
    exited: watch::Receiver<Option<ExitInfo>>,
    close: Option<oneshot::Sender<()>>,
}

impl ExecHandle {
    /// Graceful stop: EOF on stdin (after queued requests), wait for the exit status, close.
    pub async fn stop(mut self, client: &RpcClient) -> Option<ExitInfo> {
        client.close_input().await;
        let mut exited = self.exited.clone();
        let _ = tokio::time::timeout(STOP_GRACE, exited.wait_for(Option::is_some)).await;
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        *exited.borrow()
    }

    /// Resolves when the remote command has ended (or the channel is gone).
    pub async fn wait(&self) -> Option<ExitInfo> {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
        *exited.borrow()
    }
}

/// Where the remote command's output and exit go.
struct Outlets {
    to_client: WriteHalf<DuplexStream>,
    stderr: StderrRing,
    exit: oneshot::Sender<ExitInfo>,
    exited: watch::Sender<Option<ExitInfo>>,
}

/// Run `command` on the connection and speak JSON-RPC with it.
pub async fn exec_rpc(
    connection: &SshConnection,
    command: &str,
    options: ClientOptions,
) -> Result<(RpcClient, ExecHandle), SshError> {
    let (output, input) = connection.exec(command).await?.split();
    let (client_side, bridge_side) = tokio::io::duplex(PIPE_BYTES);
    let (client_read, client_write) = tokio::io::split(client_side);
    let (from_client, to_client) = tokio::io::split(bridge_side);
    let ring = StderrRing::new();
    let (exit_tx, exit_rx) = oneshot::channel();
    let (exited_tx, exited_rx) = watch::channel(None);
    let (close_tx, close_rx) = oneshot::channel::<()>();
    let outlets = Outlets {
        to_client,
        stderr: ring.clone(),
        exit: exit_tx,
        exited: exited_tx,
    };
    tokio::spawn(pump_output(output, outlets));
    tokio::spawn(pump_input(from_client, input, close_rx));
    let client = RpcClient::start(
        client_read,
        client_write,
        PeerInfo {
            stderr: ring,
            exit: Some(exit_rx),
        },
        options,
    );
    Ok((
        client,
        ExecHandle {
            exited: exited_rx,
            close: Some(close_tx),
        },
    ))
}

/// Route the command's stdout to the RPC client, its stderr to the ring, and record its exit.
async fn pump_output(mut output: ExecOutput, mut outlets: Outlets) {
    let mut exit = None;
    let mut partial = Vec::new();
    while let Some(event) = output.next().await {
        match event {
            // The RPC reader routes without blocking, so this write completes promptly.
            ExecEvent::Stdout(data) if outlets.to_client.write_all(&data).await.is_err() => {
                debug!("rpc client gone; discarding remote output");
            }
            ExecEvent::Stdout(_) => {}
            ExecEvent::Stderr(data) => push_stderr(&outlets.stderr, &mut partial, &data),
            ExecEvent::Exited(code) => exit = Some(ExitInfo::Code(code)),
            ExecEvent::Killed {
                signal,
                number,
                message,
            } => {
                outlets
                    .stderr
                    .push(&format!("remote imsg killed by signal {signal} {message}"));
                exit = Some(ExitInfo::Signal(number));
            }
            ExecEvent::Eof => {
                let _ = outlets.to_client.shutdown().await;
            }
        }
    }
    if !partial.is_empty() {
        outlets.stderr.push(&String::from_utf8_lossy(&partial));
    }
    let _ = outlets.to_client.shutdown().await;
    let info = exit.unwrap_or(ExitInfo::Unknown);
    let _ = outlets.exit.send(info);
    outlets.exited.send_replace(Some(info));
}

/// Forward the RPC client's requests to the command's stdin; EOF when the client closes its input.
async fn pump_input(mut from_client: ReadHalf<DuplexStream>, input: ExecInput, close: oneshot::Receiver<()>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from_client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if input.send(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = input.eof().await;
    // Keep the channel open until asked (or the handle is dropped) so the exit status can arrive.
    let _ = close.await;
    let _ = input.close().await;
}

/// What a short remote command printed.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run a short command and collect its output (bounded) and exit status.
pub async fn exec_capture(
    connection: &SshConnection,
    command: &str,
    timeout: Duration,
) -> Result<Captured, SshError> {
    let run = async { Ok(collect(connection.exec(command).await?).await) };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| SshError::Timeout {
            what: "running",
            addr: format!("`{command}` on {}", connection.target().display()),
            after: timeout,
        })?
}

/// A finished command's output (the first 64 KiB of each stream) and exit status.
pub async fn collect(mut exec: ExecChannel) -> Captured {
    const LIMIT: usize = 64 * 1024;
    let mut captured = Captured::default();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(event) = exec.next().await {
        match event {
            ExecEvent::Stdout(data) if out.len() < LIMIT => out.extend_from_slice(&data),
            ExecEvent::Stderr(data) if err.len() < LIMIT => err.extend_from_slice(&data),
            ExecEvent::Exited(code) => captured.status = Some(code),
            _ => {}
        }
    }
    captured.stdout = String::from_utf8_lossy(&out).into_owned();
    captured.stderr = String::from_utf8_lossy(&err).into_owned();
    captured
}

fn push_stderr(ring: &StderrRing, partial: &mut Vec<u8>, data: &[u8]) {
    partial.extend_from_slice(data);
    while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=pos).collect();
        let line = String::from_utf8_lossy(&line);
        if !line.trim().is_empty() {
            warn!("remote imsg: {}", truncate_chars(line.trim(), 400));
            ring.push(&line);
        }
    }
    // A peer that never sends a newline must not grow memory.
    if partial.len() > 4096 {
        ring.push(&String::from_utf8_lossy(partial));
        partial.clear();
    }
}

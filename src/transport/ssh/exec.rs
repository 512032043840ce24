//! Exec channels: `imsg rpc` as a JSON-RPC peer over SSH, and short commands whose output we capture.
//!
//! The channel is read with `split()` + `wait()` in a dedicated task (never `into_stream`, which drops
//! stderr, the exit status and the exec reply), and that task never waits on anything slow: one
//! undrained channel stalls the whole connection, keepalives included.

use std::time::Duration;

use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

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

/// Run `command` on the connection and speak JSON-RPC with it.
pub async fn exec_rpc(
    connection: &SshConnection,
    command: &str,
    options: ClientOptions,
) -> Result<(RpcClient, ExecHandle), SshError> {
    let mut channel = connection.handle().channel_open_session().await?;
    channel.exec(true, command).await?;
    wait_reply(&mut channel, command).await?;
    let (mut read_half, write_half) = channel.split();

    let (client_side, bridge_side) = tokio::io::duplex(PIPE_BYTES);
    let (client_read, client_write) = tokio::io::split(client_side);
    let (mut from_client, mut to_client) = tokio::io::split(bridge_side);
    let ring = StderrRing::new();
    let (exit_tx, exit_rx) = oneshot::channel();
    let (exited_tx, exited_rx) = watch::channel(None);
    let (close_tx, close_rx) = oneshot::channel::<()>();

    let stderr = ring.clone();
    tokio::spawn(async move {
        let mut exit = None;
        let mut partial = Vec::new();
        while let Some(message) = read_half.wait().await {
            match message {
                // The RPC reader routes without blocking, so this write completes promptly.
                ChannelMsg::Data { data } if to_client.write_all(&data).await.is_err() => {
                    debug!("rpc client gone; discarding remote output");
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => push_stderr(&stderr, &mut partial, &data),
                ChannelMsg::ExitStatus { exit_status } => exit = Some(ExitInfo::Code(exit_status as i32)),
                ChannelMsg::ExitSignal {
                    signal_name,
                    error_message,
                    ..
                } => {
                    stderr.push(&format!(
                        "remote imsg killed by signal {signal_name:?} {error_message}"
                    ));
                    exit = Some(ExitInfo::Signal(signal_number(&signal_name)));
                }
                ChannelMsg::Eof => {
                    let _ = to_client.shutdown().await;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        if !partial.is_empty() {
            stderr.push(&String::from_utf8_lossy(&partial));
        }
        let _ = to_client.shutdown().await;
        let info = exit.unwrap_or(ExitInfo::Unknown);
        let _ = exit_tx.send(info);
        exited_tx.send_replace(Some(info));
    });

    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write_half.data(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = write_half.eof().await;
        // Keep the channel open until asked (or the handle is dropped) so the exit status can arrive.
        let _ = close_rx.await;
        let _ = write_half.close().await;
    });

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
    const LIMIT: usize = 64 * 1024;
    let run = async {
        let mut channel = connection.handle().channel_open_session().await?;
        channel.exec(true, command).await?;
        wait_reply(&mut channel, command).await?;
        let mut captured = Captured::default();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } if out.len() < LIMIT => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } if err.len() < LIMIT => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => captured.status = Some(exit_status as i32),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        captured.stdout = String::from_utf8_lossy(&out).into_owned();
        captured.stderr = String::from_utf8_lossy(&err).into_owned();
        Ok(captured)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| SshError::Timeout {
            what: "running",
            addr: format!("`{command}` on {}", connection.target().display()),
            after: timeout,
        })?
}

/// The want_reply answer to exec/subsystem arrives as Success/Failure on the channel.
async fn wait_reply(channel: &mut russh::Channel<russh::client::Msg>, command: &str) -> Result<(), SshError> {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) | None => {
                return Err(SshError::ExecRefused {
                    command: command.to_string(),
                });
            }
            Some(_) => {}
        }
    }
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

fn signal_number(name: &russh::Sig) -> i32 {
    match name {
        russh::Sig::HUP => 1,
        russh::Sig::INT => 2,
        russh::Sig::QUIT => 3,
        russh::Sig::ILL => 4,
        russh::Sig::ABRT => 6,
        russh::Sig::FPE => 8,
        russh::Sig::KILL => 9,
        russh::Sig::SEGV => 11,
        russh::Sig::PIPE => 13,
        russh::Sig::ALRM => 14,
        russh::Sig::TERM => 15,
        _ => 0,
    }
}

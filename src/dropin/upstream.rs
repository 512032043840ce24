//! The remote `imsg rpc` behind the proxy: one exec channel on the link, read by a task that never
//! waits on anything slow (an undrained channel stalls the whole SSH connection, keepalives
//! included), written by another, its stderr copied to ours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::rpc::Splitter;
use crate::transport::link::Link;
use crate::transport::ssh::{ExecEvent, ExecInput, ExecOutput, SshError};

/// Lines read from imsg that the proxy has not handled yet. Past this the proxy is too slow (a
/// long attachment pull): the session is ended and the watch resumed from the last forwarded row.
pub const UPSTREAM_LINES: usize = 4096;
/// Requests waiting for imsg's stdin.
const TO_IMSG_LINES: usize = 64;
/// Chunks of imsg's stderr waiting to be copied to ours; more are dropped (and counted).
const STDERR_CHUNKS: usize = 256;
/// A line longer than this is not JSON-RPC we can use: dropped, and the stream resyncs.
pub const MAX_LINE: usize = crate::rpc::MAX_LINE_BYTES;

/// How the remote imsg's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// imsg exited with this status.
    Exited(i32),
    /// imsg was killed by this signal number.
    Killed(i32),
    /// The channel closed without an exit status: the link is gone.
    Lost,
    /// The proxy fell `UPSTREAM_LINES` behind; the session was closed on purpose.
    Overflow,
}

/// A running remote `imsg rpc`.
pub struct Upstream {
    lines: mpsc::Receiver<Vec<u8>>,
    end: Option<oneshot::Receiver<End>>,
    to_imsg: Option<mpsc::Sender<Vec<u8>>>,
    close: CancellationToken,
}

impl Upstream {
    /// Start `command` on the link. Returns once the Mac accepted the exec.
    pub async fn start(link: &Link, command: &str, tasks: &TaskTracker) -> Result<Upstream, SshError> {
        let (output, input) = link.rpc(command).await?.split();
        let (lines_tx, lines) = mpsc::channel(UPSTREAM_LINES);
        let (end_tx, end) = oneshot::channel();
        let (to_imsg, from_proxy) = mpsc::channel(TO_IMSG_LINES);
        let close = CancellationToken::new();
        let (stderr_tx, stderr_rx) = mpsc::channel(STDERR_CHUNKS);
        tasks.spawn(read_output(output, lines_tx, stderr_tx, end_tx, close.clone()));
        tasks.spawn(write_input(input, from_proxy, close.clone()));
        tasks.spawn(copy_stderr(stderr_rx));
        Ok(Upstream {
            lines,
            end: Some(end),
            to_imsg: Some(to_imsg),
            close,
        })
    }

    /// The next line from imsg; None once the session ended (then ask [`Upstream::ended`]).
    /// Cancel-safe: a line is only taken from the queue when this returns.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.lines.recv().await
    }

    /// Whether a line is already waiting (the proxy flushes its output when none is).
    pub fn has_ready(&self) -> bool {
        !self.lines.is_empty()
    }

    /// Why the session ended; call after [`Upstream::next`] returned None.
    pub async fn ended(&mut self) -> End {
        match self.end.take() {
            Some(end) => end.await.unwrap_or(End::Lost),
            None => End::Lost,
        }
    }

    /// Queue a line for imsg's stdin; false when the session is gone.
    pub async fn send(&self, line: Vec<u8>) -> bool {
        match &self.to_imsg {
            Some(tx) => tx.send(line).await.is_ok(),
            None => false,
        }
    }

    /// End imsg's stdin after the queued lines (the client closed ours).
    pub fn close_input(&mut self) {
        self.to_imsg = None;
    }

    /// Close the channel now (overflow, shutdown).
    pub fn close(&self) {
        self.close.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.close.cancel();
    }
}

/// Split stdout into lines for the proxy, copy stderr, record the exit.
async fn read_output(
    mut output: ExecOutput,
    lines: mpsc::Sender<Vec<u8>>,
    stderr: mpsc::Sender<Vec<u8>>,
    end_tx: oneshot::Sender<End>,
    close: CancellationToken,
) {
    let mut splitter = Splitter::new(MAX_LINE);
    let mut end = End::Lost;
    let dropped_stderr = Arc::new(AtomicU64::new(0));
    loop {
        let event = tokio::select! {
            event = output.next() => event,
            () = close.cancelled() => break,
        };
        let Some(event) = event else { break };
        match event {
            ExecEvent::Stdout(data) => {
                if !queue(splitter.push(&data), &lines) {
                    end = End::Overflow;
                    close.cancel();
                    break;
                }
            }
            ExecEvent::Stderr(data) => {
                if stderr.try_send(data.to_vec()).is_err() {
                    dropped_stderr.fetch_add(1, Ordering::Relaxed);
                }
            }
            ExecEvent::Exited(code) => end = End::Exited(code),
            ExecEvent::Killed { number, .. } => end = End::Killed(number),
            ExecEvent::Eof => {}
        }
    }
    if let Some(last) = splitter.finish() {
        let _ = lines.try_send(last);
    }
    let dropped = dropped_stderr.load(Ordering::Relaxed);
    if dropped > 0 {
        warn!(
            dropped,
            "imsg wrote stderr faster than it could be copied; some was dropped"
        );
    }
    let _ = end_tx.send(end);
}

/// Queue lines for the proxy without waiting; false when the queue is full (the proxy is behind).
fn queue(ready: Vec<Vec<u8>>, lines: &mpsc::Sender<Vec<u8>>) -> bool {
    ready.into_iter().all(|line| lines.try_send(line).is_ok())
}

/// Feed imsg's stdin; EOF when the proxy drops its sender, close when told to.
async fn write_input(input: ExecInput, mut from_proxy: mpsc::Receiver<Vec<u8>>, close: CancellationToken) {
    loop {
        let line = tokio::select! {
            line = from_proxy.recv() => line,
            () = close.cancelled() => {
                let _ = input.close().await;
                return;
            }
        };
        let Some(line) = line else {
            let _ = input.eof().await;
            // Keep the write half (and so the channel) until the session is closed.
            close.cancelled().await;
            let _ = input.close().await;
            return;
        };
        let written = tokio::select! {
            written = input.send(&line[..]) => written,
            () = close.cancelled() => return,
        };
        if let Err(err) = written {
            debug!("imsg's stdin is gone: {err}");
            return;
        }
    }
}

/// imsg's stderr is the user's to read (the Full Disk Access banner lives there).
async fn copy_stderr(mut chunks: mpsc::Receiver<Vec<u8>>) {
    let mut stderr = tokio::io::stderr();
    while let Some(chunk) = chunks.recv().await {
        if stderr.write_all(&chunk).await.is_err() {
            return;
        }
        let _ = stderr.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_a_full_queue_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(1);
        assert!(!queue(vec![b"1".to_vec(), b"2".to_vec()], &tx));
        assert_eq!(rx.recv().await, Some(b"1".to_vec()));
        assert!(queue(vec![b"3".to_vec()], &tx));
    }
}

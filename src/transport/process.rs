//! The process transport: spawn `cliPath rpc [--db PATH]` without a shell, speak JSON-RPC over its
//! pipes, keep its stderr in a ring, and make sure it never outlives us.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use super::TransportError;
use crate::rpc::{ClientOptions, ExitInfo, PeerInfo, RpcClient, StderrRing};

/// How long a stopping child gets after its stdin closed before it is killed.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// A running `imsg rpc` child. Dropping it kills the child.
#[derive(Debug)]
pub struct ProcessHandle {
    program: PathBuf,
    pid: Option<u32>,
    kill: Option<oneshot::Sender<()>>,
    exited: watch::Receiver<Option<ExitInfo>>,
}

/// Start `program args…` with piped stdio and a JSON-RPC client on top.
pub fn spawn(
    program: &Path,
    args: &[String],
    options: ClientOptions,
) -> Result<(RpcClient, ProcessHandle), TransportError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| TransportError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    let missing = |stream| TransportError::MissingPipe {
        program: program.to_path_buf(),
        stream,
    };
    let stdin = child.stdin.take().ok_or_else(|| missing("stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| missing("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| missing("stderr"))?;
    let pid = child.id();
    debug!(program = %program.display(), ?args, pid, "spawned imsg rpc");

    let ring = StderrRing::new();
    tokio::spawn(drain_stderr(stderr, ring.clone()));

    let (exit_tx, exit_rx) = oneshot::channel();
    let (exited_tx, exited_rx) = watch::channel(None);
    let (kill_tx, kill_rx) = oneshot::channel();
    tokio::spawn(supervise(child, kill_rx, exit_tx, exited_tx));

    let client = RpcClient::start(
        stdout,
        stdin,
        PeerInfo {
            stderr: ring,
            exit: Some(exit_rx),
        },
        options,
    );
    let handle = ProcessHandle {
        program: program.to_path_buf(),
        pid,
        kill: Some(kill_tx),
        exited: exited_rx,
    };
    Ok((client, handle))
}

impl ProcessHandle {
    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Graceful stop: close stdin (after the queued requests), give the child `STOP_GRACE` to exit
    /// on its own, then kill it. Returns how it ended.
    pub async fn stop(mut self, client: &RpcClient) -> Option<ExitInfo> {
        client.close_input().await;
        let mut exited = self.exited.clone();
        let graceful = tokio::time::timeout(STOP_GRACE, exited.wait_for(Option::is_some))
            .await
            .is_ok();
        if !graceful {
            debug!(program = %self.program.display(), "imsg rpc did not exit after stdin closed; killing it");
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(());
            }
            let _ = exited.wait_for(Option::is_some).await;
        }
        *exited.borrow()
    }

    /// Resolves when the child has exited.
    pub async fn wait(&self) -> Option<ExitInfo> {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
        *exited.borrow()
    }
}

async fn supervise(
    mut child: Child,
    kill: oneshot::Receiver<()>,
    exit_tx: oneshot::Sender<ExitInfo>,
    exited: watch::Sender<Option<ExitInfo>>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        // Either an explicit kill or the handle was dropped: the child must not outlive us.
        _ = kill => {
            if let Err(err) = child.start_kill() {
                debug!(%err, "kill of imsg rpc failed (already gone?)");
            }
            child.wait().await
        }
    };
    let info = match status {
        Ok(status) => exit_info(status),
        Err(err) => {
            warn!(%err, "could not read the exit status of imsg rpc");
            ExitInfo::Unknown
        }
    };
    let _ = exit_tx.send(info);
    exited.send_replace(Some(info));
}

fn exit_info(status: ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitInfo::Code(code),
        (None, Some(signal)) => ExitInfo::Signal(signal),
        (None, None) => ExitInfo::Unknown,
    }
}

async fn drain_stderr(stderr: tokio::process::ChildStderr, ring: StderrRing) {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                if !line.trim().is_empty() {
                    warn!("imsg rpc: {}", crate::rpc::truncate_chars(line.trim(), 400));
                    ring.push(&line);
                }
            }
            Ok(None) => break,
            Err(err) => {
                debug!(%err, "reading imsg rpc stderr failed");
                break;
            }
        }
    }
}

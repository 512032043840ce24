//! The `exec` sink: a long-lived agent process that reads envelopes as JSON lines on stdin and
//! writes reply lines on stdout. Restarted with backoff when it dies; an envelope waits for it.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::SinkError;
use super::reply::{AgentReply, Outboxes};
use crate::envelope::Envelope;
use crate::rpc::truncate_chars;
use crate::util::backoff::{Backoff, Schedule};

/// Restarts of the agent: 1 s doubling to 60 s; a child that lived a minute counts as healthy and
/// its next restart starts from 1 s again.
const RESTART: Schedule = Schedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(60),
    jitter: 0.0,
    healthy: Some(Duration::from_secs(60)),
};
/// While the agent is down, an envelope checks this often whether it is back.
const WAIT_STEP: Duration = Duration::from_millis(100);

pub struct ExecSink {
    stdin: Mutex<Option<ChildStdin>>,
    outboxes: Arc<Outboxes>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for ExecSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExecSink")
    }
}

impl ExecSink {
    /// Start the agent (and keep restarting it) until `cancel`; the supervisor runs on `tasks`.
    pub fn start(
        command: Vec<String>,
        outboxes: Arc<Outboxes>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let sink = Arc::new(Self {
            stdin: Mutex::new(None),
            outboxes,
            cancel,
        });
        tasks.spawn(supervise(sink.clone(), command));
        sink
    }

    /// Write one envelope line and flush; waits while the agent is down.
    pub async fn deliver(&self, envelope: &Envelope) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(envelope).map_err(SinkError::Serialize)?;
        line.push(b'\n');
        self.outboxes
            .remember(&envelope.id, &envelope.account, &envelope.to);
        loop {
            {
                let mut guard = self.stdin.lock().await;
                if let Some(stdin) = guard.as_mut() {
                    let written = async {
                        stdin.write_all(&line).await?;
                        stdin.flush().await
                    }
                    .await;
                    match written {
                        Ok(()) => return Ok(()),
                        Err(err) => {
                            warn!("the agent's stdin failed: {err}; waiting for its restart");
                            *guard = None;
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(SinkError::Cancelled),
                _ = tokio::time::sleep(WAIT_STEP) => {}
            }
        }
    }
}

/// How one run of the agent ended.
enum AgentEnd {
    /// Stopped because the bridge is stopping.
    Stopped,
    Exited(std::io::Result<std::process::ExitStatus>),
    NotStarted(std::io::Error),
}

async fn supervise(sink: Arc<ExecSink>, command: Vec<String>) {
    let Some((program, args)) = command.split_first() else {
        warn!("bridge.agent.command is empty; nothing to run");
        return;
    };
    let mut backoff = Backoff::new(RESTART);
    loop {
        let started = Instant::now();
        let end = run_agent(&sink, program, args).await;
        backoff.record_uptime(started.elapsed());
        let delay = backoff.next_delay();
        match end {
            AgentEnd::Stopped => return,
            AgentEnd::Exited(status) => {
                warn!(agent = %program, ?status, "agent exited; restarting in {} s", delay.as_secs())
            }
            AgentEnd::NotStarted(err) => {
                warn!(agent = %program, "cannot start the agent: {err}; retrying in {} s", delay.as_secs())
            }
        }
        tokio::select! {
            _ = sink.cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Start the agent once and relay its reply lines until it exits or the bridge stops.
async fn run_agent(sink: &ExecSink, program: &str, args: &[String]) -> AgentEnd {
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => return AgentEnd::NotStarted(err),
    };
    info!(agent = %program, pid = child.id().unwrap_or(0), "agent started");
    *sink.stdin.lock().await = child.stdin.take();
    if let Some(stdout) = child.stdout.take() {
        relay_replies(sink, stdout).await;
    }
    *sink.stdin.lock().await = None;
    if sink.cancel.is_cancelled() {
        // Stop the agent politely: EOF first, then the kill on drop.
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        return AgentEnd::Stopped;
    }
    AgentEnd::Exited(child.wait().await)
}

/// Route the agent's output lines until its stdout ends or the bridge stops.
async fn relay_replies(sink: &ExecSink, stdout: tokio::process::ChildStdout) {
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = tokio::select! {
            _ = sink.cancel.cancelled() => return,
            line = lines.next_line() => line,
        };
        match line {
            Ok(Some(line)) => route(&sink.outboxes, &line),
            Ok(None) | Err(_) => return,
        }
    }
}

/// One line from the agent: a reply, or noise we log and skip.
fn route(outboxes: &Outboxes, line: &str) {
    if line.trim().is_empty() {
        return;
    }
    match serde_json::from_str::<AgentReply>(line) {
        Ok(reply) => {
            if let Err(err) = outboxes.route(reply) {
                warn!("agent reply dropped: {err}");
            }
        }
        Err(err) => debug!(line = %truncate_chars(line, 120), "agent output is not a reply: {err}"),
    }
}

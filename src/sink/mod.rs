//! Agent hand-off: where accepted envelopes go. Delivery is at-least-once: the caller advances the
//! cursor only after `deliver` returned Ok.

pub mod dead_letter;
pub mod exec;
pub mod nats;
pub mod reply;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::envelope::Envelope;

/// Why an envelope was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write the envelope to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("cannot serialise the envelope: {0}")]
    Serialize(#[source] serde_json::Error),
    /// Shutting down while the envelope waited for the agent: it was not delivered.
    #[error("stopped before the agent took the envelope")]
    Cancelled,
    /// The sink cannot start (credentials or TLS files of the nats sink).
    #[error(transparent)]
    Nats(#[from] nats::connect::NatsError),
}

/// What the agent side did with an envelope.
#[derive(Debug)]
pub enum Delivery {
    /// Taken; a webhook may answer with replies right away.
    Accepted { replies: Vec<reply::AgentReply> },
    /// Refused for good (a webhook's 4xx): logged and counted, not retried.
    Rejected(String),
}

/// The configured sink.
#[derive(Debug, Clone)]
pub enum Sink {
    /// One envelope per line; shared by every account so lines never interleave.
    Stdout(LineSink),
    Exec(Arc<exec::ExecSink>),
    Webhook(Arc<webhook::WebhookSink>),
    Nats(Arc<nats::NatsSink>),
    /// An agent inside this process (the demo's echo agent): envelopes go into a channel.
    Channel(tokio::sync::mpsc::Sender<Envelope>),
}

impl Sink {
    /// The process's stdout.
    pub fn stdout() -> Self {
        // Buffered: lines are written in large chunks and flushed at each cursor commit.
        Sink::Stdout(LineSink::new(Box::new(tokio::io::BufWriter::with_capacity(
            STDOUT_BUFFER,
            tokio::io::stdout(),
        ))))
    }

    /// The sink `bridge.agent` names, started with `setup`. Fails only on credentials the nats sink
    /// cannot read.
    pub fn from_config(agent: &crate::config::AgentSink, setup: SinkSetup<'_>) -> Result<Self, SinkError> {
        Ok(match agent {
            crate::config::AgentSink::Stdout => Self::stdout(),
            crate::config::AgentSink::Exec { command } => Sink::Exec(exec::ExecSink::start(
                command.clone(),
                setup.outboxes.clone(),
                setup.cancel.clone(),
                setup.tasks,
            )),
            crate::config::AgentSink::Nats(config) => Sink::Nats(nats::NatsSink::start(config, &setup)?),
            crate::config::AgentSink::Webhook {
                url,
                headers,
                timeout_ms,
            } => Sink::Webhook(Arc::new(webhook::WebhookSink::new(
                url,
                headers.clone(),
                Duration::from_millis(*timeout_ms),
                setup.cancel.clone(),
            ))),
        })
    }

    /// Start what serves `account`'s replies besides its outbox (the nats sink's puller), until
    /// `stop`.
    pub fn serve_account(&self, account: &str, stop: CancellationToken) {
        if let Sink::Nats(nats) = self {
            nats.serve_replies(account, stop);
        }
    }

    /// Make everything delivered so far reach the agent: the stdout sink buffers lines until this.
    /// Callers flush before they move a cursor past what they delivered.
    pub async fn flush(&self) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(lines) => lines.flush().await,
            Sink::Exec(_) | Sink::Webhook(_) | Sink::Nats(_) | Sink::Channel(_) => Ok(()),
        }
    }

    /// Hand one envelope over. Ok(Accepted) means the agent side has it (stdout: queued, written
    /// at the next [`Self::flush`]; exec: written and flushed; webhook: 2xx; nats: JetStream's
    /// PubAck); the exec, webhook and nats sinks wait while the agent side is unreachable.
    pub async fn deliver(&self, envelope: &Envelope) -> Result<Delivery, SinkError> {
        match self {
            Sink::Stdout(lines) => {
                lines.write(envelope).await?;
                Ok(Delivery::Accepted { replies: Vec::new() })
            }
            Sink::Exec(exec) => {
                exec.deliver(envelope).await?;
                Ok(Delivery::Accepted { replies: Vec::new() })
            }
            Sink::Webhook(webhook) => webhook.deliver(envelope).await,
            Sink::Nats(nats) => nats.deliver(envelope).await,
            Sink::Channel(tx) => {
                tx.send(envelope.clone())
                    .await
                    .map_err(|_| SinkError::Cancelled)?;
                Ok(Delivery::Accepted { replies: Vec::new() })
            }
        }
    }
}

/// What a sink starts with: where replies go, the metrics, the state dir, and the tasks it runs
/// until `cancel`.
#[derive(Debug)]
pub struct SinkSetup<'a> {
    /// Exec and nats replies are routed through these.
    pub outboxes: Arc<reply::Outboxes>,
    pub metrics: Arc<crate::http::Metrics>,
    pub state_dir: &'a std::path::Path,
    pub cancel: CancellationToken,
    pub tasks: &'a TaskTracker,
}

type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// Bytes of envelope lines the stdout sink gathers before it writes them out (it also writes them
/// at every [`Sink::flush`]).
const STDOUT_BUFFER: usize = 64 * 1024;

/// Writes JSON lines to a shared writer, one whole line at a time.
#[derive(Clone)]
pub struct LineSink {
    out: Arc<Mutex<BoxedWriter>>,
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSink")
    }
}

impl LineSink {
    pub fn new(out: BoxedWriter) -> Self {
        Self {
            out: Arc::new(Mutex::new(out)),
        }
    }

    /// Queue one line; it reaches the writer's target at the next [`Self::flush`] (or sooner when
    /// the buffer fills).
    async fn write(&self, envelope: &Envelope) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(envelope).map_err(SinkError::Serialize)?;
        line.push(b'\n');
        let mut out = self.out.lock().await;
        out.write_all(&line).await.map_err(SinkError::Stdout)
    }

    /// Write out and flush every queued line.
    async fn flush(&self) -> Result<(), SinkError> {
        self.out.lock().await.flush().await.map_err(SinkError::Stdout)
    }
}

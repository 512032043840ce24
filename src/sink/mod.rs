//! Agent hand-off: where accepted envelopes go. Delivery is at-least-once: the caller advances the
//! cursor only after `deliver` returned Ok.

use std::sync::Arc;

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
}

/// The configured sink.
#[derive(Debug, Clone)]
pub enum Sink {
    /// One envelope per line; shared by every account so lines never interleave.
    Stdout(LineSink),
}

impl Sink {
    /// The process's stdout.
    pub fn stdout() -> Self {
        Sink::Stdout(LineSink::new(Box::new(tokio::io::stdout())))
    }

    /// Hand one envelope over; Ok means the agent side has it (stdout: written and flushed).
    pub async fn deliver(&self, envelope: &Envelope) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(lines) => lines.write(envelope).await,
        }
    }
}

type BoxedWriter = Box<dyn AsyncWrite + Send + Unpin>;

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

    async fn write(&self, envelope: &Envelope) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(envelope).map_err(SinkError::Serialize)?;
        line.push(b'\n');
        let mut out = self.out.lock().await;
        out.write_all(&line).await.map_err(SinkError::Stdout)?;
        out.flush().await.map_err(SinkError::Stdout)
    }
}

//! `doctor`'s look at the nats sink: whether the bridge can log in, whether JetStream answers, which
//! of the streams exist, and whether the duplicate window covers the longest catch-up.

use std::time::Duration;

use async_nats::ConnectOptions;
use async_nats::jetstream::{self, context::GetStreamErrorKind};

use super::connect::{NatsError, refusal_line, with_login};
use crate::config::NatsConfig;

/// How long `doctor` waits for the server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One stream as the server holds it, or `None` when it does not exist yet (`run` creates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub name: String,
    pub found: Option<StreamFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFacts {
    pub messages: u64,
    pub duplicate_window: Duration,
}

/// What the probe found.
#[derive(Debug, Clone)]
pub struct Probe {
    pub servers: String,
    pub server_version: String,
    pub streams: Vec<StreamState>,
    /// Set when two bridges on one account could store a message twice after a long catch-up.
    pub window_advice: Option<String>,
}

/// Connect once (no background retries), look at both streams, and compare the duplicate window
/// with `replay_max_age`, the oldest row a catch-up publishes.
pub async fn probe(config: &NatsConfig, replay_max_age: Duration) -> Result<Probe, NatsError> {
    let servers = config.servers();
    let options = with_login(ConnectOptions::new(), config)?;
    let client = match tokio::time::timeout(PROBE_TIMEOUT, options.connect(config.url.as_str())).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => return Err(NatsError::Connect(refusal_line(&err.to_string(), &servers))),
        Err(_) => {
            return Err(NatsError::Connect(format!(
                "no answer from the NATS server ({servers}) within {} s; check bridge.agent.url",
                PROBE_TIMEOUT.as_secs()
            )));
        }
    };
    let server_version = client.server_info().version;
    let js = jetstream::new(client);
    let mut streams = Vec::new();
    for name in [&config.stream, &config.reply_stream] {
        streams.push(stream_state(&js, name).await?);
    }
    let window = streams[0]
        .found
        .as_ref()
        .map_or(config.duplicate_window, |facts| facts.duplicate_window);
    let window_advice = (window < replay_max_age).then(|| {
        format!(
            "the duplicate window ({} s) is shorter than bridge.replay.maxAgeMinutes ({} s): with two bridges on one account, a catch-up after more than {} s away may store messages twice",
            window.as_secs(),
            replay_max_age.as_secs(),
            window.as_secs()
        )
    });
    Ok(Probe {
        servers,
        server_version,
        streams,
        window_advice,
    })
}

async fn stream_state(js: &jetstream::Context, name: &str) -> Result<StreamState, NatsError> {
    let setup = |reason: String| NatsError::Setup {
        what: format!("stream {name}"),
        reason,
    };
    match js.get_stream(name).await {
        Ok(mut found) => {
            let info = found.info().await.map_err(|e| setup(e.to_string()))?;
            Ok(StreamState {
                name: name.to_string(),
                found: Some(StreamFacts {
                    messages: info.state.messages,
                    duplicate_window: info.config.duplicate_window,
                }),
            })
        }
        Err(err) if is_not_found(err.kind()) => Ok(StreamState {
            name: name.to_string(),
            found: None,
        }),
        Err(err) => Err(setup(format!(
            "{err} (is JetStream enabled? nats-server needs -js)"
        ))),
    }
}

/// Whether `get_stream` failed because the stream does not exist.
pub(super) fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err) if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

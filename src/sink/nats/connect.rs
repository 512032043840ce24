//! Connecting to NATS: credentials and TLS from the config, reconnects with backoff, and the two
//! streams and the claim bucket made when missing (docs/scale-out.md, "What the bridge creates").

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{ConnectOptions, Event};
use tracing::{debug, info, warn};

use crate::util::escape::escape_controls;

use super::health::{NatsHealth, NatsState};
use super::subject::Names;
use crate::config::NatsConfig;

/// Why the sink cannot start or talk to NATS.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("bridge.agent.tokenEnv names ${0}, which is not set or empty; export the NATS token in it")]
    TokenUnset(String),
    #[error("cannot read bridge.agent.credentialsFile {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("cannot read bridge.agent.tls.{key} {path}: {reason}")]
    TlsFile {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("{0}")]
    Connect(String),
    #[error("cannot create or check JetStream {what}: {reason}")]
    Setup { what: String, reason: String },
}

/// A connection with the streams and the claim bucket in place.
#[derive(Debug, Clone)]
pub struct Conn {
    pub js: jetstream::Context,
    pub claims: kv::Store,
}

/// How long JetStream API calls and PubAcks may take before the publish is tried again.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Claims outlive any redelivery of their reply: a week of every bridge being down is beyond it.
const CLAIM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The client options of the sink: those of the config, retried forever in the background; fails on
/// credentials that cannot be read, before anything connects (so `run` stops with the reason at once).
pub fn options(
    config: &NatsConfig,
    health: Arc<NatsHealth>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<ConnectOptions, NatsError> {
    let options = ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            on_event(&health, &event);
            // The sink's maintaining task checks the streams after each (re)connect.
            let _ = events.send(event);
            std::future::ready(())
        });
    with_login(options, config)
}

/// `options` with the config's name, timeout, token or credentials, and TLS.
pub fn with_login(options: ConnectOptions, config: &NatsConfig) -> Result<ConnectOptions, NatsError> {
    let mut options = options
        .name(format!("imsg-bridge {}", instance()))
        .connection_timeout(API_TIMEOUT);
    if let Some(name) = &config.token_env {
        let token = std::env::var(name).unwrap_or_default();
        if token.is_empty() {
            return Err(NatsError::TokenUnset(name.clone()));
        }
        options = options.token(token);
    }
    if let Some(path) = &config.credentials_file {
        let failed = |reason: String| NatsError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        options = options.credentials(&text).map_err(|e| failed(e.to_string()))?;
    }
    if let Some(tls) = &config.tls {
        let files = [
            ("caFile", &tls.ca_file),
            ("certFile", &tls.cert_file),
            ("keyFile", &tls.key_file),
        ];
        for (key, file) in files {
            if let Some(path) = file
                && let Err(err) = std::fs::metadata(path)
            {
                return Err(NatsError::TlsFile {
                    key,
                    path: path.display().to_string(),
                    reason: err.to_string(),
                });
            }
        }
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}

/// This bridge in claims and connection names: host and process.
pub fn instance() -> String {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(read_instance).clone()
}

fn read_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}:{}", std::process::id())
}

/// At once the first time, then 250 ms doubling to 8 s, with ±20 % jitter so that bridges restarted
/// together spread out.
fn reconnect_delay(attempts: usize) -> Duration {
    // The client counts from 1 for the first attempt.
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from((attempts - 2).min(5)).unwrap_or(5);
    let base = Duration::from_millis(250) * 2u32.pow(exponent);
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

fn on_event(health: &NatsHealth, event: &Event) {
    match event {
        // The streams are checked again after every (re)connect before the state says connected.
        Event::Connected => info!("NATS connected"),
        Event::Disconnected => {
            if health.state() == NatsState::Connected {
                warn!("NATS connection lost; reconnecting (envelopes wait, the cursor holds)");
                health.set_state(NatsState::Reconnecting);
            }
        }
        Event::Closed => health.set_state(NatsState::Reconnecting),
        Event::ServerError(_) | Event::ClientError(_) => {
            let line = refusal_line(&event.to_string(), &health.snapshot().servers);
            // The client retries every few seconds: the same refusal is logged once, not each time.
            if health.note_error(&line) {
                warn!("{line}");
            } else {
                debug!("{line}");
            }
        }
        other => warn!("NATS: {}", escape_controls(&other.to_string())),
    }
}

/// What the server or the client said, with the remedy when there is one.
pub(super) fn refusal_line(said: &str, servers: &str) -> String {
    let said = escape_controls(said);
    if said.contains("IO error") || said.contains("timed out") {
        format!(
            "cannot reach the NATS server ({servers}: {said}); envelopes wait and the bridge keeps trying; check bridge.agent.url and that nats-server runs with -js"
        )
    } else if said.contains("authorization") || said.contains("authentication") {
        format!(
            "NATS refused the login ({said}); check the token in bridge.agent.tokenEnv or the bridge.agent.credentialsFile, and the server's users"
        )
    } else {
        format!("NATS: {said}")
    }
}

/// Create the streams and the claim bucket when missing; leave existing ones as they are (an
/// operator may have tuned them) but say when the duplicate window differs.
pub async fn ensure(client: async_nats::Client, config: &NatsConfig) -> Result<Conn, NatsError> {
    let mut js = jetstream::new(client);
    js.set_timeout(API_TIMEOUT);
    let names = Names {
        prefix: config.subject_prefix.clone(),
    };
    let inbound = stream::Config {
        name: config.stream.clone(),
        subjects: vec![names.inbound_all()],
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: config.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut existing = get_or_create(&js, inbound).await?;
    let window = existing.info().await.map(|i| i.config.duplicate_window).ok();
    if let Some(window) = window.filter(|w| *w != config.duplicate_window) {
        warn!(
            stream = %config.stream,
            "the stream's duplicate window is {} s, not bridge.agent.duplicateWindowSeconds ({} s); the stream's own setting applies",
            window.as_secs(),
            config.duplicate_window.as_secs()
        );
    }
    let replies = stream::Config {
        name: config.reply_stream.clone(),
        subjects: vec![names.outbound_all()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: config.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    get_or_create(&js, replies).await?;
    let bucket = format!("{}_claims", config.reply_stream);
    // The bucket's stream is made here rather than by `create_key_value`, which first reads the
    // account's JetStream info in a shape nats-server 2.9 does not answer with; this is the layout
    // every key-value client reads (`KV_<bucket>`, subjects `$KV.<bucket>.>`).
    get_or_create(&js, claim_stream(&bucket)).await?;
    let claims = js
        .get_key_value(bucket.clone())
        .await
        .map_err(|e| setup(&format!("key-value bucket {bucket}"), e))?;
    Ok(Conn { js, claims })
}

/// The stream behind the claim bucket: one value per key, kept a week.
fn claim_stream(bucket: &str) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("imsg-bridge: which bridge took which reply (docs/scale-out.md)".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: CLAIM_MAX_AGE,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

async fn get_or_create(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| setup(&format!("stream {name}"), e))
}

fn setup(what: &str, err: impl std::fmt::Display) -> NatsError {
    NatsError::Setup {
        what: what.to_string(),
        reason: escape_controls(&err.to_string()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_names_the_keys_to_check() {
        let line = refusal_line("client error: nats: authorization violation", "nats://a:4222");
        assert!(
            line.starts_with("NATS refused the login (client error: nats: authorization violation)"),
            "{line}"
        );
        assert!(line.contains("bridge.agent.tokenEnv"), "{line}");
        assert_eq!(
            refusal_line("server error: maximum payload\n", "nats://a:4222"),
            "NATS: server error: maximum payload\\n"
        );
        let down = refusal_line("client error: nats: IO error", "nats://a:4222");
        assert!(
            down.starts_with("cannot reach the NATS server (nats://a:4222: client error"),
            "{down}"
        );
    }

    #[test]
    fn reconnects_start_at_once_then_back_off_to_about_eight_seconds() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let second = reconnect_delay(2);
        assert!(
            second >= Duration::from_millis(200) && second <= Duration::from_millis(300),
            "{second:?}"
        );
        let late = reconnect_delay(50);
        assert!(
            late >= Duration::from_millis(6400) && late <= Duration::from_millis(9600),
            "{late:?}"
        );
    }

    #[test]
    fn an_unset_token_variable_stops_the_start_with_its_name() {
        let config = NatsConfig {
            token_env: Some("IMSG_BRIDGE_TEST_UNSET_NATS_TOKEN".into()),
            ..NatsConfig::example("nats://127.0.0.1:4222")
        };
        let health = Arc::new(NatsHealth::new(&config, Arc::new(crate::http::Metrics::new())));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let err = options(&config, health.clone(), tx.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("$IMSG_BRIDGE_TEST_UNSET_NATS_TOKEN"), "{err}");
        let missing = NatsConfig {
            token_env: None,
            credentials_file: Some("/nonexistent/bridge.creds".into()),
            ..config
        };
        let err = options(&missing, health, tx).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read bridge.agent.credentialsFile /nonexistent/bridge.creds"),
            "{err}"
        );
    }
}

//! The `nats` sink: every envelope is published to JetStream (`<prefix>.in.<account>`, header
//! `Nats-Msg-Id: <envelope id>`) and the call returns only after the PubAck, so the cursor never
//! passes an envelope JetStream does not hold; replies come back from a work-queue stream
//! (`replies`). While NATS is down, `deliver` waits and retries with backoff (docs/scale-out.md).
//!
//! Each account publishes one envelope at a time: a pipelined publish whose earlier message was
//! lost with a dropped connection could land after a later one, and the stream keeps ROWID order
//! per account only because nothing overtakes.

pub mod connect;
pub mod health;
mod inflight;
pub mod probe;
mod replies;
pub mod subject;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use self::connect::{Conn, NatsError};
use self::health::{NatsHealth, NatsState};
use self::subject::Names;
use super::reply::Outboxes;
use super::{Delivery, SinkError, SinkSetup};
use crate::config::NatsConfig;
use crate::envelope::Envelope;
use crate::util::backoff::{Backoff, Schedule};
use crate::util::escape::escape_controls;

/// Retries of an envelope JetStream did not acknowledge: 250 ms doubling to 5 s.
const PUBLISH_RETRY: Schedule = Schedule {
    first: Duration::from_millis(250),
    max: Duration::from_secs(5),
    jitter: 0.2,
    healthy: None,
};
/// Retries of creating the streams after a connect: 1 s doubling to 30 s.
const SETUP_RETRY: Schedule = Schedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: 0.2,
    healthy: None,
};

pub struct NatsSink {
    config: NatsConfig,
    names: Names,
    /// `Some` once connected with the streams in place; the client reconnects underneath it.
    conn: watch::Receiver<Option<Conn>>,
    health: Arc<NatsHealth>,
    outboxes: Arc<Outboxes>,
    /// Where each account's claimed, unsettled replies are recorded.
    state_dir: std::path::PathBuf,
    /// Each serving account's record of them, opened by its reply puller.
    inflight: std::sync::Mutex<std::collections::HashMap<String, Arc<inflight::Inflight>>>,
    /// Asks the maintaining task to check the streams again (one went missing).
    resetup: Arc<Notify>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink").field("config", &self.config).finish()
    }
}

impl NatsSink {
    /// Start connecting (in the background: a server that is down is waited for, not an error)
    /// until `cancel`; fails only on credentials or TLS files that cannot be read.
    pub fn start(config: &NatsConfig, setup: &SinkSetup<'_>) -> Result<Arc<Self>, NatsError> {
        let health = Arc::new(NatsHealth::new(config, setup.metrics.clone()));
        let (cancel, tasks) = (setup.cancel.clone(), setup.tasks);
        let (events_tx, events) = mpsc::unbounded_channel();
        let options = connect::options(config, health.clone(), events_tx)?;
        let (conn_tx, conn) = watch::channel(None);
        let resetup = Arc::new(Notify::new());
        let link = Link {
            config: config.clone(),
            health: health.clone(),
            events,
            conn_tx,
            resetup: resetup.clone(),
        };
        tasks.spawn(maintain(options, link, cancel.clone()));
        Ok(Arc::new(Self {
            names: Names {
                prefix: config.subject_prefix.clone(),
            },
            config: config.clone(),
            conn,
            health,
            outboxes: setup.outboxes.clone(),
            state_dir: setup.state_dir.to_path_buf(),
            inflight: std::sync::Mutex::default(),
            resetup,
            cancel,
            tasks: tasks.clone(),
        }))
    }

    pub fn health(&self) -> Arc<NatsHealth> {
        self.health.clone()
    }

    /// Publish one envelope and wait for its PubAck, retrying with backoff while NATS is down or
    /// does not answer; Err only when the bridge stops first. Cancel-safe: an envelope dropped
    /// mid-publish is published again from the cursor, and JetStream drops the repeat by its id.
    pub async fn deliver(&self, envelope: &Envelope) -> Result<Delivery, SinkError> {
        let payload = bytes::Bytes::from(serde_json::to_vec(envelope).map_err(SinkError::Serialize)?);
        let subject = self.names.inbound(&envelope.account);
        self.outboxes
            .remember(&envelope.id, &envelope.account, &envelope.to);
        let mut backoff = Backoff::new(PUBLISH_RETRY);
        let mut failures = 0u32;
        loop {
            let conn = self.connected().await?;
            let started = Instant::now();
            self.health.pending(&envelope.account, 1);
            let result = tokio::select! {
                _ = self.cancel.cancelled() => None,
                acked = publish(&conn, &subject, &envelope.id, payload.clone()) => Some(acked),
            };
            self.health.pending(&envelope.account, -1);
            let Some(result) = result else {
                return Err(SinkError::Cancelled);
            };
            match result {
                Ok(ack) => {
                    let lag = envelope_age(&envelope.timestamp);
                    self.health
                        .acked(&envelope.account, started.elapsed(), lag, ack.duplicate);
                    self.warn_on_lag(envelope, lag);
                    if failures > 0 {
                        info!(account = %envelope.account, id = %escape_controls(&envelope.id), "JetStream took the envelope after {failures} failed attempts");
                        self.health.set_error(None);
                    }
                    return Ok(Delivery::Accepted { replies: Vec::new() });
                }
                // Larger than the server takes: the same envelope would fail forever and stall the
                // account, so it is dead-lettered like a webhook's 4xx.
                Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Ok(Delivery::Rejected(format!("NATS refused it: {err}")));
                }
                Err(err) => {
                    if err.kind() == PublishErrorKind::StreamNotFound {
                        // Deleted under us (or never made on this server): make it again.
                        self.resetup.notify_one();
                    }
                    failures += 1;
                    self.publish_failed(envelope, &err.to_string(), failures);
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(SinkError::Cancelled),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// A row older than the duplicate window may already be in the stream from another bridge, and
    /// JetStream no longer recognises its id: say so (once a minute) with the remedy.
    fn warn_on_lag(&self, envelope: &Envelope, lag: Option<Duration>) {
        let window = self.health.duplicate_window();
        if lag.is_some_and(|lag| lag >= window) && self.health.lag_warning_due() {
            warn!(
                account = %envelope.account,
                "publishing messages older than the duplicate window ({} s): if another bridge serves this account and published them already, the stream now holds them twice; raise bridge.agent.duplicateWindowSeconds to bridge.replay.maxAgeMinutes (docs/scale-out.md, \"Active-active\")",
                window.as_secs()
            );
        }
    }

    fn publish_failed(&self, envelope: &Envelope, err: &str, failures: u32) {
        let err = escape_controls(err);
        if failures == 1 {
            warn!(account = %envelope.account, id = %escape_controls(&envelope.id), "JetStream did not acknowledge the envelope ({err}); retrying with backoff, the cursor holds");
        } else {
            debug!(account = %envelope.account, failures, "publish failed again: {err}");
        }
        self.health.set_error(Some(format!("publish: {err}")));
    }

    /// Pull `account`'s replies until `stop` (the account's own token): one task per account,
    /// tracked with the sink's tasks.
    pub fn serve_replies(self: &Arc<Self>, account: &str, stop: CancellationToken) {
        self.tasks
            .spawn(replies::pull(self.clone(), account.to_string(), stop));
    }

    /// Open `account`'s record of claimed replies and report what an earlier run left claimed and
    /// unsettled: it stopped mid-send, so each may or may not have reached the Mac.
    fn open_inflight(&self, account: &str) {
        let (record, leftovers) = inflight::Inflight::open(&self.state_dir, account);
        for id in leftovers {
            warn!(
                account = %account, reply = %escape_controls(&id),
                "reply {} was claimed by this bridge before it stopped and its send was never recorded; it may or may not have reached the Mac, so it is not sent again (at most once)",
                escape_controls(&id)
            );
        }
        crate::util::lock(&self.inflight).insert(account.to_string(), Arc::new(record));
    }

    /// `account`'s record of claimed replies (opened when its puller started).
    fn inflight_of(&self, account: &str) -> Option<Arc<inflight::Inflight>> {
        crate::util::lock(&self.inflight).get(account).cloned()
    }

    /// The connection once it is up with its streams; waits while it is not.
    async fn connected(&self) -> Result<Conn, SinkError> {
        let mut conn = self.conn.clone();
        let ready = tokio::select! {
            _ = self.cancel.cancelled() => return Err(SinkError::Cancelled),
            ready = conn.wait_for(Option::is_some) => ready,
        };
        match ready.ok().and_then(|c| c.clone()) {
            Some(conn) => Ok(conn),
            // The maintaining task ended: only when the bridge stops.
            None => Err(SinkError::Cancelled),
        }
    }
}

/// Publish with the envelope id as `Nats-Msg-Id` and wait for the PubAck.
async fn publish(
    conn: &Conn,
    subject: &str,
    id: &str,
    payload: bytes::Bytes,
) -> Result<async_nats::jetstream::publish::PublishAck, PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    let ack = conn
        .js
        .publish_with_headers(subject.to_string(), headers, payload)
        .await?;
    ack.await
}

/// How old the message behind an envelope is (its RFC 3339 `timestamp` to now).
fn envelope_age(timestamp: &str) -> Option<Duration> {
    let sent = chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    (chrono::Utc::now() - sent.with_timezone(&chrono::Utc))
        .to_std()
        .ok()
}

/// What the maintaining task works with besides the client options.
struct Link {
    config: NatsConfig,
    health: Arc<NatsHealth>,
    events: mpsc::UnboundedReceiver<async_nats::Event>,
    conn_tx: watch::Sender<Option<Conn>>,
    resetup: Arc<Notify>,
}

/// Connect, make the streams, and hand the connection out; after every reconnect (and when a
/// publish found a stream missing) check the streams again (a server restarted without its store
/// has none) before saying connected.
async fn maintain(options: async_nats::ConnectOptions, mut link: Link, cancel: CancellationToken) {
    let client = tokio::select! {
        _ = cancel.cancelled() => return,
        client = options.connect(link.config.url.as_str()) => client,
    };
    let client = match client {
        Ok(client) => client,
        Err(err) => {
            // Only a URL the client cannot parse gets here; the config check should have caught it.
            warn!(
                "cannot use the NATS server URL: {}",
                escape_controls(&err.to_string())
            );
            link.health.set_error(Some(err.to_string()));
            return;
        }
    };
    info!(servers = %link.health.snapshot().servers, "connecting to NATS (envelopes wait until JetStream takes them)");
    loop {
        // Wait for the (re)connection, then make sure the streams exist.
        while client.connection_state() != async_nats::connection::State::Connected {
            tokio::select! {
                _ = cancel.cancelled() => return,
                event = link.events.recv() => if event.is_none() { return },
            }
        }
        let Some(conn) = setup(&client, &link.config, &link.health, &cancel).await else {
            return;
        };
        link.conn_tx.send_replace(Some(conn));
        link.health.set_state(NatsState::Connected);
        link.health.set_error(None);
        if !next_setup_due(&mut link, &cancel).await {
            return;
        }
    }
}

/// Wait for the next reconnect or a request to check the streams; false when stopping. A
/// disconnect meanwhile moves the state to reconnecting (the event callback).
async fn next_setup_due(link: &mut Link, cancel: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = link.resetup.notified() => return true,
            event = link.events.recv() => match event {
                None => return false,
                Some(async_nats::Event::Connected) => return true,
                Some(_) => {}
            },
        }
    }
}

/// The streams and the bucket, retried with backoff; `None` when cancelled.
async fn setup(
    client: &async_nats::Client,
    config: &NatsConfig,
    health: &NatsHealth,
    cancel: &CancellationToken,
) -> Option<Conn> {
    let mut backoff = Backoff::new(SETUP_RETRY);
    loop {
        match connect::ensure(client.clone(), config).await {
            Ok(conn) => return Some(conn),
            Err(err) => {
                let delay = backoff.next_delay();
                warn!("{err}; trying again in {} s", delay.as_secs().max(1));
                health.set_error(Some(err.to_string()));
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

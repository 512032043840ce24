//! What the nats sink is doing, for `GET /v1/status` (`nats`) and the logs: the connection's state,
//! publish latency, acks outstanding, and the active-active rule with this bridge's own lag.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::config::NatsConfig;
use crate::http::Metrics;
use crate::util::lock;

/// The connection as `GET /v1/status` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsState {
    /// Never connected yet (the server may be down or unreachable): envelopes wait.
    #[default]
    Connecting,
    /// Connected; the streams and the claim bucket exist.
    Connected,
    /// Connected before, lost now; the client reconnects with backoff and envelopes wait.
    Reconnecting,
}

/// The `nats` object of `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NatsStatus {
    pub state: NatsState,
    /// The server URLs without any user or password.
    pub servers: String,
    pub stream: String,
    pub reply_stream: String,
    pub subject_prefix: String,
    pub duplicate_window_seconds: u64,
    /// The rule that keeps two bridges for one account from storing a message twice.
    pub active_active: String,
    /// How far behind the Mac the last envelope this bridge published was (its `date` to its PubAck).
    pub lag_seconds: Option<f64>,
    /// Whether that lag is over the duplicate window, when another bridge's copy may be stored again.
    pub lag_exceeds_window: bool,
    /// The last PubAck's latency and the mean over this run.
    pub publish_latency_ms: Option<f64>,
    pub mean_publish_latency_ms: Option<f64>,
    /// Envelopes waiting for their PubAck and replies pulled but not yet acked, by account.
    pub pending_acks: BTreeMap<String, i64>,
    pub last_error: Option<String>,
}

/// Shared between the sink's tasks and the status board.
#[derive(Debug)]
pub struct NatsHealth {
    status: Mutex<NatsStatus>,
    /// Sum of PubAck latencies and their count, for the mean.
    latency: Mutex<(Duration, u64)>,
    /// When the last "lag beyond the window" warning was logged.
    lag_warned: Mutex<Option<std::time::Instant>>,
    pub metrics: Arc<Metrics>,
}

/// At most one "lag beyond the window" warning per this long.
const LAG_WARNING_QUIET: Duration = Duration::from_secs(60);

impl NatsHealth {
    pub fn new(config: &NatsConfig, metrics: Arc<Metrics>) -> Self {
        let window = config.duplicate_window.as_secs();
        let status = NatsStatus {
            servers: config.servers(),
            stream: config.stream.clone(),
            reply_stream: config.reply_stream.clone(),
            subject_prefix: config.subject_prefix.clone(),
            duplicate_window_seconds: window,
            active_active: format!(
                "two bridges may serve one account while each lags the Mac by less than the duplicate window ({window} s)"
            ),
            ..NatsStatus::default()
        };
        metrics.set_nats_connected(&config.stream, false);
        Self {
            status: Mutex::new(status),
            latency: Mutex::new((Duration::ZERO, 0)),
            lag_warned: Mutex::new(None),
            metrics,
        }
    }

    pub fn snapshot(&self) -> NatsStatus {
        lock(&self.status).clone()
    }

    pub fn state(&self) -> NatsState {
        lock(&self.status).state
    }

    pub fn set_state(&self, state: NatsState) {
        let mut status = lock(&self.status);
        status.state = state;
        self.metrics
            .set_nats_connected(&status.stream, state == NatsState::Connected);
    }

    pub fn set_error(&self, error: Option<String>) {
        lock(&self.status).last_error = error;
    }

    /// Record `error` as the last one; true when it differs from the one before (worth a warning).
    pub fn note_error(&self, error: &str) -> bool {
        let mut status = lock(&self.status);
        let new = status.last_error.as_deref() != Some(error);
        status.last_error = Some(error.to_string());
        new
    }

    /// `bridge.replay.maxAgeMinutes`: a catch-up publishes rows up to that old, so a duplicate window
    /// at least as long makes two bridges safe whatever their lag (docs/scale-out.md, "Active-active").
    pub fn set_replay_bound(&self, max_age: Duration) {
        let mut status = lock(&self.status);
        let window = status.duplicate_window_seconds;
        let bound = max_age.as_secs();
        status.active_active = if window >= bound {
            format!(
                "two bridges may serve one account: the duplicate window ({window} s) covers the oldest row a catch-up publishes (bridge.replay.maxAgeMinutes, {bound} s)"
            )
        } else {
            format!(
                "two bridges may serve one account while each lags the Mac by less than the duplicate window ({window} s); a catch-up may publish rows up to {bound} s old (bridge.replay.maxAgeMinutes), so set duplicateWindowSeconds >= {bound} to cover any lag"
            )
        };
    }

    /// Whether a warning about a lag beyond the window is due now (once a minute at most).
    pub fn lag_warning_due(&self) -> bool {
        let mut warned = lock(&self.lag_warned);
        let now = std::time::Instant::now();
        if warned.is_some_and(|at| now.duration_since(at) < LAG_WARNING_QUIET) {
            return false;
        }
        *warned = Some(now);
        true
    }

    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(lock(&self.status).duplicate_window_seconds)
    }

    /// One PubAck for `account`: `lag` is the envelope's age when it was acknowledged.
    pub fn acked(&self, account: &str, latency: Duration, lag: Option<Duration>, duplicate: bool) {
        self.metrics.nats_acked(account, latency, duplicate);
        let mean = {
            let mut sum = lock(&self.latency);
            sum.0 += latency;
            sum.1 += 1;
            sum.0.as_secs_f64() * 1000.0 / sum.1 as f64
        };
        let mut status = lock(&self.status);
        status.publish_latency_ms = Some(latency.as_secs_f64() * 1000.0);
        status.mean_publish_latency_ms = Some(mean);
        if let Some(lag) = lag {
            status.lag_seconds = Some(lag.as_secs_f64());
            status.lag_exceeds_window = lag.as_secs() >= status.duplicate_window_seconds;
        }
    }

    /// Change `account`'s count of outstanding acks by `delta`.
    pub fn pending(&self, account: &str, delta: i64) {
        let mut status = lock(&self.status);
        let slot = status.pending_acks.entry(account.to_string()).or_insert(0);
        *slot = (*slot + delta).max(0);
        self.metrics.set_nats_pending(account, *slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configs_debug_form_never_shows_a_password_in_the_url() {
        let config = NatsConfig::example("nats://bob:s3cret@a:4222");
        let debug = format!("{:?}", crate::config::AgentSink::Nats(Box::new(config)));
        assert!(
            !debug.contains("s3cret") && debug.contains("nats://a:4222"),
            "{debug}"
        );
    }

    #[test]
    fn server_urls_lose_their_credentials_and_keep_the_rest() {
        let config = NatsConfig::example("nats://bob:s3cret@a:4222, tls://tok@b:4223,c:4222");
        assert_eq!(config.servers(), "nats://a:4222,tls://b:4223,c:4222");
    }

    #[test]
    fn the_status_names_the_window_and_flags_a_lag_beyond_it() {
        let config = NatsConfig::example("nats://a:4222");
        let health = NatsHealth::new(&config, Arc::new(Metrics::new()));
        assert_eq!(health.state(), NatsState::Connecting);
        health.acked(
            "default",
            Duration::from_millis(2),
            Some(Duration::from_secs(5)),
            false,
        );
        let status = health.snapshot();
        assert!(status.active_active.contains("600 s"), "{}", status.active_active);
        health.set_replay_bound(Duration::from_secs(7200));
        assert!(
            health
                .snapshot()
                .active_active
                .contains("set duplicateWindowSeconds >= 7200"),
            "{}",
            health.snapshot().active_active
        );
        health.set_replay_bound(Duration::from_secs(300));
        assert!(health.snapshot().active_active.contains("covers the oldest row"));
        assert!(health.lag_warning_due());
        assert!(!health.lag_warning_due(), "once a minute");
        assert!(!status.lag_exceeds_window);
        health.acked(
            "default",
            Duration::from_millis(4),
            Some(Duration::from_secs(601)),
            true,
        );
        let status = health.snapshot();
        assert!(status.lag_exceeds_window);
        assert_eq!(status.mean_publish_latency_ms, Some(3.0));
        health.pending("default", 1);
        health.pending("default", -2);
        assert_eq!(health.snapshot().pending_acks["default"], 0, "never below zero");
        let json = serde_json::to_value(health.snapshot()).unwrap();
        assert_eq!(json["state"], "connecting");
        assert_eq!(json["duplicateWindowSeconds"], 600);
    }
}

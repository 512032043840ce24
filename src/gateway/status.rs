//! What each account is doing right now (connecting, connected with its host key, backing off and
//! why), for `GET /v1/status` and the logs' readers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::http::Metrics;
use crate::util::lock;

use serde::Serialize;

/// What an account is doing; serialised as `GET /v1/status` shows it (docs/agents.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// Opening the transport and subscribing (an entry starts here).
    #[default]
    Connecting,
    /// Watching for messages.
    Connected,
    /// The last attempt failed; the next one is `retry_in_secs` away.
    BackingOff,
    /// Same backend as another account: that one's watcher serves it (`via`).
    Shared,
    /// Stopped on request.
    Stopped,
}

impl AccountState {
    /// The name `GET /v1/status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::BackingOff => "backing_off",
            Self::Shared => "shared",
            Self::Stopped => "stopped",
        }
    }
}

/// The state of one account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountStatus {
    pub state: AccountState,
    /// `process` or the SSH target (`user@host:port`).
    pub transport: Option<String>,
    /// SHA256 fingerprint of the Mac's host key, once connected over SSH.
    pub host_key: Option<String>,
    pub cursor: Option<i64>,
    pub last_error: Option<String>,
    /// Seconds until the next attempt while backing off.
    pub retry_in_secs: Option<f64>,
    pub reconnects: u64,
    /// Set when the account shares another account's watcher (same backend).
    pub via: Option<String>,
}

/// Every account's status, and the counters behind `/metrics`.
#[derive(Debug, Default)]
pub struct StatusBoard {
    accounts: Mutex<BTreeMap<String, AccountStatus>>,
    pub metrics: Arc<Metrics>,
    /// The nats sink's connection and publishing, when that is the sink.
    nats: std::sync::OnceLock<Arc<crate::sink::nats::health::NatsHealth>>,
}

impl StatusBoard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            accounts: Mutex::new(BTreeMap::new()),
            metrics,
            nats: std::sync::OnceLock::new(),
        }
    }

    pub fn set_nats(&self, health: Arc<crate::sink::nats::health::NatsHealth>) {
        let _ = self.nats.set(health);
    }

    /// The `nats` object of `GET /v1/status`, when the nats sink runs.
    pub fn nats(&self) -> Option<crate::sink::nats::health::NatsStatus> {
        self.nats.get().map(|health| health.snapshot())
    }

    /// Change one account's entry.
    pub fn update(&self, account: &str, change: impl FnOnce(&mut AccountStatus)) {
        let mut accounts = lock(&self.accounts);
        change(accounts.entry(account.to_string()).or_default());
    }

    pub fn get(&self, account: &str) -> Option<AccountStatus> {
        lock(&self.accounts).get(account).cloned()
    }

    pub fn remove(&self, account: &str) {
        lock(&self.accounts).remove(account);
    }

    pub fn snapshot(&self) -> BTreeMap<String, AccountStatus> {
        lock(&self.accounts).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_serialises_to_the_name_the_status_api_documents() {
        for state in [
            AccountState::Connecting,
            AccountState::Connected,
            AccountState::BackingOff,
            AccountState::Shared,
            AccountState::Stopped,
        ] {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, serde_json::Value::from(state.as_str()));
        }
        assert_eq!(AccountState::BackingOff.as_str(), "backing_off");
    }
}

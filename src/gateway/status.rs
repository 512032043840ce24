//! What each account is doing right now (connecting, connected with its host key, backing off and
//! why), for `GET /v1/status` and the logs' readers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::http::Metrics;

use serde::Serialize;

/// The state of one account.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AccountStatus {
    /// `connecting`, `connected`, `backing_off` or `stopped`.
    pub state: &'static str,
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
}

impl StatusBoard {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            accounts: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// Change one account's entry.
    pub fn update(&self, account: &str, change: impl FnOnce(&mut AccountStatus)) {
        let mut accounts = self
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(accounts.entry(account.to_string()).or_default());
    }

    pub fn get(&self, account: &str) -> Option<AccountStatus> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(account)
            .cloned()
    }

    pub fn remove(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(account);
    }

    pub fn snapshot(&self) -> BTreeMap<String, AccountStatus> {
        self.accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

//! The per-account supervisor: reach `imsg rpc` (process or SSH), probe it, subscribe from the
//! persisted cursor, turn each message into an envelope, hand it to the sink and only then advance
//! the cursor; on any failure reconnect with backoff, forever, until told to stop.

mod backoff;
pub mod channel;
pub mod config_command;
pub mod control;
mod debounce;
mod dedupe;
mod feed;
pub mod fleet;
mod replay;
mod session;
pub mod status;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ReplayConfig;
use crate::envelope::EnvelopeContext;
use crate::media::{Files, Stager};
use crate::rpc::RpcError;
use crate::sink::{Sink, SinkError};
use crate::state::{CursorStore, StateError};
use crate::transport::OpenError;
use crate::transport::resolve::Plan;
use crate::util::backoff::Backoff;
use channel::{ChannelRuntime, ChannelState};
use dedupe::RecentGuids;
use status::AccountState;

/// Everything one account needs at run time, resolved from the config.
#[derive(Debug, Clone)]
pub struct AccountRuntime {
    pub id: String,
    /// How `imsg rpc` is reached (decided once at start; the SSH target is re-resolved per connect).
    pub plan: Plan,
    pub include_attachments: bool,
    /// Timeout of probe requests and `watch.subscribe` (`probeTimeoutMs`).
    pub probe_timeout: Duration,
    pub envelope: EnvelopeContext,
    pub replay: ReplayConfig,
    pub media: MediaRuntime,
    pub channel: ChannelRuntime,
    /// `messages.inbound` debounce window for iMessage (zero: off).
    pub debounce: Duration,
    /// With a process transport and `remoteHost`: the Mac whose files imsg's answers name.
    pub remote_host: Option<crate::media::files::RemoteHost>,
}

/// Attachment settings of one account.
#[derive(Debug, Clone)]
pub struct MediaRuntime {
    /// `stateDir/media/inbound` (the cache; this account stages into `<inbound>/<account>`).
    pub inbound: PathBuf,
    /// Roots for files read in place (local imsg) and over SSH.
    pub local_roots: Vec<String>,
    pub remote_roots: Vec<String>,
    pub max_bytes: u64,
    pub retries: u32,
    pub sftp_timeout: Duration,
    pub cache_max_bytes: u64,
    pub cache_max_age: Duration,
}

impl MediaRuntime {
    /// A stager over `files` for `account`.
    pub fn stager(&self, account: &str, files: Files) -> Stager {
        let roots = match files {
            Files::Local => self.local_roots.clone(),
            Files::Remote(_) => self.remote_roots.clone(),
        };
        Stager {
            dir: self.inbound.join(account),
            roots,
            max_bytes: self.max_bytes,
            retries: self.retries,
            files,
        }
    }
}

/// Why a session (or the account) stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the watch ended: {0}")]
    WatchEnded(String),
    #[error("{reason} ({source})")]
    ConnectionLost {
        reason: String,
        #[source]
        source: Box<GatewayError>,
    },
}

/// What an account keeps from one session (connection) to the next: policy caches, recent guids,
/// media in flight, the outbox of waiting replies.
#[derive(Debug)]
struct SessionCarryover {
    /// Policy state (echo cache, held group history), the pairing store and the account's sender.
    channel: ChannelState,
    recent: RecentGuids,
    /// The imsg path found on the Mac (asked once per run).
    remote_cli: Option<String>,
    /// When the current session started watching, for the health reset of the backoff.
    watching_since: Option<Instant>,
    /// Media folders named by an envelope not yet accepted by the sink: the cache sweep skips them.
    in_flight: std::collections::HashSet<PathBuf>,
    /// Replies and API sends for this account; they wait here while the connection is down.
    outbox: crate::sink::reply::Outbox,
    status: std::sync::Arc<status::StatusBoard>,
    /// The replay bound of a catch-up a reconnect interrupted: the next session goes on under it, so
    /// rows that arrived meanwhile cannot move its floor past rows it promised to deliver.
    replay: Option<replay::ReplayBound>,
}

/// Run one account until `cancel` fires (Ok). Connection trouble never ends it; only a consumer
/// that is gone for good (the sink) does.
pub async fn run_account(
    account: &AccountRuntime,
    cursors: &CursorStore,
    sink: &Sink,
    outbox: crate::sink::reply::Outbox,
    status: std::sync::Arc<status::StatusBoard>,
    cancel: &CancellationToken,
) -> Result<(), GatewayError> {
    let mut backoff = Backoff::new(backoff::RECONNECT);
    status.metrics.register_account(&account.id);
    let mut carry = SessionCarryover {
        channel: ChannelState::new(account.channel.clone(), status.metrics.clone()),
        recent: RecentGuids::default(),
        remote_cli: None,
        watching_since: None,
        in_flight: Default::default(),
        outbox,
        status,
        replay: None,
    };
    loop {
        carry.watching_since = None;
        carry.status.update(&account.id, |s| {
            s.state = AccountState::Connecting;
            s.retry_in_secs = None;
        });
        let result = session::run(account, &mut carry, cursors, sink, cancel).await;
        let err = match result {
            Ok(()) => {
                carry
                    .status
                    .update(&account.id, |s| s.state = AccountState::Stopped);
                return Ok(());
            }
            Err(GatewayError::Sink(err)) => return Err(GatewayError::Sink(err)),
            Err(_) if cancel.is_cancelled() => return Ok(()),
            Err(err) => err,
        };
        if let Some(since) = carry.watching_since {
            backoff.record_uptime(since.elapsed());
        }
        let delay = backoff.next_delay();
        let secs = format!("{:.1}", delay.as_secs_f64());
        carry.status.metrics.inc_reconnects(&account.id);
        carry.status.metrics.set_connected(&account.id, false);
        carry.status.update(&account.id, |s| {
            s.state = AccountState::BackingOff;
            s.last_error = Some(err.to_string());
            s.retry_in_secs = Some(delay.as_secs_f64());
            s.reconnects += 1;
        });
        if carry.watching_since.is_some() {
            warn!(account = %account.id, "connection lost: {err}; backing off {secs} s");
        } else {
            error!(account = %account.id, "cannot reach imsg: {err}; backing off {secs} s");
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => info!(account = %account.id, "reconnecting"),
        }
    }
}

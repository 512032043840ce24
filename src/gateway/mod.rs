//! The per-account pipeline: start `imsg rpc`, probe it, subscribe from the persisted cursor, turn
//! each message into an envelope, hand it to the sink, and only then advance the cursor.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::envelope::{EnvelopeContext, normalize};
use crate::imsg::{ImsgClient, Message, Protocol, WatchParams};
use crate::rpc::{ClientOptions, Notification, RpcClient, RpcError, SubscriptionEvent, truncate_chars};
use crate::sink::{Sink, SinkError};
use crate::state::{CursorStore, StateError};
use crate::transport::{TransportError, process};

/// Everything one account needs at run time, resolved from the config.
#[derive(Debug, Clone)]
pub struct AccountRuntime {
    pub id: String,
    /// The `imsg`-speaking executable (`cliPath`) and its arguments (`rpc [--db …]`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub include_attachments: bool,
    /// Timeout of probe requests and `watch.subscribe` (`probeTimeoutMs`).
    pub probe_timeout: Duration,
    pub envelope: EnvelopeContext,
}

/// Why an account stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("the watch ended: {0}")]
    WatchEnded(String),
}

/// Run one account until `cancel` fires (Ok) or the connection fails (Err).
pub async fn run_account(
    account: &AccountRuntime,
    cursors: &CursorStore,
    sink: &Sink,
    cancel: &CancellationToken,
) -> Result<(), GatewayError> {
    info!(account = %account.id, program = %account.program.display(), "starting imsg rpc");
    let options = ClientOptions {
        request_timeout: account.probe_timeout,
        ..ClientOptions::default()
    };
    let (rpc, child) = process::spawn(&account.program, &account.args, options)?;
    let result = watch_loop(account, rpc.clone(), cursors, sink, cancel).await;
    let exit = child.stop(&rpc).await;
    debug!(account = %account.id, ?exit, "imsg rpc stopped");
    result
}

async fn watch_loop(
    account: &AccountRuntime,
    rpc: RpcClient,
    cursors: &CursorStore,
    sink: &Sink,
    cancel: &CancellationToken,
) -> Result<(), GatewayError> {
    let imsg = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        imsg = ImsgClient::initialize(rpc, account.probe_timeout) => imsg?,
    };
    match imsg.protocol() {
        Protocol::V1 { version } => {
            info!(account = %account.id, version = version.as_deref().unwrap_or("?"), "imsg speaks protocol v1")
        }
        Protocol::Baseline => info!(account = %account.id, "imsg is a baseline server (no initialize)"),
    }
    let mut cursor = match cursors.load(&account.id)? {
        Some(rowid) => rowid,
        None => {
            // First start: begin after the newest message and persist that at once, so a crash
            // before the first message cannot turn into "start at the newest" again and skip rows.
            let newest = imsg.newest_rowid().await?;
            cursors.save(&account.id, newest)?;
            info!(account = %account.id, rowid = newest, "no cursor yet: starting after the newest message");
            newest
        }
    };
    // 0 would mean "tail" to imsg; a negative cursor replays from the start (an empty database).
    let since = if cursor > 0 { cursor } else { -1 };
    let params = WatchParams {
        since_rowid: Some(since),
        attachments: account.include_attachments,
    };
    let mut subscription = imsg.watch(&params).await?;
    info!(account = %account.id, subscription = subscription.id(), since_rowid = cursor, "watching for messages");

    let ended = loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => break None,
            event = subscription.next() => event,
        };
        match event {
            SubscriptionEvent::Notification(notification) => {
                match handle_notification(account, &notification, cursor, sink).await? {
                    Handled::Advanced(rowid) => {
                        cursors.save(&account.id, rowid)?;
                        cursor = rowid;
                    }
                    Handled::Ignored => {}
                    Handled::WatchEnded(reason) => break Some(reason),
                }
            }
            SubscriptionEvent::Overflow => break Some("the bridge fell behind the watch".to_string()),
            SubscriptionEvent::Closed(err) => return Err(err.into()),
        }
    };
    if let Some(reason) = ended {
        return Err(GatewayError::WatchEnded(reason));
    }
    info!(account = %account.id, rowid = cursor, "stopping: unsubscribing");
    if let Err(err) = imsg.unwatch(subscription.id()).await {
        debug!(account = %account.id, %err, "watch.unsubscribe failed during shutdown");
    }
    Ok(())
}

enum Handled {
    /// The message was dealt with (delivered or deliberately skipped): the cursor may move here.
    Advanced(i64),
    Ignored,
    WatchEnded(String),
}

async fn handle_notification(
    account: &AccountRuntime,
    notification: &Notification,
    cursor: i64,
    sink: &Sink,
) -> Result<Handled, GatewayError> {
    match notification.method.as_str() {
        "message" => {}
        "error" => {
            let message = notification
                .params
                .pointer("/error/message")
                .and_then(|m| m.as_str())
                .unwrap_or("");
            return Ok(Handled::WatchEnded(format!(
                "imsg reported a watch error: {}",
                truncate_chars(message, 200)
            )));
        }
        "watch.overflow" => return Ok(Handled::WatchEnded("imsg reported watch.overflow".to_string())),
        other => {
            debug!(method = other, "ignoring notification");
            return Ok(Handled::Ignored);
        }
    }
    let Some(raw) = notification.params.get("message") else {
        warn!(account = %account.id, "dropping a message notification without a message");
        return Ok(Handled::Ignored);
    };
    let message: Message = match serde_json::from_value(raw.clone()) {
        Ok(message) => message,
        Err(err) => {
            warn!(account = %account.id, %err, "dropping a malformed message payload");
            return Ok(Handled::Ignored);
        }
    };
    if message.id <= cursor {
        debug!(account = %account.id, rowid = message.id, cursor, "skipping a message at or before the cursor");
        return Ok(Handled::Ignored);
    }
    if message.is_from_me {
        debug!(account = %account.id, rowid = message.id, "skipping our own outgoing message");
        return Ok(Handled::Advanced(message.id));
    }
    let envelope = normalize(&message, &account.envelope);
    trace!(account = %account.id, rowid = message.id, text = %truncate_chars(&envelope.text, 80), "delivering");
    sink.deliver(&envelope).await?;
    Ok(Handled::Advanced(message.id))
}

//! One session of an account: open the transport, initialize, subscribe from the cursor, deliver
//! until the watch or the connection ends, then stop the peer gracefully.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::channel::Outcome;
use super::debounce::Debouncer;
use super::replay::{ReplayBound, Verdict};
use super::{AccountRuntime, Carry, GatewayError};
use crate::imsg::{ImsgClient, Message, Protocol, WatchParams};
use crate::media::{Files, Stager};
use crate::rpc::{ClientOptions, Notification, RpcClient, SubscriptionEvent, truncate_chars};
use crate::sink::Delivery;
use crate::sink::Sink;
use crate::sink::reply::Outgoing;
use crate::state::CursorStore;
use crate::transport::{self, resolve::Plan};

/// Ok when cancelled; Err when the session ended for any other reason.
pub(super) async fn run(
    account: &AccountRuntime,
    carry: &mut Carry,
    cursors: &CursorStore,
    sink: &Sink,
    cancel: &CancellationToken,
) -> Result<(), GatewayError> {
    if let Plan::Process { program, .. } = &account.plan {
        info!(account = %account.id, program = %program.display(), "starting imsg rpc");
    }
    let options = ClientOptions {
        request_timeout: account.probe_timeout,
        ..ClientOptions::default()
    };
    let opening = transport::open(&account.plan, &account.id, options, &mut carry.remote_cli);
    let (rpc, peer) = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        opened = opening => opened?,
    };
    let files = peer.files(account.media.sftp_timeout);
    let (transport, host_key) = match peer.connection() {
        Some(connection) => (
            connection.target().display(),
            Some(connection.info.fingerprint.clone()),
        ),
        None => ("process".to_string(), None),
    };
    carry.status.update(&account.id, |s| {
        s.transport = Some(transport);
        s.host_key = host_key;
    });
    let stager = account
        .include_attachments
        .then(|| account.media.stager(&account.id, files.clone()));
    let io = Io {
        files: &files,
        stager: stager.as_ref(),
        cursors,
        sink,
    };
    let result = match watch(account, carry, rpc.clone(), &io, cancel).await {
        Err(err) if !matches!(err, GatewayError::Sink(_)) => Err(match peer.end_reason().await {
            Some(reason) => GatewayError::ConnectionLost {
                reason,
                source: Box::new(err),
            },
            None => err,
        }),
        other => other,
    };
    let exit = peer.stop(&rpc).await;
    debug!(account = %account.id, ?exit, "imsg rpc stopped");
    result
}

/// What a session reads and writes besides the account's own state.
struct Io<'a> {
    files: &'a Files,
    stager: Option<&'a Stager>,
    cursors: &'a CursorStore,
    sink: &'a Sink,
}

async fn watch(
    account: &AccountRuntime,
    carry: &mut Carry,
    rpc: RpcClient,
    io: &Io<'_>,
    cancel: &CancellationToken,
) -> Result<(), GatewayError> {
    let (files, cursors) = (io.files, io.cursors);
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
    let newest = imsg.newest_rowid().await?;
    let mut cursor = match cursors.load(&account.id)? {
        Some(rowid) => rowid,
        None => {
            // First start: begin after the newest message and persist that at once, so a crash
            // before the first message cannot turn into "start at the newest" again and skip rows.
            cursors.save(&account.id, newest)?;
            info!(account = %account.id, rowid = newest, "no cursor yet: starting after the newest message");
            newest
        }
    };
    let mut bound = ReplayBound::new(&account.replay, cursor, newest, chrono::Utc::now());
    if newest > cursor {
        info!(account = %account.id, from = cursor, to = newest, "catching up on rows missed while away");
    }
    let mut summarized = newest <= cursor;
    // 0 would mean "tail" to imsg; a negative cursor replays from the start (an empty database).
    let since = if cursor > 0 { cursor } else { -1 };
    let params = WatchParams {
        since_rowid: Some(since),
        attachments: account.include_attachments,
    };
    let mut subscription = imsg.watch(&params).await?;
    carry.watching_since = Some(Instant::now());
    carry.status.metrics.set_connected(&account.id, true);
    carry.status.metrics.set_cursor(&account.id, cursor);
    carry.status.update(&account.id, |s| {
        s.state = "connected";
        s.cursor = Some(cursor);
        s.retry_in_secs = None;
    });
    info!(account = %account.id, subscription = subscription.id(), since_rowid = cursor, "watching for messages");

    // Held rows are not handled yet: the persisted cursor stays below the lowest of them.
    let mut debouncer = Debouncer::new(&account.id, account.debounce);
    let mut seen = cursor;
    let ended = loop {
        let deadline = debouncer.next_deadline();
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => break None,
            _ = sleep_until(deadline) => None,
            event = subscription.next() => Some(event),
            Some(outgoing) = carry.outbox.recv() => {
                carry.channel.send_outgoing(outgoing, &imsg, files).await;
                continue;
            }
        };
        let ready = match event {
            None => debouncer.due(Instant::now()),
            Some(SubscriptionEvent::Notification(notification)) => match parse(account, &notification) {
                Parsed::Message(message) if message.id <= seen => {
                    debug!(account = %account.id, rowid = message.id, seen, "skipping a row already seen");
                    continue;
                }
                Parsed::Message(message) => {
                    seen = message.id;
                    debouncer.push(*message, Instant::now())
                }
                Parsed::Ignored => continue,
                Parsed::Ended(reason) => break Some(reason),
            },
            Some(SubscriptionEvent::Overflow) => break Some("the bridge fell behind the watch".to_string()),
            Some(SubscriptionEvent::Closed(err)) => return Err(err.into()),
        };
        for message in ready {
            deliver(account, carry, &mut bound, &message, &imsg, io).await?;
            if !summarized && bound.is_live(message.id) {
                summarize(account, &bound);
                summarized = true;
            }
        }
        let handled = match debouncer.lowest_held() {
            Some(held) => (held - 1).min(seen),
            None => seen,
        };
        if handled > cursor {
            cursors.save(&account.id, handled)?;
            cursor = handled;
            carry.status.update(&account.id, |s| s.cursor = Some(handled));
            carry.status.metrics.set_cursor(&account.id, handled);
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

/// Hand one row to the sink unless it is ours, a duplicate, or beyond the replay bound. Every
/// outcome lets the cursor move past the row.
async fn deliver(
    account: &AccountRuntime,
    carry: &mut Carry,
    bound: &mut ReplayBound,
    message: &Message,
    imsg: &ImsgClient,
    io: &Io<'_>,
) -> Result<(), GatewayError> {
    let (files, stager, sink) = (io.files, io.stager, io.sink);
    match bound.judge(message.id, &message.created_at) {
        Verdict::Dispatch => {}
        verdict => {
            debug!(account = %account.id, rowid = message.id, ?verdict, "skipping a row beyond bridge.replay");
            return Ok(());
        }
    }
    if !carry.recent.insert(&message.guid) {
        debug!(account = %account.id, rowid = message.id, guid = %message.guid, "skipping a message already delivered");
        return Ok(());
    }
    let folder = stager
        .filter(|_| !message.attachments.is_empty())
        .map(|s| s.message_dir(message));
    if let Some(folder) = &folder {
        carry.in_flight.insert(folder.clone());
    }
    carry.status.metrics.inc_messages_in(&account.id);
    let outcome = carry
        .channel
        .handle(message, &account.envelope, imsg, stager)
        .await;
    let delivered = match outcome {
        // An attachment that failed because the connection died is not the file's fault: hand
        // nothing over, reconnect, and stage it again from the cursor.
        Outcome::Deliver(envelope) if connection_lost_during_staging(&envelope, files) => {
            carry.recent.remove(&message.guid);
            if let Some(folder) = &folder {
                carry.in_flight.remove(folder);
            }
            return Err(GatewayError::WatchEnded(
                "the connection dropped while pulling attachments".to_string(),
            ));
        }
        Outcome::Deliver(envelope) => {
            carry.status.metrics.inc_dispatched(&account.id);
            trace!(account = %account.id, rowid = message.id, text = %truncate_chars(&envelope.text, 80), "delivering");
            match sink.deliver(&envelope).await {
                Ok(Delivery::Accepted { replies }) => {
                    // A webhook answered with replies: they go back to the envelope's conversation.
                    for reply in replies {
                        let outgoing = Outgoing {
                            to: reply.to.unwrap_or_else(|| envelope.to.clone()),
                            text: reply.text.unwrap_or_default(),
                            media: reply.media.into_iter().map(std::path::PathBuf::from).collect(),
                            from_agent: true,
                            reply_to: None,
                            done: None,
                        };
                        carry.channel.send_outgoing(outgoing, imsg, files).await;
                    }
                    Ok(())
                }
                Ok(Delivery::Rejected(reason)) => {
                    carry.status.metrics.inc_sink_rejected(&account.id);
                    warn!(account = %account.id, rowid = message.id, id = %envelope.id, "the agent rejected the envelope for good: {reason}");
                    Ok(())
                }
                Err(err) => Err(err),
            }
        }
        Outcome::Done => Ok(()),
    };
    if let Some(folder) = &folder {
        carry.in_flight.remove(folder);
        sweep_cache(account, carry);
    }
    delivered?;
    Ok(())
}

/// Whether a `failed` attachment of `envelope` may be the connection's doing: it is gone now.
fn connection_lost_during_staging(envelope: &crate::envelope::Envelope, files: &Files) -> bool {
    let failed = envelope
        .media
        .iter()
        .any(|m| m.status == crate::envelope::MediaStatus::Failed);
    failed && matches!(files, Files::Remote(remote) if remote.connection().is_closed())
}

/// Sleep until `deadline`, or forever without one (a `select!` branch that never fires).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Keep the media cache within its bounds; cheap enough to run after each message with media.
fn sweep_cache(account: &AccountRuntime, carry: &Carry) {
    crate::media::cache::sweep(
        &account.media.inbound,
        account.media.cache_max_bytes,
        account.media.cache_max_age,
        &carry.in_flight,
    );
}

fn summarize(account: &AccountRuntime, bound: &ReplayBound) {
    if bound.skipped() == 0 {
        info!(account = %account.id, "caught up");
        return;
    }
    warn!(
        account = %account.id,
        skipped = bound.skipped(),
        beyond_max_rows = bound.too_many,
        older_than_max_age = bound.too_old,
        "caught up; skipped {} missed rows beyond bridge.replay (maxRows {}, maxAgeMinutes {})",
        bound.skipped(),
        account.replay.max_rows,
        account.replay.max_age_minutes
    );
}

enum Parsed {
    Message(Box<Message>),
    Ignored,
    Ended(String),
}

fn parse(account: &AccountRuntime, notification: &Notification) -> Parsed {
    match notification.method.as_str() {
        "message" => {}
        "error" => {
            let message = notification
                .params
                .pointer("/error/message")
                .and_then(|m| m.as_str())
                .unwrap_or("");
            return Parsed::Ended(format!(
                "imsg reported a watch error: {}",
                truncate_chars(message, 200)
            ));
        }
        "watch.overflow" => return Parsed::Ended("imsg reported watch.overflow".to_string()),
        other => {
            debug!(method = other, "ignoring notification");
            return Parsed::Ignored;
        }
    }
    let Some(raw) = notification.params.get("message") else {
        warn!(account = %account.id, "dropping a message notification without a message");
        return Parsed::Ignored;
    };
    match serde_json::from_value(raw.clone()) {
        Ok(message) => Parsed::Message(Box::new(message)),
        Err(err) => {
            warn!(account = %account.id, %err, "dropping a malformed message payload");
            Parsed::Ignored
        }
    }
}

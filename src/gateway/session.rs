//! One session of an account: open the transport, initialize, run the feed (catch up, watch,
//! deliver) until it ends, then stop the peer gracefully; and the delivery of one row.

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::channel::Outcome;
use super::feed::Feed;
use super::replay::{ReplayBound, Verdict};
use super::{AccountRuntime, GatewayError, SessionCarryover};
use crate::imsg::{ImsgClient, Message, Protocol};
use crate::media::{Files, Stager};
use crate::outbound::Link;
use crate::rpc::{ClientOptions, RpcClient, truncate_chars};
use crate::sink::Delivery;
use crate::sink::Sink;
use crate::sink::reply::AgentReply;
use crate::state::CursorStore;
use crate::transport::{self, resolve::Plan};

/// Ok when cancelled; Err when the session ended for any other reason.
pub(super) async fn run(
    account: &AccountRuntime,
    carry: &mut SessionCarryover,
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
    if let Some(host) = &account.remote_host {
        info!(account = %account.id, host = %host.display(), "attachments are read over SSH from remoteHost");
    }
    let files = Files::for_session(&peer, account.remote_host.clone(), account.media.sftp_timeout);
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
    let io = SessionEndpoints {
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

/// Where a session reads and writes besides its carryover: the Mac's files (local or over SFTP),
/// the media stager, the cursor store and the agent's sink.
pub(super) struct SessionEndpoints<'a> {
    pub files: &'a Files,
    pub stager: Option<&'a Stager>,
    pub cursors: &'a CursorStore,
    pub sink: &'a Sink,
}

async fn watch(
    account: &AccountRuntime,
    carry: &mut SessionCarryover,
    rpc: RpcClient,
    io: &SessionEndpoints<'_>,
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
    Feed::start(account, carry, io, &imsg).await?.run(cancel).await
}

/// Hand one row to the sink unless it is ours, a duplicate, or beyond the replay bound. Every
/// outcome lets the cursor move past the row; an error (the sink is gone, the connection dropped
/// while staging) does not, and the row is taken again from the cursor.
pub(super) async fn deliver(
    account: &AccountRuntime,
    carry: &mut SessionCarryover,
    bound: &mut ReplayBound,
    message: &Message,
    imsg: &ImsgClient,
    io: &SessionEndpoints<'_>,
) -> Result<(), GatewayError> {
    let (files, stager, sink) = (io.files, io.stager, io.sink);
    match bound.judge(message.id, &message.created_at) {
        Verdict::Dispatch => {}
        // Counted by the bound and summarised once per catch-up: no log line and no write per row.
        Verdict::TooMany | Verdict::TooOld => return Ok(()),
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
        .handle(message, &account.envelope, Link { imsg, files }, stager)
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
                    for reply in replies {
                        queue_webhook_reply(account, carry, &envelope.to, reply);
                    }
                    Ok(())
                }
                Ok(Delivery::Rejected(reason)) => {
                    carry.status.metrics.inc_sink_rejected(&account.id);
                    dead_letter(account, carry, &envelope, &reason)
                }
                Err(err) => Err(err.into()),
            }
        }
        Outcome::Done => Ok(()),
    };
    if let Some(folder) = &folder {
        carry.in_flight.remove(folder);
        sweep_cache(account, carry);
    }
    if delivered.is_err() {
        // Not handed over: the row comes again from the cursor and must not be taken for a repeat.
        carry.recent.remove(&message.guid);
    }
    delivered
}

/// A webhook answered with a reply: it goes from this account to its own `to`, else back to the
/// envelope's conversation, through the account's outbox like an exec agent's; the feed sends it
/// before it takes the next rows.
fn queue_webhook_reply(
    account: &AccountRuntime,
    carry: &mut SessionCarryover,
    envelope_to: &str,
    reply: AgentReply,
) {
    let to = reply.to.clone().unwrap_or_else(|| envelope_to.to_string());
    match reply.into_outgoing(&to) {
        Ok(outgoing) => carry.outbox.push(outgoing),
        Err(err) => {
            carry.status.metrics.inc_send_failures(&account.id);
            warn!(account = %account.id, to, "reply failed: {err}");
        }
    }
}

/// Keep an envelope the sink can never accept in the dead-letter folder and move on: a poison
/// message must not stall the account (docs/reliability.md, "Dead letters"). A dead letter that
/// cannot be written is an error: the row is taken again after the backoff rather than lost.
fn dead_letter(
    account: &AccountRuntime,
    carry: &SessionCarryover,
    envelope: &crate::envelope::Envelope,
    reason: &str,
) -> Result<(), GatewayError> {
    let state_dir = &account.channel.state_dir;
    let path =
        crate::sink::dead_letter::write(state_dir, &account.id, envelope, reason).map_err(|source| {
            let dir = crate::sink::dead_letter::dir(state_dir, &account.id);
            GatewayError::State(crate::state::FileError::writing(&dir)(source).into())
        })?;
    carry.status.metrics.inc_dead_letters(&account.id);
    warn!(
        account = %account.id, rowid = envelope.rowid, id = %envelope.id,
        "the agent can never accept this envelope ({reason}); dead-lettered to {}", path.display()
    );
    Ok(())
}

/// Whether a `failed` attachment of `envelope` may be the connection's doing: it is gone now.
fn connection_lost_during_staging(envelope: &crate::envelope::Envelope, files: &Files) -> bool {
    let failed = envelope
        .media
        .iter()
        .any(|m| m.status == crate::envelope::MediaStatus::Failed);
    failed && matches!(files, Files::Remote(remote) if remote.link().is_closed())
}

/// Keep the media cache within its bounds; cheap enough to run after each message with media.
fn sweep_cache(account: &AccountRuntime, carry: &SessionCarryover) {
    crate::media::cache::sweep(
        &account.media.inbound,
        account.media.cache_max_bytes,
        account.media.cache_max_age,
        &carry.in_flight,
    );
}

//! Replies from the work-queue stream: each account's bridges share one durable pull consumer, so
//! JetStream hands every reply to one of them. A reply is sent at most once, whatever crashes: the
//! account's loop claims it in the shared bucket (create-only) right before the send, the claim is
//! marked sent and the reply acked once imsg accepted it, and a send that failed before reaching
//! the Mac gives the claim back and is nak'ed with backoff (docs/scale-out.md, "Failure semantics").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::NatsSink;
use super::connect::{Conn, instance};
use super::inflight::Inflight;
use super::subject::ReplyId;
use crate::outbound::SendError;
use crate::sink::reply::{AgentReply, RouteError, SendOutcome};
use crate::util::backoff::{Backoff, Schedule};
use crate::util::escape::escape_controls;
use crate::util::lock;

/// How long JetStream waits for an ack before it hands a reply to another bridge (docs/scale-out.md).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// While a reply waits in the account's outbox (its connection is down), this often JetStream hears
/// that it is still being worked on, so it is not handed to another bridge meanwhile.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Replies of one account pulled and not yet acked, at most.
const REPLIES_IN_FLIGHT: usize = 8;
/// How long one pull waits for replies before it asks again.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Deliveries of a reply to an envelope this bridge does not know yet before it is given up.
const UNKNOWN_ENVELOPE_TRIES: i64 = 5;
/// Deliveries of a reply whose sends keep failing before reaching the Mac (about 6 minutes of
/// backoff) before it is given up.
const SEND_ATTEMPTS: i64 = 10;
/// Deliveries after which a claim whose holder never recorded the send counts as lost.
const LOST_CLAIM_DELIVERIES: i64 = 3;
const RESTART: Schedule = Schedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: 0.2,
    healthy: Some(Duration::from_secs(60)),
};

/// Pull `account`'s replies until `stop`, starting over (with backoff) when the consumer fails.
pub(super) async fn pull(sink: Arc<NatsSink>, account: String, stop: CancellationToken) {
    sink.open_inflight(&account);
    let mut backoff = Backoff::new(RESTART);
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            conn = sink.connected() => match conn { Ok(conn) => conn, Err(_) => return },
        };
        let started = std::time::Instant::now();
        match consume(&sink, &conn, &account, &stop).await {
            Ok(()) => return,
            Err(err) => {
                backoff.record_uptime(started.elapsed());
                let delay = backoff.next_delay();
                warn!(account = %account, "pulling replies failed: {}; again in {} s", escape_controls(&err), delay.as_secs().max(1));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn consume(
    sink: &Arc<NatsSink>,
    conn: &Conn,
    account: &str,
    stop: &CancellationToken,
) -> Result<(), String> {
    let consumer = bind(sink, conn, account).await?;
    let mut running: JoinSet<()> = JoinSet::new();
    let result = loop {
        while running.len() >= REPLIES_IN_FLIGHT {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = running.join_next() => {}
            }
        }
        while running.try_join_next().is_some() {}
        if stop.is_cancelled() {
            break Ok(());
        }
        let want = REPLIES_IN_FLIGHT - running.len();
        // A failed pull (the consumer or its stream gone, the connection lost) binds again.
        if let Err(err) = pull_batch(sink, conn, &consumer, account, want, stop, &mut running).await {
            break Err(err);
        }
    };
    // Replies being sent finish (their outcome decides ack or nak); a stopping account's outbox is
    // dropped, which ends them too.
    while running.join_next().await.is_some() {}
    result
}

/// Pull up to `want` replies and start handling each.
async fn pull_batch(
    sink: &Arc<NatsSink>,
    conn: &Conn,
    consumer: &PullConsumer,
    account: &str,
    want: usize,
    stop: &CancellationToken,
    running: &mut JoinSet<()>,
) -> Result<(), String> {
    let batch = consumer
        .fetch()
        .max_messages(want)
        .expires(PULL_EXPIRES)
        .messages();
    let mut batch = batch.await.map_err(|e| e.to_string())?;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            next = batch.next() => next,
        };
        match next {
            None => return Ok(()),
            Some(Ok(message)) => {
                // Queued here, one after the other, so the outbox sends replies in the order the
                // workers published them; only the waits run side by side.
                sink.health.pending(account, 1);
                match queue_reply(sink, conn, account, message).await {
                    Ok(queued) => {
                        running.spawn(complete(sink.clone(), account.to_string(), queued));
                    }
                    Err(outcome) => counted(sink, account, outcome),
                }
            }
            Some(Err(err)) => return Err(format!("pull: {err}")),
        }
    }
}

/// The durable consumer every bridge of `account` shares (made when missing).
async fn bind(sink: &NatsSink, conn: &Conn, account: &str) -> Result<PullConsumer, String> {
    let stream = match conn.js.get_stream(&sink.config.reply_stream).await {
        Ok(stream) => stream,
        Err(err) => {
            if super::probe::is_not_found(err.kind()) {
                // Deleted under us: the maintaining task makes it again.
                sink.resetup.notify_one();
            }
            return Err(format!("stream {}: {err}", sink.config.reply_stream));
        }
    };
    let durable = sink.names.durable(account);
    let config = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: sink.names.outbound(account),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|e| format!("consumer {durable}: {e}"))?;
    info!(account = %account, subject = %sink.names.outbound(account), durable, "pulling replies");
    Ok(consumer)
}

/// What became of one pulled reply (the `outcome` label of `nats_replies_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Nak'ed: it comes back (to this bridge or another) after a delay.
    Retried,
    /// Another bridge sent it (or holds it); acked here without sending.
    SkippedClaimed,
    /// Its claim's holder stopped before recording the send: not sent again, logged by id.
    LostClaim,
    /// It can never be sent (malformed, no target, a refused file) or may have gone out: terminated.
    Refused,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retried => "retried",
            Self::SkippedClaimed => "skipped_claimed",
            Self::LostClaim => "lost_claim",
            Self::Refused => "refused",
        }
    }
}

/// One pulled reply settled: no longer pending, counted by outcome.
fn counted(sink: &NatsSink, account: &str, outcome: Outcome) {
    sink.health.pending(account, -1);
    sink.health.metrics.inc_nats_replies(account, outcome.as_str());
}

/// A reply in the account's outbox, waiting for its send.
struct Queued {
    message: async_nats::jetstream::Message,
    id: ReplyId,
    delivered: i64,
    claim: Arc<Claim>,
    outcome: oneshot::Receiver<SendOutcome>,
}

/// The reply's id and how often JetStream delivered it.
fn identify(message: &async_nats::jetstream::Message) -> (ReplyId, i64) {
    let (sequence, delivered) = message
        .info()
        .map(|info| (info.stream_sequence, info.delivered))
        .unwrap_or((0, 1));
    let msg_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string())
        .filter(|id| !id.is_empty());
    let id = match msg_id {
        Some(id) => ReplyId::MsgId(id),
        None => ReplyId::Sequence(sequence),
    };
    (id, delivered)
}

/// Parse, address and queue one pulled reply; `Err` with its outcome when it was settled at once
/// (malformed, unaddressable, or the outbox full).
async fn queue_reply(
    sink: &NatsSink,
    conn: &Conn,
    account: &str,
    message: async_nats::jetstream::Message,
) -> Result<Queued, Outcome> {
    let (id, delivered) = identify(&message);
    let reply: AgentReply = match serde_json::from_slice(&message.payload) {
        Ok(reply) => reply,
        Err(err) => {
            warn!(account = %account, reply = %id, "dropping a reply that is not reply JSON: {err}");
            return Err(finish(&message, AckKind::Term, Outcome::Refused).await);
        }
    };
    let mut outgoing = match sink.outboxes.resolve(reply, account) {
        Ok((_, outgoing)) => outgoing,
        Err(RouteError::UnknownEnvelope(envelope)) if delivered < UNKNOWN_ENVELOPE_TRIES => {
            debug!(account = %account, reply = %id, envelope = %escape_controls(&envelope), "reply to an envelope not seen here yet; later");
            return Err(finish(
                &message,
                AckKind::Nak(Some(retry_delay(delivered))),
                Outcome::Retried,
            )
            .await);
        }
        Err(err) => {
            warn!(account = %account, reply = %id, "dropping the reply: {err} (give replies a \"to\", the envelope's)");
            return Err(finish(&message, AckKind::Term, Outcome::Refused).await);
        }
    };
    let record = sink.inflight_of(account).map(|record| (record, id.to_string()));
    let claim = Arc::new(Claim::new(conn.claims.clone(), id.claim_key(account), record));
    let (done, outcome) = oneshot::channel();
    outgoing.done = Some(done);
    outgoing.gate = Some(Box::pin({
        let claim = claim.clone();
        async move { claim.take().await }
    }));
    if let Err(err) = sink.outboxes.queue(account, outgoing) {
        debug!(account = %account, reply = %id, "cannot queue the reply now: {err}");
        return Err(finish(
            &message,
            AckKind::Nak(Some(retry_delay(delivered))),
            Outcome::Retried,
        )
        .await);
    }
    Ok(Queued {
        message,
        id,
        delivered,
        claim,
        outcome,
    })
}

/// Wait for the account's loop to send (or hold back) a queued reply, then settle it.
async fn complete(sink: Arc<NatsSink>, account: String, queued: Queued) {
    let Queued {
        message,
        id,
        delivered,
        claim,
        outcome,
    } = queued;
    let result = wait_with_progress(&message, outcome).await;
    // The account stopped with the reply claimed: the send may have begun, so it stays recorded.
    let unknown = result.is_none() && matches!(claim.verdict(), Verdict::Claimed);
    let outcome = settle(&account, &id, delivered, &claim, &message, result).await;
    if !unknown {
        claim.settled();
    }
    counted(&sink, &account, outcome);
}

/// Wait for the account's loop to send (or hold back) the reply, telling JetStream meanwhile that
/// the reply is being worked on.
async fn wait_with_progress(
    message: &async_nats::jetstream::Message,
    mut outcome: oneshot::Receiver<SendOutcome>,
) -> Option<SendOutcome> {
    loop {
        tokio::select! {
            result = &mut outcome => return result.ok(),
            _ = tokio::time::sleep(PROGRESS_EVERY) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// Ack, nak or terminate by what the send came to.
async fn settle(
    account: &str,
    id: &ReplyId,
    delivered: i64,
    claim: &Claim,
    message: &async_nats::jetstream::Message,
    result: Option<SendOutcome>,
) -> Outcome {
    match (result, claim.verdict()) {
        (Some(Ok(_)), _) => {
            claim.mark(ClaimState::Sent).await;
            finish(message, AckKind::Ack, Outcome::Sent).await
        }
        (Some(Err(SendError::Held(_))), Verdict::Taken(record)) => {
            existing_claim(account, id, delivered, record, message).await
        }
        (Some(Err(SendError::Held(reason))), _) => {
            // The bucket did not answer: nothing was sent. A create that went through unanswered
            // left a claim of ours, which is given back when it can be read.
            claim.release_if_ours().await;
            debug!(account = %account, reply = %id, "{reason}; later");
            finish(
                message,
                AckKind::Nak(Some(retry_delay(delivered))),
                Outcome::Retried,
            )
            .await
        }
        (Some(Err(err)), _) if err.maybe_delivered() => {
            claim.mark(ClaimState::Uncertain).await;
            warn!(account = %account, reply = %id, "the reply may or may not have reached the Mac ({err}); its claim stays, so it is never sent again");
            finish(message, AckKind::Term, Outcome::Refused).await
        }
        (Some(Err(err)), _) if transient(&err) && delivered >= SEND_ATTEMPTS => {
            claim.release().await;
            warn!(account = %account, reply = %id, "giving up on the reply after {delivered} attempts: {err}");
            finish(message, AckKind::Term, Outcome::Refused).await
        }
        (Some(Err(err)), _) if transient(&err) => {
            claim.release().await;
            debug!(account = %account, reply = %id, "the reply did not reach the Mac ({err}); released for a retry");
            finish(
                message,
                AckKind::Nak(Some(retry_delay(delivered))),
                Outcome::Retried,
            )
            .await
        }
        (Some(Err(err)), _) => {
            claim.release().await;
            warn!(account = %account, reply = %id, "dropping the reply: {err}");
            finish(message, AckKind::Term, Outcome::Refused).await
        }
        // The account stopped with the reply queued. Not claimed: nothing went out; claimed: the
        // send may have begun, so the claim stays and the next delivery reports it.
        (None, Verdict::Claimed) => Outcome::Retried,
        (None, _) => {
            finish(
                message,
                AckKind::Nak(Some(retry_delay(delivered))),
                Outcome::Retried,
            )
            .await
        }
    }
}

/// A reply another holder claimed first.
async fn existing_claim(
    account: &str,
    id: &ReplyId,
    delivered: i64,
    record: Option<ClaimRecord>,
    message: &async_nats::jetstream::Message,
) -> Outcome {
    let record = record.unwrap_or_default();
    match record.state {
        ClaimState::Sent => {
            debug!(account = %account, reply = %id, by = %record.bridge, "already sent");
            finish(message, AckKind::Ack, Outcome::SkippedClaimed).await
        }
        // The holder may still be at it: give it time before calling the reply lost.
        ClaimState::Sending if delivered < LOST_CLAIM_DELIVERIES => {
            finish(
                message,
                AckKind::Nak(Some(Duration::from_secs(10))),
                Outcome::Retried,
            )
            .await
        }
        ClaimState::Uncertain => {
            info!(account = %account, reply = %id, by = %escape_controls(&record.bridge), "reply {id} may have gone out already (its send's outcome was unknown); not sending it again");
            finish(message, AckKind::Term, Outcome::SkippedClaimed).await
        }
        ClaimState::Sending => {
            warn!(
                account = %account, reply = %id, by = %escape_controls(&record.bridge), claimed_at = record.at,
                "reply {id} was claimed by {} and that bridge stopped before it recorded the send; it may or may not have reached the Mac, so it is not sent again (at most once)",
                escape_controls(&record.bridge)
            );
            finish(message, AckKind::Term, Outcome::LostClaim).await
        }
    }
}

/// imsg's code for a request that is wrong in itself (an unknown chat, a bad parameter).
const INVALID_PARAMS: i64 = -32602;

/// Sends that failed before anything was sent and may work later: no connection, an upload that
/// failed, or imsg refusing for a reason of the Mac's (Messages' Automation permission) rather
/// than of the reply.
fn transient(err: &SendError) -> bool {
    match err {
        SendError::NotConnected(_) | SendError::Upload { .. } => true,
        SendError::Refused {
            code,
            maybe_delivered: false,
            ..
        } => *code != INVALID_PARAMS,
        _ => false,
    }
}

/// 2 s doubling per delivery, at most a minute.
fn retry_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 6) - 1).unwrap_or(5);
    Duration::from_secs(2u64.pow(exponent) * 2).min(Duration::from_secs(60))
}

async fn finish(message: &async_nats::jetstream::Message, kind: AckKind, outcome: Outcome) -> Outcome {
    if let Err(err) = message.ack_with(kind).await {
        // Unacked, the reply comes back after the ack wait and meets its claim.
        debug!("cannot ack the reply: {err}");
    }
    outcome
}

/// A claim's state, as stored in the bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    /// Taken; the send is under way or its holder stopped during it.
    #[default]
    Sending,
    /// imsg accepted the send.
    Sent,
    /// The send failed in a way that may have reached the Mac.
    Uncertain,
}

/// The value of a claim key: who took the reply, when, and how far it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub bridge: String,
    pub state: ClaimState,
    /// Seconds since the epoch.
    pub at: i64,
}

/// What the claim attempt found.
#[derive(Debug, Clone, Default)]
enum Verdict {
    /// Not tried (the send never reached the gate).
    #[default]
    Untried,
    Claimed,
    /// Someone else's claim (its record when readable).
    Taken(Option<ClaimRecord>),
    /// The bucket could not be reached: nothing was sent.
    Unavailable,
}

/// One reply's claim in the shared bucket, and in this bridge's record of unsettled claims.
struct Claim {
    store: kv::Store,
    key: String,
    verdict: Mutex<Verdict>,
    /// The account's record and the reply's id as it is reported.
    record: Option<(Arc<Inflight>, String)>,
}

impl Claim {
    fn new(store: kv::Store, key: String, record: Option<(Arc<Inflight>, String)>) -> Self {
        Self {
            store,
            key,
            verdict: Mutex::new(Verdict::Untried),
            record,
        }
    }

    /// Done with, one way or another: no longer reported at the next start.
    fn settled(&self) {
        if let Some((record, id)) = &self.record {
            record.remove(id);
        }
    }

    fn record(state: ClaimState) -> bytes::Bytes {
        let record = ClaimRecord {
            bridge: instance(),
            state,
            at: chrono::Utc::now().timestamp(),
        };
        // A struct of strings and integers always serialises.
        bytes::Bytes::from(serde_json::to_vec(&record).unwrap_or_default())
    }

    /// Create-only: Ok when this bridge now holds the reply.
    async fn take(&self) -> Result<(), String> {
        // Recorded before the claim exists, so no claim of ours can miss the next start's report.
        if let Some((record, id)) = &self.record {
            record.add(id);
        }
        let created = self
            .store
            .create(&self.key, Self::record(ClaimState::Sending))
            .await;
        let (verdict, result) = match created {
            Ok(_) => (Verdict::Claimed, Ok(())),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.settled();
                let record = self.read().await;
                (
                    Verdict::Taken(record),
                    Err("another bridge claimed this reply".to_string()),
                )
            }
            Err(err) => (
                Verdict::Unavailable,
                Err(format!("cannot claim the reply: {err}")),
            ),
        };
        *lock(&self.verdict) = verdict;
        result
    }

    async fn read(&self) -> Option<ClaimRecord> {
        let entry = self.store.entry(&self.key).await.ok()??;
        serde_json::from_slice(&entry.value).ok()
    }

    fn verdict(&self) -> Verdict {
        lock(&self.verdict).clone()
    }

    async fn mark(&self, state: ClaimState) {
        if let Err(err) = self.store.put(&self.key, Self::record(state)).await {
            // The claim still exists: the reply is not sent again either way.
            debug!(key = %self.key, "cannot record the claim's state: {err}");
        }
    }

    /// Give back a claim this bridge may have made without hearing the answer.
    async fn release_if_ours(&self) {
        if self
            .read()
            .await
            .is_some_and(|record| record.bridge == instance())
        {
            self.release().await;
        }
    }

    /// Give the reply back (nothing reached the Mac): the next delivery may claim it again.
    async fn release(&self) {
        if let Err(err) = self.store.delete(&self.key).await {
            warn!(key = %self.key, "cannot release the claim: {err}; the reply will count as lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_two_seconds_to_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|d| retry_delay(d).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn only_sends_that_never_reached_the_mac_are_retried() {
        let rpc = || crate::rpc::RpcError::NotRunning { stderr: Vec::new() };
        assert!(transient(&SendError::NotConnected(rpc())));
        assert!(
            !transient(&SendError::Held("taken".into())),
            "held sends are settled by their claim"
        );
        assert!(!transient(&SendError::Empty));
        let refused = |code, maybe_delivered| SendError::Refused {
            code,
            maybe_delivered,
            source: rpc(),
        };
        assert!(
            transient(&refused(-32603, false)),
            "Automation denied: the Mac's doing, retried"
        );
        assert!(
            !transient(&refused(-32602, false)),
            "an unknown chat fails the same way again"
        );
        assert!(
            !transient(&refused(-32001, true)),
            "may have gone out: never retried"
        );
        assert!(
            SendError::ConnectionLost(rpc()).maybe_delivered(),
            "never retried: it may have gone out"
        );
        assert!(SendError::Timeout(rpc()).maybe_delivered());
    }

    #[test]
    fn a_claim_record_reads_back_as_written() {
        let record = ClaimRecord {
            bridge: "host:42".into(),
            state: ClaimState::Sent,
            at: 1_700_000_000,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, r#"{"bridge":"host:42","state":"sent","at":1700000000}"#);
        assert_eq!(serde_json::from_str::<ClaimRecord>(&json).unwrap(), record);
    }
}

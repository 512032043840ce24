//! The delivery loop of one session: catch up on the gap since the cursor by paging it with
//! `messages.after`, then watch for new rows; hand each row to the sink in ROWID order and commit
//! the cursor once per batch the sink accepted. A watch that overflows (imsg's buffer or ours) is
//! backpressure, not a failure: the feed pages the gap again and resubscribes on the same
//! connection at once (docs/reliability.md, "Catching up after downtime").

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::debounce::Debouncer;
use super::replay::ReplayBound;
use super::session::{SessionEndpoints, deliver};
use super::{AccountRuntime, GatewayError, SessionCarryover};
use crate::imsg::{ImsgClient, Message, Protocol, WatchEvent, WatchParams};
use crate::outbound::Link;
use crate::rpc::{Subscription, SubscriptionEvent};

/// Rows per `messages.after` page (imsg's largest page).
const PAGE_ROWS: u32 = 500;
/// Watch events handled between two cursor commits at most (group commit).
const COMMIT_BATCH: usize = 512;
/// The watch buffer asked of imsg (its largest); a server that refuses it keeps its default.
const WATCH_BUFFER: u32 = 4096;

/// Why a watch stopped without the connection failing.
enum WatchEnd {
    Cancelled,
    /// A buffer overflowed; `by` names whose.
    Overflow {
        by: &'static str,
    },
}

/// The delivery state of one session.
pub(super) struct Feed<'a> {
    account: &'a AccountRuntime,
    carry: &'a mut SessionCarryover,
    io: &'a SessionEndpoints<'a>,
    imsg: &'a ImsgClient,
    /// The persisted cursor: every row at or below it was handled.
    cursor: i64,
    /// The highest ROWID taken in (delivered, skipped or held by the debouncer).
    seen: i64,
    /// Held rows are not handled yet: the cursor stays below the lowest of them.
    debouncer: Debouncer,
    bound: ReplayBound,
    /// The catch-up summary was logged (or there was no backlog).
    summarized: bool,
    /// The server answers `messages.after`; false for a baseline server (the watch replays the gap).
    paging: bool,
}

impl<'a> Feed<'a> {
    /// Start from the persisted cursor (or, on the first start, from the newest message, persisted
    /// at once so that a crash before the first message cannot skip rows).
    pub(super) async fn start(
        account: &'a AccountRuntime,
        carry: &'a mut SessionCarryover,
        io: &'a SessionEndpoints<'a>,
        imsg: &'a ImsgClient,
    ) -> Result<Feed<'a>, GatewayError> {
        let newest = imsg.newest_rowid().await?;
        let cursor = match io.cursors.load(&account.id)? {
            Some(rowid) => rowid,
            None => {
                io.cursors.save(&account.id, newest)?;
                info!(account = %account.id, rowid = newest, "no cursor yet: starting after the newest message");
                newest
            }
        };
        let bound = match carry.replay.take() {
            Some(bound) if cursor < bound.backlog_end() => {
                info!(account = %account.id, from = cursor, to = bound.backlog_end(), "going on with the catch-up a reconnect interrupted");
                bound
            }
            _ => {
                if newest > cursor {
                    info!(account = %account.id, from = cursor, to = newest, "catching up on rows missed while away");
                }
                ReplayBound::new(&account.replay, cursor, newest, chrono::Utc::now())
            }
        };
        Ok(Feed {
            summarized: cursor >= bound.backlog_end(),
            bound,
            paging: matches!(imsg.protocol(), Protocol::V1 { .. }),
            debouncer: Debouncer::new(&account.id, account.debounce),
            account,
            carry,
            io,
            imsg,
            cursor,
            seen: cursor,
        })
    }

    /// Feed until cancelled (Ok) or the connection or the stream fails (Err). Uploads an earlier
    /// run left on the Mac are removed first; uploads still staged are removed (or recorded) last,
    /// while the connection is still open.
    pub(super) async fn run(mut self, cancel: &CancellationToken) -> Result<(), GatewayError> {
        self.carry.channel.sender.remove_leftovers(self.io.files).await;
        let result = self.feed(cancel).await;
        if result.is_err() {
            // What the agent accepted before the failure (or a stop while it refused) is not sent
            // again: commit it now. A failed commit leaves the cursor where it was (at-least-once).
            let _ = self.commit().await;
        }
        self.carry.channel.sender.remove_all(self.io.files).await;
        if !self.summarized {
            // Interrupted: the next session of this run goes on under the same bound.
            self.carry.replay = Some(self.bound.clone());
        }
        result
    }

    /// Catch up, watch, and on overflow do both again.
    async fn feed(&mut self, cancel: &CancellationToken) -> Result<(), GatewayError> {
        loop {
            if self.paging {
                self.catch_up(cancel).await?;
            }
            if cancel.is_cancelled() {
                return Ok(());
            }
            let mut subscription = self.subscribe().await?;
            let end = self.live(&mut subscription, cancel).await?;
            if let Err(err) = self.imsg.unwatch(subscription.id()).await {
                debug!(account = %self.account.id, %err, "watch.unsubscribe failed");
            }
            match end {
                WatchEnd::Cancelled => {
                    info!(account = %self.account.id, rowid = self.cursor, "stopped watching");
                    return Ok(());
                }
                WatchEnd::Overflow { by } => {
                    self.carry.status.metrics.inc_watch_overflows(&self.account.id);
                    info!(account = %self.account.id, rowid = self.seen, "the watch overflowed ({by}): resubscribing from the cursor");
                }
            }
        }
    }

    /// Page the gap after `seen` with `messages.after` until the server has no more. Pull-based,
    /// so no buffer can overflow however large the backlog is; the cursor is committed per page.
    async fn catch_up(&mut self, cancel: &CancellationToken) -> Result<(), GatewayError> {
        let imsg = self.imsg;
        let mut since = self.seen;
        let Some(mut page) = imsg
            .messages_after(since, PAGE_ROWS, self.page_attachments(since))
            .await?
        else {
            debug!(account = %self.account.id, "imsg has no messages.after: the watch replays the gap");
            self.paging = false;
            return Ok(());
        };
        while !cancel.is_cancelled() {
            let (take, next, more) = self.plan_page(&page);
            if more && next <= since {
                warn!(account = %self.account.id, since, "messages.after did not move forward; the watch takes over");
                return Ok(());
            }
            let rows: Vec<Message> = page.messages.drain(..take).collect();
            let attachments = self.page_attachments(next);
            // The next page is asked for while this one is delivered, so imsg's work and ours overlap.
            let (fetched, delivered) = tokio::join!(
                async {
                    match more {
                        true => imsg.messages_after(next, PAGE_ROWS, attachments).await,
                        false => Ok(None),
                    }
                },
                self.accept_all(rows),
            );
            delivered?;
            self.serve_outbox().await;
            self.commit().await?;
            match fetched? {
                Some(fetched) if more => (page, since) = (fetched, next),
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Whether a page starting after `since` is asked for with attachments: rows at or below the
    /// replay floor are skipped whatever they hold, so they are paged without.
    fn page_attachments(&self, since: i64) -> bool {
        self.account.include_attachments && since >= self.bound.floor()
    }

    /// How many rows of `page` to take, where the next page starts, and whether there is one. A
    /// page fetched without attachments stops at the floor: the rows above it are fetched again
    /// with their attachments.
    fn plan_page(&self, page: &crate::imsg::Page) -> (usize, i64, bool) {
        let floor = self.bound.floor();
        let first_rowid = page.messages.first().map_or(i64::MAX, |m| m.id);
        let skipping = self.account.include_attachments && first_rowid <= floor;
        match page.messages.iter().position(|m| skipping && m.id > floor) {
            Some(cut) => (cut, floor, true),
            None => (page.messages.len(), page.next_rowid, page.has_more),
        }
    }

    async fn accept_all(&mut self, rows: Vec<Message>) -> Result<(), GatewayError> {
        for message in rows {
            self.accept(message).await?;
        }
        Ok(())
    }

    /// Subscribe from `seen` (rows at or below it are handled or held), asking for imsg's largest
    /// buffer.
    async fn subscribe(&mut self) -> Result<Subscription, GatewayError> {
        // 0 would mean "tail" to imsg; a negative since replays from the start (an empty database).
        let since = if self.seen > 0 { self.seen } else { -1 };
        let params = WatchParams {
            since_rowid: Some(since),
            attachments: self.account.include_attachments,
            buffer_limit: self.paging.then_some(WATCH_BUFFER),
        };
        let subscription = self.imsg.watch(&params).await?;
        self.carry.watching_since.get_or_insert_with(Instant::now);
        let metrics = &self.carry.status.metrics;
        metrics.set_connected(&self.account.id, true);
        metrics.set_cursor(&self.account.id, self.cursor);
        let cursor = self.cursor;
        self.carry.status.update(&self.account.id, |s| {
            s.state = super::status::AccountState::Connected;
            s.cursor = Some(cursor);
            s.retry_in_secs = None;
        });
        info!(account = %self.account.id, subscription = subscription.id(), since_rowid = self.seen, "watching for messages");
        Ok(subscription)
    }

    /// Deliver watch events until cancelled, overflowed, or failed; events that are ready together
    /// are one batch with one cursor commit.
    async fn live(
        &mut self,
        subscription: &mut Subscription,
        cancel: &CancellationToken,
    ) -> Result<WatchEnd, GatewayError> {
        loop {
            let deadline = self.debouncer.next_deadline();
            let removal = self.carry.channel.sender.next_removal();
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(WatchEnd::Cancelled),
                _ = sleep_until(deadline) => None,
                event = subscription.next() => Some(event),
                Some(outgoing) = self.carry.outbox.recv() => {
                    self.carry.channel.send(outgoing, self.link()).await;
                    continue;
                }
                _ = sleep_until(removal) => {
                    self.carry.channel.sender.remove_due(self.io.files).await;
                    continue;
                }
            };
            let Some(first) = event else {
                for message in self.debouncer.due(Instant::now()) {
                    deliver(
                        self.account,
                        self.carry,
                        &mut self.bound,
                        &message,
                        self.imsg,
                        self.io,
                    )
                    .await?;
                }
                self.serve_outbox().await;
                self.commit().await?;
                continue;
            };
            let mut end = self.take(first).await?;
            let mut taken = 1;
            while end.is_none() && taken < COMMIT_BATCH {
                let Some(event) = subscription.try_next() else {
                    break;
                };
                end = self.take(event).await?;
                taken += 1;
            }
            self.serve_outbox().await;
            self.commit().await?;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Act on one watch event; `Some` when the watch is over.
    async fn take(&mut self, event: SubscriptionEvent) -> Result<Option<WatchEnd>, GatewayError> {
        let notification = match event {
            SubscriptionEvent::Notification(notification) => notification,
            SubscriptionEvent::Overflow => {
                return Ok(Some(WatchEnd::Overflow {
                    by: "the bridge's queue",
                }));
            }
            SubscriptionEvent::Closed(err) => return Err(err.into()),
        };
        match WatchEvent::decode(&notification) {
            WatchEvent::Message(message) => self.accept(*message).await?,
            WatchEvent::Overflow { .. } => return Ok(Some(WatchEnd::Overflow { by: "imsg's buffer" })),
            WatchEvent::Failed(reason) => {
                return Err(GatewayError::WatchEnded(format!(
                    "imsg reported a watch error: {reason}"
                )));
            }
            WatchEvent::Malformed(reason) => warn!(account = %self.account.id, "dropping {reason}"),
            WatchEvent::Other(method) => debug!(account = %self.account.id, method, "ignoring notification"),
        }
        Ok(None)
    }

    /// Take one row in: rows already seen are stepped over (a resubscription overlaps the page
    /// before it); the rest go through the debouncer to the sink.
    async fn accept(&mut self, message: Message) -> Result<(), GatewayError> {
        if message.id <= self.seen {
            debug!(account = %self.account.id, rowid = message.id, seen = self.seen, "skipping a row already seen");
            return Ok(());
        }
        let before = self.seen;
        self.seen = message.id;
        for ready in self.debouncer.push(message, Instant::now()) {
            let delivered = deliver(
                self.account,
                self.carry,
                &mut self.bound,
                &ready,
                self.imsg,
                self.io,
            )
            .await;
            if let Err(err) = delivered {
                // Not handled: a commit on the way out must stay below this row.
                self.seen = before.min(ready.id - 1);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Persist the cursor once for everything handled since the last commit (atomic, fsynced): the
    /// highest row taken in, or just below the lowest row the debouncer still holds.
    async fn commit(&mut self) -> Result<(), GatewayError> {
        // Whatever the sink buffered reaches the agent before the cursor moves past it.
        self.io.sink.flush().await?;
        let handled = match self.debouncer.lowest_held() {
            Some(held) => (held - 1).min(self.seen),
            None => self.seen,
        };
        if handled > self.cursor {
            self.io.cursors.save(&self.account.id, handled)?;
            self.cursor = handled;
            self.carry
                .status
                .update(&self.account.id, |s| s.cursor = Some(handled));
            self.carry.status.metrics.set_cursor(&self.account.id, handled);
        }
        if !self.summarized && self.cursor >= self.bound.backlog_end() {
            self.summarized = true;
            self.summarize();
        }
        Ok(())
    }

    /// One line per catch-up for what `bridge.replay` skipped, then "caught up".
    fn summarize(&self) {
        let skipped = self.bound.skipped();
        if let Some((from, to)) = self.bound.skipped_range() {
            self.carry
                .status
                .metrics
                .add_replay_skipped(&self.account.id, skipped);
            info!(
                account = %self.account.id,
                beyond_max_rows = self.bound.too_many,
                older_than_max_age = self.bound.too_old,
                "skipped {skipped} rows beyond bridge.replay (rowid {from}..{to}; maxRows {}, maxAgeMinutes {})",
                self.account.replay.max_rows,
                self.account.replay.max_age_minutes
            );
        }
        info!(account = %self.account.id, rowid = self.cursor, "caught up");
    }

    /// Send the replies that queued up while a page or a batch was delivered (a webhook's come
    /// with its answers), before the cursor moves past their rows, and remove the uploads that
    /// are due.
    async fn serve_outbox(&mut self) {
        while let Some(outgoing) = self.carry.outbox.try_recv() {
            self.carry.channel.send(outgoing, self.link()).await;
        }
        self.carry.channel.sender.remove_due(self.io.files).await;
    }

    /// The session's connection, for sends.
    fn link(&self) -> Link<'a> {
        Link {
            imsg: self.imsg,
            files: self.io.files,
        }
    }
}

/// Sleep until `deadline`, or forever without one (a `select!` branch that never fires).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

//! The NDJSON JSON-RPC 2.0 client over any byte stream: integer ids, per-request timeouts,
//! subscription routing (with buffering of notifications that arrive before their subscription is
//! confirmed), over-long line resync, and failing every pending request when the peer goes away.
//!
//! Two tasks own the stream: a writer (one line at a time, flushed) and a reader (frames, routes).
//! Both hold only a weak reference to the shared state, so dropping every `RpcClient` closes the
//! peer's stdin and lets it exit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, trace, warn};

use super::error::{ExitInfo, RpcError};
use super::lines::{Frame, LineReader};
use super::stderr::{StderrRing, truncate_chars};

/// Requests queued for the writer before `call` waits for room.
const WRITER_QUEUE: usize = 64;
/// Notifications kept for subscriptions whose `subscribe` answer has not arrived yet.
const ORPHAN_CAP: usize = 10_000;
/// How long to wait for the peer's exit status after its output ended.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);
/// Size of the read buffer in front of the line splitter.
const READ_BUFFER: usize = 64 * 1024;

/// Tunables of one client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest accepted line; longer ones are dropped with an error and the stream resyncs.
    pub max_line_bytes: usize,
    /// Timeout of a request made with [`RpcClient::call`].
    pub request_timeout: Duration,
    /// Notifications queued per subscription before it is declared overflowed (the consumer then
    /// resubscribes from its cursor, so nothing is lost).
    pub subscription_capacity: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: super::lines::MAX_LINE_BYTES,
            request_timeout: Duration::from_secs(10),
            subscription_capacity: 4096,
        }
    }
}

/// What the transport knows about the peer besides its byte streams.
#[derive(Debug, Default)]
pub struct PeerInfo {
    /// Diagnostic lines of the peer (process stderr, SSH channel extended data).
    pub stderr: StderrRing,
    /// Resolves with the exit status once the peer has ended.
    pub exit: Option<oneshot::Receiver<ExitInfo>>,
}

/// A server-to-client notification.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

/// What a subscription yields.
#[derive(Debug)]
pub enum SubscriptionEvent {
    Notification(Notification),
    /// The consumer fell too far behind and notifications were dropped: resubscribe from the cursor.
    Overflow,
    /// The connection ended.
    Closed(RpcError),
}

/// Cheap to clone handle of one connection.
#[derive(Debug, Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    next_id: AtomicU64,
    state: Mutex<State>,
    writer: mpsc::Sender<WriterCmd>,
    stderr: StderrRing,
    options: ClientOptions,
    done: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>,
    /// Set once the reader has ended; every later request fails with it.
    closed: Option<RpcError>,
    subs: HashMap<u64, SubSlot>,
    /// `subscribe` calls in flight: while non-zero, notifications of unknown ids are kept.
    subscribing: usize,
    orphans: HashMap<u64, Vec<Notification>>,
    orphan_count: usize,
    orphan_overflow: HashSet<u64>,
}

#[derive(Debug)]
struct SubSlot {
    tx: mpsc::Sender<Notification>,
    overflowed: Arc<AtomicBool>,
}

#[derive(Debug)]
enum WriterCmd {
    Line { id: u64, bytes: Vec<u8> },
    Shutdown,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        crate::util::lock(&self.state)
    }
}

impl RpcClient {
    /// Start the reader and writer tasks over `reader`/`writer` (the peer's stdout/stdin).
    pub fn start<R, W>(reader: R, writer: W, peer: PeerInfo, options: ClientOptions) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let (done, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            next_id: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            writer: writer_tx,
            stderr: peer.stderr,
            options,
            done,
        });
        tokio::spawn(write_loop(writer, writer_rx, Arc::downgrade(&inner)));
        let lines = LineReader::new(
            BufReader::with_capacity(READ_BUFFER, reader),
            inner.options.max_line_bytes,
        );
        tokio::spawn(read_loop(lines, Arc::downgrade(&inner), peer.exit));
        Self { inner }
    }

    /// A request with the default timeout.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.call_with_timeout(method, params, Some(self.inner.options.request_timeout))
            .await
    }

    /// A request with its own timeout (`None` waits for as long as the connection lives).
    pub async fn call_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, RpcError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.inner.state();
            if state.closed.is_some() {
                return Err(RpcError::NotRunning {
                    stderr: self.inner.stderr.tail(),
                });
            }
            state.pending.insert(id, tx);
        }
        // Removes the pending entry however this future ends (timeout, cancellation).
        let _guard = PendingGuard {
            inner: &self.inner,
            id,
        };
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut bytes = serde_json::to_vec(&request).map_err(|e| RpcError::Write {
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        trace!(method, id, "rpc request");
        if self
            .inner
            .writer
            .send(WriterCmd::Line { id, bytes })
            .await
            .is_err()
        {
            return Err(self.close_error());
        }
        let answer = match timeout {
            Some(limit) => match tokio::time::timeout(limit, rx).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(RpcError::Timeout {
                        method: method.to_string(),
                    });
                }
            },
            None => rx.await,
        };
        answer.unwrap_or_else(|_| Err(self.close_error()))
    }

    /// Subscribe with `method` (e.g. `watch.subscribe`); the result must carry `subscription`.
    /// Notifications that arrive before the answer (the baseline server does that) are kept and
    /// delivered first.
    pub async fn subscribe(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<(Value, Subscription), RpcError> {
        self.inner.state().subscribing += 1;
        let _guard = SubscribingGuard { inner: &self.inner };
        let result = self.call_with_timeout(method, params, timeout).await?;
        let Some(id) = result.get("subscription").and_then(Value::as_u64) else {
            return Err(RpcError::BadResult {
                method: method.to_string(),
                detail: "no subscription id".into(),
            });
        };
        let (tx, rx) = mpsc::channel(self.inner.options.subscription_capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        {
            let mut state = self.inner.state();
            if let Some(early) = state.orphans.remove(&id) {
                state.orphan_count -= early.len();
                for notification in early {
                    if tx.try_send(notification).is_err() {
                        overflowed.store(true, Ordering::Relaxed);
                    }
                }
            }
            if state.orphan_overflow.remove(&id) {
                overflowed.store(true, Ordering::Relaxed);
            }
            state.subs.insert(
                id,
                SubSlot {
                    tx,
                    overflowed: overflowed.clone(),
                },
            );
        }
        Ok((
            result,
            Subscription {
                id,
                rx,
                overflowed,
                client: self.clone(),
            },
        ))
    }

    /// Stop routing notifications of `subscription` (after `watch.unsubscribe`).
    pub fn forget_subscription(&self, subscription: u64) {
        self.inner.state().subs.remove(&subscription);
    }

    /// Close the peer's stdin after the queued requests; the peer then exits on its own.
    pub async fn close_input(&self) {
        let _ = self.inner.writer.send(WriterCmd::Shutdown).await;
    }

    /// Resolves once the peer's output has ended and every pending request has been failed.
    pub async fn closed(&self) {
        let mut done = self.inner.done.subscribe();
        // `wait_for` only errs when the sender is gone, which also means the reader finished.
        let _ = done.wait_for(|finished| *finished).await;
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.state().closed.is_some()
    }

    /// The peer's recent diagnostic lines.
    pub fn stderr(&self) -> &StderrRing {
        &self.inner.stderr
    }

    fn close_error(&self) -> RpcError {
        self.inner
            .state()
            .closed
            .clone()
            .unwrap_or_else(|| RpcError::NotRunning {
                stderr: self.inner.stderr.tail(),
            })
    }
}

struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.state().pending.remove(&self.id);
    }
}

struct SubscribingGuard<'a> {
    inner: &'a Inner,
}

impl Drop for SubscribingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.inner.state();
        state.subscribing -= 1;
        if state.subscribing == 0 {
            // Nobody can claim them any more: they belong to subscriptions we never confirmed.
            state.orphans.clear();
            state.orphan_count = 0;
            state.orphan_overflow.clear();
        }
    }
}

/// The notifications of one subscription, in the order the server sent them.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Notification>,
    overflowed: Arc<AtomicBool>,
    client: RpcClient,
}

impl Subscription {
    /// The server's subscription id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next(&mut self) -> SubscriptionEvent {
        if let Some(event) = self.try_next() {
            return event;
        }
        match self.rx.recv().await {
            Some(notification) => SubscriptionEvent::Notification(notification),
            None => SubscriptionEvent::Closed(self.client.close_error()),
        }
    }
}

impl Subscription {
    /// The next event if one is ready now, without waiting: lets the consumer take a batch of what
    /// has arrived and commit its cursor once for all of it.
    pub fn try_next(&mut self) -> Option<SubscriptionEvent> {
        match self.rx.try_recv() {
            Ok(notification) => Some(SubscriptionEvent::Notification(notification)),
            // Queued notifications come first: everything before the drop point is still valid.
            Err(mpsc::error::TryRecvError::Empty) if self.overflowed.load(Ordering::Relaxed) => {
                Some(SubscriptionEvent::Overflow)
            }
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                Some(SubscriptionEvent::Closed(self.client.close_error()))
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<WriterCmd>,
    inner: Weak<Inner>,
) {
    while let Some(cmd) = rx.recv().await {
        let (id, bytes) = match cmd {
            WriterCmd::Line { id, bytes } => (id, bytes),
            WriterCmd::Shutdown => break,
        };
        let written = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        }
        .await;
        if let Err(err) = written {
            // Fail this request now instead of letting it wait for its timeout (a broken pipe
            // usually means the peer is gone; the reader will notice too).
            debug!(%err, "rpc write failed");
            let Some(inner) = inner.upgrade() else { break };
            let waiter = inner.state().pending.remove(&id);
            if let Some(waiter) = waiter {
                let _ = waiter.send(Err(RpcError::Write {
                    detail: err.to_string(),
                }));
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<R>(mut lines: LineReader<R>, inner: Weak<Inner>, exit: Option<oneshot::Receiver<ExitInfo>>)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut junk_log = RateLimitedLog::new(5, Duration::from_secs(60));
    loop {
        let frame = match lines.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(err) => {
                debug!(%err, "rpc read failed");
                break;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        match frame {
            Frame::TooLong { len } => {
                warn!(
                    len,
                    limit = inner.options.max_line_bytes,
                    "imsg rpc: dropped an over-long line"
                )
            }
            Frame::Line(line) => handle_line(&inner, &line, &mut junk_log),
        }
    }
    let Some(inner) = inner.upgrade() else { return };
    let exit = match exit {
        Some(rx) => tokio::time::timeout(EXIT_STATUS_WAIT, rx)
            .await
            .ok()
            .and_then(Result::ok),
        None => None,
    };
    let error = RpcError::Closed {
        exit: exit.unwrap_or(ExitInfo::Unknown),
        stderr: inner.stderr.tail(),
    };
    debug!(%error, "rpc connection ended");
    let pending = {
        let mut state = inner.state();
        state.closed = Some(error.clone());
        state.subs.clear();
        std::mem::take(&mut state.pending)
    };
    for (_, waiter) in pending {
        let _ = waiter.send(Err(error.clone()));
    }
    inner.done.send_replace(true);
}

fn handle_line(inner: &Inner, line: &[u8], junk_log: &mut RateLimitedLog) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            // Old imsg printed its Full Disk Access banner on stdout: keep it for error messages.
            inner.stderr.push(text);
            if junk_log.allow() {
                warn!(%err, line = %truncate_chars(text, 200), "imsg rpc: skipped a line that is not JSON");
            }
            return;
        }
    };
    let Value::Object(mut object) = value else {
        debug!("imsg rpc: ignoring a JSON line that is not an object");
        return;
    };
    match object.get("id").and_then(id_as_u64) {
        Some(id) => {
            let waiter = inner.state().pending.remove(&id);
            let Some(waiter) = waiter else {
                debug!(id, "imsg rpc: answer for an unknown or timed-out request");
                return;
            };
            let answer = match object.remove("error") {
                Some(error) if !error.is_null() => Err(remote_error(error)),
                _ => Ok(object.remove("result").unwrap_or(Value::Null)),
            };
            let _ = waiter.send(answer);
        }
        None => {
            let Some(Value::String(method)) = object.remove("method") else {
                if object.get("error").is_some() {
                    warn!(line = %truncate_chars(text, 300), "imsg rpc: error without a request id");
                }
                return;
            };
            let params = object.remove("params").unwrap_or(Value::Null);
            route_notification(inner, Notification { method, params });
        }
    }
}

fn route_notification(inner: &Inner, notification: Notification) {
    let sub_id = notification.params.get("subscription").and_then(Value::as_u64);
    let mut state = inner.state();
    let Some(id) = sub_id else {
        debug!(method = %notification.method, "imsg rpc: notification without a subscription ignored");
        return;
    };
    if let Some(slot) = state.subs.get(&id) {
        if slot.overflowed.load(Ordering::Relaxed) {
            return;
        }
        match slot.tx.try_send(notification) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(
                    subscription = id,
                    "subscription queue full: dropping notifications until it resubscribes"
                );
                slot.overflowed.store(true, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                state.subs.remove(&id);
            }
        }
    } else if state.subscribing > 0 {
        if state.orphan_count >= ORPHAN_CAP {
            state.orphan_overflow.insert(id);
        } else {
            state.orphan_count += 1;
            state.orphans.entry(id).or_default().push(notification);
        }
    } else {
        debug!(
            subscription = id,
            "imsg rpc: notification for an unknown subscription ignored"
        );
    }
}

/// Our ids are integers, but a server may echo them as strings.
fn id_as_u64(id: &Value) -> Option<u64> {
    match id {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn remote_error(error: Value) -> RpcError {
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let data = error.get("data").cloned();
    RpcError::Remote { code, message, data }
}

/// Lets `limit` events through per `window`, so a peer printing garbage cannot flood the logs.
#[derive(Debug)]
struct RateLimitedLog {
    limit: u32,
    window: Duration,
    started: Instant,
    count: u32,
}

impl RateLimitedLog {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            started: Instant::now(),
            count: 0,
        }
    }

    fn allow(&mut self) -> bool {
        if self.started.elapsed() >= self.window {
            self.started = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        self.count <= self.limit
    }
}

#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod tests;

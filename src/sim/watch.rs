//! `watch.subscribe` / `watch.unsubscribe`: subscriptions that stream new message rows as
//! notifications, and the change feed that notices rows written by any process.
//!
//! How a subscription learns about new rows (docs/simulator.md): one change-feed thread per server polls
//! `PRAGMA data_version` on its own connection every [`FEED_INTERVAL`] — a cheap read of a counter that
//! changes whenever another connection (another process included) commits. A change wakes every
//! subscription, which waits its debounce (default 500 ms; later changes inside the window are
//! coalesced), then scans `ROWID > cursor` in batches of [`BATCH`] until a batch comes back short. A
//! [`SAFETY_POLL`] scan runs every 5 s regardless, as in imsg.
//!
//! Cursor: `since_rowid` omitted or 0 → start at the current `MAX(ROWID)` (no backlog); N > 0 → rows
//! with ROWID > N; negative → replay from the beginning. Filters: `chat_id` and tapback rows in SQL,
//! participants/start/end in memory (the cursor advances past filtered rows).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Value, json};
use tokio::sync::{OnceCell, Semaphore, oneshot, watch as tokio_watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sim::methods::{date_param, optional_chat_id};
use crate::sim::params::Params;
use crate::sim::protocol::{self, RpcError};
use crate::sim::query::{self, BuildOptions, ChatCache};
use crate::sim::rpc::{Backend, Outbox, Responder, Server};
use crate::sim::shapes::MessageRow;
use crate::sim::{Dialect, SimError, db};

/// Rows read per scan; a full batch is followed by another scan at once.
pub const BATCH: i64 = 100;
/// A scan runs this often even without a change event.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);
/// How often the change feed reads `PRAGMA data_version`.
pub const FEED_INTERVAL: Duration = Duration::from_millis(50);
/// RPC default debounce between a change and the scan (imsg's RPC default; the echo race needs it).
pub const DEFAULT_DEBOUNCE_MS: i64 = 500;
/// Strict mode: notifications a subscription may have queued but not yet written (imsg default 256).
pub const DEFAULT_BUFFER_LIMIT: i64 = 256;
pub const MAX_BUFFER_LIMIT: i64 = 4096;
/// Strict mode: live subscriptions per server.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Strict mode: scans a row that is not joined to a chat yet is retried before it is dropped.
pub const MAX_UNJOINED_RETRIES: u32 = 20;
/// Shortest wait before re-scanning for an unjoined row (keeps a zero debounce from spinning).
const MIN_RETRY_DELAY: Duration = Duration::from_millis(50);
/// How long a new change feed may take to read its first `data_version`.
const FEED_START_TIMEOUT: Duration = Duration::from_secs(2);

const STRICT_KEYS: &[&str] = &[
    "chat_id",
    "since_rowid",
    "participants",
    "start",
    "end",
    "attachments",
    "convert_attachments",
    "include_reactions",
    "debounce_ms",
    "debounceMs",
    "buffer_limit",
    "bufferLimit",
];

/// The live subscriptions of one server, and its change feed.
#[derive(Debug)]
pub(crate) struct Registry {
    backend: Arc<Backend>,
    state: Arc<Mutex<RegistryState>>,
    feed: OnceCell<Option<ChangeFeed>>,
}

#[derive(Debug, Default)]
struct RegistryState {
    last_id: u64,
    closed: bool,
    subs: HashMap<u64, SubHandle>,
}

#[derive(Debug)]
struct SubHandle {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Registry {
    pub fn new(backend: Arc<Backend>) -> Self {
        Registry {
            backend,
            state: Arc::new(Mutex::new(RegistryState::default())),
            feed: OnceCell::new(),
        }
    }

    /// A receiver that changes whenever chat.db changes, or `None` when the feed could not start
    /// (subscriptions then rely on the safety poll).
    async fn changes(&self) -> Option<tokio_watch::Receiver<u64>> {
        let path = self.backend.pool.path().to_path_buf();
        self.feed
            .get_or_init(|| ChangeFeed::start(path))
            .await
            .as_ref()
            .map(|f| f.rx.clone())
    }

    /// Assign an id and spawn the subscription's task under the lock, so that an unsubscribe can
    /// always find (and await) it.
    fn register(
        &self,
        spawn: impl FnOnce(u64, CancellationToken) -> JoinHandle<()>,
    ) -> Result<u64, RpcError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| RpcError::internal("subscription registry poisoned"))?;
        if state.closed {
            return Err(RpcError::server_busy("server is shutting down"));
        }
        if self.backend.dialect.is_strict() && state.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(RpcError::server_busy("subscription limit exceeded"));
        }
        state.last_id += 1;
        let id = state.last_id;
        let cancel = CancellationToken::new();
        let task = spawn(id, cancel.clone());
        state.subs.insert(id, SubHandle { cancel, task });
        Ok(id)
    }

    fn remove(&self, id: u64) -> Option<SubHandle> {
        self.state.lock().ok().and_then(|mut s| s.subs.remove(&id))
    }

    /// Refuse new subscriptions, cancel the live ones and wait until they have stopped.
    pub async fn shutdown(&self) {
        let handles: Vec<SubHandle> = match self.state.lock() {
            Ok(mut s) => {
                s.closed = true;
                s.subs.drain().map(|(_, h)| h).collect()
            }
            Err(_) => Vec::new(),
        };
        for h in &handles {
            h.cancel.cancel();
        }
        for h in handles {
            let _ = h.task.await;
        }
        if let Some(Some(feed)) = self.feed.get() {
            feed.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// The thread that turns commits by any connection into change events.
#[derive(Debug)]
struct ChangeFeed {
    rx: tokio_watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ChangeFeed {
    /// Start the feed thread and wait (bounded) until it has read the first `data_version`, so that
    /// every commit after this returns is seen as a change.
    async fn start(path: PathBuf) -> Option<ChangeFeed> {
        let (tx, rx) = tokio_watch::channel(0u64);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("imsg-sim-change-feed".into())
            .spawn(move || feed_loop(&path, &tx, &thread_stop, ready_tx));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the change feed, relying on the 5 s poll: {e}");
            return None;
        }
        if tokio::time::timeout(FEED_START_TIMEOUT, ready_rx).await.is_err() {
            tracing::warn!("the change feed is slow to start; new rows may arrive with the 5 s poll");
        }
        Some(ChangeFeed { rx, stop })
    }
}

fn feed_loop(
    path: &std::path::Path,
    tx: &tokio_watch::Sender<u64>,
    stop: &AtomicBool,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut conn: Option<Connection> = None;
    let mut last: Option<i64> = None;
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        if conn.is_none() {
            conn = db::open(path).ok();
        }
        if let Some(c) = &conn {
            match c.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0)) {
                Ok(version) => {
                    if last.is_some_and(|l| l != version) {
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    last = Some(version);
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Err(e) => {
                    tracing::debug!("change feed: {e}; reopening");
                    conn = None;
                    last = None;
                }
            }
        }
        std::thread::sleep(FEED_INTERVAL);
    }
}

/// What one subscription watches for.
#[derive(Debug, Clone)]
struct WatchSpec {
    chat_id: Option<i64>,
    /// Lower-cased sender handles; `None` = everyone.
    participants: Option<Vec<String>>,
    start: Option<i64>,
    end: Option<i64>,
    attachments: bool,
    include_reactions: bool,
    debounce: Duration,
    buffer_limit: i64,
}

/// `max_buffer` is the largest `buffer_limit` this server accepts ([`MAX_BUFFER_LIMIT`] unless a
/// fault lowers it).
fn parse_spec(p: &Params, max_buffer: i64) -> Result<(WatchSpec, Option<i64>), RpcError> {
    p.allow(STRICT_KEYS)?;
    let strict = p.dialect().is_strict();
    let debounce_ms = p
        .int_any(&["debounce_ms", "debounceMs"])?
        .unwrap_or(DEFAULT_DEBOUNCE_MS);
    if debounce_ms < 0 {
        return Err(RpcError::invalid_params(
            "debounce_ms must be a non-negative integer",
        ));
    }
    let buffer_limit = if strict {
        let n = p
            .int_any(&["buffer_limit", "bufferLimit"])?
            .unwrap_or(DEFAULT_BUFFER_LIMIT.min(max_buffer));
        if !(1..=max_buffer).contains(&n) {
            return Err(RpcError::invalid_params(format!(
                "buffer_limit must be between 1 and {max_buffer}"
            )));
        }
        n
    } else {
        0
    };
    let spec = WatchSpec {
        chat_id: optional_chat_id(p)?,
        participants: p
            .strings("participants")?
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().map(|h| h.to_lowercase()).collect()),
        start: date_param(p, "start")?,
        end: date_param(p, "end")?,
        attachments: p.bool("attachments")?.unwrap_or(false),
        include_reactions: p.bool("include_reactions")?.unwrap_or(false),
        debounce: Duration::from_millis(u64::try_from(debounce_ms).unwrap_or(0)),
        buffer_limit,
    };
    p.bool("convert_attachments")?;
    Ok((spec, p.int("since_rowid")?))
}

/// `watch.subscribe`. Strict: the response is written before the first notification. Baseline: the
/// backlog is streamed first and the response follows it (imsg 0.9 could emit before answering).
pub(crate) async fn subscribe(server: &Arc<Server>, params: Option<Value>, responder: Responder) {
    let backend = &server.backend;
    let (spec, changes, conn, cursor) = match prepare(server, params).await {
        Ok(prepared) => prepared,
        Err(e) => {
            responder.finish(Err(e)).await;
            return;
        }
    };
    let strict = backend.dialect.is_strict();
    let buffer_limit = spec.buffer_limit;
    let (gate_tx, gate_rx) = oneshot::channel::<()>();
    let (task_gate, handler_gate) = if strict {
        (Gate::AfterResponse(gate_rx), HandlerGate::Open(gate_tx))
    } else {
        (Gate::BeforeResponse(gate_tx), HandlerGate::Wait(gate_rx))
    };
    let mut watch = Watch {
        id: 0,
        dialect: backend.dialect,
        backend: Arc::clone(backend),
        out: server.out.clone(),
        conn: Some(conn),
        slots: strict.then(|| Arc::new(Semaphore::new(usize::try_from(buffer_limit).unwrap_or(1)))),
        spec,
        cursor,
        sent: 0,
        unjoined: None,
        changes,
        registry: Arc::clone(&server.watches.state),
    };
    let registered = server.watches.register(|id, cancel| {
        watch.id = id;
        tokio::spawn(watch.run(cancel, task_gate))
    });
    let id = match registered {
        Ok(id) => id,
        Err(e) => {
            responder.finish(Err(e)).await;
            return;
        }
    };
    let result = if strict {
        json!({"subscription": id, "buffer_limit": buffer_limit})
    } else {
        json!({"subscription": id})
    };
    match handler_gate {
        HandlerGate::Open(go) => {
            responder.finish(Ok(result)).await;
            let _ = go.send(());
        }
        HandlerGate::Wait(backlog_done) => {
            // A stream that died during its backlog drops the sender; the answer is still due.
            let _ = backlog_done.await;
            responder.finish(Ok(result)).await;
        }
    }
}

/// Parse the params, start listening for changes, open the subscription's own connection and take
/// the start cursor — in that order, so that no commit can fall between the cursor and the feed.
async fn prepare(
    server: &Arc<Server>,
    params: Option<Value>,
) -> Result<(WatchSpec, Option<tokio_watch::Receiver<u64>>, Connection, i64), RpcError> {
    let backend = &server.backend;
    let p = Params::new("watch.subscribe", params, backend.dialect)?;
    let max_buffer = backend.faults.max_buffer_limit.unwrap_or(MAX_BUFFER_LIMIT);
    let (spec, since) = parse_spec(&p, max_buffer)?;
    // Fail fast (and without starting a feed) when the database cannot be opened.
    let pool = Arc::clone(&backend.pool);
    let conn = tokio::task::spawn_blocking(move || pool.open_dedicated())
        .await
        .map_err(SimError::from)
        .and_then(|r| r)
        .map_err(|e| backend.db_error(e))?;
    let changes = server.watches.changes().await;
    let (conn, cursor) = tokio::task::spawn_blocking(move || {
        let cursor = match since {
            None | Some(0) => query::max_rowid(&conn)?,
            Some(n) if n > 0 => n,
            Some(_) => 0,
        };
        Ok::<_, SimError>((conn, cursor))
    })
    .await
    .map_err(SimError::from)
    .and_then(|r| r)
    .map_err(|e| backend.db_error(e))?;
    Ok((spec, changes, conn, cursor))
}

/// How the subscription task and the subscribe handler order the response and the first rows.
enum Gate {
    /// Strict: wait until the handler has queued the response, then scan.
    AfterResponse(oneshot::Receiver<()>),
    /// Baseline: scan the backlog first, then let the handler answer.
    BeforeResponse(oneshot::Sender<()>),
}

enum HandlerGate {
    Open(oneshot::Sender<()>),
    Wait(oneshot::Receiver<()>),
}

/// What a scan asks the task to do next.
enum Flow {
    /// Wait for a change or the safety poll.
    Idle,
    /// A row is not joined to a chat yet: scan again after the debounce.
    RetrySoon,
    /// The stream ended (error, overflow, cancellation).
    Stop,
}

/// One scanned row.
enum Item {
    Emit(i64, Value),
    /// Filtered out in memory; the cursor still moves past it.
    Skip(i64),
    /// Not joined to any chat yet (strict mode holds the cursor before it).
    Unjoined(i64),
}

struct Batch {
    scanned: usize,
    items: Vec<Item>,
}

/// One live subscription, owned by its task.
struct Watch {
    id: u64,
    dialect: Dialect,
    backend: Arc<Backend>,
    out: Outbox,
    /// The subscription's own connection; taken while a scan runs on the blocking pool.
    conn: Option<Connection>,
    spec: WatchSpec,
    /// Highest ROWID handled.
    cursor: i64,
    /// `message` notifications queued so far.
    sent: u64,
    /// The unjoined row the cursor waits at, and how many scans have seen it.
    unjoined: Option<(i64, u32)>,
    /// Strict mode: one slot per queued-but-unwritten notification (`buffer_limit`).
    slots: Option<Arc<Semaphore>>,
    changes: Option<tokio_watch::Receiver<u64>>,
    registry: Arc<Mutex<RegistryState>>,
}

impl Watch {
    async fn run(mut self, cancel: CancellationToken, gate: Gate) {
        let mut flow = match gate {
            Gate::AfterResponse(go) => {
                tokio::select! {
                    _ = cancel.cancelled() => Flow::Stop,
                    opened = go => match opened {
                        Ok(()) => self.drain(&cancel).await,
                        Err(_) => Flow::Stop,
                    },
                }
            }
            Gate::BeforeResponse(done) => {
                let flow = self.drain(&cancel).await;
                let _ = done.send(());
                flow
            }
        };
        loop {
            let wait = match flow {
                Flow::Stop => break,
                Flow::Idle => SAFETY_POLL,
                Flow::RetrySoon => self.spec.debounce.max(MIN_RETRY_DELAY),
            };
            let changed = tokio::select! {
                _ = cancel.cancelled() => break,
                () = next_change(&mut self.changes) => true,
                () = tokio::time::sleep(wait) => false,
            };
            if changed {
                // Debounce: the first change starts the timer, later ones inside it coalesce.
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    () = tokio::time::sleep(self.spec.debounce) => {}
                }
                if let Some(rx) = &mut self.changes {
                    rx.borrow_and_update();
                }
            }
            flow = self.drain(&cancel).await;
        }
        if let Ok(mut state) = self.registry.lock() {
            state.subs.remove(&self.id);
        }
    }

    /// Scan and emit until a batch comes back short (or the stream ends).
    async fn drain(&mut self, cancel: &CancellationToken) -> Flow {
        'scan: loop {
            if cancel.is_cancelled() {
                return Flow::Stop;
            }
            if self.death_due() {
                self.die().await;
                return Flow::Stop;
            }
            let Some(conn) = self.conn.take() else {
                return Flow::Stop;
            };
            let (cursor, spec, dialect) = (self.cursor, self.spec.clone(), self.dialect);
            let scanned = tokio::task::spawn_blocking(move || {
                let batch = fetch(&conn, cursor, &spec, dialect);
                (conn, batch)
            })
            .await;
            let batch = match scanned {
                Ok((conn, Ok(batch))) => {
                    self.conn = Some(conn);
                    batch
                }
                Ok((_, Err(e))) => {
                    self.fail(e.to_string()).await;
                    return Flow::Stop;
                }
                Err(e) => {
                    self.fail(format!("watch task failed: {e}")).await;
                    return Flow::Stop;
                }
            };
            for item in batch.items {
                match item {
                    Item::Skip(rowid) => self.cursor = rowid,
                    Item::Unjoined(rowid) => {
                        let tries = match self.unjoined {
                            Some((r, n)) if r == rowid => n + 1,
                            _ => 1,
                        };
                        if tries > MAX_UNJOINED_RETRIES {
                            tracing::info!("dropping message {rowid}: still not joined to a chat");
                            self.unjoined = None;
                            self.cursor = rowid;
                            continue 'scan;
                        }
                        self.unjoined = Some((rowid, tries));
                        return Flow::RetrySoon;
                    }
                    Item::Emit(rowid, message) => {
                        if cancel.is_cancelled() {
                            return Flow::Stop;
                        }
                        if !self.emit(message).await {
                            return Flow::Stop;
                        }
                        self.cursor = rowid;
                        self.sent += 1;
                        if self.death_due() {
                            self.die().await;
                            return Flow::Stop;
                        }
                    }
                }
            }
            if batch.scanned < BATCH as usize {
                return Flow::Idle;
            }
        }
    }

    /// Queue one `message` notification; false when the buffer overflowed (the stream is over).
    async fn emit(&mut self, message: Value) -> bool {
        let line =
            protocol::notification_line("message", json!({"subscription": self.id, "message": message}));
        let Some(slots) = &self.slots else {
            self.out.line(line).await;
            return true;
        };
        match Arc::clone(slots).try_acquire_owned() {
            Ok(slot) => {
                self.out.line_in_slot(line, slot).await;
                true
            }
            Err(_) => {
                let params = json!({
                    "subscription": self.id,
                    "resume_after_rowid": self.cursor,
                    "reason": "buffer_limit_exceeded",
                    "terminal": true,
                });
                self.out.notify("watch.overflow", params).await;
                false
            }
        }
    }

    fn death_due(&self) -> bool {
        self.backend
            .faults
            .watch_death_after
            .is_some_and(|n| self.sent >= n)
    }

    async fn die(&mut self) {
        let message = format!(
            "watch stream failed after {} notifications (simulated by the watch-death fault)",
            self.sent
        );
        self.fail(message).await;
    }

    /// The terminal `error` notification.
    async fn fail(&mut self, message: String) {
        let params = json!({"subscription": self.id, "error": {"message": message}});
        self.out.notify("error", params).await;
    }
}

/// Resolves on the next change event; never, when there is no feed (the safety poll takes over).
async fn next_change(changes: &mut Option<tokio_watch::Receiver<u64>>) {
    if let Some(rx) = changes {
        if rx.changed().await.is_ok() {
            return;
        }
        *changes = None;
    }
    std::future::pending::<()>().await;
}

/// One scan: rows after `cursor`, built into Message objects, with in-memory filters applied.
fn fetch(conn: &Connection, cursor: i64, spec: &WatchSpec, dialect: Dialect) -> rusqlite::Result<Batch> {
    let rows = query::rows_after(conn, cursor, spec.chat_id, !spec.include_reactions, BATCH)?;
    let opts = BuildOptions {
        attachments: spec.attachments,
        reactions: spec.include_reactions,
        dialect,
    };
    let mut cache = ChatCache::default();
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.chat_id.is_none() && dialect.is_strict() {
            items.push(Item::Unjoined(row.rowid));
            break;
        }
        if !spec.matches(row) {
            items.push(Item::Skip(row.rowid));
            continue;
        }
        items.push(Item::Emit(
            row.rowid,
            query::build_message(conn, row, opts, &mut cache)?,
        ));
    }
    Ok(Batch {
        scanned: rows.len(),
        items,
    })
}

impl WatchSpec {
    /// The in-memory filters: sender (case-insensitive), `start` inclusive, `end` exclusive.
    fn matches(&self, row: &MessageRow) -> bool {
        let date = row.date.unwrap_or(0);
        if self.start.is_some_and(|s| date < s) || self.end.is_some_and(|e| date >= e) {
            return false;
        }
        match &self.participants {
            Some(wanted) => wanted.contains(&row.sender().to_lowercase()),
            None => true,
        }
    }
}

/// `watch.unsubscribe`: unknown ids are fine. Strict waits until the stream has stopped, so nothing
/// for that id follows `{"ok":true}`; baseline only cancels.
pub(crate) async fn unsubscribe(server: &Arc<Server>, params: Option<Value>) -> Result<Value, RpcError> {
    let p = Params::new("watch.unsubscribe", params, server.backend.dialect)?;
    p.allow(&["subscription"])?;
    let id = p
        .int("subscription")?
        .ok_or_else(|| RpcError::invalid_params("subscription is required"))?;
    if p.dialect().is_strict() && id <= 0 {
        return Err(RpcError::invalid_params(
            "subscription must be a positive integer",
        ));
    }
    if let Some(handle) = u64::try_from(id).ok().and_then(|id| server.watches.remove(id)) {
        handle.cancel.cancel();
        if p.dialect().is_strict() {
            let _ = handle.task.await;
        }
    }
    Ok(json!({"ok": true}))
}

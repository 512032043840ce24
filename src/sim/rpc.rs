//! The `imsg rpc` server: NDJSON JSON-RPC over any reader/writer pair ([`serve`]).
//!
//! One writer task owns the output and flushes after every line, so lines never interleave. Strict
//! mode (protocol v1) runs requests in lanes like imsg 0.14+: `send` one at a time in input order,
//! reads up to [`READ_CONCURRENCY`] at once (they may answer out of order), control methods
//! (`initialize`, `watch.*`, unknown methods) immediately; at most [`MAX_OUTSTANDING`] requests are in
//! flight. Baseline mode handles one request at a time in input order, as imsg 0.9 does. On end of
//! input the server stops reading, cancels and awaits every subscription, finishes the requests it
//! already accepted, flushes and returns.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::sim::db::Pool;
use crate::sim::faults::{Faults, permission_banner};
use crate::sim::protocol::{self, Request, RpcError};
use crate::sim::{Dialect, SimError, methods, watch};

/// Lines waiting for the writer. Larger than the largest `buffer_limit` (4096) so that a slow client
/// makes a subscription overflow (terminal `watch.overflow`) before the shared queue blocks everyone.
const WRITER_QUEUE_CAPACITY: usize = 8192;

/// Strict mode: read methods running at once (imsg 0.14+ runs 4).
pub const READ_CONCURRENCY: usize = 4;

/// Strict mode: identified requests in flight before `-32000 Server busy` (imsg 0.14+: 128).
pub const MAX_OUTSTANDING: usize = 128;

/// Longest accepted request line; longer lines are answered with `-32600` and skipped.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How [`serve`] behaves.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The chat.db to serve. It may be missing: strict servers report it as unavailable until it exists.
    pub db_path: PathBuf,
    /// Strict protocol v1 (default) or the baseline's quirks.
    pub dialect: Dialect,
    pub faults: Faults,
    /// Append every request line received here (`--request-log`): lets tests see exactly what a
    /// client sent, e.g. the remote path of an uploaded attachment.
    pub request_log: Option<PathBuf>,
}

/// What method handlers need besides the client connection; also used by the CLI commands.
#[derive(Debug)]
pub(crate) struct Backend {
    pub dialect: Dialect,
    pub faults: Faults,
    pub pool: Arc<Pool>,
    /// Background writes that must finish before the process exits (delivery updates of `send`).
    pub tasks: TaskTracker,
}

impl Backend {
    pub fn new(opts: &ServeOptions) -> Arc<Self> {
        Arc::new(Backend {
            dialect: opts.dialect,
            faults: opts.faults.clone(),
            pool: Pool::new(opts.db_path.clone(), opts.faults.db_unavailable),
            tasks: TaskTracker::new(),
        })
    }

    /// The JSON-RPC error for a failed database call: unavailable → `-32002` (strict) or the
    /// permission banner as `-32603` (baseline); anything else → `-32603`.
    pub fn db_error(&self, e: SimError) -> RpcError {
        let path = self.pool.path();
        match (e.is_unavailable(), self.dialect) {
            (true, Dialect::Strict) => {
                RpcError::database_unavailable(&path.display().to_string(), e.to_string())
            }
            (true, Dialect::Baseline) => RpcError::internal(permission_banner(path)),
            (false, _) => RpcError::internal(e.to_string()),
        }
    }
}

/// One line for the writer, with the subscription buffer slot it occupies until written.
#[derive(Debug)]
pub(crate) struct Outbound {
    line: String,
    _slot: Option<OwnedSemaphorePermit>,
}

/// The sending side of the writer queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outbound>,
}

impl Outbox {
    /// Queue a line. A closed writer means the client is gone; there is nobody left to tell.
    pub async fn line(&self, line: String) {
        let _ = self.tx.send(Outbound { line, _slot: None }).await;
    }

    /// Queue a line that holds `slot` until it is written (subscription buffer accounting).
    pub async fn line_in_slot(&self, line: String, slot: OwnedSemaphorePermit) {
        let _ = self
            .tx
            .send(Outbound {
                line,
                _slot: Some(slot),
            })
            .await;
    }

    pub async fn notify(&self, method: &str, params: Value) {
        self.line(protocol::notification_line(method, params)).await;
    }
}

/// Answers one request: a result or error for identified requests; for client notifications
/// nothing in strict mode and only errors (with `id: null`) in baseline mode.
#[derive(Debug)]
pub(crate) struct Responder {
    id: Option<Value>,
    dialect: Dialect,
    out: Outbox,
}

impl Responder {
    pub async fn finish(self, result: Result<Value, RpcError>) {
        let line = match (&self.id, result) {
            (Some(id), Ok(v)) => protocol::response_line(id, v),
            (Some(id), Err(e)) => protocol::error_line(id, &e),
            (None, Err(e)) if self.dialect == Dialect::Baseline => protocol::error_line(&Value::Null, &e),
            (None, _) => return,
        };
        self.out.line(line).await;
    }
}

/// The state of one client session.
#[derive(Debug)]
pub(crate) struct Server {
    pub backend: Arc<Backend>,
    pub out: Outbox,
    pub watches: watch::Registry,
    /// Baseline only: the banner every request gets when chat.db could not be opened at startup.
    startup_error: Option<String>,
}

/// Serve the `imsg rpc` protocol: requests from `reader`, responses and notifications to `writer`.
///
/// Returns when `reader` reaches end of input and everything accepted was answered and flushed.
pub async fn serve(
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin,
    opts: ServeOptions,
) -> Result<(), SimError> {
    let (tx, rx) = mpsc::channel(WRITER_QUEUE_CAPACITY);
    let backend = Backend::new(&opts);
    let request_log = opts.request_log.clone();
    // The baseline opened chat.db once at startup and answered everything with the banner if it failed.
    let startup_error = match opts.dialect {
        Dialect::Baseline => match backend.pool.run(|_| Ok(())).await {
            Err(e) if e.is_unavailable() => {
                tracing::warn!("{e}");
                Some(permission_banner(&opts.db_path))
            }
            _ => None,
        },
        Dialect::Strict => None,
    };
    let server = Arc::new(Server {
        watches: watch::Registry::new(Arc::clone(&backend)),
        backend,
        out: Outbox { tx },
        startup_error,
    });
    let reading = async move {
        let result = read_loop(&server, reader, opts_log(&request_log)).await;
        // Dropping the last Server drops the last Outbox, which lets the writer finish.
        drop(server);
        result
    };
    let (read_result, write_result) = tokio::join!(reading, write_loop(writer, rx));
    read_result?;
    write_result.map_err(|e| SimError::io("cannot write responses to", "stdout", e))
}

/// Which lane a strict-mode request runs in.
enum Lane {
    Control,
    Read,
    Mutation,
}

fn lane(method: &str) -> Lane {
    match method {
        "send" => Lane::Mutation,
        "status"
        | "chats.list"
        | "chats.get"
        | "messages.history"
        | "messages.after"
        | "messages.search"
        | "message.send_status" => Lane::Read,
        _ => Lane::Control,
    }
}

/// Open the request log for appending; a log that cannot be opened is reported, not fatal.
fn opts_log(path: &Option<PathBuf>) -> Option<std::fs::File> {
    let path = path.as_ref()?;
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => Some(file),
        Err(err) => {
            tracing::warn!("cannot open the request log {}: {err}", path.display());
            None
        }
    }
}

async fn read_loop(
    server: &Arc<Server>,
    reader: impl AsyncRead + Unpin,
    mut request_log: Option<std::fs::File>,
) -> Result<(), SimError> {
    let dialect = server.backend.dialect;
    let mut lines = LineReader::new(reader);
    let tracker = TaskTracker::new();
    let reads = Arc::new(Semaphore::new(READ_CONCURRENCY));
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    // Mutations queue in input order for one worker; the queue cannot exceed MAX_OUTSTANDING because
    // every queued job holds an outstanding permit.
    let (mutations, mut mutation_rx) = mpsc::channel::<(Request, OwnedSemaphorePermit)>(MAX_OUTSTANDING);
    let worker = Arc::clone(server);
    tracker.spawn(async move {
        while let Some((req, _permit)) = mutation_rx.recv().await {
            worker.handle(req).await;
        }
    });

    let read_result = loop {
        let line = match lines.next().await {
            Ok(Some(Line::Text(text))) => text,
            Ok(Some(Line::NotUtf8)) => {
                server
                    .reject(None, RpcError::parse("line is not valid UTF-8"))
                    .await;
                continue;
            }
            Ok(Some(Line::TooLong)) => {
                let detail = format!("request line longer than {MAX_LINE_BYTES} bytes");
                server.reject(None, RpcError::invalid_request(detail)).await;
                continue;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(SimError::io("cannot read requests from", "stdin", e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(log) = request_log.as_mut() {
            use std::io::Write;
            let _ = writeln!(log, "{}", line.trim_end());
        }
        let req = match protocol::parse_request(&line, dialect) {
            Ok(req) => req,
            Err(rejected) => {
                server.reject(rejected.id, rejected.error).await;
                continue;
            }
        };
        if dialect == Dialect::Baseline {
            server.handle(req).await;
            continue;
        }
        let Ok(permit) = Arc::clone(&outstanding).try_acquire_owned() else {
            // Over the limit: identified requests are refused, notifications dropped.
            if let Some(id) = &req.id {
                let busy = RpcError::server_busy("outstanding request limit exceeded");
                server.out.line(protocol::error_line(id, &busy)).await;
            }
            continue;
        };
        match lane(&req.method) {
            Lane::Mutation => {
                let _ = mutations.send((req, permit)).await;
            }
            Lane::Read => {
                let (server, reads) = (Arc::clone(server), Arc::clone(&reads));
                tracker.spawn(async move {
                    let _slot = reads.acquire_owned().await;
                    server.handle(req).await;
                    drop(permit);
                });
            }
            Lane::Control => {
                let server = Arc::clone(server);
                tracker.spawn(async move {
                    server.handle(req).await;
                    drop(permit);
                });
            }
        }
    };

    // End of input: stop admission, end the subscriptions, finish what was accepted.
    drop(mutations);
    server.watches.shutdown().await;
    tracker.close();
    tracker.wait().await;
    server.backend.tasks.close();
    server.backend.tasks.wait().await;
    read_result
}

impl Server {
    /// Answer a line that is not a valid request (strict servers stay silent for notifications).
    async fn reject(&self, id: Option<Value>, error: RpcError) {
        Responder {
            id,
            dialect: self.backend.dialect,
            out: self.out.clone(),
        }
        .finish(Err(error))
        .await;
    }

    async fn handle(self: &Arc<Self>, req: Request) {
        let responder = Responder {
            id: req.id,
            dialect: self.backend.dialect,
            out: self.out.clone(),
        };
        if let Some(banner) = &self.startup_error {
            responder.finish(Err(RpcError::internal(banner.clone()))).await;
            return;
        }
        match req.method.as_str() {
            "watch.subscribe" => watch::subscribe(self, req.params, responder).await,
            "watch.unsubscribe" => {
                let result = watch::unsubscribe(self, req.params).await;
                responder.finish(result).await;
            }
            method => {
                let result = methods::call(&self.backend, method, req.params).await;
                responder.finish(result).await;
            }
        }
    }
}

/// Write queued lines, one flush per line. After a write error the rest is discarded (the client
/// is gone) so that producers never block on a dead pipe.
async fn write_loop(
    mut writer: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<Outbound>,
) -> std::io::Result<()> {
    let mut failed: Option<std::io::Error> = None;
    while let Some(out) = rx.recv().await {
        if failed.is_some() {
            continue;
        }
        let mut bytes = out.line.into_bytes();
        bytes.push(b'\n');
        let written = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        }
        .await;
        if let Err(e) = written {
            tracing::warn!("cannot write to the client: {e}");
            failed = Some(e);
        }
    }
    match failed {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// One input line.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    NotUtf8,
    TooLong,
}

/// Splits input into lines without ever holding more than [`MAX_LINE_BYTES`] of one line.
struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(reader: R) -> Self {
        Self::with_max(reader, MAX_LINE_BYTES)
    }

    fn with_max(reader: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::new(reader),
            max,
            eof: false,
        }
    }

    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        if self.eof {
            return Ok(None);
        }
        let mut buf = Vec::new();
        let mut too_long = false;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                self.eof = true;
                if buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            if !too_long {
                buf.extend_from_slice(chunk);
                if buf.len() > self.max {
                    too_long = true;
                    buf = Vec::new();
                }
            }
            self.inner.consume(used);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(Some(Line::TooLong));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(match String::from_utf8(buf) {
            Ok(s) => Line::Text(s),
            Err(_) => Line::NotUtf8,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_and_skips_overlong_ones() {
        let input: &[u8] = b"one\r\n0123456789abc\nthree";
        let mut r = LineReader::with_max(input, 8);
        assert_eq!(r.next().await.unwrap(), Some(Line::Text("one".into())));
        assert_eq!(r.next().await.unwrap(), Some(Line::TooLong));
        assert_eq!(r.next().await.unwrap(), Some(Line::Text("three".into())));
        assert_eq!(r.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reports_invalid_utf8() {
        let input: &[u8] = b"\xff\xfe\n";
        let mut r = LineReader::new(input);
        assert_eq!(r.next().await.unwrap(), Some(Line::NotUtf8));
    }

    async fn run(dialect: Dialect, db_path: PathBuf, input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let opts = ServeOptions {
            db_path,
            dialect,
            faults: Faults::default(),
            request_log: None,
        };
        serve(input.as_bytes(), &mut out, opts).await.unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn answers_in_process_and_stays_silent_for_strict_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        crate::sim::db::init(&db, true).unwrap();
        let input = "\n{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"chats.list\"}\n";
        let out = run(Dialect::Strict, db.clone(), input).await;
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["result"]["chats"].as_array().unwrap().len(), 2);
        let out = run(Dialect::Baseline, db, input).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0]["id"], Value::Null);
        assert_eq!(out[0]["error"]["code"], -32601);
    }
}

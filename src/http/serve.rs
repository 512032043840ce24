//! The control API's accept loop and connections, on hyper's HTTP/1 server: every connection is
//! bounded by [`Limits`] (header timeout, idle timeout, connection cap) and tracked until it ends, so
//! shutdown waits for requests in flight and no more.
//!
//! axum's own `serve` has none of these bounds; a client that opened connections and never finished
//! their headers held them for ever and, once the process ran out of descriptors, kept every other
//! client out, authorised ones included.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::SHUTDOWN_GRACE;
use super::limits::{Conn, Entry, Limits, Phase, Registry, Watched};

/// Pause after an accept error that is not one client's (such as running out of descriptors), so the
/// loop does not spin on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How often the "connection cap reached" warning may be logged.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What the accept loop and every connection share.
struct Server {
    app: Router,
    limits: Limits,
    registry: Arc<Registry>,
    /// One permit per open connection, at most `limits.max_connections`.
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Cancelled when connections outlive [`SHUTDOWN_GRACE`] after shutdown: they are dropped.
    hard_stop: CancellationToken,
    cap_warned: Option<Instant>,
}

/// Serve `app` on `listener` until `shutdown` is cancelled, then give requests in flight
/// [`SHUTDOWN_GRACE`] to finish. The listener is closed when this returns.
pub(super) async fn run(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) {
    let mut server = Server {
        app,
        limits,
        registry: Arc::new(Registry::default()),
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        tracker: TaskTracker::new(),
        shutdown,
        hard_stop: CancellationToken::new(),
        cap_warned: None,
    };
    server.accept_loop(listener).await;
    server.finish().await;
}

impl Server {
    async fn accept_loop(&mut self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    self.after_accept_error(error).await;
                    continue;
                }
            };
            let Some(permit) = self.admit().await else {
                return;
            };
            let entry = self.registry.open();
            let connection = Connection {
                entry,
                _permit: permit,
                limits: self.limits,
                shutdown: self.shutdown.clone(),
                hard_stop: self.hard_stop.clone(),
            };
            self.tracker.spawn(connection.serve(stream, self.app.clone()));
        }
    }

    /// A slot for a connection just accepted. When all are taken, the connection that has gone
    /// longest without a request in progress (stalled in its headers, or idle) is closed to make room.
    ///
    /// Why evict instead of refusing the newcomer: a flood of stalled connections would otherwise keep
    /// every real client out until the header timeout, and an authorised request must get through at
    /// once. A connection handling a request is never evicted; when every slot is busy, the newcomer
    /// waits for one to finish. `None` on shutdown.
    async fn admit(&mut self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(permit);
        }
        self.warn_cap_reached();
        self.registry.evict_longest_stalled();
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => None,
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
        }
    }

    fn warn_cap_reached(&mut self) {
        if self.cap_warned.is_some_and(|at| at.elapsed() < CAP_WARNING_EVERY) {
            return;
        }
        self.cap_warned = Some(Instant::now());
        warn!(
            "control API: {} connections open, the cap; closing the one longest without a request to \
             admit a new one (logged at most once a minute)",
            self.limits.max_connections
        );
    }

    /// A client that left before its accept costs nothing; anything else (out of descriptors, most
    /// likely) is logged, gives up one stalled connection's descriptor and pauses the loop.
    async fn after_accept_error(&self, error: std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        warn!(
            "control API: cannot accept a connection: {error}; retrying in {}s",
            ACCEPT_ERROR_PAUSE.as_secs()
        );
        self.registry.evict_longest_stalled();
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
        }
    }

    /// After the listener closed: wait for the connections, dropping them after [`SHUTDOWN_GRACE`].
    async fn finish(self) {
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "control API: requests still open {}s after shutdown; dropping them",
                SHUTDOWN_GRACE.as_secs()
            );
            self.hard_stop.cancel();
            self.tracker.wait().await;
        }
        info!("control API stopped");
    }
}

/// One accepted connection and what bounds it.
struct Connection {
    entry: Entry,
    /// Held until the connection ends; frees its slot.
    _permit: OwnedSemaphorePermit,
    limits: Limits,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

impl Connection {
    /// Serve requests until the client leaves, its phase's deadline passes, it is evicted, or the
    /// bridge stops. Dropping the hyper connection closes the socket.
    async fn serve(self, stream: TcpStream, app: Router) {
        let conn = Arc::clone(self.entry.conn());
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&conn)));
        let mut builder = http1::Builder::new();
        // Off: hyper's own header timer restarts right after each response, which would close idle
        // keep-alive connections at the header timeout; the phases below time both apart.
        builder.header_read_timeout(None);
        let service = Marked {
            app: TowerToHyperService::new(app),
            conn: Arc::clone(&conn),
        };
        let http = builder.serve_connection(io, service);
        let mut http = std::pin::pin!(http);
        let mut phases = conn.watch();
        let mut stopping = false;
        loop {
            let deadline = conn.phase().deadline(&self.limits);
            tokio::select! {
                result = http.as_mut() => {
                    if let Err(error) = result {
                        debug!("control API connection ended: {error}");
                    }
                    return;
                }
                () = until(deadline) => {
                    debug!("control API: closing a connection without a complete request in time");
                    return;
                }
                changed = phases.changed() => if changed.is_err() { return },
                () = conn.evicted().cancelled() => return,
                () = self.hard_stop.cancelled() => return,
                () = self.shutdown.cancelled(), if !stopping => {
                    if conn.phase() != Phase::Busy {
                        return;
                    }
                    // Let the request in flight finish; hyper closes the connection after its response.
                    http.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
    }
}

/// The router as a hyper service that marks its connection busy while a request is handled.
struct Marked {
    app: TowerToHyperService<Router>,
    conn: Arc<Conn>,
}

impl Service<Request<Incoming>> for Marked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.conn.busy();
        let response = self.app.call(request);
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            let response = response.await;
            conn.done();
            response
        })
    }
}

/// Sleeps until `deadline`; for ever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

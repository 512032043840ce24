//! Bounds on the control API's connections (docs/security.md, "Control API limits"): how long a client
//! may take over a request's headers, how long a keep-alive connection may sit without a request, and
//! how many connections are open at once, with the table that picks which connection gives way.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::util::lock;

/// Time from accepting a connection, or from the first byte of a later request on it, to the end of
/// that request's headers. A client sends a request at once; only a stalled or hostile one is slower.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a keep-alive connection may stay open after a response without a byte of the next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections open at once. Well below the 256 descriptors of a tight `ulimit -n` minus what the
/// bridge itself needs (SSH connections, imsg pipes, state files), so the listener never spends the
/// descriptors the bridge's accounts need; far above what a local agent opens.
pub const MAX_CONNECTIONS: usize = 128;

/// The three bounds; [`Limits::default`] is what the bridge runs with, tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Where a connection is in its request cycle: decides its deadline and whether it may be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No byte of the next request yet; `fresh` until the connection has served a request.
    Waiting { since: Instant, fresh: bool },
    /// Part of a request's headers has arrived, the rest has not.
    Head { since: Instant },
    /// A request is being handled; never timed out or evicted here (the handlers bound their own work).
    Busy,
}

impl Phase {
    /// When the connection is closed if it stays in this phase; `None` while busy.
    ///
    /// A fresh connection gets the header timeout from its accept, not the idle timeout: a client that
    /// connects has a request to send (the same rule as nginx's `client_header_timeout`).
    pub(super) fn deadline(self, limits: &Limits) -> Option<Instant> {
        match self {
            Phase::Waiting { since, fresh: true } | Phase::Head { since } => {
                Some(since + limits.header_timeout)
            }
            Phase::Waiting { since, fresh: false } => Some(since + limits.idle_timeout),
            Phase::Busy => None,
        }
    }

    /// Since when the connection has been without a request in progress; `None` while busy.
    fn stalled_since(self) -> Option<Instant> {
        match self {
            Phase::Waiting { since, .. } | Phase::Head { since } => Some(since),
            Phase::Busy => None,
        }
    }
}

/// One connection's state, shared by its socket wrapper, its service, its task and the [`Registry`].
#[derive(Debug)]
pub(super) struct Conn {
    phase: watch::Sender<Phase>,
    evicted: CancellationToken,
}

impl Conn {
    fn new() -> Self {
        let fresh = Phase::Waiting {
            since: Instant::now(),
            fresh: true,
        };
        Self {
            phase: watch::Sender::new(fresh),
            evicted: CancellationToken::new(),
        }
    }

    /// Bytes arrived: a waiting connection now has part of a request. A fresh one keeps its accept
    /// time, so sending one byte does not buy a connection another header timeout.
    fn bytes_arrived(&self) {
        if !matches!(*self.phase.borrow(), Phase::Waiting { .. }) {
            return;
        }
        self.phase.send_if_modified(|phase| match *phase {
            Phase::Waiting { since, fresh } => {
                let since = if fresh { since } else { Instant::now() };
                *phase = Phase::Head { since };
                true
            }
            _ => false,
        });
    }

    /// The headers are complete and the request is being handled.
    pub(super) fn busy(&self) {
        self.phase.send_replace(Phase::Busy);
    }

    /// The response is ready; the connection waits for the next request.
    pub(super) fn done(&self) {
        self.phase.send_replace(Phase::Waiting {
            since: Instant::now(),
            fresh: false,
        });
    }

    pub(super) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Wakes on every phase change, so the connection's deadline follows it.
    pub(super) fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Cancelled when the registry chose this connection to give way to a new one.
    pub(super) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

/// Every open connection, so that a new one can take the place of the longest-stalled one when the
/// cap is reached.
#[derive(Debug, Default)]
pub(super) struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Record a newly accepted connection; it leaves the table when the returned entry is dropped.
    pub(super) fn open(self: &Arc<Self>) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new());
        lock(&self.conns).insert(id, Arc::clone(&conn));
        Entry {
            id,
            conn,
            registry: Arc::clone(self),
        }
    }

    /// Close the connection that has gone longest without a request in progress (still sending its
    /// headers, or idle); false when every connection is busy with a request.
    pub(super) fn evict_longest_stalled(&self) -> bool {
        let mut conns = lock(&self.conns);
        let oldest = conns
            .iter()
            .filter_map(|(id, conn)| conn.phase().stalled_since().map(|since| (since, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        // Removed at once so the next eviction picks another one while this one is still closing.
        if let Some(conn) = conns.remove(&id) {
            conn.evicted.cancel();
        }
        true
    }
}

/// A connection's place in the [`Registry`], given up on drop.
#[derive(Debug)]
pub(super) struct Entry {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Entry {
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        lock(&self.registry.conns).remove(&self.id);
    }
}

/// A socket that tells its [`Conn`] when bytes arrive, which starts the header timeout of a request
/// on a keep-alive connection.
#[derive(Debug)]
pub(super) struct Watched<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(super) fn new(io: S, conn: Arc<Conn>) -> Self {
        Self { io, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_arrived();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

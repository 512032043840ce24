//! Fuzzing hook: runs bytes through the client's real reader path (framing, JSON parse, routing of
//! answers and notifications) without tasks or a peer, so `fuzz/fuzz_targets/rpc_lines.rs` can
//! reach the private `handle_line` and check what it did.

use super::*;

pub use crate::rpc::lines::{Frame, LineReader};

/// Request ids that are pending when the input starts, so answers to them take the answer path.
const PENDING_IDS: [u64; 4] = [0, 1, 2, u64::MAX];
/// The subscription that is confirmed from the start (others are buffered as early arrivals).
const SUBSCRIPTION: u64 = 1;
/// Small on purpose, so a handful of notifications exercise the overflow path.
const SUBSCRIPTION_CAPACITY: usize = 2;

/// What one run of the reader path did.
#[derive(Debug)]
pub struct Routed {
    /// Every frame, in order.
    pub frames: Vec<Frame>,
    /// Pending requests that received an answer (each id at most once).
    pub answered: Vec<u64>,
    /// Notifications delivered to the confirmed subscription.
    pub delivered: usize,
    /// Whether that subscription was declared overflowed.
    pub overflowed: bool,
    /// Notifications kept for subscriptions not confirmed yet.
    pub orphans: usize,
}

/// Frames `input` with a `max_line` limit behind a `read_buffer`-byte buffer (at least 1) and routes
/// every line as the client's reader task does.
pub async fn route(input: &[u8], max_line: usize, read_buffer: usize) -> std::io::Result<Routed> {
    let (writer, _writer_rx) = mpsc::channel(1);
    let (done, _) = watch::channel(false);
    let (sub_tx, mut sub_rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
    let overflowed = Arc::new(AtomicBool::new(false));
    let mut waiters = Vec::new();
    let mut state = State {
        subscribing: 1,
        ..State::default()
    };
    for id in PENDING_IDS {
        let (tx, rx) = oneshot::channel();
        state.pending.insert(id, tx);
        waiters.push((id, rx));
    }
    state.subs.insert(
        SUBSCRIPTION,
        SubSlot {
            tx: sub_tx,
            overflowed: overflowed.clone(),
        },
    );
    let inner = Inner {
        next_id: AtomicU64::new(1),
        state: Mutex::new(state),
        writer,
        stderr: StderrRing::new(),
        options: ClientOptions {
            max_line_bytes: max_line,
            ..ClientOptions::default()
        },
        done,
    };
    let mut lines = LineReader::new(BufReader::with_capacity(read_buffer.max(1), input), max_line);
    let mut junk_log = RateLimitedLog::new(5, Duration::from_secs(60));
    let mut frames = Vec::new();
    while let Some(frame) = lines.next().await? {
        if let Frame::Line(line) = &frame {
            handle_line(&inner, line, &mut junk_log);
        }
        frames.push(frame);
    }
    let answered = waiters
        .into_iter()
        .filter_map(|(id, mut rx)| rx.try_recv().is_ok().then_some(id))
        .collect();
    let mut delivered = 0;
    while sub_rx.try_recv().is_ok() {
        delivered += 1;
    }
    let orphans = inner.state().orphan_count;
    Ok(Routed {
        frames,
        answered,
        delivered,
        overflowed: overflowed.load(Ordering::Relaxed),
        orphans,
    })
}

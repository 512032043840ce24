//! Fuzz target: arbitrary bytes from the peer through the RPC client's reader path (line framing
//! with a length limit, JSON parse, answer and notification routing); must never panic, and the
//! frames must equal an independent split of the input on `\n`.
#![no_main]

use std::sync::OnceLock;

use imsg_bridge::rpc::fuzzing::{Frame, route};
use libfuzzer_sys::fuzz_target;

/// One runtime for the whole process: building one per input would dominate the run time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// What the framing must produce: one frame per `\n`-terminated segment plus a non-empty tail;
/// segments over the limit (counting a trailing `\r`) are skipped whole, others lose one `\r`.
fn expected_frames(input: &[u8], max_line: usize) -> Vec<Frame> {
    let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if segments.last().is_some_and(|last| last.is_empty()) {
        segments.pop();
    }
    segments
        .into_iter()
        .map(|segment| {
            if segment.len() > max_line {
                Frame::TooLong { len: segment.len() }
            } else {
                Frame::Line(segment.strip_suffix(b"\r").unwrap_or(segment).to_vec())
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the limit and the read buffer size, so short limits and tiny
    // buffers (lines split across many reads) are explored as much as the bytes themselves.
    let [limit, buffer, input @ ..] = data else {
        return;
    };
    let max_line = match limit {
        255 => 16 * 1024 * 1024,
        n => usize::from(*n),
    };
    let read_buffer = usize::from(*buffer) + 1;
    let routed = runtime()
        .block_on(route(input, max_line, read_buffer))
        .expect("reading from a byte slice cannot fail");
    assert_eq!(routed.frames, expected_frames(input, max_line));
    assert!(routed.delivered <= 2, "more notifications than the queue holds");
    if routed.delivered < 2 {
        assert!(!routed.overflowed, "overflowed before the queue was full");
    }
    let mut answered = routed.answered.clone();
    answered.dedup();
    assert_eq!(answered, routed.answered, "a request was answered twice");
    let _ = routed.orphans;
});

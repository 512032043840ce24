//! Newline-delimited framing with a maximum line length: an over-long line is dropped and the
//! stream resynchronises at the next newline instead of buffering without bound.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest JSON-RPC line any reader here accepts; a longer one is dropped and the stream resyncs.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// One framing outcome.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its terminator (a trailing `\r` is removed too).
    Line(Vec<u8>),
    /// A line longer than the limit was skipped; `len` is how many bytes it had.
    TooLong { len: usize },
}

/// Reads frames from a buffered reader. Cancel-safe between calls only; do not race `next` in a
/// `select!` (the reader task owns it alone).
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    max_line: usize,
    buf: Vec<u8>,
    /// Bytes of the current line that were discarded because it already exceeded the limit.
    skipping: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        Self {
            inner,
            max_line,
            buf: Vec::new(),
            skipping: None,
        }
    }

    /// The next frame, or `None` at end of stream. A final line without a newline is still returned.
    pub async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(self.finish());
            }
            let (chunk, found_newline) = match memchr(available) {
                Some(pos) => (&available[..pos], true),
                None => (available, false),
            };
            let consumed = chunk.len() + usize::from(found_newline);
            match self.skipping.as_mut() {
                Some(skipped) => *skipped += chunk.len(),
                None if self.buf.len() + chunk.len() > self.max_line => {
                    self.skipping = Some(self.buf.len() + chunk.len());
                    self.buf.clear();
                }
                None => self.buf.extend_from_slice(chunk),
            }
            self.inner.consume(consumed);
            if found_newline {
                return Ok(Some(self.take_frame()));
            }
        }
    }

    fn finish(&mut self) -> Option<Frame> {
        if self.buf.is_empty() && self.skipping.is_none() {
            return None;
        }
        Some(self.take_frame())
    }

    fn take_frame(&mut self) -> Frame {
        if let Some(len) = self.skipping.take() {
            return Frame::TooLong { len };
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Frame::Line(line)
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

/// Newline framing for bytes that arrive in chunks and must never be waited on (an exec channel's
/// output, a control socket's frames): the complete lines now, the rest kept for the next chunk, a
/// line longer than `max` dropped so nothing buffers without bound. Empty lines are skipped.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    skipping: bool,
    max: usize,
}

impl Splitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            skipping: false,
            max,
        }
    }

    /// The complete lines of `data` (without their newline), in order.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        while let Some(pos) = memchr(data) {
            let (head, tail) = data.split_at(pos);
            data = &tail[1..];
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            self.buf.extend_from_slice(head);
            let line = std::mem::take(&mut self.buf);
            if !line.is_empty() {
                lines.push(line);
            }
        }
        if !self.skipping {
            self.buf.extend_from_slice(data);
            if self.buf.len() > self.max {
                tracing::warn!(
                    bytes = self.buf.len(),
                    max = self.max,
                    "dropped a line over the length bound"
                );
                self.buf = Vec::new();
                self.skipping = true;
            }
        }
        lines
    }

    /// A last line without a newline is still a line.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.buf);
        (!self.skipping && !line.is_empty()).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize, buf_cap: usize) -> Vec<Frame> {
        let reader = tokio::io::BufReader::with_capacity(buf_cap, input);
        let mut lines = LineReader::new(reader, max);
        let mut out = Vec::new();
        while let Some(frame) = lines.next().await.unwrap() {
            out.push(frame);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_strips_carriage_returns() {
        let got = frames(b"a\r\nbc\n\nlast", 10, 2).await;
        assert_eq!(
            got,
            vec![
                Frame::Line(b"a".to_vec()),
                Frame::Line(b"bc".to_vec()),
                Frame::Line(Vec::new()),
                Frame::Line(b"last".to_vec())
            ]
        );
    }

    #[tokio::test]
    async fn drops_an_overlong_line_and_resyncs_at_the_next_newline() {
        let got = frames(b"0123456789abc\nok\n", 8, 3).await;
        assert_eq!(got, vec![Frame::TooLong { len: 13 }, Frame::Line(b"ok".to_vec())]);
    }

    #[tokio::test]
    async fn accepts_a_line_exactly_at_the_limit() {
        let got = frames(b"12345678\n", 8, 4).await;
        assert_eq!(got, vec![Frame::Line(b"12345678".to_vec())]);
    }

    #[test]
    fn splits_chunks_into_lines_and_drops_an_endless_one() {
        let mut splitter = Splitter::new(16);
        assert!(splitter.push(b"{\"a\"").is_empty());
        assert_eq!(
            splitter.push(b":1}\n\n{\"b\":2}\n"),
            vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]
        );
        assert!(splitter.push(&[b'x'; 40]).is_empty());
        assert_eq!(
            splitter.push(b"rest of the long one\n{}\n{\"c\""),
            vec![b"{}".to_vec()]
        );
        assert_eq!(splitter.finish(), Some(b"{\"c\"".to_vec()));
    }
}

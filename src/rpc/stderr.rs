//! A bounded ring of the peer's last diagnostic lines, quoted in errors (it carries imsg's Full Disk
//! Access banner, sshd's complaints and the like) without letting a chatty peer grow memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How many lines the ring keeps.
const RING_LINES: usize = 32;
/// Longest line kept; longer ones are cut with an ellipsis.
const RING_LINE_CHARS: usize = 400;
/// How many of the newest lines an error quotes.
const QUOTED_LINES: usize = 4;

/// Shared handle; clones see the same ring.
#[derive(Debug, Clone, Default)]
pub struct StderrRing {
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl StderrRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remember one line (blank lines are ignored).
    pub fn push(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let line = truncate_chars(line, RING_LINE_CHARS);
        let mut lines = crate::util::lock(&self.lines);
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Every kept line, oldest first.
    pub fn lines(&self) -> Vec<String> {
        crate::util::lock(&self.lines).iter().cloned().collect()
    }

    /// The newest few lines, oldest first: what an error message quotes.
    pub fn tail(&self) -> Vec<String> {
        let lines = crate::util::lock(&self.lines);
        lines
            .iter()
            .skip(lines.len().saturating_sub(QUOTED_LINES))
            .cloned()
            .collect()
    }
}

/// Cut `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_lines() {
        let ring = StderrRing::new();
        for i in 0..(RING_LINES + 5) {
            ring.push(&format!("line {i}"));
        }
        let lines = ring.lines();
        assert_eq!(lines.len(), RING_LINES);
        assert_eq!(lines[0], "line 5");
        assert_eq!(ring.tail().last().map(String::as_str), Some("line 36"));
        assert_eq!(ring.tail().len(), QUOTED_LINES);
    }

    #[test]
    fn truncates_long_lines_on_character_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("hi", 2), "hi");
    }
}

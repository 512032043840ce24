//! Splitting outbound reply text into iMessage-sized messages (docs/channel.md): `length` mode breaks a
//! window at its last newline or whitespace outside parentheses, `newline` mode splits at blank lines
//! outside fenced code blocks and length-chunks only the paragraphs that are still too long.

use std::sync::LazyLock;

use regex::Regex;

use crate::config::ChunkMode;
use crate::echo::code::fence_spans;

/// The limit used when none is configured; a limit of 0 means "not set" rather than "no text".
pub const DEFAULT_LIMIT: usize = 4000;

/// A blank line: a newline, optional spaces or tabs, then one or more newlines. `None` only if the
/// literal pattern failed to compile, which a test rules out.
static PARAGRAPH_BREAK: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\n[\t ]*\n+").ok());

/// `text` split into messages of at most `limit` chars (Unicode scalar values, not bytes) per `mode`.
/// Empty text gives no chunks.
pub fn chunk(text: &str, limit: usize, mode: ChunkMode) -> Vec<String> {
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    match mode {
        ChunkMode::Length => chunk_text(text, limit),
        ChunkMode::Newline => chunk_by_paragraph(text, limit),
    }
}

/// `length` mode (upstream `chunkText`). Text that fits is returned untouched, whitespace and all.
fn chunk_text(text: &str, limit: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text;
    // `nth(limit)` is the first char past the window; `None` means the rest fits in one message.
    while let Some((window_end, _)) = rest.char_indices().nth(limit) {
        let cut = break_index(&rest[..window_end]).unwrap_or(window_end);
        let piece = rest[..cut].trim_end();
        if !piece.is_empty() {
            chunks.push(piece.to_string());
        }
        // A whitespace break char is a separator, not content; a hard cut keeps the next char.
        let next = match rest[cut..].chars().next() {
            Some(c) if c.is_whitespace() => cut + c.len_utf8(),
            _ => cut,
        };
        rest = rest[next..].trim_start();
    }
    if !rest.is_empty() {
        chunks.push(rest.to_string());
    }
    chunks
}

/// The byte index to break `window` at: the last newline at parenthesis depth 0, else the last
/// whitespace at depth 0. Index 0 does not count (it would emit nothing and never advance), so `None`
/// asks for a hard cut. Depth starts at 0 at the window start and an unbalanced `)` is ignored, so a
/// parenthetical aside is kept whole whenever the window allows it.
fn break_index(window: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut last_newline = None;
    let mut last_whitespace = None;
    for (i, c) in window.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            '\n' => {
                last_newline = Some(i);
                last_whitespace = Some(i);
            }
            c if c.is_whitespace() => last_whitespace = Some(i),
            _ => {}
        }
    }
    last_newline
        .filter(|&i| i > 0)
        .or(last_whitespace.filter(|&i| i > 0))
}

/// `newline` mode (upstream `chunkByParagraph`). Paragraphs are deliberately not packed together: each
/// becomes its own message, as upstream does despite its doc comment.
fn chunk_by_paragraph(text: &str, limit: usize) -> Vec<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let Some(paragraph_break) = PARAGRAPH_BREAK.as_ref() else {
        return chunk_text(&text, limit);
    };
    // Without a blank line the whole text is one paragraph: one chunk if it fits, else length chunks.
    if !paragraph_break.is_match(&text) {
        return chunk_text(&text, limit);
    }
    let fences = fence_spans(&text);
    let mut paragraphs = Vec::new();
    let mut start = 0;
    for found in paragraph_break.find_iter(&text) {
        // A blank line inside a code block is part of the code, not a paragraph break.
        if fences
            .iter()
            .any(|span| found.start() > span.start && found.start() < span.end)
        {
            continue;
        }
        paragraphs.push(&text[start..found.start()]);
        start = found.end();
    }
    paragraphs.push(&text[start..]);
    paragraphs
        .into_iter()
        .map(str::trim_end)
        .filter(|paragraph| !paragraph.is_empty())
        .flat_map(|paragraph| chunk_text(paragraph, limit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length(text: &str, limit: usize) -> Vec<String> {
        chunk(text, limit, ChunkMode::Length)
    }

    fn newline(text: &str, limit: usize) -> Vec<String> {
        chunk(text, limit, ChunkMode::Newline)
    }

    #[test]
    fn the_paragraph_pattern_compiles() {
        assert!(PARAGRAPH_BREAK.is_some());
    }

    #[test]
    fn length_mode_matches_the_upstream_table() {
        let cases: &[(&str, usize, &[&str])] = &[
            // channel.outbound.test.ts
            ("hello world", 5, &["hello", "world"]),
            ("", 5, &[]),
            ("short", 10, &["short"]),
            // Text that fits is returned as is, surrounding whitespace included.
            ("  fits  ", 10, &["  fits  "]),
            // Trailing whitespace of a chunk is trimmed and leading whitespace of the rest dropped.
            ("hello     world", 7, &["hello", "world"]),
            // The last newline wins over a later space.
            ("aaa\nbbb ccc", 9, &["aaa", "bbb ccc"]),
            // Without a newline, the last whitespace.
            ("one two three four", 9, &["one two", "three", "four"]),
            // A long token is cut hard at the limit, keeping the char after the cut.
            ("abcdefghij", 4, &["abcd", "efgh", "ij"]),
            ("ab abcdefghij", 4, &["ab", "abcd", "efgh", "ij"]),
            // Limits count chars, not bytes.
            ("ééééé ééééé", 5, &["ééééé", "ééééé"]),
            ("🙂🙂🙂🙂🙂🙂", 4, &["🙂🙂🙂🙂", "🙂🙂"]),
        ];
        for (text, limit, want) in cases {
            assert_eq!(length(text, *limit), *want, "{text:?} at {limit}");
        }
    }

    #[test]
    fn length_mode_does_not_break_inside_parentheses() {
        let cases: &[(&str, usize, &[&str])] = &[
            // The only spaces at depth 0 are before and after the aside.
            ("see (a b c d) tail", 12, &["see", "(a b c d)", "tail"]),
            // A newline inside parentheses is not a break either.
            ("x y (a\nb) z", 8, &["x y", "(a\nb) z"]),
            // An unbalanced `)` does not make the depth negative.
            ("a) b c", 4, &["a)", "b c"]),
            // A window entirely inside an unclosed `(` has no break: hard cut; the next window starts at
            // depth 0 again.
            ("(abc def ghi", 5, &["(abc", "def", "ghi"]),
        ];
        for (text, limit, want) in cases {
            assert_eq!(length(text, *limit), *want, "{text:?} at {limit}");
        }
    }

    #[test]
    fn length_mode_does_not_protect_code_fences() {
        let text = "```\nlet a = 1;\nlet b = 2;\n```";
        assert_eq!(length(text, 16), vec!["```\nlet a = 1;", "let b = 2;\n```"]);
    }

    #[test]
    fn a_zero_limit_means_the_default_of_4000() {
        let text = "a".repeat(4001);
        let got = length(&text, 0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].chars().count(), 4000);
        assert_eq!(got[1], "a");
        assert_eq!(newline(&text, 0).len(), 2);
    }

    #[test]
    fn newline_mode_matches_the_upstream_table() {
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 100, &[]),
            // No blank line: one chunk, single newlines kept.
            ("line one\nline two", 100, &["line one\nline two"]),
            // Every paragraph is its own chunk, even when two would fit together.
            ("para one\n\npara two", 100, &["para one", "para two"]),
            // Whitespace-only lines and runs of blank lines are one separator; CRLF and CR become LF.
            ("a\n \t\n\n\nb", 100, &["a", "b"]),
            ("a\r\n\r\nb\r\nc", 100, &["a", "b\nc"]),
            ("a\r\rb", 100, &["a", "b"]),
            // Trailing whitespace is removed per paragraph and empty paragraphs are skipped.
            ("a  \n\n  \n\nb\n\n", 100, &["a", "b"]),
            // A long paragraph is length-chunked, short neighbours stay whole.
            (
                "hi\n\none two three four\n\nbye",
                9,
                &["hi", "one two", "three", "four", "bye"],
            ),
            // A long text without blank lines is length-chunked. The window is the first `limit` chars,
            // so the space at index 7 is outside it and the break falls at index 3.
            ("one two three", 7, &["one", "two", "three"]),
        ];
        for (text, limit, want) in cases {
            assert_eq!(newline(text, *limit), *want, "{text:?} at {limit}");
        }
    }

    #[test]
    fn newline_mode_never_splits_at_a_blank_line_inside_a_fence() {
        let text = "intro\n\n```rust\nlet a = 1;\n\nlet b = 2;\n```\n\nafter";
        assert_eq!(
            newline(text, 100),
            vec!["intro", "```rust\nlet a = 1;\n\nlet b = 2;\n```", "after"]
        );
        // Tilde fences, a longer closing fence, and a shorter fence that does not close the block.
        let text = "~~~~\na\n\n~~~\nb\n\n~~~~~\n\nc";
        assert_eq!(newline(text, 100), vec!["~~~~\na\n\n~~~\nb\n\n~~~~~", "c"]);
        // An unclosed fence runs to the end of the text.
        assert_eq!(newline("a\n\n```\nx\n\ny", 100), vec!["a", "```\nx\n\ny"]);
        // A fence indented by 4 spaces is not a fence.
        assert_eq!(newline("    ```\nx\n\ny", 100), vec!["    ```\nx", "y"]);
        // An over-long paragraph containing a fence is still length-chunked, at its newlines.
        assert_eq!(
            newline("intro\n\n```\nab cd\n```", 8),
            vec!["intro", "```", "ab cd", "```"]
        );
    }

    #[test]
    fn a_9000_char_text_at_4000_gives_three_chunks_that_reassemble_to_the_input() {
        let words = [
            "alpha",
            "βeta",
            "(a short aside)",
            "naïve",
            "x",
            "longerwordhere",
            "🙂ok",
        ];
        let mut text = String::new();
        let mut i = 0usize;
        while text.chars().count() < 9000 {
            text.push_str(words[i % words.len()]);
            text.push(if i % 11 == 10 { '\n' } else { ' ' });
            i += 1;
        }
        let text: String = text.chars().take(9000).collect();
        for mode in [ChunkMode::Length, ChunkMode::Newline] {
            let chunks = chunk(&text, 4000, mode);
            assert_eq!(chunks.len(), 3, "{mode}");
            // Each chunk is a verbatim slice of the input; only whitespace lies between them.
            let mut rest = text.as_str();
            for piece in &chunks {
                assert!(
                    piece.chars().count() <= 4000,
                    "{mode}: {} chars",
                    piece.chars().count()
                );
                assert!(!piece.is_empty());
                rest = rest.trim_start();
                rest = rest
                    .strip_prefix(piece.as_str())
                    .unwrap_or_else(|| panic!("{mode}: chunk is not next in the input: {piece:?}"));
            }
            assert!(rest.trim().is_empty(), "{mode}: left over {rest:?}");
        }
    }
}

//! How deep a config's brackets nest, read before the json5 parser sees the text: the parser
//! recurses once per level, so a file nested 100,000 levels deep would overflow the stack instead
//! of failing with a sentence. No imsg-bridge or OpenClaw config comes near the bound.

/// Deeper than any real config (OpenClaw's deepest keys are under ten levels).
pub const MAX_DEPTH: usize = 64;

/// Where the text first opens a bracket deeper than [`MAX_DEPTH`], as a byte offset; None when it
/// never does. Strings (single or double quoted, with escapes) and comments do not count.
pub fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => i = skip_string(bytes, i + 1, quote),
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = skip_to(bytes, i + 2, b"\n"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_to(bytes, i + 2, b"*/"),
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// The index after the string's closing quote (or the end of the text).
fn skip_string(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index after `end` (or the end of the text).
fn skip_to(bytes: &[u8], from: usize, end: &[u8]) -> usize {
    bytes[from.min(bytes.len())..]
        .windows(end.len())
        .position(|w| w == end)
        .map_or(bytes.len(), |p| from + p + end.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_bracket_past_the_bound_and_ignores_strings_and_comments() {
        let deep = "[".repeat(100_000);
        assert_eq!(too_deep(&deep), Some(MAX_DEPTH));
        let fine = format!(
            "{}{}",
            "{a:".repeat(MAX_DEPTH - 1) + "1",
            "}".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(too_deep(&format!("{{{fine}}}")), None);
        let quoted = format!("{{ a: \"{}\", b: '{}\\'[' }}", "[".repeat(200), "{".repeat(200));
        assert_eq!(too_deep(&quoted), None);
        let commented = format!("{{ // {}\n /* {} */ a: 1 }}", "[".repeat(200), "{".repeat(200));
        assert_eq!(too_deep(&commented), None);
        let closed = format!("{}{}", "[]".repeat(10_000), "[");
        assert_eq!(too_deep(&closed), None, "depth counts open brackets only");
    }
}

//! What the config's text is refused for before the json5 parser sees it: brackets nested so deep
//! that the parser, which recurses once per level, would overflow the stack (100,000 levels) instead
//! of failing with a sentence, and raw control characters inside strings, which JSON forbids and
//! json5 lets through, so a corrupted or pasted-into file would load with invisible bytes in a value.
//! No imsg-bridge or OpenClaw config has either (OpenClaw writes its file with escapes).

/// Deeper than any real config (OpenClaw's deepest keys are under ten levels).
pub const MAX_DEPTH: usize = 64;

/// The first thing in the text that the parser must not be given, with its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A bracket opened deeper than [`MAX_DEPTH`].
    TooDeep { offset: usize },
    /// A C0 control character (other than tab; line breaks are json5's own error) or DEL, raw
    /// inside a quoted string.
    ControlInString { offset: usize, byte: u8 },
}

impl Refusal {
    pub fn offset(self) -> usize {
        match self {
            Self::TooDeep { offset } | Self::ControlInString { offset, .. } => offset,
        }
    }

    /// The sentence for the user, without the position.
    pub fn message(self) -> String {
        match self {
            Self::TooDeep { .. } => format!(
                "brackets nest deeper than {MAX_DEPTH} levels here; no config is that deep (is this the right file?)"
            ),
            Self::ControlInString { byte, .. } => format!(
                "control character U+{byte:04X} inside a string; delete it, or write it as \\u{byte:04x} if it is meant"
            ),
        }
    }
}

/// The first refusal in the text, or None. Comments do not count; strings count only for control
/// characters.
pub fn check(text: &str) -> Option<Refusal> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => match skip_string(bytes, i + 1, quote) {
                Ok(next) => i = next,
                Err(refusal) => return Some(refusal),
            },
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = skip_to(bytes, i + 2, b"\n"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_to(bytes, i + 2, b"*/"),
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(Refusal::TooDeep { offset: i });
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

/// The index after the string's closing quote (or the end of the text), or the control character
/// found before it. An escaped character is json5's to judge.
fn skip_string(bytes: &[u8], mut i: usize, quote: u8) -> Result<usize, Refusal> {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return Ok(i + 1),
            byte @ (0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f) => {
                return Err(Refusal::ControlInString { offset: i, byte });
            }
            _ => i += 1,
        }
    }
    Ok(bytes.len())
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

    fn check_depth(text: &str) -> Option<usize> {
        match check(text) {
            Some(Refusal::TooDeep { offset }) => Some(offset),
            None => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_raw_control_character_inside_a_string_is_refused_where_it_is() {
        assert_eq!(
            check("{ a: \"ok\", b: 'x\u{1b}[0m' }"),
            Some(Refusal::ControlInString {
                offset: 16,
                byte: 0x1b
            })
        );
        assert_eq!(
            check("{ a: \"\u{7f}\" }"),
            Some(Refusal::ControlInString {
                offset: 6,
                byte: 0x7f
            })
        );
        // A tab is kept; an escaped character and a line continuation are json5's to judge; a control
        // character in a comment or outside strings is not in a value.
        for fine in [
            "{ a: \"x\ty\" }",
            "{ a: \"x\\\u{1}\" }",
            "{ a: 'x\\\ny' }",
            "{ // \u{1}\n a: 1 }",
        ] {
            assert_eq!(check(fine), None, "{fine:?}");
        }
    }

    #[test]
    fn finds_the_first_bracket_past_the_bound_and_ignores_strings_and_comments() {
        let deep = "[".repeat(100_000);
        assert_eq!(check_depth(&deep), Some(MAX_DEPTH));
        let fine = format!(
            "{}{}",
            "{a:".repeat(MAX_DEPTH - 1) + "1",
            "}".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(check_depth(&format!("{{{fine}}}")), None);
        let quoted = format!("{{ a: \"{}\", b: '{}\\'[' }}", "[".repeat(200), "{".repeat(200));
        assert_eq!(check_depth(&quoted), None);
        let commented = format!("{{ // {}\n /* {} */ a: 1 }}", "[".repeat(200), "{".repeat(200));
        assert_eq!(check_depth(&commented), None);
        let closed = format!("{}{}", "[]".repeat(10_000), "[");
        assert_eq!(check_depth(&closed), None, "depth counts open brackets only");
    }
}

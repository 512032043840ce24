//! Text clean-up of inbound payloads: the protobuf-style length prefix some imsg builds leave on
//! recovered text (docs/channel.md), and header sanitising for the formatted body.

/// If `text` is exactly `0x0A` + varint length + payload consuming the rest, return the payload.
pub fn strip_length_prefix(text: &str) -> Option<String> {
    strip_length_prefix_bytes(text.as_bytes())
}

/// The byte-level form: upstream applies the rule to the UTF-8 bytes, where multi-byte varints can
/// occur (after lossy decoding on the Mac side they cannot reach us as valid UTF-8 in a `str`).
pub fn strip_length_prefix_bytes(bytes: &[u8]) -> Option<String> {
    if bytes.first() != Some(&0x0A) {
        return None;
    }
    let mut len: u64 = 0;
    let mut pos = 1;
    loop {
        // At most five varint bytes, as upstream.
        if pos > 5 {
            return None;
        }
        let byte = *bytes.get(pos)?;
        len |= u64::from(byte & 0x7F) << (7 * (pos - 1));
        pos += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if len == 0 || (bytes.len() - pos) as u64 != len {
        return None;
    }
    let payload = std::str::from_utf8(&bytes[pos..]).ok()?;
    (!payload.is_empty()).then(|| payload.to_string())
}

/// Make a value safe inside the `[iMessage …]` header: no newlines, no brackets.
pub fn sanitize_header(part: &str) -> String {
    part.chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            '[' => '(',
            ']' => ')',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_a_prefix_that_consumes_the_whole_string() {
        assert_eq!(strip_length_prefix("\n\u{5}hello"), Some("hello".into()));
        // ASCII-printable length byte: 0x0A then '!' (33) then 33 bytes.
        let payload = "x".repeat(33);
        assert_eq!(strip_length_prefix(&format!("\n!{payload}")), Some(payload));
    }

    #[test]
    fn strips_a_two_byte_varint_length() {
        let payload = "y".repeat(200);
        let mut raw = vec![0x0A, 0xC8, 0x01];
        raw.extend_from_slice(payload.as_bytes());
        assert_eq!(strip_length_prefix_bytes(&raw), Some(payload.clone()));
        raw.push(b'!');
        assert_eq!(
            strip_length_prefix_bytes(&raw),
            None,
            "length must consume the rest"
        );
    }

    #[test]
    fn leaves_other_text_alone() {
        for text in ["hello", "", "\n\u{9}short", "\u{12}\u{5}hello", "\n\u{0}"] {
            assert_eq!(strip_length_prefix(text), None, "{text:?}");
        }
    }

    #[test]
    fn sanitises_header_parts() {
        assert_eq!(sanitize_header("a\n[b]"), "a (b)");
    }
}

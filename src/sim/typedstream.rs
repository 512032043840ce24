//! Recover the plain text of `message.attributedBody`, the typedstream-archived NSAttributedString
//! that Messages writes when `message.text` is NULL.
//!
//! This follows what imsg does rather than a full typedstream parser: the string bytes sit between a
//! `01 2B` marker and the next `86 84`, behind a length prefix.

const START: [u8; 2] = [0x01, 0x2B];
const END: [u8; 2] = [0x86, 0x84];

/// The text inside an attributedBody blob, or `None` when nothing readable is in it.
pub fn decode(blob: &[u8]) -> Option<String> {
    if let Some(rest) = blob.strip_prefix(&[0xFF, 0xFE]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return non_empty(String::from_utf16_lossy(&units));
    }
    let mut best: Option<(bool, String)> = None;
    let mut from = 0;
    while let Some(start) = find(blob, &START, from) {
        let body_start = start + START.len();
        let Some(end) = find(blob, &END, body_start) else {
            break;
        };
        for candidate in candidates(&blob[body_start..end]) {
            // Prefer prefix-stripped decodings, then the longest one (imsg's rule).
            let better = match &best {
                None => true,
                Some((stripped, text)) => {
                    (candidate.0 && !stripped) || (candidate.0 == *stripped && candidate.1.len() > text.len())
                }
            };
            if better && !candidate.1.is_empty() {
                best = Some(candidate);
            }
        }
        from = end;
    }
    match best {
        Some((_, text)) => Some(text),
        None => non_empty(trim_leading_controls(&String::from_utf8_lossy(blob))),
    }
}

/// Decodings of one marked slice: (prefix stripped?, text).
fn candidates(slice: &[u8]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let stripped = match slice.first() {
        Some(&0x81) if slice.len() >= 3 => Some(&slice[3..]),
        Some(&0x82) if slice.len() >= 5 => Some(&slice[5..]),
        Some(&n) if usize::from(n) + 1 == slice.len() => Some(&slice[1..]),
        _ => None,
    };
    if let Some(body) = stripped
        && let Ok(text) = std::str::from_utf8(body)
    {
        out.push((true, trim_leading_controls(text)));
    }
    if let Ok(text) = std::str::from_utf8(slice) {
        out.push((false, trim_leading_controls(text)));
    }
    out
}

fn trim_leading_controls(text: &str) -> String {
    text.trim_start_matches(|c: char| c.is_control()).to_string()
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Build a minimal attributedBody blob around `text`, as Messages would archive it (for seeding tests).
pub fn encode(text: &str) -> Vec<u8> {
    let mut blob = vec![0x04, 0x0B];
    blob.extend_from_slice(b"streamtyped");
    blob.extend_from_slice(&[0x81, 0xE8, 0x03, 0x84, 0x01, 0x40, 0x84, 0x84, 0x84, 0x12]);
    blob.extend_from_slice(b"NSAttributedString");
    blob.extend_from_slice(&[0x00, 0x84, 0x84, 0x08]);
    blob.extend_from_slice(b"NSObject");
    blob.extend_from_slice(&[0x00, 0x85, 0x92, 0x84, 0x84, 0x84, 0x08]);
    blob.extend_from_slice(b"NSString");
    blob.extend_from_slice(&[0x01, 0x94, 0x84]);
    blob.extend_from_slice(&START);
    let bytes = text.as_bytes();
    match u16::try_from(bytes.len()) {
        Ok(n) if n < 0x80 => blob.push(n as u8),
        Ok(n) => {
            blob.push(0x81);
            blob.extend_from_slice(&n.to_le_bytes());
        }
        Err(_) => {
            blob.push(0x82);
            let n = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            blob.extend_from_slice(&n.to_le_bytes());
        }
    }
    blob.extend_from_slice(bytes);
    blob.extend_from_slice(&END);
    blob.extend_from_slice(&[0x92, 0x84, 0x84, 0x84, 0x0C]);
    blob.extend_from_slice(b"NSDictionary");
    blob
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_and_long_bodies() {
        for text in ["hi", "hello there 👋", &"x".repeat(300)] {
            assert_eq!(decode(&encode(text)).as_deref(), Some(text), "{}", text.len());
        }
    }

    #[test]
    fn decodes_utf16_bodies() {
        let mut blob = vec![0xFF, 0xFE];
        for u in "hey".encode_utf16() {
            blob.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(decode(&blob).as_deref(), Some("hey"));
    }

    #[test]
    fn falls_back_to_the_whole_blob_without_markers() {
        assert_eq!(decode(b"\n\tplain").as_deref(), Some("plain"));
        assert_eq!(decode(b""), None);
    }
}

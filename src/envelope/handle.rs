//! Handle normalisation (docs/channel.md): emails lowercased, phone numbers reduced to `+digits`,
//! service prefixes stripped, chat prefixes canonicalised.

/// Service prefixes that may precede a handle (`imessage:+1555…`).
const SERVICE_PREFIXES: [&str; 3] = ["imessage:", "sms:", "auto:"];

/// Chat target prefixes and their canonical spelling.
const CHAT_PREFIXES: [(&str, &str); 9] = [
    ("chat_id:", "chat_id:"),
    ("chatid:", "chat_id:"),
    ("chat:", "chat_id:"),
    ("chat_guid:", "chat_guid:"),
    ("chatguid:", "chat_guid:"),
    ("guid:", "chat_guid:"),
    ("chat_identifier:", "chat_identifier:"),
    ("chatidentifier:", "chat_identifier:"),
    ("chatident:", "chat_identifier:"),
];

/// Normalise a handle the way the channel compares them. A value without digits that is not an
/// email normalises to `"+"` upstream; callers treat such handles as invalid (docs/differences.md C7),
/// see [`is_valid_handle`].
pub fn normalize_handle(raw: &str) -> String {
    let mut value = raw.trim();
    if value.is_empty() {
        return String::new();
    }
    while let Some(rest) = strip_prefix_ci(value, &SERVICE_PREFIXES) {
        value = rest.trim();
    }
    for (prefix, canonical) in CHAT_PREFIXES {
        if let Some(rest) = strip_prefix_ci(value, &[prefix]) {
            return format!("{canonical}{}", rest.trim());
        }
    }
    if value.contains('@') {
        return value.to_lowercase();
    }
    // Drop a leading `scheme:` (e.g. `tel:`), then keep digits only, with one leading `+`.
    if let Some((scheme, rest)) = value.split_once(':')
        && !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphabetic())
    {
        value = rest;
    }
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

/// A handle is usable when it is an email or has at least one digit.
pub fn is_valid_handle(raw: &str) -> bool {
    let normalized = normalize_handle(raw);
    normalized.contains('@') || normalized.starts_with("chat_") || normalized.len() > 1
}

fn strip_prefix_ci<'a>(value: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|prefix| {
        let head = value.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_handles_like_the_reference() {
        let cases = [
            ("Name@Example.com", "name@example.com"),
            (" +1 (555) 222-3333 ", "+15552223333"),
            ("5552223333", "+5552223333"),
            ("CHAT_ID:123", "chat_id:123"),
            ("GUID:test-guid", "chat_guid:test-guid"),
            ("CHATIDENT:foo", "chat_identifier:foo"),
            ("imessage:sms:+1 555 222 3333", "+15552223333"),
            ("tel:+15552223333", "+15552223333"),
            ("John Doe", "+"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_handle(input), want, "{input:?}");
        }
    }

    #[test]
    fn treats_handles_without_digits_or_at_as_invalid() {
        assert!(!is_valid_handle("John Doe"));
        assert!(is_valid_handle("jane@example.com"));
        assert!(is_valid_handle("+1 555"));
        assert!(is_valid_handle("chat_id:5"));
    }
}

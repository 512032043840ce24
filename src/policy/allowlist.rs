//! Allowlist entries and matching (docs/channel.md): `*`, service prefixes stripped, `chat_id:`,
//! `chat_guid:`, `chat_identifier:` entries matching the chat, anything else a normalised handle.

use crate::envelope::normalize_handle;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    ChatId(i64),
    ChatGuid(String),
    ChatIdentifier(String),
    Handle(String),
}

/// A parsed allowlist. Empty allows nobody; `*` allows everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    everyone: bool,
    entries: Vec<Entry>,
}

/// What an allowlist is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub sender_normalized: &'a str,
    pub chat_id: Option<i64>,
    pub chat_guid: &'a str,
    pub chat_identifier: &'a str,
}

const SERVICES: [&str; 3] = ["imessage:", "sms:", "auto:"];
const CHAT_ID: [&str; 3] = ["chat_id:", "chatid:", "chat:"];
const CHAT_GUID: [&str; 3] = ["chat_guid:", "chatguid:", "guid:"];
const CHAT_IDENTIFIER: [&str; 3] = ["chat_identifier:", "chatidentifier:", "chatident:"];

fn strip<'a>(value: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| {
        let head = value.get(..p.len())?;
        head.eq_ignore_ascii_case(p).then(|| value[p.len()..].trim())
    })
}

/// JavaScript parseInt: leading digits (with sign) or nothing.
fn parse_int(text: &str) -> Option<i64> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse::<i64>().ok().map(|n| n * sign)
}

fn parse_entry(raw: &str) -> Option<Entry> {
    let mut value = raw.trim();
    while let Some(rest) = strip(value, &SERVICES) {
        value = rest;
    }
    if value.is_empty() {
        return None;
    }
    if let Some(rest) = strip(value, &CHAT_ID)
        && let Some(id) = parse_int(rest)
    {
        return Some(Entry::ChatId(id));
    }
    if let Some(rest) = strip(value, &CHAT_GUID)
        && !rest.is_empty()
    {
        return Some(Entry::ChatGuid(rest.to_string()));
    }
    if let Some(rest) = strip(value, &CHAT_IDENTIFIER)
        && !rest.is_empty()
    {
        return Some(Entry::ChatIdentifier(rest.to_string()));
    }
    let handle = normalize_handle(value);
    // A digit-less, non-email handle normalises to "+" and can never match a sender.
    (handle.len() > 1 || handle.contains('@')).then_some(Entry::Handle(handle))
}

impl Allowlist {
    pub fn parse<S: AsRef<str>>(entries: impl IntoIterator<Item = S>) -> Self {
        let mut list = Allowlist::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry == "*" {
                list.everyone = true;
            } else if let Some(parsed) = parse_entry(entry) {
                list.entries.push(parsed);
            }
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        !self.everyone && self.entries.is_empty()
    }

    pub fn allows_everyone(&self) -> bool {
        self.everyone
    }

    /// The single handle this list names, if it names exactly one (the "owner").
    pub fn single_handle(&self) -> Option<&str> {
        match self.entries.as_slice() {
            [Entry::Handle(h)] if !self.everyone => Some(h),
            _ => None,
        }
    }

    pub fn matches(&self, who: &Who<'_>) -> bool {
        self.everyone
            || self.entries.iter().any(|entry| match entry {
                Entry::ChatId(id) => who.chat_id == Some(*id),
                Entry::ChatGuid(guid) => !who.chat_guid.is_empty() && who.chat_guid == guid,
                Entry::ChatIdentifier(ident) => {
                    !who.chat_identifier.is_empty() && who.chat_identifier == ident
                }
                Entry::Handle(handle) => !who.sender_normalized.is_empty() && who.sender_normalized == handle,
            })
    }

    /// This list plus more entries (the pairing store's approvals).
    pub fn with<S: AsRef<str>>(&self, more: impl IntoIterator<Item = S>) -> Self {
        let mut list = self.clone();
        let extra = Allowlist::parse(more);
        list.everyone |= extra.everyone;
        list.entries.extend(extra.entries);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who<'a>(sender: &'a str, chat_id: Option<i64>) -> Who<'a> {
        Who {
            sender_normalized: sender,
            chat_id,
            chat_guid: "iMessage;+;chat9",
            chat_identifier: "chat9",
        }
    }

    #[test]
    fn matches_handles_chats_and_the_wildcard() {
        let list = Allowlist::parse([
            "Name@Example.com",
            " +1 (555) 222-3333 ",
            "CHAT_ID:42",
            "sms:chat_guid:iMessage;+;chat9",
        ]);
        let cases = [
            (who("name@example.com", None), true),
            (who("+15552223333", Some(1)), true),
            (who("+19999999999", Some(42)), true),
            (who("+19999999999", Some(43)), true), // by chat_guid
            (who("+19999999999", None), true),
        ];
        for (w, expected) in cases {
            assert_eq!(list.matches(&w), expected, "{w:?}");
        }
        let strict = Allowlist::parse(["chat_id:12abc", "chatident:other", "John Doe", "", "sms:"]);
        assert!(strict.matches(&Who {
            chat_guid: "",
            chat_identifier: "",
            ..who("+1", Some(12))
        }));
        assert!(
            !strict.matches(&Who {
                chat_guid: "",
                chat_identifier: "x",
                ..who("+", Some(13))
            }),
            "digit-less names match nothing"
        );
        assert!(Allowlist::parse(Vec::<String>::new()).is_empty());
        assert!(!Allowlist::parse(Vec::<String>::new()).matches(&who("+1", Some(1))));
        assert!(Allowlist::parse(["*"]).matches(&who("", None)));
        assert_eq!(Allowlist::parse(["+1 555"]).single_handle(), Some("+1555"));
        assert_eq!(Allowlist::parse(["+1", "*"]).single_handle(), None);
    }
}

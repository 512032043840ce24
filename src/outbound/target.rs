//! The iMessage target grammar (docs/channel.md) with its error texts: `imessage:`/`sms:`/`auto:`
//! handles, `chat_id:`, `chat_guid:`, `chat_identifier:` (and their aliases), or a bare handle.
//! A target is parsed once where it enters (the CLI, the HTTP API, an agent's reply) and travels as
//! a [`Target`]; it prints in its canonical spelling, which is also its echo-cache scope.

use std::fmt;

use crate::config::Service;
use crate::imsg::Recipient;

/// Where a send goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A handle (phone or email), with the service of its prefix (None: bare, the config decides).
    Handle {
        to: String,
        service: Option<Service>,
    },
    ChatId(i64),
    ChatGuid(String),
    ChatIdentifier(String),
}

impl Target {
    /// The `send` addressing key of this target.
    pub fn recipient(&self) -> Recipient {
        match self {
            Self::Handle { to, .. } => Recipient::Handle(to.clone()),
            Self::ChatId(id) => Recipient::ChatId(*id),
            Self::ChatGuid(guid) => Recipient::ChatGuid(guid.clone()),
            Self::ChatIdentifier(ident) => Recipient::ChatIdentifier(ident.clone()),
        }
    }

    /// The service a send to this target uses: its prefix's, else the account's.
    pub fn service(&self, account: Service) -> Service {
        match self {
            Self::Handle {
                service: Some(service),
                ..
            } => *service,
            _ => account,
        }
    }
}

/// The canonical spelling: `parse` reads it back to the same target.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handle { to, service: None } => f.write_str(to),
            Self::Handle {
                to,
                service: Some(service),
            } => write!(f, "{service}:{to}"),
            Self::ChatId(id) => write!(f, "chat_id:{id}"),
            Self::ChatGuid(guid) => write!(f, "chat_guid:{guid}"),
            Self::ChatIdentifier(ident) => write!(f, "chat_identifier:{ident}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetError(pub String);

const SERVICES: [&str; 3] = ["imessage", "sms", "auto"];
const CHAT_ID: [&str; 3] = ["chat_id", "chatid", "chat"];
const CHAT_GUID: [&str; 3] = ["chat_guid", "chatguid", "guid"];
const CHAT_IDENTIFIER: [&str; 3] = ["chat_identifier", "chatidentifier", "chatident"];

/// `prefix:rest` when `text` starts with one of `prefixes` followed by `:` (case-insensitive).
fn strip_prefix<'a>(text: &'a str, prefixes: &[&str]) -> Option<(&'static str, &'a str)> {
    let (head, rest) = text.split_once(':')?;
    let head = head.trim().to_ascii_lowercase();
    prefixes
        .iter()
        .find(|p| **p == head)
        .map(|p| (canonical(p), rest))
}

/// The service a canonical service prefix names.
fn service_of(prefix: &str) -> Service {
    match prefix {
        "imessage" => Service::Imessage,
        "sms" => Service::Sms,
        _ => Service::Auto,
    }
}

fn canonical(prefix: &str) -> &'static str {
    match prefix {
        "imessage" => "imessage",
        "sms" => "sms",
        "auto" => "auto",
        p if CHAT_ID.contains(&p) => "chat_id",
        p if CHAT_GUID.contains(&p) => "chat_guid",
        _ => "chat_identifier",
    }
}

pub fn parse(raw: &str) -> Result<Target, TargetError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(TargetError("iMessage target is required".into()));
    }
    if let Some((prefix, rest)) = strip_prefix(text, &SERVICES) {
        let service = service_of(prefix);
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(TargetError(format!("{service} target is required")));
        }
        if let Some(chat) = parse_chat(rest)? {
            return Ok(chat);
        }
        return Ok(Target::Handle {
            to: rest.to_string(),
            service: Some(service),
        });
    }
    if let Some(chat) = parse_chat(text)? {
        return Ok(chat);
    }
    Ok(Target::Handle {
        to: text.to_string(),
        service: None,
    })
}

fn parse_chat(text: &str) -> Result<Option<Target>, TargetError> {
    if let Some((_, rest)) = strip_prefix(text, &CHAT_ID) {
        let rest = rest.trim();
        return parse_int_prefix(rest)
            .map(|id| Some(Target::ChatId(id)))
            .ok_or_else(|| TargetError(format!("Invalid chat_id: {rest}")));
    }
    if let Some((_, rest)) = strip_prefix(text, &CHAT_GUID) {
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(TargetError("chat_guid is required".into()));
        }
        return Ok(Some(Target::ChatGuid(rest.to_string())));
    }
    if let Some((_, rest)) = strip_prefix(text, &CHAT_IDENTIFIER) {
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(TargetError("chat_identifier is required".into()));
        }
        return Ok(Some(Target::ChatIdentifier(rest.to_string())));
    }
    Ok(None)
}

/// JavaScript `parseInt(x, 10)`: optional sign and leading digits (`12abc` → 12); None for NaN.
fn parse_int_prefix(text: &str) -> Option<i64> {
    let text = text.trim_start();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse::<i64>().ok().map(|n| sign * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(to: &str, service: Option<&str>) -> Target {
        Target::Handle {
            to: to.into(),
            service: service.map(service_of),
        }
    }

    #[test]
    fn parses_the_target_grammar() {
        let cases = [
            ("+14155551212", Ok(handle("+14155551212", None))),
            ("  jane@example.com ", Ok(handle("jane@example.com", None))),
            ("imessage:+1415", Ok(handle("+1415", Some("imessage")))),
            ("SMS: +1415 ", Ok(handle("+1415", Some("sms")))),
            (
                "auto:jane@example.com",
                Ok(handle("jane@example.com", Some("auto"))),
            ),
            ("chat_id:42", Ok(Target::ChatId(42))),
            ("chatid: 12abc", Ok(Target::ChatId(12))),
            ("CHAT:7", Ok(Target::ChatId(7))),
            ("imessage:chat_id:9", Ok(Target::ChatId(9))),
            (
                "chat_guid:iMessage;+;chat1",
                Ok(Target::ChatGuid("iMessage;+;chat1".into())),
            ),
            ("guid:x", Ok(Target::ChatGuid("x".into()))),
            (
                "chat_identifier:chat123",
                Ok(Target::ChatIdentifier("chat123".into())),
            ),
            ("chatident:c", Ok(Target::ChatIdentifier("c".into()))),
            ("", Err("iMessage target is required")),
            ("   ", Err("iMessage target is required")),
            ("sms:", Err("sms target is required")),
            ("imessage:  ", Err("imessage target is required")),
            ("chat_id:abc", Err("Invalid chat_id: abc")),
            ("chat_guid:", Err("chat_guid is required")),
            ("chat_identifier: ", Err("chat_identifier is required")),
        ];
        for (raw, expected) in cases {
            let got = parse(raw).map_err(|e| e.0);
            assert_eq!(got, expected.map_err(str::to_string), "{raw:?}");
        }
    }

    #[test]
    fn a_target_prints_in_its_canonical_spelling_and_parses_back() {
        let cases = [
            ("+14155551212", "+14155551212"),
            ("SMS: +1415 ", "sms:+1415"),
            ("imessage:jane@example.com", "imessage:jane@example.com"),
            ("chatid: 12abc", "chat_id:12"),
            ("imessage:chat_id:9", "chat_id:9"),
            ("guid:iMessage;+;chat1", "chat_guid:iMessage;+;chat1"),
            ("chatident:c", "chat_identifier:c"),
        ];
        for (raw, want) in cases {
            let target = parse(raw).unwrap();
            assert_eq!(target.to_string(), want, "{raw:?}");
            assert_eq!(parse(want).unwrap(), target, "{want:?}");
        }
    }

    #[test]
    fn a_prefixed_handle_keeps_its_service_and_a_bare_one_takes_the_accounts() {
        let cases = [
            (
                "sms:+1",
                Service::Imessage,
                Service::Sms,
                Recipient::Handle("+1".into()),
            ),
            ("+1", Service::Sms, Service::Sms, Recipient::Handle("+1".into())),
            ("chat_id:4", Service::Auto, Service::Auto, Recipient::ChatId(4)),
            (
                "chat_guid:g",
                Service::Sms,
                Service::Sms,
                Recipient::ChatGuid("g".into()),
            ),
        ];
        for (raw, account, service, recipient) in cases {
            let target = parse(raw).unwrap();
            assert_eq!(target.service(account), service, "{raw:?}");
            assert_eq!(target.recipient(), recipient, "{raw:?}");
        }
    }
}

//! Resolving a chat guid the way Messages' AppleScript `chat id "…"` does, for `send`,
//! `send --chat-guid` and `send-attachment --chat` (docs/simulator.md, "Chat guids").
//!
//! Clients do not always spell a chat's guid the way chat.db stores it: OpenClaw addresses a DM as
//! `any;-;+15551234567` while the row may say `iMessage;-;+15551234567`, and newer macOS stores
//! `any;-;…` where older clients still say `iMessage;-;…`. Messages accepts these forms, so the
//! simulator must too. A chat that does not exist is still an error (`Can't get chat id`, -1728):
//! imsg's AppleScript path asks Messages for `chat id G` and only falls back to a buddy send for a
//! direct chat it has already found in chat.db, so nothing is created for an unknown guid.

use rusqlite::{Connection, params};

use crate::sim::query::{self, ChatKey};
use crate::sim::shapes::ChatInfo;

/// The service part of a guid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuidService {
    /// `any`: whichever service the chat is on.
    Any,
    IMessage,
    Sms,
}

impl GuidService {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "any" => Some(Self::Any),
            "imessage" => Some(Self::IMessage),
            "sms" => Some(Self::Sms),
            _ => None,
        }
    }

    /// The stored guid prefixes this service names, in the order they are tried. A stored `any`
    /// chat is service-neutral, so it answers every spelling.
    fn stored_prefixes(self) -> &'static [&'static str] {
        match self {
            Self::Any => &["iMessage", "any", "SMS"],
            Self::IMessage => &["iMessage", "any"],
            Self::Sms => &["SMS", "any"],
        }
    }
}

/// What a guid names, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GuidForm {
    /// `svc;-;HANDLE`: the 1:1 chat with HANDLE (normalised like a `send --to`).
    Direct { service: GuidService, handle: String },
    /// `svc;+;chatNNN`: the group whose identifier is `chatNNN`.
    Group {
        service: GuidService,
        identifier: String,
    },
}

fn parse(guid: &str) -> Option<GuidForm> {
    let mut parts = guid.trim().splitn(3, ';');
    let (service, polarity, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let service = GuidService::parse(service)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return None;
    }
    match polarity {
        "-" => Some(GuidForm::Direct {
            service,
            handle: rest.to_string(),
        }),
        "+" => Some(GuidForm::Group {
            service,
            identifier: rest.to_string(),
        }),
        _ => None,
    }
}

/// The chat `guid` names, or `None` when Messages would answer "Can't get chat id". An exact match
/// wins; otherwise the service prefix is read as Messages does and the handle of a direct guid is
/// normalised with `normalize` (the same function `send --to` uses, so `any;-;415-555-1212` finds
/// `iMessage;-;+14155551212`).
pub(crate) fn resolve(
    conn: &Connection,
    guid: &str,
    normalize: impl Fn(&str) -> String,
) -> rusqlite::Result<Option<ChatInfo>> {
    if let Some(info) = query::chat_info(conn, ChatKey::Guid(guid))? {
        return Ok(Some(info));
    }
    match parse(guid) {
        None => Ok(None),
        Some(GuidForm::Direct { service, handle }) => {
            let mut handles = vec![normalize(&handle)];
            if handles[0] != handle {
                handles.push(handle);
            }
            for handle in &handles {
                for prefix in service.stored_prefixes() {
                    let candidate = format!("{prefix};-;{handle}");
                    if let Some(info) = query::chat_info(conn, ChatKey::Guid(&candidate))? {
                        return Ok(Some(info));
                    }
                }
            }
            Ok(None)
        }
        Some(GuidForm::Group { service, identifier }) => {
            // Stored group guids keep the identifier after `;+;`; the service prefix must agree.
            let mut stmt = conn.prepare_cached(
                "SELECT guid FROM chat WHERE guid LIKE '%;+;%' AND
                 substr(guid, instr(guid, ';+;') + 3) = ?1 ORDER BY ROWID",
            )?;
            let stored: Vec<String> = stmt
                .query_map(params![identifier], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for prefix in service.stored_prefixes() {
                let wanted = format!("{prefix};+;");
                if let Some(found) = stored
                    .iter()
                    .find(|g| g.to_ascii_lowercase().starts_with(&wanted.to_ascii_lowercase()))
                {
                    return query::chat_info(conn, ChatKey::Guid(found));
                }
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::schema;

    fn seeded() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        schema::create(&conn, true).unwrap();
        conn.execute_batch(
            "INSERT INTO chat (guid, style, chat_identifier, service_name, display_name) VALUES
               ('SMS;-;+15550001111', 45, '+15550001111', 'SMS', ''),
               ('any;-;bob@example.com', 45, 'bob@example.com', 'iMessage', ''),
               ('any;+;chat777', 43, 'chat777', 'iMessage', 'Any group');",
        )
        .unwrap();
        conn
    }

    /// The sim's `send --to` normalisation for the default region, reduced to what the table needs.
    fn normalize(h: &str) -> String {
        let digits: String = h.chars().filter(char::is_ascii_digit).collect();
        if !h.contains('@') && digits.len() == 10 {
            format!("+1{digits}")
        } else {
            h.to_string()
        }
    }

    #[test]
    fn resolves_guid_spellings_like_messages() {
        let conn = seeded();
        let table: &[(&str, Option<&str>)] = &[
            // Exact guids, as stored.
            ("iMessage;-;+14155551212", Some("iMessage;-;+14155551212")),
            (
                "iMessage;+;chat900000000000000001",
                Some("iMessage;+;chat900000000000000001"),
            ),
            // OpenClaw's `any;-;HANDLE` finds the direct chat on whatever service it is.
            ("any;-;+14155551212", Some("iMessage;-;+14155551212")),
            ("any;-;+15550001111", Some("SMS;-;+15550001111")),
            // The handle is normalised like `send --to`.
            ("any;-;415-555-1212", Some("iMessage;-;+14155551212")),
            ("iMessage;-;(415) 555 1212", Some("iMessage;-;+14155551212")),
            // A stored `any` chat answers every service spelling.
            ("iMessage;-;bob@example.com", Some("any;-;bob@example.com")),
            ("SMS;-;bob@example.com", Some("any;-;bob@example.com")),
            // A named service must match: an SMS-only chat is not an iMessage chat, and back.
            ("iMessage;-;+15550001111", None),
            ("SMS;-;+14155551212", None),
            // Groups by the identifier after `;+;`.
            (
                "any;+;chat900000000000000001",
                Some("iMessage;+;chat900000000000000001"),
            ),
            ("iMessage;+;chat777", Some("any;+;chat777")),
            ("SMS;+;chat900000000000000001", None),
            // Unknown chats and malformed guids name nothing (Messages: -1728).
            ("any;-;+19995550000", None),
            ("any;+;chat404", None),
            ("chat900000000000000001", None),
            ("bogus;-;+14155551212", None),
            ("any;-;", None),
        ];
        for (guid, want) in table {
            let got = resolve(&conn, guid, normalize).unwrap().map(|c| c.guid);
            assert_eq!(got.as_deref(), *want, "resolving {guid}");
        }
    }

    #[test]
    fn a_direct_guid_never_names_a_group_with_the_same_suffix() {
        let conn = seeded();
        assert!(resolve(&conn, "any;-;chat777", normalize).unwrap().is_none());
        assert!(resolve(&conn, "any;+;+14155551212", normalize).unwrap().is_none());
    }
}

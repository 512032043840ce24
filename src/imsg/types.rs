//! Payloads of the imsg protocol as the server sends them. Every field the protocol calls optional is
//! optional here, so both imsg generations (and future additions) parse; a field with the wrong JSON
//! type makes the whole payload invalid, which the caller logs and drops.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Service;

/// A chat as `chats.list` returns it (baseline and canonical shapes).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Chat {
    pub id: i64,
    #[serde(default)]
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<String>,
    #[serde(default)]
    pub participants: Vec<String>,
    #[serde(default)]
    pub is_group: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_name: Option<String>,
}

/// An attachment of a message (`attachments` is filled only when asked for).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Attachment {
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub transfer_name: String,
    #[serde(default)]
    pub uti: String,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub total_bytes: i64,
    #[serde(default)]
    pub is_sticker: bool,
    #[serde(default)]
    pub original_path: String,
    #[serde(default)]
    pub missing: bool,
}

/// A message row as history, watch and `messages.after` report it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
pub struct Message {
    pub id: i64,
    #[serde(default)]
    pub chat_id: i64,
    #[serde(default)]
    pub guid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_guid: Option<String>,
    /// Older imsg sent a number or a string here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_originator_guid: Option<String>,
    #[serde(default)]
    pub sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    #[serde(default)]
    pub is_from_me: bool,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_caller_id: Option<String>,
    #[serde(default)]
    pub chat_identifier: String,
    #[serde(default)]
    pub chat_guid: String,
    #[serde(default)]
    pub chat_name: String,
    #[serde(default)]
    pub participants: Vec<String>,
    #[serde(default)]
    pub is_group: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_reaction: Option<bool>,
}

/// The parameters of `watch.subscribe` we send (only documented keys, correct types: the strict
/// server rejects anything else).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_rowid: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attachments: bool,
    /// Notifications imsg may queue for us before it ends the stream with `watch.overflow`
    /// (protocol v1 only, 1…4096; the server's default is 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_limit: Option<u32>,
}

/// Where a `send` goes: exactly one of imsg's addressing keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Recipient {
    /// A handle (phone number or email).
    #[serde(rename = "to")]
    Handle(String),
    #[serde(rename = "chat_id")]
    ChatId(i64),
    #[serde(rename = "chat_guid")]
    ChatGuid(String),
    #[serde(rename = "chat_identifier")]
    ChatIdentifier(String),
}

/// The parameters of one `send` (only documented keys, correct types: the strict server rejects
/// anything else; docs/differences.md I3). Blank text and no file are left out rather than sent empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendParams {
    #[serde(flatten)]
    pub recipient: Recipient,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A path imsg can read: on the Mac for an SSH account, on this machine for a local imsg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(serialize_with = "service_name")]
    pub service: Service,
    pub region: String,
    /// The guid of the message this one answers (a threaded reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

fn service_name<S: serde::Serializer>(service: &Service, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(service.as_str())
}

/// The result of `send` (ids are best effort: imsg may not find its own row in time).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct SendResult {
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

impl SendResult {
    /// The id the echo of this message will carry, as upstream picks it: the first non-blank string
    /// among `message_id` and `guid` (trimmed), else the numeric `id`, else `"ok"` when `ok`, else
    /// `"unknown"`. Modern imsg answers `{ok, id: <rowid>, guid}`, which gives the guid, and the
    /// inbound echo carries that guid; `ok` and `unknown` are placeholders the echo cache ignores.
    pub fn message_id(&self) -> String {
        let text = [&self.message_id, &self.guid]
            .into_iter()
            .find_map(|id| id.as_deref().map(str::trim).filter(|id| !id.is_empty()));
        match (text, self.id) {
            (Some(id), _) => id.to_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) if self.ok => "ok".to_string(),
            (None, None) => "unknown".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_history_message_with_optional_fields_missing() {
        let msg: Message = serde_json::from_value(json!({
            "id": 1979, "chat_id": 42, "guid": "G", "sender": "+14155551212", "is_from_me": false,
            "text": "hi", "created_at": "2026-05-16T15:24:36.123Z", "attachments": [], "reactions": [],
            "chat_identifier": "chat1", "chat_guid": "iMessage;+;chat1", "chat_name": "Family",
            "participants": ["+14155551212"], "is_group": true, "future_field": 1
        }))
        .unwrap();
        assert_eq!(msg.id, 1979);
        assert!(msg.is_group);
        assert_eq!(msg.reply_to_text, None);
    }

    #[test]
    fn rejects_a_message_whose_field_has_the_wrong_type() {
        let bad = serde_json::from_value::<Message>(json!({"id": 1, "text": 5}));
        assert!(bad.is_err());
    }

    fn params(recipient: Recipient) -> SendParams {
        SendParams {
            recipient,
            text: None,
            file: None,
            service: Service::Auto,
            region: "US".into(),
            reply_to: None,
        }
    }

    #[test]
    fn serialises_send_params_with_documented_keys_only() {
        let full = SendParams {
            text: Some("hi".into()),
            file: Some("/a.jpg".into()),
            service: Service::Imessage,
            region: "DE".into(),
            reply_to: Some("G".into()),
            ..params(Recipient::Handle("+1".into()))
        };
        let cases = [
            (
                full,
                json!({"to": "+1", "text": "hi", "file": "/a.jpg", "service": "imessage", "region": "DE", "reply_to": "G"}),
            ),
            (
                params(Recipient::ChatId(5)),
                json!({"chat_id": 5, "service": "auto", "region": "US"}),
            ),
            (
                params(Recipient::ChatGuid("iMessage;+;c".into())),
                json!({"chat_guid": "iMessage;+;c", "service": "auto", "region": "US"}),
            ),
            (
                SendParams {
                    service: Service::Sms,
                    ..params(Recipient::ChatIdentifier("chat1".into()))
                },
                json!({"chat_identifier": "chat1", "service": "sms", "region": "US"}),
            ),
        ];
        for (params, want) in cases {
            assert_eq!(serde_json::to_value(&params).unwrap(), want, "{params:?}");
        }
    }

    /// `None`: not a `send` result at all (the send fails with a bad-result error, as before).
    #[test]
    fn the_sent_message_id_prefers_strings_then_numbers_then_ok() {
        let cases = [
            // Modern imsg: the guid, not the numeric rowid.
            (json!({"ok": true, "id": 5, "guid": "G"}), Some("G")),
            // The strict server also names it `message_id`.
            (
                json!({"ok": true, "id": 5, "guid": "G", "message_id": "M"}),
                Some("M"),
            ),
            (json!({"message_id": "  n  ", "guid": "g"}), Some("n")),
            (json!({"message_id": "  ", "guid": " g "}), Some("g")),
            (json!({"guid": " g "}), Some("g")),
            // Numbers after strings.
            (json!({"id": 123}), Some("123")),
            (json!({"id": 9, "message_id": ""}), Some("9")),
            (json!({"id": -3}), Some("-3")),
            // `messageId` is no key of imsg's answer.
            (json!({"messageId": 4}), Some("unknown")),
            // Otherwise `ok`.
            (json!({"ok": true}), Some("ok")),
            (json!({"ok": true, "guid": " "}), Some("ok")),
            (json!({"ok": false}), Some("unknown")),
            (json!({}), Some("unknown")),
            // Shapes that are no send result.
            (json!({"id": "i"}), None),
            (json!({"id": 12.5}), None),
            (json!({"ok": 1}), None),
            (json!({"message_id": 7}), None),
            (json!(null), None),
            (json!("GUID"), None),
        ];
        for (raw, want) in cases {
            let got = serde_json::from_value::<SendResult>(raw.clone())
                .ok()
                .map(|result| result.message_id());
            assert_eq!(got.as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn serialises_watch_params_with_documented_keys_only() {
        let params = serde_json::to_value(WatchParams {
            since_rowid: Some(12),
            attachments: false,
            buffer_limit: None,
        })
        .unwrap();
        assert_eq!(params, json!({"since_rowid": 12}));
        let params = serde_json::to_value(WatchParams {
            since_rowid: Some(12),
            attachments: true,
            buffer_limit: Some(4096),
        })
        .unwrap();
        assert_eq!(
            params,
            json!({"since_rowid": 12, "attachments": true, "buffer_limit": 4096})
        );
    }
}

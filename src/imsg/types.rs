//! Payloads of the imsg protocol as the server sends them. Every field the protocol calls optional is
//! optional here, so both imsg generations (and future additions) parse; a field with the wrong JSON
//! type makes the whole payload invalid, which the caller logs and drops.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

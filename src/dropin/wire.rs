//! The JSON-RPC lines the drop-in proxy looks into, as typed values that keep every key they do not
//! name (`rest`), so a line the proxy edits is forwarded with everything else it carried. Lines the
//! proxy has no reason to edit are forwarded as the bytes that came in.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One JSON-RPC object: a request, a notification or a response.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Frame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// What a frame is, by the JSON-RPC 2.0 rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    /// Neither: forwarded untouched.
    Other,
}

impl Frame {
    /// Parse one line; None when it is not a JSON object (the proxy forwards it as it is).
    pub fn parse(line: &[u8]) -> Option<Frame> {
        serde_json::from_slice(line).ok()
    }

    pub fn kind(&self) -> Kind {
        match (&self.method, &self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, Some(_)) if self.result.is_some() || self.error.is_some() => Kind::Response,
            _ => Kind::Other,
        }
    }

    /// The line to write: compact JSON and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        line_of(self)
    }

    /// A request of our own (resubscribe, the subscription floor probe).
    pub fn request(id: u64, method: &str, params: Value) -> Frame {
        let mut rest = Map::new();
        rest.insert("jsonrpc".into(), Value::from("2.0"));
        Frame {
            id: Some(Value::from(id)),
            method: Some(method.to_string()),
            params: Some(params),
            rest,
            ..Frame::default()
        }
    }

    /// A notification (no id), as imsg sends them.
    pub fn notification(method: &str, params: Value) -> Frame {
        Frame {
            id: None,
            ..Frame::request(0, method, params)
        }
    }

    /// An error response to the client's request `id`.
    pub fn error_response(id: Value, error: &RpcErrorBody) -> Frame {
        let mut rest = Map::new();
        rest.insert("jsonrpc".into(), Value::from("2.0"));
        Frame {
            id: Some(id),
            error: serde_json::to_value(error).ok(),
            rest,
            ..Frame::default()
        }
    }
}

/// Serialise a value as one line. Serialising these types cannot fail (string keys, no maps with
/// non-string keys), so the empty object is only a formality.
pub fn line_of(value: &impl Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

/// The JSON-RPC `error` member the proxy writes itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpcErrorBody {
    pub code: i64,
    pub message: String,
    pub data: Disposition,
}

/// Whether a failed request may have reached the Mac, as OpenClaw reads it from `error.data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disposition {
    pub disposition: Started,
    pub retry_safe: bool,
}

/// `error.data.disposition`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Started {
    /// Nothing reached imsg: sending again cannot duplicate.
    NotStarted,
    /// It was handed to imsg and the link died before the answer: it may have been done.
    Unknown,
}

/// `params` of a `message` notification.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MessageParams {
    pub subscription: Value,
    pub message: WireMessage,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A message as imsg sends it; only its row id and attachments are looked at.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct WireMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<WireAttachment>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One attachment of a message. `imsg_bridge_*` keys are the drop-in's own (docs/guides/openclaw.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct WireAttachment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<bool>,
    /// The Mac's path, kept when the file could not be pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsg_bridge_remote_path: Option<String>,
    /// Why it could not be pulled (a media status and its reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsg_bridge_error: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `result` of `messages.history` (and `messages.after`, `messages.search`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MessagesResult {
    pub messages: Vec<WireMessage>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `params` of `watch.subscribe`: the cursor is the one key the proxy sets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct SubscribeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_rowid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<bool>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `result` of `watch.subscribe`, and `params` of `watch.unsubscribe` and of the watch's own
/// notifications: all carry the subscription id.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct WithSubscription {
    pub subscription: Value,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// `params` of the sends that can name a file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FileParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Typed view of a JSON value; None when it does not have the shape.
pub fn view<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    T::deserialize(value).ok()
}

/// Back to a JSON value. Serialising these types cannot fail (see [`line_of`]).
pub fn value_of(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tells_requests_notifications_and_responses_apart() {
        let kind = |line: &str| Frame::parse(line.as_bytes()).map(|f| f.kind());
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":1,"method":"send"}"#),
            Some(Kind::Request)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":"message"}"#),
            Some(Kind::Notification)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Some(Kind::Response)
        );
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","id":3,"error":{"code":1}}"#),
            Some(Kind::Response)
        );
        assert_eq!(kind(r#"{"hello":1}"#), Some(Kind::Other));
        assert_eq!(kind("not json"), None);
    }

    #[test]
    fn an_edited_message_keeps_every_key_it_did_not_name() {
        let raw = json!({"subscription": 1, "extra": true, "message": {"id": 7, "text": "hi",
            "attachments": [{"original_path": "/a.jpg", "mime_type": "image/jpeg"}]}});
        let mut params: MessageParams = view(&raw).unwrap();
        let attachment = &mut params.message.attachments.as_mut().unwrap()[0];
        attachment.original_path = Some("/local/a.jpg".into());
        let back = value_of(&params);
        assert_eq!(back["extra"], json!(true));
        assert_eq!(back["message"]["text"], json!("hi"));
        assert_eq!(
            back["message"]["attachments"][0]["mime_type"],
            json!("image/jpeg")
        );
        assert_eq!(
            back["message"]["attachments"][0]["original_path"],
            json!("/local/a.jpg")
        );
        assert!(
            back["message"]["attachments"][0]
                .get("imsg_bridge_remote_path")
                .is_none()
        );
    }

    #[test]
    fn the_error_data_reads_as_openclaw_expects() {
        let body = RpcErrorBody {
            code: -32603,
            message: "lost".into(),
            data: Disposition {
                disposition: Started::NotStarted,
                retry_safe: true,
            },
        };
        let frame = Frame::error_response(json!(5), &body);
        let line: Value = serde_json::from_slice(&frame.to_line()).unwrap();
        assert_eq!(line["id"], json!(5));
        assert_eq!(line["jsonrpc"], json!("2.0"));
        assert_eq!(
            line["error"]["data"],
            json!({"disposition": "not_started", "retry_safe": true})
        );
    }
}

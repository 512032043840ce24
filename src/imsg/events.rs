//! The notifications of a `watch.subscribe` stream, decoded: a message, the end of the stream
//! because our side was too slow (`watch.overflow`), or the end because it failed (`error`).

use serde_json::Value;

use super::Message;
use crate::rpc::{Notification, truncate_chars};

/// What one watch notification means.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Message(Box<Message>),
    /// imsg's buffer for us was full: the stream is over and must be resumed from our cursor
    /// (nothing after `resume_after_rowid` was sent).
    Overflow {
        resume_after_rowid: Option<i64>,
    },
    /// The stream died on the Mac (e.g. a database error); the text is imsg's, shortened.
    Failed(String),
    /// A `message` notification we cannot read; the reason, for the log.
    Malformed(String),
    /// A notification we do not act on (reactions, typing, future methods), by method name.
    Other(String),
}

impl WatchEvent {
    pub fn decode(notification: &Notification) -> Self {
        let params = &notification.params;
        match notification.method.as_str() {
            "message" => match params.get("message") {
                None => Self::Malformed("a message notification without a message".to_string()),
                Some(raw) => match serde_json::from_value::<Message>(raw.clone()) {
                    Ok(message) => Self::Message(Box::new(message)),
                    Err(err) => Self::Malformed(format!("a malformed message payload: {err}")),
                },
            },
            "watch.overflow" => Self::Overflow {
                resume_after_rowid: params.get("resume_after_rowid").and_then(Value::as_i64),
            },
            "error" => {
                let message = params
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Self::Failed(truncate_chars(message, 200))
            }
            other => Self::Other(truncate_chars(other, 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(method: &str, params: Value) -> WatchEvent {
        WatchEvent::decode(&Notification {
            method: method.to_string(),
            params,
        })
    }

    #[test]
    fn decodes_each_notification_of_a_watch() {
        let message = decode(
            "message",
            json!({"subscription": 1, "message": {"id": 7, "text": "hi"}}),
        );
        assert!(matches!(message, WatchEvent::Message(m) if m.id == 7 && m.text == "hi"));
        assert_eq!(
            decode(
                "watch.overflow",
                json!({"subscription": 1, "resume_after_rowid": 9000, "reason": "buffer_limit_exceeded", "terminal": true})
            ),
            WatchEvent::Overflow {
                resume_after_rowid: Some(9000)
            }
        );
        assert_eq!(
            decode(
                "error",
                json!({"subscription": 1, "error": {"message": "disk I/O error"}})
            ),
            WatchEvent::Failed("disk I/O error".to_string())
        );
        assert_eq!(
            decode("typing", json!({"subscription": 1})),
            WatchEvent::Other("typing".to_string())
        );
    }

    #[test]
    fn a_message_without_a_readable_payload_is_malformed_not_fatal() {
        assert!(matches!(
            decode("message", json!({"subscription": 1})),
            WatchEvent::Malformed(_)
        ));
        assert!(matches!(
            decode("message", json!({"subscription": 1, "message": {"id": "seven"}})),
            WatchEvent::Malformed(_)
        ));
    }
}

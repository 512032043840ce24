//! The typed `imsg` protocol over the JSON-RPC client: the capability probe (`initialize`, with the
//! baseline fallback) and the methods the bridge calls.

mod events;
mod types;

use std::time::Duration;

use serde_json::{Value, json};

use crate::rpc::{RpcClient, RpcError, Subscription};
pub use events::WatchEvent;
pub use types::{Attachment, Chat, Message, Recipient, SendParams, SendResult, WatchParams};

/// JSON-RPC "method not found": what a pre-0.14 server answers to `initialize`.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC "invalid params": what a server answers to a key or value it does not accept.
pub const INVALID_PARAMS: i64 = -32602;

/// One page of `messages.after`: rows after a ROWID, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub messages: Vec<Message>,
    /// The server's scan cursor: it may pass rows it did not return (tapbacks, rows not yet joined
    /// to a chat), so the next page starts here.
    pub next_rowid: i64,
    pub has_more: bool,
}

/// Which protocol generation the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// 0.14+ "protocol v1": strict params, `initialize`/`status`.
    V1 { version: Option<String> },
    /// Older servers: no `initialize`, lenient params.
    Baseline,
}

/// An `imsg rpc` peer whose generation is known.
#[derive(Debug, Clone)]
pub struct ImsgClient {
    rpc: RpcClient,
    protocol: Protocol,
    timeout: Duration,
}

impl ImsgClient {
    /// Probe the server with `initialize`; `-32601` means a baseline server.
    pub async fn initialize(rpc: RpcClient, timeout: Duration) -> Result<Self, RpcError> {
        let protocol = match rpc
            .call_with_timeout("initialize", json!({"protocol_version": 1}), Some(timeout))
            .await
        {
            Ok(status) => Protocol::V1 {
                version: status.get("version").and_then(Value::as_str).map(str::to_string),
            },
            Err(err) if err.code() == Some(METHOD_NOT_FOUND) => Protocol::Baseline,
            Err(err) => return Err(err),
        };
        Ok(Self {
            rpc,
            protocol,
            timeout,
        })
    }

    pub fn protocol(&self) -> &Protocol {
        &self.protocol
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// `chats.list`, newest activity first.
    pub async fn chats_list(&self, limit: u32) -> Result<Vec<Chat>, RpcError> {
        let result = self.call("chats.list", json!({"limit": limit.max(1)})).await?;
        parse_field(&result, "chats", "chats.list")
    }

    /// `messages.history` of one chat, newest first.
    pub async fn history(
        &self,
        chat_id: i64,
        limit: u32,
        attachments: bool,
    ) -> Result<Vec<Message>, RpcError> {
        let mut params = json!({"chat_id": chat_id, "limit": limit.max(1)});
        if attachments {
            params["attachments"] = Value::Bool(true);
        }
        let result = self.call("messages.history", params).await?;
        parse_field(&result, "messages", "messages.history")
    }

    /// The message with this ROWID, with attachments, via `messages.after` (protocol v1). None when
    /// the server lacks the method or has no such row.
    pub async fn message_at(&self, rowid: i64) -> Result<Option<Message>, RpcError> {
        let params = json!({"since_rowid": (rowid - 1).max(0), "limit": 1, "attachments": true});
        let result = match self.call("messages.after", params).await {
            Ok(result) => result,
            Err(err) if err.code() == Some(METHOD_NOT_FOUND) => return Ok(None),
            Err(err) => return Err(err),
        };
        let messages: Vec<Message> = parse_field(&result, "messages", "messages.after")?;
        Ok(messages.into_iter().find(|m| m.id == rowid))
    }

    /// `messages.after` (protocol v1): up to `limit` messages after `since_rowid`, ROWID ascending.
    /// `None` when the server lacks the method (a baseline server).
    pub async fn messages_after(
        &self,
        since_rowid: i64,
        limit: u32,
        attachments: bool,
    ) -> Result<Option<Page>, RpcError> {
        let mut params = json!({"since_rowid": since_rowid.max(0), "limit": limit.max(1)});
        if attachments {
            params["attachments"] = Value::Bool(true);
        }
        let result = match self.call("messages.after", params).await {
            Ok(result) => result,
            Err(err) if err.code() == Some(METHOD_NOT_FOUND) => return Ok(None),
            Err(err) => return Err(err),
        };
        let messages: Vec<Message> = parse_field(&result, "messages", "messages.after")?;
        let last = messages.last().map_or(since_rowid, |m| m.id);
        Ok(Some(Page {
            next_rowid: result.get("next_rowid").and_then(Value::as_i64).unwrap_or(last),
            has_more: result.get("has_more").and_then(Value::as_bool).unwrap_or(false),
            messages,
        }))
    }

    /// The ROWID of the newest message the server can see (0 when there is none): where a fresh
    /// cursor starts, so nothing that arrives after the first start is ever skipped.
    pub async fn newest_rowid(&self) -> Result<i64, RpcError> {
        let Some(chat) = self.chats_list(1).await?.into_iter().next() else {
            return Ok(0);
        };
        Ok(self.history(chat.id, 1, false).await?.first().map_or(0, |m| m.id))
    }

    /// `watch.subscribe`; notifications that race the answer are kept. A `buffer_limit` the server
    /// refuses (`-32602`: a server without the key, or a smaller maximum) is dropped and the
    /// subscription asked again with the server's default.
    pub async fn watch(&self, params: &WatchParams) -> Result<Subscription, RpcError> {
        match self.subscribe(params).await {
            Err(err) if err.code() == Some(INVALID_PARAMS) && params.buffer_limit.is_some() => {
                let plain = WatchParams {
                    buffer_limit: None,
                    ..params.clone()
                };
                self.subscribe(&plain).await
            }
            other => other,
        }
    }

    async fn subscribe(&self, params: &WatchParams) -> Result<Subscription, RpcError> {
        let params = serde_json::to_value(params).map_err(|e| RpcError::BadResult {
            method: "watch.subscribe".into(),
            detail: e.to_string(),
        })?;
        let (_, subscription) = self
            .rpc
            .subscribe("watch.subscribe", params, Some(self.timeout))
            .await?;
        Ok(subscription)
    }

    /// `watch.unsubscribe`; the subscription's routing is dropped whatever the answer.
    pub async fn unwatch(&self, subscription: u64) -> Result<(), RpcError> {
        let result = self
            .call("watch.unsubscribe", json!({"subscription": subscription}))
            .await;
        self.rpc.forget_subscription(subscription);
        result.map(|_| ())
    }

    /// One `send`. Never retried here: a failed send may still have been delivered.
    pub async fn send(&self, params: &SendParams, timeout: Duration) -> Result<SendResult, RpcError> {
        let params = serde_json::to_value(params).map_err(|e| RpcError::BadResult {
            method: "send".into(),
            detail: format!("cannot encode the params: {e}"),
        })?;
        let result = self.rpc.call_with_timeout("send", params, Some(timeout)).await?;
        serde_json::from_value(result).map_err(|e| RpcError::BadResult {
            method: "send".into(),
            detail: e.to_string(),
        })
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.rpc
            .call_with_timeout(method, params, Some(self.timeout))
            .await
    }
}

fn parse_field<T: serde::de::DeserializeOwned>(
    result: &Value,
    field: &str,
    method: &str,
) -> Result<T, RpcError> {
    let value = result.get(field).cloned().unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(value).map_err(|e| RpcError::BadResult {
        method: method.into(),
        detail: e.to_string(),
    })
}

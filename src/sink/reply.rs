//! Replies coming back from the agent and the per-account outboxes they travel through: an exec
//! agent's reply lines and the HTTP API's sends are queued to the account that owns the target; a
//! webhook's replies come back with its answer.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::util::lock;

/// Replies waiting for an account whose connection is down; beyond this, new ones are refused.
pub const OUTBOX_CAPACITY: usize = 256;
/// Envelopes remembered for `envelope_id` replies.
const RECENT_ENVELOPES: usize = 4096;

/// A reply as an agent writes it: to an envelope (`envelope_id`) or to an explicit target (`to`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AgentReply {
    #[serde(default)]
    pub envelope_id: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub media: Vec<String>,
}

/// The result of a send: the message ids imsg reported, one per `send` call.
pub type SendResult = Result<Vec<String>, String>;

/// Something to send from an account.
#[derive(Debug)]
pub struct Outgoing {
    pub to: String,
    pub text: String,
    pub media: Vec<PathBuf>,
    /// Written by the agent: cleaned of scaffolding and prefixed (`responsePrefix`) before sending.
    pub from_agent: bool,
    pub reply_to: Option<String>,
    pub done: Option<oneshot::Sender<SendResult>>,
}

/// Why a reply could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no account {0:?}")]
    UnknownAccount(String),
    #[error("envelope {0:?} is not known (too old, or from another run)")]
    UnknownEnvelope(String),
    #[error("a reply needs `envelope_id` or `to`")]
    NoTarget,
    #[error("account {0:?} has {OUTBOX_CAPACITY} replies waiting; refusing more")]
    Full(String),
}

/// Envelope id → (account, reply target), and the order they came in (for the bound).
type Recent = (HashMap<String, (String, String)>, VecDeque<String>);

/// Every account's outbox, and the recent envelopes' reply targets.
#[derive(Debug, Default)]
pub struct Outboxes {
    senders: Mutex<HashMap<String, mpsc::Sender<Outgoing>>>,
    recent: Mutex<Recent>,
    default_account: Mutex<Option<String>>,
}

impl Outboxes {
    /// Open the outbox of `account`; the receiver belongs to the account's supervisor.
    pub fn open(&self, account: &str) -> mpsc::Receiver<Outgoing> {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        lock(&self.senders).insert(account.to_string(), tx);
        let mut default = lock(&self.default_account);
        if default.is_none() {
            *default = Some(account.to_string());
        }
        rx
    }

    /// Route `account`'s sends through `via`'s outbox (accounts sharing one backend, fix 11).
    pub fn alias(&self, account: &str, via: &str) -> Result<(), RouteError> {
        let mut senders = lock(&self.senders);
        let sender = senders
            .get(via)
            .cloned()
            .ok_or_else(|| RouteError::UnknownAccount(via.to_string()))?;
        senders.insert(account.to_string(), sender);
        Ok(())
    }

    pub fn set_default_account(&self, account: &str) {
        *lock(&self.default_account) = Some(account.to_string());
    }

    /// Remember where a reply to this envelope goes.
    pub fn remember(&self, envelope_id: &str, account: &str, to: &str) {
        let mut recent = lock(&self.recent);
        let (map, order) = &mut *recent;
        if map
            .insert(envelope_id.to_string(), (account.to_string(), to.to_string()))
            .is_none()
        {
            order.push_back(envelope_id.to_string());
            while order.len() > RECENT_ENVELOPES {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// Queue an agent's reply to its account.
    pub fn route(&self, reply: AgentReply) -> Result<(), RouteError> {
        let (account, to) = match (&reply.envelope_id, &reply.to) {
            (Some(id), _) => lock(&self.recent)
                .0
                .get(id)
                .cloned()
                .ok_or_else(|| RouteError::UnknownEnvelope(id.clone()))?,
            (None, Some(to)) => {
                let account = reply
                    .account
                    .clone()
                    .or_else(|| lock(&self.default_account).clone())
                    .unwrap_or_default();
                (account, to.clone())
            }
            (None, None) => return Err(RouteError::NoTarget),
        };
        self.queue(
            &account,
            Outgoing {
                to,
                text: reply.text.unwrap_or_default(),
                media: reply.media.into_iter().map(PathBuf::from).collect(),
                from_agent: true,
                reply_to: None,
                done: None,
            },
        )
    }

    /// Queue something to send from `account`.
    pub fn queue(&self, account: &str, outgoing: Outgoing) -> Result<(), RouteError> {
        let sender = lock(&self.senders)
            .get(account)
            .cloned()
            .ok_or_else(|| RouteError::UnknownAccount(account.to_string()))?;
        sender
            .try_send(outgoing)
            .map_err(|_| RouteError::Full(account.to_string()))
    }

    pub fn default_account(&self) -> Option<String> {
        lock(&self.default_account).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_replies_by_envelope_or_target() {
        let boxes = Outboxes::default();
        let mut rx = boxes.open("default");
        let mut work = boxes.open("work");
        boxes.remember("imessage:work:G1", "work", "chat_id:42");
        let reply: AgentReply =
            serde_json::from_str(r#"{"envelope_id":"imessage:work:G1","text":"hi","media":["/a.jpg"]}"#)
                .unwrap();
        boxes.route(reply).unwrap();
        let out = work.try_recv().unwrap();
        assert_eq!(
            (out.to.as_str(), out.text.as_str(), out.from_agent),
            ("chat_id:42", "hi", true)
        );
        assert_eq!(out.media, vec![PathBuf::from("/a.jpg")]);
        boxes
            .route(AgentReply {
                to: Some("+1555".into()),
                text: Some("x".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rx.try_recv().unwrap().to, "+1555", "no account: the default one");
        let unknown = AgentReply {
            envelope_id: Some("nope".into()),
            ..Default::default()
        };
        assert_eq!(
            boxes.route(unknown),
            Err(RouteError::UnknownEnvelope("nope".into()))
        );
        assert_eq!(boxes.route(AgentReply::default()), Err(RouteError::NoTarget));
        let elsewhere = AgentReply {
            to: Some("+1".into()),
            account: Some("gone".into()),
            ..Default::default()
        };
        assert_eq!(
            boxes.route(elsewhere),
            Err(RouteError::UnknownAccount("gone".into()))
        );
    }
}

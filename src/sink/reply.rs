//! Replies coming back from the agent and the per-account outboxes they travel through: an exec
//! agent's reply lines and the HTTP API's sends are queued to the account that owns the target; a
//! webhook's replies, which come back with its answer, are queued by the account itself. The
//! account's loop sends what its outbox holds.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::outbound::{self, Request, SendError, TargetError};

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

impl AgentReply {
    /// The reply as something to send to `to` (its own `to`, or the envelope's conversation).
    pub fn into_outgoing(self, to: &str) -> Result<Outgoing, TargetError> {
        let request = Request::agent_reply(
            outbound::parse(to)?,
            self.text.unwrap_or_default(),
            self.media.into_iter().map(PathBuf::from).collect(),
        );
        Ok(Outgoing {
            request,
            done: None,
            gate: None,
        })
    }
}

/// A last check the account's loop runs right before it sends, so that nothing can come between
/// the check and the send (a NATS reply's claim); `Err` holds the send back with the reason.
pub type SendGate = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// What a send came to: the message ids imsg reported, one per `send` call.
pub type SendOutcome = Result<Vec<String>, SendError>;

/// Something to send from an account.
pub struct Outgoing {
    pub request: Request,
    /// Whoever waits for the outcome (the HTTP API, the nats sink's reply puller).
    pub done: Option<oneshot::Sender<SendOutcome>>,
    pub gate: Option<SendGate>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("request", &self.request)
            .field("waited_for", &self.done.is_some())
            .field("gated", &self.gate.is_some())
            .finish()
    }
}

/// One account's outbox, read by the account's loop: what other tasks queued (exec replies, API
/// sends, through [`Outboxes`]) and the replies of its own webhook answers, which the loop queues
/// itself while it delivers (unbounded: they are bounded by the rows of one batch).
#[derive(Debug)]
pub struct Outbox {
    queued: mpsc::Receiver<Outgoing>,
    own: VecDeque<Outgoing>,
}

impl Outbox {
    /// The next thing to send; waits while there is none. Cancel-safe (for `select!`).
    pub async fn recv(&mut self) -> Option<Outgoing> {
        match self.own.pop_front() {
            Some(outgoing) => Some(outgoing),
            None => self.queued.recv().await,
        }
    }

    /// The next thing to send, if there is one now.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.own.pop_front().or_else(|| self.queued.try_recv().ok())
    }

    /// Queue a reply of the account's own webhook answer.
    pub fn push(&mut self, outgoing: Outgoing) {
        self.own.push_back(outgoing);
    }
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
    #[error("cannot address the reply: {0}")]
    BadTarget(#[from] TargetError),
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
    /// Open the outbox of `account`; it belongs to the account's supervisor.
    pub fn open(&self, account: &str) -> Outbox {
        let (tx, queued) = mpsc::channel(OUTBOX_CAPACITY);
        lock(&self.senders).insert(account.to_string(), tx);
        let mut default = lock(&self.default_account);
        if default.is_none() {
            *default = Some(account.to_string());
        }
        Outbox {
            queued,
            own: VecDeque::new(),
        }
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
        let default = lock(&self.default_account).clone().unwrap_or_default();
        let (account, outgoing) = self.resolve(reply, &default)?;
        self.queue(&account, outgoing)
    }

    /// Which account sends `reply`, and what: by its envelope (remembered here), else its own `to`
    /// from its own `account` or `default_account`.
    pub fn resolve(
        &self,
        reply: AgentReply,
        default_account: &str,
    ) -> Result<(String, Outgoing), RouteError> {
        let (account, to) = match (&reply.envelope_id, &reply.to) {
            (Some(id), None) => lock(&self.recent)
                .0
                .get(id)
                .cloned()
                .ok_or_else(|| RouteError::UnknownEnvelope(id.clone()))?,
            // An explicit `to` wins: a reply that names its target needs no memory of the envelope
            // (another bridge may have delivered it).
            (envelope, Some(to)) => {
                let remembered = envelope
                    .as_ref()
                    .and_then(|id| lock(&self.recent).0.get(id).cloned());
                let account = reply
                    .account
                    .clone()
                    .or(remembered.map(|(account, _)| account))
                    .unwrap_or_else(|| default_account.to_string());
                (account, to.clone())
            }
            (None, None) => return Err(RouteError::NoTarget),
        };
        Ok((account, reply.into_outgoing(&to)?))
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
    use crate::media::roots::Caller;

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
        let out = work.try_recv().unwrap().request;
        assert_eq!(
            (out.to, out.text.as_str(), out.shape),
            (outbound::Target::ChatId(42), "hi", outbound::Shape::AgentReply)
        );
        assert_eq!(out.media, vec![PathBuf::from("/a.jpg")]);
        assert_eq!(out.origin, Caller::Agent, "held to the outbound media roots");
        boxes
            .route(AgentReply {
                to: Some("+1555".into()),
                text: Some("x".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            rx.try_recv().unwrap().request.to.to_string(),
            "+1555",
            "no account: the default one"
        );
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
        let unaddressable = AgentReply {
            to: Some("chat_id:abc".into()),
            ..Default::default()
        };
        assert_eq!(
            boxes.route(unaddressable).unwrap_err().to_string(),
            "cannot address the reply: Invalid chat_id: abc"
        );
    }

    #[test]
    fn a_reply_that_names_its_target_needs_no_memory_of_the_envelope() {
        let boxes = Outboxes::default();
        let reply = |envelope: Option<&str>, to: Option<&str>| AgentReply {
            envelope_id: envelope.map(str::to_string),
            to: to.map(str::to_string),
            text: Some("hi".into()),
            ..Default::default()
        };
        let (account, outgoing) = boxes
            .resolve(reply(Some("imessage:work:G9"), Some("+1555")), "work")
            .unwrap();
        assert_eq!(
            (account.as_str(), outgoing.request.to.to_string()),
            ("work", "+1555".into())
        );
        assert_eq!(
            outgoing.request.shape,
            outbound::Shape::AgentReply,
            "chunked and cleaned like exec replies"
        );
        assert_eq!(
            outgoing.request.origin,
            Caller::Agent,
            "held to the outbound media roots"
        );
        boxes.remember("imessage:home:G1", "home", "chat_id:7");
        let (account, outgoing) = boxes
            .resolve(reply(Some("imessage:home:G1"), None), "work")
            .unwrap();
        assert_eq!(
            (account.as_str(), outgoing.request.to.to_string()),
            ("home", "chat_id:7".into())
        );
        assert_eq!(
            boxes
                .resolve(reply(Some("imessage:x:G2"), None), "work")
                .unwrap_err(),
            RouteError::UnknownEnvelope("imessage:x:G2".into())
        );
    }

    #[tokio::test]
    async fn an_outbox_hands_out_its_own_replies_first_then_what_others_queued_in_order() {
        let boxes = Outboxes::default();
        let mut outbox = boxes.open("default");
        let reply = |to: &str, text: &str| {
            AgentReply {
                text: Some(text.into()),
                ..Default::default()
            }
            .into_outgoing(to)
            .unwrap()
        };
        boxes.queue("default", reply("+1", "queued 1")).unwrap();
        boxes.queue("default", reply("+1", "queued 2")).unwrap();
        outbox.push(reply("chat_id:3", "own 1"));
        outbox.push(reply("chat_id:3", "own 2"));
        let mut got = Vec::new();
        got.push(outbox.recv().await.unwrap().request.text);
        while let Some(outgoing) = outbox.try_recv() {
            got.push(outgoing.request.text);
        }
        assert_eq!(got, vec!["own 1", "own 2", "queued 1", "queued 2"]);
        assert!(outbox.try_recv().is_none());
    }
}

//! The bridge behind the HTTP control API: `POST /v1/send` queues to the account's outbox and waits
//! for imsg's answer; `GET /v1/status` shows every account's state and counters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;

use super::status::{AccountState, StatusBoard};
use crate::http::{Control, ControlError, SendRequest, SendResponse};
use crate::media::roots::Caller;
use crate::outbound::{Request, SendError, Shape};
use crate::sink::reply::{Outboxes, Outgoing, RouteError};

/// How long an API send may wait for its turn and for imsg.
const SEND_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct BridgeControl {
    pub outboxes: Arc<Outboxes>,
    pub status: Arc<StatusBoard>,
}

impl Control for BridgeControl {
    async fn send(&self, request: SendRequest) -> Result<SendResponse, ControlError> {
        let account = request
            .account
            .clone()
            .or_else(|| self.outboxes.default_account())
            .unwrap_or_default();
        let to = crate::outbound::parse(&request.to).map_err(|e| ControlError::BadRequest(e.0))?;
        let mut state = self
            .status
            .get(&account)
            .ok_or_else(|| ControlError::NotFound(format!("no account {account:?}")))?;
        // An account sharing another's watcher sends through it: its connection is what counts.
        if let Some(via) = state.via.clone() {
            state = self.status.get(&via).unwrap_or(state);
        }
        if state.state != AccountState::Connected {
            let why = state.last_error.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(ControlError::Unavailable(format!(
                "account {account:?} is {}{why}",
                state.state.as_str().replace('_', " ")
            )));
        }
        let (done, answer) = oneshot::channel();
        let outgoing = Outgoing {
            request: Request {
                to,
                text: request.text.clone().unwrap_or_default(),
                media: request.media.iter().map(PathBuf::from).collect(),
                shape: Shape::Chunked,
                reply_to: request.reply_to.clone(),
                origin: Caller::Api,
            },
            done: Some(done),
            gate: None,
        };
        self.outboxes.queue(&account, outgoing).map_err(|e| match e {
            RouteError::UnknownAccount(a) => ControlError::NotFound(format!("no account {a:?}")),
            other => ControlError::Unavailable(other.to_string()),
        })?;
        match tokio::time::timeout(SEND_WAIT, answer).await {
            Ok(Ok(Ok(ids))) => Ok(SendResponse {
                account,
                sent: ids.len(),
                message_ids: ids,
            }),
            // A refused file is the request's fault (400, docs/security.md "Outbound media roots");
            // every other failed send is imsg's (or the Mac's) answer to a valid request: 502.
            Ok(Ok(Err(err @ SendError::MediaRefused { .. }))) => {
                Err(ControlError::BadRequest(err.to_string()))
            }
            Ok(Ok(Err(err))) => Err(ControlError::Failed(err.to_string())),
            Ok(Err(_)) => Err(ControlError::Unavailable(
                "the account's connection ended before the send".into(),
            )),
            Err(_) => Err(ControlError::Unavailable(format!(
                "no answer within {} s (the connection may be down)",
                SEND_WAIT.as_secs()
            ))),
        }
    }

    fn status(&self) -> serde_json::Value {
        let accounts: serde_json::Map<String, serde_json::Value> = self
            .status
            .snapshot()
            .into_iter()
            .map(|(id, s)| {
                let counters = self.status.metrics.account_json(&id);
                (id, json!({"status": s, "counters": counters}))
            })
            .collect();
        let mut status = json!({"version": env!("CARGO_PKG_VERSION"), "accounts": accounts});
        if let Some(nats) = self.status.nats() {
            status["nats"] = json!(nats);
        }
        status
    }
}

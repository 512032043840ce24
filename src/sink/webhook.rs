//! The `webhook` sink: POST each envelope with `Idempotency-Key: <id>`. 2xx delivers (a body with
//! `replies` is sent back); 5xx, timeouts and refused connections retry with backoff while the
//! account's later messages wait; 4xx, and a request that cannot even be built (an invalid header
//! value), are permanent rejections that the gateway dead-letters (docs/agents.md).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::reply::AgentReply;
use super::{Delivery, SinkError};
use crate::envelope::Envelope;
use crate::rpc::truncate_chars;
use crate::util::backoff::{Backoff, Schedule};

/// Retries of one envelope: 1 s doubling to 30 s, for as long as the webhook keeps failing.
const RETRY: Schedule = Schedule {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: 0.0,
    healthy: None,
};

#[derive(Debug)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    headers: BTreeMap<String, String>,
    cancel: CancellationToken,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    replies: Vec<AgentReply>,
}

impl WebhookSink {
    pub fn new(
        url: &str,
        headers: BTreeMap<String, String>,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            client,
            url: url.to_string(),
            headers,
            cancel,
        }
    }

    pub async fn deliver(&self, envelope: &Envelope) -> Result<Delivery, SinkError> {
        let mut backoff = Backoff::new(RETRY);
        loop {
            let mut request = self
                .client
                .post(&self.url)
                .header("Idempotency-Key", &envelope.id)
                .json(envelope);
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            // Errors are shown without the URL: its query may carry a token.
            let problem = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let body = response.text().await.unwrap_or_default();
                    let answer = if body.trim().is_empty() {
                        Answer::default()
                    } else {
                        serde_json::from_str(&body).unwrap_or_else(|err| {
                            warn!(id = %envelope.id, "the webhook's answer is not JSON with `replies`: {err}");
                            Answer::default()
                        })
                    };
                    return Ok(Delivery::Accepted {
                        replies: answer.replies,
                    });
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    return Ok(Delivery::Rejected(format!(
                        "{status}: {}",
                        truncate_chars(body.trim(), 200)
                    )));
                }
                Ok(response) => format!("HTTP {}", response.status()),
                // The same request would fail the same way on every retry and stall the account.
                Err(err) if err.is_builder() => return Ok(Delivery::Rejected(unbuildable(&err))),
                Err(err) if err.is_timeout() => "timed out".to_string(),
                Err(err) if err.is_connect() => "cannot connect".to_string(),
                Err(err) => err.without_url().to_string(),
            };
            let delay = backoff.next_delay();
            warn!(id = %envelope.id, "webhook delivery failed ({problem}); retrying in {:.0} s", delay.as_secs_f64());
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(SinkError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Why a request could not be built, without the URL (its query may carry a token) and without
/// header values (they may be secrets): the error chain names only the kind of problem.
fn unbuildable(err: &reqwest::Error) -> String {
    let mut reason = String::from("the request cannot be built");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> Envelope {
        let context = crate::envelope::EnvelopeContext {
            account: "default".into(),
            agent_id: "main".into(),
            dm_scope: crate::config::DmScope::Main,
            main_key: "main".into(),
        };
        let mut envelope = crate::envelope::normalize(&crate::imsg::Message::default(), &context);
        envelope.id = id.into();
        envelope
    }

    /// Deliver to a port nobody listens on: a retry would never end, a rejection comes at once.
    async fn deliver_once(headers: &[(&str, &str)], id: &str) -> Delivery {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let sink = WebhookSink::new(
            "http://127.0.0.1:9/hook",
            headers,
            Duration::from_secs(1),
            CancellationToken::new(),
        );
        let envelope = envelope(id);
        let delivery = tokio::time::timeout(Duration::from_secs(10), sink.deliver(&envelope));
        delivery.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_rejected_not_retried() {
        let cases: [(&[(&str, &str)], &str); 3] = [
            (&[], "imessage:default:AB\r\nX-Injected: 1"),
            (&[("X-Token", "secret\u{1}value")], "imessage:default:A"),
            (&[("bad header", "v")], "imessage:default:A"),
        ];
        for (headers, id) in cases {
            let Delivery::Rejected(reason) = deliver_once(headers, id).await else {
                panic!("{headers:?} {id:?} was not rejected");
            };
            assert!(reason.starts_with("the request cannot be built"), "{reason}");
            assert!(!reason.contains("secret"), "no header value in {reason}");
            assert!(!reason.contains("127.0.0.1"), "no URL in {reason}");
        }
    }
}

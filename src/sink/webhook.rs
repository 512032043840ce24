//! The `webhook` sink: POST each envelope with `Idempotency-Key: <id>`. 2xx delivers (a body with
//! `replies` is sent back); 5xx, timeouts and refused connections retry with backoff while the
//! account's later messages wait; 4xx is a permanent rejection, logged and counted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::reply::AgentReply;
use super::{Delivery, SinkError};
use crate::envelope::Envelope;
use crate::rpc::truncate_chars;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

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
        let mut delay = FIRST_RETRY;
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
                Err(err) if err.is_timeout() => "timed out".to_string(),
                Err(err) if err.is_connect() => "cannot connect".to_string(),
                Err(err) => err.without_url().to_string(),
            };
            warn!(id = %envelope.id, "webhook delivery failed ({problem}); retrying in {:.0} s", delay.as_secs_f64());
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(SinkError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}

//! The optional HTTP control API (`bridge.http`): send through an account, read the bridge's status and
//! scrape its metrics, behind a bearer token.
//!
//! The server knows nothing about accounts or sessions: it talks to the rest of the bridge through
//! the [`Control`] trait, so it can be tested (and replaced) on its own.
//!
//! Routes, all requiring `Authorization: Bearer <token>`:
//! - `POST /v1/send` with a JSON [`SendRequest`] → 200 and a [`SendResponse`];
//! - `GET /v1/status` → the JSON of [`Control::status`];
//! - `GET /metrics` → [`Metrics::render`] as `text/plain; version=0.0.4`.
//!
//! Every error is a JSON object `{"error": "<one line>"}`.

mod auth;
mod limits;
pub mod metrics;
mod routes;
mod serve;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::HttpConfig;
pub use auth::{MIN_TOKEN_CHARS, TokenProblem};
pub use limits::{HEADER_TIMEOUT, IDLE_TIMEOUT, Limits, MAX_CONNECTIONS};
pub use metrics::Metrics;

/// Largest accepted request body; a send request is a few hundred bytes, so anything near this is
/// a mistake or abuse, answered with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long requests still in flight may finish after shutdown was asked for; a client that keeps a
/// connection busy must not hold the bridge's exit hostage.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Body of `POST /v1/send`.
#[derive(Debug, Clone, serde::Deserialize)]
// Unknown fields are refused so that a misspelt `reply_to` or `media` fails loudly instead of
// sending something other than what was asked.
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Account to send through; `None` means the default account.
    pub account: Option<String>,
    /// Target in the send grammar (`+14155551212`, `chat_id:42`, …).
    pub to: String,
    pub text: Option<String>,
    /// Local paths of files to attach.
    #[serde(default)]
    pub media: Vec<String>,
    /// Message guid to reply to.
    pub reply_to: Option<String>,
}

/// Answer of a successful `POST /v1/send`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendResponse {
    /// The account that sent (resolved when the request named none).
    pub account: String,
    /// Number of `imsg send` calls made (chunks and attachments each count).
    pub sent: usize,
    pub message_ids: Vec<String>,
}

/// Why the bridge did not send; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// 400: the request cannot be sent as asked (bad target, unreadable file, …).
    #[error("{0}")]
    BadRequest(String),
    /// 404: unknown account.
    #[error("{0}")]
    NotFound(String),
    /// 503: the account exists but is not connected.
    #[error("{0}")]
    Unavailable(String),
    /// 502: imsg refused the send.
    #[error("{0}")]
    Failed(String),
}

/// What the HTTP server needs from the rest of the bridge.
pub trait Control: Send + Sync + 'static {
    /// Send through an account; the request is already validated (`to` non-empty, text or media).
    fn send(&self, request: SendRequest) -> impl Future<Output = Result<SendResponse, ControlError>> + Send;

    /// The bridge's status: accounts, connection state, host key fingerprint, cursor, counters.
    fn status(&self) -> serde_json::Value;
}

/// Why the control API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "control API: environment variable {var} (bridge.http.tokenEnv) {problem}; set it to a bearer \
         token of at least {MIN_TOKEN_CHARS} characters"
    )]
    Token { var: String, problem: TokenProblem },
    #[error("control API: refusing a bearer token that {0}")]
    WeakToken(TokenProblem),
    #[error("control API: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("control API: {0}")]
    Serve(#[source] std::io::Error),
}

/// The bearer token from the variable named by `bridge.http.tokenEnv`; refuses to start when it is
/// unset, empty, shorter than [`MIN_TOKEN_CHARS`] or not usable in a header.
pub fn token_from_env(config: &HttpConfig) -> Result<String, HttpError> {
    let var = &config.token_env;
    // `var_os` may panic on such names; the config validator already refuses them, this keeps a
    // hand-built HttpConfig from crashing the bridge.
    let value = if var.is_empty() || var.contains(['=', '\0']) {
        None
    } else {
        std::env::var_os(var)
    };
    auth::check_token(value).map_err(|problem| HttpError::Token {
        var: var.clone(),
        problem,
    })
}

/// Bind `config.listen` and serve until `shutdown` is cancelled.
pub async fn serve(
    config: &HttpConfig,
    token: String,
    control: Arc<impl Control>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: config.listen,
            source,
        })?;
    serve_on(listener, token, control, metrics, shutdown).await
}

/// Serve on an already bound listener (tests bind port 0 and read the port back) until `shutdown`
/// is cancelled; requests in flight then get 5 s (`SHUTDOWN_GRACE`) to finish. Connections are bounded
/// by the default [`Limits`].
pub async fn serve_on(
    listener: TcpListener,
    token: String,
    control: Arc<impl Control>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    serve_limited(listener, token, control, metrics, shutdown, Limits::default()).await
}

/// [`serve_on`] with the given limits (tests shorten them).
async fn serve_limited(
    listener: TcpListener,
    token: String,
    control: Arc<impl Control>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<(), HttpError> {
    // Checked again here because an empty token would let an empty `Bearer ` through.
    auth::check_token(Some(token.clone().into())).map_err(HttpError::WeakToken)?;
    let addr = listener.local_addr().map_err(HttpError::Serve)?;
    let app = routes::router(auth::Expected::new(&token), control, metrics);
    drop(token);

    info!("control API listening on http://{addr}");
    if !addr.ip().is_loopback() {
        warn!(
            "control API listens on {addr}, which is not a loopback address: other machines can reach \
             it and the bearer token crosses the network in clear text"
        );
    }
    serve::run(listener, app, limits, shutdown).await;
    Ok(())
}

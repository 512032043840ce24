//! The control API's router and handlers: send, status, metrics, and JSON answers for everything
//! that goes wrong (bad body, unknown route, wrong method, missing token).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{info, warn};

use super::auth::{Expected, require_bearer};
use super::{BODY_LIMIT, Control, ControlError, Metrics, SendRequest};

/// Content type of the Prometheus text exposition format this server speaks.
pub(super) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers share. Written out instead of derived: `derive(Clone)` would demand `C: Clone`,
/// but only the `Arc` is cloned.
struct AppState<C> {
    control: Arc<C>,
    metrics: Arc<Metrics>,
}

impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        Self {
            control: Arc::clone(&self.control),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The whole API. The bearer check wraps everything, unknown routes included, so an unauthenticated
/// client learns nothing about which paths exist.
pub(super) fn router<C: Control>(expected: Expected, control: Arc<C>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/v1/send", post(send::<C>))
        .route("/v1/status", get(status::<C>))
        .route("/metrics", get(render_metrics::<C>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(AppState { control, metrics })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(Arc::new(expected), require_bearer))
}

/// `{"error": message}` with `status`; the message is folded onto one line so that clients (and
/// logs of clients) never get a multi-line error.
pub(super) fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": one_line(message) }))).into_response()
}

/// 401 with the challenge RFC 6750 asks for.
pub(super) fn unauthorized() -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn one_line(message: &str) -> String {
    message
        .split(|c: char| c.is_control())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> Response {
    error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

/// `POST /v1/send`. The body is taken as bytes and parsed here rather than through `Json`, so the
/// content type need not be set (curl's `-d` sends a form type) and every rejection is our JSON.
async fn send<C: Control>(State(state): State<AppState<C>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {BODY_LIMIT} bytes"),
            );
        }
        Err(rejection) => return error_response(rejection.status(), &rejection.body_text()),
    };
    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("invalid send request: {e}")),
    };
    if let Err(message) = validate(&request) {
        return error_response(StatusCode::BAD_REQUEST, message);
    }
    let to = request.to.clone();
    match state.control.send(request).await {
        Ok(response) => {
            info!(account = %response.account, to = %to, sent = response.sent, "control API send");
            (StatusCode::OK, Json(response)).into_response()
        }
        Err(e) => {
            let status = match &e {
                ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                ControlError::Failed(_) => StatusCode::BAD_GATEWAY,
            };
            warn!(to = %to, status = status.as_u16(), "control API send failed: {e}");
            error_response(status, &e.to_string())
        }
    }
}

/// The checks every send needs whatever the account: somewhere to send and something to send.
fn validate(request: &SendRequest) -> Result<(), &'static str> {
    if request.to.trim().is_empty() {
        return Err("`to` is required and must not be empty");
    }
    let has_text = request.text.as_deref().is_some_and(|t| !t.trim().is_empty());
    if !has_text && request.media.is_empty() {
        return Err("`text` or `media` is required");
    }
    if request.media.iter().any(|m| m.trim().is_empty()) {
        return Err("`media` entries must be non-empty paths");
    }
    Ok(())
}

/// `GET /v1/status`.
async fn status<C: Control>(State(state): State<AppState<C>>) -> Response {
    Json(state.control.status()).into_response()
}

/// `GET /metrics`.
async fn render_metrics<C: Control>(State(state): State<AppState<C>>) -> Response {
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_folded_onto_one_line() {
        assert_eq!(one_line("a\nb\r\n\tc"), "a b c");
        assert_eq!(one_line("plain"), "plain");
    }
}

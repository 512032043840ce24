//! Bearer-token authentication of the control API: the token's acceptance rules and the middleware
//! that checks `Authorization: Bearer <token>` on every request.

use std::ffi::OsString;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use tracing::debug;

use super::routes::unauthorized;

/// Shortest accepted token: guessing 16 random characters over the network is out of reach, and a
/// shorter value is more likely a placeholder left in a unit file.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why a token was refused at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenProblem {
    #[error("is unset")]
    Unset,
    #[error("is empty")]
    Empty,
    #[error("is not valid UTF-8")]
    NotUnicode,
    // A header value loses surrounding whitespace and cannot carry control characters, so such a
    // token could never match; better to say so at start than to answer 401 forever.
    #[error("contains whitespace or control characters")]
    Unusable,
    #[error("is shorter than {MIN_TOKEN_CHARS} characters")]
    TooShort,
}

/// Accept a token value, or say what is wrong with it (never echoing the value).
pub(super) fn check_token(value: Option<OsString>) -> Result<String, TokenProblem> {
    let value = value.ok_or(TokenProblem::Unset)?;
    let token = value.into_string().map_err(|_| TokenProblem::NotUnicode)?;
    if token.is_empty() {
        Err(TokenProblem::Empty)
    } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(TokenProblem::Unusable)
    } else if token.chars().count() < MIN_TOKEN_CHARS {
        Err(TokenProblem::TooShort)
    } else {
        Ok(token)
    }
}

/// The expected token, kept only as its SHA-256 digest: comparing fixed-size digests in constant
/// time hides both the token's content and its length from timing, and the server holds no copy of
/// the secret that a stray `Debug` could print.
#[derive(Clone)]
pub(super) struct Expected([u8; 32]);

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expected(..)")
    }
}

impl Expected {
    pub(super) fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub(super) fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        constant_time_eq(&self.0, &presented)
    }
}

/// Equality whose running time depends only on the length: no early exit on the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold back into a short-circuiting compare.
    std::hint::black_box(diff) == 0
}

/// The credentials of an `Authorization` value when its scheme is Bearer (case-insensitive, as
/// RFC 9110 says of schemes).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

/// Middleware: pass the request on only with the right bearer token, else 401.
pub(super) async fn require_bearer(
    State(expected): State<Arc<Expected>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    match presented {
        Some(token) if expected.matches(token) => next.run(request).await,
        _ => {
            // Debug only: a scanner hammering the port must not flood the log.
            debug!(
                method = %request.method(),
                path = request.uri().path(),
                with_credentials = presented.is_some(),
                "control API refused a request without the right bearer token"
            );
            unauthorized()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let expected = Expected::new("0123456789abcdef");
        assert!(expected.matches(b"0123456789abcdef"));
        assert!(!expected.matches(b"0123456789abcdeF"));
        assert!(!expected.matches(b"0123456789abcdef0"));
        assert!(!expected.matches(b""));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }

    #[test]
    fn the_debug_form_does_not_show_the_digest() {
        assert_eq!(format!("{:?}", Expected::new("0123456789abcdef")), "Expected(..)");
    }
}

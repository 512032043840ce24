//! Why a send did not go out, typed: the caller decides what to answer (the HTTP API's status, the
//! CLI's exit code) and every message is one line. A send imsg may have carried out before it failed
//! is never retried (docs/agents.md, "Sinks"; docs/differences.md I4).

use std::path::PathBuf;

use super::TargetError;
use crate::media::FileError;
use crate::media::roots::{Caller, RootsError};
use crate::rpc::RpcError;

/// JSON-RPC "internal error": imsg's send failed somewhere after it started (AppleScript, Messages).
pub const INTERNAL_ERROR: i64 = -32603;
/// The other code imsg answers a failed send with: Messages may have taken the message before the
/// failure was reported.
pub const SEND_FAILED: i64 = -32001;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The target does not follow the grammar (docs/channel.md, "Sending").
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// Neither text nor a file.
    #[error("iMessage send requires text or media")]
    Empty,
    #[error("cannot read {}: {reason}", .path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{} is not a regular file", .path.display())]
    NotAFile { path: PathBuf },
    /// Over `mediaMaxMb`, found before anything was uploaded.
    #[error("{} is {size} bytes, over mediaMaxMb ({limit_mb} MB)", .path.display())]
    TooLarge { path: PathBuf, size: u64, limit_mb: u64 },
    /// A file outside `bridge.outboundMediaRoots`, or in a place never sent from (docs/security.md,
    /// "Outbound media roots"); nothing was sent.
    #[error("{refusal}")]
    MediaRefused { caller: Caller, refusal: RootsError },
    /// Staging the file on the Mac failed; nothing was sent.
    #[error("cannot upload {}: {source}", .path.display())]
    Upload { path: PathBuf, source: FileError },
    /// imsg answered the `send` with an error.
    #[error("{source}")]
    Refused {
        code: i64,
        maybe_delivered: bool,
        source: RpcError,
    },
    /// No answer in time: the message may have gone out.
    #[error("{0}")]
    Timeout(RpcError),
    /// The connection went away while the `send` was pending: the message may have gone out.
    #[error("{0}")]
    ConnectionLost(RpcError),
    /// There was no connection to send over: nothing went out.
    #[error("{0}")]
    NotConnected(RpcError),
    /// imsg answered with something that is not a send result: it most likely sent the message.
    #[error("{0}")]
    BadAnswer(RpcError),
    /// The last check before sending said no (a NATS reply another bridge already took): nothing
    /// was sent.
    #[error("held back: {0}")]
    Held(String),
}

impl SendError {
    /// Whether the message may have reached Messages although the send failed; such a send is never
    /// retried, or the recipient could get it twice.
    pub fn maybe_delivered(&self) -> bool {
        match self {
            Self::Refused { maybe_delivered, .. } => *maybe_delivered,
            Self::Timeout(_) | Self::ConnectionLost(_) | Self::BadAnswer(_) => true,
            Self::BadTarget(_)
            | Self::Empty
            | Self::Unreadable { .. }
            | Self::NotAFile { .. }
            | Self::TooLarge { .. }
            | Self::MediaRefused { .. }
            | Self::Upload { .. }
            | Self::NotConnected(_)
            | Self::Held(_) => false,
        }
    }
}

impl SendError {
    /// What the roots check of `caller` came to: a refusal, or a file that cannot be read.
    pub fn from_roots(caller: Caller, err: RootsError) -> Self {
        match err {
            RootsError::Unreadable { path, reason } => Self::Unreadable {
                path: path.into(),
                reason,
            },
            refusal => Self::MediaRefused { caller, refusal },
        }
    }

    /// The caller and the metric reason of a refused file.
    pub fn media_refusal(&self) -> Option<(Caller, &'static str)> {
        match self {
            Self::MediaRefused { caller, refusal } => refusal.reason().map(|reason| (*caller, reason)),
            _ => None,
        }
    }
}

impl From<RpcError> for SendError {
    fn from(err: RpcError) -> Self {
        match err {
            RpcError::Remote { code, ref data, .. } => Self::Refused {
                code,
                maybe_delivered: (code == INTERNAL_ERROR || code == SEND_FAILED)
                    && !not_started(data.as_ref()),
                source: err,
            },
            RpcError::Timeout { .. } => Self::Timeout(err),
            RpcError::Closed { .. } => Self::ConnectionLost(err),
            RpcError::NotRunning { .. } | RpcError::Write { .. } => Self::NotConnected(err),
            RpcError::BadResult { .. } => Self::BadAnswer(err),
        }
    }
}

/// The delivery object current imsg puts in a send's error (docs/agents.md: a failed send).
#[derive(Debug, serde::Deserialize)]
struct Delivery {
    #[serde(default)]
    retry_safe: bool,
    #[serde(default)]
    disposition: String,
}

/// Whether imsg says the send never started (`disposition: "not_started"`, `retry_safe: true`):
/// then nothing went out, whatever the code; without that object the code decides.
fn not_started(data: Option<&serde_json::Value>) -> bool {
    data.and_then(|data| <Delivery as serde::Deserialize>::deserialize(data).ok())
        .is_some_and(|d| d.retry_safe && d.disposition == "not_started")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::ExitInfo;

    fn remote(code: i64) -> RpcError {
        RpcError::Remote {
            code,
            message: "send failed".into(),
            data: None,
        }
    }

    #[test]
    fn an_imsg_error_becomes_a_typed_send_error_that_says_whether_it_may_have_gone_out() {
        let timeout = RpcError::Timeout {
            method: "send".into(),
        };
        let closed = RpcError::Closed {
            exit: ExitInfo::Code(1),
            stderr: vec![],
        };
        let not_running = RpcError::NotRunning { stderr: vec![] };
        let write = RpcError::Write {
            detail: "broken pipe".into(),
        };
        let bad = RpcError::BadResult {
            method: "send".into(),
            detail: "x".into(),
        };
        let cases = [
            (remote(INTERNAL_ERROR), true, "send failed: code=-32603"),
            (remote(SEND_FAILED), true, "send failed: code=-32001"),
            (remote(-32602), false, "send failed: code=-32602"),
            (timeout, true, "imsg rpc timeout (send)"),
            (closed, true, "imsg rpc exited (code 1)"),
            (not_running, false, "imsg rpc not running"),
            (write, false, "imsg rpc write failed: broken pipe"),
            (bad, true, "imsg rpc returned an unexpected result for send: x"),
        ];
        for (rpc, maybe, text) in cases {
            let err = SendError::from(rpc);
            assert_eq!(err.maybe_delivered(), maybe, "{err:?}");
            assert_eq!(err.to_string(), text);
        }
        let before_dispatch = RpcError::Remote {
            code: INTERNAL_ERROR,
            message: "Delivery failed before dispatch".into(),
            data: Some(
                serde_json::json!({"retry_safe": true, "disposition": "not_started", "detail": "-1743"}),
            ),
        };
        assert!(
            !SendError::from(before_dispatch).maybe_delivered(),
            "imsg says it never started"
        );
        let unknown = RpcError::Remote {
            code: SEND_FAILED,
            message: "Delivery outcome unknown".into(),
            data: Some(serde_json::json!({"retry_safe": false, "disposition": "may_have_completed"})),
        };
        assert!(SendError::from(unknown).maybe_delivered());
        assert!(matches!(
            SendError::from(remote(SEND_FAILED)),
            SendError::Refused {
                code: SEND_FAILED,
                ..
            }
        ));
    }

    #[test]
    fn a_refused_file_keeps_its_caller_and_reason_and_an_unreadable_one_is_a_plain_file_error() {
        let forbidden = RootsError::Forbidden {
            path: "/proc/self/environ".into(),
            place: "/proc".into(),
        };
        let err = SendError::from_roots(Caller::Agent, forbidden);
        assert_eq!(err.media_refusal(), Some((Caller::Agent, "forbidden")));
        assert_eq!(
            err.to_string(),
            "refusing to send /proc/self/environ: files under /proc are never sent"
        );
        assert!(!err.maybe_delivered());
        let outside = RootsError::Outside {
            path: "/etc/shadow".into(),
            roots: "/srv/media".into(),
        };
        let err = SendError::from_roots(Caller::Api, outside);
        assert_eq!(err.media_refusal(), Some((Caller::Api, "outside_roots")));
        let missing = RootsError::Unreadable {
            path: "/tmp/a.jpg".into(),
            reason: "No such file or directory (os error 2)".into(),
        };
        let err = SendError::from_roots(Caller::Api, missing);
        assert!(matches!(err, SendError::Unreadable { .. }), "{err:?}");
        assert_eq!(err.media_refusal(), None);
    }

    #[test]
    fn file_errors_name_the_file_on_one_line() {
        let path = PathBuf::from("/tmp/a.jpg");
        let cases = [
            (
                SendError::TooLarge {
                    path: path.clone(),
                    size: 9,
                    limit_mb: 1,
                },
                "/tmp/a.jpg is 9 bytes, over mediaMaxMb (1 MB)",
            ),
            (
                SendError::NotAFile { path: path.clone() },
                "/tmp/a.jpg is not a regular file",
            ),
            (
                SendError::Upload {
                    path: path.clone(),
                    source: FileError::TooLarge { limit: 8 },
                },
                "cannot upload /tmp/a.jpg: larger than the limit of 8 bytes",
            ),
            (SendError::Empty, "iMessage send requires text or media"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
            assert!(!err.maybe_delivered());
        }
    }
}

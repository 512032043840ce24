//! Errors of the JSON-RPC client, with the texts operators already know from OpenClaw's logs.

use serde_json::Value;

/// How the `imsg rpc` peer ended, as far as the transport could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    /// Exit status of the process (or the remote command over SSH).
    Code(i32),
    /// Killed by a signal (number, or the SSH signal name's number when known).
    Signal(i32),
    /// The stream ended but no status was reported (yet).
    Unknown,
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// No answer within the request's timeout; a late answer is ignored.
    #[error("imsg rpc timeout ({method})")]
    Timeout { method: String },
    /// The client was already closed when the request was made.
    #[error("imsg rpc not running{}", stderr_suffix(.stderr))]
    NotRunning { stderr: Vec<String> },
    /// The peer went away while the request was pending.
    #[error("{}{}", closed_text(*.exit), stderr_suffix(.stderr))]
    Closed { exit: ExitInfo, stderr: Vec<String> },
    /// Writing the request failed (broken pipe, closed channel).
    #[error("imsg rpc write failed: {detail}")]
    Write { detail: String },
    /// The server answered with a JSON-RPC error object.
    #[error("{}", remote_text(.message, *.code, .data.as_ref()))]
    Remote {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The answer had an unexpected shape for the method.
    #[error("imsg rpc returned an unexpected result for {method}: {detail}")]
    BadResult { method: String, detail: String },
}

impl RpcError {
    /// The JSON-RPC error code when the server answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            RpcError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the connection itself is gone (the caller should reconnect rather than retry).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            RpcError::Closed { .. } | RpcError::NotRunning { .. } | RpcError::Write { .. }
        )
    }
}

/// `imsg rpc exited (code N)`, `imsg rpc exited (signal S)` or `imsg rpc closed`, as upstream.
fn closed_text(exit: ExitInfo) -> String {
    match exit {
        ExitInfo::Code(code) if code != 0 => format!("imsg rpc exited (code {code})"),
        ExitInfo::Signal(signal) => format!("imsg rpc exited (signal {signal})"),
        ExitInfo::Code(_) | ExitInfo::Unknown => "imsg rpc closed".to_string(),
    }
}

/// Quote the last stderr lines: they carry the Full Disk Access banner and other remote diagnostics.
fn stderr_suffix(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    format!("; stderr: {}", lines.join(" | "))
}

/// `<message>[: code=<code>][ <data>]`, upstream's format for remote errors.
fn remote_text(message: &str, code: i64, data: Option<&Value>) -> String {
    let message = if message.is_empty() {
        "imsg rpc error"
    } else {
        message
    };
    let data = match data {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => format!(" {s}"),
        Some(other) => format!(" {other}"),
    };
    format!("{message}: code={code}{data}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_close_errors_like_upstream() {
        let closed = |exit| RpcError::Closed { exit, stderr: vec![] }.to_string();
        assert_eq!(closed(ExitInfo::Code(1)), "imsg rpc exited (code 1)");
        assert_eq!(closed(ExitInfo::Signal(9)), "imsg rpc exited (signal 9)");
        assert_eq!(closed(ExitInfo::Code(0)), "imsg rpc closed");
        assert_eq!(closed(ExitInfo::Unknown), "imsg rpc closed");
    }

    #[test]
    fn quotes_stderr_in_close_errors() {
        let err = RpcError::Closed {
            exit: ExitInfo::Code(1),
            stderr: vec!["Permission Error".into(), "grant Full Disk Access".into()],
        };
        assert_eq!(
            err.to_string(),
            "imsg rpc exited (code 1); stderr: Permission Error | grant Full Disk Access"
        );
    }

    #[test]
    fn formats_remote_errors_with_code_and_data() {
        let err = |data| RpcError::Remote {
            code: -32602,
            message: "Invalid params".into(),
            data,
        };
        assert_eq!(
            err(Some(json!("chat_id is required"))).to_string(),
            "Invalid params: code=-32602 chat_id is required"
        );
        assert_eq!(err(None).to_string(), "Invalid params: code=-32602");
        assert_eq!(
            err(Some(json!({"retryable": true}))).to_string(),
            "Invalid params: code=-32602 {\"retryable\":true}"
        );
    }
}

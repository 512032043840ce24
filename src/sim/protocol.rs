//! JSON-RPC 2.0 framing of `imsg rpc`: validating request lines and building response, error and
//! notification lines. Pure: the server in `rpc` does the I/O.

use serde_json::{Map, Value, json};

use crate::sim::Dialect;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const SERVER_BUSY: i64 = -32000;
pub const DATABASE_UNAVAILABLE: i64 = -32002;
pub const BRIDGE_UNAVAILABLE: i64 = -32003;
pub const DELIVERY_UNKNOWN: i64 = -32001;

/// How far a failed send got, as imsg's `error.data.disposition` says it (docs/simulator.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Nothing was handed to Messages: a retry cannot duplicate the message.
    NotStarted,
    /// Messages may have sent it: a retry may duplicate the message.
    MayHaveCompleted,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::NotStarted => "not_started",
            Disposition::MayHaveCompleted => "may_have_completed",
        }
    }

    /// imsg sets `retry_safe` from the disposition alone.
    pub fn retry_safe(self) -> bool {
        self == Disposition::NotStarted
    }
}

/// A JSON-RPC error object: code, the fixed message of that code, and `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: &'static str,
    pub data: Option<Value>,
}

impl RpcError {
    fn new(code: i64, message: &'static str, data: Value) -> Self {
        RpcError {
            code,
            message,
            data: Some(data),
        }
    }

    pub fn parse(detail: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, "Parse error", Value::String(detail.into()))
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, "Invalid Request", Value::String(detail.into()))
    }

    /// `data` is the method name.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, "Method not found", Value::String(method.into()))
    }

    pub fn invalid_params(detail: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, "Invalid params", Value::String(detail.into()))
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, "Internal error", Value::String(detail.into()))
    }

    pub fn server_busy(detail: impl Into<String>) -> Self {
        Self::new(SERVER_BUSY, "Server busy", Value::String(detail.into()))
    }

    /// Strict servers report an unreadable chat.db as a retryable resource error.
    pub fn database_unavailable(path: &str, detail: impl Into<String>) -> Self {
        Self::new(
            DATABASE_UNAVAILABLE,
            "Database unavailable",
            json!({"path": path, "detail": detail.into(), "retryable": true}),
        )
    }

    pub fn bridge_unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            BRIDGE_UNAVAILABLE,
            "Bridge unavailable",
            json!({"detail": detail.into(), "retryable": true}),
        )
    }

    /// A failed AppleScript send with imsg's delivery data: `-32603 Delivery failed before dispatch`
    /// when nothing started, `-32001 Delivery outcome unknown` otherwise.
    pub fn delivery(disposition: Disposition, detail: impl Into<String>) -> Self {
        let (code, message) = match disposition {
            Disposition::NotStarted => (INTERNAL_ERROR, "Delivery failed before dispatch"),
            Disposition::MayHaveCompleted => (DELIVERY_UNKNOWN, "Delivery outcome unknown"),
        };
        Self::new(
            code,
            message,
            json!({
                "retry_safe": disposition.retry_safe(),
                "disposition": disposition.as_str(),
                "transport": "applescript",
                "operation": "send",
                "detail": detail.into(),
            }),
        )
    }

    /// `data` as a one-line string, for CLI output.
    pub fn detail(&self) -> String {
        match &self.data {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("detail")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| self.message.to_string()),
            _ => self.message.to_string(),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("code".into(), json!(self.code));
        m.insert("message".into(), json!(self.message));
        if let Some(data) = &self.data {
            m.insert("data".into(), data.clone());
        }
        Value::Object(m)
    }
}

impl From<crate::sim::params::ParamError> for RpcError {
    fn from(e: crate::sim::params::ParamError) -> Self {
        RpcError::invalid_params(e.0)
    }
}

/// A valid request line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None` for a client notification (no `id` member); `Some(Value::Null)` for `"id": null`.
    pub id: Option<Value>,
    pub method: String,
    pub params: Option<Value>,
}

/// A line that is not a valid request; `id` is what the error response would carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// `None` when the line was a well-formed notification (strict servers then stay silent).
    pub id: Option<Value>,
    pub error: RpcError,
}

/// Validate one non-blank line as a request, by the rules of the dialect (docs/simulator.md).
pub fn parse_request(line: &str, dialect: Dialect) -> Result<Request, Rejected> {
    let reject_null = |error| Rejected {
        id: Some(Value::Null),
        error,
    };
    let value: Value = serde_json::from_str(line).map_err(|e| reject_null(RpcError::parse(e.to_string())))?;
    let Value::Object(mut obj) = value else {
        return Err(reject_null(RpcError::invalid_request(
            "request must be an object",
        )));
    };
    let id = obj.remove("id");
    if dialect.is_strict()
        && id
            .as_ref()
            .is_some_and(|v| !(v.is_string() || v.is_number() || v.is_null()))
    {
        return Err(reject_null(RpcError::invalid_request(
            "id must be a string, a number or null",
        )));
    }
    let reject = |error| Rejected {
        id: id.clone(),
        error,
    };
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        None if dialect == Dialect::Baseline => {}
        _ => return Err(reject(RpcError::invalid_request("jsonrpc must be 2.0"))),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(reject(RpcError::invalid_request("method is required"))),
    };
    let params = obj.remove("params");
    Ok(Request { id, method, params })
}

/// `{"jsonrpc":"2.0","id":…,"result":…}`.
pub fn response_line(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

/// `{"jsonrpc":"2.0","id":…,"error":{…}}`.
pub fn error_line(id: &Value, error: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()}).to_string()
}

/// `{"jsonrpc":"2.0","method":…,"params":…}` (server → client, no id).
pub fn notification_line(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Request, Rejected>) -> (Option<Value>, i64, Value) {
        let rej = r.unwrap_err();
        (rej.id, rej.error.code, rej.error.data.unwrap())
    }

    #[test]
    fn accepts_a_request_and_a_notification() {
        let r = parse_request(r#"{"jsonrpc":"2.0","id":"1","method":"status"}"#, Dialect::Strict).unwrap();
        assert_eq!(r.id, Some(json!("1")));
        assert_eq!(r.params, None);
        let n = parse_request(
            r#"{"jsonrpc":"2.0","method":"status","params":{}}"#,
            Dialect::Strict,
        )
        .unwrap();
        assert_eq!(n.id, None);
    }

    #[test]
    fn answers_unparsable_lines_with_a_null_id_parse_error() {
        let (id, c, _) = code(parse_request("{nope", Dialect::Strict));
        assert_eq!((id, c), (Some(Value::Null), PARSE_ERROR));
    }

    #[test]
    fn requires_an_object_a_version_and_a_method() {
        let (id, c, d) = code(parse_request("[1]", Dialect::Baseline));
        assert_eq!(
            (id, c, d),
            (
                Some(Value::Null),
                INVALID_REQUEST,
                json!("request must be an object")
            )
        );
        let (id, c, d) = code(parse_request(r#"{"id":3,"method":"x"}"#, Dialect::Strict));
        assert_eq!(
            (id, c, d),
            (Some(json!(3)), INVALID_REQUEST, json!("jsonrpc must be 2.0"))
        );
        let (_, c, d) = code(parse_request(
            r#"{"jsonrpc":"2.0","id":3,"method":""}"#,
            Dialect::Strict,
        ));
        assert_eq!((c, d), (INVALID_REQUEST, json!("method is required")));
        let (_, c, _) = code(parse_request(
            r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
            Dialect::Strict,
        ));
        assert_eq!(c, INVALID_REQUEST);
    }

    #[test]
    fn lets_baseline_requests_omit_the_version_but_not_get_it_wrong() {
        assert!(parse_request(r#"{"id":3,"method":"x"}"#, Dialect::Baseline).is_ok());
        let (_, c, _) = code(parse_request(
            r#"{"jsonrpc":"1.0","id":3,"method":"x"}"#,
            Dialect::Baseline,
        ));
        assert_eq!(c, INVALID_REQUEST);
    }

    #[test]
    fn builds_lines_with_the_fixed_messages() {
        let line = error_line(&json!(7), &RpcError::method_not_found("nope"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"Method not found","data":"nope"}})
        );
        let v: Value =
            serde_json::from_str(&notification_line("message", json!({"subscription":1}))).unwrap();
        assert!(v.get("id").is_none());
    }
}

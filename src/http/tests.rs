//! End-to-end tests of the control API: a real server on 127.0.0.1:0, a fake `Control`, and a
//! minimal HTTP/1.1 client over a plain TCP stream (so no client crate is needed).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;

const TOKEN: &str = "s3cret-token-0123456789";

/// Records every send and answers by account name: `default` (or none) succeeds, `offline` is not
/// connected, `refused` is refused by imsg, `picky` finds the target bad, anything else is unknown.
struct FakeControl {
    requests: Mutex<Vec<SendRequest>>,
    metrics: Arc<Metrics>,
}

impl Control for FakeControl {
    async fn send(&self, request: SendRequest) -> Result<SendResponse, ControlError> {
        let account = request.account.clone().unwrap_or_else(|| "default".to_owned());
        self.requests.lock().unwrap().push(request);
        match account.as_str() {
            "default" => {
                self.metrics.inc_sends(&account);
                Ok(SendResponse {
                    account,
                    sent: 1,
                    message_ids: vec!["msg-1".to_owned()],
                })
            }
            "offline" => Err(ControlError::Unavailable(format!(
                "account {account} is not connected"
            ))),
            "refused" => Err(ControlError::Failed(
                "imsg send failed:\nchat not found".to_owned(),
            )),
            "picky" => Err(ControlError::BadRequest("bad target".to_owned())),
            _ => Err(ControlError::NotFound(format!("unknown account {account}"))),
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({"accounts": [{"id": "default", "connected": true, "cursor": 1979}]})
    }
}

/// A running server and what the tests need to poke at it.
struct Harness {
    addr: SocketAddr,
    control: Arc<FakeControl>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), HttpError>>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(Limits::default()).await
    }

    async fn start_with(limits: Limits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let control = Arc::new(FakeControl {
            requests: Mutex::new(Vec::new()),
            metrics: metrics.clone(),
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_limited(
            listener,
            TOKEN.to_owned(),
            control.clone(),
            metrics.clone(),
            shutdown.clone(),
            limits,
        ));
        Self {
            addr,
            control,
            metrics,
            shutdown,
            task,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        request(self.addr, "GET", path, auth(token), None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        request(self.addr, "POST", path, auth(token), Some(body.as_bytes())).await
    }

    fn sent(&self) -> Vec<SendRequest> {
        self.control.requests.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "server did not stop cleanly: {result:?}"
        );
    }
}

fn auth(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

/// A parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_slice(&self.body).unwrap()
    }

    fn error(&self) -> String {
        let json = self.json();
        let message = json["error"].as_str().unwrap().to_owned();
        assert_eq!(
            json.as_object().unwrap().len(),
            1,
            "only `error` expected: {json}"
        );
        assert!(!message.contains('\n'), "multi-line error: {message:?}");
        message
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// One request on a fresh connection with `Connection: close`, so the response ends at EOF.
/// The body is written from a separate task while the response is read: a server that answers
/// early (413) must not deadlock against a client still writing.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Option<&[u8]>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(value) = authorization {
        head.push_str(&format!("Authorization: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    let writing = tokio::spawn(async move {
        // The server may close before reading everything; that is its right, not a test failure.
        let _ = writer.write_all(&bytes).await;
        writer
    });

    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            // A reset after the response arrived still leaves us a complete response to parse.
            Ok(Err(e)) if !raw.is_empty() => {
                eprintln!("read ended with {e} after {} bytes", raw.len());
                break;
            }
            Ok(Err(e)) => panic!("read failed before any response: {e}"),
            Err(_) => panic!("no response within 5 s; got {:?}", String::from_utf8_lossy(&raw)),
        }
    }
    drop(writing.await);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)
    } else if let Some(length) = reply.header("content-length") {
        let length: usize = length.parse().unwrap();
        assert!(rest.len() >= length, "body shorter than Content-Length");
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Reply { body, ..reply }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_field = std::str::from_utf8(&rest[..line_end]).unwrap();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn assert_unauthorized(reply: &Reply) {
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(reply.error(), "missing or wrong bearer token");
}

#[tokio::test]
async fn every_route_refuses_a_request_without_a_token_with_401() {
    let h = Harness::start().await;
    assert_unauthorized(&h.get("/v1/status", None).await);
    assert_unauthorized(&h.get("/metrics", None).await);
    assert_unauthorized(&h.post("/v1/send", None, r#"{"to":"+1555","text":"hi"}"#).await);
    // Unknown paths too: without the token nobody learns which routes exist.
    assert_unauthorized(&h.get("/nope", None).await);
    assert!(h.sent().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_wrong_token_or_another_scheme_is_refused_with_401() {
    let h = Harness::start().await;
    assert_unauthorized(&h.get("/v1/status", Some("s3cret-token-012345678")).await);
    assert_unauthorized(&h.get("/v1/status", Some(&format!("{TOKEN}x"))).await);
    assert_unauthorized(&h.get("/v1/status", Some("")).await);
    let basic = request(h.addr, "GET", "/v1/status", Some(format!("Basic {TOKEN}")), None).await;
    assert_unauthorized(&basic);
    let reply = h
        .post(
            "/v1/send",
            Some("wrong-token-wrong-token"),
            r#"{"to":"+1555","text":"hi"}"#,
        )
        .await;
    assert_unauthorized(&reply);
    assert!(h.sent().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_valid_send_reaches_the_control_and_returns_its_answer() {
    let h = Harness::start().await;
    let body = r#"{"to":"chat_id:42","text":"hello","media":["/tmp/a.jpg"],"reply_to":"GUID-1"}"#;
    let reply = h.post("/v1/send", Some(TOKEN), body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        serde_json::json!({"account": "default", "sent": 1, "message_ids": ["msg-1"]})
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].account, None);
    assert_eq!(sent[0].to, "chat_id:42");
    assert_eq!(sent[0].text.as_deref(), Some("hello"));
    assert_eq!(sent[0].media, ["/tmp/a.jpg"]);
    assert_eq!(sent[0].reply_to.as_deref(), Some("GUID-1"));
    h.stop().await;
}

#[tokio::test]
async fn the_scheme_is_matched_case_insensitively() {
    let h = Harness::start().await;
    let reply = request(h.addr, "GET", "/v1/status", Some(format!("bearer {TOKEN}")), None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    h.stop().await;
}

#[tokio::test]
async fn media_alone_is_enough_to_send() {
    let h = Harness::start().await;
    let reply = h
        .post(
            "/v1/send",
            Some(TOKEN),
            r#"{"account":"default","to":"+1555","media":["/x"]}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(h.sent()[0].text, None);
    h.stop().await;
}

#[tokio::test]
async fn a_send_without_a_target_is_a_400() {
    let h = Harness::start().await;
    let missing = h.post("/v1/send", Some(TOKEN), r#"{"text":"hi"}"#).await;
    assert_eq!(missing.status, 400, "{missing:?}");
    assert!(missing.error().contains("missing field `to`"), "{missing:?}");
    let empty = h
        .post("/v1/send", Some(TOKEN), r#"{"to":"  ","text":"hi"}"#)
        .await;
    assert_eq!(empty.status, 400, "{empty:?}");
    assert_eq!(empty.error(), "`to` is required and must not be empty");
    assert!(h.sent().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_send_with_neither_text_nor_media_is_a_400() {
    let h = Harness::start().await;
    for body in [
        r#"{"to":"+1555"}"#,
        r#"{"to":"+1555","text":""}"#,
        r#"{"to":"+1555","media":[]}"#,
    ] {
        let reply = h.post("/v1/send", Some(TOKEN), body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.error(), "`text` or `media` is required");
    }
    assert!(h.sent().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn malformed_json_and_unknown_fields_are_a_400() {
    let h = Harness::start().await;
    let broken = h.post("/v1/send", Some(TOKEN), r#"{"to":"+1555","#).await;
    assert_eq!(broken.status, 400, "{broken:?}");
    assert!(broken.error().starts_with("invalid send request: "));
    let typo = h
        .post(
            "/v1/send",
            Some(TOKEN),
            r#"{"to":"+1555","text":"hi","replyTo":"G"}"#,
        )
        .await;
    assert_eq!(typo.status, 400, "{typo:?}");
    assert!(typo.error().contains("unknown field `replyTo`"), "{typo:?}");
    assert!(h.sent().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn an_unknown_account_is_a_404_from_the_control() {
    let h = Harness::start().await;
    let reply = h
        .post(
            "/v1/send",
            Some(TOKEN),
            r#"{"account":"ghost","to":"+1555","text":"hi"}"#,
        )
        .await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.error(), "unknown account ghost");
    assert_eq!(h.sent().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn control_errors_map_to_their_statuses_with_one_line_messages() {
    let h = Harness::start().await;
    let cases = [
        ("offline", 503, "account offline is not connected"),
        ("refused", 502, ""),
        ("picky", 400, ""),
    ];
    for (account, status, message) in cases {
        let body = format!(r#"{{"account":"{account}","to":"+1555","text":"hi"}}"#);
        let reply = h.post("/v1/send", Some(TOKEN), &body).await;
        assert_eq!(reply.status, status, "{account}: {reply:?}");
        let error = reply.error();
        if !message.is_empty() {
            assert_eq!(error, message);
        }
    }
    // The control's two-line message arrives folded.
    let body = r#"{"account":"refused","to":"+1555","text":"hi"}"#;
    assert_eq!(
        h.post("/v1/send", Some(TOKEN), body).await.error(),
        "imsg send failed: chat not found"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_refused_with_413() {
    let h = Harness::start().await;
    let text = "x".repeat(BODY_LIMIT);
    let body = format!(r#"{{"to":"+1555","text":"{text}"}}"#);
    let reply = h.post("/v1/send", Some(TOKEN), &body).await;
    assert_eq!(reply.status, 413, "{:?}", reply.headers);
    assert_eq!(
        reply.error(),
        format!("request body larger than {BODY_LIMIT} bytes")
    );
    assert!(h.sent().is_empty());

    // Just under the limit still goes through.
    let text = "x".repeat(BODY_LIMIT - 100);
    let body = format!(r#"{{"to":"+1555","text":"{text}"}}"#);
    assert_eq!(h.post("/v1/send", Some(TOKEN), &body).await.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_show_a_counter_that_moved() {
    let h = Harness::start().await;
    let before = h.get("/metrics", Some(TOKEN)).await;
    assert_eq!(before.status, 200);
    assert!(
        !before.text().contains("imsg_bridge_sends_total{"),
        "{}",
        before.text()
    );

    h.metrics.set_connected("default", true);
    let sent = h
        .post("/v1/send", Some(TOKEN), r#"{"to":"+1555","text":"hi"}"#)
        .await;
    assert_eq!(sent.status, 200);

    let after = h.get("/metrics", Some(TOKEN)).await;
    assert_eq!(after.status, 200);
    let content_type = after.header("content-type").unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = after.text();
    assert!(
        text.contains("# TYPE imsg_bridge_sends_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\nimsg_bridge_sends_total{account=\"default\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nimsg_bridge_connected{account=\"default\"} 1\n"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test]
async fn status_returns_the_controls_json() {
    let h = Harness::start().await;
    let reply = h.get("/v1/status", Some(TOKEN)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({"accounts": [{"id": "default", "connected": true, "cursor": 1979}]})
    );
    h.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_json() {
    let h = Harness::start().await;
    let unknown = h.get("/v2/send", Some(TOKEN)).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error(), "no such route");
    let wrong_method = h.get("/v1/send", Some(TOKEN)).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.error(), "method not allowed on this route");
    let post_status = h.post("/v1/status", Some(TOKEN), "{}").await;
    assert_eq!(post_status.status, 405);
    h.stop().await;
}

#[tokio::test]
async fn the_server_stops_when_the_shutdown_token_is_cancelled() {
    let h = Harness::start().await;
    let addr = h.addr;
    h.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn serve_on_refuses_a_weak_token() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let control = Arc::new(FakeControl {
        requests: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
    });
    let result = serve_on(
        listener,
        String::new(),
        control,
        metrics,
        CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(result, Err(HttpError::WeakToken(TokenProblem::Empty))),
        "{result:?}"
    );
}

#[tokio::test]
async fn serve_reports_an_address_it_cannot_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = HttpConfig {
        listen: taken.local_addr().unwrap(),
        token_env: "UNUSED".to_owned(),
    };
    let metrics = Arc::new(Metrics::new());
    let control = Arc::new(FakeControl {
        requests: Mutex::new(Vec::new()),
        metrics: metrics.clone(),
    });
    let result = serve(
        &config,
        TOKEN.to_owned(),
        control,
        metrics,
        CancellationToken::new(),
    )
    .await;
    let error = result.unwrap_err();
    assert!(matches!(error, HttpError::Bind { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("control API: cannot listen on {}: ", config.listen))
    );
}

#[test]
fn token_from_env_names_an_unset_variable() {
    // Only the unset case goes through the real environment: setting variables is unsafe in edition
    // 2024 (and denied here); the other cases are checked on the value directly below.
    let config = HttpConfig {
        listen: "127.0.0.1:7777".parse().unwrap(),
        token_env: "IMSG_BRIDGE_TEST_TOKEN_THAT_IS_NEVER_SET".to_owned(),
    };
    let error = token_from_env(&config).unwrap_err();
    assert_eq!(
        error.to_string(),
        "control API: environment variable IMSG_BRIDGE_TEST_TOKEN_THAT_IS_NEVER_SET \
         (bridge.http.tokenEnv) is unset; set it to a bearer token of at least 16 characters"
    );
    assert!(!error.to_string().contains('\n'));
}

#[test]
fn token_from_env_does_not_panic_on_an_impossible_variable_name() {
    for name in ["", "A=B", "A\0B"] {
        let config = HttpConfig {
            listen: "127.0.0.1:7777".parse().unwrap(),
            token_env: name.to_owned(),
        };
        assert!(matches!(
            token_from_env(&config),
            Err(HttpError::Token {
                problem: TokenProblem::Unset,
                ..
            })
        ));
    }
}

#[test]
fn empty_short_and_untransmittable_tokens_are_refused_and_good_ones_kept() {
    use auth::check_token;
    assert_eq!(check_token(None), Err(TokenProblem::Unset));
    assert_eq!(check_token(Some("".into())), Err(TokenProblem::Empty));
    assert_eq!(
        check_token(Some("0123456789abcde".into())),
        Err(TokenProblem::TooShort)
    );
    assert_eq!(
        check_token(Some("0123456789abcdef ".into())),
        Err(TokenProblem::Unusable)
    );
    assert_eq!(
        check_token(Some("0123456789\tabcdef".into())),
        Err(TokenProblem::Unusable)
    );
    assert_eq!(
        check_token(Some("0123456789abcdef".into())),
        Ok("0123456789abcdef".to_owned())
    );
    // Characters, not bytes: 15 two-byte characters are still too short.
    assert_eq!(
        check_token(Some("é".repeat(15).into())),
        Err(TokenProblem::TooShort)
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        let not_utf8 = std::ffi::OsString::from_vec(vec![0xff; 20]);
        assert_eq!(check_token(Some(not_utf8)), Err(TokenProblem::NotUnicode));
    }
}

#[test]
fn a_token_error_is_one_line_naming_the_variable_and_the_problem() {
    let error = HttpError::Token {
        var: "IMSG_BRIDGE_TOKEN".to_owned(),
        problem: TokenProblem::TooShort,
    };
    assert_eq!(
        error.to_string(),
        "control API: environment variable IMSG_BRIDGE_TOKEN (bridge.http.tokenEnv) is shorter than 16 \
         characters; set it to a bearer token of at least 16 characters"
    );
}

#[tokio::test]
async fn an_idle_client_connection_does_not_delay_shutdown() {
    let h = Harness::start().await;
    // Connected but silent, like a keep-alive connection between requests.
    let idle = TcpStream::connect(h.addr).await.unwrap();
    // Let the server accept it before asking it to stop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    h.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// A connection that sent a request line and one header, and never the blank line that ends them.
async fn stalled(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream
}

/// Whether the server closed `stream` (EOF or reset) within `within`; bytes it sends first are skipped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let reading = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(within, reading).await.is_ok()
}

/// One keep-alive `GET /v1/status` on an open connection; returns the status code.
async fn status_on(stream: &mut TcpStream) -> u16 {
    let request = format!("GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The fake status is a small JSON object: the response is complete once its body has arrived.
    while !raw.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw).status
}

fn limits(header_ms: u64, idle_ms: u64, max_connections: usize) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections,
    }
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_at_the_header_timeout() {
    // Long enough that a busy machine does not reach it before the first look.
    let h = Harness::start_with(limits(2_000, 60_000, 16)).await;
    let mut stream = stalled(h.addr).await;
    assert!(
        !closed_within(&mut stream, Duration::from_millis(100)).await,
        "closed before the header timeout"
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)).await,
        "still open long after the header timeout"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_silent_new_connection_is_closed_at_the_header_timeout() {
    let h = Harness::start_with(limits(300, 60_000, 16)).await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    h.stop().await;
}

#[tokio::test]
async fn a_keep_alive_connection_may_wait_longer_than_the_header_timeout_between_requests() {
    let h = Harness::start_with(limits(200, 60_000, 16)).await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    assert_eq!(status_on(&mut stream).await, 200);
    // Five header timeouts without a byte: idle, not stalled in a request.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status_on(&mut stream).await, 200);
    h.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let h = Harness::start_with(limits(60_000, 300, 16)).await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    assert_eq!(status_on(&mut stream).await, 200);
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)).await,
        "idle connection still open long after the idle timeout"
    );
    h.stop().await;
}

#[tokio::test]
async fn at_the_cap_the_longest_stalled_connection_gives_way_to_an_authorised_request() {
    let h = Harness::start_with(limits(60_000, 60_000, 4)).await;
    let mut oldest = stalled(h.addr).await;
    // Accepted in this order: the first is the one stalled longest.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(stalled(h.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let reply = h.get("/v1/status", Some(TOKEN)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        closed_within(&mut oldest, Duration::from_secs(5)).await,
        "the oldest stalled connection is still open"
    );
    for stream in &mut others {
        assert!(
            !closed_within(stream, Duration::from_millis(100)).await,
            "a newer stalled connection was closed"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_stalled_connection_does_not_delay_shutdown() {
    let h = Harness::start().await;
    let mut stream = stalled(h.addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    h.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut stream, Duration::from_secs(2)).await);
}

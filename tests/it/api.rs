//! The HTTP control API and multi-account supervision, end to end: bearer auth, a send through
//! imsg-sim, status showing a broken account backing off while a healthy one keeps delivering, and
//! Prometheus counters that move.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sshd::free_port;
use crate::support::{Bridge, OPEN_ACCESS, PATIENCE, SimMac, imsg_sim_bin};

pub(crate) const TOKEN: &str = "test-token-0123456789abcdef";

/// One HTTP/1.1 request; returns (status, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn status_of(port: u16, account: &str) -> String {
    let (_, body) = http(port, "GET", "/v1/status", Some(TOKEN), None);
    let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    status["accounts"][account]["status"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The value of one sample line in Prometheus text.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_control_api_sends_reports_and_counts_while_a_broken_account_backs_off() {
    let mac = SimMac::new();
    let port = free_port();
    let dead = free_port();
    let config = mac.dir.path().join("config.json5");
    std::fs::write(
        &config,
        format!(
            "{{ channels: {{ imessage: {{ {OPEN_ACCESS} defaultAccount: \"good\", accounts: {{
                 good: {{ cliPath: {cli:?}, dbPath: {db:?} }},
                 broken: {{ ssh: {{ host: \"127.0.0.1\", port: {dead}, user: \"nobody\", connectTimeoutMs: 2000 }} }} }} }} }},
               bridge: {{ stateDir: {state:?}, http: {{ listen: \"127.0.0.1:{port}\", tokenEnv: \"IMSG_TEST_TOKEN\" }} }} }}",
            cli = imsg_sim_bin().display().to_string(),
            db = mac.db.display().to_string(),
            state = mac.state_dir().display().to_string(),
        ),
    )
    .unwrap();
    let bridge = Bridge::start_with_env(&config, &["run"], &[("IMSG_TEST_TOKEN", TOKEN)]);
    bridge.wait_for_log("control API listening");
    bridge.wait_for_log("watching for messages");

    assert_eq!(http(port, "GET", "/v1/status", None, None).0, 401);
    assert_eq!(
        http(port, "GET", "/v1/status", Some("wrong-token-0123456789"), None).0,
        401
    );
    let deadline = Instant::now() + PATIENCE;
    while status_of(port, "broken") != "backing_off" {
        assert!(
            Instant::now() < deadline,
            "broken never backed off: {}",
            bridge.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_of(port, "good"), "connected");

    let (code, body) = http(
        port,
        "POST",
        "/v1/send",
        Some(TOKEN),
        Some(r#"{"account":"good","to":"+14155551212","text":"hello via the api"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sent["sent"], 1);
    let (code, body) = http(
        port,
        "POST",
        "/v1/send",
        Some(TOKEN),
        Some(r#"{"account":"broken","to":"+1555","text":"x"}"#),
    );
    assert_eq!(code, 503, "a backing-off account says so: {body}");
    let (code, _) = http(
        port,
        "POST",
        "/v1/send",
        Some(TOKEN),
        Some(r#"{"to":"chat_id:abc","text":"x"}"#),
    );
    assert_eq!(code, 400);

    // The healthy account keeps delivering.
    mac.inject("+14155551212", "still here");
    bridge.wait_for_lines(1);
    let (code, metrics) = http(port, "GET", "/metrics", Some(TOKEN), None);
    assert_eq!(code, 200);
    assert_eq!(
        sample(&metrics, "imsg_bridge_sends_total{account=\"good\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "imsg_bridge_reconnects_total{account=\"broken\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(&metrics, "imsg_bridge_messages_in_total{account=\"good\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "imsg_bridge_connected{account=\"good\"}"),
        Some(1.0),
        "{metrics}"
    );
    let history = mac.history_output(1, false);
    assert!(String::from_utf8_lossy(&history.stdout).contains("hello via the api"));
    bridge.stop(15);
}

#[test]
fn run_refuses_to_start_the_api_without_a_token() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "bridge: {",
            "bridge: { http: { listen: \"127.0.0.1:1\", tokenEnv: \"IMSG_TEST_TOKEN_UNSET\" },",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::imsg_bridge_bin())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("IMSG_TEST_TOKEN_UNSET"), "{stderr}");
}

/// Lower a running process's descriptor limit (soft and hard) with util-linux `prlimit`, and check it
/// took: the bridge is started by the shared fixture, so the limit is set right after the spawn,
/// before the control API binds.
fn limit_descriptors(pid: u32, limit: u32) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()
        .expect("prlimit (util-linux) must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert!(line.contains(&format!("{limit}")), "{line}");
}

/// `GET /v1/status` with the token, failing after `within` instead of waiting for ever.
fn status_within(port: u16, within: Duration) -> Result<u16, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(within)).unwrap();
    let request = format!(
        "GET /v1/status HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&head);
    text[9..12]
        .parse()
        .map_err(|_| format!("not a status line: {text:?}"))
}

/// Read until the server closes the connection; `Err` when it is still open at `deadline`.
fn wait_for_close(stream: &mut TcpStream, deadline: Instant) -> Result<(), String> {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("still open".to_owned());
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn stalled_header_connections_neither_starve_an_authorised_request_nor_stay_open() {
    const LIMIT: u32 = 256;
    const STALLED: usize = 300;
    let mac = SimMac::new();
    let port = free_port();
    let config = mac.write_process_config("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "bridge: {",
            &format!("bridge: {{ http: {{ listen: \"127.0.0.1:{port}\", tokenEnv: \"IMSG_TEST_TOKEN\" }},"),
        ),
    )
    .unwrap();
    let bridge = Bridge::start_with_env(&config, &["run"], &[("IMSG_TEST_TOKEN", TOKEN)]);
    limit_descriptors(bridge.pid(), LIMIT);
    bridge.wait_for_log("control API listening");
    bridge.wait_for_log("watching for messages");

    // Each sends a request line and one header but never the blank line that ends the headers.
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let stalled_since = Instant::now();

    let started = Instant::now();
    let answer = status_within(port, Duration::from_secs(1));
    assert_eq!(
        answer,
        Ok(200),
        "authorised status after {:?} with {STALLED} stalled connections; log:\n{}",
        started.elapsed(),
        bridge.stderr().join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    let deadline = stalled_since + Duration::from_secs(30);
    for (i, stream) in stalled.iter_mut().enumerate() {
        if let Err(e) = wait_for_close(stream, deadline) {
            panic!("stalled connection {i} not closed 30 s after it stalled: {e}");
        }
    }
    assert_eq!(status_within(port, Duration::from_secs(5)), Ok(200));
    bridge.stop(15);
}

/// Issue 15 item 10: the API sends files from under `bridge.outboundMediaRoots` (by default the state
/// dir's `media/outbound`) and nothing else; a refusal is a 400 naming the file and the rule, and is
/// counted.
#[test]
fn the_api_sends_media_only_from_under_the_outbound_roots_and_counts_each_refusal() {
    let mac = SimMac::new();
    let port = free_port();
    let config = mac.dir.path().join("config.json5");
    std::fs::write(
        &config,
        format!(
            "{{ channels: {{ imessage: {{ {OPEN_ACCESS} cliPath: {cli:?}, dbPath: {db:?} }} }},
               bridge: {{ stateDir: {state:?}, http: {{ listen: \"127.0.0.1:{port}\", tokenEnv: \"IMSG_TEST_TOKEN\" }} }} }}",
            cli = imsg_sim_bin().display().to_string(),
            db = mac.db.display().to_string(),
            state = mac.state_dir().display().to_string(),
        ),
    )
    .unwrap();
    let outbound = mac.state_dir().join("media/outbound");
    std::fs::create_dir_all(&outbound).unwrap();
    std::fs::write(outbound.join("ok.txt"), b"fine to send").unwrap();
    let outside = mac.dir.path().join("secret.txt");
    std::fs::write(&outside, b"not for sending").unwrap();
    let bridge = Bridge::start_with_env(&config, &["run"], &[("IMSG_TEST_TOKEN", TOKEN)]);
    bridge.wait_for_log("watching for messages");
    let send = |file: &str| {
        let body = serde_json::json!({"to": "+14155551212", "text": "a file", "media": [file]}).to_string();
        http(port, "POST", "/v1/send", Some(TOKEN), Some(&body))
    };

    let (code, body) = send(outside.to_str().unwrap());
    assert_eq!(code, 400, "{body}");
    let error = serde_json::from_str::<Value>(&body).unwrap()["error"].clone();
    assert_eq!(
        error,
        format!(
            "refusing to send {}: outside bridge.outboundMediaRoots ({}); put the file under a root or add one",
            outside.display(),
            outbound.display()
        ),
        "{body}"
    );
    let (code, body) = send("/proc/self/environ");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("refusing to send /proc/self/environ: files under /proc are never sent"),
        "{body}"
    );
    let (code, body) = send(outbound.join("ok.txt").to_str().unwrap());
    assert_eq!(code, 200, "{body}");

    let (_, metrics) = http(port, "GET", "/metrics", Some(TOKEN), None);
    for reason in ["outside_roots", "forbidden"] {
        let series = format!(
            "imsg_bridge_outbound_media_refused_total{{account=\"default\",caller=\"api\",reason=\"{reason}\"}}"
        );
        assert_eq!(sample(&metrics, &series), Some(1.0), "{series}\n{metrics}");
    }
    let history = mac.history_output(1, true);
    let names: Vec<String> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .flat_map(|m| m["attachments"].as_array().cloned().unwrap_or_default())
        .map(|a| a["transfer_name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, vec!["ok.txt"], "only the file under the root was sent");
    bridge.stop(15);
}

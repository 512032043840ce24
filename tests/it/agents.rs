//! Agent hand-off end to end over imsg-sim: an exec agent whose replies land in the right chats,
//! and a webhook agent that fails for a while (503), rejects one envelope (4xx) and answers with
//! replies — nothing lost, order kept, the same Idempotency-Key on every retry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::Value;

use crate::support::{Bridge, OPEN_ACCESS, PATIENCE, SimMac, imsg_sim_bin};

const SIGTERM: i32 = 15;

fn config_with_agent(mac: &SimMac, agent: &str) -> std::path::PathBuf {
    let path = mac.dir.path().join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, {OPEN_ACCESS} }} }},
           bridge: {{ stateDir: {state:?}, agent: {agent} }} }}",
        cli = imsg_sim_bin().display().to_string(),
        db = mac.db.display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn dm(mac: &SimMac, from: &str, text: &str) -> i64 {
    let spec = InjectSpec {
        from: from.into(),
        text: text.into(),
        ..Default::default()
    };
    inject(&mac.db, &spec).unwrap().chat_id
}

/// Texts we sent into a chat, oldest first.
fn sent_texts(db: &Path, chat_id: i64) -> Vec<String> {
    let out = Command::new(imsg_sim_bin())
        .args([
            "history",
            "--db",
            db.to_str().unwrap(),
            "--chat-id",
            &chat_id.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    let mut rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|m: &Value| m["is_from_me"] == true)
        .collect();
    rows.reverse();
    rows.iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_exec_agent_replies_into_the_right_chats() {
    let mac = SimMac::new();
    let agent = mac.dir.path().join("echo-agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\nwhile IFS= read -r line; do\n  id=$(printf '%s' \"$line\" | sed -n 's/^{\"id\":\"\\([^\"]*\\)\".*/\\1/p')\n  text=$(printf '%s' \"$line\" | sed -n 's/.*,\"text\":\"\\([^\"]*\\)\".*/\\1/p')\n  printf '{\"envelope_id\":\"%s\",\"text\":\"echo: %s\"}\\n' \"$id\" \"$text\"\ndone\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = config_with_agent(
        &mac,
        &format!(
            "{{ kind: \"exec\", command: [{:?}] }}",
            agent.display().to_string()
        ),
    );
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    let alice = dm(&mac, "+15550001111", "hello from alice");
    let bob = dm(&mac, "jane@example.com", "hi from jane");
    wait_until("both replies", || {
        sent_texts(&mac.db, alice).len() == 1 && sent_texts(&mac.db, bob).len() == 1
    });
    assert_eq!(sent_texts(&mac.db, alice), vec!["echo: hello from alice"]);
    assert_eq!(sent_texts(&mac.db, bob), vec!["echo: hi from jane"]);
    bridge.wait_for_log("delivered reply");
    let (code, _) = bridge.stop(SIGTERM);
    assert_eq!(code, Some(0));
    assert!(
        no_echo_of_an_echo(&mac),
        "our replies coming back were not handed to the agent again"
    );
}

/// The exec agent would have answered its own echo with "echo: echo: …"; there must be none.
fn no_echo_of_an_echo(mac: &SimMac) -> bool {
    let out = Command::new(imsg_sim_bin())
        .args([
            "history",
            "--db",
            mac.db.to_str().unwrap(),
            "--chat-id",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).contains("echo: echo:")
}

/// One request as the webhook saw it.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    text: String,
    status: u16,
}

/// A webhook that answers 503 for its first `outage`, then 422 for texts containing "reject"
/// and 200 with a reply otherwise.
fn start_webhook(outage: Duration) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(Mutex::new(None::<Instant>));
    std::thread::spawn({
        let seen = seen.clone();
        move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut key) = (0usize, String::new());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let header = line.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "idempotency-key" => key = value.trim().to_string(),
                        _ => {}
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                let envelope: Value = serde_json::from_slice(&body).unwrap();
                let text = envelope["text"].as_str().unwrap_or_default().to_string();
                let first = *started.lock().unwrap().get_or_insert_with(Instant::now);
                let (status, answer) = if first.elapsed() < outage {
                    (503, String::new())
                } else if text.contains("reject") {
                    (422, "{\"error\":\"not for me\"}".to_string())
                } else {
                    (200, format!("{{\"replies\":[{{\"text\":\"got: {text}\"}}]}}"))
                };
                seen.lock().unwrap().push(Seen { key, text, status });
                let reason = match status {
                    200 => "OK",
                    422 => "Unprocessable Entity",
                    _ => "Service Unavailable",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        }
    });
    (port, seen)
}

#[test]
fn a_webhook_that_fails_for_a_while_loses_nothing_and_keeps_the_order() {
    let mac = SimMac::new();
    let (port, seen) = start_webhook(Duration::from_secs(3));
    let config = config_with_agent(
        &mac,
        &format!("{{ kind: \"webhook\", url: \"http://127.0.0.1:{port}/hook\", timeoutMs: 2000 }}"),
    );
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    let chat = dm(&mac, "+15550001111", "one");
    dm(&mac, "+15550001111", "please reject this");
    dm(&mac, "+15550001111", "three");
    wait_until("the replies", || sent_texts(&mac.db, chat).len() == 2);
    let log = bridge.stderr().join("\n");
    bridge.stop(SIGTERM);
    let seen = seen.lock().unwrap().clone();
    let delivered: Vec<&str> = seen
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.text.as_str())
        .collect();
    assert_eq!(delivered, vec!["one", "three"], "{seen:?}");
    assert!(
        seen.iter().any(|s| s.status == 503),
        "the outage was exercised: {seen:?}"
    );
    // Every retry of "one" carried the same key, and "one" was offered before anything else.
    let one: Vec<&Seen> = seen.iter().filter(|s| s.text == "one").collect();
    assert!(
        one.len() >= 2
            && one
                .iter()
                .all(|s| s.key == one[0].key && s.key.starts_with("imessage:default:")),
        "{one:?}"
    );
    let first_other = seen.iter().position(|s| s.text != "one").unwrap();
    assert!(
        seen[..first_other].iter().all(|s| s.text == "one"),
        "later messages waited: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|s| s.status == 422).count(),
        1,
        "a 4xx is not retried: {seen:?}"
    );
    assert_eq!(sent_texts(&mac.db, chat), vec!["got: one", "got: three"]);
    assert!(
        log.contains("rejected the envelope for good"),
        "the rejection is logged: {log}"
    );
}

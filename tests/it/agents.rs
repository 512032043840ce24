//! Agent hand-off end to end over imsg-sim: an exec agent whose replies land in the right chats,
//! and a webhook agent that fails for a while (503), rejects one envelope (4xx) and answers with
//! replies — nothing lost, order kept, the same Idempotency-Key on every retry; and poison messages
//! (a guid with CR/LF, an envelope the agent refuses for good) that must not stall the account
//! (issue 12, item 6).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::Value;

use crate::sshd::free_port;
use crate::support::{Bridge, OPEN_ACCESS, PATIENCE, SimMac, imsg_sim_bin};

const SIGTERM: i32 = 15;
const TOKEN: &str = "test-token-0123456789abcdef";

fn config_with_agent(mac: &SimMac, agent: &str) -> std::path::PathBuf {
    config_with(mac, agent, "")
}

/// The same with more `bridge` keys (`extra_bridge` ends with a comma), such as `http`.
fn config_with(mac: &SimMac, agent: &str, extra_bridge: &str) -> std::path::PathBuf {
    let path = mac.dir.path().join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, {OPEN_ACCESS} }} }},
           bridge: {{ stateDir: {state:?}, {extra_bridge} agent: {agent} }} }}",
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
    let agent = mac.write_echo_agent();
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
    let out = mac.history_output(1, false);
    !String::from_utf8_lossy(&out.stdout).contains("echo: echo:")
}

/// One request as the webhook saw it.
#[derive(Debug, Clone)]
struct Seen {
    key: String,
    id: String,
    text: String,
    status: u16,
}

/// A webhook that answers 503 for its first `outage`, then 422 for texts containing "reject"
/// and 200 with a reply otherwise.
fn start_webhook(outage: Duration) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let started = Mutex::new(None::<Instant>);
    serve_webhook(move |text| {
        let first = *started.lock().unwrap().get_or_insert_with(Instant::now);
        if first.elapsed() < outage {
            (503, String::new())
        } else if text.contains("reject") {
            (422, "{\"error\":\"not for me\"}".to_string())
        } else {
            (200, format!("{{\"replies\":[{{\"text\":\"got: {text}\"}}]}}"))
        }
    })
}

/// A real HTTP server on loopback that records every request and answers with `respond(text)`.
fn serve_webhook(respond: impl Fn(&str) -> (u16, String) + Send + 'static) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn({
        let seen = seen.clone();
        move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (key, envelope) = read_request(&stream);
                let text = envelope["text"].as_str().unwrap_or_default().to_string();
                let id = envelope["id"].as_str().unwrap_or_default().to_string();
                let (status, answer) = respond(&text);
                seen.lock().unwrap().push(Seen {
                    key,
                    id,
                    text,
                    status,
                });
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

/// The `Idempotency-Key` header and the JSON body of one request.
fn read_request(stream: &std::net::TcpStream) -> (String, Value) {
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
    (key, serde_json::from_slice(&body).unwrap())
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
    assert!(log.contains("dead-lettered"), "the rejection is logged: {log}");
}

/// Inject a direct message with a chosen guid through `imsg-sim inject --guid`, as a hostile row would be.
fn inject_with_guid(mac: &SimMac, from: &str, text: &str, guid: &str) {
    mac.inject_with(&["--from", from, "--text", text, "--guid", guid]);
}

fn delivered_texts(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|s| s.status == 200)
        .map(|s| s.text.clone())
        .collect()
}

#[test]
fn a_guid_with_crlf_never_stalls_the_webhook_account_nor_forges_a_log_line() {
    let mac = SimMac::new();
    let (port, seen) = serve_webhook(|_| (200, String::new()));
    let config = config_with_agent(
        &mac,
        &format!("{{ kind: \"webhook\", url: \"http://127.0.0.1:{port}/hook\", timeoutMs: 2000 }}"),
    );
    // -vv: the trace `delivering` line quotes the text, so a raw CR/LF in it would reach the log.
    let bridge = Bridge::start(&config, &["-vv", "run"]);
    bridge.wait_for_log("watching for messages");
    inject_with_guid(
        &mac,
        "+15550001111",
        "poison\r\nX-Injected: 2",
        "AB\r\nX-Injected: 1",
    );
    dm(&mac, "+15550001111", "after the poison");
    wait_until("both messages at the webhook", || {
        delivered_texts(&seen).len() >= 2
    });
    let log = bridge.stderr().join("\n");
    bridge.stop(SIGTERM);
    assert_eq!(
        delivered_texts(&seen),
        vec!["poison\r\nX-Injected: 2", "after the poison"]
    );
    let seen = seen.lock().unwrap().clone();
    let poison = &seen[0];
    assert_eq!(poison.key, "imessage:default:AB%0D%0AX-Injected:%201");
    assert_eq!(poison.key, poison.id, "the header is the envelope's id");
    assert!(
        !log.lines().any(|l| l.starts_with("X-Injected")),
        "no forged log line:\n{log}"
    );
    assert!(
        log.contains("poison\\r\\nX-Injected: 2"),
        "the text is logged escaped:\n{log}"
    );
}

#[test]
fn json_logs_stay_one_object_per_line_when_a_message_carries_crlf() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    let bridge = Bridge::start(&config, &["--log-format", "json", "-vv", "run"]);
    bridge.wait_for_log("watching for messages");
    inject_with_guid(
        &mac,
        "+15550001111",
        "poison\r\nX-Injected: 2",
        "AB\r\nX-Injected: 1",
    );
    bridge.wait_for_lines(1);
    bridge.wait_for_log("delivering");
    let log = bridge.stderr();
    bridge.stop(SIGTERM);
    for line in &log {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not a JSON line: {line:?}"
        );
    }
}

/// GET one path of the control API; returns (status, body).
fn api_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn an_envelope_the_sink_can_never_accept_is_dead_lettered() {
    let mac = SimMac::new();
    let (port, seen) = serve_webhook(|text| {
        if text.contains("reject") {
            (422, "{\"error\":\"not for me\"}".to_string())
        } else {
            (200, String::new())
        }
    });
    let api = free_port();
    let config = config_with(
        &mac,
        &format!("{{ kind: \"webhook\", url: \"http://127.0.0.1:{port}/hook\", timeoutMs: 2000 }}"),
        &format!("http: {{ listen: \"127.0.0.1:{api}\", tokenEnv: \"IMSG_TEST_TOKEN\" }},"),
    );
    let bridge = Bridge::start_with_env(&config, &["run"], &[("IMSG_TEST_TOKEN", TOKEN)]);
    bridge.wait_for_log("watching for messages");
    dm(&mac, "+15550001111", "please reject this");
    dm(&mac, "+15550001111", "the next one");
    wait_until("the next message", || {
        delivered_texts(&seen) == vec!["the next one"]
    });
    bridge.wait_for_log("dead-lettered");
    let seen = seen.lock().unwrap().clone();
    let rejected: Vec<&Seen> = seen.iter().filter(|s| s.status == 422).collect();
    assert_eq!(rejected.len(), 1, "a 4xx is not retried: {seen:?}");
    let path = mac
        .state_dir()
        .join("dead-letter/default")
        .join(format!("{}.json", rejected[0].id));
    let letter: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap();
    assert_eq!(letter["version"], 1);
    let reason = letter["reason"].as_str().unwrap();
    assert!(
        reason.contains("422") && reason.contains("not for me"),
        "{reason}"
    );
    assert!(
        letter["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{letter}"
    );
    assert_eq!(letter["envelope"]["id"], rejected[0].id.as_str());
    assert_eq!(letter["envelope"]["text"], "please reject this");
    let (code, metrics) = api_get(api, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l == "imsg_bridge_dead_letters_total{account=\"default\"} 1"),
        "{metrics}"
    );
    bridge.stop(SIGTERM);
}

#[test]
fn a_dead_letter_that_cannot_be_written_holds_the_cursor_until_it_can() {
    let mac = SimMac::new();
    let (port, seen) = serve_webhook(|text| {
        if text.contains("reject") {
            (422, String::new())
        } else {
            (200, String::new())
        }
    });
    let config = config_with(
        &mac,
        &format!("{{ kind: \"webhook\", url: \"http://127.0.0.1:{port}/hook\", timeoutMs: 2000 }}"),
        "",
    );
    // A file where the dead-letter folder belongs: the write fails as on a full or read-only disk.
    std::fs::create_dir_all(mac.state_dir()).unwrap();
    let blocker = mac.state_dir().join("dead-letter");
    std::fs::write(&blocker, b"in the way").unwrap();
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    dm(&mac, "+15550001111", "please reject this");
    dm(&mac, "+15550001111", "the next one");
    bridge.wait_for_log("backing off");
    assert!(
        delivered_texts(&seen).is_empty(),
        "nothing passes the envelope that could not be set aside"
    );
    std::fs::remove_file(&blocker).unwrap();
    wait_until("the next message after the retry", || {
        delivered_texts(&seen) == vec!["the next one"]
    });
    let letters: Vec<_> = std::fs::read_dir(mac.state_dir().join("dead-letter/default"))
        .unwrap()
        .collect();
    assert_eq!(letters.len(), 1, "the rejected envelope was kept, once");
    let log = bridge.stderr().join("\n");
    assert!(log.contains("dead-lettered"), "{log}");
    bridge.stop(SIGTERM);
}

#[test]
fn a_catch_up_cut_short_by_a_reconnect_keeps_its_bound_while_new_rows_arrive() {
    let mac = SimMac::new();
    // A slow agent, so that the catch-up is still going when imsg dies under it.
    let (port, seen) = serve_webhook(|_| {
        std::thread::sleep(Duration::from_millis(4));
        (200, String::new())
    });
    let config = config_with(
        &mac,
        &format!("{{ kind: \"webhook\", url: \"http://127.0.0.1:{port}/hook\", timeoutMs: 5000 }}"),
        "replay: { maxRows: 1500, maxAgeMinutes: 120 },",
    );
    let first = Bridge::start(&config, &["run"]);
    first.wait_for_log("watching for messages");
    first.stop(SIGTERM);
    let backlog = |text: &str, count: u32| {
        let spec = InjectSpec {
            from: "+15550001111".into(),
            text: text.into(),
            count,
            ..Default::default()
        };
        imsg_bridge::sim::db::inject_many(&mac.db, &spec).unwrap();
    };
    // Pages of 500: rows 1..1000 are beyond the bound, 1001..2500 are delivered in three pages
    // (each asked for while the one before is delivered).
    backlog("old", 2500);
    let bridge = Bridge::start(&config, &["run"]);
    wait_until("a hundred of the backlog", || delivered_texts(&seen).len() >= 100);
    // imsg dies during the first delivered page while 1300 new rows arrive: the next session must
    // not let them push the replay floor (1000) over the last page (2001..2500).
    let db = mac.db.display().to_string();
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("imsg-sim rpc --db {db}")])
        .status()
        .unwrap();
    assert!(killed.success(), "the remote imsg was running");
    backlog("new", 1300);
    bridge.wait_for_log("going on with the catch-up a reconnect interrupted");
    wait_until("the backlog and the new rows", || {
        delivered_texts(&seen).len() >= 2800
    });
    let log = bridge.stderr().join("\n");
    bridge.stop(SIGTERM);
    let expected: Vec<String> = (1001..=2500)
        .map(|i| format!("old {i}"))
        .chain((1..=1300).map(|i| format!("new {i}")))
        .collect();
    let got = delivered_texts(&seen);
    assert!(
        got == expected,
        "the newest 1500 of the backlog, then the new rows, once each, in order (got {} texts)\n{log}",
        got.len()
    );
    assert_eq!(
        log.matches("skipped 1000 rows beyond bridge.replay").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_stop_while_the_agent_refuses_keeps_what_it_accepted_from_being_sent_again() {
    let mac = SimMac::new();
    let accepted = Arc::new(Mutex::new(0usize));
    let (port, seen) = serve_webhook({
        let accepted = accepted.clone();
        move |_| {
            let mut n = accepted.lock().unwrap();
            if *n < 100 {
                *n += 1;
                (200, String::new())
            } else {
                (503, String::new())
            }
        }
    });
    let config = config_with(
        &mac,
        &format!("{{ kind: \"webhook\", url: \"http://127.0.0.1:{port}/hook\", timeoutMs: 5000 }}"),
        "",
    );
    let first = Bridge::start(&config, &["run"]);
    first.wait_for_log("watching for messages");
    first.stop(SIGTERM);
    mac.inject_with(&["--from", "+15550001111", "--text", "old", "--count", "400"]);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("webhook delivery failed");
    bridge.stop(SIGTERM);
    let first_pass = delivered_texts(&seen);
    assert_eq!(first_pass.len(), 100, "the agent took 100, then refused");

    *accepted.lock().unwrap() = usize::MIN;
    let again = Bridge::start(&config, &["run"]);
    wait_until("the next message after the restart", || {
        delivered_texts(&seen).len() > 100
    });
    again.stop(SIGTERM);
    let texts = delivered_texts(&seen);
    assert_eq!(
        texts[100], "old 101",
        "the restart goes on after the 100 accepted rows instead of sending them again"
    );
}

/// An exec agent that answers every envelope with three replies: `/proc/self/environ` (never sent,
/// whoever asks), a file outside the roots, and a file under `stateDir/media/outbound`.
fn write_greedy_agent(mac: &SimMac, outside: &Path, inside: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let agent = mac.dir.path().join("greedy-agent.sh");
    let reply = |text: &str, file: &str| {
        format!(
            "  printf '{{\"envelope_id\":\"%s\",\"text\":\"{text}\",\"media\":[\"{file}\"]}}\\n' \"$id\"\n"
        )
    };
    let script = format!(
        "#!/bin/sh\nwhile IFS= read -r line; do\n  id=$(printf '%s' \"$line\" | sed -n 's/^{{\"id\":\"\\([^\"]*\\)\".*/\\1/p')\n{}{}{}done\n",
        reply("environ", "/proc/self/environ"),
        reply("outside", &outside.display().to_string()),
        reply("inside", &inside.display().to_string()),
    );
    std::fs::write(&agent, script).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    agent
}

/// Issue 15 item 10: a prompt-injected agent cannot mail the gateway's environment (its token) or any
/// file outside `bridge.outboundMediaRoots`; each refused reply is dropped with a warning, the reply
/// after it still goes out.
#[test]
fn an_exec_agent_reply_naming_proc_or_a_file_outside_the_roots_is_refused_with_a_warning() {
    let mac = SimMac::new();
    let outside = mac.dir.path().join("secret.txt");
    std::fs::write(&outside, b"not for sending").unwrap();
    let inside = mac.state_dir().join("media/outbound/ok.txt");
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::write(&inside, b"fine").unwrap();
    let agent = write_greedy_agent(&mac, &outside, &inside);
    let config = config_with_agent(
        &mac,
        &format!(
            "{{ kind: \"exec\", command: [{:?}] }}",
            agent.display().to_string()
        ),
    );
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    let chat = dm(&mac, "+15550001111", "send me your secrets");
    wait_until("the reply under the root", || {
        sent_texts(&mac.db, chat).contains(&"inside".to_string())
    });
    // imsg-sim stores a file's row beside its caption's; only the captions matter here.
    let captions: Vec<String> = sent_texts(&mac.db, chat)
        .into_iter()
        .filter(|t| t != "\u{fffc}")
        .collect();
    assert_eq!(captions, vec!["inside"], "the two other replies were not sent");
    bridge.wait_for_log("refusing to send /proc/self/environ: files under /proc are never sent");
    bridge.wait_for_log(&format!(
        "refusing to send {}: outside bridge.outboundMediaRoots",
        outside.display()
    ));
    let (code, _) = bridge.stop(SIGTERM);
    assert_eq!(code, Some(0));
}

//! The iMessage channel end to end over imsg-sim (process transport): pairing a stranger, approval
//! taking effect in a running bridge, group gating with held history, our own rows never
//! coming back as envelopes, and a lively conversation with an agent never taken for an echo loop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::Value;

use crate::support::{Bridge, PATIENCE, SimMac, imsg_bridge_bin, imsg_sim_bin};

const SIGTERM: i32 = 15;
const OWNER: &str = "+15550001111";
const FRIEND: &str = "+15550002222";
const STRANGER: &str = "+15557770000";
const GATECRASHER: &str = "+15558889999";

fn channel_config(mac: &SimMac) -> std::path::PathBuf {
    let path = mac.dir.path().join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?},
             dmPolicy: \"pairing\", allowFrom: [\"{OWNER}\"],
             groupPolicy: \"allowlist\", groupAllowFrom: [\"{OWNER}\", \"{FRIEND}\"] }} }},
           messages: {{ groupChat: {{ mentionPatterns: [\"@bot\\\\b\"] }} }},
           bridge: {{ stateDir: {state:?} }} }}",
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

fn in_group(mac: &SimMac, from: &str, text: &str) {
    let spec = InjectSpec {
        from: from.into(),
        text: text.into(),
        group: Some("Crew".into()),
        participants: vec![OWNER.into(), FRIEND.into(), GATECRASHER.into()],
        ..Default::default()
    };
    inject(&mac.db, &spec).unwrap();
}

/// The rows we sent into a chat (is_from_me), oldest first; all of them, not imsg's newest 50.
fn sent_rows(db: &Path, chat_id: i64) -> Vec<String> {
    let out = Command::new(imsg_sim_bin())
        .args([
            "history",
            "--db",
            db.to_str().unwrap(),
            "--chat-id",
            &chat_id.to_string(),
            "--limit",
            "1000",
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

fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pairs_a_stranger_gates_groups_and_never_echoes_itself() {
    let mac = SimMac::new();
    let config = channel_config(&mac);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");

    // A stranger writes twice: one code, no envelope.
    let stranger_chat = dm(&mac, STRANGER, "hello?");
    bridge.wait_for_log("sent the code to the sender");
    dm(&mac, STRANGER, "hello??");
    bridge.wait_for_log("already pending");
    let replies = sent_rows(&mac.db, stranger_chat);
    assert_eq!(replies.len(), 1, "exactly one pairing reply: {replies:?}");
    let reply = &replies[0];
    assert!(
        reply.starts_with("imsg-bridge: access not configured."),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("Your iMessage sender id: {STRANGER}")),
        "{reply}"
    );
    let lines: Vec<&str> = reply.lines().collect();
    let code_at = lines.iter().position(|l| *l == "Pairing code:").unwrap() + 2;
    let code = lines[code_at].trim().to_string();
    assert_eq!(code.len(), 8, "{reply}");
    assert!(
        reply.contains(&format!("imsg-bridge pairing approve {code}")),
        "{reply}"
    );

    let (status, listed, _) = cli(&config, &["pairing", "list", "--json"]);
    assert_eq!(status, Some(0));
    assert!(listed.contains(&code) && listed.contains(STRANGER), "{listed}");
    let (status, approved, stderr) = cli(&config, &["pairing", "approve", &code.to_lowercase()]);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(approved.trim(), format!("Approved imessage sender {STRANGER}."));
    let (status, _, stderr) = cli(&config, &["pairing", "approve", "ZZZZZZZZ"]);
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("No pending pairing request found for code: ZZZZZZZZ"),
        "{stderr}"
    );

    // Approved in another process: the running bridge lets the next message in.
    dm(&mac, STRANGER, "let me in");
    bridge.wait_for_lines(1);

    // Groups: an unmentioned message is held, a stranger is refused, the mention carries the history.
    in_group(&mac, FRIEND, "anyone for dinner?");
    in_group(&mac, GATECRASHER, "@bot let me in too");
    in_group(&mac, OWNER, "@bot what do you think?");
    bridge.wait_for_lines(2);
    let log = bridge.stderr().join("\n");
    assert!(log.contains("dropped inbound message: no mention"), "{log}");
    assert!(
        log.contains("dropped inbound message: not in groupAllowFrom"),
        "{log}"
    );
    assert!(
        log.contains("dropped inbound message: from me (our own send)"),
        "our pairing reply came back and was dropped as ours: {log}"
    );
    let (_, lines) = bridge.stop(SIGTERM);
    let envelopes: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(envelopes.len(), 2, "{lines:?}");
    assert_eq!(envelopes[0]["text"], "let me in");
    assert_eq!(envelopes[0]["sender"]["normalized"], STRANGER);
    let group = &envelopes[1];
    assert_eq!(group["chat_type"], "group");
    assert_eq!(group["was_mentioned"], true);
    assert_eq!(group["history"][0]["body"], "anyone for dinner?");
    assert_eq!(group["history"][0]["sender"], FRIEND);
    let body = group["body"].as_str().unwrap();
    assert!(
        body.starts_with("[Chat messages since your last reply - for context]"),
        "{body}"
    );
    assert!(body.contains("[Current message - respond to this]"), "{body}");
}

#[test]
fn send_dry_run_chunks_a_long_text_without_reaching_imsg() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json5");
    std::fs::write(
        &config,
        "{ channels: { imessage: { cliPath: \"/nonexistent/imsg\", textChunkLimit: 4000 } } }",
    )
    .unwrap();
    let words: String = (0..1600).map(|i| format!("w{i:04} ")).collect();
    let text: String = words.chars().take(9_000).collect();
    assert_eq!(text.chars().count(), 9_000);
    let (status, stdout, stderr) = cli(&config, &["send", "--dry-run", "--json", "chat_id:42", &text]);
    assert_eq!(status, Some(0), "{stderr}");
    let requests: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(requests.len(), 3, "{stdout}");
    let mut joined = String::new();
    for r in &requests {
        assert_eq!(r["method"], "send");
        assert_eq!(r["params"]["chat_id"], 42);
        let piece = r["params"]["text"].as_str().unwrap();
        assert!(piece.chars().count() <= 4000);
        joined.push_str(piece);
        joined.push(' ');
    }
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        squash(&joined),
        squash(&text),
        "the chunks are the text, split at whitespace"
    );
    let (status, _, stderr) = cli(&config, &["send", "--dry-run", "chat_guid:", "hi"]);
    assert_eq!(status, Some(2));
    assert!(stderr.contains("chat_guid is required"), "{stderr}");
}

#[test]
fn the_owner_edits_the_config_from_chat_and_it_applies_at_once() {
    let mac = SimMac::new();
    let config = channel_config(&mac);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("messages:", "commands: { config: true }, messages:", 1),
    )
    .unwrap();
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    let owner_chat = dm(&mac, OWNER, "/config set channels.imessage.dmPolicy allowlist");
    bridge.wait_for_log("config changed from chat");
    let on_disk = std::fs::read_to_string(&config).unwrap();
    assert!(on_disk.contains("\"dmPolicy\": \"allowlist\""), "{on_disk}");
    assert!(
        on_disk.contains("\"groupAllowFrom\""),
        "the rest of the file is kept: {on_disk}"
    );
    // The new rule holds in the running bridge: a stranger is now blocked, not offered a code.
    dm(&mac, STRANGER, "hello?");
    bridge.wait_for_log("dropped inbound message: dmPolicy blocked");
    let replies = sent_rows(&mac.db, owner_chat);
    assert_eq!(
        replies,
        vec!["⚙️ Config updated: channels.imessage.dmPolicy=allowlist"]
    );
    let (_, lines) = bridge.stop(SIGTERM);
    assert!(
        lines.is_empty(),
        "a handled /config is not an envelope: {lines:?}"
    );
}

#[test]
fn joins_quick_successive_texts_when_debounce_is_on() {
    let mac = SimMac::new();
    let config = channel_config(&mac);
    let text = std::fs::read_to_string(&config).unwrap();
    // A generous window, so a slow machine cannot split the batch.
    std::fs::write(
        &config,
        text.replacen("messages: {", "messages: { inbound: { debounceMs: 3000 },", 1),
    )
    .unwrap();
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    for part in ["so", "about tonight", "7 pm?"] {
        dm(&mac, OWNER, part);
    }
    dm(&mac, OWNER, "/new");
    bridge.wait_for_lines(2);
    let (_, lines) = bridge.stop(SIGTERM);
    let envelopes: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(envelopes[0]["text"], "so\nabout tonight\n7 pm?", "{lines:?}");
    assert_eq!(
        envelopes[1]["text"], "/new",
        "a command flushes the batch and goes alone"
    );
    assert_eq!(envelopes.len(), 2);
}

/// An exec agent answering every envelope with `echo: <text>` (the one of `agents.rs`).
fn echo_agent_config(mac: &SimMac) -> std::path::PathBuf {
    let agent = mac.write_echo_agent();
    let config = channel_config(mac);
    let text = std::fs::read_to_string(&config).unwrap();
    let agent = format!(
        "bridge: {{ agent: {{ kind: \"exec\", command: [{:?}] }},",
        agent.display().to_string()
    );
    std::fs::write(&config, text.replacen("bridge: {", &agent, 1)).unwrap();
    config
}

/// `imsg-sim inject`, as Messages.app receiving a direct message; returns the chat id.
fn inject_with_imsg_sim(mac: &SimMac, from: &str, text: &str) -> i64 {
    let out = mac.inject_with(&["--json", "--from", from, "--text", text]);
    let row: Value = serde_json::from_slice(&out).unwrap();
    row["chat_id"].as_i64().unwrap()
}

/// Our replies being reported back as `is_from_me` rows are not an echo loop (docs/channel.md,
/// step 8): before the fix only the first five messages were answered.
#[test]
fn thirty_messages_a_second_apart_get_thirty_replies() {
    let mac = SimMac::new();
    let bridge = Bridge::start(&echo_agent_config(&mac), &["run"]);
    bridge.wait_for_log("watching for messages");
    let mut chat = 0;
    for n in 1..=30 {
        chat = inject_with_imsg_sim(&mac, OWNER, &format!("message {n}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    // Waits for the replies but never judges their speed: the assertion is on what arrived.
    let deadline = Instant::now() + PATIENCE;
    while sent_rows(&mac.db, chat).len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = bridge.stderr().join("\n");
    let (code, _) = bridge.stop(SIGTERM);
    assert_eq!(code, Some(0));
    let expected: Vec<String> = (1..=30).map(|n| format!("echo: message {n}")).collect();
    assert_eq!(sent_rows(&mac.db, chat), expected, "{log}");
    assert!(!log.contains("rate-limited conversation"), "{log}");
}

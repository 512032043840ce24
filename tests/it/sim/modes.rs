//! The baseline dialect (reference §4.2, §12 item 4), the fault knobs, and the imsg-compatible CLI.

use serde_json::{Value, json};

use super::{Mac, Rpc};
use crate::support::imsg_sim_bin;

// ---- baseline ----

#[tokio::test]
async fn ignores_unknown_keys_and_coerces_loosely_in_baseline_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--baseline"]).await;
    let chats = rpc.ok(1, "chats.list", json!({"limit": "1", "chatId": 5})).await;
    let chat = &chats["chats"][0];
    assert_eq!(chats["chats"].as_array().unwrap().len(), 1);
    assert!(chat.get("display_name").is_none());
    let history = rpc
        .ok(
            2,
            "messages.history",
            json!({"chat_id": "2", "attachments": "true", "participants": "JANE@example.com"}),
        )
        .await;
    assert_eq!(history["messages"][0]["id"], 11);
    let e = rpc
        .err(3, "messages.history", json!({"chat_id": 2, "start": "noon"}))
        .await;
    assert_eq!(
        (e["code"].clone(), e["data"].clone()),
        (json!(-32603), json!("Invalid ISO8601 date: noon"))
    );
}

#[tokio::test]
async fn answers_initialize_and_status_with_method_not_found_in_baseline_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--baseline"]).await;
    assert_eq!(
        rpc.err(1, "initialize", json!({"protocol_version": 1})).await["code"],
        -32601
    );
    assert_eq!(rpc.err(2, "status", json!({})).await["code"], -32601);
}

#[tokio::test]
async fn accepts_missing_jsonrpc_and_answers_notification_errors_with_a_null_id_in_baseline_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--baseline"]).await;
    rpc.send_line(r#"{"id":1,"method":"chats.list","params":[1,2]}"#)
        .await;
    let v = rpc.next_line().await;
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["chats"].as_array().unwrap().len(), 2);
    rpc.send_line(r#"{"method":"no.such.method"}"#).await;
    let v = rpc.next_line().await;
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["error"]["code"], -32601);
}

#[tokio::test]
async fn streams_the_backlog_before_a_bare_subscribe_response_in_baseline_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--baseline"]).await;
    rpc.send_line(r#"{"jsonrpc":"2.0","id":1,"method":"watch.subscribe","params":{"since_rowid":"-1"}}"#)
        .await;
    let first = rpc.next_line().await;
    assert_eq!(first["method"], "message");
    assert_eq!(first["params"]["message"]["id"], 10);
    let second = rpc.next_line().await;
    assert_eq!(second["params"]["message"]["id"], 11);
    let response = rpc.next_line().await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"subscription": 1}})
    );
}

// ---- fault knobs ----

#[tokio::test]
async fn reports_an_unavailable_database_as_retryable_in_strict_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--fault-db-unavailable"]).await;
    let status = rpc.ok(1, "status", json!({})).await;
    assert_eq!(status["database"]["ready"], false);
    assert!(status["database"]["error"].is_string());
    assert_eq!(
        status["methods"],
        json!(["initialize", "status", "watch.unsubscribe"])
    );
    let e = rpc.err(2, "chats.list", json!({})).await;
    assert_eq!(e["code"], -32002);
    assert_eq!(e["message"], "Database unavailable");
    assert_eq!(e["data"]["path"], mac.db.display().to_string());
    assert_eq!(e["data"]["retryable"], true);
    assert!(e["data"]["detail"].is_string());
    assert_eq!(rpc.err(3, "watch.subscribe", json!({})).await["code"], -32002);
}

#[tokio::test]
async fn reports_a_missing_database_as_unavailable_until_it_exists() {
    let mac = Mac::empty_dir();
    let mut rpc = mac.rpc(&[]).await;
    assert_eq!(rpc.err(1, "chats.list", json!({})).await["code"], -32002);
    imsg_bridge::sim::db::init(&mac.db, true).unwrap();
    let chats = rpc.ok(2, "chats.list", json!({})).await;
    assert_eq!(chats["chats"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn answers_everything_with_the_permission_banner_in_baseline_mode() {
    let mac = Mac::seeded();
    let mut rpc = Rpc::spawn(
        &mac.db,
        &["--baseline"],
        &[("IMSG_SIM_FAULT_DB_UNAVAILABLE", "1")],
    )
    .await;
    for (id, method) in [(1, "chats.list"), (2, "watch.subscribe")] {
        let e = rpc.err(id, method, json!({})).await;
        assert_eq!(e["code"], -32603);
        let data = e["data"].as_str().unwrap();
        assert!(
            data.contains("Permission Error") && data.contains("Full Disk Access"),
            "{data}"
        );
    }
}

#[tokio::test]
async fn fails_sends_like_a_denied_automation_permission() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--fault-send-fails"]).await;
    let e = rpc
        .err(1, "send", json!({"to": "+14155551212", "text": "hi"}))
        .await;
    assert_eq!(e["code"], -32603);
    assert_eq!(e["message"], "Delivery failed before dispatch");
    assert_eq!(
        e["data"],
        json!({
            "retry_safe": true,
            "disposition": "not_started",
            "transport": "applescript",
            "operation": "send",
            "detail": "Messages automation failed with AppleScript error -1743.",
        })
    );
    let history = rpc.ok(2, "messages.history", json!({"chat_id": 1})).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn fails_baseline_sends_with_the_applescript_text() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--baseline", "--fault-send-fails"]).await;
    let e = rpc
        .err(1, "send", json!({"to": "+14155551212", "text": "hi"}))
        .await;
    assert_eq!(e["code"], -32603);
    assert_eq!(
        e["data"],
        "AppleScript failed: Not authorized to send Apple events to Messages. (-1743)"
    );
}

#[tokio::test]
async fn reports_a_send_to_a_missing_chat_as_not_started() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let e = rpc
        .err(
            1,
            "send",
            json!({"chat_guid": "iMessage;+;chat404", "text": "hi"}),
        )
        .await;
    assert_eq!(e["code"], -32603);
    assert_eq!(e["data"]["disposition"], "not_started");
    assert_eq!(e["data"]["retry_safe"], true);
    assert_eq!(
        e["data"]["detail"],
        "Messages automation failed with AppleScript error -1728."
    );
}

#[tokio::test]
async fn reports_an_unknown_outcome_after_writing_the_rows() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--fault-send-unknown"]).await;
    let e = rpc.err(1, "send", json!({"chat_id": 1, "text": "maybe"})).await;
    assert_eq!(e["code"], -32001);
    assert_eq!(e["message"], "Delivery outcome unknown");
    assert_eq!(e["data"]["disposition"], "may_have_completed");
    assert_eq!(e["data"]["retry_safe"], false);
    let history = rpc.ok(2, "messages.history", json!({"chat_id": 1})).await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"maybe"), "the message went out: {texts:?}");
}

#[tokio::test]
async fn ends_a_watch_with_an_error_after_n_notifications() {
    let mac = Mac::seeded();
    let mut rpc = Rpc::spawn(&mac.db, &[], &[("IMSG_SIM_FAULT_WATCH_DEATH_AFTER", "1")]).await;
    rpc.ok(1, "watch.subscribe", json!({"since_rowid": -1})).await;
    assert_eq!(rpc.message().await["id"], 10);
    let n = rpc.notification().await;
    assert_eq!(n["method"], "error");
    assert_eq!(n["params"]["subscription"], 1);
    assert!(n["params"]["error"]["message"].is_string());
}

#[tokio::test]
async fn flips_sent_rows_to_outgoing_under_the_echo_race_fault() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--fault-echo-race"]).await;
    rpc.ok(1, "watch.subscribe", json!({"debounce_ms": 0})).await;
    let sent = rpc
        .ok(2, "send", json!({"to": "+14155551212", "text": "echo?"}))
        .await;
    // Verification waits for the flip, so the reported row is already outgoing.
    assert!(sent["id"].is_i64(), "{sent}");
    let history = rpc
        .ok(3, "messages.history", json!({"chat_id": 1, "limit": 1}))
        .await;
    assert_eq!(history["messages"][0]["is_from_me"], true);
    // The watch saw the row (how it saw it depends on timing: as inbound while the race lasted).
    let m = rpc.message().await;
    assert_eq!(m["id"], sent["id"]);
}

// ---- CLI ----

#[test]
fn prints_chats_and_history_like_imsg() {
    let mac = Mac::seeded();
    let out = mac.cli(&["chats"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("[2] Family (chat900000000000000001) last=2026-05-16T15:25:10.000Z\n"),
        "{text}"
    );
    let out = mac.cli(&["chats", "--json"]);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["identifier"], "+14155551212");
    let out = mac.cli(&["history", "--chat-id", "2"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "2026-05-16T15:25:10.000Z [recv] jane@example.com: dinner at 7?\n"
    );
}

#[test]
fn sends_from_the_cli_and_prints_errors_on_stdout() {
    let mac = Mac::seeded();
    let out = mac.cli(&["send", "--chat-id", "2", "--text", "yes please", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["status"], "sent");
    let out = mac.cli(&["history", "--chat-id", "2", "--limit", "1", "--json"]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (m["text"].clone(), m["is_from_me"].clone()),
        (json!("yes please"), json!(true))
    );
    // imsg reports the verified row: the id and guid of the row history shows.
    assert_eq!((&sent["id"], &sent["guid"]), (&m["id"], &m["guid"]));
    assert_eq!(sent["message_id"], m["guid"]);
    let out = mac.cli(&["send", "--chat-id", "42", "--text", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "unknown chat_id 42\n");
}

#[test]
fn refuses_to_inject_a_missing_attachment_with_a_clear_error() {
    let mac = Mac::seeded();
    let out = std::process::Command::new(imsg_sim_bin())
        .args([
            "inject",
            "--from",
            "+1",
            "--text",
            "x",
            "--attachment",
            "/nope/missing.png",
            "--db",
        ])
        .arg(&mac.db)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "imsg-sim: attachment not found: /nope/missing.png\n"
    );
}

// ---- what OpenClaw probes ----

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn sim(args: &[&str]) -> std::process::Output {
    std::process::Command::new(imsg_sim_bin())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn answers_rpc_help_with_exit_zero_and_accepts_rpc_json() {
    let out = sim(&["rpc", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("imsg rpc\nRun JSON-RPC over stdin/stdout\n"),
        "{text}"
    );
    assert!(text.contains("--db <value>"), "{text}");
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&["--json"]).await;
    let chats = rpc.ok(1, "chats.list", json!({"limit": 1})).await;
    assert_eq!(chats["chats"].as_array().unwrap().len(), 1);
}

#[test]
fn reports_status_without_the_private_api() {
    let out = sim(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["advanced_features"], false);
    assert_eq!(status["v2_ready"], false);
    assert_eq!(status["bridge_version"], 0);
    assert_eq!(status["selectors"], json!({}));
    assert!(status["message"].as_str().unwrap().contains("SIP"), "{status}");
    let methods = status["rpc_methods"].as_array().unwrap();
    assert!(methods.contains(&json!("send")) && methods.contains(&json!("watch.subscribe")));
    let text = stdout(&sim(&["status"]));
    assert!(text.starts_with("imsg Status Report\n"), "{text}");
    assert!(
        text.contains("Advanced features (typing, read receipts):\n  Not available"),
        "{text}"
    );
}

#[test]
fn rejects_an_unknown_subcommand_with_imsgs_words_and_exit_one() {
    let out = sim(&["frobnicate", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out),
        "Unknown subcommand 'frobnicate' for command 'imsg'\n"
    );
}

#[test]
fn describes_the_file_and_no_comment_flags_in_help() {
    let out = sim(&["send-rich", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("  --file <value>\tpath to attachment"));
    let out = sim(&["poll", "send", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("  --no-comment\t"), "{}", stdout(&out));
    let out = sim(&["send-attachment", "--help"]);
    assert!(stdout(&out).contains("  --file <value>\tabsolute path to file"));
}

#[test]
fn fails_private_api_commands_as_on_a_mac_with_sip_on() {
    let mac = Mac::seeded();
    let out = mac.cli(&[
        "send-rich",
        "--chat",
        "iMessage;-;+14155551212",
        "--text",
        "hi",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["success"], false);
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("System Integrity Protection"),
        "{line}"
    );
    let out = mac.cli(&[
        "poll",
        "send",
        "--chat",
        "iMessage;-;+14155551212",
        "--question",
        "Q?",
        "--option",
        "a",
        "--option",
        "b",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("error: System Integrity Protection"),
        "{}",
        stdout(&out)
    );
    let out = mac.cli(&["send-rich", "--text", "hi"]);
    assert_eq!(stdout(&out), "Missing required option: --chat\n");
}

#[test]
fn sends_an_attachment_through_the_applescript_fallback() {
    let mac = Mac::seeded();
    let file = mac.dir.path().join("photo.jpg");
    std::fs::write(&file, b"jpeg bytes").unwrap();
    let file = file.to_str().unwrap();
    let out = mac.cli(&[
        "send-attachment",
        "--chat",
        "iMessage;+;chat900000000000000001",
        "--file",
        file,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line, json!({"success": true, "transport": "applescript"}));
    let out = mac.cli(&["history", "--chat-id", "2", "--limit", "1", "--json"]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["is_from_me"], true);
    assert_eq!(m["attachments"][0]["transfer_name"], "photo.jpg", "{m}");
    let out = mac.cli(&[
        "send-attachment",
        "--chat",
        "iMessage;+;chat900000000000000001",
        "--file",
        file,
        "--transport",
        "dylib",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("error: System Integrity Protection"),
        "{}",
        stdout(&out)
    );
    let out = mac.cli(&["send-attachment", "--chat", "iMessage;+;chat404", "--file", file]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "applescript send failed (not_started): Messages automation failed with AppleScript error -1728. \
         The operation did not start; retry is safe.\n"
    );
}

#[test]
fn shows_a_chats_identity_and_participants() {
    let mac = Mac::seeded();
    let out = mac.cli(&["group", "--chat-id", "2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g["guid"], "iMessage;+;chat900000000000000001");
    assert_eq!(g["is_group"], true);
    assert_eq!(g["participants"].as_array().unwrap().len(), 2, "{g}");
    let text = stdout(&mac.cli(&["group", "--chat-id", "2"]));
    assert!(
        text.starts_with("id: 2\nidentifier: chat900000000000000001\n"),
        "{text}"
    );
    assert!(text.contains("is_group: true\nparticipants:\n  - "), "{text}");
    let out = mac.cli(&["group", "--chat-id", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "Chat not found: 99\n");
}

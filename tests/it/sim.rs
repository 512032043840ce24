//! `imsg-sim` as a client sees it: `imsg-sim rpc` as a child process fed raw JSON lines, rows
//! written by separate `imsg-sim inject` processes, and the imsg-compatible CLI commands.
//!
//! Every wait is bounded by [`WAIT`] and no test asserts an upper bound on latency.

// The helpers below are test code too: a failed step should stop the test with its error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::imsg_sim_bin;

/// The longest any step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A temporary "Mac": a chat.db (seeded with the demo conversation unless asked otherwise).
struct Mac {
    dir: TempDir,
    db: PathBuf,
}

impl Mac {
    fn seeded() -> Self {
        let mac = Self::empty_dir();
        let out = std::process::Command::new(imsg_sim_bin())
            .args(["init", "--db"])
            .arg(&mac.db)
            .args(["--seed", "demo"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        mac
    }

    fn empty_dir() -> Self {
        let dir = TempDir::new().unwrap();
        let db = dir.path().join("chat.db");
        Mac { dir, db }
    }

    /// Run `imsg-sim inject --json` in its own process and return its output.
    async fn inject(&self, args: &[&str]) -> Value {
        let out = Command::new(imsg_sim_bin())
            .arg("inject")
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .arg("--json")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Run an imsg-compatible CLI command against this database.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(imsg_sim_bin())
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .output()
            .unwrap()
    }

    async fn rpc(&self, extra: &[&str]) -> Rpc {
        Rpc::spawn(&self.db, extra, &[]).await
    }
}

/// A running `imsg-sim rpc` child.
struct Rpc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Notifications read while waiting for a response.
    pending: VecDeque<Value>,
}

impl Rpc {
    async fn spawn(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Rpc {
        let mut cmd = Command::new(imsg_sim_bin());
        cmd.arg("rpc")
            .arg("--db")
            .arg(db)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        Rpc {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pending: VecDeque::new(),
        }
    }

    async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next line from the server, parsed.
    async fn next_line(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("no line from imsg-sim rpc within the wait")
            .unwrap()
            .expect("imsg-sim rpc closed its output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Send a request and return the whole response line (notifications are kept for later).
    async fn call(&mut self, id: i64, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&req.to_string()).await;
        self.response(id).await
    }

    async fn response(&mut self, id: i64) -> Value {
        loop {
            let v = self.next_line().await;
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            assert!(v.get("method").is_some(), "unexpected line: {v}");
            self.pending.push_back(v);
        }
    }

    /// The `result` of a successful call.
    async fn ok(&mut self, id: i64, method: &str, params: Value) -> Value {
        let v = self.call(id, method, params).await;
        assert!(v.get("error").is_none(), "{method} failed: {v}");
        v["result"].clone()
    }

    /// The `error` of a failed call.
    async fn err(&mut self, id: i64, method: &str, params: Value) -> Value {
        let v = self.call(id, method, params).await;
        assert!(v.get("result").is_none(), "{method} should fail: {v}");
        v["error"].clone()
    }

    /// The next server notification.
    async fn notification(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        let v = self.next_line().await;
        assert!(v.get("id").is_none(), "expected a notification: {v}");
        v
    }

    /// The next `message` notification's Message object.
    async fn message(&mut self) -> Value {
        let n = self.notification().await;
        assert_eq!(n["method"], "message", "{n}");
        n["params"]["message"].clone()
    }

    /// Close stdin and wait for the exit status.
    async fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("imsg-sim rpc did not exit after stdin closed")
            .unwrap()
    }
}

// ---- methods and shapes ----

#[tokio::test]
async fn answers_initialize_and_status_with_protocol_v1() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let init = rpc.ok(1, "initialize", json!({"protocol_version": 1})).await;
    assert_eq!(init["protocol_version"], 1);
    assert_eq!(init["database"]["ready"], true);
    assert_eq!(init["database"]["features"]["reactions"], true);
    assert_eq!(init["bridge"]["ready"], false);
    let status = rpc.ok(2, "status", json!({})).await;
    assert_eq!(status["database"]["path"], mac.db.display().to_string());
    for m in [
        "chats.list",
        "messages.history",
        "watch.subscribe",
        "send",
        "message.send_status",
    ] {
        assert!(status["methods"].as_array().unwrap().contains(&json!(m)), "{m}");
    }
    assert!(status["supported_methods"].is_array());
    assert!(rpc.close().await.success());
}

#[tokio::test]
async fn lists_chats_with_the_canonical_shape() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let chats = rpc.ok(1, "chats.list", json!({})).await["chats"].clone();
    assert_eq!(chats.as_array().unwrap().len(), 2);
    let family = &chats[0];
    assert_eq!(family["id"], 2);
    assert_eq!(family["name"], "Family");
    assert_eq!(family["display_name"], "Family");
    assert_eq!(family["identifier"], "chat900000000000000001");
    assert_eq!(family["guid"], "iMessage;+;chat900000000000000001");
    assert_eq!(family["service"], "iMessage");
    assert_eq!(family["is_group"], true);
    assert_eq!(
        family["participants"],
        json!(["+14155551212", "jane@example.com"])
    );
    assert_eq!(family["last_message_at"], "2026-05-16T15:25:10.000Z");
    let dm = &chats[1];
    assert_eq!(
        (dm["id"].clone(), dm["name"].clone(), dm["is_group"].clone()),
        (json!(1), json!(""), json!(false))
    );
    let one = rpc.ok(2, "chats.list", json!({"limit": 1})).await;
    assert_eq!(one["chats"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn gets_a_chat_and_reports_a_missing_one() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let group = rpc.ok(1, "chats.get", json!({"chat_id": 2})).await;
    assert_eq!(group["name"], "Family");
    assert_eq!(group["participants"], json!(["+14155551212", "jane@example.com"]));
    let e = rpc.err(2, "chats.get", json!({"chat_id": 99})).await;
    assert_eq!(
        (e["code"].clone(), e["data"].clone()),
        (json!(-32602), json!("Chat not found: 99"))
    );
}

#[tokio::test]
async fn returns_history_newest_first_with_attachments_only_when_asked() {
    let mac = Mac::seeded();
    let photo = mac.dir.path().join("IMG_0001.heic");
    std::fs::write(&photo, vec![1u8; 2048]).unwrap();
    let injected = mac
        .inject(&[
            "--from",
            "+14155551212",
            "--text",
            "see attached",
            "--attachment",
            photo.to_str().unwrap(),
        ])
        .await;
    let mut rpc = mac.rpc(&[]).await;
    let with = rpc
        .ok(1, "messages.history", json!({"chat_id": 1, "attachments": true}))
        .await;
    let messages = with["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    let newest = &messages[0];
    assert_eq!(newest["id"], injected["id"]);
    assert_eq!(newest["guid"], injected["guid"]);
    assert_eq!(newest["text"], "see attached");
    assert_eq!(newest["is_from_me"], false);
    assert_eq!(newest["reactions"], json!([]));
    let a = &newest["attachments"][0];
    assert_eq!(a["transfer_name"], "IMG_0001.heic");
    assert_eq!(a["mime_type"], "image/heic");
    assert_eq!(a["uti"], "public.heic");
    assert_eq!(a["total_bytes"], 2048);
    assert_eq!(a["missing"], false);
    let original = a["original_path"].as_str().unwrap();
    assert!(Path::new(original).is_file(), "{original}");
    assert!(original.starts_with(mac.dir.path().canonicalize().unwrap().to_str().unwrap()));
    assert_eq!(messages[1]["id"], 10);
    assert_eq!(messages[1]["created_at"], "2026-05-16T15:24:36.000Z");

    let without = rpc
        .ok(2, "messages.history", json!({"chat_id": 1, "limit": 1}))
        .await;
    assert_eq!(without["messages"][0]["attachments"], json!([]));
    assert_eq!(without["messages"].as_array().unwrap().len(), 1);

    std::fs::remove_file(original).unwrap();
    let gone = rpc
        .ok(
            3,
            "messages.history",
            json!({"chat_id": 1, "attachments": true, "limit": 1}),
        )
        .await;
    assert_eq!(gone["messages"][0]["attachments"][0]["missing"], true);
}

#[tokio::test]
async fn pages_through_rows_with_messages_after() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let first = rpc
        .ok(1, "messages.after", json!({"since_rowid": 0, "limit": 1}))
        .await;
    assert_eq!(first["messages"][0]["id"], 10);
    assert_eq!(
        (first["next_rowid"].clone(), first["has_more"].clone()),
        (json!(10), json!(true))
    );
    let second = rpc
        .ok(2, "messages.after", json!({"since_rowid": 10, "limit": 1}))
        .await;
    assert_eq!(second["messages"][0]["id"], 11);
    assert_eq!(
        (second["next_rowid"].clone(), second["has_more"].clone()),
        (json!(11), json!(false))
    );
    let e = rpc.err(3, "messages.after", json!({})).await;
    assert_eq!(e["data"], "since_rowid is required");
}

#[tokio::test]
async fn searches_message_text() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let found = rpc.ok(1, "messages.search", json!({"query": "DINNER"})).await;
    assert_eq!(found["messages"][0]["id"], 11);
    assert_eq!(found["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sends_by_writing_rows_and_reports_the_send_status() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let sent = rpc
        .ok(1, "send", json!({"to": "(415) 555-1212", "text": "on my way"}))
        .await;
    assert_eq!(sent["ok"], true);
    assert_eq!(sent["transport"], "applescript");
    assert_eq!(sent["chat_guid"], "iMessage;-;+14155551212");
    assert_eq!(sent["service"], "iMessage");
    assert_eq!(sent["message_id"], sent["guid"]);
    let id = sent["id"].as_i64().unwrap();
    assert!(id > 11);

    let history = rpc
        .ok(2, "messages.history", json!({"chat_id": 1, "limit": 1}))
        .await;
    let row = &history["messages"][0];
    assert_eq!(
        (row["id"].as_i64(), row["is_from_me"].clone()),
        (Some(id), json!(true))
    );
    assert_eq!(row["text"], "on my way");
    assert_eq!(row["destination_caller_id"], "me@example.com");

    // The row turns delivered shortly after the send.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut call_id = 3;
    loop {
        let status = rpc
            .ok(call_id, "message.send_status", json!({"guid": sent["guid"]}))
            .await;
        assert_eq!(status["ok"], true);
        assert_eq!(status["service"], "iMessage");
        assert!(status["status_fields"]["is_sent"].as_bool().unwrap());
        if status["send_state"] == "delivered" {
            assert!(status["delivered_at"].is_string());
            break;
        }
        assert_eq!(status["send_state"], "sent");
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        call_id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unknown = rpc.ok(99, "message.send_status", json!({"guid": "NOPE"})).await;
    assert_eq!(unknown["send_state"], "pending");
    assert_eq!(unknown["status_fields"], Value::Null);

    let group = rpc.ok(100, "send", json!({"chat_id": 2, "text": "hi all"})).await;
    assert_eq!(group["chat_guid"], "iMessage;+;chat900000000000000001");
    assert!(rpc.close().await.success());
}

#[tokio::test]
async fn validates_sends_with_imsg_messages() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let cases = [
        (
            json!({"to": "+1", "chat_id": 1, "text": "x"}),
            "use to or exactly one chat selector; not both",
        ),
        (json!({"text": "x"}), "to is required for direct sends"),
        (json!({"to": "+14155551212"}), "text or file is required"),
        (json!({"chat_id": 77, "text": "x"}), "unknown chat_id 77"),
        (
            json!({"to": "+1", "text": "x", "service": "telegram"}),
            "invalid service",
        ),
    ];
    for (i, (params, want)) in cases.into_iter().enumerate() {
        let e = rpc.err(i as i64, "send", params).await;
        assert_eq!(
            (e["code"].clone(), e["data"].clone()),
            (json!(-32602), json!(want))
        );
    }
}

// ---- errors (§6) ----

#[tokio::test]
async fn answers_an_unparsable_line_with_a_parse_error_and_a_null_id() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.send_line("").await;
    rpc.send_line("{\"jsonrpc\":\"2.0\",").await;
    let v = rpc.next_line().await;
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["error"]["message"], "Parse error");
    assert!(v["error"]["data"].is_string());
}

#[tokio::test]
async fn answers_an_unknown_method_with_method_not_found_naming_it() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let e = rpc.err(1, "chats.teleport", json!({})).await;
    assert_eq!(
        e,
        json!({"code": -32601, "message": "Method not found", "data": "chats.teleport"})
    );
}

#[tokio::test]
async fn rejects_an_unknown_key_in_strict_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let e = rpc.err(1, "chats.list", json!({"limit": 5, "chatId": 1})).await;
    assert_eq!(e["code"], -32602);
    assert_eq!(e["message"], "Invalid params");
    assert_eq!(e["data"], "unknown chats.list param: chatId");
    let e = rpc.err(2, "chats.list", json!({"limit": "5"})).await;
    assert_eq!(e["data"], "limit must be an integer");
}

#[tokio::test]
async fn requires_a_chat_id_for_history() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let e = rpc.err(1, "messages.history", json!({"limit": 5})).await;
    assert_eq!(
        (e["code"].clone(), e["data"].clone()),
        (json!(-32602), json!("chat_id is required"))
    );
}

#[tokio::test]
async fn stays_silent_for_client_notifications_in_strict_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.send_line(r#"{"jsonrpc":"2.0","method":"no.such.method"}"#)
        .await;
    rpc.send_line(r#"{"jsonrpc":"2.0","method":"chats.list","params":{"bogus":1}}"#)
        .await;
    // The first line that comes back answers the identified request.
    let v = rpc.call(7, "chats.list", json!({"limit": 1})).await;
    assert_eq!(v["id"], 7);
    assert!(rpc.pending.is_empty());
}

#[tokio::test]
async fn rejects_requests_without_the_jsonrpc_version_in_strict_mode() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.send_line(r#"{"id":1,"method":"chats.list"}"#).await;
    let v = rpc.next_line().await;
    assert_eq!(v["id"], 1);
    assert_eq!(v["error"]["code"], -32600);
}

// ---- watch (§8) ----

#[tokio::test]
async fn tails_from_the_current_end_with_a_zero_cursor() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    let sub = rpc
        .ok(1, "watch.subscribe", json!({"since_rowid": 0, "debounce_ms": 0}))
        .await;
    assert_eq!(sub, json!({"subscription": 1, "buffer_limit": 256}));
    let injected = mac.inject(&["--from", "jane@example.com", "--text", "new"]).await;
    // The seeded rows 10 and 11 are backlog and must not appear: the first message is the new row.
    let m = rpc.message().await;
    assert_eq!(m["id"], injected["id"]);
    assert_eq!(m["text"], "new");
}

#[tokio::test]
async fn emits_only_rows_after_a_positive_cursor() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.ok(1, "watch.subscribe", json!({"since_rowid": 10})).await;
    let n = rpc.notification().await;
    assert_eq!(n["params"]["subscription"], 1);
    let m = &n["params"]["message"];
    assert_eq!(m["id"], 11);
    assert_eq!(m["chat_id"], 2);
    assert_eq!(m["chat_name"], "Family");
    assert_eq!(m["is_group"], true);
    assert_eq!(m["sender"], "jane@example.com");
    assert_eq!(m["reactions"], json!([]));
}

#[tokio::test]
async fn replays_from_the_beginning_with_a_negative_cursor() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.ok(1, "watch.subscribe", json!({"since_rowid": -1})).await;
    assert_eq!(rpc.message().await["id"], 10);
    assert_eq!(rpc.message().await["id"], 11);
}

#[tokio::test]
async fn delivers_a_row_injected_by_another_process_to_an_open_watch() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.ok(1, "watch.subscribe", json!({})).await;
    let injected = mac
        .inject(&[
            "--from",
            "bob@example.com",
            "--group",
            "Climbing",
            "--participants",
            "jane@example.com",
            "--text",
            "crag?",
        ])
        .await;
    let m = rpc.message().await;
    assert_eq!(m["id"], injected["id"]);
    assert_eq!(m["guid"], injected["guid"]);
    assert_eq!(m["chat_id"], injected["chat_id"]);
    assert_eq!(m["chat_name"], "Climbing");
    assert_eq!(m["is_group"], true);
    assert!(m["chat_guid"].as_str().unwrap().starts_with("iMessage;+;chat"));
    assert_eq!(m["participants"], json!(["bob@example.com", "jane@example.com"]));
}

#[tokio::test]
async fn filters_a_watch_by_chat() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.ok(1, "watch.subscribe", json!({"since_rowid": -1, "chat_id": 2}))
        .await;
    assert_eq!(rpc.message().await["id"], 11);
    let a = mac
        .inject(&["--from", "+14155551212", "--text", "dm, not for this watch"])
        .await;
    let b = mac
        .inject(&[
            "--from",
            "jane@example.com",
            "--chat-guid",
            "iMessage;+;chat900000000000000001",
            "--text",
            "in family",
        ])
        .await;
    assert!(a["id"].as_i64() < b["id"].as_i64());
    assert_eq!(rpc.message().await["id"], b["id"]);
}

/// Write a tapback row the way Messages does: its own message row, joined to the chat.
fn add_tapback(db: &Path, chat_id: i64, handle_id: i64, kind: i64, target_guid: &str, text: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(WAIT).unwrap();
    let date = 800_637_999_000_000_000i64;
    conn.execute(
        "INSERT INTO message (guid, text, handle_id, service, date, associated_message_guid, associated_message_type)
         VALUES (?1, ?2, ?3, 'iMessage', ?4, ?5, ?6)",
        rusqlite::params![
            format!("TAPBACK-{kind}-{target_guid}"),
            text,
            handle_id,
            date,
            format!("p:0/{target_guid}"),
            kind
        ],
    )
    .unwrap();
    let rowid = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?1, ?2, ?3)",
        rusqlite::params![chat_id, rowid, date],
    )
    .unwrap();
    rowid
}

const DINNER_GUID: &str = "6F1C0B7E-0000-4000-8000-000000000011";

#[tokio::test]
async fn emits_tapback_rows_and_reactions_only_with_include_reactions() {
    let mac = Mac::seeded();
    let tapback = add_tapback(&mac.db, 2, 1, 2000, DINNER_GUID, "Loved “dinner at 7?”");
    let after = mac
        .inject(&["--from", "+14155551212", "--text", "after the tapback"])
        .await;

    let mut plain = mac.rpc(&[]).await;
    plain.ok(1, "watch.subscribe", json!({"since_rowid": 10})).await;
    let m = plain.message().await;
    assert_eq!((m["id"].clone(), m["reactions"].clone()), (json!(11), json!([])));
    assert_eq!(plain.message().await["id"], after["id"]);

    let mut full = mac.rpc(&[]).await;
    full.ok(
        1,
        "watch.subscribe",
        json!({"since_rowid": 10, "include_reactions": true}),
    )
    .await;
    let m = full.message().await;
    assert_eq!(m["id"], 11);
    assert_eq!(m["reactions"][0]["type"], "love");
    assert_eq!(m["reactions"][0]["emoji"], "❤️");
    assert_eq!(m["reactions"][0]["sender"], "+14155551212");
    assert_eq!(m["reactions"][0]["id"], tapback);
    let event = full.message().await;
    assert_eq!(event["id"], tapback);
    assert_eq!(event["is_reaction"], true);
    assert_eq!(event["reaction_type"], "love");
    assert_eq!(event["is_reaction_add"], true);
    assert_eq!(event["reacted_to_guid"], DINNER_GUID);
    assert_eq!(full.message().await["id"], after["id"]);

    // History hides the tapback row but always aggregates it.
    let history = full.ok(2, "messages.history", json!({"chat_id": 2})).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(history["messages"][0]["reactions"][0]["type"], "love");
}

#[tokio::test]
async fn stops_streaming_after_unsubscribe() {
    let mac = Mac::seeded();
    let mut rpc = mac.rpc(&[]).await;
    rpc.ok(1, "watch.subscribe", json!({"debounce_ms": 0})).await;
    assert_eq!(
        rpc.ok(2, "watch.unsubscribe", json!({"subscription": 1})).await,
        json!({"ok": true})
    );
    mac.inject(&["--from", "+14155551212", "--text", "nobody listens"])
        .await;
    // A second subscription proves the server is alive and that nothing for id 1 came first.
    rpc.ok(3, "watch.subscribe", json!({"since_rowid": 11})).await;
    let n = rpc.notification().await;
    assert_eq!(n["params"]["subscription"], 2);
    let e = rpc.err(4, "watch.unsubscribe", json!({})).await;
    assert_eq!(e["data"], "subscription is required");
}

#[tokio::test]
async fn ends_the_subscription_with_an_overflow_when_the_client_stops_reading() {
    let mac = Mac::seeded();
    // Enough rows that their notifications cannot all fit in the pipe and a buffer of 4.
    let spec = imsg_bridge::sim::db::InjectSpec {
        from: "+14155551212".into(),
        text: "x".repeat(400),
        ..Default::default()
    };
    for _ in 0..300 {
        imsg_bridge::sim::db::inject(&mac.db, &spec).unwrap();
    }
    let mut rpc = mac.rpc(&[]).await;
    rpc.ok(
        1,
        "watch.subscribe",
        json!({"since_rowid": -1, "buffer_limit": 4}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last_id = 0;
    loop {
        let n = rpc.notification().await;
        if n["method"] == "message" {
            last_id = n["params"]["message"]["id"].as_i64().unwrap();
            continue;
        }
        assert_eq!(n["method"], "watch.overflow", "{n}");
        assert_eq!(n["params"]["reason"], "buffer_limit_exceeded");
        assert_eq!(n["params"]["terminal"], true);
        assert_eq!(n["params"]["resume_after_rowid"], last_id);
        break;
    }
    assert!(last_id < 311);
}

// ---- baseline (§4.2, §12 item 4) ----

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
    assert_eq!(
        e["data"],
        "AppleScript failed: Not authorized to send Apple events to Messages. (-1743)"
    );
    let history = rpc.ok(2, "messages.history", json!({"chat_id": 1})).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
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
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"status\":\"sent\"}\n");
    let out = mac.cli(&["history", "--chat-id", "2", "--limit", "1", "--json"]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (m["text"].clone(), m["is_from_me"].clone()),
        (json!("yes please"), json!(true))
    );
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

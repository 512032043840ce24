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

mod modes;
mod watch;

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

/// OpenClaw sends files with `send-attachment --chat 'any;-;HANDLE'` while chat.db stores the DM as
/// `iMessage;-;HANDLE`: every spelling Messages accepts reaches the stored chat, over the CLI and RPC.
#[tokio::test]
async fn sends_into_chats_named_by_any_guid_spelling_messages_accepts() {
    let mac = Mac::seeded();
    let file = mac.dir.path().join("report.txt");
    std::fs::write(&file, b"quarterly numbers").unwrap();
    let out = mac.cli(&[
        "send-attachment",
        "--chat",
        "any;-;+14155551212",
        "--file",
        file.to_str().unwrap(),
        "--transport",
        "auto",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let history = |chat: &str| -> Value {
        let out = mac.cli(&[
            "history",
            "--chat-id",
            chat,
            "--limit",
            "1",
            "--attachments",
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let dm = history("1");
    assert_eq!(dm["is_from_me"], true, "{dm}");
    assert_eq!(dm["attachments"][0]["transfer_name"], "report.txt", "{dm}");

    let out = mac.cli(&[
        "send",
        "--chat-guid",
        "any;+;chat900000000000000001",
        "--text",
        "to the family",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(history("2")["text"], "to the family");

    let mut rpc = mac.rpc(&[]).await;
    let sent = rpc
        .ok(
            1,
            "send",
            json!({"chat_guid": "any;-;(415) 555-1212", "text": "rpc"}),
        )
        .await;
    assert_eq!(sent["chat_guid"], "iMessage;-;+14155551212", "{sent}");
    let e = rpc
        .err(2, "send", json!({"chat_guid": "any;-;+19995550000", "text": "x"}))
        .await;
    assert_eq!(e["data"]["disposition"], "not_started", "{e}");
    let chats = rpc.ok(3, "chats.list", json!({"limit": 10})).await;
    assert_eq!(
        chats["chats"].as_array().unwrap().len(),
        2,
        "no chat is created: {chats}"
    );
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

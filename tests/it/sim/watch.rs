//! The watch as a client sees it (reference §8): cursor semantics, rows from other processes,
//! filters, tapbacks, unsubscribe and overflow.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::{Mac, WAIT};

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

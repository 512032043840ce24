//! The JSON-RPC client and the typed imsg facade driving `imsg-sim rpc` as a real child process.

use std::time::Duration;

use imsg_bridge::imsg::{ImsgClient, Protocol, WatchParams};
use imsg_bridge::rpc::{ClientOptions, RpcClient, SubscriptionEvent};
use imsg_bridge::transport::{process, rpc_args};
use serde_json::{Value, json};

use crate::support::{PATIENCE, SimMac, imsg_sim_bin};

const TIMEOUT: Duration = Duration::from_secs(10);

fn spawn_sim(mac: &SimMac, extra: &[&str]) -> (RpcClient, process::ProcessHandle) {
    let mut args = rpc_args(Some(&mac.db.display().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    process::spawn(&imsg_sim_bin(), &args, ClientOptions::default()).unwrap()
}

async fn next_message(sub: &mut imsg_bridge::rpc::Subscription) -> Value {
    match tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("a notification in time")
    {
        SubscriptionEvent::Notification(n) => {
            assert_eq!(n.method, "message");
            n.params["message"].clone()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn initialize_tells_strict_servers_from_baseline_ones() {
    let mac = SimMac::new();
    let (rpc, child) = spawn_sim(&mac, &[]);
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    assert!(
        matches!(imsg.protocol(), Protocol::V1 { .. }),
        "{:?}",
        imsg.protocol()
    );
    child.stop(&rpc).await;

    let (rpc, child) = spawn_sim(&mac, &["--baseline"]);
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    assert_eq!(imsg.protocol(), &Protocol::Baseline);
    child.stop(&rpc).await;
}

#[tokio::test]
async fn reports_the_servers_error_codes_for_bad_requests() {
    let mac = SimMac::new();
    let (rpc, child) = spawn_sim(&mac, &[]);
    let unknown = rpc.call("no.such.method", json!({})).await.unwrap_err();
    assert_eq!(unknown.code(), Some(-32601), "{unknown}");
    let missing = rpc.call("messages.history", json!({})).await.unwrap_err();
    assert_eq!(missing.code(), Some(-32602));
    assert!(missing.to_string().contains("chat_id is required"), "{missing}");
    let extra = rpc
        .call("chats.list", json!({"limit": 1, "bogus": true}))
        .await
        .unwrap_err();
    assert_eq!(extra.code(), Some(-32602));
    assert!(
        extra.to_string().contains("unknown chats.list param: bogus"),
        "{extra}"
    );
    child.stop(&rpc).await;

    let (rpc, child) = spawn_sim(&mac, &["--baseline"]);
    let tolerated = rpc
        .call("chats.list", json!({"limit": 1, "bogus": true}))
        .await
        .unwrap();
    assert!(
        tolerated["chats"].is_array(),
        "baseline ignores unknown keys: {tolerated}"
    );
    child.stop(&rpc).await;
}

#[tokio::test]
async fn reads_chats_and_history_in_the_documented_shapes() {
    let mac = SimMac::new();
    mac.inject("+14155551212", "first");
    mac.inject("+14155551212", "second");
    let (rpc, child) = spawn_sim(&mac, &[]);
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    let chats = imsg.chats_list(10).await.unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0].identifier, "+14155551212");
    assert!(!chats[0].is_group);
    let history = imsg.history(chats[0].id, 10, false).await.unwrap();
    let texts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["second", "first"], "history is newest first");
    assert_eq!(imsg.newest_rowid().await.unwrap(), history[0].id);
    child.stop(&rpc).await;
}

#[tokio::test]
async fn watch_replays_after_the_cursor_and_then_streams_new_rows() {
    let mac = SimMac::new();
    for text in ["one", "two", "three"] {
        mac.inject("+14155551212", text);
    }
    let (rpc, child) = spawn_sim(&mac, &[]);
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    let chat = imsg.chats_list(1).await.unwrap().remove(0);
    let oldest_first: Vec<i64> = imsg
        .history(chat.id, 10, false)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|m| m.id)
        .collect();

    // N > 0: strictly after N.
    let mut sub = imsg
        .watch(&WatchParams {
            since_rowid: Some(oldest_first[0]),
            attachments: false,
            buffer_limit: None,
        })
        .await
        .unwrap();
    assert_eq!(next_message(&mut sub).await["text"], "two");
    assert_eq!(next_message(&mut sub).await["text"], "three");
    mac.inject("+14155551212", "four");
    assert_eq!(next_message(&mut sub).await["text"], "four");
    imsg.unwatch(sub.id()).await.unwrap();

    // Negative: replay from the very beginning.
    let mut all = imsg
        .watch(&WatchParams {
            since_rowid: Some(-1),
            attachments: false,
            buffer_limit: None,
        })
        .await
        .unwrap();
    assert_eq!(next_message(&mut all).await["text"], "one");
    child.stop(&rpc).await;
}

#[tokio::test]
async fn a_pending_request_fails_with_the_close_text_when_the_server_goes_away() {
    let mac = SimMac::new();
    let (rpc, child) = spawn_sim(&mac, &[]);
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    drop(imsg);
    child.stop(&rpc).await;
    rpc.closed().await;
    let err = rpc.call("chats.list", json!({"limit": 1})).await.unwrap_err();
    assert!(err.to_string().starts_with("imsg rpc not running"), "{err}");
}

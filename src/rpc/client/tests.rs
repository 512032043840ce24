//! Client behaviour against a scripted peer on an in-memory duplex stream.

use super::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, DuplexStream};

struct Peer {
    lines: tokio::io::Lines<BufReader<tokio::io::ReadHalf<DuplexStream>>>,
    out: tokio::io::WriteHalf<DuplexStream>,
}

impl Peer {
    async fn request(&mut self) -> Value {
        let line = self.lines.next_line().await.unwrap().expect("a request line");
        serde_json::from_str(&line).unwrap()
    }

    async fn send(&mut self, line: &str) {
        self.out.write_all(line.as_bytes()).await.unwrap();
        self.out.write_all(b"\n").await.unwrap();
    }
}

fn pair(options: ClientOptions, exit: Option<oneshot::Receiver<ExitInfo>>) -> (RpcClient, Peer) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (our_read, our_write) = tokio::io::split(ours);
    let (their_read, their_write) = tokio::io::split(theirs);
    let client = RpcClient::start(
        our_read,
        our_write,
        PeerInfo {
            stderr: StderrRing::new(),
            exit,
        },
        options,
    );
    (
        client,
        Peer {
            lines: BufReader::new(their_read).lines(),
            out: their_write,
        },
    )
}

#[tokio::test]
async fn matches_answers_to_requests_by_integer_id_in_any_order() {
    let (client, mut peer) = pair(ClientOptions::default(), None);
    let a = tokio::spawn({
        let client = client.clone();
        async move { client.call("chats.list", json!({"limit": 1})).await }
    });
    let first = peer.request().await;
    let b = tokio::spawn({
        let client = client.clone();
        async move { client.call("status", json!({})).await }
    });
    let second = peer.request().await;
    assert_eq!(first["jsonrpc"], "2.0");
    assert_eq!(first["method"], "chats.list");
    assert!(first["id"].is_u64());
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"which":"b"}}}}"#,
        second["id"]
    ))
    .await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":"{}","result":{{"which":"a"}}}}"#,
        first["id"]
    ))
    .await;
    assert_eq!(a.await.unwrap().unwrap()["which"], "a");
    assert_eq!(b.await.unwrap().unwrap()["which"], "b");
}

#[tokio::test]
async fn reports_remote_errors_with_code_and_data() {
    let (client, mut peer) = pair(ClientOptions::default(), None);
    let call = tokio::spawn(async move { client.call("messages.history", json!({})).await });
    let req = peer.request().await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32602,"message":"Invalid params","data":"chat_id is required"}}}}"#,
        req["id"]
    ))
    .await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(-32602));
    assert_eq!(err.to_string(), "Invalid params: code=-32602 chat_id is required");
}

#[tokio::test]
async fn times_out_and_ignores_the_late_answer() {
    let options = ClientOptions {
        request_timeout: Duration::from_millis(50),
        ..ClientOptions::default()
    };
    let (client, mut peer) = pair(options, None);
    let err = client.call("send", json!({})).await.unwrap_err();
    assert_eq!(err.to_string(), "imsg rpc timeout (send)");
    let late = peer.request().await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
        late["id"]
    ))
    .await;
    let next = tokio::spawn({
        let client = client.clone();
        async move { client.call("status", json!({})).await }
    });
    let req = peer.request().await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"ok":true}}}}"#,
        req["id"]
    ))
    .await;
    assert_eq!(next.await.unwrap().unwrap()["ok"], true);
}

#[tokio::test]
async fn delivers_notifications_that_arrive_before_the_subscribe_answer() {
    let (client, mut peer) = pair(ClientOptions::default(), None);
    let sub = tokio::spawn(async move { client.subscribe("watch.subscribe", json!({}), None).await });
    let req = peer.request().await;
    peer.send(r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":7,"message":{"id":1}}}"#)
        .await;
    peer.send(r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":99,"message":{"id":5}}}"#)
        .await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"subscription":7}}}}"#,
        req["id"]
    ))
    .await;
    peer.send(r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":7,"message":{"id":2}}}"#)
        .await;
    let (_result, mut sub) = sub.await.unwrap().unwrap();
    assert_eq!(sub.id(), 7);
    for want in [1, 2] {
        match sub.next().await {
            SubscriptionEvent::Notification(n) => assert_eq!(n.params["message"]["id"], want),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn skips_non_json_and_overlong_lines_and_keeps_reading() {
    let options = ClientOptions {
        max_line_bytes: 64,
        ..ClientOptions::default()
    };
    let (client, mut peer) = pair(options, None);
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call("status", json!({})).await }
    });
    let req = peer.request().await;
    peer.send("Permission Error: grant Full Disk Access").await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","method":"x","params":{{"pad":"{}"}}}}"#,
        "y".repeat(100)
    ))
    .await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"ok":1}}}}"#,
        req["id"]
    ))
    .await;
    assert_eq!(call.await.unwrap().unwrap()["ok"], 1);
    assert_eq!(
        client.stderr().lines(),
        vec!["Permission Error: grant Full Disk Access".to_string()]
    );
}

#[tokio::test]
async fn fails_pending_requests_with_the_exit_code_when_the_peer_exits() {
    let (exit_tx, exit_rx) = oneshot::channel();
    let (client, mut peer) = pair(ClientOptions::default(), Some(exit_rx));
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call("chats.list", json!({})).await }
    });
    let _ = peer.request().await;
    exit_tx.send(ExitInfo::Code(3)).unwrap();
    drop(peer);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "imsg rpc exited (code 3)");
    client.closed().await;
    let again = client.call("chats.list", json!({})).await.unwrap_err();
    assert!(again.to_string().starts_with("imsg rpc not running"), "{again}");
}

#[tokio::test]
async fn declares_overflow_when_the_consumer_falls_behind() {
    let options = ClientOptions {
        subscription_capacity: 2,
        ..ClientOptions::default()
    };
    let (client, mut peer) = pair(options, None);
    let sub = tokio::spawn({
        let client = client.clone();
        async move { client.subscribe("watch.subscribe", json!({}), None).await }
    });
    let req = peer.request().await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"subscription":1}}}}"#,
        req["id"]
    ))
    .await;
    let (_, mut sub) = sub.await.unwrap().unwrap();
    for id in 0..5 {
        peer.send(&format!(
            r#"{{"jsonrpc":"2.0","method":"message","params":{{"subscription":1,"message":{{"id":{id}}}}}}}"#
        ))
        .await;
    }
    // A round trip guarantees the reader has routed all five notifications.
    let ping = tokio::spawn({
        let client = client.clone();
        async move { client.call("status", json!({})).await }
    });
    let req = peer.request().await;
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
        req["id"]
    ))
    .await;
    ping.await.unwrap().unwrap();
    let mut seen = Vec::new();
    loop {
        match sub.next().await {
            SubscriptionEvent::Notification(n) => seen.push(n.params["message"]["id"].as_u64().unwrap()),
            SubscriptionEvent::Overflow => break,
            SubscriptionEvent::Closed(err) => panic!("closed: {err}"),
        }
    }
    assert_eq!(seen, vec![0, 1]);
}

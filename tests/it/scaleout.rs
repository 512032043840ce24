//! Scale-out on NATS JetStream end to end (issue 16): real `nats-server -js`, real bridges watching one
//! imsg-sim database, real worker processes (the example worker). Two bridges share the account
//! (active-active); one is SIGKILLed midway and restarted, the server is restarted once; the stream must
//! hold each message once in ROWID order and each message must get one reply, none twice. And a bridge
//! started before its server waits, says `connecting`, and delivers everything once the server is up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject, inject_many};

use crate::api::http;
use crate::natsd::{NatsServer, read_stream};
use crate::sshd::free_port;
use crate::support::{Bridge, OPEN_ACCESS, PATIENCE, SimMac, imsg_sim_bin};

const TOKEN: &str = "scale-out-token-0123456789";
const MESSAGES: usize = 500;
const SENDERS: usize = 5;
/// Rows that arrive while the server is unreachable.
const BURST: usize = 1500;

/// A bridge config for `mac` with its own state dir `name`, the nats sink at `url` and the control API
/// on `port`.
fn bridge_config(mac: &SimMac, name: &str, url: &str, port: u16) -> PathBuf {
    bridge_config_with(mac, name, url, port, "")
}

/// The same with more `bridge.agent` keys (`extra_agent` starts with a comma).
fn bridge_config_with(mac: &SimMac, name: &str, url: &str, port: u16, extra_agent: &str) -> PathBuf {
    let path = mac.dir.path().join(format!("{name}.json5"));
    let state = mac.dir.path().join(format!("state-{name}"));
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, {OPEN_ACCESS} }} }},
           bridge: {{ stateDir: {state:?}, http: {{ listen: \"127.0.0.1:{port}\" }},
                     agent: {{ kind: \"nats\", url: {url:?} {extra_agent} }} }} }}",
        cli = imsg_sim_bin().display().to_string(),
        db = mac.db.display().to_string(),
        state = state.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn start_bridge(config: &Path) -> Bridge {
    start_bridge_with(config, None)
}

/// `run` with the control API's token and one more environment variable (a fault knob of imsg-sim,
/// which inherits it).
fn start_bridge_with(config: &Path, env: Option<(&str, &str)>) -> Bridge {
    let mut vars = vec![("IMSG_BRIDGE_TOKEN", TOKEN)];
    vars.extend(env);
    Bridge::start_with_env(config, &["run"], &vars)
}

/// The example worker, built by `cargo test --all-targets` beside the test binary.
fn worker_bin() -> PathBuf {
    crate::natsd::example_worker_bin()
}

fn start_worker(url: &str) -> Child {
    Command::new(worker_bin())
        .env("NATS_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The texts of the messages we sent, one entry per row.
fn sent_texts(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT text FROM message WHERE is_from_me = 1 ORDER BY ROWID")
        .unwrap();
    stmt.query_map([], |row| row.get::<_, Option<String>>(0))
        .unwrap()
        .filter_map(|text| text.unwrap())
        .collect()
}

/// Wait until `done` holds, polling; panics with `what` and the bridges' logs after `limit`.
fn wait_until(limit: Duration, what: &str, logs: &[&Bridge], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = logs.iter().map(|b| b.stderr().join("\n")).collect();
    panic!(
        "{what} not reached within {limit:?}; logs:\n{}",
        logs.join("\n----\n")
    );
}

/// One direct message from the `i`th sender, text `m<i>`; the row's envelope id.
fn inject_message(db: &Path, i: usize) -> (i64, String) {
    let spec = InjectSpec {
        from: format!("+1555000{:04}", i % SENDERS),
        text: format!("m{i:03}"),
        ..Default::default()
    };
    let row = inject(db, &spec).unwrap();
    (row.id, format!("imessage:default:{}", row.guid))
}

#[test]
fn two_bridges_three_workers_a_killed_bridge_and_a_restarted_server_store_and_answer_each_message_once() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let mac = SimMac::new();
    let ports = (free_port(), free_port());
    let config_a = bridge_config(&mac, "a", &url, ports.0);
    let config_b = bridge_config(&mac, "b", &url, ports.1);
    let mut a = start_bridge(&config_a);
    let b = start_bridge(&config_b);
    for bridge in [&a, &b] {
        wait_until(PATIENCE, "watching and pulling replies", &[bridge], || {
            let log = bridge.stderr();
            let has = |needle: &str| log.iter().any(|l| l.contains(needle));
            has("watching for messages") && has("pulling replies")
        });
    }
    let mut workers: Vec<Child> = (0..3).map(|_| start_worker(&url)).collect();

    let mut rows: Vec<(i64, String)> = Vec::new();
    let inject_range = |rows: &mut Vec<(i64, String)>, range: std::ops::Range<usize>| {
        for i in range {
            rows.push(inject_message(&mac.db, i));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    inject_range(&mut rows, 0..200);
    // Midway, with replies flowing: bridge A dies as a crash would.
    wait_until(PATIENCE * 4, "50 replies", &[&a, &b], || {
        sent_texts(&mac.db).len() >= 50
    });
    a.kill();
    inject_range(&mut rows, 200..300);
    // The server restarts while B publishes and workers answer.
    nats.stop();
    inject_range(&mut rows, 300..350);
    nats.start_again();
    inject_range(&mut rows, 350..420);
    let a_log_before_kill = a.stderr();
    let a = start_bridge(&config_a);
    inject_range(&mut rows, 420..MESSAGES);

    let expected_replies: BTreeSet<String> = (0..MESSAGES).map(|i| format!("echo: m{i:03}")).collect();
    wait_until(
        Duration::from_secs(240),
        "a reply to every message",
        &[&a, &b],
        || {
            let sent: BTreeSet<String> = sent_texts(&mac.db).into_iter().collect();
            // A claim lost in the crash is allowed (at most one, logged by id): wait for the rest.
            let missing = expected_replies.difference(&sent).count();
            missing == 0 || (missing == 1 && lost_lines(&a, &b, &a_log_before_kill) == 1)
        },
    );

    // The premises: B lost its server midway and went on; A came back after its crash.
    let b_log = b.stderr();
    assert!(
        b_log.iter().any(|l| l.contains("NATS connection lost")),
        "the restart reached bridge B:\n{}",
        b_log.join("\n")
    );
    a.wait_for_log("watching for messages");
    check_stream(&url, &rows);
    check_replies(
        &mac.db,
        &expected_replies,
        &[&a_log_before_kill, &a.stderr(), &b.stderr()],
    );
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
}

/// How many replies the bridges logged as lost (claimed by a bridge that stopped during the send).
fn lost_lines(a: &Bridge, b: &Bridge, a_before: &[String]) -> usize {
    [a.stderr(), b.stderr(), a_before.to_vec()]
        .iter()
        .flatten()
        .filter(|line| line.contains("stopped before it recorded the send"))
        .count()
}

/// The stream holds exactly one copy of each message, in ROWID order.
fn check_stream(url: &str, rows: &[(i64, String)]) {
    let stored = read_stream(url, "IMSG");
    let ids: Vec<String> = stored
        .iter()
        .map(|m| m.msg_id.clone().unwrap_or_default())
        .collect();
    let want: Vec<String> = rows.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), MESSAGES, "messages in the stream");
    assert_eq!(ids, want, "each message once, in ROWID order");
    let rowids: Vec<i64> = stored
        .iter()
        .map(|m| m.payload["rowid"].as_i64().unwrap())
        .collect();
    assert!(
        rowids.windows(2).all(|w| w[0] < w[1]),
        "rowids ascend: {rowids:?}"
    );
    assert!(
        stored.iter().all(|m| m.subject == "imsg.in.default"),
        "one subject per account"
    );
}

/// Each message got exactly one reply; at most one is missing, and only if a log names it lost.
fn check_replies(db: &Path, expected: &BTreeSet<String>, logs: &[&Vec<String>]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for text in sent_texts(db) {
        *counts.entry(text).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "replies sent more than once: {twice:?}");
    let missing: Vec<_> = expected.iter().filter(|t| !counts.contains_key(*t)).collect();
    let lost_lines: Vec<&String> = logs
        .iter()
        .flat_map(|log| log.iter())
        .filter(|l| l.contains("stopped before it recorded the send"))
        .collect();
    assert!(
        missing.len() <= lost_lines.len() && missing.len() <= 1,
        "replies missing: {missing:?}; logged as lost: {lost_lines:?}"
    );
    let unexpected: Vec<_> = counts.keys().filter(|t| !expected.contains(*t)).collect();
    assert!(unexpected.is_empty(), "replies nobody asked for: {unexpected:?}");
}

#[test]
fn a_bridge_started_before_its_server_says_connecting_holds_its_cursor_and_delivers_everything_once_up() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mac = SimMac::new();
    let api = free_port();
    let bridge = start_bridge(&bridge_config(&mac, "early", &url, api));
    bridge.wait_for_log("watching for messages");
    // A busy chat while NATS is unreachable: more rows than the watch buffers, so the feed must page
    // them again from the held cursor once envelopes flow.
    let spec = InjectSpec {
        from: "+15550009999".into(),
        text: "burst".into(),
        count: BURST as u32,
        ..Default::default()
    };
    let rows: Vec<(i64, String)> = inject_many(&mac.db, &spec)
        .unwrap()
        .into_iter()
        .map(|row| (row.id, format!("imessage:default:{}", row.guid)))
        .collect();
    assert_eq!(rows.len(), BURST);
    std::thread::sleep(Duration::from_secs(2));
    let status = status_json(api);
    assert_eq!(status["nats"]["state"], "connecting", "{status}");
    assert_eq!(
        status["accounts"]["default"]["status"]["cursor"], 0,
        "the cursor holds: {status}"
    );

    let _nats = NatsServer::start_on(port);
    wait_until(PATIENCE * 4, "the burst in the stream", &[&bridge], || {
        status_json(api)["accounts"]["default"]["status"]["cursor"] == rows.last().unwrap().0
    });
    let ids = stored_ids(&url);
    let want: Vec<String> = rows.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, want, "each message once, in order, after the server came up");
    let status = status_json(api);
    assert_eq!(status["nats"]["state"], "connected", "{status}");
    assert_eq!(status["nats"]["pendingAcks"]["default"], 0, "{status}");
    assert!(
        status["nats"]["meanPublishLatencyMs"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    let (code, metrics) = http(api, "GET", "/metrics", Some(TOKEN), None);
    assert_eq!(code, 200);
    for line in [
        "imsg_bridge_nats_connected{stream=\"IMSG\"} 1",
        &format!("imsg_bridge_nats_published_total{{account=\"default\"}} {BURST}"),
        "imsg_bridge_nats_pending_acks{account=\"default\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[test]
fn an_unset_nats_token_variable_stops_run_with_exit_2_and_one_line_naming_it() {
    let mac = SimMac::new();
    let path = mac.dir.path().join("token.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?} }} }},
           bridge: {{ stateDir: {state:?}, agent: {{ kind: \"nats\", tokenEnv: \"IMSG_TEST_NATS_TOKEN_UNSET\" }} }} }}",
        cli = imsg_sim_bin().display().to_string(),
        db = mac.db.display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(crate::support::imsg_bridge_bin())
        .args(["--config", path.to_str().unwrap(), "run"])
        .env_remove("IMSG_TEST_NATS_TOKEN_UNSET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("IMSG_TEST_NATS_TOKEN_UNSET"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("not set or empty"), "{stderr}");
}

fn status_json(port: u16) -> serde_json::Value {
    let (code, body) = http(port, "GET", "/v1/status", Some(TOKEN), None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Inject three messages and wait until the bridge's cursor passed them (each acknowledged by
/// JetStream) with the connection `connected`.
fn delivers_three(mac: &SimMac, bridge: &Bridge, api: u16) {
    bridge.wait_for_log("watching for messages");
    let last = (0..3).map(|i| inject_message(&mac.db, i).0).max().unwrap();
    wait_until(PATIENCE, "three envelopes acknowledged", &[bridge], || {
        status_json(api)["accounts"]["default"]["status"]["cursor"] == last
    });
    let status = status_json(api);
    assert_eq!(status["nats"]["state"], "connected", "{status}");
}

#[test]
fn logs_in_with_the_token_its_token_env_names_and_never_logs_it() {
    const SECRET: &str = "nats-secret-token-4711";
    let port = free_port();
    let _nats = NatsServer::start_with(port, &["--auth".to_string(), SECRET.to_string()]);
    let mac = SimMac::new();
    let api = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let config = bridge_config_with(&mac, "token", &url, api, ", tokenEnv: \"IMSG_TEST_NATS_TOKEN\"");
    let bridge = Bridge::start_with_env(
        &config,
        &["-v", "run"],
        &[("IMSG_BRIDGE_TOKEN", TOKEN), ("IMSG_TEST_NATS_TOKEN", SECRET)],
    );
    delivers_three(&mac, &bridge, api);
    let log = bridge.stderr().join("\n");
    assert!(!log.contains(SECRET), "the token is never logged:\n{log}");
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate_connects_and_delivers() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let file = |name: &str| pki.path().join(name).display().to_string();
    let port = free_port();
    let flags = [
        "--tls",
        "--tlscert",
        &file("server.pem"),
        "--tlskey",
        &file("server.key"),
        "--tlscacert",
        &file("ca.pem"),
        "--tlsverify",
    ];
    let _nats = NatsServer::start_with(port, &flags.map(String::from));
    let mac = SimMac::new();
    let api = free_port();
    let tls = format!(
        ", tls: {{ caFile: {:?}, certFile: {:?}, keyFile: {:?} }}",
        file("ca.pem"),
        file("client.pem"),
        file("client.key")
    );
    let url = format!("tls://127.0.0.1:{port}");
    let bridge = start_bridge(&bridge_config_with(&mac, "tls", &url, api, &tls));
    delivers_three(&mac, &bridge, api);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all P-256, made with openssl(1).
fn make_pki(dir: &Path) {
    let script = r#"set -e
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=imsg-bridge-test-ca
openssl req $ec -keyout server.key -out server.csr -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
openssl req $ec -keyout client.key -out client.csr -subj /CN=imsg-bridge
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext
"#;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publish one reply to `imsg.out.default` with `msg_id` as its `Nats-Msg-Id`.
async fn publish_reply(js: &async_nats::jetstream::Context, msg_id: &str, to: &str, text: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    let body = serde_json::json!({ "to": to, "text": text }).to_string();
    js.publish_with_headers("imsg.out.default", headers, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[test]
fn a_reply_whose_claim_outlived_its_bridge_is_logged_by_id_and_never_sent_and_a_sent_one_is_not_repeated() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let bridge = start_bridge(&bridge_config(&mac, "claims", &nats.url(), api));
    wait_until(PATIENCE, "pulling replies", &[&bridge], || {
        bridge.stderr().iter().any(|l| l.contains("pulling replies"))
    });
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        let claims = js.get_key_value("IMSG_REPLIES_claims").await.unwrap();
        // As a bridge that crashed mid-send leaves it, and as one that finished leaves it.
        let crashed = r#"{"bridge":"gone-host:4242","state":"sending","at":1700000000}"#;
        claims.put("default.id.crashed-1", crashed.into()).await.unwrap();
        let sent = r#"{"bridge":"other-host:7","state":"sent","at":1700000000}"#;
        claims.put("default.id.sent-1", sent.into()).await.unwrap();
        publish_reply(&js, "crashed-1", "+15550001111", "never twice").await;
        publish_reply(&js, "sent-1", "+15550001111", "already sent").await;
        publish_reply(&js, "fresh-1", "+15550001111", "a fresh reply").await;
    });
    // Two more deliveries, 10 s apart, give a live holder time before the reply counts as lost.
    let lost =
        "reply crashed-1 was claimed by gone-host:4242 and that bridge stopped before it recorded the send";
    wait_until(PATIENCE * 3, "the lost reply logged by id", &[&bridge], || {
        bridge.stderr().iter().any(|l| l.contains(lost))
    });
    wait_until(PATIENCE, "the fresh reply", &[&bridge], || {
        sent_texts(&mac.db) == ["a fresh reply"]
    });
    // Counted once the reply is settled with JetStream, a moment after the log line.
    let outcomes = [
        "imsg_bridge_nats_replies_total{account=\"default\",outcome=\"sent\"} 1",
        "imsg_bridge_nats_replies_total{account=\"default\",outcome=\"skipped_claimed\"} 1",
        "imsg_bridge_nats_replies_total{account=\"default\",outcome=\"lost_claim\"} 1",
    ];
    wait_until(PATIENCE, "the three outcomes counted", &[&bridge], || {
        let (_, metrics) = http(api, "GET", "/metrics", Some(TOKEN), None);
        outcomes.iter().all(|line| metrics.lines().any(|l| l == *line))
    });
    assert_eq!(
        sent_texts(&mac.db),
        ["a fresh reply"],
        "neither claimed reply went out"
    );
    let fresh = crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        let claims = js.get_key_value("IMSG_REPLIES_claims").await.unwrap();
        claims.entry("default.id.fresh-1").await.unwrap().unwrap()
    });
    let record: serde_json::Value = serde_json::from_slice(&fresh.value).unwrap();
    assert_eq!(record["state"], "sent", "{record}");
}

/// `doctor --json`'s `agent.nats` row: (status, detail, remedy).
fn doctor_nats_row(config: &Path) -> (String, String, String) {
    let (_, checks) = crate::doctor::doctor(config, &[]);
    let row = crate::doctor::check(&checks, "agent.nats");
    let text = |key: &str| row[key].as_str().unwrap_or_default().to_string();
    (text("status"), text("detail"), text("remedy"))
}

#[test]
fn doctor_checks_the_nats_server_its_streams_and_the_duplicate_window() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mac = SimMac::new();
    let config = bridge_config(&mac, "doctor", &url, free_port());
    let (status, detail, remedy) = doctor_nats_row(&config);
    assert_eq!(status, "fail", "{detail}");
    assert!(
        detail.starts_with(&format!("cannot reach the NATS server ({url}")),
        "{detail}"
    );
    assert!(remedy.contains("nothing is lost"), "{remedy}");

    let _nats = NatsServer::start_on(port);
    let (status, detail, remedy) = doctor_nats_row(&config);
    assert_eq!(status, "ok", "{detail}");
    assert!(
        detail.contains("IMSG not created yet (run creates it)"),
        "{detail}"
    );
    assert!(
        remedy.contains("raise bridge.agent.duplicateWindowSeconds to 7200"),
        "the default window is shorter than the default replay bound: {remedy}"
    );
}

#[test]
fn a_catch_up_older_than_the_duplicate_window_is_flagged_in_the_log_and_the_status() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let config = bridge_config_with(&mac, "lag", &nats.url(), api, ", duplicateWindowSeconds: 1");
    let mut first = start_bridge(&config);
    first.wait_for_log("watching for messages");
    first.kill();
    let last = (0..3).map(|i| inject_message(&mac.db, i).0).max().unwrap();
    // Down for longer than the window: the rows it catches up on are older than the window.
    std::thread::sleep(Duration::from_millis(2500));
    let bridge = start_bridge(&config);
    bridge.wait_for_log("control API listening");
    wait_until(PATIENCE, "the catch-up acknowledged", &[&bridge], || {
        status_json(api)["accounts"]["default"]["status"]["cursor"] == last
    });
    let warnings: Vec<String> = bridge
        .stderr()
        .into_iter()
        .filter(|l| l.contains("publishing messages older than the duplicate window (1 s)"))
        .collect();
    assert_eq!(warnings.len(), 1, "once a minute at most: {warnings:?}");
    let status = status_json(api);
    assert_eq!(status["nats"]["lagExceedsWindow"], true, "{status}");
    assert!(status["nats"]["lagSeconds"].as_f64().unwrap() >= 1.0, "{status}");
    assert!(
        status["nats"]["activeActive"]
            .as_str()
            .unwrap()
            .contains("set duplicateWindowSeconds >= 7200"),
        "{status}"
    );
}

#[test]
fn the_claim_bucket_the_bridge_creates_lets_a_released_claim_be_taken_again_and_no_other() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let bridge = start_bridge(&bridge_config(&mac, "bucket", &nats.url(), free_port()));
    wait_until(PATIENCE, "pulling replies", &[&bridge], || {
        bridge.stderr().iter().any(|l| l.contains("pulling replies"))
    });
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        let claims = js.get_key_value("IMSG_REPLIES_claims").await.unwrap();
        claims.create("default.id.r1", "first".into()).await.unwrap();
        assert!(
            claims.create("default.id.r1", "second".into()).await.is_err(),
            "create-only"
        );
        claims.delete("default.id.r1").await.unwrap();
        claims
            .create("default.id.r1", "after release".into())
            .await
            .unwrap();
        let entry = claims.entry("default.id.r1").await.unwrap().unwrap();
        assert_eq!(&entry.value[..], b"after release");
        let info = js
            .get_stream("KV_IMSG_REPLIES_claims")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.max_messages_per_subject, 1, "one value per key");
        assert_eq!(info.config.max_age, Duration::from_secs(7 * 24 * 3600));
    });
}

#[test]
fn streams_deleted_under_a_running_bridge_are_made_again_and_envelopes_and_replies_flow() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let bridge = start_bridge(&bridge_config(&mac, "deleted", &nats.url(), api));
    delivers_three(&mac, &bridge, api);
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        js.delete_stream("IMSG").await.unwrap();
        js.delete_stream("IMSG_REPLIES").await.unwrap();
    });
    let (rowid, id) = inject_message(&mac.db, 3);
    wait_for_cursor(&bridge, api, rowid, "the envelope after the stream was deleted");
    let ids = stored_ids(&nats.url());
    assert_eq!(
        ids,
        [id],
        "the new stream holds the envelope published after it was made again"
    );
    // The reply stream is back too, and its consumer with it: a reply goes out.
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        let deadline = Instant::now() + PATIENCE;
        while js.get_stream("IMSG_REPLIES").await.is_err() {
            assert!(Instant::now() < deadline, "IMSG_REPLIES was not made again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        publish_reply(&js, "after-delete-1", "+15550001111", "after the delete").await;
    });
    wait_until(PATIENCE * 2, "the reply after the delete", &[&bridge], || {
        sent_texts(&mac.db) == ["after the delete"]
    });
}

#[test]
fn an_envelope_larger_than_the_server_takes_is_dead_lettered_and_the_next_one_lands() {
    let dir = tempfile::tempdir().unwrap();
    let server_conf = dir.path().join("small.conf");
    std::fs::write(&server_conf, "max_payload: 8192\n").unwrap();
    let port = free_port();
    let nats = NatsServer::start_with(port, &["-c".to_string(), server_conf.display().to_string()]);
    let mac = SimMac::new();
    let api = free_port();
    let bridge = start_bridge(&bridge_config(&mac, "big", &nats.url(), api));
    bridge.wait_for_log("watching for messages");
    let big = InjectSpec {
        from: "+15550007777".into(),
        text: "x".repeat(20_000),
        ..Default::default()
    };
    inject(&mac.db, &big).unwrap();
    let (rowid, id) = inject_message(&mac.db, 1);
    wait_for_cursor(&bridge, api, rowid, "the small envelope after the big one");
    let ids = stored_ids(&nats.url());
    assert_eq!(ids, [id], "only the one that fits");
    let letters = mac.dir.path().join("state-big/dead-letter/default");
    let kept: Vec<_> = std::fs::read_dir(&letters).unwrap().collect();
    assert_eq!(kept.len(), 1, "the big envelope is kept in {}", letters.display());
    assert!(
        bridge
            .stderr()
            .iter()
            .any(|l| l.contains("dead-lettered") && l.contains("NATS refused it")),
        "{}",
        bridge.stderr().join("\n")
    );
}

/// The claim of `key` in the bucket, as JSON, if there is a live one.
fn claim_record(url: &str, key: &str) -> Option<serde_json::Value> {
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(url).await;
        let claims = js.get_key_value("IMSG_REPLIES_claims").await.unwrap();
        let entry = claims.get(key).await.unwrap()?;
        Some(serde_json::from_slice(&entry).unwrap())
    })
}

fn publish_one_reply(url: &str, msg_id: &str, text: &str) {
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(url).await;
        publish_reply(&js, msg_id, "+15550001111", text).await;
    });
}

fn replies_counted(api: u16, outcome: &str, at_least: u64) -> bool {
    let (_, metrics) = http(api, "GET", "/metrics", Some(TOKEN), None);
    let prefix = format!("imsg_bridge_nats_replies_total{{account=\"default\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .any(|n| n.parse::<u64>().unwrap_or(0) >= at_least)
}

#[test]
fn a_send_refused_before_dispatch_gives_its_claim_back_and_goes_out_once_the_mac_takes_it() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let config = bridge_config(&mac, "refused", &nats.url(), api);
    // Messages' Automation is denied: imsg refuses every send before anything is written.
    let denied = start_bridge_with(&config, Some(("IMSG_SIM_FAULT_SEND_FAILS", "1")));
    delivers_three(&mac, &denied, api);
    publish_one_reply(&nats.url(), "refused-1", "after the fix");
    wait_until(PATIENCE, "the refused send retried", &[&denied], || {
        replies_counted(api, "retried", 1)
    });
    assert_eq!(
        claim_record(&nats.url(), "default.id.refused-1"),
        None,
        "the claim was given back"
    );
    assert!(sent_texts(&mac.db).is_empty());
    drop(denied);
    // Automation granted: the same reply, delivered again after its backoff, goes out once.
    let fixed = start_bridge(&config);
    wait_until(PATIENCE * 2, "the reply after the fix", &[&fixed], || {
        sent_texts(&mac.db) == ["after the fix"]
    });
    let record = claim_record(&nats.url(), "default.id.refused-1").unwrap();
    assert_eq!(record["state"], "sent", "{record}");
}

#[test]
fn a_send_that_may_have_gone_out_keeps_its_claim_and_is_never_sent_again() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let config = bridge_config(&mac, "unknown", &nats.url(), api);
    // The reply stream made beforehand with a 1 s duplicate window, so the worker's repeat below
    // reaches the bridge instead of being dropped by JetStream (the bridge keeps existing streams).
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "IMSG_REPLIES".into(),
            subjects: vec!["imsg.out.>".into()],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
    });
    // osascript "times out" after the message was written: the outcome is unknown to the bridge.
    let bridge = start_bridge_with(&config, Some(("IMSG_SIM_FAULT_SEND_UNKNOWN", "1")));
    delivers_three(&mac, &bridge, api);
    publish_one_reply(&nats.url(), "unknown-1", "maybe sent");
    wait_until(PATIENCE, "the uncertain send settled", &[&bridge], || {
        replies_counted(api, "refused", 1)
    });
    let record = claim_record(&nats.url(), "default.id.unknown-1").unwrap();
    assert_eq!(record["state"], "uncertain", "{record}");
    // The worker publishing it again, outside the reply stream's window, changes nothing.
    std::thread::sleep(Duration::from_millis(1500));
    publish_one_reply(&nats.url(), "unknown-1", "maybe sent");
    wait_until(PATIENCE, "the repeat skipped", &[&bridge], || {
        replies_counted(api, "skipped_claimed", 1)
    });
    assert_eq!(
        sent_texts(&mac.db),
        ["maybe sent"],
        "written once, by the first attempt"
    );
}

#[test]
fn a_bridge_that_stopped_mid_send_names_the_reply_at_its_next_start() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let config = bridge_config(&mac, "midsend", &nats.url(), free_port());
    // What a bridge killed between its claim and the end of the send leaves in its state dir.
    let record = mac.dir.path().join("state-midsend/nats/inflight-default.json");
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    std::fs::write(&record, r#"["reply:imessage:default:G-7"]"#).unwrap();
    let bridge = start_bridge(&config);
    wait_until(PATIENCE, "the report of the claimed reply", &[&bridge], || {
        bridge.stderr().iter().any(|l| {
            l.contains("reply reply:imessage:default:G-7 was claimed by this bridge before it stopped")
        })
    });
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "[]", "reported once");
}

#[test]
fn replies_to_one_chat_go_out_in_the_order_workers_published_them() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let bridge = start_bridge(&bridge_config(&mac, "order", &nats.url(), api));
    delivers_three(&mac, &bridge, api);
    let texts: Vec<String> = (0..40).map(|i| format!("part {i:02}")).collect();
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        for (i, text) in texts.iter().enumerate() {
            publish_reply(&js, &format!("ordered-{i}"), "+15550001111", text).await;
        }
    });
    wait_until(PATIENCE * 2, "every part sent", &[&bridge], || {
        sent_texts(&mac.db).len() >= texts.len()
    });
    assert_eq!(sent_texts(&mac.db), texts, "sent in the order published");
}

/// The `Nats-Msg-Id`s of stream IMSG, in stream order.
fn stored_ids(url: &str) -> Vec<String> {
    read_stream(url, "IMSG")
        .into_iter()
        .map(|m| m.msg_id.unwrap_or_default())
        .collect()
}

/// Wait until the bridge's cursor reached `rowid`: everything up to it has its PubAck.
fn wait_for_cursor(bridge: &Bridge, api: u16, rowid: i64, what: &str) {
    wait_until(PATIENCE, what, &[bridge], || {
        status_json(api)["accounts"]["default"]["status"]["cursor"] == rowid
    });
}

#[test]
fn replies_waiting_for_a_mac_that_is_down_stay_within_the_in_flight_bound() {
    let nats = NatsServer::start();
    let mac = SimMac::new();
    let api = free_port();
    let config = bridge_config(&mac, "bound", &nats.url(), api);
    // The Mac is unreachable: imsg cannot start, so nothing takes replies out of the outbox.
    let text = std::fs::read_to_string(&config).unwrap();
    let cli = imsg_sim_bin().display().to_string();
    std::fs::write(&config, text.replace(&cli, "/nonexistent/imsg")).unwrap();
    let bridge = start_bridge(&config);
    wait_until(PATIENCE, "pulling replies", &[&bridge], || {
        bridge.stderr().iter().any(|l| l.contains("pulling replies"))
    });
    crate::natsd::block_on(async {
        let js = crate::natsd::connect(&nats.url()).await;
        for i in 0..40 {
            publish_reply(&js, &format!("waiting-{i}"), "+15550001111", &format!("w{i}")).await;
        }
    });
    let ack_pending = || {
        crate::natsd::block_on(async {
            let js = crate::natsd::connect(&nats.url()).await;
            let mut consumer = js
                .get_stream("IMSG_REPLIES")
                .await
                .unwrap()
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("imsg-bridge-default")
                .await
                .unwrap();
            consumer.info().await.unwrap().num_ack_pending
        })
    };
    wait_until(PATIENCE, "eight replies taken", &[&bridge], || ack_pending() == 8);
    // And no more later: the rest wait in the stream, not in the bridge.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ack_pending(), 8, "pulled and unacked replies stay at the bound");
    assert_eq!(status_json(api)["nats"]["pendingAcks"]["default"], 8);
    assert!(sent_texts(&mac.db).is_empty());
}

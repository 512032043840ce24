//! Catching up after downtime over the process transport: a backlog larger than imsg's watch
//! buffer, written in one transaction while the bridge was stopped, restarted again and again; and a
//! watch whose buffer overflows while the bridge is live.

use serde_json::Value;

use crate::api::{TOKEN, http};
use crate::sshd::free_port;
use crate::support::{Bridge, SimMac};

const SIGTERM: i32 = 15;
const FROM: &str = "+14155551212";

/// `imsg-sim inject --count n`: n messages `text 1` … `text n` in one transaction.
fn inject_backlog(mac: &SimMac, text: &str, n: usize) {
    mac.inject_with(&["--from", FROM, "--text", text, "--count", &n.to_string()]);
}

fn texts_and_rowids(lines: &[String]) -> (Vec<String>, Vec<i64>) {
    let envelopes: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let texts = envelopes
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    let rowids = envelopes.iter().map(|e| e["rowid"].as_i64().unwrap()).collect();
    (texts, rowids)
}

/// Start the bridge once so that its cursor exists (a first start begins at the newest message).
fn first_start(config: &std::path::Path) {
    let bridge = Bridge::start(config, &["run"]);
    bridge.wait_for_log("watching for messages");
    let (code, lines) = bridge.stop(SIGTERM);
    assert_eq!((code, lines.len()), (Some(0), 0));
}

#[test]
fn five_restarts_after_a_thousand_message_backlog_each_deliver_exactly_the_newest_five_hundred() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    first_start(&config);
    for round in 0..5 {
        let text = format!("round {round}");
        inject_backlog(&mac, &text, 1000);
        let bridge = Bridge::start(&config, &["run"]);
        bridge.wait_for_log("caught up");
        bridge.wait_for_log("watching for messages");
        let log = bridge.stderr().join("\n");
        let (code, lines) = bridge.stop(SIGTERM);
        assert_eq!(code, Some(0));
        let (texts, rowids) = texts_and_rowids(&lines);
        let expected: Vec<String> = (501..=1000).map(|i| format!("{text} {i}")).collect();
        assert_eq!(
            texts, expected,
            "round {round}: the newest 500, once, in order\n{log}"
        );
        assert!(
            rowids.windows(2).all(|w| w[0] < w[1]),
            "ROWIDs ascend: {rowids:?}"
        );
        assert!(
            log.contains("skipped 500 rows beyond bridge.replay (rowid"),
            "one summary line for the skipped rows:\n{log}"
        );
        assert_eq!(log.matches("skipped 500 rows").count(), 1, "{log}");
        assert!(
            !log.contains("overflow") && !log.contains("connection lost") && !log.contains("backing off"),
            "a backlog is not a failure:\n{log}"
        );
    }
}

#[test]
fn imsg_watch_overflows_resubscribe_on_the_same_connection_and_lose_nothing() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    let api = free_port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "bridge: {",
        &format!("bridge: {{ http: {{ listen: \"127.0.0.1:{api}\", tokenEnv: \"IMSG_TEST_TOKEN\" }},"),
    );
    std::fs::write(&config, text).unwrap();
    // A server whose watch buffer holds one notification: any burst overflows it.
    let env = [
        ("IMSG_SIM_FAULT_MAX_BUFFER_LIMIT", "1"),
        ("IMSG_TEST_TOKEN", TOKEN),
    ];
    let bridge = Bridge::start_with_env(&config, &["run"], &env);
    bridge.wait_for_log("watching for messages");
    inject_backlog(&mac, "live", 600);
    bridge.wait_for_lines(600);
    let (_, status) = http(api, "GET", "/v1/status", Some(TOKEN), None);
    let status: Value = serde_json::from_str(&status).unwrap();
    let overflows = &status["accounts"]["default"]["counters"]["watch_overflows_total"];
    assert!(
        overflows.as_i64().is_some_and(|n| n >= 1),
        "counted in /v1/status: {status}"
    );
    let log = bridge.stderr().join("\n");
    let (code, lines) = bridge.stop(SIGTERM);
    assert_eq!(code, Some(0));
    let (texts, _) = texts_and_rowids(&lines);
    let expected: Vec<String> = (1..=600).map(|i| format!("live {i}")).collect();
    assert_eq!(texts, expected, "every message once, in order\n{log}");
    assert!(
        log.contains("the watch overflowed (imsg's buffer): resubscribing from the cursor"),
        "the fault made imsg's buffer overflow:\n{log}"
    );
    assert_eq!(
        log.matches("starting imsg rpc").count(),
        1,
        "no new imsg process:\n{log}"
    );
    assert!(
        !log.contains("connection lost") && !log.contains("backing off") && !log.contains("reconnecting"),
        "overflow is backpressure, not a failure:\n{log}"
    );
}

//! `imsg-bridge run` end to end over the process transport: imsg-sim as imsg, real chat.db, real
//! processes, restarts in the middle of a stream.

use std::collections::BTreeMap;
use std::sync::mpsc;

use serde_json::Value;

use crate::support::{Bridge, SimMac};

const SIGTERM: i32 = 15;

#[test]
fn restarting_run_midway_delivers_each_message_exactly_once_in_rowid_order() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    let first = Bridge::start(&config, &["run"]);
    first.wait_for_log("watching for messages");

    // Phases, coordinated so the test does not depend on speed: 100 messages while the first run
    // is up (stopped as soon as 60 are out, so some are still in flight), 50 while no bridge runs,
    // 50 after the restart.
    let total = 200;
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let injector = std::thread::spawn({
        let db = mac.db.clone();
        move || {
            let mac = SimMac {
                dir: tempfile::tempdir().unwrap(),
                db,
            };
            for (phase, range) in [(0, 0..100), (1, 100..150), (2, 150..total)] {
                if phase > 0 {
                    go_rx.recv().unwrap();
                }
                for i in range {
                    mac.inject("+14155551212", &format!("msg {i}"));
                }
                done_tx.send(phase).unwrap();
            }
        }
    });

    first.wait_for_lines(60);
    let (code, first_lines) = first.stop(SIGTERM);
    assert_eq!(code, Some(0), "a SIGTERM stop is clean");
    assert_eq!(done_rx.recv().unwrap(), 0);
    go_tx.send(()).unwrap();
    assert_eq!(done_rx.recv().unwrap(), 1, "downtime injections done");

    let second = Bridge::start(&config, &["run"]);
    second.wait_for_log("watching for messages");
    go_tx.send(()).unwrap();
    assert_eq!(done_rx.recv().unwrap(), 2);
    injector.join().unwrap();
    second.wait_for_lines(total - first_lines.len());
    let (code, second_lines) = second.stop(SIGTERM);
    assert_eq!(code, Some(0));

    let envelopes: Vec<Value> = first_lines
        .iter()
        .chain(&second_lines)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rowids: Vec<i64> = envelopes.iter().map(|e| e["rowid"].as_i64().unwrap()).collect();
    assert!(
        rowids.windows(2).all(|w| w[0] < w[1]),
        "not in ROWID order: {rowids:?}"
    );
    let mut seen = BTreeMap::new();
    for envelope in &envelopes {
        *seen
            .entry(envelope["text"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    for i in 0..total {
        assert_eq!(
            seen.get(&format!("msg {i}")),
            Some(&1),
            "msg {i} not delivered exactly once"
        );
    }
    assert_eq!(envelopes.len(), total);
}

#[test]
fn envelopes_carry_the_real_fields_of_the_message() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    mac.inject("Jane@Example.com", "hello there");
    bridge.wait_for_lines(1);
    let (_, lines) = bridge.stop(SIGTERM);
    let env: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(env["account"], "default");
    assert_eq!(env["channel"], "imessage");
    assert_eq!(env["chat_type"], "direct");
    assert_eq!(env["text"], "hello there");
    assert_eq!(env["sender"]["handle"], "Jane@Example.com");
    assert_eq!(env["sender"]["normalized"], "jane@example.com");
    assert_eq!(env["to"], "imessage:Jane@Example.com");
    assert_eq!(env["session_key"], "agent:main:main");
    assert!(env["id"].as_str().unwrap().starts_with("imessage:default:"));
    assert!(env["rowid"].as_i64().unwrap() > 0);
    assert!(env["chat"]["chat_id"].as_i64().unwrap() > 0);
    assert!(env["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_config_error_exits_2_with_the_key_path_and_a_suggestion() {
    let mac = SimMac::new();
    let config = mac.write_process_config("dmPoliccy: \"open\",");
    let out = std::process::Command::new(crate::support::imsg_bridge_bin())
        .arg("--config")
        .arg(&config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("channels.imessage.dmPoliccy"), "{stderr}");
    assert!(stderr.contains("dmPolicy"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn a_missing_imsg_fails_run_with_a_remedy() {
    let mac = SimMac::new();
    let path = mac.dir.path().join("config.json5");
    std::fs::write(&path, format!(
        "{{ channels: {{ imessage: {{ cliPath: \"/nonexistent/imsg\" }} }}, bridge: {{ stateDir: {:?} }} }}",
        mac.state_dir().display().to_string()
    ))
    .unwrap();
    let out = std::process::Command::new(crate::support::imsg_bridge_bin())
        .arg("--config")
        .arg(&path)
        .arg("chats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot start /nonexistent/imsg"), "{stderr}");
    assert!(stderr.contains("check channels.imessage.cliPath"), "{stderr}");
}

#[test]
fn sighup_starts_a_new_account_and_leaves_the_others_running() {
    let first = SimMac::new();
    let second = SimMac::new();
    let path = first.dir.path().join("fleet.json5");
    let account = |mac: &SimMac| {
        format!(
            "{{ cliPath: {:?}, dbPath: {:?} }}",
            crate::support::imsg_sim_bin().display().to_string(),
            mac.db.display().to_string()
        )
    };
    let write = |accounts: &str| {
        std::fs::write(
            &path,
            format!(
                "{{ channels: {{ imessage: {{ {} accounts: {{ {accounts} }} }} }}, bridge: {{ stateDir: {:?} }} }}",
                crate::support::OPEN_ACCESS,
                first.state_dir().display().to_string()
            ),
        )
        .unwrap()
    };
    write(&format!("one: {}", account(&first)));
    let bridge = Bridge::start(&path, &["run"]);
    bridge.wait_for_log("watching for messages");
    write(&format!("one: {}, two: {}", account(&first), account(&second)));
    let status = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(bridge.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    bridge.wait_for_log("SIGHUP: new account; starting it");
    bridge.wait_for_log("account=two");
    // Give the new account a moment to subscribe, then talk to both.
    let deadline = std::time::Instant::now() + crate::support::PATIENCE;
    while !bridge
        .stderr()
        .iter()
        .any(|l| l.contains("watching for messages") && l.contains("two"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            bridge.stderr().join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    second.inject("+14155551212", "to the new account");
    first.inject("+14155551212", "to the old one");
    bridge.wait_for_lines(2);
    let log = bridge.stderr().join("\n");
    assert!(
        !log.contains("account changed; restarting"),
        "one was left alone: {log}"
    );
    let (_, lines) = bridge.stop(SIGTERM);
    let accounts: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["account"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        accounts,
        ["one".to_string(), "two".to_string()].into_iter().collect()
    );
}

#[test]
fn accounts_on_the_same_backend_share_one_watcher_and_see_each_message_once() {
    let mac = SimMac::new();
    let path = mac.dir.path().join("shared.json5");
    let account = format!(
        "{{ cliPath: {:?}, dbPath: {:?} }}",
        crate::support::imsg_sim_bin().display().to_string(),
        mac.db.display().to_string()
    );
    std::fs::write(
        &path,
        format!(
            "{{ channels: {{ imessage: {{ {} accounts: {{ alpha: {account}, beta: {account} }} }} }}, bridge: {{ stateDir: {:?} }} }}",
            crate::support::OPEN_ACCESS,
            mac.state_dir().display().to_string()
        ),
    )
    .unwrap();
    let bridge = Bridge::start(&path, &["run"]);
    bridge.wait_for_log("watching for messages");
    mac.inject("+14155551212", "once, please");
    bridge.wait_for_lines(1);
    let log = bridge.stderr().join("\n");
    assert!(
        log.contains("sharing its watcher") && log.contains("account=beta"),
        "{log}"
    );
    assert_eq!(log.matches("watching for messages").count(), 1, "{log}");
    mac.inject("+14155551212", "and again");
    bridge.wait_for_lines(2);
    let (_, lines) = bridge.stop(SIGTERM);
    assert_eq!(lines.len(), 2, "each message handled once: {lines:?}");
}

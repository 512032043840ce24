//! `imsg-bridge imsg …` acting as OpenClaw's client does with its `cliPath`: the probes, the
//! long-lived `imsg rpc --json --db P` monitor with attachments, a short-lived child that sends a
//! local file, the link cut and frozen during a burst, and connection sharing, all against a real
//! sshd on loopback whose imsg is imsg-sim.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::{Value, json};

use crate::proxy::Proxy;
use crate::sshd::Sshd;
use crate::support::{PATIENCE, SimMac, imsg_bridge_bin, imsg_sim_bin, random_file, sha256_hex};

const FROM: &str = "+14155551212";

/// The bridge's own config for the drop-in: the ssh block (through `port`), roots and state.
fn dropin_config(sshd: &Sshd, mac: &SimMac, port: u16, extra_ssh: &str) -> PathBuf {
    let root = std::fs::canonicalize(mac.dir.path()).unwrap().join("Attachments");
    std::fs::create_dir_all(&root).unwrap();
    let mut known = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    known.push_str(&format!("[127.0.0.1]:{port} {}\n", sshd.host_key_pub));
    std::fs::write(&sshd.known_hosts, known).unwrap();
    let path = mac.dir.path().join("bridge.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ mediaMaxMb: 16, remoteAttachmentRoots: [{root:?}],
             ssh: {{ host: \"127.0.0.1\", port: {port}, user: {user:?}, identityFile: {key:?}, knownHostsFile: {kh:?},
                    remoteCliPath: {cli:?}, useAgent: false, {extra_ssh} }} }} }},
           bridge: {{ stateDir: {state:?} }} }}",
        root = root.display().to_string(),
        user = sshd.user,
        key = sshd.client_key.display().to_string(),
        kh = sshd.known_hosts.display().to_string(),
        cli = imsg_sim_bin().display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `imsg-bridge --config C imsg ARGS…` run to its end.
fn run_imsg(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(config)
        .arg("imsg")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A running `imsg-bridge imsg rpc …`, spoken to as OpenClaw does.
struct RpcChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    next_id: u64,
}

impl RpcChild {
    fn start(config: &Path, db: &Path) -> Self {
        let mut child = Command::new(imsg_bridge_bin())
            .arg("--config")
            .arg(config)
            .args(["imsg", "rpc", "--json", "--db"])
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"unparsed": line}));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
            next_id: 0,
        }
    }

    /// Send a request; returns its id.
    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        self.next_id
    }

    /// The next line, within `PATIENCE`.
    fn next(&self) -> Value {
        self.lines
            .recv_timeout(PATIENCE)
            .expect("no line from the drop-in in time")
    }

    /// Lines until the answer to `id`; notifications seen on the way are returned too.
    fn answer(&self, id: u64) -> (Value, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            let line = self.next();
            if line["id"] == json!(id) {
                return (line, seen);
            }
            seen.push(line);
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params);
        let (answer, seen) = self.answer(id);
        assert!(seen.iter().all(|l| l.get("id").is_none()), "{seen:?}");
        answer
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait(mut self) -> Option<i32> {
        self.close_stdin();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("the drop-in did not exit after its stdin closed");
    }
}

impl Drop for RpcChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_probes_openclaw_runs_pass_through_with_imsgs_output_and_exit_status() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 0");
    let help = run_imsg(&config, &["rpc", "--help"]);
    assert_eq!(
        help.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
    let direct = Command::new(imsg_sim_bin())
        .args(["rpc", "--help"])
        .output()
        .unwrap();
    assert_eq!(help.stdout, direct.stdout, "the help is imsg's, byte for byte");

    let status = run_imsg(&config, &["status", "--json", "--db", mac.db.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(0));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status.get("rpc_methods").is_some(), "{status}");

    let unknown = run_imsg(&config, &["frobnicate"]);
    let direct = Command::new(imsg_sim_bin()).arg("frobnicate").output().unwrap();
    assert_eq!(unknown.status.code(), direct.status.code());
    assert_eq!(
        unknown.stderr, direct.stderr,
        "imsg's own wording reaches the caller"
    );
}

#[test]
fn arguments_reach_imsg_as_given_whatever_the_remote_shell_would_make_of_them() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 0");
    let chat = inject(
        &mac.db,
        &InjectSpec {
            from: FROM.into(),
            text: "seed".into(),
            ..Default::default()
        },
    )
    .unwrap()
    .chat_id;
    let text = "it's $HOME; `id` && echo \"pwned\" > /tmp/x *";
    let out = run_imsg(
        &config,
        &[
            "send",
            "--db",
            mac.db.to_str().unwrap(),
            "--chat-id",
            &chat.to_string(),
            "--text",
            text,
            "--json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = run_imsg(
        &config,
        &[
            "history",
            "--db",
            mac.db.to_str().unwrap(),
            "--chat-id",
            &chat.to_string(),
            "--json",
        ],
    );
    let text_json = serde_json::to_string(text).unwrap();
    assert!(String::from_utf8_lossy(&history.stdout).contains(&text_json));
}

#[test]
fn refuses_a_cli_path_that_leads_back_into_itself() {
    let mac = SimMac::new();
    let wrapper = mac.dir.path().join("imsg-wrapper");
    std::fs::write(&wrapper, "#!/bin/sh\nexec imsg-bridge imsg \"$@\"\n").unwrap();
    let config = mac.dir.path().join("loop.json5");
    std::fs::write(
        &config,
        format!(
            "{{ channels: {{ imessage: {{ cliPath: {:?} }} }}, bridge: {{ stateDir: {:?} }} }}",
            wrapper.display().to_string(),
            mac.state_dir().display().to_string()
        ),
    )
    .unwrap();
    let out = run_imsg(&config, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("leads back into imsg-bridge") && stderr.contains("--target"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_watched_photo_arrives_as_a_local_file_with_the_sources_bytes() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 0");
    let mut monitor = RpcChild::start(&config, &mac.db);
    let answer = monitor.call(
        "watch.subscribe",
        json!({"attachments": true, "include_reactions": false}),
    );
    let sub = answer["result"]["subscription"].clone();
    assert!(sub.is_i64(), "{answer}");

    let photo = mac.dir.path().join("IMG_0001.jpeg");
    random_file(&photo, 100 * 1024);
    inject(
        &mac.db,
        &InjectSpec {
            from: FROM.into(),
            text: "a photo".into(),
            attachments: vec![photo.clone()],
            ..Default::default()
        },
    )
    .unwrap();
    let note = monitor.next();
    assert_eq!(note["method"], json!("message"), "{note}");
    assert_eq!(note["params"]["subscription"], sub);
    let attachment = &note["params"]["message"]["attachments"][0];
    let local = PathBuf::from(attachment["original_path"].as_str().unwrap());
    assert!(
        local.starts_with(mac.state_dir().join("media/inbound")),
        "{attachment}"
    );
    assert_eq!(attachment["missing"], json!(false));
    assert_eq!(sha256_hex(&local), sha256_hex(&photo));
}

#[test]
fn a_short_lived_child_sends_text_and_a_local_file_that_reaches_the_macs_database() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 0");
    let here = tempfile::tempdir().unwrap();
    let file = here.path().join("report.pdf");
    random_file(&file, 40 * 1024);
    let mut child = RpcChild::start(&config, &mac.db);
    let answer = child.call(
        "send",
        json!({"to": FROM, "text": "here it is", "service": "imessage", "file": file.display().to_string()}),
    );
    assert!(answer.get("result").is_some(), "{answer}");
    assert_eq!(child.wait(), Some(0));

    let out = Command::new(imsg_sim_bin())
        .args(["history", "--json", "--attachments", "--limit", "5", "--db"])
        .arg(&mac.db)
        .args(["--chat-id", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.iter().any(|r| r["text"] == json!("here it is")), "{text}");
    let with_file = rows
        .iter()
        .find(|r| r["attachments"].as_array().is_some_and(|a| !a.is_empty()))
        .unwrap_or_else(|| panic!("no row with the file: {text}"));
    let on_mac = PathBuf::from(with_file["attachments"][0]["original_path"].as_str().unwrap());
    assert_eq!(sha256_hex(&on_mac), sha256_hex(&file));
    assert!(
        !on_mac.starts_with(here.path()),
        "the Mac got its own copy: {}",
        on_mac.display()
    );
}

/// Inject `count` numbered messages a few milliseconds apart from another thread.
fn burst(db: &Path, count: usize) -> std::thread::JoinHandle<()> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        for n in 0..count {
            inject(
                &db,
                &InjectSpec {
                    from: FROM.into(),
                    text: format!("msg {n}"),
                    ..Default::default()
                },
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Read `count` message notifications; every other line is an error the client should not see.
fn read_messages(child: &RpcChild, count: usize) -> Vec<usize> {
    let mut numbers = Vec::new();
    while numbers.len() < count {
        let line = child.next();
        assert_eq!(
            line["method"],
            json!("message"),
            "the client saw something else: {line}"
        );
        let text = line["params"]["message"]["text"].as_str().unwrap();
        numbers.push(text.trim_start_matches("msg ").parse().unwrap());
    }
    numbers
}

fn heals_a_broken_link_during_a_burst(freeze: bool, persist_ms: u64) {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let proxy = Proxy::start(sshd.port);
    let config = dropin_config(
        &sshd,
        &mac,
        proxy.port,
        &format!("controlPersistMs: {persist_ms}, keepaliveIntervalMs: 500, keepaliveMax: 2"),
    );
    let mut monitor = RpcChild::start(&config, &mac.db);
    let answer = monitor.call("watch.subscribe", json!({"attachments": false}));
    assert!(answer["result"]["subscription"].is_i64(), "{answer}");
    let writer = burst(&mac.db, 300);
    let first = read_messages(&monitor, 50);
    if freeze {
        proxy.freeze();
    } else {
        proxy.cut();
    }
    writer.join().unwrap();
    let rest = read_messages(&monitor, 250);
    let all: Vec<usize> = first.into_iter().chain(rest).collect();
    assert_eq!(all, (0..300).collect::<Vec<_>>(), "every message once, in order");
    assert!(proxy.accepted() >= 2, "the link was really re-made");
    assert!(
        monitor.lines.recv_timeout(Duration::from_millis(1500)).is_err(),
        "nothing more, no error"
    );
}

#[test]
fn a_cut_link_during_a_burst_of_300_loses_nothing_and_the_client_sees_no_error() {
    heals_a_broken_link_during_a_burst(false, 0);
}

#[test]
fn a_cut_shared_link_during_a_burst_of_300_loses_nothing_and_the_client_sees_no_error() {
    heals_a_broken_link_during_a_burst(false, 5_000);
}

#[test]
fn a_frozen_shared_link_during_a_burst_of_300_loses_nothing_and_the_client_sees_no_error() {
    heals_a_broken_link_during_a_burst(true, 5_000);
}

#[test]
fn a_frozen_link_during_a_burst_of_300_loses_nothing_and_the_client_sees_no_error() {
    heals_a_broken_link_during_a_burst(true, 0);
}

#[test]
fn a_request_in_flight_when_the_link_dies_is_answered_with_its_disposition() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let proxy = Proxy::start(sshd.port);
    let config = dropin_config(
        &sshd,
        &mac,
        proxy.port,
        "controlPersistMs: 0, keepaliveIntervalMs: 500, keepaliveMax: 2",
    );
    let mut child = RpcChild::start(&config, &mac.db);
    child.call("chats.list", json!({"limit": 1}));
    proxy.freeze();
    let id = child.send("send", json!({"to": FROM, "text": "maybe"}));
    let (answer, _) = child.answer(id);
    assert_eq!(
        answer["error"]["data"],
        json!({"disposition": "unknown", "retry_safe": false}),
        "{answer}"
    );
    let after = child.call("chats.list", json!({"limit": 1}));
    assert!(after.get("result").is_some(), "the proxy reconnected: {after}");
}

#[test]
fn a_second_process_shares_the_first_ones_ssh_connection() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let proxy = Proxy::start(sshd.port);
    let config = dropin_config(&sshd, &mac, proxy.port, "controlPersistMs: 2000");
    let mut monitor = RpcChild::start(&config, &mac.db);
    monitor.call("chats.list", json!({"limit": 1}));
    let after_first = proxy.accepted();
    assert_eq!(after_first, 1, "one SSH connection for the first process");
    let mut sender = RpcChild::start(&config, &mac.db);
    let answer = sender.call("chats.list", json!({"limit": 1}));
    assert!(answer.get("result").is_some(), "{answer}");
    assert_eq!(sender.wait(), Some(0));
    let status = run_imsg(&config, &["status", "--json", "--db", mac.db.to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(0));
    assert_eq!(proxy.accepted(), 1, "later processes used the first connection");
}

/// How many `imsg rpc` processes run on the simulated Mac for `db`.
fn remote_rpcs(db: &Path) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", &format!("imsg-sim rpc --json --db {}", db.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_send_child_beside_a_watching_monitor_uses_the_warm_imsg_and_each_gets_only_its_own_lines() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 5000");
    let mut monitor = RpcChild::start(&config, &mac.db);
    let answer = monitor.call("watch.subscribe", json!({"since_rowid": -1}));
    assert!(answer["result"]["subscription"].is_i64(), "{answer}");
    assert_eq!(remote_rpcs(&mac.db), 1);

    let mut sender = RpcChild::start(&config, &mac.db);
    let sent = sender.call("send", json!({"to": FROM, "text": "from the child"}));
    assert!(sent.get("result").is_some(), "{sent}");
    assert_eq!(remote_rpcs(&mac.db), 1, "no imsg of its own");
    assert_eq!(sender.wait(), Some(0), "its stdin's end ends only its own stream");
    let seen = monitor.next();
    assert_eq!(
        seen["params"]["message"]["text"],
        json!("from the child"),
        "{seen}"
    );
    let still = monitor.call("chats.list", json!({"limit": 1}));
    assert!(
        still.get("result").is_some(),
        "the monitor's stream carries on: {still}"
    );
}

#[test]
fn the_master_a_drop_in_started_exits_persist_after_its_last_client_warm_imsg_and_all() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 500");
    let mut child = RpcChild::start(&config, &mac.db);
    assert!(
        child
            .call("chats.list", json!({"limit": 1}))
            .get("result")
            .is_some()
    );
    assert_eq!(child.wait(), Some(0));
    let pattern = format!("control-master --socket {}", mac.state_dir().display());
    let masters = || {
        let out = Command::new("pgrep").args(["-f", &pattern]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let deadline = Instant::now() + PATIENCE;
    while masters() > 0 || remote_rpcs(&mac.db) > 0 {
        assert!(
            Instant::now() < deadline,
            "the master (or its warm imsg) is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 15 item 10: the drop-in trusts its caller as imsg would, except for the places nothing is
/// ever sent from: `/proc/self/environ` is neither uploaded by a CLI send nor by an rpc `send`.
#[test]
fn the_drop_in_never_uploads_proc_or_ssh_files_for_a_cli_or_rpc_send() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = dropin_config(&sshd, &mac, sshd.port, "controlPersistMs: 0");
    let out = run_imsg(
        &config,
        &[
            "send",
            "--db",
            mac.db.to_str().unwrap(),
            "--to",
            FROM,
            "--text",
            "x",
            "--file",
            "/proc/self/environ",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("refusing to send /proc/self/environ: files under /proc are never sent"),
        "{stderr}"
    );

    let mut child = RpcChild::start(&config, &mac.db);
    let answer = child.call(
        "send",
        json!({"to": FROM, "text": "secrets", "service": "imessage", "file": "/proc/self/environ"}),
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refusing to send /proc/self/environ: files under /proc are never sent"),
        "{answer}"
    );
    assert_eq!(child.wait(), Some(0));
    let history = Command::new(imsg_sim_bin())
        .args(["history", "--json", "--attachments", "--limit", "5", "--db"])
        .arg(&mac.db)
        .args(["--chat-id", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(!text.contains("secrets") && !text.contains("environ"), "{text}");
}

//! `imsg-bridge` end to end over the native SSH transport: a real sshd on loopback whose `imsg` is
//! imsg-sim, a wrapper replaced by `transport: "auto"`, connections cut and frozen by a proxy during
//! bursts, SIGKILL mid-burst, and the auth paths an operator uses (passphrase variable, ssh-agent).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::Value;

use crate::proxy::Proxy;
use crate::sshd::{Sshd, SshdOptions};
use crate::support::{Bridge, OPEN_ACCESS, PATIENCE, SimMac, imsg_bridge_bin, imsg_sim_bin};

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
const FROM: &str = "+14155551212";

/// The ssh block of a config reaching `sshd` (or a proxy in front of it at `port`).
fn ssh_block(sshd: &Sshd, port: u16, extra: &str) -> String {
    format!(
        "ssh: {{ host: \"127.0.0.1\", port: {port}, user: {user:?}, identityFile: {key:?}, knownHostsFile: {kh:?}, remoteCliPath: {cli:?}, {extra} }}",
        user = sshd.user,
        key = sshd.client_key.display().to_string(),
        kh = sshd.known_hosts.display().to_string(),
        cli = imsg_sim_bin().display().to_string(),
    )
}

/// A config with one account whose `imessage` section holds `imessage` (plus dbPath and stateDir).
fn write_config(mac: &SimMac, imessage: &str) -> PathBuf {
    let path = mac.dir.path().join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ dbPath: {db:?}, {OPEN_ACCESS} {imessage} }} }},\n  bridge: {{ stateDir: {state:?} }} }}\n",
        db = mac.db.display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Trust the server's host key under the proxy's port too.
fn trust_port(sshd: &Sshd, port: u16) {
    let mut text = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    text.push_str(&format!("[127.0.0.1]:{port} {}\n", sshd.host_key_pub));
    std::fs::write(&sshd.known_hosts, text).unwrap();
}

fn envelopes(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The `msg N` numbers of the delivered envelopes, in delivery order.
fn numbers(lines: &[String]) -> Vec<usize> {
    envelopes(lines)
        .iter()
        .map(|e| {
            let text = e["text"].as_str().unwrap();
            text.strip_prefix("msg ").unwrap().parse().unwrap()
        })
        .collect()
}

/// Inject `msg start..end` straight into chat.db, as Messages would write the rows.
fn burst(db: &Path, range: std::ops::Range<usize>) {
    for i in range {
        let spec = InjectSpec {
            from: FROM.into(),
            text: format!("msg {i}"),
            ..Default::default()
        };
        inject(db, &spec).unwrap();
    }
}

fn assert_once_in_order(lines: &[String], total: usize) {
    let got = numbers(lines);
    let expected: Vec<usize> = (0..total).collect();
    assert_eq!(got, expected, "every message once, in ROWID order");
    let ids: Vec<i64> = envelopes(lines)
        .iter()
        .map(|e| e["rowid"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ROWIDs ascend: {ids:?}");
}

#[test]
fn run_over_native_ssh_delivers_injected_messages_as_envelopes() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = write_config(&mac, &ssh_block(&sshd, sshd.port, ""));
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    mac.inject(FROM, "hello over ssh");
    mac.inject("jane@example.com", "second");
    bridge.wait_for_lines(2);
    let log = bridge.stderr().join("\n");
    assert!(
        log.contains("connected") && log.contains("SHA256:"),
        "host key fingerprint logged: {log}"
    );
    let (code, lines) = bridge.stop(SIGTERM);
    assert_eq!(code, Some(0));
    let got = envelopes(&lines);
    assert_eq!(got[0]["text"], "hello over ssh");
    assert_eq!(got[0]["sender"]["handle"], FROM);
    assert_eq!(got[1]["text"], "second");
    assert_eq!(got.len(), 2);
}

#[test]
fn auto_replaces_a_transparent_wrapper_with_the_native_connection() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    // The remote command must be named imsg for the wrapper to be transparent.
    let bin = mac.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(imsg_sim_bin(), bin.join("imsg")).unwrap();
    let wrapper = mac.dir.path().join("imsg-over-ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# reach the Mac\nexec ssh -T -p {port} -i {key} -o UserKnownHostsFile={kh} {user}@127.0.0.1 {imsg} \"$@\"\n",
            port = sshd.port,
            key = sshd.client_key.display(),
            kh = sshd.known_hosts.display(),
            user = sshd.user,
            imsg = bin.join("imsg").display(),
        ),
    )
    .unwrap();
    // Not executable: were the script run as a process, nothing would start.
    let config = write_config(&mac, &format!("cliPath: {:?}", wrapper.display().to_string()));
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    mac.inject(FROM, "native after all");
    bridge.wait_for_lines(1);
    let log = bridge.stderr().join("\n");
    assert!(log.contains("replacing the transparent wrapper"), "{log}");
    assert!(log.contains("SHA256:"), "{log}");
    let (_, lines) = bridge.stop(SIGTERM);
    assert_eq!(envelopes(&lines)[0]["text"], "native after all");
}

#[test]
fn survives_a_cut_and_a_frozen_connection_during_bursts_delivering_each_message_once_in_order() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port);
    trust_port(&sshd, proxy.port);
    let mac = SimMac::new();
    let config = write_config(
        &mac,
        &ssh_block(&sshd, proxy.port, "keepaliveIntervalMs: 1000, keepaliveMax: 2"),
    );
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    assert_eq!(proxy.accepted(), 1);

    // Burst 1: half before the cut (some still in flight when it happens), half while reconnecting.
    burst(&mac.db, 0..250);
    bridge.wait_for_lines(100);
    proxy.cut();
    burst(&mac.db, 250..500);
    bridge.wait_for_lines(500);
    assert!(proxy.accepted() >= 2, "reconnected after the cut");

    // Burst 2: the same around a freeze, which only keepalives can detect.
    let before_freeze = proxy.accepted();
    burst(&mac.db, 500..750);
    bridge.wait_for_lines(600);
    proxy.freeze();
    burst(&mac.db, 750..1000);
    bridge.wait_for_lines(1000);
    assert!(proxy.accepted() > before_freeze, "reconnected after the freeze");

    let log = bridge.stderr().join("\n");
    assert!(
        log.contains("connection lost") && log.contains("backing off"),
        "{log}"
    );
    assert!(
        log.contains("no answer to 2 keepalives"),
        "the freeze is named as such: {log}"
    );
    if std::env::var_os("IMSG_TEST_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    let (_, lines) = bridge.stop(SIGTERM);
    assert_once_in_order(&lines, 1000);
}

#[test]
fn sigkill_mid_burst_and_a_restart_lose_nothing() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let config = write_config(&mac, &ssh_block(&sshd, sshd.port, ""));
    let first = Bridge::start(&config, &["run"]);
    first.wait_for_log("watching for messages");
    burst(&mac.db, 0..250);
    first.wait_for_lines(50);
    let (_, before) = first.stop(SIGKILL);
    burst(&mac.db, 250..500);
    let second = Bridge::start(&config, &["run"]);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen: BTreeSet<usize> = numbers(&before)
            .into_iter()
            .chain(numbers(&second.stdout()))
            .collect();
        if seen.len() == 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 500; log:\n{}",
            seen.len(),
            second.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, after) = second.stop(SIGTERM);
    let (first_nums, second_nums) = (numbers(&before), numbers(&after));
    assert!(first_nums.windows(2).all(|w| w[0] < w[1]));
    assert!(
        second_nums.windows(2).all(|w| w[0] < w[1]),
        "the restart resumes in order"
    );
    // The cursor is committed once per batch the sink accepted (docs/reliability.md): only the
    // batch in hand when the bridge was killed may repeat, i.e. the repeats are exactly the tail of
    // what the killed bridge wrote, and they come first after the restart.
    let repeated: Vec<usize> = second_nums
        .iter()
        .copied()
        .filter(|n| first_nums.contains(n))
        .collect();
    assert!(
        first_nums.ends_with(&repeated) && second_nums.starts_with(&repeated),
        "only the uncommitted tail repeats: {repeated:?}\nfirst: {first_nums:?}\nsecond: {second_nums:?}"
    );
    assert!(
        repeated.len() <= 512,
        "at most one batch repeats: {}",
        repeated.len()
    );
}

#[test]
fn a_ten_thousand_message_backlog_over_ssh_arrives_whole_without_an_overflow() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let mut config_text =
        std::fs::read_to_string(write_config(&mac, &ssh_block(&sshd, sshd.port, ""))).unwrap();
    config_text = config_text.replace(
        "bridge: {",
        "bridge: { replay: { maxRows: 20000, maxAgeMinutes: 10000 },",
    );
    let config = mac.dir.path().join("config.json5");
    std::fs::write(&config, config_text).unwrap();
    let first = Bridge::start(&config, &["run"]);
    first.wait_for_log("watching for messages");
    first.stop(SIGTERM);

    let spec = InjectSpec {
        from: FROM.into(),
        text: "backlog".into(),
        count: 10_000,
        ..Default::default()
    };
    imsg_bridge::sim::db::inject_many(&mac.db, &spec).unwrap();
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("caught up");
    bridge.wait_for_lines(10_000);
    let log = bridge.stderr().join("\n");
    let (_, lines) = bridge.stop(SIGTERM);
    let texts: Vec<String> = envelopes(&lines)
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=10_000).map(|i| format!("backlog {i}")).collect();
    assert!(
        texts == expected,
        "all 10,000 once, in order (got {})",
        texts.len()
    );
    assert!(!log.contains("overflow"), "no watch overflowed:\n{log}");
    assert!(
        !log.contains("connection lost") && !log.contains("reconnecting"),
        "one connection:\n{log}"
    );
    assert!(!log.contains("beyond bridge.replay"), "nothing skipped:\n{log}");
}

/// Run `imsg-bridge chats` with extra environment; returns (exit code, stdout, stderr).
fn chats(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(config)
        .arg("chats")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_encrypted_key_unlocks_with_the_passphrase_from_the_environment() {
    let sshd = Sshd::start_with(SshdOptions {
        passphrase: Some("correct horse".into()),
        ..Default::default()
    });
    let mac = SimMac::new();
    mac.inject(FROM, "hi");
    let config = write_config(
        &mac,
        &ssh_block(
            &sshd,
            sshd.port,
            "identityPassphraseEnv: \"IMSG_TEST_KEY_PASS\", useAgent: false",
        ),
    );
    let (code, stdout, stderr) = chats(&config, &[("IMSG_TEST_KEY_PASS", "correct horse")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(FROM), "{stdout}");
    assert!(
        !stderr.contains("correct horse"),
        "the passphrase is never logged"
    );
    let (code, _, stderr) = chats(&config, &[("IMSG_TEST_KEY_PASS", "wrong")]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("IMSG_TEST_KEY_PASS"), "{stderr}");
}

/// An ssh-agent in the foreground on its own socket, killed on drop.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is needed");
        let deadline = Instant::now() + PATIENCE;
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not create its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket }
    }

    fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn authenticates_with_a_key_held_only_by_ssh_agent() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    mac.inject(FROM, "hi");
    let agent = Agent::start(mac.dir.path());
    agent.add(&sshd.client_key);
    // The key file is gone: only the agent can sign.
    let moved = mac.dir.path().join("elsewhere");
    std::fs::rename(&sshd.client_key, &moved).unwrap();
    let config = write_config(
        &mac,
        &format!(
            "ssh: {{ host: \"127.0.0.1\", port: {}, user: {:?}, knownHostsFile: {:?}, remoteCliPath: {:?} }}",
            sshd.port,
            sshd.user,
            sshd.known_hosts.display().to_string(),
            imsg_sim_bin().display().to_string()
        ),
    );
    let socket = agent.socket.display().to_string();
    let (code, stdout, stderr) = chats(&config, &[("SSH_AUTH_SOCK", socket.as_str())]);
    assert_eq!(code, Some(0), "{stderr}\n{}", sshd.log());
    assert!(stdout.contains(FROM), "{stdout}");
    assert!(stderr.contains("agent key"), "the agent signed: {stderr}");
}

#[test]
fn proxy_jump_through_a_second_sshd_carries_the_run() {
    let target = Sshd::start();
    let jump = Sshd::start();
    // One known_hosts for both servers (each fixture pins only its own).
    let mut known = std::fs::read_to_string(&target.known_hosts).unwrap();
    known.push_str(&std::fs::read_to_string(&jump.known_hosts).unwrap());
    std::fs::write(&target.known_hosts, known).unwrap();
    // Both fixtures must accept the same key.
    std::fs::copy(
        target.client_key.with_extension("pub"),
        jump.dir.path().join("authorized_keys"),
    )
    .unwrap();
    let mac = SimMac::new();
    let config = write_config(
        &mac,
        &ssh_block(
            &target,
            target.port,
            &format!("proxyJump: \"{}@127.0.0.1:{}\"", jump.user, jump.port),
        ),
    );
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    mac.inject(FROM, "via the bastion");
    bridge.wait_for_lines(1);
    let log = bridge.stderr().join("\n");
    assert!(
        log.contains(&format!("127.0.0.1:{}", jump.port)),
        "the jump host is logged: {log}"
    );
    let (_, lines) = bridge.stop(SIGTERM);
    assert_eq!(envelopes(&lines)[0]["text"], "via the bastion");
}

#[test]
fn finds_imsg_with_the_remote_login_shell_when_no_path_is_configured() {
    // The remote login shell reads a profile from a HOME the fixture controls, the way a Mac's
    // ~/.zprofile puts /opt/homebrew/bin on PATH; a plain `ssh host imsg` would not see it.
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("brew/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(imsg_sim_bin(), bin.join("imsg")).unwrap();
    let profile = format!("PATH=\"{}:$PATH\"; export PATH\n", bin.display());
    for name in [".profile", ".bash_profile", ".zprofile"] {
        std::fs::write(home.path().join(name), &profile).unwrap();
    }
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("SetEnv HOME={}", home.path().display())],
        ..Default::default()
    });
    let mac = SimMac::new();
    mac.inject(FROM, "hi");
    let config = write_config(
        &mac,
        &format!(
            "ssh: {{ host: \"127.0.0.1\", port: {}, user: {:?}, identityFile: {:?}, knownHostsFile: {:?} }}",
            sshd.port,
            sshd.user,
            sshd.client_key.display().to_string(),
            sshd.known_hosts.display().to_string(),
        ),
    );
    let (code, stdout, stderr) = chats(&config, &[]);
    assert_eq!(code, Some(0), "{stderr}\n{}", sshd.log());
    assert!(stdout.contains(FROM), "{stdout}");
    assert!(
        stderr.contains("found imsg on the Mac") && stderr.contains("brew/bin/imsg"),
        "{stderr}"
    );
}

#[test]
fn strict_host_key_checking_no_connects_to_an_unknown_host_and_warns() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let mac = SimMac::new();
    mac.inject(FROM, "hi");
    let config = write_config(
        &mac,
        &ssh_block(&sshd, sshd.port, "strictHostKeyChecking: \"no\""),
    );
    let (code, stdout, stderr) = chats(&config, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(FROM), "{stdout}");
    assert!(stderr.contains("not enforced"), "warned: {stderr}");
    assert_eq!(
        std::fs::read_to_string(&sshd.known_hosts).unwrap(),
        "",
        "nothing recorded under \"no\""
    );
}

#[test]
fn an_unknown_host_under_yes_keeps_run_retrying_with_the_remedy_in_the_log() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let mac = SimMac::new();
    let config = write_config(&mac, &ssh_block(&sshd, sshd.port, ""));
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("backing off");
    let log = bridge.stderr().join("\n");
    assert!(
        log.contains("host key of 127.0.0.1 is not known") && log.contains("ssh-keyscan"),
        "{log}"
    );
    // Fixing known_hosts is enough: the supervisor connects on its next attempt.
    trust_port(&sshd, sshd.port);
    bridge.wait_for_log("watching for messages");
    let (code, _) = bridge.stop(SIGTERM);
    assert_eq!(code, Some(0));
}

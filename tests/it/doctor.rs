//! `imsg-bridge doctor` against a healthy sshd + imsg-sim and against each fault the simulator and
//! the fixtures can inject: the failing check's id, status and remedy, in text and JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::sshd::{Sshd, SshdOptions};
use crate::support::{OPEN_ACCESS, SimMac, imsg_bridge_bin, imsg_sim_bin};

fn config(sshd: &Sshd, mac: &SimMac, cli: &Path) -> PathBuf {
    config_with(sshd, mac, cli, "")
}

/// [`config`] with more keys in the ssh block (`extra` ends with a comma).
fn config_with(sshd: &Sshd, mac: &SimMac, cli: &Path, extra: &str) -> PathBuf {
    let path = mac.dir.path().join("config.json5");
    let root = std::fs::canonicalize(mac.dir.path()).unwrap().join("Attachments");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        &path,
        format!(
            "{{ channels: {{ imessage: {{ dbPath: {db:?}, {OPEN_ACCESS} includeAttachments: true, remoteAttachmentRoots: [{root:?}],
                 ssh: {{ host: \"127.0.0.1\", port: {port}, user: {user:?}, identityFile: {key:?}, knownHostsFile: {kh:?},
                        remoteCliPath: {cli:?}, useAgent: false, {extra} }} }} }},
               bridge: {{ stateDir: {state:?} }} }}",
            db = mac.db.display().to_string(),
            root = root.display().to_string(),
            port = sshd.port,
            user = sshd.user,
            key = sshd.client_key.display().to_string(),
            kh = sshd.known_hosts.display().to_string(),
            cli = cli.display().to_string(),
            state = mac.state_dir().display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// Run doctor with `--json`; returns (exit code, checks by id).
pub(crate) fn doctor(config: &Path, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    run_doctor(config, extra, &[])
}

/// [`doctor`] without extra arguments, with these environment variables.
fn doctor_with_env(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, Vec<Value>) {
    run_doctor(config, &[], env)
}

fn run_doctor(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Vec<Value>) {
    let out = Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(config)
        .args(["doctor", "--json"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report["checks"].as_array().unwrap().clone())
}

pub(crate) fn check<'a>(checks: &'a [Value], id: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {checks:?}"))
}

fn sshd_with(extra: &[String], sftp: Option<&str>) -> Sshd {
    Sshd::start_with(SshdOptions {
        extra_config: extra.to_vec(),
        sftp: sftp.map(str::to_string),
        ..Default::default()
    })
}

#[test]
fn a_healthy_setup_passes_every_check_in_order() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let (code, checks) = doctor(&config(&sshd, &mac, &imsg_sim_bin()), &[]);
    assert_eq!(code, Some(0), "{checks:#?}");
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec![
            "config",
            "openclaw",
            "wrapper",
            "ssh.config",
            "reach",
            "ssh.handshake",
            "ssh.host_key",
            "ssh.auth",
            "imsg.path",
            "imsg.rpc",
            "imsg.database",
            "sftp",
            "attachments.root",
            "attachments.pull",
            "send.capability",
            "state_dir",
            "keepalive"
        ]
    );
    for id in [
        "ssh.config",
        "reach",
        "ssh.handshake",
        "ssh.host_key",
        "ssh.auth",
        "imsg.path",
        "imsg.rpc",
        "imsg.database",
        "sftp",
        "attachments.root",
    ] {
        assert_eq!(check(&checks, id)["status"], "ok", "{id}: {}", check(&checks, id));
    }
    assert!(
        check(&checks, "ssh.host_key")["detail"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    // Every check has its section in the troubleshooting guide.
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/troubleshooting.md")).unwrap();
    for id in &ids {
        assert!(
            guide.contains(&format!("## `{id}`")),
            "docs/troubleshooting.md has no section for {id}"
        );
    }
    // The text form is a table with the same ids.
    let out = Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(config(&sshd, &mac, &imsg_sim_bin()))
        .arg("doctor")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("imsg.database")),
        "{table}"
    );
}

#[test]
fn names_the_full_disk_access_problem_when_the_database_is_unreadable() {
    let sshd = sshd_with(&["SetEnv IMSG_SIM_FAULT_DB_UNAVAILABLE=1".into()], None);
    let mac = SimMac::new();
    let (code, checks) = doctor(&config(&sshd, &mac, &imsg_sim_bin()), &[]);
    assert_eq!(code, Some(1));
    let db = check(&checks, "imsg.database");
    assert_eq!(db["status"], "fail", "{db}");
    assert!(
        db["remedy"]
            .as_str()
            .unwrap()
            .contains("Allow full disk access for remote users"),
        "{db}"
    );
    assert_eq!(check(&checks, "imsg.rpc")["status"], "ok", "rpc itself answers");
}

#[test]
fn reports_an_imsg_without_rpc() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let old = mac.dir.path().join("old-imsg");
    std::fs::write(
        &old,
        "#!/bin/sh\necho \"error: unrecognized subcommand '$1'\" >&2\nexit 2\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, checks) = doctor(&config(&sshd, &mac, &old), &[]);
    assert_eq!(code, Some(1));
    let rpc = check(&checks, "imsg.rpc");
    assert_eq!(rpc["status"], "fail", "{rpc}");
    assert!(rpc["remedy"].as_str().unwrap().contains("upgrade imsg"), "{rpc}");
    assert_eq!(check(&checks, "imsg.path")["status"], "ok");
}

#[test]
fn explains_a_send_refused_by_automation() {
    let sshd = sshd_with(&["SetEnv IMSG_SIM_FAULT_SEND_FAILS=1".into()], None);
    let mac = SimMac::new();
    let (code, checks) = doctor(
        &config(&sshd, &mac, &imsg_sim_bin()),
        &["--send-test", "+14155551212"],
    );
    assert_eq!(code, Some(1));
    let send = check(&checks, "send.capability");
    assert_eq!(send["status"], "fail", "{send}");
    assert!(send["detail"].as_str().unwrap().contains("-1743"), "{send}");
    assert!(send["remedy"].as_str().unwrap().contains("Automation"), "{send}");
}

#[test]
fn warns_when_the_server_refuses_sftp() {
    let sshd = sshd_with(&[], Some(""));
    let mac = SimMac::new();
    let (code, checks) = doctor(&config(&sshd, &mac, &imsg_sim_bin()), &[]);
    assert_eq!(code, Some(0), "a warning is not a failure: {checks:#?}");
    let sftp = check(&checks, "sftp");
    assert_eq!(sftp["status"], "warn", "{sftp}");
    assert!(
        sftp["remedy"].as_str().unwrap().contains("Subsystem sftp"),
        "{sftp}"
    );
}

#[test]
fn refuses_an_unknown_host_key_and_skips_what_depends_on_it() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let mac = SimMac::new();
    let (code, checks) = doctor(&config(&sshd, &mac, &imsg_sim_bin()), &[]);
    assert_eq!(code, Some(1));
    let key = check(&checks, "ssh.host_key");
    assert_eq!(key["status"], "fail", "{key}");
    assert!(
        key["detail"].as_str().unwrap().contains("ssh-keyscan") && key["remedy"].is_string(),
        "{key}"
    );
    assert_eq!(check(&checks, "ssh.auth")["status"], "skip");
    assert_eq!(check(&checks, "imsg.rpc")["status"], "skip");
    assert_eq!(
        check(&checks, "state_dir")["status"],
        "ok",
        "checks go on after a failure"
    );
}

/// An openclaw.json whose cliPath execs the drop-in: a leftover remoteHost and roots that miss the
/// media cache warn (not fail) with the exact entry to add; fixed, the row is ok. The Mac is never
/// reached (a closed port), which the row does not depend on.
#[test]
fn warns_when_openclaw_json_would_drop_the_drop_ins_attachments() {
    let mac = SimMac::new();
    let wrapper = mac.dir.path().join("imsg-mac");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec imsg-bridge --target bot@mac imsg \"$@\"\n",
    )
    .unwrap();
    let state = mac.state_dir();
    let inbound = state.join("media/inbound");
    let write = |extra: &str| {
        let path = mac.dir.path().join("openclaw.json");
        std::fs::write(
            &path,
            format!(
                "{{ channels: {{ imessage: {{ cliPath: {cli:?}, {extra}
                     ssh: {{ host: \"127.0.0.1\", port: 1, user: \"bot\", connectTimeoutMs: 2000 }} }} }},
                   bridge: {{ stateDir: {state:?} }} }}",
                cli = wrapper.display().to_string(),
                state = state.display().to_string(),
            ),
        )
        .unwrap();
        path
    };
    let (_, checks) = doctor(&write("remoteHost: \"bot@mac\","), &[]);
    let row = check(&checks, "openclaw");
    assert_eq!(row["status"], "warn", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("channels.imessage.remoteHost is still set"),
        "{detail}"
    );
    assert!(detail.contains("channels.imessage.attachmentRoots"), "{detail}");
    let remedy = row["remedy"].as_str().unwrap();
    let entry = format!(
        "add {:?} to channels.imessage.attachmentRoots",
        inbound.display().to_string()
    );
    assert!(remedy.contains(&entry), "{remedy}");
    assert!(remedy.contains("remove channels.imessage.remoteHost"), "{remedy}");

    let fixed = format!("attachmentRoots: [{:?}],", inbound.display().to_string());
    let (_, checks) = doctor(&write(&fixed), &[]);
    let row = check(&checks, "openclaw");
    assert_eq!(row["status"], "ok", "{row}");
}

/// `ssh-keygen -lf FILE`'s `SHA256:…` fingerprint.
fn fingerprint(public_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_string()
}

/// Pin a different key for the server in its known_hosts; returns (recorded, presented) fingerprints.
fn pin_a_wrong_key(sshd: &Sshd) -> (String, String) {
    let other = sshd.dir.path().join("other_host_key");
    crate::sshd::keygen(&other, "ed25519", "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        &sshd.known_hosts,
        format!("[127.0.0.1]:{} {}", sshd.port, other_pub),
    )
    .unwrap();
    (
        fingerprint(&other.with_extension("pub")),
        fingerprint(&sshd.dir.path().join("host_ed25519.pub")),
    )
}

fn assert_warns_of_a_changed_key(checks: &[Value], recorded: &str, presented: &str) {
    let key = check(checks, "ssh.host_key");
    assert_eq!(key["status"], "warn", "{key}");
    let detail = key["detail"].as_str().unwrap();
    assert!(detail.contains("CHANGED"), "{detail}");
    assert!(
        detail.contains(recorded) && detail.contains(presented),
        "{detail}"
    );
    assert!(detail.contains("StrictHostKeyChecking is no"), "{detail}");
    assert!(key["remedy"].as_str().unwrap().contains("ssh-keygen -R"), "{key}");
}

#[test]
fn warns_of_a_changed_host_key_let_through_by_strict_host_key_checking_no() {
    let sshd = Sshd::start();
    let (recorded, presented) = pin_a_wrong_key(&sshd);
    let mac = SimMac::new();
    let config = config_with(&sshd, &mac, &imsg_sim_bin(), "strictHostKeyChecking: \"no\",");
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(code, Some(0), "a warning is not a failure: {checks:#?}");
    assert_warns_of_a_changed_key(&checks, &recorded, &presented);
}

/// An unknown key let through by StrictHostKeyChecking no is not "trusted" either.
#[test]
fn warns_that_an_unknown_host_key_was_not_verified_under_strict_host_key_checking_no() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let presented = fingerprint(&sshd.dir.path().join("host_ed25519.pub"));
    let mac = SimMac::new();
    let config = config_with(&sshd, &mac, &imsg_sim_bin(), "strictHostKeyChecking: \"no\",");
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(code, Some(0), "a warning is not a failure: {checks:#?}");
    let key = check(&checks, "ssh.host_key");
    assert_eq!(key["status"], "warn", "{key}");
    let detail = key["detail"].as_str().unwrap();
    assert!(
        detail.contains(&presented) && detail.contains("not verified"),
        "{detail}"
    );
    assert!(key["remedy"].as_str().unwrap().contains("ssh-keyscan"), "{key}");
}

/// Authentication failing after the key was let through does not turn the key into a trusted one.
#[test]
fn warns_of_a_changed_host_key_even_when_authentication_then_fails() {
    let sshd = Sshd::start();
    let (recorded, presented) = pin_a_wrong_key(&sshd);
    std::fs::write(sshd.dir.path().join("authorized_keys"), "").unwrap();
    let mac = SimMac::new();
    let config = config_with(&sshd, &mac, &imsg_sim_bin(), "strictHostKeyChecking: \"no\",");
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(code, Some(1), "{checks:#?}");
    assert_eq!(check(&checks, "ssh.auth")["status"], "fail", "{checks:#?}");
    assert_warns_of_a_changed_key(&checks, &recorded, &presented);
}

/// The same when `StrictHostKeyChecking no` comes from an ssh config file (`ssh -F` in a wrapper).
#[test]
fn warns_of_a_changed_host_key_when_the_ssh_config_says_no() {
    let sshd = Sshd::start();
    let (recorded, presented) = pin_a_wrong_key(&sshd);
    let mac = SimMac::new();
    let ssh_config = mac_ssh_config(&sshd, &mac, "  StrictHostKeyChecking no\n");
    let config = wrapper_config(&mac, &format!("ssh -F {} -T mac", ssh_config.display()));
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(code, Some(0), "a warning is not a failure: {checks:#?}");
    assert_eq!(check(&checks, "wrapper")["status"], "ok", "{checks:#?}");
    assert_warns_of_a_changed_key(&checks, &recorded, &presented);
}

/// An ssh_config file naming the sshd fixture as `Host mac`, with `extra` lines after its settings.
pub fn mac_ssh_config(sshd: &Sshd, mac: &SimMac, extra: &str) -> PathBuf {
    let path = mac.dir.path().join("ssh_config");
    std::fs::write(
        &path,
        format!(
            "Host mac\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n{extra}",
            sshd.port,
            sshd.user,
            sshd.client_key.display(),
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    path
}

/// OpenSSH refuses this config (`ssh -G` fails), so `ssh mac` would not connect: neither does doctor,
/// though our own parser would have found the host. The ssh.config row quotes OpenSSH.
#[test]
fn fails_on_an_ssh_config_that_openssh_rejects_and_never_connects() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let ssh_config = mac_ssh_config(&sshd, &mac, "  BogusOption yes\n");
    let config = wrapper_config(&mac, &format!("ssh -F {} -T mac", ssh_config.display()));
    let (code, checks) = doctor(&config, &[]);
    assert_eq!(sshd.client_connections(), 0, "connected:\n{}", sshd.log());
    assert_eq!(code, Some(1), "{checks:#?}");
    let row = check(&checks, "ssh.config");
    assert_eq!(row["status"], "fail", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("Bad configuration option: bogusoption"),
        "{detail}"
    );
    assert!(detail.contains("ssh -G"), "{detail}");
    assert_eq!(check(&checks, "reach")["status"], "skip", "{checks:#?}");
}

/// Without the OpenSSH client our own parser reads the config, and a `Match` block (which only ssh
/// can evaluate) is refused rather than skipped: it could have changed the target.
#[test]
fn refuses_a_match_block_it_cannot_evaluate_without_the_openssh_client() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let ssh_config = mac_ssh_config(&sshd, &mac, "Match user nobody\n  Port 1\n");
    let config = wrapper_config(&mac, &format!("ssh -F {} -T mac", ssh_config.display()));
    let empty = tempfile::tempdir().unwrap();
    let (code, checks) = doctor_with_env(&config, &[("PATH", &empty.path().display().to_string())]);
    assert_eq!(sshd.client_connections(), 0, "connected:\n{}", sshd.log());
    assert_eq!(code, Some(1), "{checks:#?}");
    let row = check(&checks, "ssh.config");
    assert_eq!(row["status"], "fail", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("line 7") && detail.contains("Match user nobody"),
        "{detail}"
    );
}

/// A config without an ssh block whose cliPath is `exec <ssh_command> …/imsg "$@"` (a transparent
/// wrapper: its remote imsg is imsg-sim under the name `imsg`).
pub fn wrapper_config(mac: &SimMac, ssh_command: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = mac.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let imsg = bin.join("imsg");
    if !imsg.exists() {
        std::os::unix::fs::symlink(imsg_sim_bin(), &imsg).unwrap();
    }
    let wrapper = mac.dir.path().join("imsg-ssh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {ssh_command} {} \"$@\"\n", imsg.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = mac.dir.path().join("wrapper-config.json5");
    std::fs::write(
        &path,
        format!(
            "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, {OPEN_ACCESS} }} }},
               bridge: {{ stateDir: {state:?} }} }}",
            cli = wrapper.display().to_string(),
            db = mac.db.display().to_string(),
            state = mac.state_dir().display().to_string(),
        ),
    )
    .unwrap();
    path
}

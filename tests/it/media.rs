//! Attachments end to end over a real sshd with imsg-sim as the remote imsg: staging with sha256,
//! the size cap enforced before reading, root checks against `..` and symlinks, safe local names,
//! late and deleted files, permission denied, the exec fallback, and outbound uploads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::Value;

use crate::sshd::{Sshd, SshdOptions};
use crate::support::{Bridge, OPEN_ACCESS, SimMac, imsg_bridge_bin, imsg_sim_bin, random_file, sha256_hex};

const SIGTERM: i32 = 15;
const FROM: &str = "+14155551212";

/// The roots the simulated Mac's files live under (canonical: /tmp may be a symlink elsewhere).
fn roots_of(mac: &SimMac) -> PathBuf {
    let root = std::fs::canonicalize(mac.dir.path()).unwrap();
    std::fs::create_dir_all(root.join("Attachments")).unwrap();
    root
}

/// Config: the ssh block for `sshd`, attachments on, roots = the Mac's `Attachments` folder.
fn media_config(sshd: &Sshd, mac: &SimMac, extra_imessage: &str, extra_bridge: &str) -> PathBuf {
    let root = roots_of(mac);
    let path = mac.dir.path().join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ dbPath: {db:?}, includeAttachments: true, mediaMaxMb: 16, {OPEN_ACCESS}
             remoteAttachmentRoots: [{roots:?}],
             ssh: {{ host: \"127.0.0.1\", port: {port}, user: {user:?}, identityFile: {key:?}, knownHostsFile: {kh:?},
                    remoteCliPath: {cli:?}, useAgent: false }}, {extra_imessage} }} }},
           bridge: {{ stateDir: {state:?}, {extra_bridge} }} }}",
        db = mac.db.display().to_string(),
        roots = root.join("Attachments").display().to_string(),
        port = sshd.port,
        user = sshd.user,
        key = sshd.client_key.display().to_string(),
        kh = sshd.known_hosts.display().to_string(),
        cli = imsg_sim_bin().display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn inject_files(mac: &SimMac, text: &str, copies: &[&Path], refs: &[&Path]) -> i64 {
    let spec = InjectSpec {
        from: FROM.into(),
        text: text.into(),
        attachments: copies.iter().map(|p| p.to_path_buf()).collect(),
        attachment_refs: refs.iter().map(|p| p.to_path_buf()).collect(),
        ..Default::default()
    };
    inject(&mac.db, &spec).unwrap().id
}

fn envelopes(lines: &[String]) -> Vec<Value> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// An sftp-server that logs every request (opens, and bytes read at close) to `log`: the outside
/// record of what the bridge read.
fn logging_sftp_server(dir: &Path, log: &Path) -> String {
    let server = [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("sftp-server (openssh-server) is needed");
    let script = dir.join("logging-sftp-server");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {server} -e -l INFO 2>>{}\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

#[test]
fn stages_a_3_mb_image_and_refuses_a_40_mb_file_without_reading_it() {
    let mac = SimMac::new();
    let sftp_log = mac.dir.path().join("sftp.log");
    let sshd = Sshd::start_with(SshdOptions {
        sftp: Some(logging_sftp_server(mac.dir.path(), &sftp_log)),
        ..Default::default()
    });
    let config = media_config(&sshd, &mac, "", "");
    let source = tempfile::tempdir().unwrap();
    let photo = source.path().join("photo.jpg");
    random_file(&photo, 3 * 1024 * 1024);
    let big = source.path().join("big.mov");
    random_file(&big, 40 * 1024 * 1024);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    inject_files(&mac, "look", &[&photo], &[]);
    inject_files(&mac, "", &[&big], &[]);
    bridge.wait_for_lines(2);
    let (_, lines) = bridge.stop(SIGTERM);
    let got = envelopes(&lines);

    let media = &got[0]["media"][0];
    assert_eq!(media["status"], "ok", "{media}");
    assert_eq!(media["sha256"], sha256_hex(&photo));
    assert_eq!(media["mime"], "image/jpeg");
    let staged = PathBuf::from(media["path"].as_str().unwrap());
    assert!(
        staged.starts_with(mac.state_dir().join("media/inbound/default")),
        "{}",
        staged.display()
    );
    assert_eq!(sha256_hex(&staged), sha256_hex(&photo));

    let refused = &got[1]["media"][0];
    assert_eq!(refused["status"], "too_large", "{refused}");
    assert_eq!(refused["size"], 40 * 1024 * 1024);
    assert!(refused["path"].is_null());
    assert!(
        got[1]["body"].as_str().unwrap().ends_with("<media:video>"),
        "{}",
        got[1]["body"]
    );
    let log = std::fs::read_to_string(&sftp_log).unwrap_or_default();
    assert!(log.contains("photo.jpg"), "the sftp log shows reads: {log}");
    assert!(
        !log.lines().any(|l| l.contains("open") && l.contains("big.mov")),
        "never opened: {log}"
    );
}

#[test]
fn refuses_paths_outside_the_roots_and_names_hostile_files_safely() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let root = roots_of(&mac);
    let attachments = root.join("Attachments");
    std::fs::write(root.join("secret.txt"), b"not for the agent").unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), attachments.join("innocent.jpg")).unwrap();
    let dotted = PathBuf::from(format!("{}/../secret.txt", attachments.display()));
    let hostile = attachments.join("evil\u{7}name\n.txt");
    std::fs::write(&hostile, b"ok").unwrap();
    let plain = attachments.join("plain.txt");
    std::fs::write(&plain, b"renamed by a hostile sender").unwrap();
    let config = media_config(&sshd, &mac, "", "");
    // A first run records the cursor; the rows below are written while no bridge runs, so the
    // database edit cannot race the watch.
    let first = Bridge::start(&config, &["run"]);
    first.wait_for_log("watching for messages");
    first.stop(SIGTERM);
    inject_files(
        &mac,
        "outside",
        &[],
        &[&dotted, &attachments.join("innocent.jpg")],
    );
    let rowid = inject_files(&mac, "names", &[], &[&hostile, &plain]);
    // What a hostile sender can put in chat.db: a transfer name that walks out of the folder.
    let db = rusqlite::Connection::open(&mac.db).unwrap();
    db.execute(
        "UPDATE attachment SET transfer_name = '../../x' WHERE filename = ?1",
        [plain.display().to_string()],
    )
    .unwrap();
    drop(db);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_lines(2);
    let (_, lines) = bridge.stop(SIGTERM);
    let got = envelopes(&lines);
    for media in got[0]["media"].as_array().unwrap() {
        assert_eq!(media["status"], "outside_roots", "{media}");
        assert!(media["path"].is_null());
    }
    assert_eq!(got[1]["rowid"], rowid);
    let cache = mac.state_dir().join("media/inbound/default");
    let names: Vec<String> = got[1]["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["status"], "ok", "{m}");
            let path = PathBuf::from(m["path"].as_str().unwrap());
            assert!(path.starts_with(&cache), "inside the cache: {}", path.display());
            path.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(names, vec!["evil_name_.txt", "x"]);
    assert!(!cache.parent().unwrap().join("x").exists() && !mac.state_dir().join("x").exists());
}

#[test]
fn waits_for_a_file_that_appears_late_and_reports_a_deleted_one_missing() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let attachments = roots_of(&mac).join("Attachments");
    let late = attachments.join("late.png");
    let deleted = attachments.join("deleted.png");
    let config = media_config(&sshd, &mac, "", "media: { pullRetries: 4 }");
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    inject_files(&mac, "late", &[], &[&late]);
    let writer = std::thread::spawn({
        let late = late.clone();
        move || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            random_file(&late, 200_000);
        }
    });
    bridge.wait_for_lines(1);
    writer.join().unwrap();
    inject_files(&mac, "deleted", &[], &[&deleted]);
    bridge.wait_for_lines(2);
    let (_, lines) = bridge.stop(SIGTERM);
    let got = envelopes(&lines);
    assert_eq!(got[0]["media"][0]["status"], "ok", "{}", got[0]["media"]);
    assert_eq!(got[0]["media"][0]["sha256"], sha256_hex(&late));
    assert_eq!(got[1]["media"][0]["status"], "missing", "{}", got[1]["media"]);
}

#[test]
fn reads_files_with_cat_when_the_server_refuses_sftp() {
    let sshd = Sshd::start_with(SshdOptions {
        sftp: Some(String::new()),
        ..Default::default()
    });
    let mac = SimMac::new();
    let source = tempfile::tempdir().unwrap();
    let photo = source.path().join("photo.heic");
    random_file(&photo, 1_500_000);
    let config = media_config(&sshd, &mac, "", "");
    inject_files(&mac, "", &[&photo], &[]);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    inject_files(&mac, "again", &[&photo], &[]);
    bridge.wait_for_lines(1);
    let (_, lines) = bridge.stop(SIGTERM);
    let media = &envelopes(&lines)[0]["media"][0];
    assert_eq!(media["status"], "ok", "{media}");
    assert_eq!(media["sha256"], sha256_hex(&photo));
    let (code, stdout, stderr) = run_cli(&config, &["attachments", "check", "--json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        report["method"].as_str().unwrap().starts_with("exec cat"),
        "{report}"
    );
    assert_eq!(report["statuses"]["ok"]["count"], 2);
}

fn run_cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `send` requests imsg-sim received, from its request log.
fn send_requests(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["method"] == "send")
        .map(|r| r["params"].clone())
        .collect()
}

#[test]
fn send_file_uploads_into_the_staging_folder_and_removes_it_after_the_grace_period() {
    let mac = SimMac::new();
    let requests = mac.dir.path().join("requests.jsonl");
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("SetEnv IMSG_SIM_REQUEST_LOG={}", requests.display())],
        ..Default::default()
    });
    let config = media_config(&sshd, &mac, "", "media: { outboundGraceMs: 1000 }");
    let source = tempfile::tempdir().unwrap();
    let photo = source.path().join("photo.jpg");
    random_file(&photo, 700_000);
    let (code, stdout, stderr) = run_cli(
        &config,
        &[
            "send",
            FROM,
            "a caption",
            "--file",
            photo.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}\n{}", sshd.log());
    let sent = send_requests(&requests);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let remote = sent[0]["file"].as_str().unwrap();
    assert!(
        remote.contains("/.imsg-bridge/outbound/") && remote.ends_with("/photo.jpg"),
        "{remote}"
    );
    assert_eq!(sent[0]["text"], "a caption");
    assert_eq!(sent[0]["to"], FROM);
    assert!(!Path::new(remote).exists(), "removed after the grace period");
    assert!(
        !Path::new(remote).parent().unwrap().exists(),
        "its private folder too"
    );
    assert!(stderr.contains("removing 1 uploaded file(s)"), "{stderr}");

    // imsg-sim stored what it was given: the bytes arrived intact.
    let history = mac.history_output(1, true);
    let stored: Vec<Value> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let attachment = stored
        .iter()
        .flat_map(|m| m["attachments"].as_array().cloned().unwrap_or_default())
        .find(|a| a["transfer_name"] == "photo.jpg")
        .expect("the sent attachment is in chat.db");
    assert_eq!(
        sha256_hex(Path::new(attachment["original_path"].as_str().unwrap())),
        sha256_hex(&photo)
    );

    // A media-only send carries no placeholder text.
    let (code, _, stderr) = run_cli(&config, &["send", FROM, "--file", photo.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let sent = send_requests(&requests);
    assert_eq!(sent.len(), 2);
    assert!(sent[1].get("text").is_none(), "{}", sent[1]);
}

/// The login for the permission test: root reads everything, so as root a dedicated unprivileged
/// user is created (once); otherwise the current user, for whom mode 000 is enough.
fn unprivileged_login() -> Option<String> {
    const USER: &str = "imsg-bridge-test";
    if crate::sshd::current_user() != "root" {
        return None;
    }
    let exists = Command::new("id")
        .arg("-u")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh", USER])
            .output()
            .expect("useradd (passwd package) is needed to test permission errors as root");
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // useradd leaves the password locked ("!"), which sshd without PAM treats as a locked account;
    // "*" means no password can match, but key logins work.
    let out = Command::new("usermod").args(["-p", "*", USER]).output().unwrap();
    assert!(
        out.status.success(),
        "usermod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(USER.to_string())
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_remote_user_without_read_permission_gets_denied_with_the_full_disk_access_remedy() {
    let login = unprivileged_login();
    let sshd = Sshd::start_with(SshdOptions {
        login_user: login.clone(),
        ..Default::default()
    });
    let mac = SimMac::new();
    let root = roots_of(&mac);
    // The login user must reach the database and run the simulator; only the attachment is closed.
    let sim = root.join("imsg");
    std::fs::copy(imsg_sim_bin(), &sim).unwrap();
    chmod(&sim, 0o755);
    chmod(&root, 0o777);
    chmod(&mac.db, 0o666);
    chmod(&root.join("Attachments"), 0o755);
    let private = root.join("Attachments").join("private.jpg");
    random_file(&private, 10_000);
    chmod(&private, if login.is_some() { 0o600 } else { 0o000 });
    inject_files(&mac, "closed", &[], &[&private]);
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("chat.db") {
            chmod(&entry.path(), 0o666);
        }
    }
    let config = media_config(&sshd, &mac, "", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{:?}", imsg_sim_bin().display().to_string()),
        &format!("{:?}", sim.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();

    let (code, stdout, stderr) = run_cli(&config, &["attachments", "check", "--json"]);
    assert_eq!(
        code,
        Some(1),
        "a failed pull fails the check: {stdout}\n{stderr}\n{}",
        sshd.log()
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}\n{}", sshd.log()));
    assert_eq!(report["statuses"]["denied"]["count"], 1, "{report}");
    let remedy = report["failures"][0]["remedy"].as_str().unwrap();
    assert!(remedy.contains("Full Disk Access"), "{remedy}");
    let (_, table, _) = run_cli(&config, &["attachments", "check"]);
    assert!(
        table.contains("remedy (denied):") && table.contains("Allow full disk access for remote users"),
        "{table}"
    );
    // doctor names the same problem in its attachments.pull check.
    let (code, report, _) = run_cli(&config, &["doctor", "--json"]);
    assert_eq!(code, Some(1), "{report}");
    let report: Value = serde_json::from_str(report.trim()).unwrap();
    let pull = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "attachments.pull")
        .unwrap()
        .clone();
    assert_eq!(pull["status"], "fail", "{pull}");
    assert!(
        pull["remedy"].as_str().unwrap().contains("Full Disk Access"),
        "{pull}"
    );
}

/// OpenClaw's shape for a wrapper that is not transparent: imsg runs as a local process
/// (`transport: "process"`, here imsg-sim on this machine's chat.db) and `remoteHost` names the Mac
/// whose files its answers name; the `ssh` block gives that connection its port, key and known_hosts.
fn remote_host_config(mac: &SimMac, sshd: &Sshd, port: u16, extra_bridge: &str) -> PathBuf {
    let root = roots_of(mac);
    let path = mac.dir.path().join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ transport: \"process\", cliPath: {cli:?}, dbPath: {db:?},
             includeAttachments: true, {OPEN_ACCESS} remoteAttachmentRoots: [{roots:?}],
             remoteHost: \"{user}@127.0.0.1\",
             ssh: {{ port: {port}, identityFile: {key:?}, knownHostsFile: {kh:?}, useAgent: false }} }} }},
           bridge: {{ stateDir: {state:?}, {extra_bridge} }} }}",
        cli = imsg_sim_bin().display().to_string(),
        db = mac.db.display().to_string(),
        roots = root.join("Attachments").display().to_string(),
        user = sshd.user,
        key = sshd.client_key.display().to_string(),
        kh = sshd.known_hosts.display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn pulls_attachments_from_remote_host_over_sftp_when_imsg_runs_as_a_process() {
    let mac = SimMac::new();
    let sftp_log = mac.dir.path().join("sftp.log");
    let sshd = Sshd::start_with(SshdOptions {
        sftp: Some(logging_sftp_server(mac.dir.path(), &sftp_log)),
        ..Default::default()
    });
    let config = remote_host_config(&mac, &sshd, sshd.port, "");
    let source = tempfile::tempdir().unwrap();
    let photo = source.path().join("remote-photo.jpg");
    random_file(&photo, 300 * 1024);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    inject_files(&mac, "from the Mac", &[&photo], &[]);
    bridge.wait_for_lines(1);
    let stderr = bridge.stderr().join("\n");
    let (_, lines) = bridge.stop(SIGTERM);
    let got = envelopes(&lines);
    let media = &got[0]["media"][0];
    assert_eq!(media["status"], "ok", "{media}\n{stderr}\n{}", sshd.log());
    assert_eq!(media["sha256"], sha256_hex(&photo));
    let staged = PathBuf::from(media["path"].as_str().unwrap());
    assert_eq!(sha256_hex(&staged), sha256_hex(&photo));
    // The bytes came through sftp-server on the "Mac", not from this machine's disk.
    let log = std::fs::read_to_string(&sftp_log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("open") && l.contains("remote-photo.jpg")),
        "the sftp log records the open: {log}\n{stderr}"
    );
    assert!(
        stderr.contains("attachments are read over SSH from remoteHost"),
        "{stderr}"
    );
}

#[test]
fn fails_the_attachment_with_the_ssh_error_when_remote_host_cannot_be_reached() {
    let mac = SimMac::new();
    let sshd = Sshd::start();
    // Nothing listens on this port: every connect is refused at once.
    let closed = crate::sshd::free_port();
    let config = remote_host_config(&mac, &sshd, closed, "media: { pullRetries: 1 }");
    let source = tempfile::tempdir().unwrap();
    let photo = source.path().join("photo.jpg");
    random_file(&photo, 1024);
    let bridge = Bridge::start(&config, &["run"]);
    bridge.wait_for_log("watching for messages");
    inject_files(&mac, "unreachable", &[&photo], &[]);
    bridge.wait_for_lines(1);
    let (_, lines) = bridge.stop(SIGTERM);
    let got = envelopes(&lines);
    assert!(
        got[0]["body"].as_str().unwrap().contains("unreachable"),
        "the envelope still goes: {}",
        got[0]
    );
    let media = &got[0]["media"][0];
    assert_eq!(media["status"], "failed", "{media}");
    let reason = media["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot reach") && reason.contains(&closed.to_string()),
        "the SSH error is the reason: {media}"
    );
}

/// Issue 15 item 10: the operator's own `imsg-bridge send` sends files from anywhere but never from
/// `~/.ssh`, `/proc` or the state dir's credentials: exit 2 with one line, before anything is sent.
#[test]
fn send_refuses_files_under_ssh_proc_and_the_credentials_with_exit_2_and_one_line() {
    let mac = SimMac::new();
    let config = mac.write_process_config("");
    let home = mac.dir.path().join("home");
    let key = home.join(".ssh/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();
    let pairing = mac.state_dir().join("credentials/imessage-pairing.json");
    std::fs::create_dir_all(pairing.parent().unwrap()).unwrap();
    std::fs::write(&pairing, b"{}").unwrap();
    let cases = [
        (key.display().to_string(), "~/.ssh".to_string()),
        ("/proc/self/environ".to_string(), "/proc".to_string()),
        (
            pairing.display().to_string(),
            "the state dir's credentials".to_string(),
        ),
    ];
    for (file, place) in cases {
        let out = Command::new(imsg_bridge_bin())
            .arg("--config")
            .arg(&config)
            .args(["send", "+14155551212", "look", "--file", &file])
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        let want = format!("refusing to send {file}: files under {place} are never sent");
        assert!(stderr.lines().any(|l| l.ends_with(&want)), "{file}: {stderr}");
    }
    let history = mac.history_output(1, false);
    assert!(
        !String::from_utf8_lossy(&history.stdout).contains("look"),
        "nothing was sent"
    );
}

//! `imsg-bridge demo` as a user runs it: one process, nothing installed, exit 0, and a timeline
//! showing pairing, the reply, the held group message and the SFTP-pulled photo.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{imsg_bridge_bin, imsg_sim_bin};

#[test]
fn the_demo_plays_the_whole_story_and_exits_0() {
    let out = Command::new(imsg_bridge_bin())
        .arg("demo")
        .env_remove("IMSG_BRIDGE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("connected over native SSH (host key SHA256:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pairing code ") && stdout.contains("Approved imessage sender +14155550199."),
        "{stdout}"
    );
    assert!(
        stdout.contains("bot → +14155550199: echo: hello again"),
        "{stdout}"
    );
    assert!(
        stdout.contains("held history: jane@example.com: dinner at 7?"),
        "{stdout}"
    );
    // The photo: the source's sha256 as printed before sending equals the staged file's in the envelope.
    let source = stdout
        .lines()
        .find_map(|l| l.split("[sunset.jpg, sha256 ").nth(1))
        .and_then(|rest| rest.strip_suffix(']'))
        .expect("the source sha256 is printed");
    let envelopes: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(envelopes.len(), 3, "{stdout}");
    let media = &envelopes[2]["media"][0];
    assert_eq!(media["status"], "ok");
    assert_eq!(media["sha256"], source, "{stdout}");
    assert_eq!(envelopes[1]["history"][0]["body"], "dinner at 7?");
}

/// A `demo --keep-running` process whose stdout is collected line by line on a thread.
struct KeptDemo {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl KeptDemo {
    fn start() -> KeptDemo {
        let mut child = Command::new(imsg_bridge_bin())
            .args(["demo", "--keep-running"])
            .env_remove("IMSG_BRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        KeptDemo { child, stdout }
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Wait until `done` holds for stdout; panics with stdout after `limit`.
    fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.stdout()) {
            assert!(
                Instant::now() < deadline,
                "no {what} within {limit:?}; stdout:\n{}",
                self.stdout().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The demo's chat.db, from the `imsg-sim inject --db PATH …` hint printed after the script.
    fn db(&self) -> PathBuf {
        self.wait_until(Duration::from_secs(60), "\"still running\"", |out| {
            out.iter().any(|l| l.contains("still running"))
        });
        let hint = self.stdout().into_iter().find_map(|l| {
            l.split("imsg-sim inject --db ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next().map(PathBuf::from))
        });
        hint.expect("the inject hint names the database")
    }

    /// Send `signal` (by kill(1): the tests forbid `unsafe`); returns the exit code and how long the
    /// exit took, waiting at most 10 s.
    fn stop(&mut self, signal: &str) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), sent.elapsed());
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "still running 10 s after {signal}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for KeptDemo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The kept demo leaves its folder for the user to look at; the test does not.
        let dir = std::env::temp_dir().join(format!("imsg-bridge-demo-{}", self.child.id()));
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn keep_running_shows_200_injected_messages_with_their_echo_replies_and_sigint_exits_0_within_2_s() {
    let mut demo = KeptDemo::start();
    let db = demo.db();
    let out = Command::new(imsg_sim_bin())
        .args(["inject", "--db"])
        .arg(&db)
        .args(["--from", "+14155550100", "--text", "ping", "--count", "200"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    demo.wait_until(Duration::from_secs(120), "200 messages and 200 replies", |out| {
        (1..=200).all(|n| {
            out.iter()
                .any(|l| l.ends_with(&format!("+14155550100 → bot: ping {n}")))
                && out
                    .iter()
                    .any(|l| l.ends_with(&format!("bot → +14155550100: echo: ping {n}")))
        })
    });
    let (code, took) = demo.stop("INT");
    assert_eq!(code, Some(0), "stdout:\n{}", demo.stdout().join("\n"));
    assert!(took < Duration::from_secs(2), "SIGINT took {took:?}");
}

#[test]
fn keep_running_stops_on_sigterm_with_0_within_2_s() {
    let mut demo = KeptDemo::start();
    demo.db();
    let (code, took) = demo.stop("TERM");
    assert_eq!(code, Some(0), "stdout:\n{}", demo.stdout().join("\n"));
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

/// Where the kept demo's "Mac" is: its folder (the SSH home) and SSH port, from the first timeline line.
fn mac_of(demo: &KeptDemo) -> (PathBuf, u16) {
    demo.db();
    let line = demo
        .stdout()
        .into_iter()
        .find(|l| l.contains("a simulated Mac is up"))
        .expect("the Mac line");
    let dir = line
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(", SSH on").next())
        .expect("the folder");
    let port = line
        .rsplit("127.0.0.1:")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("the port");
    (PathBuf::from(dir), port)
}

/// OpenSSH client options for the demo's client key and pinned host key, nothing from ~/.ssh.
fn client_options(dir: &Path) -> Vec<String> {
    [
        "-F".to_string(),
        "/dev/null".into(),
        "-i".into(),
        dir.join("client_ed25519").display().to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
    ]
    .into()
}

/// Run `program args…` with `stdin`, killed after 20 s (a hang fails the test instead of blocking it).
fn run_bounded(mut command: Command, stdin: &[u8]) -> (Option<i32>, String, String, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut input, &stdin);
    });
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// One `sftp -b -` session running `batch`; returns whether it succeeded and its output.
fn sftp(dir: &Path, port: u16, batch: &str) -> (bool, String) {
    let mut command = Command::new("sftp");
    command
        .args(client_options(dir))
        .args(["-P", &port.to_string(), "-b", "-", "demo@127.0.0.1"]);
    let (code, stdout, stderr, _) = run_bounded(command, batch.as_bytes());
    (code == Some(0), format!("{stdout}{stderr}"))
}

fn ssh(dir: &Path, port: u16, extra: &[&str], stdin: &[u8]) -> (Option<i32>, String, String, Duration) {
    let mut command = Command::new("ssh");
    command
        .args(client_options(dir))
        .args(["-p", &port.to_string()])
        .args(extra);
    run_bounded(command, stdin)
}

#[test]
fn sftp_refuses_every_path_outside_the_demo_folder_and_serves_the_folder() {
    let demo = KeptDemo::start();
    let (dir, port) = mac_of(&demo);
    let unique = format!("imsg-bridge-demo-escape-{}", std::process::id());
    let outside = std::env::temp_dir().join(&unique);
    std::fs::write(dir.join("inside.txt"), b"inside").unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd-link")).unwrap();
    let local = tempfile::tempdir().unwrap();
    let got = local.path().join("got");
    let upload = local.path().join("upload");
    std::fs::write(&upload, b"x").unwrap();
    for batch in [
        "ls /".to_string(),
        format!("get /etc/passwd {}", got.display()),
        format!("mkdir {}", outside.display()),
        format!("put {} {}", upload.display(), outside.display()),
        "ls ..".to_string(),
        "cd etc-link".to_string(),
        "ls etc-link/passwd".to_string(),
        format!("get passwd-link {}", got.display()),
        format!("get etc-link/passwd {}", got.display()),
        format!("put {} etc-link/{unique}", upload.display()),
        "mkdir etc-link/newdir".to_string(),
    ] {
        let (ok, output) = sftp(&dir, port, &batch);
        assert!(!ok, "{batch} succeeded:\n{output}");
        // sftp words a refused stat as "not found"; the status itself is checked in src/demo/sftp.rs.
        assert!(
            output.to_lowercase().contains("permission denied") || output.contains("not found"),
            "{batch}:\n{output}"
        );
        assert!(!output.contains("root:"), "{batch}:\n{output}");
    }
    assert!(!outside.exists(), "{} was created", outside.display());
    assert!(!got.exists(), "a file outside the folder was fetched");
    assert!(!Path::new("/etc").join(&unique).exists());

    let (ok, output) = sftp(
        &dir,
        port,
        &format!(
            "ls\nget inside.txt {}\nmkdir made\nput {} made/up",
            got.display(),
            upload.display()
        ),
    );
    assert!(ok, "{output}");
    assert!(output.contains("inside.txt"), "{output}");
    assert_eq!(std::fs::read(&got).unwrap(), b"inside");
    assert_eq!(std::fs::read(dir.join("made/up")).unwrap(), b"x");
}

#[test]
fn exec_runs_only_imsg_rpc_on_the_demo_database() {
    let demo = KeptDemo::start();
    let (dir, port) = mac_of(&demo);
    let other = crate::support::SimMac::new();
    let other_db = other.db.display().to_string();
    let target = "demo@127.0.0.1";
    for (line, status) in [
        (format!("imsg rpc --db {other_db}"), 1),
        (format!("/opt/homebrew/bin/imsg rpc --db={other_db}"), 1),
        ("anything rpc".to_string(), 127),
        (format!("cat {other_db}"), 127),
    ] {
        let (code, stdout, stderr, _) = ssh(&dir, port, &["-T", target, &line], b"");
        assert_eq!(code, Some(status), "{line}: {stdout} {stderr}");
        assert!(stdout.is_empty(), "{line}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{line}: {stderr}");
        assert!(stderr.starts_with("demo server: "), "{line}: {stderr}");
    }
    // The forms the bridge and the drop-in send still reach the simulator on the demo database.
    let db = dir.join("chat.db").display().to_string();
    let request = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"chats.list\",\"params\":{\"limit\":5}}\n";
    for line in [
        "imsg rpc".to_string(),
        format!("/opt/homebrew/bin/imsg rpc --db {db}"),
        format!("exec /opt/homebrew/bin/imsg rpc --db {db}"),
        format!("PATH=\"$PATH:/opt/homebrew/bin:/usr/local/bin\"; export PATH; exec imsg rpc --db {db}"),
    ] {
        let (code, stdout, stderr, _) = ssh(&dir, port, &["-T", target, &line], request);
        assert_eq!(code, Some(0), "{line}: {stderr}");
        assert!(stdout.contains("\"result\""), "{line}: {stdout} {stderr}");
    }
}

#[test]
fn refuses_shell_and_pty_requests_with_one_line_and_the_client_ends() {
    let demo = KeptDemo::start();
    let (dir, port) = mac_of(&demo);
    // A shell: our line. A forced terminal: OpenSSH's own line about the refused pty, and it ends.
    for (extra, line) in [
        (["-T", "demo@127.0.0.1"], "demo server: no shell or terminal here"),
        (["-tt", "demo@127.0.0.1"], "PTY allocation request failed"),
    ] {
        let (code, _, stderr, took) = ssh(&dir, port, &extra, b"");
        assert_ne!(code, Some(0), "{extra:?}: {stderr}");
        assert!(took < Duration::from_secs(10), "{extra:?} took {took:?}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(stderr.starts_with(line), "{extra:?}: {stderr}");
    }
}

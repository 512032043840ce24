//! `imsg-bridge demo` as a user runs it: one process, nothing installed, exit 0, and a timeline
//! showing pairing, the reply, the held group message and the SFTP-pulled photo.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
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

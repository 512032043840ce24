//! Shared fixtures for the integration tests: built binaries, a simulated Mac (chat.db made by
//! `imsg-sim`), configs, and a running `imsg-bridge` whose stdout and stderr are collected.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the `imsg-sim` binary built for this test run.
pub fn imsg_sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imsg-sim"))
}

/// Path of the `imsg-bridge` binary built for this test run.
pub fn imsg_bridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imsg-bridge"))
}

/// Channel settings that let every sender and group through, for tests about transport and delivery.
pub const OPEN_ACCESS: &str = "dmPolicy: \"open\", allowFrom: [\"*\"], groupPolicy: \"open\",";

/// Generous bound for things that normally take milliseconds; tests never assert speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A temporary "Mac": a chat.db created by `imsg-sim init`.
pub struct SimMac {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl SimMac {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let out = Command::new(imsg_sim_bin())
            .args(["init", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imsg-sim init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir, db }
    }

    /// Inject an inbound direct message from another process, as Messages would write it.
    /// `imsg-sim history --json` of one chat (with `--attachments` when asked): what is stored.
    pub fn history_output(&self, chat_id: i64, attachments: bool) -> std::process::Output {
        let mut command = Command::new(imsg_sim_bin());
        command
            .args(["history", "--db"])
            .arg(&self.db)
            .args(["--chat-id", &chat_id.to_string(), "--json"]);
        if attachments {
            command.arg("--attachments");
        }
        command.output().unwrap()
    }

    pub fn inject(&self, from: &str, text: &str) {
        self.inject_with(&["--from", from, "--text", text]);
    }

    /// `imsg-sim inject --db <db> ARGS…` from another process; returns its stdout.
    pub fn inject_with(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(imsg_sim_bin())
            .args(["inject", "--db"])
            .arg(&self.db)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "imsg-sim inject failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// An exec agent beside the database that answers every envelope with `echo: <text>`.
    pub fn write_echo_agent(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let agent = self.dir.path().join("echo-agent.sh");
        std::fs::write(
            &agent,
            "#!/bin/sh\nwhile IFS= read -r line; do\n  id=$(printf '%s' \"$line\" | sed -n 's/^{\"id\":\"\\([^\"]*\\)\".*/\\1/p')\n  text=$(printf '%s' \"$line\" | sed -n 's/.*,\"text\":\"\\([^\"]*\\)\".*/\\1/p')\n  printf '{\"envelope_id\":\"%s\",\"text\":\"echo: %s\"}\\n' \"$id\" \"$text\"\ndone\n",
        )
        .unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        agent
    }

    /// A config whose only account runs `imsg-sim` as its imsg, with state under this temp dir. Access
    /// is open (the transport and delivery tests are not about pairing); `extra_imessage` may set
    /// `dmPolicy` and friends again, the later key wins.
    pub fn write_process_config(&self, extra_imessage: &str) -> PathBuf {
        let path = self.dir.path().join("config.json5");
        let text = format!(
            "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, {OPEN_ACCESS} {extra_imessage} }} }},\n  bridge: {{ stateDir: {state:?} }} }}\n",
            cli = imsg_sim_bin().display().to_string(),
            db = self.db.display().to_string(),
            state = self.state_dir().display().to_string(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// A running `imsg-bridge` with its output collected line by line.
pub struct Bridge {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_lines: mpsc::Receiver<String>,
}

impl Bridge {
    pub fn start(config: &Path, args: &[&str]) -> Self {
        Self::start_with_env(config, args, &[])
    }

    /// The same with extra environment variables (tokens, passphrases).
    pub fn start_with_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(imsg_bridge_bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        collect(out, stdout.clone(), None);
        collect(err, stderr.clone(), Some(tx));
        Self {
            child,
            stdout,
            stderr,
            stderr_lines: rx,
        }
    }

    /// Wait until a log line contains `needle`; panics with the log after `PATIENCE`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains(needle) => return,
                _ => {}
            }
        }
        panic!(
            "no log line containing {needle:?}; log:\n{}",
            self.stderr().join("\n")
        );
    }

    /// Wait until stdout has at least `n` lines.
    pub fn wait_for_lines(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.stdout().len() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "only {} of {n} stdout lines; log:\n{}",
            self.stdout().len(),
            self.stderr().join("\n")
        );
    }

    /// SIGKILL, as a crash would; waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Send a signal and wait for the exit; returns the exit code and all of stdout.
    pub fn stop(mut self, signal: i32) -> (Option<i32>, Vec<String>) {
        send_signal(self.child.id(), signal);
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "imsg-bridge did not exit; log:\n{}",
                self.stderr().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Give the collector threads a moment to see EOF.
        std::thread::sleep(Duration::from_millis(100));
        (status.code(), self.stdout())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signal a child through kill(1): the tests forbid `unsafe`, and std only offers SIGKILL.
fn send_signal(pid: u32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            // Stored before it is announced, so a waiter that saw the line also finds it in `stderr()`.
            into.lock().unwrap().push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

#[test]
fn both_binaries_are_built_for_the_tests() {
    assert!(imsg_sim_bin().is_file(), "{}", imsg_sim_bin().display());
    assert!(imsg_bridge_bin().is_file(), "{}", imsg_bridge_bin().display());
}

/// The sha256 of a file, in hex.
pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file of `len` pseudo-random bytes.
pub fn random_file(path: &Path, len: usize) {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ len as u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(path, bytes).unwrap();
}

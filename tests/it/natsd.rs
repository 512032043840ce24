//! A real `nats-server -js` on loopback for the NATS sink tests (issue 16), helpers that read a stream
//! back, and the example worker pool's own test.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};

use crate::sshd::free_port;
use crate::support::PATIENCE;

/// One nats-server with JetStream, its store in its own tempdir; killed on drop.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `nats-server` flags (authentication, TLS).
    extra: Vec<String>,
}

impl NatsServer {
    /// A server on a free loopback port, accepting connections when this returns.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// A server on `port`, for a client configured (and perhaps started) before the server.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// A server on `port` with more flags (`--auth TOKEN`, `--tls …`).
    pub fn start_with(port: u16, extra: &[String]) -> Self {
        let mut server = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.to_vec(),
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Start after `stop`: same port, same store, so the streams and consumers survive.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running server");
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is needed (apt-get install nats-server; scripts/test.sh does it)");
        self.child = Some(child);
        self.wait_until_ready();
    }

    /// SIGTERM (a clean shutdown that flushes the store) and wait for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // kill(1) as support.rs does: the test crate has no unsafe for kill(2). The child is not reaped
        // yet, so its pid is still ours.
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "nats-server ignored SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Ready once the client port accepts and the log says so (JetStream is up before the listener).
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server exited with {status}; log:\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not listening; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nats_server_bin() -> PathBuf {
    let sbin = Path::new("/usr/sbin/nats-server");
    if sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("nats-server")
    }
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMsg {
    pub seq: u64,
    pub subject: String,
    pub msg_id: Option<String>,
    pub payload: serde_json::Value,
}

/// Run `future` on a runtime of its own: the tests are synchronous.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

pub async fn connect(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.unwrap();
    jetstream::new(client)
}

/// Every message in `stream`, by sequence from first to last; deleted sequences are skipped.
pub fn read_stream(url: &str, stream: &str) -> Vec<StoredMsg> {
    block_on(async {
        let js = connect(url).await;
        let mut handle = js.get_stream(stream).await.unwrap();
        let state = handle.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            match handle.get_raw_message(seq).await {
                Ok(msg) => out.push(stored(msg)),
                Err(err) if err.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                Err(err) => panic!("reading {stream} #{seq}: {err}"),
            }
        }
        out
    })
}

fn stored(msg: async_nats::jetstream::message::StreamMessage) -> StoredMsg {
    StoredMsg {
        seq: msg.sequence,
        subject: msg.subject.to_string(),
        msg_id: msg.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string()),
        payload: serde_json::from_slice(&msg.payload)
            .unwrap_or_else(|e| panic!("#{} is not JSON ({e}): {:?}", msg.sequence, msg.payload)),
    }
}

/// The streams as the bridge makes them: envelopes kept by limits, replies as a work queue; both
/// with a 600 s duplicate window.
pub fn create_streams(url: &str, prefix: &str) {
    block_on(async {
        let js = connect(url).await;
        let streams = [
            ("IMSG", "in", stream::RetentionPolicy::Limits),
            ("IMSG_REPLIES", "out", stream::RetentionPolicy::WorkQueue),
        ];
        for (name, dir, retention) in streams {
            js.get_or_create_stream(stream::Config {
                name: name.to_string(),
                subjects: vec![format!("{prefix}.{dir}.>")],
                retention,
                duplicate_window: Duration::from_secs(600),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    })
}

/// Publish each `(subject, envelope)` with `Nats-Msg-Id: <envelope id>`, as the bridge does, waiting for
/// each PubAck.
pub fn publish_envelopes(url: &str, envelopes: &[(String, serde_json::Value)]) {
    block_on(async {
        let js = connect(url).await;
        for (subject, envelope) in envelopes {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", envelope["id"].as_str().unwrap());
            let payload = serde_json::to_vec(envelope).unwrap();
            js.publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    })
}

/// The example worker: `target/<profile>/examples/nats_echo_worker`, beside this test binary's
/// `target/<profile>/deps/`. `cargo test --all-targets` builds it; a narrower run builds it here.
pub fn example_worker_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("nats_echo_worker");
    if !bin.exists() {
        build_example(profile_dir);
    }
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

/// `cargo build --example nats_echo_worker` in the profile of this test binary, once per test run.
fn build_example(profile_dir: &Path) {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--example", "nats_echo_worker", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            command.arg("--release");
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "building the example worker failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// An example worker process on `url`; its stderr goes to `log` so a failure can show it.
fn start_worker(url: &str, log: &Path) -> Child {
    Command::new(example_worker_bin())
        .env("NATS_URL", url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// `n` envelopes for account `default`, as the bridge would publish them (the fields the worker reads
/// and a few it must ignore).
fn envelopes(n: usize) -> Vec<(String, serde_json::Value)> {
    (0..n)
        .map(|i| {
            let envelope = serde_json::json!({
                "id": format!("imessage:default:guid-{i:03}"),
                "account": "default",
                "channel": "imessage",
                "rowid": i + 1,
                "to": format!("imessage:+1555000{:04}", i % 7),
                "text": format!("hello {i}"),
                "media": [],
            });
            ("imsg.in.default".to_string(), envelope)
        })
        .collect()
}

/// Wait until `stream` holds `n` messages; panics with `why()` after `limit`.
fn wait_for_count(
    url: &str,
    stream: &str,
    n: usize,
    limit: Duration,
    why: impl Fn() -> String,
) -> Vec<StoredMsg> {
    let deadline = Instant::now() + limit;
    loop {
        let stored = read_stream(url, stream);
        if stored.len() >= n || Instant::now() >= deadline {
            assert_eq!(stored.len(), n, "messages in {stream}; {}", why());
            return stored;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stream's consumer count and `durable`'s state once it holds no unacked message (acks are
/// published without waiting, so they may land a moment after the last reply).
fn wait_for_acks(url: &str, stream: &str, durable: &str) -> (usize, consumer::Info) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (consumers, info) = block_on(async {
            let js = connect(url).await;
            let mut handle = js.get_stream(stream).await.unwrap();
            let consumers = handle.info().await.unwrap().state.consumer_count;
            let mut durable = handle
                .get_consumer::<consumer::pull::Config>(durable)
                .await
                .unwrap();
            (consumers, durable.info().await.unwrap().clone())
        });
        if info.num_ack_pending == 0 || Instant::now() >= deadline {
            assert_eq!(info.num_ack_pending, 0, "unacked envelopes: {info:?}");
            return (consumers, info);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each envelope got exactly one reply, to the right place, saying `echo: <text>`, with its own
/// `Nats-Msg-Id`.
fn check_replies(sent: &[(String, serde_json::Value)], replies: &[StoredMsg]) {
    let mut by_envelope: BTreeMap<String, Vec<&StoredMsg>> = BTreeMap::new();
    for reply in replies {
        assert_eq!(reply.subject, "imsg.out.default", "reply subject of {reply:?}");
        let id = reply.payload["envelope_id"].as_str().unwrap().to_string();
        by_envelope.entry(id).or_default().push(reply);
    }
    for (_, envelope) in sent {
        let id = envelope["id"].as_str().unwrap();
        let got = by_envelope.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), 1, "replies to {id}: {got:?}");
        let reply = got[0];
        assert_eq!(reply.payload["to"], envelope["to"], "{reply:?}");
        assert_eq!(
            reply.payload["text"],
            format!("echo: {}", envelope["text"].as_str().unwrap())
        );
        assert_eq!(
            reply.msg_id.as_deref(),
            Some(format!("reply:{id}").as_str()),
            "{reply:?}"
        );
    }
}

/// The workers' logs, for failure messages.
fn logs(paths: &[PathBuf]) -> String {
    let texts: Vec<String> = paths
        .iter()
        .map(|p| {
            format!(
                "{}:\n{}",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect();
    texts.join("\n")
}

#[test]
fn the_example_worker_pool_answers_each_envelope_once() {
    let nats = NatsServer::start();
    let url = nats.url();
    create_streams(&url, "imsg");
    let dir = tempfile::tempdir().unwrap();
    let log_paths: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    let mut workers: Vec<Child> = log_paths.iter().map(|log| start_worker(&url, log)).collect();

    let sent = envelopes(30);
    publish_envelopes(&url, &sent);
    let why = || format!("worker logs:\n{}\nserver log:\n{}", logs(&log_paths), nats.log());
    let replies = wait_for_count(&url, "IMSG_REPLIES", 30, PATIENCE * 2, why);
    check_replies(&sent, &replies);
    // The reply's Nats-Msg-Id would hide a second answer from the stream, so "once" is read from the
    // consumer: one shared durable, which delivered each envelope once and holds no unacked one.
    let (consumers, info) = wait_for_acks(&url, "IMSG", "echo-workers");
    assert_eq!(consumers, 1, "the workers share one consumer");
    assert_eq!(info.delivered.consumer_sequence, 30, "deliveries: {info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
}

/// Wait until the file at `path` contains `needle`; panics with it after `PATIENCE`.
fn wait_for_line(path: &Path, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workers_started_before_the_streams_wait_then_answer_across_a_server_restart() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let log_paths: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    let mut workers: Vec<Child> = log_paths.iter().map(|log| start_worker(&url, log)).collect();
    for log in &log_paths {
        wait_for_line(log, "waiting for the streams");
    }
    create_streams(&url, "imsg");
    let sent = envelopes(20);
    publish_envelopes(&url, &sent[..10]);
    let why = || format!("worker logs:\n{}\nserver log:\n{}", logs(&log_paths), nats.log());
    wait_for_count(&url, "IMSG_REPLIES", 10, PATIENCE * 2, why);

    let port = nats.port();
    nats.stop();
    nats.start_again();
    assert_eq!(
        nats.url(),
        format!("nats://127.0.0.1:{port}"),
        "same port after the restart"
    );
    publish_envelopes(&url, &sent[10..]);
    let why = || format!("worker logs:\n{}\nserver log:\n{}", logs(&log_paths), nats.log());
    let replies = wait_for_count(&url, "IMSG_REPLIES", 20, PATIENCE * 2, why);
    check_replies(&sent, &replies);
    let seqs: Vec<u64> = read_stream(&url, "IMSG").iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<u64>>(),
        "the restart kept the envelope stream"
    );
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
}

//! The nats sink against the stdout sink (issue 16): envelopes/s from one bridge into JetStream
//! (publish + PubAck) for a backlog that appears while the bridge watches, and the latency from a
//! row's commit to its envelope at 50 rows/s. The stdout sink, measured in the same run, is the
//! baseline; the bridge runs imsg-sim as a local child process (no SSH), so the sink is the only
//! difference between the two sides of a row.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use imsg_bridge::sim::db::{InjectSpec, inject_many};
use tokio::runtime::Runtime;

use crate::report::{Comparison, Samples};

/// Every DM let through (tests/it/support.rs has the same string).
const OPEN_ACCESS: &str = "dmPolicy: \"open\", allowFrom: [\"*\"], groupPolicy: \"open\",";
/// Far beyond what a working bridge needs for either row; a side that gives up counts this as its time.
const PATIENCE: Duration = Duration::from_secs(60);
const SENDER: &str = "+14155551212";

pub fn run(runtime: &Runtime, work: &Path) -> Vec<Comparison> {
    let Some(server) = Natsd::start(work) else {
        println!("nats: not measured (nats-server is not on PATH)");
        return Vec::new();
    };
    let client = runtime.block_on(async_nats::connect(server.url())).unwrap();
    // One core-NATS subscriber sees what every nats-side bridge publishes; texts tell rows apart.
    let published = Arrivals::default();
    let subscriber = subscribe(runtime, &client, &published);
    let rows = vec![
        throughput(runtime, &client, &server, &published, work),
        latency(&server, &published, work),
    ];
    subscriber.abort();
    rows
}

/// The two sides of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Nats,
    Stdout,
}

impl Sink {
    const BOTH: [Sink; 2] = [Sink::Nats, Sink::Stdout];

    fn slug(self) -> &'static str {
        match self {
            Sink::Nats => "nats",
            Sink::Stdout => "stdout",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Sink::Nats => "nats sink (JetStream)",
            Sink::Stdout => "stdout sink",
        }
    }
}

/// A backlog of rows committed in one transaction while the bridge watches, timed from the commit
/// until the last of them was delivered (a line on stdout, a message on `imsg.in.>`).
fn throughput(
    runtime: &Runtime,
    client: &async_nats::Client,
    server: &Natsd,
    published: &Arrivals,
    work: &Path,
) -> Comparison {
    let smoke = crate::rounds(2) == 1;
    let backlog = if smoke { 100 } else { 2000 };
    let sides: Vec<Side> = Sink::BOTH
        .into_iter()
        .map(|sink| Side::start(sink, "throughput", server, published, work))
        .collect();
    let before = stream_messages(runtime, client);
    let mut samples = Sink::BOTH.map(|sink| Samples::new(sink.label()));
    let mut firsts = Sink::BOTH.map(|sink| Samples::new(sink.slug()));
    // First → last envelope: the sink's own pace, without imsg's watch debounce before the first.
    let mut spans = Sink::BOTH.map(|sink| Samples::new(sink.slug()));
    let mut incomplete = [0usize; 2];
    // Interleaved rounds, so drift on the machine hits both sides alike.
    let rounds = crate::rounds(5);
    for round in 0..rounds {
        for (i, side) in sides.iter().enumerate() {
            let (first, last) = side.backlog(round, backlog);
            incomplete[i] += usize::from(last.is_none());
            assert!(
                !smoke || last.is_some(),
                "{}: the backlog did not arrive",
                side.sink.slug()
            );
            samples[i].durations.push(last.unwrap_or(PATIENCE));
            firsts[i].durations.extend(first);
            spans[i]
                .durations
                .extend(first.zip(last).map(|(first, last)| last - first));
        }
    }
    let added = stream_messages(runtime, client)
        .zip(before)
        .map(|(after, before)| after - before);
    let [nats, stdout] = samples;
    let rate = |s: &Samples| (backlog as f64 / (s.quantile_ms(0.5) / 1000.0)).round();
    let pace = |s: &Samples| ((backlog - 1) as f64 / (s.quantile_ms(0.5) / 1000.0)).round();
    let extra = serde_json::json!({
        "nats_envelopes_per_s": rate(&nats),
        "stdout_envelopes_per_s": rate(&stdout),
        "nats_envelopes_per_s_after_first": pace(&spans[0]),
        "stdout_envelopes_per_s_after_first": pace(&spans[1]),
        "nats_first_envelope_ms": firsts[0].quantile_ms(0.5).round(),
        "stdout_first_envelope_ms": firsts[1].quantile_ms(0.5).round(),
        // Each envelope once in the stream: Nats-Msg-Id de-duplication must not drop or double any.
        "stream_messages_added": added,
        "stream_messages_expected": rounds * backlog,
        "nats_rounds_incomplete": incomplete[0],
        "stdout_rounds_incomplete": incomplete[1],
    });
    let mut row = Comparison::new(&format!("nats throughput {backlog}"), nats, stdout);
    row.extra = object(extra);
    row
}

/// Rows committed one by one at 50/s; each one's commit → its envelope.
fn latency(server: &Natsd, published: &Arrivals, work: &Path) -> Comparison {
    let per_round = if crate::rounds(2) == 1 { 20 } else { 100 };
    let sides: Vec<Side> = Sink::BOTH
        .into_iter()
        .map(|sink| Side::start(sink, "latency", server, published, work))
        .collect();
    let mut samples = Sink::BOTH.map(|sink| Samples::new(sink.label()));
    for round in 0..crate::rounds(3) {
        for (i, side) in sides.iter().enumerate() {
            samples[i].durations.extend(side.paced(round, 50, per_round));
        }
    }
    let [nats, stdout] = samples;
    let expected = crate::rounds(3) * per_round;
    let extra = serde_json::json!({
        "nats_p50_ms": round1(nats.quantile_ms(0.5)),
        "nats_p95_ms": round1(nats.quantile_ms(0.95)),
        "stdout_p50_ms": round1(stdout.quantile_ms(0.5)),
        "stdout_p95_ms": round1(stdout.quantile_ms(0.95)),
        "added_p50_ms": round1(nats.quantile_ms(0.5) - stdout.quantile_ms(0.5)),
        "added_p95_ms": round1(nats.quantile_ms(0.95) - stdout.quantile_ms(0.95)),
        "nats_missing": expected - nats.durations.len(),
        "stdout_missing": expected - stdout.durations.len(),
    });
    let mut row = Comparison::new("nats latency @50/s", nats, stdout);
    row.extra = object(extra);
    row
}

fn round1(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// One side of a row: a watching bridge with its own chat.db, and where its envelopes show up.
struct Side {
    sink: Sink,
    db: PathBuf,
    bridge: Bridge,
    arrivals: Arrivals,
}

impl Side {
    /// Start the bridge and see one envelope through, so neither side's first round pays the start
    /// (for nats: the connection and the creation of the streams).
    fn start(sink: Sink, row: &str, server: &Natsd, published: &Arrivals, work: &Path) -> Self {
        let dir = work.join(format!("nats-{row}-{}", sink.slug()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("chat.db");
        imsg_bridge::sim::db::init(&db, false).unwrap();
        let agent = match sink {
            Sink::Nats => format!("agent: {{ kind: \"nats\", url: {:?} }},", server.url()),
            Sink::Stdout => String::new(),
        };
        let stdout = Arrivals::default();
        let mut bridge = Bridge::spawn(&config(&dir, &db, &agent), &stdout);
        bridge.wait_for_watch();
        let arrivals = match sink {
            Sink::Nats => published.clone(),
            Sink::Stdout => stdout,
        };
        let side = Self {
            sink,
            db,
            bridge,
            arrivals,
        };
        let text = format!("warm-up {row}");
        side.inject(&text, 1);
        if side.arrivals.wait(&text, 1).is_empty() {
            side.bridge
                .fail(&format!("{}: the warm-up envelope did not arrive", sink.slug()));
        }
        side
    }

    fn inject(&self, text: &str, count: u32) {
        let spec = InjectSpec {
            from: SENDER.into(),
            text: text.to_string(),
            count,
            ..InjectSpec::default()
        };
        inject_many(&self.db, &spec).unwrap();
    }

    /// Commit `count` rows at once; commit → first and → last envelope (`None`: not all arrived).
    fn backlog(&self, round: usize, count: usize) -> (Option<Duration>, Option<Duration>) {
        // inject_many appends each row's number: `tput 0 1` … `tput 0 2000`.
        let text = format!("tput {round}");
        self.inject(&text, u32::try_from(count).unwrap());
        let committed = Instant::now();
        let seen = self.arrivals.wait(&format!("{text} "), count);
        let since = |at: Option<&Instant>| at.map(|at| at.saturating_duration_since(committed));
        let last = if seen.len() == count {
            since(seen.iter().max())
        } else {
            None
        };
        (since(seen.iter().min()), last)
    }

    /// Commit `count` rows at `rate`/s; each delivered one's commit → envelope.
    fn paced(&self, round: usize, rate: u32, count: usize) -> Vec<Duration> {
        let spacing = Duration::from_secs(1) / rate;
        let started = Instant::now();
        let mut committed = Vec::with_capacity(count);
        for i in 0..count {
            if let Some(wait) = (started + spacing * i as u32).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.inject(&format!("lat {round} {i}"), 1);
            committed.push(Instant::now());
        }
        let prefix = format!("lat {round} ");
        self.arrivals.wait(&prefix, count);
        self.arrivals
            .matching(&prefix)
            .into_iter()
            .filter_map(|(text, at)| {
                let i: usize = text.strip_prefix(&prefix)?.parse().ok()?;
                Some(at.saturating_duration_since(*committed.get(i)?))
            })
            .collect()
    }
}

/// `dir/config.json5`: imsg-sim as a local child process on `db`, every DM let through, state in
/// `dir/state`, `agent` (empty: the stdout sink) in the bridge section.
fn config(dir: &Path, db: &Path, agent: &str) -> PathBuf {
    let config = dir.join("config.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {:?}, dbPath: {:?}, {OPEN_ACCESS} }} }}, bridge: {{ {agent} stateDir: {:?} }} }}",
        env!("CARGO_BIN_EXE_imsg-sim"),
        db.display().to_string(),
        dir.join("state").display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Envelopes as they arrived: their text and when they were read. Stamped where they are read, so
/// the interval the benchmark polls at does not count.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(String, Instant)>>>);

impl Arrivals {
    fn record(&self, envelope: &[u8]) {
        let at = Instant::now();
        let value: serde_json::Value = serde_json::from_slice(envelope).unwrap_or_default();
        if let Some(text) = value["text"].as_str() {
            self.0.lock().unwrap().push((text.to_string(), at));
        }
    }

    fn matching(&self, prefix: &str) -> Vec<(String, Instant)> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(text, _)| text.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Wait until `count` envelopes whose text starts with `prefix` arrived (or PATIENCE passed);
    /// when each of them arrived.
    fn wait(&self, prefix: &str, count: usize) -> Vec<Instant> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let seen: Vec<Instant> = self.matching(prefix).into_iter().map(|(_, at)| at).collect();
            if seen.len() >= count || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A core-NATS subscription on `imsg.in.>` (in place before this returns) recording into `into`.
fn subscribe(runtime: &Runtime, client: &async_nats::Client, into: &Arrivals) -> tokio::task::JoinHandle<()> {
    let mut subscriber = runtime.block_on(async {
        let subscriber = client.subscribe("imsg.in.>").await.unwrap();
        // The SUB has reached the server once a flush returns, so nothing published later is missed.
        client.flush().await.unwrap();
        subscriber
    });
    let into = into.clone();
    runtime.spawn(async move {
        while let Some(message) = subscriber.next().await {
            into.record(&message.payload);
        }
    })
}

/// How many messages stream IMSG holds (`None` before the bridge created it).
fn stream_messages(runtime: &Runtime, client: &async_nats::Client) -> Option<u64> {
    runtime.block_on(async {
        let stream = async_nats::jetstream::new(client.clone())
            .get_stream("IMSG")
            .await
            .ok()?;
        Some(stream.get_info().await.ok()?.state.messages)
    })
}

/// A running `imsg-bridge run`: stdout lines recorded as arrivals, stderr kept for failures.
struct Bridge {
    child: Child,
    log: crate::StderrLog,
}

impl Bridge {
    fn spawn(config: &Path, stdout: &Arrivals) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imsg-bridge"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stdout.take().unwrap();
        let stdout = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stdout.record(line.as_bytes());
            }
        });
        let log = crate::StderrLog::follow(&mut child);
        Self { child, log }
    }

    fn wait_for_watch(&mut self) {
        if !self.log.wait_for("watching for messages") {
            self.fail("the bridge did not start watching");
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}; log:\n{}", self.log.text());
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server -js` on a free loopback port, its store under the bench's work dir; killed on drop.
/// The smallest start these rows need (no tests/it fixture to share when this was written).
struct Natsd {
    child: Child,
    port: u16,
}

impl Natsd {
    /// `None` when nats-server is not installed.
    fn start(work: &Path) -> Option<Self> {
        let port = crate::sshd::free_port();
        let store = work.join("nats-store");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            other => other.unwrap(),
        };
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Natsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Catch-up after downtime: the bridge was stopped with its cursor saved, a backlog of 10,000
//! messages arrived at once (one `imsg-sim inject --count` transaction, far beyond imsg's watch
//! buffer of 256), and the bridge starts again. Timed from the start of `imsg-bridge run` until the
//! whole backlog was read as envelope lines on stdout, through the native SSH transport and through
//! an `exec ssh` wrapper process; the overflow log lines (each a lost subscription and a reconnect)
//! are counted on both sides.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::remote::{Remote, Transport};
use crate::report::{Comparison, Samples};

/// Replay everything missed: the row measures catching up, not the replay bound.
const REPLAY: &str = "replay: { maxRows: 20000, maxAgeMinutes: 10000 },";

/// One catch-up as `imsg-bridge run` did it.
struct CatchUp {
    /// Start → the last backlog envelope read, or the time given up after.
    elapsed: Duration,
    /// Start → the first backlog envelope read: process start, connection, initialize, first page.
    first: Option<Duration>,
    delivered: usize,
    overflows: usize,
}

pub fn run(work: &Path) -> Comparison {
    let smoke = crate::rounds(2) == 1;
    let backlog = if smoke { 300 } else { 10_000 };
    // A fixed bridge catches 10,000 up in seconds; far beyond that the result is a failure anyway.
    let patience = Duration::from_secs(if smoke { 60 } else { 120 });
    let remote = Remote::start(work, "catchup");
    let sides: Vec<(Transport, std::path::PathBuf, std::path::PathBuf)> = Transport::BOTH
        .into_iter()
        .map(|transport| {
            let dir = work.join(format!("catchup-{}", transport.slug()));
            std::fs::create_dir_all(&dir).unwrap();
            let db = dir.join("chat.db");
            imsg_bridge::sim::db::init(&db, false).unwrap();
            let config = remote.config(transport, &dir, &db, REPLAY);
            // The first start writes the cursor (the newest row); the backlog comes after it.
            let mut bridge = spawn(&config);
            wait_for_watch(&mut bridge);
            stop(bridge.child);
            (transport, config, db)
        })
        .collect();

    let mut ours = Samples::new(Transport::Native.label());
    let mut baseline = Samples::new(Transport::Wrapper.label());
    let mut firsts = [Samples::new("native"), Samples::new("wrapper")];
    let mut overflows = [0usize; 2];
    let mut incomplete = [0usize; 2];
    // Envelopes per second of each round: what arrived over the time it took (or was given).
    let mut rates: [Vec<f64>; 2] = Default::default();
    // Interleaved rounds, so drift on the machine hits both sides alike.
    for round in 0..crate::rounds(5) {
        for (side, (transport, config, db)) in sides.iter().enumerate() {
            let text = format!("catchup {round}");
            crate::sim(&[
                "inject",
                "--db",
                &db.display().to_string(),
                "--from",
                "+14155551212",
                "--text",
                &text,
                "--count",
                &backlog.to_string(),
            ]);
            let run = catch_up(config, &format!("{text} "), backlog, patience);
            assert!(
                !smoke || run.delivered == backlog,
                "{}: only {} of {backlog} backlog messages arrived in {patience:?}",
                transport.slug(),
                run.delivered
            );
            if run.delivered < backlog {
                eprintln!(
                    "catch-up {}: only {} of {backlog} after {:.1} s",
                    transport.slug(),
                    run.delivered,
                    run.elapsed.as_secs_f64()
                );
                incomplete[side] += 1;
            }
            overflows[side] += run.overflows;
            firsts[side].durations.extend(run.first);
            rates[side].push(run.delivered as f64 / run.elapsed.as_secs_f64());
            let samples = if *transport == Transport::Native {
                &mut ours
            } else {
                &mut baseline
            };
            samples.durations.push(run.elapsed);
        }
    }
    let rate = |side: usize| median(&rates[side]).round();
    let mut row = Comparison::new(&format!("catch-up of {backlog} backlog"), ours, baseline);
    // The time after the first envelope is the delivery rate proper, without the connection.
    let serde_json::Value::Object(extra) = serde_json::json!({
        "native_messages_per_s": rate(0),
        "wrapper_messages_per_s": rate(1),
        "native_first_envelope_ms": firsts[0].quantile_ms(0.5).round(),
        "wrapper_first_envelope_ms": firsts[1].quantile_ms(0.5).round(),
        "native_overflow_lines": overflows[0],
        "wrapper_overflow_lines": overflows[1],
        // A round that gave up counts its patience as its time in the table.
        "native_rounds_incomplete": incomplete[0],
        "wrapper_rounds_incomplete": incomplete[1],
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    row.extra = extra;
    row
}

/// The median (upper middle of an even count), NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A running `imsg-bridge run` whose stderr is collected.
struct Running {
    child: Child,
    stderr: crate::StderrLog,
}

fn spawn(config: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imsg-bridge"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = crate::StderrLog::follow(&mut child);
    Running { child, stderr }
}

fn wait_for_watch(bridge: &mut Running) {
    if !bridge.stderr.wait_for("watching for messages") {
        let _ = bridge.child.kill();
        panic!(
            "the bridge did not start watching; log:\n{}",
            bridge.stderr.text()
        );
    }
}

/// Start the bridge and time it until `count` envelopes whose text starts with `prefix` were read.
fn catch_up(config: &Path, prefix: &str, count: usize, patience: Duration) -> CatchUp {
    let started = Instant::now();
    let mut bridge = spawn(config);
    let stdout = bridge.child.stdout.take().unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let finished: Arc<Mutex<Option<Instant>>> = Arc::default();
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let reader = std::thread::spawn({
        let (delivered, finished, first) = (delivered.clone(), finished.clone(), first.clone());
        let prefix = prefix.to_string();
        move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if !value["text"].as_str().is_some_and(|t| t.starts_with(&prefix)) {
                    continue;
                }
                // Stamped here, not where it is polled, so the poll interval does not count.
                let n = delivered.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    *first.lock().unwrap() = Some(Instant::now());
                }
                if n == count {
                    *finished.lock().unwrap() = Some(Instant::now());
                }
            }
        }
    });
    let deadline = started + patience;
    while finished.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let done = *finished.lock().unwrap();
    // A clean stop saves the cursor past the backlog, so the next round starts after it.
    stop(bridge.child);
    let _ = reader.join();
    let overflows = bridge.stderr.all().iter().filter(|l| is_overflow(l)).count();
    CatchUp {
        elapsed: done.map_or(patience, |at| at.duration_since(started)),
        first: first.lock().unwrap().map(|at| at.duration_since(started)),
        delivered: delivered.load(Ordering::SeqCst),
        overflows,
    }
}

/// Log lines that say the watch overflowed (imsg's `watch.overflow`, or the bridge's own queue).
fn is_overflow(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    line.contains("overflow") || line.contains("fell behind the watch")
}

/// SIGTERM and wait (SIGKILL after 30 s): std only offers SIGKILL and the benches forbid `unsafe`.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-15", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

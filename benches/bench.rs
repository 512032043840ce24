//! `cargo bench [-- NAME…]`: imsg-bridge measured side by side with the OpenSSH path users run
//! today, against a real sshd on loopback with imsg-sim as the remote imsg. Prints a table and writes
//! `target/bench/results.json`. Benchmarks, not tests: nothing here asserts a speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attachments;
mod catchup;
mod dropin;
mod latency;
mod nats;
mod pipeline;
mod remote;
mod report;
mod rss;
#[path = "../tests/it/sshd.rs"]
#[allow(dead_code)]
mod sshd;
mod startup;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run `imsg-sim` with `args`; panics with its stderr on failure.
fn sim(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_imsg-sim"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "imsg-sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child's stderr, kept whole for failure messages and handed over line by line to wait for one.
pub struct StderrLog {
    all: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
}

impl StderrLog {
    /// Take `child`'s piped stderr and read it on a thread of its own.
    pub fn follow(child: &mut Child) -> Self {
        let all = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn({
            let all = all.clone();
            move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    all.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }
        });
        Self { all, lines }
    }

    /// Whether a line containing `needle` arrived within 30 s.
    pub fn wait_for(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100))
                && line.contains(needle)
            {
                return true;
            }
        }
        false
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.all.lock().unwrap().clone()
    }

    /// Every line so far, as one text.
    pub fn text(&self) -> String {
        self.all().join("\n")
    }
}

/// How many measured rounds each benchmark runs: `cargo bench` passes `--bench`; under `cargo test
/// --all-targets` the binary runs without it, and one round proves the benchmarks still work.
pub fn rounds(full: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        full
    } else {
        1
    }
}

fn main() {
    // Anything that is not a flag names the benchmarks to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let selected = |name: &str| wanted.is_empty() || wanted.iter().any(|w| name.contains(w.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    if selected("startup") {
        rows.push(startup::run(&runtime, work.path()));
    }
    if selected("latency") {
        rows.extend(latency::run(work.path()));
    }
    if selected("latency-hog") {
        rows.push(latency::run_with_hog(work.path()));
    }
    if selected("catchup") {
        rows.push(catchup::run(work.path()));
    }
    if selected("pipeline") {
        rows.push(pipeline::run());
    }
    if selected("attachments") {
        rows.extend(attachments::run(&runtime, work.path()));
    }
    if selected("dropin-send") {
        rows.push(dropin::send(work.path()));
    }
    if selected("dropin-attachment") {
        rows.push(dropin::attachment(work.path()));
    }
    if selected("dropin-start") {
        rows.extend(dropin::start(work.path()));
    }
    if selected("nats") {
        rows.extend(nats::run(&runtime, work.path()));
    }
    if selected("rss") && rss::run(work.path()).is_none() {
        println!("peak RSS: not measured (needs Linux /proc)");
    }
    report::print_table(&rows);
    if rounds(2) == 1 {
        println!("\nsmoke run (one round each); `cargo bench` measures");
        return;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/results.json");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    match report::write_json(&rows, &out) {
        Ok(()) => println!("\nwritten: {}", out.display()),
        Err(err) => eprintln!("cannot write {}: {err}", out.display()),
    }
}

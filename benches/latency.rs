//! Inbound latency: from the commit of an injected row to its envelope on stdout, at 1, 50 and 500
//! messages/s, through the native SSH transport and through an `exec ssh` wrapper run as a process.
//! Both include imsg's watch debounce (500 ms in imsg-sim), which dominates at low rates. The 500/s
//! row runs once more with one core kept busy by a spinning thread (`latency-hog`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};

use crate::remote::{Remote, Transport};
use crate::report::{Comparison, Samples};

pub fn run(work: &Path) -> Vec<Comparison> {
    let smoke = crate::rounds(2) == 1;
    let rates: &[(usize, usize)] = if smoke {
        &[(50, 20)]
    } else {
        &[(1, 8), (50, 150), (500, 1500)]
    };
    let remote = Remote::start(work, "latency");
    rates
        .iter()
        .map(|&(rate, count)| row(&remote, work, rate, count, false))
        .collect()
}

/// The 500/s row again while a busy thread keeps one of the cores spinning for the whole row: a
/// loaded host, where the bridge and its transport must share what is left.
pub fn run_with_hog(work: &Path) -> Comparison {
    let count = if crate::rounds(2) == 1 { 50 } else { 1500 };
    let remote = Remote::start(work, "latency-hog");
    let hog = Hog::start();
    let row = row(&remote, work, 500, count, true);
    drop(hog);
    row
}

/// One rate through both transports.
fn row(remote: &Remote, work: &Path, rate: usize, count: usize, hog: bool) -> Comparison {
    let mut ours = Samples::new(Transport::Native.label());
    let mut baseline = Samples::new(Transport::Wrapper.label());
    let tag = if hog { "-hog" } else { "" };
    for (transport, samples) in Transport::BOTH.into_iter().zip([&mut ours, &mut baseline]) {
        let dir = work.join(format!("latency{tag}-{}-{rate}", transport.slug()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("chat.db");
        imsg_bridge::sim::db::init(&db, false).unwrap();
        let config = remote.config(transport, &dir, &db, "");
        samples.durations.extend(measure(&config, &db, rate, count));
    }
    let suffix = if hog { " + hog" } else { "" };
    Comparison::new(&format!("inbound latency @{rate}/s{suffix}"), ours, baseline)
}

/// A thread spinning on one core until dropped.
struct Hog {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hog {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // The work itself does not matter; black_box keeps the compiler from dropping it.
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Inject `count` rows at `rate`/s and return each one's commit → envelope time.
fn measure(config: &Path, db: &Path, rate: usize, count: usize) -> Vec<Duration> {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_imsg-bridge"))
        .arg("--config")
        .arg(config)
        .args(["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn({
        let seen = seen.clone();
        move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(n) = value["text"]
                    .as_str()
                    .and_then(|t| t.strip_prefix("lat "))
                    .and_then(|n| n.parse().ok())
                {
                    seen.lock().unwrap().push((n, at));
                }
            }
        }
    });
    // Wait for the watch, as the log says.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("watching for messages") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let spacing = Duration::from_secs(1) / rate as u32;
    let started = Instant::now();
    let mut committed = Vec::with_capacity(count);
    for i in 0..count {
        if let Some(wait) = (started + spacing * i as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let spec = InjectSpec {
            from: "+14155551212".into(),
            text: format!("lat {i}"),
            ..InjectSpec::default()
        };
        inject(db, &spec).unwrap();
        committed.push(Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter_map(|(n, at)| committed.get(*n).map(|c| at.saturating_duration_since(*c)))
        .collect()
}

//! Peak resident memory of `imsg-bridge run` (release build) idle and while 500 messages/s arrive,
//! read from /proc/<pid>/status (VmHWM). Linux only; prints a note elsewhere.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};

/// (idle MiB, under load MiB), or None where /proc is missing.
pub fn run(work: &Path) -> Option<(f64, f64)> {
    let seconds = if crate::rounds(2) == 1 { 1 } else { 10 };
    let db = work.join("rss-chat.db");
    imsg_bridge::sim::db::init(&db, false).ok()?;
    let config = work.join("rss.json5");
    std::fs::write(
        &config,
        format!(
            "{{ channels: {{ imessage: {{ cliPath: {:?}, dbPath: {:?}, dmPolicy: \"open\", allowFrom: [\"*\"] }} }}, bridge: {{ stateDir: {:?} }} }}",
            env!("CARGO_BIN_EXE_imsg-sim"),
            db.display().to_string(),
            work.join("rss-state").display().to_string()
        ),
    )
    .ok()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_imsg-bridge"))
        .arg("--config")
        .arg(&config)
        .args(["-q", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle = hwm_mib(pid);
    // 500 messages/s for `seconds`, paced per 10 ms slot.
    let started = Instant::now();
    let spec = InjectSpec {
        from: "+14155551212".into(),
        text: "load ".repeat(20),
        ..InjectSpec::default()
    };
    for i in 0..(500 * seconds) {
        let due = started + Duration::from_millis(u64::try_from(i).unwrap_or(0) * 2);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let _ = inject(&db, &spec);
    }
    std::thread::sleep(Duration::from_secs(2));
    let loaded = hwm_mib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let (idle, loaded) = (idle?, loaded?);
    println!("peak RSS of run: idle {idle:.1} MiB, under 500 messages/s {loaded:.1} MiB");
    Some((idle, loaded))
}

fn hwm_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

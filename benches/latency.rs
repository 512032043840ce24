//! Inbound latency: from the commit of an injected row to its envelope on stdout, at 1, 50 and 500
//! messages/s, through the native SSH transport and through an `exec ssh` wrapper run as a process.
//! Both include imsg's watch debounce (500 ms in imsg-sim), which dominates at low rates.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};

use crate::report::{Comparison, Samples};
use crate::sshd::Sshd;

pub fn run(work: &Path) -> Vec<Comparison> {
    let smoke = crate::rounds(2) == 1;
    let rates: &[(usize, usize)] = if smoke {
        &[(50, 20)]
    } else {
        &[(1, 8), (50, 150), (500, 1500)]
    };
    let sshd = Sshd::start();
    let sim = env!("CARGO_BIN_EXE_imsg-sim");
    let wrapper = work.join("latency-imsg-ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ssh -T -o BatchMode=yes -p {} -i {} -o UserKnownHostsFile={} {}@127.0.0.1 {sim} \"$@\"\n",
            sshd.port,
            sshd.client_key.display(),
            sshd.known_hosts.display(),
            sshd.user
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut rows = Vec::new();
    for &(rate, count) in rates {
        let mut ours = Samples::new("native ssh (russh)");
        let mut baseline = Samples::new("exec ssh wrapper process");
        for (transport, samples) in [("native", &mut ours), ("wrapper", &mut baseline)] {
            let dir = work.join(format!("latency-{transport}-{rate}"));
            std::fs::create_dir_all(&dir).unwrap();
            let db = dir.join("chat.db");
            imsg_bridge::sim::db::init(&db, false).unwrap();
            let target = if transport == "native" {
                format!(
                    "ssh: {{ host: \"127.0.0.1\", port: {}, user: {:?}, identityFile: {:?}, knownHostsFile: {:?}, remoteCliPath: {sim:?}, useAgent: false }}",
                    sshd.port,
                    sshd.user,
                    sshd.client_key.display().to_string(),
                    sshd.known_hosts.display().to_string()
                )
            } else {
                format!(
                    "transport: \"process\", cliPath: {:?}",
                    wrapper.display().to_string()
                )
            };
            let config = dir.join("config.json5");
            std::fs::write(
                &config,
                format!(
                    "{{ channels: {{ imessage: {{ {target}, dbPath: {:?}, dmPolicy: \"open\", allowFrom: [\"*\"] }} }}, bridge: {{ stateDir: {:?} }} }}",
                    db.display().to_string(),
                    dir.join("state").display().to_string()
                ),
            )
            .unwrap();
            samples.durations.extend(measure(&config, &db, rate, count));
        }
        rows.push(Comparison {
            bench: format!("inbound latency @{rate}/s"),
            ours,
            baseline,
        });
    }
    rows
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

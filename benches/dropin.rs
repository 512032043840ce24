//! The drop-in `imsg-bridge imsg …` against the wrapper at OpenClaw's cliPath today (`exec ssh -T …
//! imsg "$@"`, benches/remote.rs), both driven as OpenClaw drives its `imsg rpc --db P` children:
//! a short-lived child that sends one text while a master is up (`dropin-send`), a 100 KB inbound
//! attachment from inject to a local file (`dropin-attachment`; the wrapper's side adds the one `scp`
//! OpenClaw runs with `remoteHost`), and a cold start to the first answer (`dropin-start`, with
//! connection sharing off and with sharing on but no master yet).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imsg_bridge::sim::db::{InjectSpec, inject};
use serde_json::{Value, json};

use crate::remote::{Remote, Transport, scp, write_random};
use crate::report::{Comparison, Samples};

const FROM: &str = "+14155551212";
/// Bound for one answer or notification; a row that waits this long has failed, not measured.
const PATIENCE: Duration = Duration::from_secs(30);
const ATTACHMENT_BYTES: usize = 100 * 1024;
/// How long the `dropin-start` master outlives its one client: short, so every round finds none.
const SHORT_PERSIST_MS: u64 = 200;
const OURS: &str = "imsg-bridge imsg (drop-in)";

/// `dropin-send`: spawn a child, one `send` (text), its answer, stdin closed, the exit; the
/// drop-in's children find the master a long-lived monitor child started.
pub fn send(work: &Path) -> Comparison {
    let remote = Remote::start(work, "dropin-send");
    let dir = work.join("dropin-send");
    let db = mac(&dir);
    let config = dropin_config(&remote, &dir, &db, "controlPersistMs: 60000");
    // The monitor OpenClaw keeps running; as the first drop-in process it starts the master.
    let mut monitor = Rpc::spawn(dropin(&config, &db));
    monitor.call("watch.subscribe", json!({"attachments": true}));
    assert!(master_socket(&dir).is_some(), "the monitor started no master");
    let logins_before = logins(&remote);

    let mut ours = Samples::new(OURS);
    let mut baseline = Samples::new(Transport::Wrapper.label());
    let rounds = crate::rounds(30);
    // Interleaved, so drift on the machine hits both sides alike; one warm-up round each.
    // Start → answer of each side: the exit waits for imsg's own exit on the Mac, the same on both.
    let mut answered = [Samples::new("drop-in answer"), Samples::new("wrapper answer")];
    for round in 0..=rounds {
        let a = send_once(dropin(&config, &db), &format!("dropin {round}"));
        let b = send_once(wrapper(&remote, &db), &format!("wrapper {round}"));
        if round > 0 {
            ours.durations.push(a.1);
            baseline.durations.push(b.1);
            answered[0].durations.push(a.0);
            answered[1].durations.push(b.0);
        }
    }
    // Every wrapper child logs in once; what is left over are the drop-in children's own logins.
    let dropin_logins = logins(&remote) - logins_before - (rounds + 1);
    drop(monitor);
    stop_masters(&dir);
    let mut row = Comparison::new("dropin-send, master up", ours, baseline);
    row.extra.insert(
        "ssh logins by the drop-in children".into(),
        json!(format!("{dropin_logins} for {}", rounds + 1)),
    );
    for side in answered {
        row.extra.insert(
            format!("{} p50 ms", side.name),
            json!(round_ms(side.quantile_ms(0.5))),
        );
    }
    row
}

/// `dropin-attachment`: inject a message with a 100 KB photo; time from the commit until the
/// drop-in monitor's `message` notification names a local copy, against the wrapper monitor's
/// notification plus one `scp` of the Mac path it names. Both subscribe with `debounce_ms: 0`:
/// imsg's 500 ms default would add the same wait to both sides and hide the transport.
pub fn attachment(work: &Path) -> Comparison {
    let remote = Remote::start(work, "dropin-attachment");
    let ours_dir = work.join("dropin-attachment-ours");
    let ours_db = mac(&ours_dir);
    let wrapper_dir = work.join("dropin-attachment-wrapper");
    let wrapper_db = mac(&wrapper_dir);
    let downloads = work.join("dropin-attachment-scp");
    std::fs::create_dir_all(&downloads).unwrap();
    // Sharing as shipped (the default controlPersistMs): the monitor is the master's first client.
    let config = dropin_config(&remote, &ours_dir, &ours_db, "");
    let subscribe = json!({"attachments": true, "debounce_ms": 0});
    let mut ours_monitor = Rpc::spawn(dropin(&config, &ours_db));
    ours_monitor.call("watch.subscribe", subscribe.clone());
    let mut wrapper_monitor = Rpc::spawn(wrapper(&remote, &wrapper_db));
    wrapper_monitor.call("watch.subscribe", subscribe);

    let mut ours = Samples::new(OURS);
    let mut baseline = Samples::new("exec ssh wrapper + scp");
    let mut notified = Samples::new("wrapper notification");
    let mut copied = Samples::new("scp");
    for round in 0..=crate::rounds(30) {
        let committed = inject_photo(&ours_dir, &ours_db, round);
        let (at, message) = ours_monitor.message();
        let a = at.saturating_duration_since(committed);
        let local = attachment_path(&message);
        assert!(
            local.starts_with(ours_dir.join("state")),
            "not a local copy: {message}"
        );
        assert_eq!(file_len(&local), ATTACHMENT_BYTES);

        let committed = inject_photo(&wrapper_dir, &wrapper_db, round);
        let (at, message) = wrapper_monitor.message();
        let on_mac = attachment_path(&message);
        let scp_started = Instant::now();
        scp(&remote.sshd, &on_mac, &downloads);
        let done = Instant::now();
        assert_eq!(file_len(&downloads.join("download")), ATTACHMENT_BYTES);
        if round > 0 {
            ours.durations.push(a);
            baseline.durations.push(done.saturating_duration_since(committed));
            notified.durations.push(at.saturating_duration_since(committed));
            copied.durations.push(done - scp_started);
        }
    }
    drop((ours_monitor, wrapper_monitor));
    stop_masters(&ours_dir);
    let mut row = Comparison::new("dropin-attachment 100 KB", ours, baseline);
    for part in [notified, copied] {
        row.extra.insert(
            format!("{} p50 ms", part.name),
            json!(round_ms(part.quantile_ms(0.5))),
        );
    }
    row
}

/// `dropin-start`: a fresh `imsg rpc` child to its first answer (`chats.list`), with sharing off
/// and with sharing on but no master yet (the child starts one), against the wrapper.
pub fn start(work: &Path) -> Vec<Comparison> {
    let remote = Remote::start(work, "dropin-start");
    let dir = work.join("dropin-start");
    let db = mac(&dir);
    let off = dropin_config(&remote, &dir.join("off"), &db, "controlPersistMs: 0");
    let shared_dir = dir.join("shared");
    let shared = dropin_config(
        &remote,
        &shared_dir,
        &db,
        &format!("controlPersistMs: {SHORT_PERSIST_MS}"),
    );

    let mut direct = Samples::new(OURS);
    let mut spawned = Samples::new(OURS);
    let mut baseline = Vec::new();
    let mut lingering = 0;
    let rounds = crate::rounds(20);
    for round in 0..=rounds {
        let a = first_answer(dropin(&off, &db));
        assert!(master_socket(&dir.join("off")).is_none(), "sharing was off");
        let b = first_answer(dropin(&shared, &db));
        // The master outlives its client by SHORT_PERSIST_MS: it must be there now.
        assert!(
            master_socket(&shared_dir).is_some(),
            "the child started no master"
        );
        let c = first_answer(wrapper(&remote, &db));
        // The master should be gone SHORT_PERSIST_MS after its client; allow ten times that.
        if !master_exits_within(&shared_dir, Duration::from_millis(10 * SHORT_PERSIST_MS)) {
            lingering += 1;
            stop_masters(&shared_dir);
        }
        if round > 0 {
            direct.durations.push(a);
            spawned.durations.push(b);
            baseline.push(c);
        }
    }
    let wrapper_side = || Samples {
        name: Transport::Wrapper.label().into(),
        durations: baseline.clone(),
    };
    let mut spawned = Comparison::new("dropin-start, no master yet", spawned, wrapper_side());
    spawned.extra.insert(
        "masters (socket or process) still up 10x controlPersistMs after their client (stopped)".into(),
        json!(format!("{lingering} of {}", rounds + 1)),
    );
    vec![
        Comparison::new("dropin-start, sharing off", direct, wrapper_side()),
        spawned,
    ]
}

/// Spawn, one `send`, its answer, stdin closed, exit: what OpenClaw's outbound path does.
/// Returns (start → answer, start → exit).
fn send_once(command: Command, text: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let mut child = Rpc::spawn(command);
    child.call("send", json!({"to": FROM, "text": text, "service": "imessage"}));
    let answered = started.elapsed();
    child.finish();
    (answered, started.elapsed())
}

/// Spawn until the answer to `chats.list`; the child is then ended outside the time.
fn first_answer(command: Command) -> Duration {
    let started = Instant::now();
    let mut child = Rpc::spawn(command);
    let chats = child.call("chats.list", json!({"limit": 1}));
    let elapsed = started.elapsed();
    assert_eq!(
        chats["chats"].as_array().map(Vec::len),
        Some(1),
        "the seeded chat: {chats}"
    );
    child.finish();
    elapsed
}

/// A chat.db in `dir` with one chat (imsg-sim keeps attachments in `Attachments/` beside it).
fn mac(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("chat.db");
    imsg_bridge::sim::db::init(&db, false).unwrap();
    inject(
        &db,
        &InjectSpec {
            from: FROM.into(),
            text: "seed".into(),
            ..InjectSpec::default()
        },
    )
    .unwrap();
    db
}

/// Write `dir/dropin.json5`: this sshd (with `ssh_extra` in the ssh block), attachments pulled from
/// `db`'s `Attachments/`, state in `dir/state`.
fn dropin_config(remote: &Remote, dir: &Path, db: &Path, ssh_extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let root = imsg_bridge::sim::attachments::attachments_root(db).unwrap();
    let config = dir.join("dropin.json5");
    std::fs::write(
        &config,
        format!(
            "{{ channels: {{ imessage: {{ {}, mediaMaxMb: 16, remoteAttachmentRoots: [{:?}] }} }}, bridge: {{ stateDir: {:?} }} }}",
            remote.ssh_block(ssh_extra),
            root.display().to_string(),
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    config
}

/// `imsg-bridge --config C imsg rpc --db P`: the drop-in at OpenClaw's cliPath.
fn dropin(config: &Path, db: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imsg-bridge"));
    command
        .arg("--config")
        .arg(config)
        .args(["imsg", "rpc", "--db"])
        .arg(db);
    command
}

/// `<wrapper> rpc --db P`: the `exec ssh` wrapper at OpenClaw's cliPath.
fn wrapper(remote: &Remote, db: &Path) -> Command {
    let mut command = Command::new(remote.wrapper());
    command.args(["rpc", "--db"]).arg(db);
    command
}

/// The control socket a master serves under `dir/state`, if one is there.
fn master_socket(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir.join("state/control")).ok()?;
    entries
        .map_while(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
}

/// Whether the masters under `dir/state` left within `wait`: socket removed and process gone (a
/// master that stopped listening may still hold its SSH connection).
fn master_exits_within(dir: &Path, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while master_socket(dir).is_some() || !master_pids(dir).is_empty() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The `control-master` processes our children started for `dir/state`, found in /proc by that
/// path, which is unique to this run (none where /proc is missing).
fn master_pids(dir: &Path) -> Vec<String> {
    let state = dir.join("state").display().to_string();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    processes
        .map_while(Result::ok)
        .filter(|process| {
            std::fs::read(process.path().join("cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("control-master") && cmdline.contains(&state)
            })
        })
        .map(|process| process.file_name().to_string_lossy().into_owned())
        .collect()
}

/// SIGTERM the masters under `dir/state` and wait until they left: a master outlives the row's
/// sshd by `controlPersistMs`, and one that outstays it must not outlive the benchmark.
fn stop_masters(dir: &Path) {
    for pid in master_pids(dir) {
        let _ = Command::new("kill").arg(pid).status();
    }
    assert!(
        master_exits_within(dir, PATIENCE),
        "a master under {} did not stop",
        dir.display()
    );
}

/// SSH logins the server accepted so far.
fn logins(remote: &Remote) -> usize {
    remote.sshd.log().matches("Accepted publickey").count()
}

/// Write a fresh 100 KB photo beside `db` and inject a message with it; returns the commit time.
fn inject_photo(dir: &Path, db: &Path, round: usize) -> Instant {
    let photo = dir.join(format!("IMG_{round:04}.jpeg"));
    write_random(&photo, ATTACHMENT_BYTES, round as u64);
    inject(
        db,
        &InjectSpec {
            from: FROM.into(),
            text: format!("photo {round}"),
            attachments: vec![photo],
            ..InjectSpec::default()
        },
    )
    .unwrap();
    Instant::now()
}

fn attachment_path(message: &Value) -> PathBuf {
    let path = message["attachments"][0]["original_path"].as_str();
    PathBuf::from(path.unwrap_or_else(|| panic!("no attachment path: {message}")))
}

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path)
        .map(|m| m.len() as usize)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn round_ms(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// An `imsg rpc` child (the drop-in or the wrapper) spoken to as OpenClaw does: JSON lines on its
/// stdin; its stdout read on a thread that stamps each line with the time it arrived.
struct Rpc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(Instant, Value)>,
    reader: Option<JoinHandle<()>>,
    next_id: u64,
}

impl Rpc {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"unparsed": line}));
                if tx.send((at, value)).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            reader: Some(reader),
            next_id: 0,
        }
    }

    /// Send a request and return its `result`; panics on an error answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{request}").unwrap();
        stdin.flush().unwrap();
        loop {
            let (_, line) = self.next();
            if line["id"] == id {
                assert!(line.get("result").is_some(), "{method}: {line}");
                return line["result"].clone();
            }
        }
    }

    /// The next `message` notification and when it arrived.
    fn message(&self) -> (Instant, Value) {
        loop {
            let (at, line) = self.next();
            if line["method"] == json!("message") {
                return (at, line["params"]["message"].clone());
            }
        }
    }

    fn next(&self) -> (Instant, Value) {
        self.lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no line from the child in {PATIENCE:?}"))
    }

    /// Close stdin and wait for the exit, as OpenClaw ends a short-lived child.
    fn finish(mut self) {
        self.stdin = None;
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the child exited with {status}");
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

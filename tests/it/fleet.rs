//! `gateway::fleet::run` driven as a library: imsg-sim as imsg over the process transport, an exec
//! agent and the control API, then a cancel. Every task the fleet started must have ended when it
//! returns: its tracker is closed and empty, the control API's port is free again, and files it staged
//! on the Mac (over a real sshd) are removed.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use imsg_bridge::gateway::fleet::{self, FleetEnd, FleetOptions};
use imsg_bridge::gateway::status::AccountState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{TOKEN, http};
use crate::sshd::{Sshd, SshdOptions, free_port};
use crate::support::{OPEN_ACCESS, PATIENCE, SimMac, imsg_sim_bin};

/// A cancelled fleet waits at most for the control API's grace (5 s) and the exec agent's (2 s).
const STOP_BOUND: Duration = Duration::from_secs(10);

type Running = tokio::task::JoinHandle<Result<FleetEnd, fleet::FleetError>>;

/// Run the fleet of `config_path` (control API token [`TOKEN`]) until its account is connected.
async fn start_connected(config_path: &std::path::Path) -> (Running, TaskTracker, CancellationToken) {
    let config = imsg_bridge::config::load(Some(config_path)).unwrap();
    let tasks = TaskTracker::new();
    let options = FleetOptions {
        http_token: Some(TOKEN.to_string()),
        tasks: tasks.clone(),
        ..FleetOptions::default()
    };
    let status = options.status.clone();
    let cancel = CancellationToken::new();
    let fleet = tokio::spawn({
        let cancel = cancel.clone();
        async move { fleet::run(&config, options, cancel).await }
    });
    let deadline = Instant::now() + PATIENCE;
    while status.get("default").map(|s| s.state) != Some(AccountState::Connected) {
        assert!(Instant::now() < deadline, "the account did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (fleet, tasks, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_fleet_returns_within_its_bound_with_every_task_it_started_ended() {
    let mac = SimMac::new();
    let port = free_port();
    let config_path = mac.dir.path().join("fleet.json5");
    let text = format!(
        "{{ channels: {{ imessage: {{ cliPath: {cli:?}, dbPath: {db:?}, {OPEN_ACCESS} }} }},
           bridge: {{ stateDir: {state:?},
                      agent: {{ kind: \"exec\", command: [\"sh\", \"-c\", \"cat >/dev/null\"] }},
                      http: {{ listen: \"127.0.0.1:{port}\", tokenEnv: \"IMSG_FLEET_TEST_TOKEN_UNUSED\" }} }} }}",
        cli = imsg_sim_bin().display().to_string(),
        db = mac.db.display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&config_path, text).unwrap();
    let (fleet, tasks, cancel) = start_connected(&config_path).await;
    let (code, _) = tokio::task::spawn_blocking(move || http(port, "GET", "/v1/status", Some(TOKEN), None))
        .await
        .unwrap();
    assert_eq!(code, 200, "the control API serves");
    assert_eq!(
        tasks.len(),
        3,
        "the account, the exec agent's supervisor and the control API"
    );

    cancel.cancel();
    let end = tokio::time::timeout(STOP_BOUND, fleet)
        .await
        .expect("the fleet returns within its bound")
        .unwrap()
        .unwrap();
    assert_eq!(end, FleetEnd::default(), "no account failed");
    assert!(
        tasks.is_closed() && tasks.is_empty(),
        "every task ended: {tasks:?}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the control API no longer listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_fleet_removes_the_files_it_staged_on_the_mac_before_it_returns() {
    let mac = SimMac::new();
    let requests = mac.dir.path().join("requests.jsonl");
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("SetEnv IMSG_SIM_REQUEST_LOG={}", requests.display())],
        ..Default::default()
    });
    let port = free_port();
    let config_path = mac.dir.path().join("fleet.json5");
    // A grace period far longer than the test: only the shutdown can remove the upload.
    let text = format!(
        "{{ channels: {{ imessage: {{ dbPath: {db:?}, {OPEN_ACCESS}
             ssh: {{ host: \"127.0.0.1\", port: {sshd_port}, user: {user:?}, identityFile: {key:?},
                    knownHostsFile: {kh:?}, remoteCliPath: {cli:?}, useAgent: false }} }} }},
           bridge: {{ stateDir: {state:?}, media: {{ outboundGraceMs: 600000 }},
                      http: {{ listen: \"127.0.0.1:{port}\", tokenEnv: \"IMSG_FLEET_TEST_TOKEN_UNUSED\" }} }} }}",
        db = mac.db.display().to_string(),
        sshd_port = sshd.port,
        user = sshd.user,
        key = sshd.client_key.display().to_string(),
        kh = sshd.known_hosts.display().to_string(),
        cli = imsg_sim_bin().display().to_string(),
        state = mac.state_dir().display().to_string(),
    );
    std::fs::write(&config_path, text).unwrap();
    // Under the default outbound media root: the API sends nothing from elsewhere.
    let photo = mac.state_dir().join("media/outbound/photo.jpg");
    std::fs::create_dir_all(photo.parent().unwrap()).unwrap();
    std::fs::write(&photo, vec![7u8; 50_000]).unwrap();
    let (fleet, tasks, cancel) = start_connected(&config_path).await;
    let body = format!(
        "{{\"to\":\"+14155551212\",\"text\":\"a photo\",\"media\":[{:?}]}}",
        photo.display().to_string()
    );
    let (code, answer) =
        tokio::task::spawn_blocking(move || http(port, "POST", "/v1/send", Some(TOKEN), Some(&body)))
            .await
            .unwrap();
    assert_eq!(code, 200, "{answer}");
    let staged: Vec<String> = std::fs::read_to_string(&requests)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["method"] == "send")
        .filter_map(|r| r["params"]["file"].as_str().map(str::to_string))
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    let staged = std::path::PathBuf::from(&staged[0]);
    assert!(staged.exists(), "staged on the Mac while the grace period runs");

    cancel.cancel();
    let end = tokio::time::timeout(STOP_BOUND, fleet)
        .await
        .expect("the fleet returns within its bound")
        .unwrap()
        .unwrap();
    assert_eq!(end, FleetEnd::default(), "no account failed");
    assert!(tasks.is_closed() && tasks.is_empty(), "every task ended");
    assert!(
        !staged.exists(),
        "the upload was removed before the connection closed"
    );
    assert!(!staged.parent().unwrap().exists(), "its private folder too");
}

//! Connection sharing against a real sshd: clients of a `control-master` (the real binary, started
//! by the client as a drop-in starts it) share one SSH connection, see the remote command's output
//! and exit status and SFTP bytes as over their own connection, get the same one-line error, and
//! the master goes away `controlPersistMs` after its last client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imsg_bridge::transport::control::client::Spawner;
use imsg_bridge::transport::control::{self, ControlClient};
use imsg_bridge::transport::ssh::{self, ExecEvent, SshError};
use tokio::io::AsyncReadExt;

use crate::sshd::Sshd;
use crate::support::{Bridge, OPEN_ACCESS, PATIENCE, SimMac, imsg_bridge_bin, imsg_sim_bin};

/// An sshd, a bridge config that reaches it, and the socket the config's target maps to.
struct Shared {
    sshd: Sshd,
    state: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Shared {
    fn new(persist_ms: u64) -> Self {
        Self::with(persist_ms, "")
    }

    /// With more keys in the `imessage` section (what `run` needs to watch a simulated Mac).
    fn with(persist_ms: u64, imessage: &str) -> Self {
        let sshd = Sshd::start();
        let state = tempfile::tempdir().unwrap();
        let config = state.path().join("bridge.json5");
        let text = format!(
            "{{ channels: {{ imessage: {{ {imessage} ssh: {{ host: \"127.0.0.1\", port: {port}, user: {user:?},
                 identityFile: {key:?}, knownHostsFile: {kh:?}, strictHostKeyChecking: \"yes\",
                 useAgent: false, controlPersistMs: {persist_ms} }} }} }},
               bridge: {{ stateDir: {state:?} }} }}",
            port = sshd.port,
            user = sshd.user,
            key = sshd.client_key.display().to_string(),
            kh = sshd.known_hosts.display().to_string(),
            state = state.path().display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        let socket = control::prepare(state.path(), &sshd.target()).unwrap();
        Shared {
            sshd,
            state,
            config,
            socket,
        }
    }

    /// A client that starts `imsg-bridge --config C control-master --socket S` when none listens.
    fn client(&self) -> ControlClient {
        let spawner = Spawner {
            program: imsg_bridge_bin(),
            args: vec!["--config".into(), self.config.clone().into_os_string()],
            wait: PATIENCE,
        };
        ControlClient::new(
            self.socket.clone(),
            control::target_key(&self.sshd.target()),
            Some(spawner),
        )
    }

    /// What the masters logged (their stderr goes to `<socket>.log`) and what sshd logged.
    fn logs(&self) -> String {
        let mut log = self.socket.as_os_str().to_os_string();
        log.push(".log");
        format!(
            "master log:\n{}\nsshd log:\n{}",
            std::fs::read_to_string(PathBuf::from(log)).unwrap_or_default(),
            self.sshd.log()
        )
    }

    /// SSH logins sshd accepted so far.
    fn logins(&self) -> usize {
        self.sshd.log().matches("Accepted publickey").count()
    }
}

/// Everything a remote command did, collected.
#[derive(Debug, Default, PartialEq)]
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<i32>,
}

async fn run(client: &ControlClient, command: &str, stdin: &[u8]) -> Ran {
    let mut exec = client.exec(command).await.unwrap();
    exec.send(stdin).await.unwrap();
    exec.eof().await.unwrap();
    let mut ran = Ran::default();
    while let Some(event) = tokio::time::timeout(PATIENCE, exec.next()).await.unwrap() {
        match event {
            ExecEvent::Stdout(data) => ran.stdout.extend_from_slice(&data),
            ExecEvent::Stderr(data) => ran.stderr.extend_from_slice(&data),
            ExecEvent::Exited(code) => ran.status = Some(code),
            _ => {}
        }
    }
    ran
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_through_the_master_passes_stdin_stdout_stderr_and_the_exit_status() {
    let shared = Shared::new(1_000);
    let client = shared.client();
    let ran = run(&client, "cat; printf 'to stderr' >&2; exit 7", b"from stdin\n").await;
    assert_eq!(
        ran,
        Ran {
            stdout: b"from stdin\n".to_vec(),
            stderr: b"to stderr".to_vec(),
            status: Some(7),
        },
        "{}",
        shared.logs()
    );
    let killed = client.exec("kill -TERM $$").await.unwrap();
    let (mut output, _input) = killed.split();
    let mut signal = None;
    while let Some(event) = output.next().await {
        if let ExecEvent::Killed {
            number, signal: name, ..
        } = event
        {
            signal = Some((number, name));
        }
    }
    assert_eq!(signal.map(|(n, _)| n), Some(15), "{}", shared.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_through_one_master_make_one_ssh_connection() {
    let shared = Shared::new(1_000);
    let (one, two) = (shared.client(), shared.client());
    let (a, b) = tokio::join!(run(&one, "echo one", b""), run(&two, "echo two", b""));
    assert_eq!(a.stdout, b"one\n", "{}", shared.logs());
    assert_eq!(b.stdout, b"two\n", "{}", shared.logs());
    let third = run(&shared.client(), "echo three", b"").await;
    assert_eq!(third.stdout, b"three\n");
    assert_eq!(shared.logins(), 1, "{}", shared.logs());
    assert!(!one.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_read_through_the_master_returns_the_files_bytes() {
    let shared = Shared::new(1_000);
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = shared.state.path().join("photo.heic");
    std::fs::write(&path, &bytes).unwrap();
    let sftp = shared
        .client()
        .sftp(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", shared.logs()));
    let remote = path.display().to_string();
    assert_eq!(sftp.stat(&remote).await.unwrap().size, bytes.len() as u64);
    let mut read = Vec::new();
    sftp.open(&remote)
        .await
        .unwrap()
        .read_to_end(&mut read)
        .await
        .unwrap();
    assert_eq!(read.len(), bytes.len());
    assert!(read == bytes, "the bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_stays_while_a_client_is_connected_and_leaves_persist_after_the_last() {
    let persist = Duration::from_millis(800);
    let shared = Shared::new(persist.as_millis() as u64);
    let client = shared.client();
    // A command that runs until its stdin ends keeps one client stream open.
    let mut exec = client.exec("cat").await.unwrap();
    tokio::time::sleep(persist * 3).await;
    assert!(
        shared.socket.exists(),
        "the master left while a client was connected\n{}",
        shared.logs()
    );
    exec.send(&b"still here\n"[..]).await.unwrap();
    exec.eof().await.unwrap();
    let mut out = Vec::new();
    while let Some(event) = exec.next().await {
        if let ExecEvent::Stdout(data) = event {
            out.extend_from_slice(&data);
        }
    }
    assert_eq!(out, b"still here\n");
    drop(exec);
    let ended = Instant::now();
    wait_until("the master removed its socket", || !shared.socket.exists()).await;
    assert!(
        ended.elapsed() >= persist / 2,
        "the master left before persist ran out"
    );
    assert!(!client.master_listens().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_by_a_new_master() {
    let shared = Shared::new(1_000);
    // A socket whose listener is gone: the file stays and refuses connections.
    drop(std::os::unix::net::UnixListener::bind(&shared.socket).unwrap());
    assert!(shared.socket.exists());
    let client = shared.client();
    assert!(!client.master_listens().await);
    let ran = run(&client, "echo fresh", b"").await;
    assert_eq!(ran.stdout, b"fresh\n", "{}", shared.logs());
    assert!(client.master_listens().await);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&shared.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the socket is owner-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_mismatch_reaches_the_client_as_the_same_one_line_error() {
    let shared = Shared::new(1_000);
    let other = shared.state.path().join("other_host_key");
    crate::sshd::keygen(&other, "ed25519", "");
    let wrong = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        &shared.sshd.known_hosts,
        format!("[127.0.0.1]:{} {}", shared.sshd.port, wrong.trim()),
    )
    .unwrap();
    let direct = ssh::connect(&shared.sshd.target()).await.unwrap_err();
    assert!(matches!(direct, SshError::HostKeyChanged { .. }), "{direct}");
    let client = shared.client();
    let shared_err = client.check().await.unwrap_err();
    assert_eq!(shared_err.to_string(), direct.to_string(), "{}", shared.logs());
    assert!(!shared_err.to_string().contains('\n'));
    assert!(client.is_closed(), "a master that cannot connect closes the link");
    let exec_err = client.exec("true").await.unwrap_err();
    assert_eq!(exec_err.to_string(), direct.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_its_accounts_socket_so_no_master_is_started_and_removes_it_when_it_stops() {
    let mac = SimMac::new();
    let imessage = format!("dbPath: {db:?}, {OPEN_ACCESS}", db = mac.db.display().to_string());
    let shared = Shared::with(60_000, &imessage);
    let config = std::fs::read_to_string(&shared.config).unwrap().replace(
        "useAgent: false,",
        &format!(
            "useAgent: false, remoteCliPath: {:?},",
            imsg_sim_bin().display().to_string()
        ),
    );
    std::fs::write(&shared.config, config).unwrap();
    let bridge = Bridge::start(&shared.config, &["run"]);
    bridge.wait_for_log("sharing the SSH connection");
    // No spawner: only a master that is already there (run) can answer.
    let client = ControlClient::new(
        shared.socket.clone(),
        control::target_key(&shared.sshd.target()),
        None,
    );
    let ran = run(&client, "echo via run", b"").await;
    assert_eq!(
        ran.stdout,
        b"via run\n",
        "{}\n{}",
        bridge.stderr().join("\n"),
        shared.logs()
    );
    let (code, _) = bridge.stop(15);
    assert_eq!(code, Some(0));
    assert!(!shared.socket.exists(), "run removed its socket when it stopped");
}

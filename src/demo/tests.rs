//! The demo server against the bridge's own native SSH client: auth and host-key pinning, `imsg rpc`
//! over exec, attachments pulled and uploads staged over SFTP, and shutdown on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use super::DemoServer;
use crate::imsg::ImsgClient;
use crate::media::upload;
use crate::media::{FileError, Files, Method, RemoteFiles};
use crate::rpc::{ClientOptions, ExitInfo};
use crate::transport::ssh::{self, SshConnection, SshError, SshTarget, StrictHostKeyChecking, exec, quote};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A demo "Mac" in a temp folder with the seeded chat.db, and a known_hosts file pinning it.
struct Mac {
    tmp: TempDir,
    db: PathBuf,
    server: DemoServer,
    known_hosts: PathBuf,
}

impl Mac {
    async fn start() -> Mac {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("mac");
        std::fs::create_dir(&home).unwrap();
        let db = home.join("Library/Messages/chat.db");
        crate::sim::db::init(&db, true).unwrap();
        let server = DemoServer::start(&home, &db).await.unwrap();
        let known_hosts = tmp.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {}\n", server.port, server.host_key_line),
        )
        .unwrap();
        Mac {
            tmp,
            db,
            server,
            known_hosts,
        }
    }

    fn target(&self) -> SshTarget {
        target_for(&self.server, &self.known_hosts)
    }

    async fn connect(&self) -> SshConnection {
        ssh::connect(&self.target()).await.unwrap()
    }

    fn home(&self) -> &Path {
        &self.server.home
    }

    async fn files(&self) -> Arc<RemoteFiles> {
        Arc::new(RemoteFiles::new(
            crate::transport::link::Link::Direct(Arc::new(self.connect().await)),
            Duration::from_secs(30),
        ))
    }
}

/// The bridge's view of a demo server, as the demo config will describe it.
fn target_for(server: &DemoServer, known_hosts: &Path) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port: server.port,
        user: server.user.clone(),
        identity_files: vec![server.client_key_path.clone()],
        identities_explicit: true,
        identity_passphrase_env: None,
        use_agent: false,
        known_hosts_files: vec![known_hosts.to_path_buf()],
        strict_host_key_checking: StrictHostKeyChecking::Yes,
        jumps: vec![],
        connect_timeout: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(15),
        keepalive_max: 3,
    }
}

/// Bytes that differ at every offset, so a chunk read from the wrong place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_imsg_rpc_from_the_seeded_chat_db_over_an_exec_channel() {
    let mac = Mac::start().await;
    let connection = mac.connect().await;
    let command = quote::rpc_command("/usr/local/bin/imsg", Some(&mac.db.display().to_string()));
    let (rpc, handle) = exec::exec_rpc(&connection, &command, ClientOptions::default())
        .await
        .unwrap();
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    let chats = imsg.chats_list(5).await.unwrap();
    let identifiers: Vec<&str> = chats.iter().map(|c| c.identifier.as_str()).collect();
    assert_eq!(identifiers, ["chat900000000000000001", "+14155551212"]);
    assert_eq!(chats[0].name, "Family");
    assert_eq!(
        handle.stop(&rpc).await,
        Some(ExitInfo::Code(0)),
        "imsg rpc exits 0 on stdin EOF"
    );
    assert_eq!(mac.server.sessions().len(), 1);
    assert_eq!(mac.server.sessions()[0].user, "demo");
    assert_eq!(mac.server.requests(), [format!("exec {command}")]);
    connection.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_chat_db_without_db_or_under_a_tilde_path_in_the_demo_home() {
    let mac = Mac::start().await;
    let connection = mac.connect().await;
    for db in [None, Some("~/Library/Messages/chat.db")] {
        let command = quote::rpc_command("imsg", db);
        let (rpc, handle) = exec::exec_rpc(&connection, &command, ClientOptions::default())
            .await
            .unwrap();
        let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
        assert_eq!(imsg.chats_list(5).await.unwrap().len(), 2, "{command}");
        handle.stop(&rpc).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_any_other_command_with_status_127_and_says_why() {
    let mac = Mac::start().await;
    let connection = mac.connect().await;
    for command in [
        "for p in imsg /opt/homebrew/bin/imsg; do command -v \"$p\"; done",
        "imsg chats --json",
    ] {
        let captured = exec::exec_capture(&connection, command, TIMEOUT).await.unwrap();
        assert_eq!(captured.status, Some(127), "{command}");
        assert!(
            captured.stderr.contains("demo server: unsupported command"),
            "{}",
            captured.stderr
        );
        assert!(captured.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_an_attachment_over_sftp_by_its_real_path_and_size() {
    let mac = Mac::start().await;
    let folder = mac.home().join("Library/Messages/Attachments/ab");
    std::fs::create_dir_all(&folder).unwrap();
    // Larger than one SFTP read, so offsets and the client's pipelining are exercised.
    let bytes = pattern(700 * 1024 + 3);
    std::fs::write(folder.join("photo.jpg"), &bytes).unwrap();
    let files = Files::Remote(mac.files().await);
    assert_eq!(files.method().await, Method::Sftp);

    let real = folder.join("photo.jpg").display().to_string();
    for path in [
        real.clone(),
        "Library/Messages/Attachments/ab/photo.jpg".to_string(),
        format!("{}/../ab/./photo.jpg", folder.display()),
    ] {
        let probe = files.probe(&path).await.unwrap();
        assert_eq!(probe.real_path, real, "{path}");
        assert_eq!(probe.size, bytes.len() as u64);
    }
    let mut out = Vec::new();
    let copied = files.read_into(&real, u64::MAX, &mut out).await.unwrap();
    assert_eq!(copied, bytes.len() as u64);
    assert!(out == bytes, "the pulled bytes differ from the file");

    let missing = files.probe(&folder.join("gone.jpg").display().to_string()).await;
    assert!(matches!(missing, Err(FileError::NotFound)), "{missing:?}");
    let dir = files.probe(&folder.display().to_string()).await;
    assert!(matches!(dir, Err(FileError::NotAFile)), "{dir:?}");
    let limited = files.read_into(&real, 1024, &mut Vec::new()).await;
    assert!(
        matches!(limited, Err(FileError::TooLarge { limit: 1024 })),
        "{limited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_an_upload_in_a_private_folder_of_the_demo_home_and_removes_it() {
    let mac = Mac::start().await;
    let local = mac.tmp.path().join("reply photo.png");
    let bytes = pattern(300 * 1024);
    std::fs::write(&local, &bytes).unwrap();
    let remote = mac.files().await;

    let uploaded = upload::upload(&remote, &local, u64::MAX).await.unwrap();
    let staging = format!("{}/.imsg-bridge/outbound/", mac.home().display());
    assert!(
        uploaded.remote_path.starts_with(&staging),
        "{} is not under {staging}",
        uploaded.remote_path
    );
    assert_eq!(uploaded.bytes, bytes.len() as u64);
    assert!(std::fs::read(&uploaded.remote_path).unwrap() == bytes);
    let mode = std::fs::metadata(&uploaded.remote_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the staging folder is owner-only");

    upload::remove(&remote, &uploaded).await;
    assert!(!Path::new(&uploaded.remote_path).exists());
    assert!(!Path::new(&uploaded.remote_dir).exists());
    assert!(mac.home().join(".imsg-bridge/outbound").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_every_key_but_the_demo_client_key() {
    let mac = Mac::start().await;
    let stranger = Mac::start().await;
    let mut target = mac.target();
    target.identity_files = vec![stranger.server.client_key_path.clone()];
    let err = ssh::connect(&target).await.unwrap_err();
    assert!(matches!(err, SshError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("publickey"), "{err}");
    assert!(mac.server.sessions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_an_owner_only_openssh_client_key_and_a_pinnable_host_key() {
    let mac = Mac::start().await;
    let path = &mac.server.client_key_path;
    assert_eq!(path, &mac.home().join("client_ed25519"));
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"),
        "{text}"
    );
    let key = russh::keys::load_secret_key(path, None).unwrap();
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    assert_eq!(public.trim(), key.public_key().to_openssh().unwrap());

    assert!(mac.server.host_key_line.starts_with("ssh-ed25519 AAAA"));
    assert_eq!(mac.server.host_key_line.split(' ').count(), 2, "no comment");
    assert_eq!(
        mac.server.known_hosts_line(),
        format!("[127.0.0.1]:{} {}", mac.server.port, mac.server.host_key_line)
    );

    // A server started again in the same folder replaces the key rather than failing on it.
    let again = DemoServer::start(mac.home(), &mac.db).await.unwrap();
    let reloaded = russh::keys::load_secret_key(&again.client_key_path, None).unwrap();
    assert_ne!(reloaded.public_key().key_data(), key.public_key().key_data());
    assert_ne!(again.host_key_line, mac.server.host_key_line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_listening_and_disconnects_clients_when_dropped() {
    // Keep the folder (and known_hosts) while the server alone goes away.
    let Mac {
        tmp: _tmp,
        server,
        known_hosts,
        ..
    } = Mac::start().await;
    let target = target_for(&server, &known_hosts);
    let connection = ssh::connect(&target).await.unwrap();
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !connection.is_closed() {
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = ssh::connect(&target).await.unwrap_err();
    assert!(matches!(err, SshError::Reach { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keepalives_so_a_quiet_connection_stays_up() {
    let mac = Mac::start().await;
    let mut target = mac.target();
    target.keepalive_interval = Duration::from_millis(50);
    target.keepalive_max = 2;
    let connection = ssh::connect(&target).await.unwrap();
    // Ten unanswered intervals would have ended it five times over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!connection.is_closed(), "{:?}", connection.end_reason());
}

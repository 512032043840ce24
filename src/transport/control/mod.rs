//! Connection sharing, like OpenSSH's ControlMaster/ControlPersist (docs/ssh.md, "Connection
//! sharing"): one process per Mac (the master, `imsg-bridge control-master` or `run`) holds the SSH
//! connection and serves exec and SFTP requests over an owner-only Unix socket in stateDir, so the
//! many short-lived `imsg-bridge imsg …` processes share one connection. This file holds the socket's
//! place and the rules that make it private; `protocol` the wire format, `server` the master,
//! `client` the other end.

pub mod client;
pub mod protocol;
pub mod server;
pub mod shared_rpc;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ssh::SshTarget;
pub use client::ControlClient;

/// Longest socket path the OS accepts (`sun_path` less its terminating NUL).
#[cfg(target_os = "linux")]
pub const MAX_SOCKET_PATH: usize = 107;
#[cfg(not(target_os = "linux"))]
pub const MAX_SOCKET_PATH: usize = 103;

/// Why sharing cannot be set up; the caller falls back to its own connection.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir} is not private (owner uid {owner}, mode {mode:o}; we are uid {uid}): connection sharing is off until it is. Fix: `chmod 700 {dir}` as its owner, or remove it"
    )]
    NotPrivate {
        dir: PathBuf,
        owner: u32,
        mode: u32,
        uid: u32,
    },
    #[error("the socket path {path} is longer than the {MAX_SOCKET_PATH} bytes the OS allows")]
    PathTooLong { path: PathBuf },
    #[error("cannot tell our own uid: {0}")]
    Uid(std::io::Error),
}

impl SetupError {
    /// A folder someone else could use to intercept our commands: worth a warning, not a debug line.
    pub fn is_unsafe(&self) -> bool {
        matches!(self, SetupError::NotPrivate { .. })
    }
}

/// The name the target's socket is derived from: `user@host:port` (the port always given, so two
/// spellings of one target share one master).
pub fn target_key(target: &SshTarget) -> String {
    format!("{}@{}:{}", target.user, target.host, target.port)
}

/// `<stateDir>/control/<16 hex of sha256("user@host:port")>.sock`.
pub fn socket_path(state_dir: &Path, target: &SshTarget) -> PathBuf {
    let digest = Sha256::digest(target_key(target).as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    state_dir.join("control").join(format!("{hex}.sock"))
}

/// Our effective uid, as the kernel reports it for one end of a socket pair we hold both ends of
/// (no unsafe libc call needed).
pub fn own_uid() -> std::io::Result<u32> {
    let (one, _other) = tokio::net::UnixStream::pair()?;
    Ok(one.peer_cred()?.uid())
}

/// Create the socket's folder (0700) when missing and check that it is ours and private, and that
/// the socket path fits `sun_path`. Returns the socket path to use.
pub fn prepare(state_dir: &Path, target: &SshTarget) -> Result<PathBuf, SetupError> {
    let socket = socket_path(state_dir, target);
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SetupError::PathTooLong { path: socket });
    }
    let dir = state_dir.join("control");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| SetupError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|source| SetupError::CreateDir {
        dir: dir.clone(),
        source,
    })?;
    let uid = own_uid().map_err(SetupError::Uid)?;
    check_private(&dir, meta.is_dir(), meta.uid(), meta.permissions().mode(), uid)?;
    Ok(socket)
}

/// A folder is private when it is a real folder (not a symlink), owned by us, and closed to group
/// and others.
fn check_private(dir: &Path, is_dir: bool, owner: u32, mode: u32, uid: u32) -> Result<(), SetupError> {
    if is_dir && owner == uid && mode & 0o077 == 0 {
        return Ok(());
    }
    Err(SetupError::NotPrivate {
        dir: dir.to_path_buf(),
        owner,
        mode: mode & 0o7777,
        uid,
    })
}

/// Make the socket file owner-only (the folder already is; this is the second fence).
pub fn restrict_socket(socket: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target(user: &str, host: &str, port: u16) -> SshTarget {
        SshTarget {
            host: host.into(),
            port,
            user: user.into(),
            identity_files: Vec::new(),
            identities_explicit: false,
            identity_passphrase_env: None,
            use_agent: false,
            known_hosts_files: Vec::new(),
            strict_host_key_checking: crate::config::StrictHostKeyChecking::Yes,
            jumps: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
        }
    }

    #[test]
    fn the_socket_is_named_by_the_hash_of_user_host_and_port() {
        let dir = Path::new("/state");
        let path = socket_path(dir, &target("bot", "mac", 22));
        let digest = Sha256::digest(b"bot@mac:22");
        let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(path, dir.join("control").join(format!("{expected}.sock")));
        assert_eq!(expected.len(), 16);
        assert_ne!(path, socket_path(dir, &target("bot", "mac", 2222)));
        assert_ne!(path, socket_path(dir, &target("alice", "mac", 22)));
    }

    #[test]
    fn only_an_owner_only_folder_of_ours_is_private() {
        let dir = Path::new("/state/control");
        assert!(check_private(dir, true, 501, 0o40700, 501).is_ok());
        let group = check_private(dir, true, 501, 0o750, 501).unwrap_err();
        assert!(group.is_unsafe());
        assert!(group.to_string().contains("chmod 700 /state/control"), "{group}");
        assert!(check_private(dir, true, 0, 0o700, 501).is_err());
        assert!(check_private(dir, true, 501, 0o702, 501).is_err());
        assert!(check_private(dir, false, 501, 0o700, 501).is_err());
    }

    #[tokio::test]
    async fn creates_the_folder_owner_only_and_refuses_a_shared_one() {
        let state = tempfile::tempdir().unwrap();
        let socket = prepare(state.path(), &target("bot", "mac", 22)).unwrap();
        let dir = state.path().join("control");
        assert_eq!(socket.parent(), Some(dir.as_path()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare(state.path(), &target("bot", "mac", 22)).unwrap_err();
        assert!(matches!(err, SetupError::NotPrivate { .. }), "{err}");
    }

    #[test]
    fn refuses_a_socket_path_too_long_for_sun_path() {
        let deep = PathBuf::from(format!("/{}", "d".repeat(MAX_SOCKET_PATH)));
        let err = prepare(&deep, &target("bot", "mac", 22)).unwrap_err();
        assert!(matches!(err, SetupError::PathTooLong { .. }), "{err}");
    }

    #[tokio::test]
    async fn knows_its_own_uid() {
        let state = tempfile::tempdir().unwrap();
        let mine = std::fs::metadata(state.path()).unwrap().uid();
        assert_eq!(own_uid().unwrap(), mine);
    }
}

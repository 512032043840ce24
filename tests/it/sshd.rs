//! A real OpenSSH `sshd` on a free loopback port, per test: generated host and client keys,
//! authorized_keys, the sftp subsystem, a known_hosts file pinning the host key, and its log kept for
//! failure messages. Runs as the current user (root in CI).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imsg_bridge::transport::ssh::{SshTarget, StrictHostKeyChecking};

const SSHD_CANDIDATES: [&str; 3] = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/usr/bin/sshd"];

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    /// The client key authorized on this server.
    pub client_key: PathBuf,
    /// A known_hosts file that trusts this server's host key under `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    pub host_key_pub: String,
    child: Child,
    config_path: PathBuf,
}

/// Options for a fixture.
#[derive(Default)]
pub struct SshdOptions {
    /// Extra sshd_config lines.
    pub extra_config: Vec<String>,
    /// Encrypt the client key with this passphrase.
    pub passphrase: Option<String>,
    /// The `Subsystem sftp` command (default: the packaged sftp-server); `Some("")` offers no sftp.
    pub sftp: Option<String>,
    /// Log in as this user instead of the current one (its home and the fixture files must be
    /// readable by it; see `Sshd::share_with`).
    pub login_user: Option<String>,
}

fn sshd_path() -> PathBuf {
    SSHD_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("sshd not found: install openssh-server (scripts/test.sh does it when root)")
        })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(status.success());
}

pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Sshd {
    pub fn start() -> Self {
        Self::start_with(SshdOptions::default())
    }

    pub fn start_with(options: SshdOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key, "ed25519", "");
        let client_key = dir.path().join("id_ed25519");
        keygen(
            &client_key,
            "ed25519",
            options.passphrase.as_deref().unwrap_or(""),
        );
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let host_key_pub = std::fs::read_to_string(host_key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string();
        let port = free_port();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key_pub}\n")).unwrap();
        let sftp = ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server"]
            .iter()
            .find(|p| Path::new(p).exists())
            .map_or("internal-sftp".to_string(), |p| p.to_string());
        let mut config = vec![
            format!("Port {port}"),
            "ListenAddress 127.0.0.1".into(),
            format!("HostKey {}", host_key.display()),
            format!("PidFile {}", dir.path().join("sshd.pid").display()),
            format!(
                "AuthorizedKeysFile {}",
                dir.path().join("authorized_keys").display()
            ),
            "StrictModes no".into(),
            "PermitRootLogin yes".into(),
            "PasswordAuthentication no".into(),
            "KbdInteractiveAuthentication no".into(),
            "PubkeyAuthentication yes".into(),
            "UsePAM no".into(),
            "LogLevel VERBOSE".into(),
            // Keep the remote environment predictable for the tests.
            "PermitUserEnvironment no".into(),
            "AcceptEnv IMSG_SIM_*".into(),
        ];
        config.extend(options.extra_config);
        match options.sftp.as_deref() {
            None => config.push(format!("Subsystem sftp {sftp}")),
            Some("") => {}
            Some(command) => config.push(format!("Subsystem sftp {command}")),
        }
        if options.login_user.is_some() {
            // sshd reads authorized_keys as the login user.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(
                dir.path().join("authorized_keys"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
        }
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config.join("\n") + "\n").unwrap();
        // sshd started by root insists on its privilege separation directory (Debian creates it at boot
        // only when the service runs).
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = spawn_sshd(&config_path, &dir.path().join("sshd.log"));
        let sshd = Sshd {
            dir,
            port,
            user: options.login_user.clone().unwrap_or_else(current_user),
            client_key,
            known_hosts,
            host_key_pub,
            child,
            config_path,
        };
        sshd.wait_listening();
        sshd
    }

    /// Stop sshd (every session with it) and start it again on the same port with the same keys.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The port may linger for a moment after the old listener closed.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn_sshd(&self.config_path, &self.dir.path().join("sshd.log"));
            std::thread::sleep(Duration::from_millis(100));
            if self.child.try_wait().unwrap().is_none() || Instant::now() > deadline {
                break;
            }
        }
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sshd did not listen on {}; log:\n{}", self.port, self.log());
    }

    /// TCP connections sshd logged, besides the fixture's own readiness probe.
    pub fn client_connections(&self) -> usize {
        self.log().matches("Connection from").count().saturating_sub(1)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A target for this server with the authorized key and the pinning known_hosts.
    pub fn target(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            identity_files: vec![self.client_key.clone()],
            identities_explicit: true,
            identity_passphrase_env: None,
            use_agent: false,
            known_hosts_files: vec![self.known_hosts.clone()],
            strict_host_key_checking: StrictHostKeyChecking::Yes,
            jumps: vec![],
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
        }
    }
}

fn spawn_sshd(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(sshd_path())
        .args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

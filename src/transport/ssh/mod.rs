//! The native SSH transport (russh), the only code that speaks to russh and russh-sftp (besides the
//! demo server): one connection per account carrying the `imsg rpc` exec channel, the other exec
//! commands and the attachments' SFTP session (docs/ssh.md, docs/attachments.md). Host keys are
//! checked by our own known_hosts matcher, authentication follows OpenSSH's order, ProxyJump hops
//! run over direct-tcpip channels, and every phase is time-boxed.

mod auth;
pub mod channel;
pub mod exec;
mod handler;
pub mod known_hosts;
mod pattern;
mod quickack;
pub mod quote;
pub mod sftp;
pub mod ssh_config;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::{Disconnect, Preferred};
use tracing::{debug, info};

pub use auth::AuthMethod;
pub use channel::{Chunk, ExecChannel, ExecEvent, ExecInput, ExecOutput};
use handler::{ClientHandler, Observed, Refusal};
pub use sftp::{Sftp, SftpError, SftpFile, Stat};

/// How long authentication may take in all (Tailscale "check" mode can otherwise hold for 30 min).
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);

pub use crate::config::StrictHostKeyChecking;

/// A fully resolved SSH destination (config + `~/.ssh/config` + wrapper merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The name we connect to and look up in known_hosts (the resolved HostName).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    /// Identity files were named by the user (config or wrapper), not OpenSSH's defaults: only agent
    /// keys matching them are offered.
    pub identities_explicit: bool,
    pub identity_passphrase_env: Option<String>,
    pub use_agent: bool,
    pub known_hosts_files: Vec<PathBuf>,
    pub strict_host_key_checking: StrictHostKeyChecking,
    /// Jump hosts, outermost first.
    pub jumps: Vec<SshTarget>,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
}

impl SshTarget {
    /// `user@host[:port]` for messages.
    pub fn display(&self) -> String {
        if self.port == 22 {
            format!("{}@{}", self.user, self.host)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// Why a connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot reach {addr}: {source}")]
    Reach {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {addr} timed out after {} s", .after.as_secs())]
    Timeout {
        what: &'static str,
        addr: String,
        after: Duration,
    },
    #[error(
        "host key of {host} is not known: the server offered {algorithm} {fingerprint}. Verify it, then add it with `ssh-keyscan -p {port} {host} >> ~/.ssh/known_hosts`, or set ssh.strictHostKeyChecking to \"accept-new\" to record it on first connect"
    )]
    HostKeyUnknown {
        host: String,
        port: u16,
        algorithm: String,
        fingerprint: String,
    },
    #[error(
        "HOST KEY CHANGED for {host}: the server offered {algorithm} {fingerprint}, but {file} line {line} holds a different key. Nothing was sent. If the Mac was reinstalled, remove the old line with `ssh-keygen -R {host}` and connect again"
    )]
    HostKeyChanged {
        host: String,
        algorithm: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error("host key {fingerprint} of {host} is marked @revoked in {file} line {line}; refusing to connect")]
    HostKeyRevoked {
        host: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error("cannot record the host key of {host}: {detail}")]
    HostKeyRecord { host: String, detail: String },
    #[error("authentication failed for {user}@{host}: tried {}; the server allows {allowed}", .tried.join(", "))]
    Auth {
        user: String,
        host: String,
        tried: Vec<String>,
        allowed: String,
        /// Set when the host key was let through unverified before authentication failed (boxed:
        /// every connect result carries this error type).
        host_key_unverified: Option<Box<HostKeyUnverified>>,
    },
    #[error("the server refused to run `{command}`")]
    ExecRefused { command: String },
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    /// The connection-sharing master's one-line error: the text a direct connection would show.
    #[error("{0}")]
    Shared(String),
    #[error("control socket {socket}: {source}")]
    ControlSocket {
        socket: String,
        #[source]
        source: std::io::Error,
    },
}

/// Facts about an established connection, for logs, status and doctor.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub fingerprint: String,
    pub algorithm: String,
    pub host_key_learned: bool,
    /// Set when the key was let through unverified (`strictHostKeyChecking: "no"`).
    pub host_key_unverified: Option<HostKeyUnverified>,
    pub auth_method: AuthMethod,
    pub banner: Option<String>,
}

/// Why a host key was accepted without being verified: only `strictHostKeyChecking: "no"` (from the
/// config, a wrapper's `-o` or ssh_config) does that, and doctor warns about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyUnverified {
    /// No known_hosts line names the host; `presented` is the server's `<algorithm> SHA256:…`.
    Unknown { presented: String },
    /// known_hosts records another key for the host: `known` is its `SHA256:…` fingerprint.
    Changed {
        known: String,
        presented: String,
        file: String,
        line: usize,
    },
}

/// An authenticated connection. Channels may be opened from several tasks at once.
pub struct SshConnection {
    handle: Arc<Handle<ClientHandler>>,
    /// Jump connections must outlive the tunnelled one.
    _jumps: Vec<Arc<Handle<ClientHandler>>>,
    pub info: ConnectionInfo,
    target: SshTarget,
    observed: Arc<Mutex<Observed>>,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("target", &self.target.display())
            .field("info", &self.info)
            .finish()
    }
}

impl SshConnection {
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Whether the session has ended (keepalive timeout, disconnect, I/O error).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Why the session ended, when it has: the first thing an operator asks after "connection lost".
    pub fn end_reason(&self) -> Option<String> {
        handler::lock(&self.observed).ended.clone()
    }

    /// Say goodbye politely; the session ends either way.
    pub async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "imsg-bridge stopping", "en")
            .await;
    }
}

fn client_config(target: &SshTarget) -> Arc<client::Config> {
    Arc::new(client::Config {
        client_id: russh::SshId::Standard(
            format!("SSH-2.0-imsg-bridge_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        // Nagle off: measured 61 → 19 ms auth and 41 → 7 ms RPC p99 next to a bulk transfer.
        nodelay: true,
        keepalive_interval: Some(target.keepalive_interval),
        keepalive_max: target.keepalive_max,
        // A quiet imsg rpc is healthy; keepalives detect dead peers instead.
        inactivity_timeout: None,
        preferred: preferred_for(target),
        ..Default::default()
    })
}

/// Prefer the host key algorithms known_hosts already holds for this host, as OpenSSH does, so an
/// ECDSA-only entry is matched instead of being reported unknown because Ed25519 was negotiated.
fn preferred_for(target: &SshTarget) -> Preferred {
    let files: Vec<known_hosts::KnownHostsText> = target
        .known_hosts_files
        .iter()
        .map(|p| known_hosts::KnownHostsText {
            text: std::fs::read_to_string(p).unwrap_or_default(),
        })
        .collect();
    let known = known_hosts::known_algorithms(&files, &target.host, target.port);
    if known.is_empty() {
        return Preferred::default();
    }
    let mut keys: Vec<_> = Preferred::default().key.iter().cloned().collect();
    keys.sort_by_key(|alg| !known.iter().any(|k| k == alg));
    Preferred {
        key: keys.into(),
        ..Preferred::default()
    }
}

/// Connect (through every jump host), verify host keys and authenticate.
pub async fn connect(target: &SshTarget) -> Result<SshConnection, SshError> {
    let mut hops: Vec<&SshTarget> = target.jumps.iter().collect();
    hops.push(target);
    let mut previous: Option<Arc<Handle<ClientHandler>>> = None;
    let mut jumps = Vec::new();
    let mut last_info = None;
    for hop in hops {
        let observed = Arc::new(Mutex::new(Observed::default()));
        let handler = ClientHandler::new(hop, observed.clone());
        let addr = format!("{}:{}", hop.host, hop.port);
        info!(target = %hop.display(), "connecting");
        let connecting = async {
            match &previous {
                None => {
                    let tcp = tokio::net::TcpStream::connect((hop.host.as_str(), hop.port))
                        .await
                        .map_err(|source| SshError::Reach {
                            addr: addr.clone(),
                            source,
                        })?;
                    let _ = tcp.set_nodelay(true);
                    client::connect_stream(client_config(hop), quickack::QuickAck::new(tcp), handler)
                        .await
                        .map_err(SshError::Ssh)
                }
                Some(jump) => {
                    let channel = jump
                        .channel_open_direct_tcpip(hop.host.as_str(), u32::from(hop.port), "127.0.0.1", 0)
                        .await?;
                    client::connect_stream(client_config(hop), channel.into_stream(), handler)
                        .await
                        .map_err(SshError::Ssh)
                }
            }
        };
        let connected = tokio::time::timeout(hop.connect_timeout, connecting)
            .await
            .map_err(|_| SshError::Timeout {
                what: "connecting to",
                addr: addr.clone(),
                after: hop.connect_timeout,
            })
            .and_then(|r| r);
        let mut handle = match connected {
            Ok(handle) => handle,
            Err(err) => return Err(host_key_error(hop, &observed).unwrap_or(err)),
        };
        info!(target = %hop.display(), "authenticating");
        let method = tokio::time::timeout(AUTH_TIMEOUT, auth::authenticate(&mut handle, hop))
            .await
            .map_err(|_| SshError::Timeout {
                what: "authenticating to",
                addr: addr.clone(),
                after: AUTH_TIMEOUT,
            })?
            .map_err(|err| with_host_key_verdict(err, &observed))?;
        let seen = handler::lock(&observed);
        let info = ConnectionInfo {
            fingerprint: seen.fingerprint.clone().unwrap_or_default(),
            algorithm: seen.algorithm.clone().unwrap_or_default(),
            host_key_learned: seen.learned,
            host_key_unverified: seen.unverified.clone(),
            auth_method: method,
            banner: seen.banner.clone(),
        };
        drop(seen);
        info!(target = %hop.display(), host_key = %info.fingerprint, auth = %info.auth_method, "connected");
        let handle = Arc::new(handle);
        if let Some(jump) = previous.replace(handle) {
            jumps.push(jump);
        }
        last_info = Some((info, observed));
    }
    let (Some(handle), Some((info, observed))) = (previous, last_info) else {
        // Unreachable: `hops` always holds at least the target itself.
        return Err(SshError::Ssh(russh::Error::Disconnect));
    };
    debug!(jumps = jumps.len(), "ssh connection ready");
    Ok(SshConnection {
        handle,
        _jumps: jumps,
        info,
        target: target.clone(),
        observed,
    })
}

/// An authentication failure keeps what the handshake let through unverified, so doctor does not
/// call that key trusted.
fn with_host_key_verdict(err: SshError, observed: &Arc<Mutex<Observed>>) -> SshError {
    match err {
        SshError::Auth {
            user,
            host,
            tried,
            allowed,
            host_key_unverified: None,
        } => SshError::Auth {
            user,
            host,
            tried,
            allowed,
            host_key_unverified: handler::lock(observed).unverified.clone().map(Box::new),
        },
        other => other,
    }
}

/// Turn the handler's recorded refusal into the error the operator needs.
fn host_key_error(hop: &SshTarget, observed: &Arc<Mutex<Observed>>) -> Option<SshError> {
    let observed = handler::lock(observed);
    let fingerprint = observed.fingerprint.clone().unwrap_or_default();
    let algorithm = observed.algorithm.clone().unwrap_or_default();
    let host = hop.host.clone();
    Some(match observed.refusal.clone()? {
        Refusal::Unknown => SshError::HostKeyUnknown {
            host,
            port: hop.port,
            algorithm,
            fingerprint,
        },
        Refusal::Changed { file, line } => SshError::HostKeyChanged {
            host,
            algorithm,
            fingerprint,
            file,
            line,
        },
        Refusal::Revoked { file, line } => SshError::HostKeyRevoked {
            host,
            fingerprint,
            file,
            line,
        },
        Refusal::CannotRecord { detail } => SshError::HostKeyRecord { host, detail },
    })
}

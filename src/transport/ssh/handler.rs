//! The russh client handler: a thin shim that checks the host key against our known_hosts matcher,
//! records what it saw (fingerprint, verdict, auth banner) for the connecting task, and refuses every
//! channel the server tries to open.

use std::sync::{Arc, Mutex};

use russh::client::{self, Session};
use russh::keys::{HashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use tracing::{info, warn};

use super::known_hosts::{self, HostKeyStatus, KnownHostsText};
use super::{HostKeyUnverified, SshTarget, StrictHostKeyChecking};

/// What the handler learnt during the handshake, shared with the task that connects.
#[derive(Debug, Default)]
pub struct Observed {
    /// `SHA256:…` of the server key (or of the certified key).
    pub fingerprint: Option<String>,
    /// The key algorithm name, e.g. `ssh-ed25519`.
    pub algorithm: Option<String>,
    /// The host-key verdict when it refused the key.
    pub refusal: Option<Refusal>,
    /// Set when `accept-new` recorded the key.
    pub learned: bool,
    /// Set when `strictHostKeyChecking: "no"` let an unknown or contradicted key through.
    pub unverified: Option<HostKeyUnverified>,
    /// Authentication banners (Tailscale "check" mode sends its URL here).
    pub banner: Option<String>,
    /// Why the session ended, once it has (keepalive timeout, the server's goodbye, an I/O error).
    pub ended: Option<String>,
}

/// Why a host key was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    Unknown,
    Changed { file: String, line: usize },
    Revoked { file: String, line: usize },
    CannotRecord { detail: String },
}

/// What the handler saw during the handshake, shared with the connection that reads it afterwards.
pub type ObservedHandshake = Arc<Mutex<Observed>>;

pub fn lock(observed: &ObservedHandshake) -> std::sync::MutexGuard<'_, Observed> {
    crate::util::lock(observed)
}

/// One per connection (and one per jump hop).
#[derive(Debug)]
pub struct ClientHandler {
    /// The name known_hosts is consulted under (the resolved HostName) and the port.
    host: String,
    port: u16,
    strict: StrictHostKeyChecking,
    known_hosts: Vec<std::path::PathBuf>,
    keepalive_max: usize,
    observed: ObservedHandshake,
}

impl ClientHandler {
    pub fn new(target: &SshTarget, observed: ObservedHandshake) -> Self {
        Self {
            host: target.host.clone(),
            port: target.port,
            strict: target.strict_host_key_checking,
            known_hosts: target.known_hosts_files.clone(),
            keepalive_max: target.keepalive_max,
            observed,
        }
    }

    fn read_known_hosts(&self) -> Vec<KnownHostsText> {
        self.known_hosts
            .iter()
            .map(|path| KnownHostsText {
                text: std::fs::read_to_string(path).unwrap_or_default(),
            })
            .collect()
    }

    fn verdict(&self, key: &PublicKeyOrCertificate, files: &[KnownHostsText]) -> HostKeyStatus {
        match key {
            PublicKeyOrCertificate::Certificate(cert) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                known_hosts::check_certificate(files, &self.host, self.port, cert, now)
            }
            other => known_hosts::check_key(files, &self.host, self.port, &other.public_key()),
        }
    }

    fn file_name(&self, index: usize) -> String {
        self.known_hosts
            .get(index)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Append the key to the first known_hosts file (accept-new), in place as OpenSSH does.
    fn record(&self, key: &PublicKeyOrCertificate) -> Result<(), String> {
        let Some(path) = self.known_hosts.first() else {
            return Err("no knownHostsFile configured".into());
        };
        let line = known_hosts::new_entry_line(&self.host, self.port, &key.public_key())
            .map_err(|e| e.to_string())?;
        append_entry(path, &line)
    }
}

/// Append `line` to a known_hosts file the way OpenSSH's `fopen(…, "a")` does: through a symlink to
/// its real target, keeping the file's mode (a new file gets 0666 less the umask, and a missing
/// directory is made 0700 like `~/.ssh`). Unlike OpenSSH, a last line without its newline gets one
/// first, so the new entry is not glued to it. One `write` of O_APPEND data keeps concurrent
/// bridges' lines whole.
fn append_entry(path: &std::path::Path, line: &str) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::DirBuilderExt;
    let shown = || crate::util::escape::escape_controls(&path.display().to_string()).into_owned();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                format!(
                    "cannot create {}: {e}",
                    crate::util::escape::escape_controls(&dir.display().to_string())
                )
            })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", shown()))?;
    let mut last = [0u8; 1];
    let glued = match file.seek(SeekFrom::End(-1)) {
        Ok(_) => file.read_exact(&mut last).is_ok() && last[0] != b'\n',
        // An empty file: nothing to end.
        Err(_) => false,
    };
    let text = if glued {
        format!("\n{line}")
    } else {
        line.to_string()
    };
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", shown()))
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let public = key.public_key();
        {
            let mut observed = lock(&self.observed);
            observed.fingerprint = Some(public.fingerprint(HashAlg::Sha256).to_string());
            observed.algorithm = Some(public.algorithm().as_str().to_string());
        }
        if self.strict == StrictHostKeyChecking::No {
            warn!(host = %self.host, "strictHostKeyChecking is \"no\": the host key is not enforced on this connection");
        }
        let files = self.read_known_hosts();
        let status = self.verdict(key, &files);
        let refusal = match (status, self.strict) {
            (HostKeyStatus::Trusted { .. }, _) => None,
            (HostKeyStatus::Revoked { file, line }, _) => Some(Refusal::Revoked {
                file: self.file_name(file),
                line,
            }),
            // A changed key is refused even under accept-new; only `no` lets it through (loudly).
            (HostKeyStatus::Changed { file, line }, StrictHostKeyChecking::No) => {
                let known = known_hosts::fingerprint_at(&files, file, line).unwrap_or_default();
                let presented = presented(&public);
                warn!(host = %self.host, file = %self.file_name(file), line, %known, %presented, "host key CHANGED, accepted because strictHostKeyChecking is \"no\"");
                lock(&self.observed).unverified = Some(HostKeyUnverified::Changed {
                    known,
                    presented,
                    file: self.file_name(file),
                    line,
                });
                None
            }
            (HostKeyStatus::Changed { file, line }, _) => Some(Refusal::Changed {
                file: self.file_name(file),
                line,
            }),
            (HostKeyStatus::Unknown, StrictHostKeyChecking::Yes) => Some(Refusal::Unknown),
            (HostKeyStatus::Unknown, StrictHostKeyChecking::AcceptNew) => match self.record(key) {
                Ok(()) => {
                    info!(host = %self.host, port = self.port, "accept-new: recorded the host key in known_hosts");
                    lock(&self.observed).learned = true;
                    None
                }
                Err(detail) => Some(Refusal::CannotRecord { detail }),
            },
            (HostKeyStatus::Unknown, StrictHostKeyChecking::No) => {
                lock(&self.observed).unverified = Some(HostKeyUnverified::Unknown {
                    presented: presented(&public),
                });
                None
            }
        };
        let accepted = refusal.is_none();
        lock(&self.observed).refusal = refusal;
        Ok(accepted)
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (text, result) = match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => (
                format!(
                    "the server closed the connection ({:?}: {})",
                    info.reason_code,
                    crate::rpc::truncate_chars(info.message.trim(), 200)
                ),
                Ok(()),
            ),
            client::DisconnectReason::Error(russh::Error::KeepaliveTimeout) => (
                format!("no answer to {} keepalives: the link or the Mac is down", self.keepalive_max),
                Err(russh::Error::KeepaliveTimeout),
            ),
            client::DisconnectReason::Error(russh::Error::IO(err))
                if err.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                (
                    "the connection closed without a goodbye (network cut, sshd restarted, or the Mac went to sleep)"
                        .to_string(),
                    Err(russh::Error::IO(err)),
                )
            }
            client::DisconnectReason::Error(err) => (err.to_string(), Err(err)),
        };
        lock(&self.observed).ended = Some(text);
        result
    }

    /// OpenSSH's sshd announces its host keys right after authentication, after debug messages it
    /// sent a moment before. It does not set TCP_NODELAY on a session without a pty, so the
    /// packets after the first wait for our ACK, which the kernel delays ~40 ms when we have
    /// nothing to send: the channel open then takes 45 ms instead of one round trip. OpenSSH's
    /// client answers the announcement (hostkeys-prove) and so carries the ACK at once; a
    /// keepalive without a reply does the same for us.
    async fn openssh_ext_host_keys_announced(
        &mut self,
        _keys: Vec<russh::keys::PublicKey>,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let _ = session.send_keepalive(false);
        Ok(())
    }

    async fn auth_banner(&mut self, banner: &str, _session: &mut Session) -> Result<(), Self::Error> {
        let banner = banner.trim();
        if !banner.is_empty() {
            info!(host = %self.host, "server banner: {}", crate::rpc::truncate_chars(banner, 500));
            lock(&self.observed).banner = Some(banner.to_string());
        }
        Ok(())
    }

    // We never ask for forwarding, agents or X11: refuse whatever the server opens (defence in depth;
    // russh accepts these by default).
    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "session").await
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "forwarded-tcpip").await
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "forwarded-streamlocal").await
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "agent").await
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "direct-tcpip").await
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "direct-streamlocal").await
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<client::Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        refuse(reply, "x11").await
    }
}

/// `<algorithm> SHA256:…`, as doctor shows a presented key.
fn presented(key: &russh::keys::PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

async fn refuse(reply: client::ChannelOpenHandle, kind: &str) -> Result<(), russh::Error> {
    warn!(kind, "refused a channel the server tried to open");
    reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
    Ok(())
}

//! The embedded SSH server that plays the Mac in `imsg-bridge demo` (README.md, "Quick start"): russh on
//! 127.0.0.1 with a fresh host key, public-key auth for one generated client key, `imsg rpc` served in
//! process on exec channels, and the `sftp` subsystem over the demo folder. Nothing needs installing:
//! no sshd, no imsg, no shell. Confined to what the demo needs (docs/security.md, "The demo's SSH
//! server"): exec runs only `imsg rpc` on the demo's chat.db, SFTP stays in the demo folder, and
//! shells and terminals are refused.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Disconnect, MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::sftp::SftpFs;
use super::words::{self, Command};
use crate::sim::Dialect;
use crate::sim::faults::Faults;
use crate::sim::rpc::ServeOptions;

/// The user name the demo config names; any name is accepted.
pub const DEMO_USER: &str = "demo";
/// The client's private key, in the demo folder so the bridge's own key loading reads it.
pub const CLIENT_KEY_FILE: &str = "client_ed25519";
/// What a shell says for a command it cannot find; the bridge reads it as "imsg is not there".
const NOT_FOUND_STATUS: u32 = 127;
/// What imsg exits with when it cannot open the database it is given.
const REFUSED_STATUS: u32 = 1;
/// The one line a shell or terminal request gets.
const NO_SHELL: &str = "demo server: no shell or terminal here; only `imsg rpc` (exec) and sftp are served\n";

/// Why the demo server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot generate the demo's SSH keys: {0}")]
    Key(String),
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[source] std::io::Error),
}

/// A client that authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedSession {
    pub user: String,
    pub peer: Option<SocketAddr>,
}

/// What clients did, for the demo's timeline and for tests.
#[derive(Debug, Default)]
struct Record {
    sessions: Vec<AcceptedSession>,
    requests: Vec<String>,
}

/// The stand-in Mac that every connection of one server reaches: its home, its chat.db, the one
/// client key it accepts, and the record of what clients did.
#[derive(Debug)]
struct ServedMac {
    home: PathBuf,
    db_path: PathBuf,
    client_key: PublicKey,
    record: Mutex<Record>,
}

impl ServedMac {
    /// A panicked connection task must not take the record down with it.
    fn record(&self) -> MutexGuard<'_, Record> {
        crate::util::lock(&self.record)
    }
}

/// A running demo "Mac". Dropping it stops listening and disconnects every client.
#[derive(Debug)]
pub struct DemoServer {
    pub port: u16,
    /// `ssh-ed25519 AAAA…`: the host key to pin in known_hosts.
    pub host_key_line: String,
    /// An unencrypted Ed25519 private key in OpenSSH format, mode 0600, that the server accepts.
    pub client_key_path: PathBuf,
    pub user: String,
    /// The canonical demo folder: the "Mac"'s home, where SFTP's `.` and the exec's `~` point.
    pub home: PathBuf,
    mac: Arc<ServedMac>,
    cancel: CancellationToken,
}

impl DemoServer {
    /// Listen on a free port of 127.0.0.1, serving `dir` as the home and `db_path` as the chat.db of an
    /// `imsg rpc` that names no `--db`. Writes the client key to `dir/client_ed25519` (and `.pub`).
    pub async fn start(dir: &Path, db_path: &Path) -> Result<DemoServer, DemoError> {
        let home = tokio::fs::canonicalize(dir)
            .await
            .map_err(|source| DemoError::Io {
                what: "open the demo folder",
                path: dir.to_path_buf(),
                source,
            })?;
        let host_key = generate_key("")?;
        let client_key = generate_key("imsg-bridge-demo")?;
        let host_key_line = host_key
            .public_key()
            .to_openssh()
            .map_err(|e| DemoError::Key(e.to_string()))?
            .trim()
            .to_string();
        let client_key_path = home.join(CLIENT_KEY_FILE);
        write_client_key(&client_key_path, &client_key)?;

        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(DemoError::Listen)?;
        let port = listener.local_addr().map_err(DemoError::Listen)?.port();
        let mac = Arc::new(ServedMac {
            home: home.clone(),
            db_path: db_path.to_path_buf(),
            client_key: client_key.public_key().clone(),
            record: Mutex::new(Record::default()),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            Arc::new(config(host_key)),
            mac.clone(),
            cancel.clone(),
        ));
        debug!(port, home = %home.display(), "demo ssh server listening");
        Ok(DemoServer {
            port,
            host_key_line,
            client_key_path,
            user: DEMO_USER.to_string(),
            home,
            mac,
            cancel,
        })
    }

    /// The known_hosts line that pins this server: `[127.0.0.1]:<port> ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key_line)
    }

    /// Every client that authenticated, in order.
    pub fn sessions(&self) -> Vec<AcceptedSession> {
        self.mac.record().sessions.clone()
    }

    /// Every exec and subsystem request, in order (`exec <command line>`, `subsystem sftp`).
    pub fn requests(&self) -> Vec<String> {
        self.mac.record().requests.clone()
    }

    /// Stop listening and disconnect every client (also done on drop).
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn config(host_key: PrivateKey) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    russh::server::Config {
        server_id: SshId::Standard(format!("SSH-2.0-imsg-bridge-demo_{}", env!("CARGO_PKG_VERSION")).into()),
        methods,
        // Loopback only, one known client: slowing down rejections would only slow the demo down.
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        // A quiet `imsg rpc` is healthy; the client's keepalives find dead peers.
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

/// A fresh Ed25519 key from the OS's random source (getrandom is already a dependency; russh's own
/// `PrivateKey::random` would need an RNG crate matching its rand_core version).
fn generate_key(comment: &str) -> Result<PrivateKey, DemoError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| DemoError::Key(e.to_string()))?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    Ok(key)
}

/// Write the private key (0600, as ssh refuses more open keys) and its `.pub` beside it.
fn write_client_key(path: &Path, key: &PrivateKey) -> Result<(), DemoError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Io { what, path, source }
    };
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| DemoError::Key(e.to_string()))?;
    // The mode applies only when a file is created, so a key left by an earlier run is replaced.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("replace", path)(e)),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(io("write", path))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| DemoError::Key(e.to_string()))?;
    let public_path = path.with_extension("pub");
    std::fs::write(&public_path, format!("{public}\n")).map_err(io("write", &public_path))
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    mac: Arc<ServedMac>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!(%peer, "demo ssh connection");
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    config.clone(),
                    mac.clone(),
                    cancel.clone(),
                ));
            }
            Err(err) => {
                // Out of file descriptors and the like: pause instead of spinning on the error.
                debug!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    debug!("demo ssh server stopped listening");
}

/// One connection, until the client leaves or the server stops.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
    mac: Arc<ServedMac>,
    cancel: CancellationToken,
) {
    let handler = Connection {
        mac,
        peer,
        channels: HashMap::new(),
        told: HashSet::new(),
    };
    // The version exchange waits for the client; a silent client must not outlive the server.
    let running = tokio::select! {
        () = cancel.cancelled() => return,
        running = russh::server::run_stream(config, stream, handler) => running,
    };
    let running = match running {
        Ok(running) => running,
        Err(err) => {
            debug!(%peer, "ssh handshake failed: {err}");
            return;
        }
    };
    let handle = running.handle();
    tokio::select! {
        () = cancel.cancelled() => {
            let _ = handle
                .disconnect(Disconnect::ByApplication, "demo server stopping".into(), "en".into())
                .await;
        }
        result = running => debug!(%peer, "ssh session ended: {result:?}"),
    }
}

/// The russh handler of one connection.
struct Connection {
    mac: Arc<ServedMac>,
    peer: SocketAddr,
    /// Session channels opened and not yet given to an exec or subsystem.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Channels already given the [`NO_SHELL`] line (a pty refusal, then the shell's).
    told: HashSet<ChannelId>,
}

impl Connection {
    fn judge(&self, key: &PublicKey) -> Auth {
        if key.key_data() == self.mac.client_key.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }

    fn note(&self, request: String) {
        debug!(peer = %self.peer, "{}", crate::util::escape::escape_controls(&request));
        self.mac.record().requests.push(request);
    }

    /// Whether `db` is the demo's chat.db (both resolved, so `~/…`, relative and symlinked
    /// spellings of it count); any other database stays out of reach.
    fn is_demo_db(&self, db: &Path) -> bool {
        match (
            std::fs::canonicalize(db),
            std::fs::canonicalize(&self.mac.db_path),
        ) {
            (Ok(asked), Ok(demo)) => asked == demo,
            _ => false,
        }
    }

    /// Send [`NO_SHELL`] on stderr once per channel.
    fn tell_no_shell(&mut self, id: ChannelId, session: &mut Session) -> Result<(), russh::Error> {
        if self.told.insert(id) {
            session.extended_data(id, 1, NO_SHELL.as_bytes().to_vec())?;
        }
        Ok(())
    }
}

/// End a channel on which nothing runs: one stderr line, then EOF, exit status and close, in sshd's order.
fn refuse_command(
    session: &mut Session,
    id: ChannelId,
    line: String,
    status: u32,
) -> Result<(), russh::Error> {
    session.extended_data(id, 1, line.into_bytes())?;
    session.eof(id)?;
    session.exit_status_request(id, status)?;
    session.close(id)
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    /// Refuse foreign keys before the client bothers to sign.
    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.judge(offer.public_key))
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        let auth = self.judge(key.public_key);
        if auth == Auth::Accept {
            debug!(peer = %self.peer, user, "demo ssh client authenticated");
            self.mac.record().sessions.push(AcceptedSession {
                user: user.to_string(),
                peer: Some(self.peer),
            });
        } else {
            debug!(peer = %self.peer, user, "refused a key that is not the demo client's");
        }
        Ok(auth)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.told.remove(&channel);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(data).into_owned();
        self.note(format!("exec {line}"));
        let Some(channel) = self.channels.remove(&id) else {
            // A second request on a channel that already runs something: sshd refuses it too.
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let shown = crate::util::escape::escape_controls(&line);
        match words::parse(&line, &self.mac.home) {
            Ok(Command::Rpc { db: Some(db) }) if !self.is_demo_db(&db) => {
                let db = crate::util::escape::escape_controls(&db.to_string_lossy()).into_owned();
                let why = format!("demo server: only the demo's chat.db is served, not {db}\n");
                refuse_command(session, id, why, REFUSED_STATUS)?;
            }
            Ok(Command::Rpc { db }) => {
                let db_path = db.unwrap_or_else(|| self.mac.db_path.clone());
                debug!(db = %db_path.display(), "serving imsg rpc in process");
                tokio::spawn(run_rpc(channel, db_path));
            }
            parsed => {
                let why = match parsed {
                    Err(err) => format!(" ({err})"),
                    Ok(_) => String::new(),
                };
                let why = format!("demo server: unsupported command{why}: {shown}\n");
                refuse_command(session, id, why, NOT_FOUND_STATUS)?;
            }
        }
        Ok(())
    }

    /// No terminals. The line goes before the failure; OpenSSH's client shows it when it goes on to
    /// ask for a shell, but under `-tt` gives up at once with its own "PTY allocation request failed".
    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.note("pty-req".into());
        self.tell_no_shell(id, session)?;
        session.channel_failure(id)
    }

    /// No shell: answered as a shell that says why and exits 1 at once. A plain failure would do,
    /// but OpenSSH's client closes on it before it prints the line sent with it.
    async fn shell_request(&mut self, id: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.note("shell".into());
        self.channels.remove(&id);
        session.channel_success(id)?;
        self.tell_no_shell(id, session)?;
        session.eof(id)?;
        session.exit_status_request(id, REFUSED_STATUS)?;
        session.close(id)
    }

    /// No X11 forwarding; answered so a client waiting for the reply goes on.
    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.note(format!("subsystem {name}"));
        match self.channels.remove(&id) {
            Some(channel) if name == "sftp" => {
                session.channel_success(id)?;
                // `run` spawns its own task, so the session loop goes on handling other channels.
                russh_sftp::server::run(channel.into_stream(), SftpFs::new(self.mac.home.clone())).await;
            }
            channel => {
                if let Some(channel) = channel {
                    // The client may still run something else on it.
                    self.channels.insert(id, channel);
                }
                session.channel_failure(id)?;
            }
        }
        Ok(())
    }
}

/// `imsg rpc` on an exec channel: the simulator's server over the channel's data, then the exit
/// status the way sshd reports a finished command (EOF, exit-status, close).
async fn run_rpc(channel: Channel<Msg>, db_path: PathBuf) {
    let (mut read_half, write_half) = channel.split();
    let options = ServeOptions {
        db_path,
        dialect: Dialect::Strict,
        faults: Faults::default(),
        request_log: None,
    };
    let result = crate::sim::rpc::serve(read_half.make_reader(), write_half.make_writer(), options).await;
    let status = match result {
        Ok(()) => 0,
        Err(err) => {
            debug!("imsg rpc ended with an error: {err}");
            let _ = write_half
                .extended_data_bytes(1, format!("imsg rpc: {err}\n").into_bytes())
                .await;
            1
        }
    };
    // Errors here mean the client is gone; there is nobody left to tell.
    let _ = write_half.eof().await;
    let _ = write_half.exit_status(status).await;
    let _ = write_half.close().await;
}

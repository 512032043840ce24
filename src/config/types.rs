//! The validated configuration model (stage 2): what the rest of the bridge reads.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// An enum spelled as a fixed set of strings in the config file.
pub trait ConfigEnum: Sized + Copy + 'static {
    /// Every value, in the order the documentation lists them.
    const ALL: &'static [Self];
    /// Other accepted spellings and the value they mean.
    const ALIASES: &'static [(&'static str, Self)] = &[];

    /// The spelling in the config file.
    fn as_str(self) -> &'static str;

    /// Parse the exact (case-sensitive) config spelling.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|value| value.as_str() == text)
            .or_else(|| {
                Self::ALIASES
                    .iter()
                    .find(|(alias, _)| *alias == text)
                    .map(|(_, v)| *v)
            })
    }
}

macro_rules! config_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }
     $(aliases { $($alias:literal => $target:ident),+ })?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($(#[$vmeta])* #[doc = concat!("`\"", $text, "\"`")] $variant,)+
        }

        impl $name {
            #[doc = "The spelling in the config file."]
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }
        }

        impl ConfigEnum for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            $(const ALIASES: &'static [(&'static str, Self)] = &[$(($alias, Self::$target)),+];)?
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// Who may start a direct conversation with the bot.
    DmPolicy { #[default] Pairing = "pairing", Allowlist = "allowlist", Open = "open", Disabled = "disabled" }
}

config_enum! {
    /// Which group senders are admitted.
    GroupPolicy { Open = "open", #[default] Allowlist = "allowlist", Disabled = "disabled" }
}

config_enum! {
    /// Whether quoted reply context from non-allowlisted group senders is shown to the agent.
    ContextVisibility { #[default] All = "all", Allowlist = "allowlist", AllowlistQuote = "allowlist_quote" }
}

config_enum! {
    /// Default send service.
    Service { Imessage = "imessage", Sms = "sms", #[default] Auto = "auto" }
}

config_enum! {
    /// How outbound text is split into messages.
    ChunkMode { #[default] Length = "length", Newline = "newline" }
}

config_enum! {
    /// How markdown tables in outbound text are rendered. `"block"` is accepted and means `"code"`.
    MarkdownTables { Off = "off", Bullets = "bullets", #[default] Code = "code" }
    aliases { "block" => Code }
}

config_enum! {
    /// How the account reaches `imsg rpc`.
    TransportKind { #[default] Auto = "auto", Ssh = "ssh", Process = "process" }
}

config_enum! {
    /// Host key policy of the native SSH transport (OpenSSH's spelling).
    StrictHostKeyChecking { #[default] Yes = "yes", AcceptNew = "accept-new", No = "no" }
}

config_enum! {
    /// How direct messages map to agent sessions (`session.dmScope`).
    DmScope {
        #[default] Main = "main",
        PerPeer = "per-peer",
        PerChannelPeer = "per-channel-peer",
        PerAccountChannelPeer = "per-account-channel-peer",
    }
}

config_enum! {
    /// The `bridge.agent.kind` spellings.
    AgentKind { #[default] Stdout = "stdout", Exec = "exec", Webhook = "webhook", Nats = "nats" }
}

/// One iMessage account after resolution and merge (`{...root, ...accounts.<id>}`).
#[derive(Debug, Clone)]
pub struct Account {
    /// Normalised account id (`default` for a flat config).
    pub id: String,
    /// Where the account lives in the file: `channels.imessage` or `channels.imessage.accounts.<key>`.
    pub key_path: String,
    pub enabled: bool,
    pub name: Option<String>,
    /// `cliPath` with `~` expanded on the gateway host.
    pub cli_path: PathBuf,
    /// `cliPath` as written (default `imsg`).
    pub cli_path_raw: String,
    /// As written: it belongs to the host where imsg runs, so `~` is not expanded here.
    pub db_path: Option<String>,
    /// Explicit `remoteHost` (`host` or `user@host`), validated.
    pub remote_host: Option<String>,
    pub transport: TransportKind,
    pub ssh: Option<SshConfig>,
    pub service: Service,
    pub region: String,
    pub dm_policy: DmPolicy,
    pub allow_from: Vec<String>,
    /// `None` when the key is absent (the group gate then falls back to `allow_from`).
    pub group_allow_from: Option<Vec<String>>,
    pub group_policy: GroupPolicy,
    pub context_visibility: ContextVisibility,
    /// `historyLimit` as configured (also caps group transcripts when set).
    pub history_limit: Option<u32>,
    /// Pending group-history buffer size: `historyLimit` ?? `messages.groupChat.historyLimit` ?? 50.
    pub group_history_limit: u32,
    pub dm_history_limit: Option<u32>,
    /// Per-DM overrides keyed by handle as written.
    pub dms: BTreeMap<String, DmConfig>,
    pub include_attachments: bool,
    /// Effective local roots: account, root and the default root, de-duplicated (docs/attachments.md).
    pub attachment_roots: Vec<String>,
    /// Effective remote roots: remote and local roots of account and root, and the default.
    pub remote_attachment_roots: Vec<String>,
    pub media_max_mb: u64,
    pub probe_timeout_ms: u64,
    pub text_chunk_limit: usize,
    pub chunk_mode: ChunkMode,
    pub block_streaming: Option<bool>,
    pub block_streaming_coalesce: Option<BlockStreamingCoalesce>,
    pub groups: BTreeMap<String, GroupConfig>,
    /// Account → channel root → `messages.responsePrefix`; `"auto"` is kept for the outbound path.
    pub response_prefix: Option<String>,
    pub config_writes: bool,
    pub markdown_tables: MarkdownTables,
    pub default_to: Option<String>,
    pub capabilities: Vec<String>,
    pub heartbeat: Option<HeartbeatConfig>,
    pub health_monitor_enabled: bool,
    /// Whether anything beyond defaults was configured (drives "needs setup" in status).
    pub configured: bool,
}

/// Per-DM settings (`dms.<handle>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmConfig {
    pub history_limit: Option<u32>,
}

/// Per-group settings (`groups.<chat_id>` or `groups["*"]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupConfig {
    pub require_mention: Option<bool>,
    /// Free-form tool policy, passed to the agent untouched.
    pub tools: Option<serde_json::Value>,
    pub tools_by_sender: Option<serde_json::Value>,
}

/// `blockStreamingCoalesce`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStreamingCoalesce {
    pub min_chars: Option<u64>,
    pub max_chars: Option<u64>,
    pub idle_ms: Option<u64>,
}

/// `heartbeat` visibility settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatConfig {
    pub show_ok: Option<bool>,
    pub show_alerts: Option<bool>,
    pub use_indicator: Option<bool>,
}

/// The native SSH target of an account (`ssh` block).
///
/// Unset `host`, `user` and `port` are left to `~/.ssh/config`, `remoteHost` or a wrapper script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    pub host: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Tried in order; `~` expanded. Empty = whatever ssh_config or the defaults give.
    pub identity_files: Vec<PathBuf>,
    /// Name of the variable holding the key passphrase (never the passphrase itself).
    pub identity_passphrase_env: Option<String>,
    pub use_agent: bool,
    /// `~` expanded. Empty = whatever ssh_config or the defaults give.
    pub known_hosts_files: Vec<PathBuf>,
    /// `None`: not set here, so `~/.ssh/config` decides, else `yes`.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    pub proxy_jump: Option<String>,
    pub remote_cli_path: Option<String>,
    pub connect_timeout_ms: u64,
    /// 0 turns keepalives off.
    pub keepalive_interval_ms: u64,
    pub keepalive_max: u32,
    pub sftp_request_timeout_ms: u64,
    /// How long a connection-sharing master outlives its last client; 0 = no sharing (docs/ssh.md).
    pub control_persist_ms: u64,
}

/// Our own `bridge` section.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `~` expanded; `$IMSG_BRIDGE_STATE_DIR` wins over the file.
    pub state_dir: PathBuf,
    pub agent_id: String,
    pub agent: AgentSink,
    pub http: Option<HttpConfig>,
    pub replay: ReplayConfig,
    pub media: MediaConfig,
    /// `bridge.outboundMediaRoots`, `~` expanded, absolute: where agents and the API may send files
    /// from. `None`: the defaults (docs/security.md, "Outbound media roots").
    pub outbound_media_roots: Option<Vec<PathBuf>>,
}

/// Where envelopes go (`bridge.agent`).
#[derive(Clone, PartialEq, Eq)]
pub enum AgentSink {
    /// One envelope per line on stdout.
    Stdout,
    /// A long-lived child speaking JSON lines on stdin/stdout.
    Exec { command: Vec<String> },
    /// POST each envelope to `url`.
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
        timeout_ms: u64,
    },
    /// Publish to NATS JetStream and pull replies from it (docs/scale-out.md).
    Nats(Box<NatsConfig>),
}

/// `bridge.agent` of kind "nats" after validation (docs/scale-out.md, "Configuration").
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// One server URL or a comma-separated list (`nats://host:4222`, `tls://host:4222`).
    pub url: String,
    /// The inbound log: subjects `<prefix>.in.>`, limits retention.
    pub stream: String,
    /// The replies: subjects `<prefix>.out.>`, work-queue retention.
    pub reply_stream: String,
    pub subject_prefix: String,
    pub duplicate_window: std::time::Duration,
    /// The environment variable holding the token (never the token itself).
    pub token_env: Option<String>,
    /// A `.creds` file (JWT and nkey seed), `~` expanded.
    pub credentials_file: Option<PathBuf>,
    pub tls: Option<NatsTls>,
}

#[cfg(test)]
impl NatsConfig {
    /// The documented defaults with `url`, for tests.
    pub fn example(url: &str) -> Self {
        Self {
            url: url.to_string(),
            stream: "IMSG".into(),
            reply_stream: "IMSG_REPLIES".into(),
            subject_prefix: "imsg".into(),
            duplicate_window: std::time::Duration::from_secs(600),
            token_env: None,
            credentials_file: None,
            tls: None,
        }
    }
}

impl NatsConfig {
    /// The server URLs without the `user:password@` any of them may carry: what status, logs and
    /// Debug show.
    pub fn servers(&self) -> String {
        self.url
            .split(',')
            .map(|url| {
                let url = url.trim();
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                match scheme {
                    "" => host.to_string(),
                    scheme => format!("{scheme}://{host}"),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

// A URL may carry `user:password@`: Debug shows the servers without it.
impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &self.servers())
            .field("stream", &self.stream)
            .field("reply_stream", &self.reply_stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("duplicate_window", &self.duplicate_window)
            .field("token_env", &self.token_env)
            .field("credentials_file", &self.credentials_file)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `bridge.agent.tls`: files, `~` expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl AgentSink {
    /// Which kind of sink this is.
    pub fn kind(&self) -> AgentKind {
        match self {
            Self::Stdout => AgentKind::Stdout,
            Self::Exec { .. } => AgentKind::Exec,
            Self::Webhook { .. } => AgentKind::Webhook,
            Self::Nats(_) => AgentKind::Nats,
        }
    }
}

// Header values may carry credentials (an Authorization header), so Debug shows only their names.
impl fmt::Debug for AgentSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("Stdout"),
            Self::Exec { command } => f.debug_struct("Exec").field("command", command).finish(),
            Self::Webhook {
                url,
                headers,
                timeout_ms,
            } => f
                .debug_struct("Webhook")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("timeout_ms", timeout_ms)
                .finish(),
            // Only names of secrets (an environment variable, a file) are held, never their values.
            Self::Nats(nats) => nats.fmt(f),
        }
    }
}

/// The optional control API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Name of the variable holding the bearer token.
    pub token_env: String,
}

/// The attachment cache and transfer knobs (`bridge.media`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaConfig {
    /// Size bound of `stateDir/media/inbound`, in MiB.
    pub cache_max_mb: u64,
    /// Staged files older than this are removed.
    pub cache_max_age_hours: u64,
    /// Extra tries for a file that is missing or still growing right after its message.
    pub pull_retries: u32,
    /// How long an uploaded outbound file stays on the Mac after its send.
    pub outbound_grace_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            cache_max_mb: 1024,
            cache_max_age_hours: 7 * 24,
            pull_retries: 5,
            outbound_grace_ms: 5_000,
        }
    }
}

/// Bounds on what is replayed after downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    pub max_rows: u64,
    pub max_age_minutes: u64,
}

/// The parts of the top-level `messages` section we read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagesConfig {
    pub response_prefix: Option<String>,
    /// `messages.groupChat.mentionPatterns`; `Some(vec![])` (key present, empty) differs from `None`.
    pub mention_patterns: Option<Vec<String>>,
    pub group_history_limit: Option<u32>,
    pub inbound_debounce_ms: Option<u64>,
    /// `messages.inbound.byChannel.imessage`.
    pub imessage_debounce_ms: Option<u64>,
}

impl MessagesConfig {
    /// Debounce window for iMessage: `byChannel.imessage` ?? `debounceMs` ?? 0.
    pub fn debounce_ms(&self) -> u64 {
        self.imessage_debounce_ms
            .or(self.inbound_debounce_ms)
            .unwrap_or(0)
    }
}

/// One entry of `agents.list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    pub id: String,
    pub default: bool,
    pub identity_name: Option<String>,
    /// `groupChat.mentionPatterns`; present-but-empty differs from absent.
    pub mention_patterns: Option<Vec<String>>,
}

/// The parts of the top-level `session` section we read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub dm_scope: DmScope,
    pub main_key: String,
}

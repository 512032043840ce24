//! Configuration: json5 loading, raw → validated in two stages, account resolution and merge.
//!
//! One OpenClaw-shaped json5 file (docs/configuration.md). Stage 1 parses the text into a JSON value, rejects
//! unknown keys of the strict sections (`channels.imessage`, `bridge`) with their full path and a
//! suggestion (`schema`), and deserializes each section into the raw structs (`raw`). Stage 2 checks
//! every value (`validate`), resolves and merges the accounts (`account`) and the other sections
//! (`sections`) into [`Config`]. Nothing here logs: warnings are returned as data.

mod account;
mod error;
mod nats;
mod prescan;
mod raw;
mod schema;
mod sections;
mod suggest;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use account::{
    DEFAULT_ACCOUNT_ID, DEFAULT_ATTACHMENT_ROOT, backend as account_backend, normalize_account_id,
};
pub use error::{ConfigError, Origin};
pub use types::{
    Account, AgentEntry, AgentKind, AgentSink, BlockStreamingCoalesce, BridgeConfig, ChunkMode, ConfigEnum,
    ContextVisibility, DmConfig, DmPolicy, DmScope, GroupConfig, GroupPolicy, HeartbeatConfig, HttpConfig,
    MarkdownTables, MediaConfig, MessagesConfig, NatsConfig, NatsTls, ReplayConfig, Service, SessionConfig,
    SshConfig, StrictHostKeyChecking, TransportKind,
};

/// Names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "IMSG_BRIDGE_CONFIG";
/// Overrides `bridge.stateDir`.
pub const STATE_DIR_ENV: &str = "IMSG_BRIDGE_STATE_DIR";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from; `None` for an absent default file or text from [`from_str`].
    pub path: Option<PathBuf>,
    /// Every listed account (enabled or not), sorted by id; `[default]` for a flat config.
    pub accounts: Vec<Account>,
    pub default_account: String,
    pub bridge: BridgeConfig,
    pub messages: MessagesConfig,
    pub agents: Vec<AgentEntry>,
    /// `commands.config`: whether `/config` chat commands are allowed at all.
    pub commands_config: bool,
    pub session: SessionConfig,
    /// Things that work but deserve the operator's attention; the caller logs each once.
    pub warnings: Vec<String>,
}

impl Config {
    /// The account with this id: exact first, then after normalisation (so `--account Bot` finds `bot`).
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id).or_else(|| {
            let normalized = normalize_account_id(id);
            self.accounts.iter().find(|a| a.id == normalized)
        })
    }

    /// The accounts the service runs.
    pub fn enabled_accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.iter().filter(|a| a.enabled)
    }

    /// The agent of session keys: `agents.list` entry marked default, else the first, else `bridge.agentId`.
    /// The default agent's entry, if `agents.list` has any.
    pub fn default_agent(&self) -> Option<&AgentEntry> {
        self.agents
            .iter()
            .find(|a| a.default)
            .or_else(|| self.agents.first())
    }

    pub fn default_agent_id(&self) -> &str {
        self.agents
            .iter()
            .find(|a| a.default)
            .or_else(|| self.agents.first())
            .map_or(self.bridge.agent_id.as_str(), |a| a.id.as_str())
    }
}

/// The process environment the loader reads, passed explicitly so tests need not mutate it.
#[derive(Debug, Clone, Default)]
struct Env {
    /// `$IMSG_BRIDGE_CONFIG`.
    config: Option<OsString>,
    /// `$IMSG_BRIDGE_STATE_DIR`.
    state_dir: Option<String>,
    /// `$HOME`, where the default locations live.
    home: Option<PathBuf>,
}

impl Env {
    fn from_process() -> Self {
        Self {
            config: std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()),
            state_dir: std::env::var(STATE_DIR_ENV).ok().filter(|v| !v.is_empty()),
            home: crate::util::home_dir(),
        }
    }
}

/// Load the configuration: `explicit` (`--config`), else `$IMSG_BRIDGE_CONFIG`, else
/// `~/.openclaw/openclaw.json` if it exists, else `~/.config/imsg-bridge/config.json5`.
///
/// A missing file named explicitly is an error; a missing default file is an empty configuration
/// (one implicit `default` account).
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    load_with(explicit, &Env::from_process())
}

fn load_with(explicit: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
    let named = match (explicit, &env.config) {
        (Some(path), _) => Some((path.to_path_buf(), "--config")),
        (None, Some(path)) => Some((PathBuf::from(path), "$IMSG_BRIDGE_CONFIG")),
        (None, None) => None,
    };
    let path = match named {
        Some((path, via)) => {
            if !path.exists() {
                return Err(ConfigError::Missing { path, via });
            }
            path
        }
        None => match default_location(env.home.as_deref()) {
            Some(path) => path,
            None => return from_value(Value::Object(serde_json::Map::new()), None, env),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&text, Some(&path), env)
}

/// The default file that exists, if any.
fn default_location(home: Option<&Path>) -> Option<PathBuf> {
    let home = home?;
    [
        home.join(".openclaw").join("openclaw.json"),
        home.join(".config").join("imsg-bridge").join("config.json5"),
    ]
    .into_iter()
    .find(|candidate| candidate.exists())
}

/// Parse and validate configuration text. `origin` only names the file in messages and `Config::path`.
pub fn from_str(text: &str, origin: Option<&Path>) -> Result<Config, ConfigError> {
    parse(text, origin, &Env::from_process())
}

fn parse(text: &str, origin: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
    let value = parse_json5(text).map_err(|e| e.in_origin(&Origin::new(origin)))?;
    from_value(value, origin, env)
}

/// Stage 1a: the text as a JSON value. A blank file is an empty configuration.
fn parse_json5(text: &str) -> Result<Value, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    if let Some(refusal) = prescan::check(text) {
        let at = json5::Position::from_offset(refusal.offset(), text);
        return Err(ConfigError::Syntax {
            origin: Origin::default(),
            line: at.line + 1,
            column: at.column + 1,
            message: refusal.message(),
        });
    }
    json5::from_str::<Value>(text).map_err(|err| {
        // An end-of-input error outside any value carries no position: it is at the end of the text.
        let at = err
            .position()
            .unwrap_or_else(|| json5::Position::from_offset(text.len(), text));
        let message = match err.code() {
            // json5 places end-of-input errors at the start of the value left open, so say so.
            Some(code) => {
                let text = code.to_string();
                match text.strip_prefix("EOF parsing ") {
                    Some(what) => format!("the file ends inside the {what} that starts here"),
                    None => text,
                }
            }
            None => {
                let full = err.to_string();
                full.rfind(" at line ")
                    .map_or(full.clone(), |i| full[..i].to_owned())
            }
        };
        ConfigError::Syntax {
            origin: Origin::default(),
            line: at.line + 1,
            column: at.column + 1,
            message,
        }
    })
}

fn from_value(value: Value, origin: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
    build(&value, env)
        .map(|config| Config {
            path: origin.map(Path::to_path_buf),
            ..config
        })
        .map_err(|e| e.in_origin(&Origin::new(origin)))
}

/// Stages 1b and 2: strict key check, typed sections, validation and resolution.
fn build(value: &Value, env: &Env) -> Result<Config, ConfigError> {
    let Value::Object(top) = value else {
        return Err(ConfigError::invalid(
            "(top level)",
            "expected an object such as { channels: { imessage: {} } }",
        ));
    };
    let channels = match top.get("channels") {
        None | Some(Value::Null) => None,
        Some(Value::Object(channels)) => Some(channels),
        Some(_) => return Err(ConfigError::invalid("channels", "expected an object")),
    };
    let imessage = channels.and_then(|c| c.get("imessage"));
    if let Some(section) = imessage {
        schema::check(section, &schema::CHANNEL, "channels.imessage")?;
    }
    if let Some(section) = top.get("bridge") {
        schema::check(section, &schema::BRIDGE, "bridge")?;
    }

    let messages = sections::messages(&sections::lenient(top.get("messages"), "messages")?)?;
    let (accounts, default_account) = account::resolve(imessage, &messages)?;
    let bridge_raw: raw::RawBridge = sections::lenient(top.get("bridge"), "bridge")?;
    let bridge = sections::bridge(&bridge_raw, env.state_dir.as_deref())?;
    let agents = sections::agents(&sections::lenient(top.get("agents"), "agents")?)?;
    let commands: raw::RawCommands = sections::lenient(top.get("commands"), "commands")?;
    let session = sections::session(&sections::lenient(top.get("session"), "session")?)?;
    let warnings = account::warnings(&accounts);

    Ok(Config {
        path: None,
        accounts,
        default_account,
        bridge,
        messages,
        agents,
        commands_config: commands.config.unwrap_or(false),
        session,
        warnings,
    })
}

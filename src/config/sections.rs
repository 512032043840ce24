//! The sections around the channel: our strict `bridge`, and the lenient `messages`, `agents`,
//! `commands` and `session` of which only the keys we use are read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::account::normalize_id;
use super::error::ConfigError;
use super::raw::{RawAgentSink, RawAgents, RawBridge, RawMessages, RawSession, typed};
use super::types::{
    AgentEntry, AgentKind, AgentSink, BridgeConfig, DmScope, HttpConfig, MediaConfig, MessagesConfig,
    ReplayConfig, SessionConfig,
};
use super::validate::{self, enum_value, non_negative, positive, small, trimmed};
use crate::util::expand_tilde;

const DEFAULT_STATE_DIR: &str = "~/.imsg-bridge";
const DEFAULT_AGENT_ID: &str = "main";
const DEFAULT_TOKEN_ENV: &str = "IMSG_BRIDGE_TOKEN";
/// A webhook agent answers with its replies in the response body, so it may think for a while.
const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_REPLAY_MAX_ROWS: u64 = 500;
const DEFAULT_REPLAY_MAX_AGE_MINUTES: u64 = 120;
const DEFAULT_MAIN_KEY: &str = "main";

/// `bridge`; `state_dir_override` is `$IMSG_BRIDGE_STATE_DIR`, which wins over the file.
pub(super) fn bridge(raw: &RawBridge, state_dir_override: Option<&str>) -> Result<BridgeConfig, ConfigError> {
    let state_dir = trimmed(state_dir_override)
        .or_else(|| trimmed(raw.state_dir.as_deref()))
        .unwrap_or_else(|| DEFAULT_STATE_DIR.to_owned());
    let agent_id = match trimmed(raw.agent_id.as_deref()) {
        None => DEFAULT_AGENT_ID.to_owned(),
        Some(id) => normalize_id(&id).ok_or_else(|| {
            ConfigError::invalid("bridge.agentId", format!("{id:?} is not a usable agent id"))
        })?,
    };
    let http = raw
        .http
        .as_ref()
        .map(|http| -> Result<HttpConfig, ConfigError> {
            let listen = trimmed(http.listen.as_deref()).ok_or_else(|| {
                ConfigError::invalid(
                    "bridge.http.listen",
                    "is required when bridge.http is set, e.g. \"127.0.0.1:7777\"",
                )
            })?;
            let listen: SocketAddr = listen.parse().map_err(|_| {
                ConfigError::invalid(
                    "bridge.http.listen",
                    format!(
                        "{listen:?} is not a socket address; expected IP:port such as \"127.0.0.1:7777\""
                    ),
                )
            })?;
            let token_env = validate::env_name(http.token_env.as_deref(), "bridge.http.tokenEnv")?
                .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned());
            Ok(HttpConfig { listen, token_env })
        })
        .transpose()?;
    let replay = raw.replay.clone().unwrap_or_default();
    let media = raw.media.clone().unwrap_or_default();
    let defaults = MediaConfig::default();
    Ok(BridgeConfig {
        state_dir: expand_tilde(&state_dir),
        agent_id,
        agent: raw
            .agent
            .as_ref()
            .map(agent_sink)
            .transpose()?
            .unwrap_or(AgentSink::Stdout),
        http,
        replay: ReplayConfig {
            max_rows: non_negative(replay.max_rows, "bridge.replay.maxRows")?
                .unwrap_or(DEFAULT_REPLAY_MAX_ROWS),
            max_age_minutes: non_negative(replay.max_age_minutes, "bridge.replay.maxAgeMinutes")?
                .unwrap_or(DEFAULT_REPLAY_MAX_AGE_MINUTES),
        },
        media: MediaConfig {
            cache_max_mb: positive(media.cache_max_mb, "bridge.media.cacheMaxMb")?
                .unwrap_or(defaults.cache_max_mb),
            cache_max_age_hours: positive(media.cache_max_age_hours, "bridge.media.cacheMaxAgeHours")?
                .unwrap_or(defaults.cache_max_age_hours),
            pull_retries: non_negative(media.pull_retries, "bridge.media.pullRetries")?
                .map(|n| u32::try_from(n.min(20)).unwrap_or(20))
                .unwrap_or(defaults.pull_retries),
            outbound_grace_ms: non_negative(media.outbound_grace_ms, "bridge.media.outboundGraceMs")?
                .unwrap_or(defaults.outbound_grace_ms),
        },
        outbound_media_roots: raw
            .outbound_media_roots
            .as_deref()
            .map(outbound_roots)
            .transpose()?,
    })
}

/// `bridge.outboundMediaRoots`: each `~` expanded and absolute, `.` and `..` resolved by name. A
/// relative root would depend on the directory the bridge happens to start in, so it is refused.
fn outbound_roots(raw: &[String]) -> Result<Vec<PathBuf>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, root)| {
            let expanded = expand_tilde(root.trim());
            if !expanded.is_absolute() {
                return Err(ConfigError::invalid(
                    format!("bridge.outboundMediaRoots[{i}]"),
                    format!(
                        "{root:?} is a relative path; roots must be absolute (\"/srv/agent/outbox\") or start with ~/"
                    ),
                ));
            }
            Ok(crate::util::fold_dots(&expanded))
        })
        .collect()
}

fn agent_sink(raw: &RawAgentSink) -> Result<AgentSink, ConfigError> {
    let kind = enum_value::<AgentKind>(raw.kind.as_deref(), "bridge.agent.kind")?.ok_or_else(|| {
        ConfigError::invalid(
            "bridge.agent.kind",
            "is required: \"stdout\", \"exec\", \"webhook\" or \"nats\"",
        )
    })?;
    // The section is strict, so a key that belongs to another kind is an error, not silently unused.
    use AgentKind::{Exec, Nats, Webhook};
    let present: [(&str, bool, &[AgentKind]); 11] = [
        ("command", raw.command.is_some(), &[Exec]),
        ("url", raw.url.is_some(), &[Webhook, Nats]),
        ("headers", raw.headers.is_some(), &[Webhook]),
        ("timeoutMs", raw.timeout_ms.is_some(), &[Webhook]),
        ("stream", raw.stream.is_some(), &[Nats]),
        ("replyStream", raw.reply_stream.is_some(), &[Nats]),
        ("subjectPrefix", raw.subject_prefix.is_some(), &[Nats]),
        (
            "duplicateWindowSeconds",
            raw.duplicate_window_seconds.is_some(),
            &[Nats],
        ),
        ("tokenEnv", raw.token_env.is_some(), &[Nats]),
        ("credentialsFile", raw.credentials_file.is_some(), &[Nats]),
        ("tls", raw.tls.is_some(), &[Nats]),
    ];
    if let Some((key, _, owners)) = present
        .iter()
        .find(|(_, set, owners)| *set && !owners.contains(&kind))
    {
        let owners: Vec<String> = owners.iter().map(|o| format!("\"{o}\"")).collect();
        return Err(ConfigError::invalid(
            format!("bridge.agent.{key}"),
            format!(
                "is only used with kind {}, not \"{kind}\"; remove it",
                owners.join(" or ")
            ),
        ));
    }
    match kind {
        AgentKind::Stdout => Ok(AgentSink::Stdout),
        AgentKind::Exec => {
            let command = raw.command.clone().unwrap_or_default();
            if command.first().is_none_or(|program| program.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    "bridge.agent.command",
                    "expected a non-empty array whose first element is the program, e.g. [\"python3\", \"agent.py\"]",
                ));
            }
            Ok(AgentSink::Exec { command })
        }
        AgentKind::Webhook => {
            let url = trimmed(raw.url.as_deref()).unwrap_or_default();
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or_default();
            if host.is_empty() || host.starts_with('/') || url.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    "bridge.agent.url",
                    format!("{url:?} is not valid; expected an http:// or https:// URL"),
                ));
            }
            let headers = raw.headers.clone().unwrap_or_default();
            check_headers(&headers)?;
            let timeout_ms =
                positive(raw.timeout_ms, "bridge.agent.timeoutMs")?.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS);
            Ok(AgentSink::Webhook {
                url,
                headers,
                timeout_ms,
            })
        }
        AgentKind::Nats => super::nats::validate(raw).map(|nats| AgentSink::Nats(Box::new(nats))),
    }
}

fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    // RFC 9110 token characters; values must not break the header line.
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    for (name, value) in headers {
        if name.is_empty() || !name.chars().all(token) {
            return Err(ConfigError::invalid(
                format!("bridge.agent.headers.{name}"),
                "is not a valid HTTP header name",
            ));
        }
        if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
            // The value is not quoted: it may be a credential.
            return Err(ConfigError::invalid(
                format!("bridge.agent.headers.{name}"),
                "the value must not contain line breaks",
            ));
        }
    }
    Ok(())
}

/// `messages.{responsePrefix, groupChat.{mentionPatterns, historyLimit}, inbound.{debounceMs, byChannel.imessage}}`.
pub(super) fn messages(raw: &RawMessages) -> Result<MessagesConfig, ConfigError> {
    let group_chat = raw.group_chat.clone().unwrap_or_default();
    let inbound = raw.inbound.clone().unwrap_or_default();
    let limit = non_negative(group_chat.history_limit, "messages.groupChat.historyLimit")?;
    Ok(MessagesConfig {
        response_prefix: raw.response_prefix.clone().filter(|s| !s.trim().is_empty()),
        mention_patterns: group_chat.mention_patterns,
        group_history_limit: small(limit, "messages.groupChat.historyLimit")?,
        inbound_debounce_ms: millis(inbound.debounce_ms, "messages.inbound.debounceMs")?,
        imessage_debounce_ms: millis(
            inbound.by_channel.and_then(|b| b.imessage),
            "messages.inbound.byChannel.imessage",
        )?,
    })
}

/// A non-negative number of milliseconds, truncated as upstream does.
fn millis(value: Option<f64>, path: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        // Saturating float-to-int conversion is the intent: absurdly large windows stay absurdly large.
        Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(ms.trunc() as u64)),
        Some(ms) => Err(ConfigError::invalid(
            path,
            format!("expected a number >= 0, got {ms}"),
        )),
    }
}

/// `agents.list[]`: `id`, `default`, `identity.name`, `groupChat.mentionPatterns`.
pub(super) fn agents(raw: &RawAgents) -> Result<Vec<AgentEntry>, ConfigError> {
    raw.list
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, entry)| {
            let id = trimmed(entry.id.as_deref())
                .and_then(|id| normalize_id(&id))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        format!("agents.list[{i}].id"),
                        "is required: every agent needs an id",
                    )
                })?;
            Ok(AgentEntry {
                id,
                default: entry.default.unwrap_or(false),
                identity_name: entry.identity.as_ref().and_then(|n| trimmed(n.name.as_deref())),
                mention_patterns: entry.group_chat.as_ref().and_then(|g| g.mention_patterns.clone()),
            })
        })
        .collect()
}

/// `session.{dmScope, mainKey}`.
pub(super) fn session(raw: &RawSession) -> Result<SessionConfig, ConfigError> {
    Ok(SessionConfig {
        dm_scope: enum_value(raw.dm_scope.as_deref(), "session.dmScope")?.unwrap_or(DmScope::Main),
        main_key: trimmed(raw.main_key.as_deref()).unwrap_or_else(|| DEFAULT_MAIN_KEY.to_owned()),
    })
}

/// Parse a lenient section that may be absent or `null`.
pub(super) fn lenient<T: serde::de::DeserializeOwned + Default>(
    value: Option<&serde_json::Value>,
    path: &str,
) -> Result<T, ConfigError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(T::default()),
        Some(v) => typed(v, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millisecond_windows_are_truncated_and_never_negative() {
        assert_eq!(millis(Some(250.9), "p").expect("ok"), Some(250));
        assert_eq!(millis(None, "p").expect("ok"), None);
        assert!(millis(Some(-1.0), "p").is_err());
        assert!(millis(Some(f64::NAN), "p").is_err());
    }

    #[test]
    fn header_names_and_values_are_checked() {
        let ok = BTreeMap::from([("Authorization".to_owned(), "Bearer x".to_owned())]);
        assert!(check_headers(&ok).is_ok());
        let bad_name = BTreeMap::from([("Bad Name".to_owned(), "x".to_owned())]);
        assert!(check_headers(&bad_name).is_err());
        let bad_value = BTreeMap::from([("X-Key".to_owned(), "secret\r\nInjected: 1".to_owned())]);
        let err = check_headers(&bad_value).expect_err("line break");
        assert!(
            !err.to_string().contains("secret"),
            "the value is never quoted: {err}"
        );
    }
}

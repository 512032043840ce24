//! Stage 1: serde structs mirroring the file, every key optional, no defaults and no checks yet.
//!
//! Strict sections use `deny_unknown_fields` as a backstop only: unknown keys are reported earlier,
//! with their full path and a suggestion, by `schema`. Enum-like values stay strings here so that
//! `validate` can name the allowed spellings. Integers are `i64` so that a negative number reaches
//! the range check with its value instead of failing as a type error.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use super::error::ConfigError;

/// Deserialize `value`, found at key path `path`, into `T`; a type error names the full key path.
pub fn typed<T: DeserializeOwned>(value: &Value, path: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let full = match inner.as_str() {
            "." => path.to_owned(),
            i if i.starts_with('[') => format!("{path}{i}"),
            i => format!("{path}.{i}"),
        };
        ConfigError::invalid(full, humanize(&err.inner().to_string()))
    })
}

/// serde speaks Rust (`expected i64`, `struct RawSsh`, `sequence`); the file is json5.
fn humanize(message: &str) -> String {
    let mut out = message.to_owned();
    if let Some(start) = out.find("expected struct ") {
        let name_start = start + "expected struct ".len();
        let end = out[name_start..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(out.len(), |i| name_start + i);
        out.replace_range(start..end, "expected an object");
    }
    for (rust, json) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: unit value", "invalid type: null"),
    ] {
        out = out.replace(rust, json);
    }
    out
}

/// One account, or the channel root minus `accounts`/`defaultAccount` (the same key set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAccount {
    pub enabled: Option<bool>,
    pub name: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub markdown: Option<RawMarkdown>,
    pub config_writes: Option<bool>,
    pub cli_path: Option<String>,
    pub db_path: Option<String>,
    pub remote_host: Option<String>,
    pub service: Option<String>,
    pub region: Option<String>,
    pub dm_policy: Option<String>,
    pub allow_from: Option<Vec<Entry>>,
    pub default_to: Option<String>,
    pub group_allow_from: Option<Vec<Entry>>,
    pub group_policy: Option<String>,
    pub context_visibility: Option<String>,
    pub history_limit: Option<i64>,
    pub dm_history_limit: Option<i64>,
    pub dms: Option<BTreeMap<String, RawDm>>,
    pub include_attachments: Option<bool>,
    pub attachment_roots: Option<Vec<String>>,
    pub remote_attachment_roots: Option<Vec<String>>,
    pub media_max_mb: Option<i64>,
    pub probe_timeout_ms: Option<i64>,
    pub text_chunk_limit: Option<i64>,
    pub chunk_mode: Option<String>,
    pub block_streaming: Option<bool>,
    pub block_streaming_coalesce: Option<RawCoalesce>,
    pub groups: Option<BTreeMap<String, RawGroup>>,
    pub heartbeat: Option<RawHeartbeat>,
    pub health_monitor: Option<RawHealthMonitor>,
    pub response_prefix: Option<String>,
    pub transport: Option<String>,
    pub ssh: Option<RawSsh>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMarkdown {
    pub tables: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawDm {
    pub history_limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawGroup {
    pub require_mention: Option<bool>,
    pub tools: Option<serde_json::Value>,
    pub tools_by_sender: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCoalesce {
    pub min_chars: Option<i64>,
    pub max_chars: Option<i64>,
    pub idle_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHeartbeat {
    pub show_ok: Option<bool>,
    pub show_alerts: Option<bool>,
    pub use_indicator: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHealthMonitor {
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSsh {
    pub host: Option<String>,
    pub user: Option<String>,
    pub port: Option<i64>,
    pub identity_file: Option<OneOrMany>,
    pub identity_passphrase_env: Option<String>,
    pub use_agent: Option<bool>,
    pub known_hosts_file: Option<OneOrMany>,
    pub strict_host_key_checking: Option<String>,
    pub proxy_jump: Option<String>,
    pub remote_cli_path: Option<String>,
    pub connect_timeout_ms: Option<i64>,
    pub keepalive_interval_ms: Option<i64>,
    pub keepalive_max: Option<i64>,
    pub sftp_request_timeout_ms: Option<i64>,
    pub control_persist_ms: Option<i64>,
}

/// Our `bridge` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawBridge {
    pub state_dir: Option<String>,
    pub agent_id: Option<String>,
    pub agent: Option<RawAgentSink>,
    pub http: Option<RawHttp>,
    pub replay: Option<RawReplay>,
    pub media: Option<RawMedia>,
    pub outbound_media_roots: Option<Vec<String>>,
}

/// `bridge.agent`: the union of every kind's keys; `validate` rejects keys of another kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAgentSink {
    pub kind: Option<String>,
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<i64>,
    pub stream: Option<String>,
    pub reply_stream: Option<String>,
    pub subject_prefix: Option<String>,
    pub duplicate_window_seconds: Option<i64>,
    pub token_env: Option<String>,
    pub credentials_file: Option<String>,
    pub tls: Option<RawNatsTls>,
}

/// `bridge.agent.tls` of kind "nats".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawNatsTls {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawReplay {
    pub max_rows: Option<i64>,
    pub max_age_minutes: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMedia {
    pub cache_max_mb: Option<i64>,
    pub cache_max_age_hours: Option<i64>,
    pub pull_retries: Option<i64>,
    pub outbound_grace_ms: Option<i64>,
}

// Lenient sections: only the keys we read, everything else ignored (no deny_unknown_fields).

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawMessages {
    pub response_prefix: Option<String>,
    pub group_chat: Option<RawGroupChat>,
    pub inbound: Option<RawInbound>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawGroupChat {
    pub mention_patterns: Option<Vec<String>>,
    pub history_limit: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawInbound {
    /// Upstream truncates fractional milliseconds, so any number is read.
    pub debounce_ms: Option<f64>,
    pub by_channel: Option<RawByChannel>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawByChannel {
    pub imessage: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawAgents {
    pub list: Option<Vec<RawAgentEntry>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAgentEntry {
    pub id: Option<String>,
    pub default: Option<bool>,
    pub identity: Option<RawIdentity>,
    pub group_chat: Option<RawAgentGroupChat>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawIdentity {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawAgentGroupChat {
    pub mention_patterns: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawCommands {
    pub config: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSession {
    pub dm_scope: Option<String>,
    pub main_key: Option<String>,
}

/// A string or an array of strings (`identityFile`, `knownHostsFile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// An allowlist entry: a string, or a number that upstream stringifies (`allowFrom: [15551234567]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry(pub String);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry, E> {
                Ok(Entry(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entry, E> {
                Ok(Entry(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Entry, E> {
                Ok(Entry(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Entry, E> {
                // JavaScript's String(15551234567.0) is "15551234567": print integral floats without ".0".
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(Entry(format!("{}", v as i64)))
                } else {
                    Ok(Entry(v.to_string()))
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_full_key_path_in_json_terms() {
        let cases = [
            (
                r#"{"mediaMaxMb":"16"}"#,
                "channels.imessage.mediaMaxMb",
                "invalid type: string \"16\", expected an integer",
            ),
            (
                r#"{"ssh":"mac"}"#,
                "channels.imessage.ssh",
                "invalid type: string \"mac\", expected an object",
            ),
            (
                r#"{"allowFrom":[true]}"#,
                "channels.imessage.allowFrom[0]",
                "invalid type: boolean `true`, expected a string or a number",
            ),
            (
                r#"{"capabilities":{}}"#,
                "channels.imessage.capabilities",
                "invalid type: object, expected an array",
            ),
            (
                r#"{"enabled":"yes"}"#,
                "channels.imessage.enabled",
                "invalid type: string \"yes\", expected a boolean",
            ),
        ];
        for (text, want_path, want_message) in cases {
            let value: Value = serde_json::from_str(text).expect(text);
            match typed::<RawAccount>(&value, "channels.imessage") {
                Err(ConfigError::Invalid { path, message, .. }) => {
                    assert_eq!(path, want_path, "{text}");
                    assert_eq!(message, want_message, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn allowlist_entries_accept_strings_and_stringify_numbers() {
        let cases = [
            (r#""+15551234567""#, "+15551234567"),
            ("15551234567", "15551234567"),
            ("-5", "-5"),
            ("15551234567.0", "15551234567"),
            ("1.5", "1.5"),
        ];
        for (text, want) in cases {
            let entry: Entry = serde_json::from_str(text).expect(text);
            assert_eq!(entry.0, want, "{text}");
        }
        assert!(serde_json::from_str::<Entry>("true").is_err());
    }

    #[test]
    fn path_lists_accept_one_string_or_an_array() {
        let one: OneOrMany = serde_json::from_str(r#""~/.ssh/id""#).expect("one");
        assert_eq!(one.0, vec!["~/.ssh/id"]);
        let many: OneOrMany = serde_json::from_str(r#"["a","b"]"#).expect("many");
        assert_eq!(many.0, vec!["a", "b"]);
        let err = serde_json::from_str::<OneOrMany>("3").expect_err("number");
        assert!(
            err.to_string().contains("a string or an array of strings"),
            "{err}"
        );
    }
}

//! The key sets of the strict sections, and the walk that rejects unknown keys with their full path.
//!
//! serde's `deny_unknown_fields` would also reject them, but its message names neither the path nor a
//! close match, so the walk runs first on the parsed json5 value. A unit test keeps these lists equal
//! to the fields of the raw structs.

use serde_json::Value;

use super::error::ConfigError;
use super::suggest::closest;

/// What a key holds, as far as key checking goes.
pub enum Shape {
    /// A value whose inside is not key-checked (scalars, arrays, free-form JSON).
    Leaf,
    /// An object with a fixed key set.
    Object(&'static Obj),
    /// An object with free keys (ids, handles, chat ids) whose values all have one shape.
    MapOf(&'static Shape),
}

/// A fixed key set, possibly assembled from several groups (the channel root is an account plus two).
pub struct Obj {
    pub groups: &'static [&'static [(&'static str, Shape)]],
    /// Keys that exist only at the channel root; found elsewhere they get a message saying so.
    pub root_only: &'static [&'static str],
}

impl Obj {
    fn fields(&self) -> impl Iterator<Item = &'static (&'static str, Shape)> {
        self.groups.iter().flat_map(|group| group.iter())
    }

    /// Every valid key name, in documentation order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        self.fields().map(|(name, _)| *name)
    }
}

static MARKDOWN: Obj = Obj {
    groups: &[&[("tables", Shape::Leaf)]],
    root_only: &[],
};
static DM: Obj = Obj {
    groups: &[&[("historyLimit", Shape::Leaf)]],
    root_only: &[],
};
static DM_SHAPE: Shape = Shape::Object(&DM);
static GROUP: Obj = Obj {
    groups: &[&[
        ("requireMention", Shape::Leaf),
        ("tools", Shape::Leaf),
        ("toolsBySender", Shape::Leaf),
    ]],
    root_only: &[],
};
static GROUP_SHAPE: Shape = Shape::Object(&GROUP);
static COALESCE: Obj = Obj {
    groups: &[&[
        ("minChars", Shape::Leaf),
        ("maxChars", Shape::Leaf),
        ("idleMs", Shape::Leaf),
    ]],
    root_only: &[],
};
static HEARTBEAT: Obj = Obj {
    groups: &[&[
        ("showOk", Shape::Leaf),
        ("showAlerts", Shape::Leaf),
        ("useIndicator", Shape::Leaf),
    ]],
    root_only: &[],
};
static HEALTH_MONITOR: Obj = Obj {
    groups: &[&[("enabled", Shape::Leaf)]],
    root_only: &[],
};

/// `channels.imessage.ssh` and `…accounts.<id>.ssh`.
pub static SSH: Obj = Obj {
    groups: &[&[
        ("host", Shape::Leaf),
        ("user", Shape::Leaf),
        ("port", Shape::Leaf),
        ("identityFile", Shape::Leaf),
        ("identityPassphraseEnv", Shape::Leaf),
        ("useAgent", Shape::Leaf),
        ("knownHostsFile", Shape::Leaf),
        ("strictHostKeyChecking", Shape::Leaf),
        ("proxyJump", Shape::Leaf),
        ("remoteCliPath", Shape::Leaf),
        ("connectTimeoutMs", Shape::Leaf),
        ("keepaliveIntervalMs", Shape::Leaf),
        ("keepaliveMax", Shape::Leaf),
        ("sftpRequestTimeoutMs", Shape::Leaf),
        ("controlPersistMs", Shape::Leaf),
    ]],
    root_only: &[],
};

/// The keys shared by the channel root and every account (docs/configuration.md plus ours).
static ACCOUNT_FIELDS: &[(&str, Shape)] = &[
    ("enabled", Shape::Leaf),
    ("name", Shape::Leaf),
    ("capabilities", Shape::Leaf),
    ("markdown", Shape::Object(&MARKDOWN)),
    ("configWrites", Shape::Leaf),
    ("cliPath", Shape::Leaf),
    ("dbPath", Shape::Leaf),
    ("remoteHost", Shape::Leaf),
    ("service", Shape::Leaf),
    ("region", Shape::Leaf),
    ("dmPolicy", Shape::Leaf),
    ("allowFrom", Shape::Leaf),
    ("defaultTo", Shape::Leaf),
    ("groupAllowFrom", Shape::Leaf),
    ("groupPolicy", Shape::Leaf),
    ("contextVisibility", Shape::Leaf),
    ("historyLimit", Shape::Leaf),
    ("dmHistoryLimit", Shape::Leaf),
    ("dms", Shape::MapOf(&DM_SHAPE)),
    ("includeAttachments", Shape::Leaf),
    ("attachmentRoots", Shape::Leaf),
    ("remoteAttachmentRoots", Shape::Leaf),
    ("mediaMaxMb", Shape::Leaf),
    ("probeTimeoutMs", Shape::Leaf),
    ("textChunkLimit", Shape::Leaf),
    ("chunkMode", Shape::Leaf),
    ("blockStreaming", Shape::Leaf),
    ("blockStreamingCoalesce", Shape::Object(&COALESCE)),
    ("groups", Shape::MapOf(&GROUP_SHAPE)),
    ("heartbeat", Shape::Object(&HEARTBEAT)),
    ("healthMonitor", Shape::Object(&HEALTH_MONITOR)),
    ("responsePrefix", Shape::Leaf),
    ("transport", Shape::Leaf),
    ("ssh", Shape::Object(&SSH)),
];

/// The keys only the channel root has.
pub const ROOT_ONLY: &[&str] = &["accounts", "defaultAccount"];

/// One entry of `channels.imessage.accounts`.
pub static ACCOUNT: Obj = Obj {
    groups: &[ACCOUNT_FIELDS],
    root_only: ROOT_ONLY,
};
static ACCOUNT_SHAPE: Shape = Shape::Object(&ACCOUNT);

/// `channels.imessage`.
pub static CHANNEL: Obj = Obj {
    groups: &[
        ACCOUNT_FIELDS,
        &[
            ("accounts", Shape::MapOf(&ACCOUNT_SHAPE)),
            ("defaultAccount", Shape::Leaf),
        ],
    ],
    root_only: &[],
};

/// `bridge.agent`: the union of the keys of every kind.
pub static AGENT: Obj = Obj {
    groups: &[&[
        ("kind", Shape::Leaf),
        ("command", Shape::Leaf),
        ("url", Shape::Leaf),
        ("headers", Shape::Leaf),
        ("timeoutMs", Shape::Leaf),
        ("stream", Shape::Leaf),
        ("replyStream", Shape::Leaf),
        ("subjectPrefix", Shape::Leaf),
        ("duplicateWindowSeconds", Shape::Leaf),
        ("tokenEnv", Shape::Leaf),
        ("credentialsFile", Shape::Leaf),
        ("tls", Shape::Object(&NATS_TLS)),
    ]],
    root_only: &[],
};
/// `bridge.agent.tls` (kind "nats").
pub static NATS_TLS: Obj = Obj {
    groups: &[&[
        ("caFile", Shape::Leaf),
        ("certFile", Shape::Leaf),
        ("keyFile", Shape::Leaf),
    ]],
    root_only: &[],
};
static HTTP: Obj = Obj {
    groups: &[&[("listen", Shape::Leaf), ("tokenEnv", Shape::Leaf)]],
    root_only: &[],
};
static REPLAY: Obj = Obj {
    groups: &[&[("maxRows", Shape::Leaf), ("maxAgeMinutes", Shape::Leaf)]],
    root_only: &[],
};
static MEDIA: Obj = Obj {
    groups: &[&[
        ("cacheMaxMb", Shape::Leaf),
        ("cacheMaxAgeHours", Shape::Leaf),
        ("pullRetries", Shape::Leaf),
        ("outboundGraceMs", Shape::Leaf),
    ]],
    root_only: &[],
};

/// `bridge`.
pub static BRIDGE: Obj = Obj {
    groups: &[&[
        ("stateDir", Shape::Leaf),
        ("agentId", Shape::Leaf),
        ("agent", Shape::Object(&AGENT)),
        ("http", Shape::Object(&HTTP)),
        ("replay", Shape::Object(&REPLAY)),
        ("media", Shape::Object(&MEDIA)),
        ("outboundMediaRoots", Shape::Leaf),
    ]],
    root_only: &[],
};

/// Reject the first unknown key under `value` (keys are visited in sorted order, so the report is
/// deterministic). Values of the wrong type are skipped: the typed stage reports those.
pub fn check(value: &Value, obj: &Obj, path: &str) -> Result<(), ConfigError> {
    let Value::Object(map) = value else {
        return Ok(());
    };
    for (key, child) in map {
        let child_path = format!("{path}.{key}");
        match obj.fields().find(|(name, _)| name == key) {
            Some((_, shape)) => check_shape(child, shape, &child_path)?,
            None if obj.root_only.contains(&key.as_str()) => {
                return Err(ConfigError::invalid(
                    child_path,
                    format!(
                        "\"{key}\" is only allowed directly under channels.imessage, not inside an account"
                    ),
                ));
            }
            None => return Err(ConfigError::unknown_key(child_path, closest(key, obj.names()))),
        }
    }
    Ok(())
}

fn check_shape(value: &Value, shape: &Shape, path: &str) -> Result<(), ConfigError> {
    match shape {
        Shape::Leaf => Ok(()),
        Shape::Object(obj) => check(value, obj, path),
        Shape::MapOf(inner) => match value {
            Value::Object(map) => map
                .iter()
                .try_for_each(|(key, child)| check_shape(child, inner, &format!("{path}.{key}"))),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw;
    use super::*;
    use serde::de::{self, Deserialize, Deserializer, Visitor};
    use std::collections::BTreeSet;

    /// The field names serde derives for `T`, captured from `deserialize_struct`.
    fn serde_fields<T: Deserialize<'static>>() -> BTreeSet<&'static str> {
        struct Capture<'a>(&'a mut &'static [&'static str]);
        impl<'de> Deserializer<'de> for Capture<'_> {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(de::Error::custom("captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
                ignored_any
            }
        }
        let mut fields: &'static [&'static str] = &[];
        let _ = T::deserialize(Capture(&mut fields));
        fields.iter().copied().collect()
    }

    fn names(obj: &Obj) -> BTreeSet<&'static str> {
        obj.names().collect()
    }

    #[test]
    fn every_key_is_documented_in_the_configuration_reference() {
        let reference = include_str!("../../docs/configuration.md");
        let account: BTreeSet<_> = ACCOUNT_FIELDS.iter().map(|(n, _)| *n).collect();
        let sections = [
            ("channels.imessage", account),
            ("ssh", names(&SSH)),
            ("markdown", names(&MARKDOWN)),
            ("dms.<handle>", names(&DM)),
            ("groups.<id>", names(&GROUP)),
            ("blockStreamingCoalesce", names(&COALESCE)),
            ("heartbeat", names(&HEARTBEAT)),
            ("healthMonitor", names(&HEALTH_MONITOR)),
            ("bridge", names(&BRIDGE)),
            ("bridge.agent", names(&AGENT)),
            ("bridge.agent.tls", names(&NATS_TLS)),
            ("bridge.http", names(&HTTP)),
            ("bridge.replay", names(&REPLAY)),
            ("bridge.media", names(&MEDIA)),
            ("channels.imessage (root only)", names(&CHANNEL)),
        ];
        // Every identifier written in code style anywhere in the reference: `dms.<handle>.historyLimit`
        // documents `dms` and `historyLimit`, `{minChars?, maxChars?}` both of its keys.
        let spans = regex::Regex::new(r"`([^`\n]+)`").unwrap();
        let documented: BTreeSet<&str> = spans
            .captures_iter(reference)
            .filter_map(|c| c.get(1))
            .flat_map(|code| code.as_str().split(|c: char| !c.is_ascii_alphanumeric()))
            .filter(|word| !word.is_empty())
            .collect();
        let mut missing = Vec::new();
        for (section, keys) in sections {
            for key in keys {
                if !documented.contains(key) {
                    missing.push(format!("{section}: {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from docs/configuration.md:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn key_lists_match_the_raw_structs() {
        let account: BTreeSet<_> = ACCOUNT_FIELDS.iter().map(|(n, _)| *n).collect();
        let cases = [
            ("account", account, serde_fields::<raw::RawAccount>()),
            ("ssh", names(&SSH), serde_fields::<raw::RawSsh>()),
            ("markdown", names(&MARKDOWN), serde_fields::<raw::RawMarkdown>()),
            ("dms", names(&DM), serde_fields::<raw::RawDm>()),
            ("groups", names(&GROUP), serde_fields::<raw::RawGroup>()),
            ("coalesce", names(&COALESCE), serde_fields::<raw::RawCoalesce>()),
            (
                "heartbeat",
                names(&HEARTBEAT),
                serde_fields::<raw::RawHeartbeat>(),
            ),
            (
                "healthMonitor",
                names(&HEALTH_MONITOR),
                serde_fields::<raw::RawHealthMonitor>(),
            ),
            ("bridge", names(&BRIDGE), serde_fields::<raw::RawBridge>()),
            ("agent", names(&AGENT), serde_fields::<raw::RawAgentSink>()),
            ("tls", names(&NATS_TLS), serde_fields::<raw::RawNatsTls>()),
            ("http", names(&HTTP), serde_fields::<raw::RawHttp>()),
            ("replay", names(&REPLAY), serde_fields::<raw::RawReplay>()),
            ("media", names(&MEDIA), serde_fields::<raw::RawMedia>()),
        ];
        for (what, schema, serde) in cases {
            assert!(!serde.is_empty(), "{what}: no fields captured");
            assert_eq!(schema, serde, "{what}");
        }
    }

    #[test]
    fn unknown_keys_are_reported_with_their_full_path_and_a_suggestion() {
        let cases = [
            (
                r#"{"dmPoliccy":"open"}"#,
                "channels.imessage.dmPoliccy",
                Some("dmPolicy"),
            ),
            (
                r#"{"accounts":{"bot":{"dmPoliccy":"open"}}}"#,
                "channels.imessage.accounts.bot.dmPoliccy",
                Some("dmPolicy"),
            ),
            (
                r#"{"ssh":{"hots":"mac"}}"#,
                "channels.imessage.ssh.hots",
                Some("host"),
            ),
            (
                r#"{"accounts":{"a":{"ssh":{"identityFiles":[]}}}}"#,
                "channels.imessage.accounts.a.ssh.identityFiles",
                Some("identityFile"),
            ),
            (
                r#"{"groups":{"*":{"requireMentions":true}}}"#,
                "channels.imessage.groups.*.requireMentions",
                Some("requireMention"),
            ),
            (
                r#"{"dms":{"+1555":{"limit":3}}}"#,
                "channels.imessage.dms.+1555.limit",
                None,
            ),
            (r#"{"zzz":1}"#, "channels.imessage.zzz", None),
        ];
        for (text, want_path, want_suggestion) in cases {
            let value: Value = serde_json::from_str(text).expect(text);
            match check(&value, &CHANNEL, "channels.imessage") {
                Err(ConfigError::UnknownKey { path, suggestion, .. }) => {
                    assert_eq!(path, want_path, "{text}");
                    assert_eq!(suggestion.as_deref(), want_suggestion, "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn root_only_keys_inside_an_account_say_where_they_belong() {
        let value: Value = serde_json::from_str(r#"{"accounts":{"bot":{"accounts":{}}}}"#).expect("json");
        let err = check(&value, &CHANNEL, "channels.imessage").expect_err("nested accounts");
        assert_eq!(err.key_path(), Some("channels.imessage.accounts.bot.accounts"));
        assert!(
            err.to_string()
                .contains("only allowed directly under channels.imessage"),
            "{err}"
        );
    }

    #[test]
    fn free_form_tool_policies_and_wrong_types_are_not_key_checked() {
        let text =
            r#"{"groups":{"42":{"tools":{"anything":{"goes":1}}}},"ssh":"not-an-object","accounts":[]}"#;
        let value: Value = serde_json::from_str(text).expect("json");
        assert!(check(&value, &CHANNEL, "channels.imessage").is_ok());
    }
}

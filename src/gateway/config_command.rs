//! `/config show|set|unset` from chat (docs/channel.md): the owner reads or edits the config file.
//! Pure: text in, new text and the reply out; the caller checks who asked, writes, and reloads.

use serde_json::{Map, Value};

/// What a `/config` command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reply: String,
    /// The new file text, when something changed.
    pub new_text: Option<String>,
}

/// Where a write must be allowed: `configWrites` of the account (or of the channel for a flat config).
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub account: &'a str,
    /// No `accounts` map: the channel root is the account.
    pub flat: bool,
    pub config_writes: bool,
}

const INVALID_FILE: &str = "⚠️ Config file is invalid; fix it before using /config.";
const USAGE: &str = "⚙️ Usage: /config show [path] | /config set <path> <value> | /config unset <path>";

/// Is this text a `/config` command?
pub fn is_config_command(text: &str) -> bool {
    let text = text.trim_start();
    text == "/config" || text.starts_with("/config ")
}

pub fn run(file_text: &str, command: &str, scope: &Scope<'_>) -> Outcome {
    let reply = |reply: String| Outcome {
        reply,
        new_text: None,
    };
    let rest = command.trim_start().trim_start_matches("/config").trim();
    let (verb, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    let Ok(mut root) = json5::from_str::<Value>(file_text) else {
        return reply(INVALID_FILE.into());
    };
    match verb {
        "" | "show" => {
            let value = if args.is_empty() {
                Some(&root)
            } else {
                get(&root, args)
            };
            match value {
                Some(value) => {
                    let shown = serde_json::to_string_pretty(&redact(value.clone())).unwrap_or_default();
                    let label = if args.is_empty() { "config" } else { args };
                    reply(format!("⚙️ {label}:\n```json\n{shown}\n```"))
                }
                None => reply(format!("⚙️ {args} is not set.")),
            }
        }
        "set" | "unset" => {
            if !scope.config_writes {
                let key = if scope.flat {
                    "channels.imessage.configWrites".to_string()
                } else {
                    format!("channels.imessage.accounts.{}.configWrites", scope.account)
                };
                return reply(format!(
                    "⚠️ Config writes are disabled for imessage. Set {key}=true to enable."
                ));
            }
            let (path, raw_value) = match verb {
                "set" => match args.split_once(char::is_whitespace) {
                    Some((path, value)) => (path.trim(), Some(value.trim())),
                    None => return reply(USAGE.into()),
                },
                _ => (args, None),
            };
            if path.is_empty() {
                return reply(USAGE.into());
            }
            if replaces_a_collection(path) {
                return reply(
                    "⚠️ Channel-initiated /config writes cannot replace channels, channel roots, or accounts collections. Use a more specific path or gateway operator.admin."
                        .into(),
                );
            }
            let changed = match raw_value {
                Some(raw) => {
                    // JSON5 when it parses (numbers, booleans, arrays), else the plain string.
                    let value =
                        json5::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
                    set(&mut root, path, value.clone())
                        .then(|| format!("⚙️ Config updated: {path}={}", compact(&value)))
                }
                None => unset(&mut root, path).then(|| format!("⚙️ Config updated: {path} removed.")),
            };
            let Some(success) = changed else {
                return reply(format!("⚙️ {path} is not set."));
            };
            let new_text = serde_json::to_string_pretty(&root).unwrap_or_default() + "\n";
            if let Err(err) = crate::config::from_str(&new_text, None) {
                return reply(format!("⚠️ Config invalid after set ({path}: {err})."));
            }
            Outcome {
                reply: success,
                new_text: Some(new_text),
            }
        }
        _ => reply(USAGE.into()),
    }
}

fn replaces_a_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    matches!(
        parts.as_slice(),
        ["channels"] | ["channels", _] | ["channels", _, "accounts"]
    )
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Header values may hold credentials; never send them over iMessage.
fn redact(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map.iter_mut() {
                    if key == "headers"
                        && let Value::Object(headers) = inner
                    {
                        for v in headers.values_mut() {
                            *v = Value::String("<redacted>".into());
                        }
                    } else {
                        walk(inner);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| v.get(key))
}

/// Set `path`, creating objects on the way; false when a non-object is in the way.
fn set(root: &mut Value, path: &str, value: Value) -> bool {
    let keys: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut node = root;
    for key in parents {
        let Value::Object(map) = node else { return false };
        node = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let Value::Object(map) = node else { return false };
    map.insert(last.to_string(), value);
    true
}

fn unset(root: &mut Value, path: &str) -> bool {
    let keys: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut node = root;
    for key in parents {
        match node.get_mut(*key) {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.as_object_mut()
        .is_some_and(|map| map.remove(*last).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "// ours\n{ channels: { imessage: { allowFrom: ['+15550001111'], dmPolicy: 'pairing' } }, bridge: { agent: { kind: 'webhook', url: 'http://x', headers: { Authorization: 'Bearer s3cret' } } } }";

    fn scope(config_writes: bool) -> Scope<'static> {
        Scope {
            account: "default",
            flat: true,
            config_writes,
        }
    }

    #[test]
    fn shows_sets_and_unsets_with_the_reference_texts() {
        let shown = run(FILE, "/config show channels.imessage.dmPolicy", &scope(true));
        assert!(
            shown.reply.contains("\"pairing\"") && shown.new_text.is_none(),
            "{}",
            shown.reply
        );
        let all = run(FILE, "/config", &scope(true)).reply;
        assert!(all.contains("<redacted>") && !all.contains("s3cret"), "{all}");

        let set = run(
            FILE,
            "/config set channels.imessage.dmPolicy allowlist",
            &scope(true),
        );
        assert_eq!(
            set.reply,
            "⚙️ Config updated: channels.imessage.dmPolicy=allowlist"
        );
        let text = set.new_text.unwrap();
        assert!(
            text.contains("\"dmPolicy\": \"allowlist\"") && text.contains("Bearer s3cret"),
            "the rest is kept: {text}"
        );
        let open = run(FILE, "/config set channels.imessage.dmPolicy open", &scope(true));
        assert!(
            open.reply.contains("requires \"*\" in allowFrom") && open.new_text.is_none(),
            "{}",
            open.reply
        );

        let list = run(
            FILE,
            "/config set channels.imessage.allowFrom [\"+15550001111\", \"+15550002222\"]",
            &scope(true),
        );
        assert_eq!(
            list.reply,
            "⚙️ Config updated: channels.imessage.allowFrom=[\"+15550001111\",\"+15550002222\"]"
        );

        let unset = run(FILE, "/config unset channels.imessage.dmPolicy", &scope(true));
        assert_eq!(
            unset.reply,
            "⚙️ Config updated: channels.imessage.dmPolicy removed."
        );
        assert!(!unset.new_text.unwrap().contains("dmPolicy"));
    }

    #[test]
    fn refuses_what_it_must() {
        let denied = run(FILE, "/config set channels.imessage.dmPolicy open", &scope(false)).reply;
        assert_eq!(
            denied,
            "⚠️ Config writes are disabled for imessage. Set channels.imessage.configWrites=true to enable."
        );
        let account = Scope {
            account: "bot",
            flat: false,
            config_writes: false,
        };
        assert!(
            run(FILE, "/config unset x", &account)
                .reply
                .contains("channels.imessage.accounts.bot.configWrites=true")
        );
        for path in ["channels", "channels.imessage", "channels.imessage.accounts"] {
            let out = run(FILE, &format!("/config set {path} {{}}"), &scope(true));
            assert!(
                out.reply
                    .starts_with("⚠️ Channel-initiated /config writes cannot replace"),
                "{path}: {}",
                out.reply
            );
            assert!(out.new_text.is_none());
        }
        let invalid = run(
            FILE,
            "/config set channels.imessage.dmPolicy sometimes",
            &scope(true),
        );
        assert!(
            invalid
                .reply
                .starts_with("⚠️ Config invalid after set (channels.imessage.dmPolicy: "),
            "{}",
            invalid.reply
        );
        assert!(invalid.new_text.is_none());
        assert_eq!(run("{ broken", "/config show", &scope(true)).reply, INVALID_FILE);
        assert!(
            is_config_command("/config set a b")
                && is_config_command("/config")
                && !is_config_command("/configure")
        );
    }
}

//! `imsg-bridge detect WRAPPER [--json]`: read a wrapper script (never run it), say which SSH
//! target it reaches, whether `transport: "auto"` would replace it with the native connection, and
//! which line replaces it in drop-in mode (`exec imsg-bridge … imsg "$@"`, docs/guides/openclaw.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::transport::wrapper::{self, WrapperAnalysis};
use crate::util::escape::escape_controls;
use crate::util::expand_tilde;

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// The wrapper script (usually channels.imessage.cliPath)
    wrapper: PathBuf,
    /// One JSON object (the fields in docs/ssh.md and docs/cli.md) instead of the table
    #[arg(long)]
    json: bool,
}

/// The bridge's own config file that the snippet goes into. Named explicitly with `--config`: without
/// it the drop-in would read `~/.openclaw/openclaw.json` first (docs/configuration.md, "Where the file
/// is"), and OpenClaw's strict schema has no room for an `ssh` block there.
pub const BRIDGE_CONFIG: &str = "~/.config/imsg-bridge/config.json5";

/// `-o` options that only tune the ssh client the native connection replaces (it has its own
/// timeouts, keepalives and connection sharing), so they need no config. Lowercase, as OpenSSH keys
/// are case-insensitive.
const HARMLESS_OPTIONS: [&str; 14] = [
    "batchmode",
    "connecttimeout",
    "serveraliveinterval",
    "serveralivecountmax",
    "tcpkeepalive",
    "loglevel",
    "compression",
    "requesttty",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "identitiesonly",
    "forwardagent",
    "forwardx11",
];

/// What replaces the wrapper in drop-in mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Replacement {
    /// The wrapper's new exec line; `None` when none is offered (`why_not` says why).
    pub line: Option<String>,
    /// The bridge's own config (`BRIDGE_CONFIG`) when `--target` cannot say everything.
    pub config_snippet: Option<Value>,
    /// Wrapper settings the replacement does not carry, each with what to do about it.
    pub notes: Vec<String>,
    pub why_not: Option<String>,
}

impl Replacement {
    fn refused(why: impl Into<String>) -> Self {
        Replacement {
            line: None,
            config_snippet: None,
            notes: Vec::new(),
            why_not: Some(why.into()),
        }
    }
}

/// `detect --json`: the analysis' fields unchanged, plus the replacement.
#[derive(Serialize)]
struct DetectJson<'a> {
    #[serde(flatten)]
    analysis: &'a WrapperAnalysis,
    replacement: Option<&'a str>,
    config_snippet: Option<&'a Value>,
}

/// Exit 0 when the wrapper is transparent, 1 when it is not, 2 when the file cannot be read.
pub fn detect(args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let path = expand_tilde(&args.wrapper.to_string_lossy());
    let analysis = wrapper::analyze_file(&path).map_err(|err| {
        super::CliError::Usage(format!("cannot read the wrapper {}: {err}", path.display()))
    })?;
    let replacement = replacement(&analysis);
    if args.json {
        let out = DetectJson {
            analysis: &analysis,
            replacement: replacement.line.as_deref(),
            config_snippet: replacement.config_snippet.as_ref(),
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print!("{}", table(&path.display().to_string(), &analysis, &replacement));
    }
    Ok(if analysis.transparent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The drop-in line for a transparent wrapper: `--target [user@]host[:port]` when that says it all,
/// else the bridge's own config with an `ssh` block and `--config`.
pub fn replacement(a: &WrapperAnalysis) -> Replacement {
    if !a.transparent {
        return Replacement::refused(
            "the wrapper is not transparent (see the warnings), so `imsg-bridge imsg` would not do what it does; fix the script first",
        );
    }
    let (Some(host), Some(remote_host)) = (&a.host, &a.remote_host) else {
        return Replacement::refused("the wrapper names no host to connect to");
    };
    let mut ssh = Map::new();
    let mut notes = Vec::new();
    match a.identity_files.as_slice() {
        [] => {}
        [one] => {
            ssh.insert("identityFile".into(), one.clone().into());
        }
        many => {
            ssh.insert("identityFile".into(), many.to_vec().into());
        }
    }
    if let Some(jump) = &a.proxy_jump {
        ssh.insert("proxyJump".into(), jump.clone().into());
    }
    // A bare `imsg` is what the bridge finds with the Mac's login shell anyway; a path is kept exactly.
    if let Some(cli) = a.remote_command.as_ref().filter(|cli| *cli != "imsg") {
        ssh.insert("remoteCliPath".into(), cli.clone().into());
    }
    let mut needs_config = !ssh.is_empty();
    if let Some(file) = &a.config_file {
        needs_config = true;
        notes.push(format!(
            "ssh -F {file}: the bridge's config cannot name an ssh_config file; copy what its `Host {host}` block sets (HostName, User, Port, IdentityFile, ProxyJump, UserKnownHostsFile, StrictHostKeyChecking; `ssh -G -F {file} {host}` prints them) into the ssh block"
        ));
    }
    for (key, value) in &a.options {
        let lower = key.to_ascii_lowercase();
        if HARMLESS_OPTIONS.contains(&lower.as_str()) {
            continue;
        }
        match (lower.as_str(), host_key_policy(value)) {
            ("stricthostkeychecking", Some(policy)) => {
                ssh.insert("strictHostKeyChecking".into(), policy.into());
            }
            ("userknownhostsfile", _) => {
                let files: Vec<Value> = value.split_whitespace().map(Value::from).collect();
                let files = match <[Value; 1]>::try_from(files) {
                    Ok([one]) => one,
                    Err(many) => Value::Array(many),
                };
                ssh.insert("knownHostsFile".into(), files);
            }
            _ => notes.push(format!(
                "ssh -o {key}={value} is not carried over: the native connection has no such setting"
            )),
        }
    }
    needs_config |= ssh.contains_key("strictHostKeyChecking") || ssh.contains_key("knownHostsFile");
    if !needs_config {
        let port = a.port.map(|p| format!(":{p}")).unwrap_or_default();
        return Replacement {
            line: Some(format!(
                "exec imsg-bridge --target {remote_host}{port} imsg \"$@\""
            )),
            config_snippet: None,
            notes,
            why_not: None,
        };
    }
    let mut block = Map::new();
    block.insert("host".into(), host.clone().into());
    if let Some(user) = &a.user {
        block.insert("user".into(), user.clone().into());
    }
    if let Some(port) = a.port {
        block.insert("port".into(), port.into());
    }
    block.extend(ssh);
    let snippet = serde_json::json!({ "channels": { "imessage": { "ssh": block } } });
    Replacement {
        line: Some(format!("exec imsg-bridge --config {BRIDGE_CONFIG} imsg \"$@\"")),
        config_snippet: Some(snippet),
        notes,
        why_not: None,
    }
}

/// OpenSSH's StrictHostKeyChecking values the bridge has (`ask` needs a terminal; it has none).
fn host_key_policy(value: &str) -> Option<&'static str> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some("yes"),
        "no" | "off" | "false" => Some("no"),
        "accept-new" => Some("accept-new"),
        _ => None,
    }
}

fn table(path: &str, a: &WrapperAnalysis, r: &Replacement) -> String {
    let dash = || "-".to_string();
    let options: Vec<String> = a.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let rows = [
        ("wrapper", path.to_string()),
        (
            "transparent",
            if a.transparent { "yes" } else { "no" }.to_string(),
        ),
        ("host", a.host.clone().unwrap_or_else(dash)),
        ("user", a.user.clone().unwrap_or_else(dash)),
        ("port", a.port.map(|p| p.to_string()).unwrap_or_else(dash)),
        ("identity files", join_or_dash(&a.identity_files)),
        ("proxy jump", a.proxy_jump.clone().unwrap_or_else(dash)),
        ("config file", a.config_file.clone().unwrap_or_else(dash)),
        ("options", join_or_dash(&options)),
        ("remote imsg", a.remote_command.clone().unwrap_or_else(dash)),
        ("remoteHost", a.remote_host.clone().unwrap_or_else(dash)),
    ];
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(&format!("{name:<15} {}\n", escape_controls(&value)));
    }
    for warning in &a.warnings {
        out.push_str(&format!("warning         {warning}\n"));
    }
    let verdict = match (&a.remote_host, a.transparent) {
        (Some(remote), true) => {
            format!("transport \"auto\" replaces this wrapper with a native SSH connection to {remote}")
        }
        (Some(remote), false) => format!(
            "not replaced: transport \"auto\" runs the script as a process; to go native, set channels.imessage.ssh.host (target read here: {remote})"
        ),
        (None, _) => "not replaced: no SSH target could be read; set channels.imessage.ssh.host".to_string(),
    };
    out.push_str(&format!("verdict         {verdict}\n"));
    match (&r.line, &r.why_not) {
        (Some(line), _) => out.push_str(&format!("replacement     {line}\n")),
        (None, why) => out.push_str(&format!(
            "replacement     none: {}\n",
            why.as_deref().unwrap_or("-")
        )),
    }
    if let Some(snippet) = &r.config_snippet {
        out.push_str(&format!("config          put this in {BRIDGE_CONFIG}:\n"));
        for line in json5(snippet, 0).lines() {
            out.push_str(&format!("                {}\n", escape_controls(line)));
        }
    }
    for note in &r.notes {
        out.push_str(&format!("note            {}\n", escape_controls(note)));
    }
    out
}

/// A json5 rendering with unquoted keys, as docs/configuration.md writes configs: the target
/// (`host`, `user`, `port`) first, as that table lists it, then the other keys in name order.
fn json5(value: &Value, indent: usize) -> String {
    let pad = "  ".repeat(indent + 1);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let rank = |key: &str| ["host", "user", "port"].iter().position(|k| *k == key);
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(key, _)| (rank(key).unwrap_or(usize::MAX), key.as_str()));
            let mut out = String::from("{\n");
            for (key, item) in entries {
                let plain = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !key.starts_with(|c: char| c.is_ascii_digit());
                let key = if plain {
                    key.clone()
                } else {
                    Value::from(key.as_str()).to_string()
                };
                out.push_str(&format!("{pad}{key}: {},\n", json5(item, indent + 1)));
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
            out
        }
        Value::Array(items) if !items.is_empty() => {
            let items: Vec<String> = items.iter().map(|i| json5(i, indent + 1)).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_names_the_target_and_the_verdict() {
        let a = wrapper::analyze(
            "#!/bin/sh\nexec ssh -T -p 2222 -o BatchMode=yes bot@mac.local /opt/homebrew/bin/imsg \"$@\"\n",
        );
        let text = table("/w", &a, &replacement(&a));
        assert!(text.contains("transparent     yes\n"), "{text}");
        assert!(text.contains("port            2222\n"), "{text}");
        assert!(text.contains("options         BatchMode=yes\n"), "{text}");
        assert!(text.contains("native SSH connection to bot@mac.local"), "{text}");
        let opaque = wrapper::analyze("ssh mac imsg \"$@\" | grep x\n");
        let text = table("/w", &opaque, &replacement(&opaque));
        assert!(
            text.contains("transparent     no\n") && text.contains("warning         "),
            "{text}"
        );
        assert!(text.contains("runs the script as a process"), "{text}");
    }

    /// The one-line cases: everything the wrapper says fits in `--target [user@]host[:port]`.
    #[test]
    fn a_wrapper_that_only_names_its_target_becomes_one_target_line() {
        let cases = [
            ("exec ssh -T bot@mac imsg \"$@\"", "bot@mac"),
            ("exec ssh mac imsg \"$@\"", "mac"),
            ("exec ssh -l bob mac imsg \"$@\"", "bob@mac"),
            ("exec ssh -p 2222 bot@mac.local imsg \"$@\"", "bot@mac.local:2222"),
            ("exec ssh ssh://bot@mac:2200 imsg \"$@\"", "bot@mac:2200"),
            ("exec ssh -p 22 bot@::1 imsg \"$@\"", "bot@[::1]:22"),
            (
                "exec /usr/bin/ssh -o BatchMode=yes -o ConnectTimeout=5 -o ServerAliveInterval=15 -T bot@10.0.0.5 imsg \"$@\"",
                "bot@10.0.0.5",
            ),
        ];
        for (script, target) in cases {
            let r = replacement(&wrapper::analyze(script));
            let expected = format!("exec imsg-bridge --target {target} imsg \"$@\"");
            assert_eq!(r.line.as_deref(), Some(expected.as_str()), "{script}");
            assert_eq!(r.config_snippet, None, "{script}");
            assert!(r.notes.is_empty() && r.why_not.is_none(), "{script}: {r:?}");
        }
    }

    /// What `--target` cannot say goes into the bridge's own config, under the keys it already has.
    #[test]
    fn a_wrapper_that_needs_more_than_a_target_gets_a_config_snippet() {
        let cases = [
            (
                "exec ssh -i ~/.ssh/id_bot bot@mac imsg \"$@\"",
                json!({"host": "mac", "user": "bot", "identityFile": "~/.ssh/id_bot"}),
            ),
            (
                "exec ssh -i ~/.ssh/a -i ~/.ssh/b mac imsg \"$@\"",
                json!({"host": "mac", "identityFile": ["~/.ssh/a", "~/.ssh/b"]}),
            ),
            (
                "exec ssh -J me@bastion:2200 -p 2222 bot@mac imsg \"$@\"",
                json!({"host": "mac", "user": "bot", "port": 2222, "proxyJump": "me@bastion:2200"}),
            ),
            (
                "exec ssh -o ProxyJump=bastion bot@mac imsg \"$@\"",
                json!({"host": "mac", "user": "bot", "proxyJump": "bastion"}),
            ),
            (
                "exec ssh -T bot@mac /opt/homebrew/bin/imsg \"$@\"",
                json!({"host": "mac", "user": "bot", "remoteCliPath": "/opt/homebrew/bin/imsg"}),
            ),
            (
                "exec ssh -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=~/.ssh/bot_known bot@mac imsg \"$@\"",
                json!({"host": "mac", "user": "bot", "strictHostKeyChecking": "accept-new", "knownHostsFile": "~/.ssh/bot_known"}),
            ),
            (
                "exec ssh -o 'UserKnownHostsFile=~/.ssh/a ~/.ssh/b' -o StrictHostKeyChecking=off mac imsg \"$@\"",
                json!({"host": "mac", "strictHostKeyChecking": "no", "knownHostsFile": ["~/.ssh/a", "~/.ssh/b"]}),
            ),
        ];
        for (script, ssh) in cases {
            let r = replacement(&wrapper::analyze(script));
            assert_eq!(
                r.line.as_deref(),
                Some("exec imsg-bridge --config ~/.config/imsg-bridge/config.json5 imsg \"$@\""),
                "{script}"
            );
            let expected = json!({"channels": {"imessage": {"ssh": ssh}}});
            assert_eq!(r.config_snippet, Some(expected), "{script}");
            assert!(r.notes.is_empty(), "{script}: {:?}", r.notes);
        }
    }

    #[test]
    fn settings_the_bridge_cannot_carry_are_named_in_a_note() {
        // -F: the host's settings live in a file the bridge's config cannot name.
        let r = replacement(&wrapper::analyze("exec ssh -F ~/.ssh/bot_config mac imsg \"$@\""));
        assert!(r.line.as_deref().is_some_and(|l| l.contains("--config")), "{r:?}");
        assert_eq!(
            r.config_snippet,
            Some(json!({"channels": {"imessage": {"ssh": {"host": "mac"}}}}))
        );
        assert!(
            r.notes.len() == 1 && r.notes[0].contains("ssh -G -F ~/.ssh/bot_config mac"),
            "{:?}",
            r.notes
        );
        // An option without a config key: the target line stays, with a note.
        let r = replacement(&wrapper::analyze(
            "exec ssh -o HostKeyAlias=macmini -o StrictHostKeyChecking=ask bot@mac imsg \"$@\"",
        ));
        assert_eq!(
            r.line.as_deref(),
            Some("exec imsg-bridge --target bot@mac imsg \"$@\"")
        );
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(r.notes.iter().any(|n| n.contains("HostKeyAlias=macmini")));
        assert!(r.notes.iter().any(|n| n.contains("StrictHostKeyChecking=ask")));
    }

    #[test]
    fn a_wrapper_that_is_not_transparent_gets_no_replacement_and_a_reason() {
        for script in [
            "ssh mac imsg \"$@\" | grep x",
            "exec ssh -J jump mac -- imsg rpc --verbose",
            "exec ssh mac sudo imsg \"$@\"",
            "exec /usr/local/bin/imsg \"$@\"",
        ] {
            let a = wrapper::analyze(script);
            let r = replacement(&a);
            assert_eq!((r.line.as_deref(), &r.config_snippet), (None, &None), "{script}");
            assert!(
                r.why_not
                    .as_deref()
                    .is_some_and(|w| w.contains("not transparent")),
                "{script}: {r:?}"
            );
            let text = table("/w", &a, &r);
            assert!(text.contains("replacement     none: "), "{text}");
        }
    }

    #[test]
    fn the_json_keeps_every_field_and_adds_the_replacement() {
        let a = wrapper::analyze("exec ssh -i ~/.ssh/k bot@mac imsg \"$@\"");
        let r = replacement(&a);
        let out = serde_json::to_value(DetectJson {
            analysis: &a,
            replacement: r.line.as_deref(),
            config_snippet: r.config_snippet.as_ref(),
        })
        .unwrap_or_default();
        let Value::Object(mut map) = out else {
            panic!("not an object: {out}")
        };
        assert_eq!(map.remove("replacement"), r.line.map(Value::from));
        assert_eq!(map.remove("config_snippet"), r.config_snippet);
        assert_eq!(Value::Object(map), serde_json::to_value(&a).unwrap_or_default());
        let opaque = wrapper::analyze("ssh mac imsg | cat");
        let out = serde_json::to_value(DetectJson {
            analysis: &opaque,
            replacement: None,
            config_snippet: None,
        })
        .unwrap_or_default();
        assert_eq!(
            (&out["replacement"], &out["config_snippet"]),
            (&Value::Null, &Value::Null)
        );
    }

    #[test]
    fn the_table_prints_the_snippet_as_json5_under_the_line() {
        let a = wrapper::analyze("exec ssh -J me@bastion -p 2222 bot@mac imsg \"$@\"");
        let text = table("/w", &a, &replacement(&a));
        let expected = "replacement     exec imsg-bridge --config ~/.config/imsg-bridge/config.json5 imsg \"$@\"\n\
            config          put this in ~/.config/imsg-bridge/config.json5:\n\
            \x20               {\n\
            \x20                 channels: {\n\
            \x20                   imessage: {\n\
            \x20                     ssh: {\n\
            \x20                       host: \"mac\",\n\
            \x20                       user: \"bot\",\n\
            \x20                       port: 2222,\n\
            \x20                       proxyJump: \"me@bastion\",\n\
            \x20                     },\n\
            \x20                   },\n\
            \x20                 },\n\
            \x20               }\n";
        assert!(text.ends_with(expected), "{text}");
    }
}

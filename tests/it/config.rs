//! Loading a real configuration file from disk through the public API.

use std::path::PathBuf;

use imsg_bridge::config::{self, AgentSink, ConfigError, DmPolicy, GroupPolicy, TransportKind};

/// A Linux gateway reaching a Mac over SSH, a second bot account, and the lenient OpenClaw sections.
const OPENCLAW_SHAPED: &str = r#"// ~/.openclaw/openclaw.json as OpenClaw users have it, plus our sections
{
  agents: { list: [{ id: "main", default: true, identity: { name: "Molty" } }] },
  messages: { responsePrefix: "auto", groupChat: { mentionPatterns: ["@molty"] } },
  gateway: { mode: "local" },            // not ours: ignored
  channels: {
    imessage: {
      dmPolicy: "allowlist",
      allowFrom: ["+15551234567", "me@icloud.com"],
      groupPolicy: "open",
      includeAttachments: true,
      transport: "ssh",
      ssh: {
        host: "mac-mini.tailnet-1234.ts.net",
        user: "bot",
        identityFile: "/keys/id_ed25519",
      },
      accounts: {
        bot: { name: "Bot", dbPath: "~/Library/Messages/chat.db" },
        family: { enabled: false, dmPolicy: "pairing", cliPath: "/opt/homebrew/bin/imsg", transport: "process" },
      },
      defaultAccount: "bot",
    },
  },
  bridge: {
    stateDir: "/var/lib/imsg-bridge",
    agent: { kind: "exec", command: ["python3", "agent.py"] },
    http: { listen: "127.0.0.1:7777" },
  },
}
"#;

#[test]
fn an_openclaw_shaped_file_loads_with_merged_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("openclaw.json");
    std::fs::write(&path, OPENCLAW_SHAPED).expect("write config");

    let config = config::load(Some(&path)).expect("valid config");

    assert_eq!(config.path.as_deref(), Some(path.as_path()));
    assert_eq!(config.default_account, "bot");
    let ids: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["bot", "family"]);
    let enabled: Vec<&str> = config.enabled_accounts().map(|a| a.id.as_str()).collect();
    assert_eq!(enabled, ["bot"]);

    let bot = config.account("bot").expect("bot");
    assert_eq!(bot.dm_policy, DmPolicy::Allowlist, "root dmPolicy inherits");
    assert_eq!(bot.group_policy, GroupPolicy::Open, "root groupPolicy inherits");
    assert_eq!(bot.transport, TransportKind::Ssh);
    assert_eq!(bot.db_path.as_deref(), Some("~/Library/Messages/chat.db"));
    let ssh = bot.ssh.as_ref().expect("ssh block inherited from the root");
    assert_eq!(ssh.identity_files, [PathBuf::from("/keys/id_ed25519")]);
    assert_eq!(bot.response_prefix.as_deref(), Some("auto"));

    let family = config.account("family").expect("family");
    assert_eq!(family.dm_policy, DmPolicy::Pairing);
    assert_eq!(family.cli_path, PathBuf::from("/opt/homebrew/bin/imsg"));

    if std::env::var_os("IMSG_BRIDGE_STATE_DIR").is_none() {
        assert_eq!(config.bridge.state_dir, PathBuf::from("/var/lib/imsg-bridge"));
    }
    assert!(matches!(config.bridge.agent, AgentSink::Exec { .. }));
    assert_eq!(config.default_agent_id(), "main");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn a_typo_in_a_real_file_names_the_file_the_key_path_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json5");
    let text = "{ channels: { imessage: { accounts: { bot: { dmPoliccy: 'open' } } } } }";
    std::fs::write(&path, text).expect("write config");

    let err = config::load(Some(&path)).expect_err("typo");

    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "config file {}: unknown key channels.imessage.accounts.bot.dmPoliccy; did you mean \"dmPolicy\"?",
            path.display()
        )
    );

    let missing = dir.path().join("absent.json5");
    let err = config::load(Some(&missing)).expect_err("missing explicit file");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// `imsg-bridge --config <path> chats`: its exit code and stderr.
fn chats_with_config(path: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(crate::support::imsg_bridge_bin())
        .arg("--config")
        .arg(path)
        .arg("chats")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file holding `text` is refused with exit 2 and one line; the line.
fn refused_in_one_line(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json5");
    std::fs::write(&path, text).unwrap();
    let (code, stderr) = chats_with_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_config_nested_a_hundred_thousand_levels_deep_is_one_sentence_and_exit_two() {
    let stderr = refused_in_one_line(&format!("{{ a: {} }}", "[".repeat(100_000)));
    assert!(
        stderr.contains("nest deeper than 64 levels") && stderr.contains("line 1"),
        "{stderr}"
    );
}

#[test]
fn an_error_that_quotes_its_cause_does_not_say_it_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = chats_with_config(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.matches("Is a directory").count(), 1, "{stderr}");
}

#[test]
fn a_control_character_inside_a_string_is_named_with_its_line_and_column() {
    let stderr = refused_in_one_line("{\n  bridge: {\n    agentId: \"ma\u{1}in\",\n  },\n}\n");
    assert!(
        stderr.contains("line 3 column 17") && stderr.contains("control character U+0001 inside a string"),
        "{stderr}"
    );
    assert!(!stderr.contains("ends inside"), "{stderr}");
}

//! Behaviour of the whole loader, from json5 text to `Config`, one table per rule.

use std::path::{Path, PathBuf};

use super::*;
use crate::util::expand_tilde;

mod rules;

fn env() -> Env {
    Env::default()
}

fn config(text: &str) -> Config {
    parse(text, None, &env()).unwrap_or_else(|e| panic!("{text}\n{e}"))
}

fn error(text: &str) -> ConfigError {
    match parse(text, None, &env()) {
        Ok(config) => panic!("accepted: {text}\n{config:?}"),
        Err(e) => e,
    }
}

fn account<'a>(config: &'a Config, id: &str) -> &'a Account {
    config.account(id).unwrap_or_else(|| panic!("no account {id}"))
}

#[test]
fn an_unknown_key_names_its_full_path_and_the_closest_valid_key() {
    let cases = [
        (
            "{channels:{imessage:{dmPoliccy:'open'}}}",
            "channels.imessage.dmPoliccy",
            Some("dmPolicy"),
        ),
        (
            "{channels:{imessage:{accounts:{bot:{dmPoliccy:'open'}}}}}",
            "channels.imessage.accounts.bot.dmPoliccy",
            Some("dmPolicy"),
        ),
        (
            "{channels:{imessage:{ssh:{host:'mac', identityFiles:[]}}}}",
            "channels.imessage.ssh.identityFiles",
            Some("identityFile"),
        ),
        (
            "{channels:{imessage:{accounts:{bot:{ssh:{strictHostKeyCheck:'no'}}}}}}",
            "channels.imessage.accounts.bot.ssh.strictHostKeyCheck",
            Some("strictHostKeyChecking"),
        ),
        ("{bridge:{stateDirectory:'/x'}}", "bridge.stateDirectory", None),
        ("{bridge:{statedir:'/x'}}", "bridge.statedir", Some("stateDir")),
        (
            "{bridge:{replay:{maxRow:3}}}",
            "bridge.replay.maxRow",
            Some("maxRows"),
        ),
        (
            "{bridge:{agent:{kind:'webhook', url:'http://x', header:{}}}}",
            "bridge.agent.header",
            Some("headers"),
        ),
    ];
    for (text, want_path, want_suggestion) in cases {
        let err = error(text);
        let ConfigError::UnknownKey { path, suggestion, .. } = &err else {
            panic!("{text}: {err:?}");
        };
        assert_eq!(path, want_path, "{text}");
        assert_eq!(suggestion.as_deref(), want_suggestion, "{text}");
        let message = err.to_string();
        assert!(message.contains(want_path), "{message}");
        if let Some(s) = want_suggestion {
            assert!(message.ends_with(&format!("did you mean \"{s}\"?")), "{message}");
        }
    }
}

#[test]
fn unknown_keys_outside_the_strict_sections_are_ignored() {
    let text = "{
      messages: {responsePrefix: '[bot]', tts: {enabled: true}, groupChat: {other: 1}},
      agents: {defaults: {model: 'x'}, list: [{id: 'main', workspace: '/w'}]},
      commands: {native: true}, session: {reset: {}},
      gateway: {port: 1}, channels: {telegram: {botToken: 'x'}, imessage: {}},
    }";
    let config = config(text);
    assert_eq!(config.messages.response_prefix.as_deref(), Some("[bot]"));
    assert_eq!(config.agents.len(), 1);
}

#[test]
fn a_json5_syntax_error_names_the_file_line_and_column() {
    let origin = Path::new("/home/me/.openclaw/openclaw.json");
    let cases = [
        (
            "{\n  channels: {\n    imessage: { enabled: true true }\n  }\n}",
            3,
            31,
        ),
        ("{ a: 1,\n  b: }", 2, 6),
        ("{\n  a: [1, 2\n", 2, 6),
    ];
    for (text, want_line, want_column) in cases {
        let err = parse(text, Some(origin), &env()).expect_err(text);
        let ConfigError::Syntax { line, column, .. } = &err else {
            panic!("{text}: {err:?}");
        };
        assert_eq!((*line, *column), (want_line, want_column), "{text}: {err}");
        let message = err.to_string();
        assert!(
            message.starts_with("config file /home/me/.openclaw/openclaw.json: json5 syntax error at line"),
            "{message}"
        );
        assert!(
            message.contains(&format!("line {want_line} column {want_column}")),
            "{message}"
        );
    }
    let unclosed = parse("{\n  a: [1, 2\n", None, &env()).expect_err("unclosed");
    assert!(
        unclosed
            .to_string()
            .ends_with("the file ends inside the array that starts here"),
        "{unclosed}"
    );
}

#[test]
fn json5_conveniences_and_blank_files_are_accepted() {
    let text = "// comment\n{channels: {imessage: {cliPath: '/usr/bin/imsg', /* c */ region: \"DE\",},},}";
    assert_eq!(config(text).accounts[0].region, "DE");
    assert_eq!(config("  \n").accounts.len(), 1);
    assert_eq!(config("\u{feff}{}").accounts[0].id, "default");
}

#[test]
fn root_policies_inherit_into_accounts_that_do_not_set_them() {
    let text = "{channels: {imessage: {
      dmPolicy: 'allowlist', groupPolicy: 'open', allowFrom: ['+15550001111'],
      accounts: {
        plain: {},
        own: {dmPolicy: 'pairing', groupPolicy: 'disabled'},
        half: {groupPolicy: 'allowlist'},
      },
    }}}";
    let config = config(text);
    let cases = [
        ("plain", DmPolicy::Allowlist, GroupPolicy::Open),
        ("own", DmPolicy::Pairing, GroupPolicy::Disabled),
        ("half", DmPolicy::Allowlist, GroupPolicy::Allowlist),
    ];
    for (id, dm, group) in cases {
        let account = account(&config, id);
        assert_eq!((account.dm_policy, account.group_policy), (dm, group), "{id}");
    }
}

#[test]
fn defaults_apply_after_the_merge() {
    let config = config("{channels: {imessage: {accounts: {a: {}}}}}");
    let a = account(&config, "a");
    assert_eq!(
        (a.dm_policy, a.group_policy),
        (DmPolicy::Pairing, GroupPolicy::Allowlist)
    );
    assert_eq!(a.cli_path_raw, "imsg");
    assert_eq!(a.cli_path, PathBuf::from("imsg"));
    assert_eq!(
        (a.media_max_mb, a.probe_timeout_ms, a.text_chunk_limit),
        (16, 10_000, 4000)
    );
    assert_eq!((a.region.as_str(), a.service), ("US", Service::Auto));
    assert_eq!(a.group_history_limit, 50);
    assert_eq!(a.transport, TransportKind::Auto);
    assert!(a.config_writes && a.health_monitor_enabled && !a.include_attachments);
    assert_eq!(a.markdown_tables, MarkdownTables::Code);
    assert_eq!(a.attachment_roots, vec![DEFAULT_ATTACHMENT_ROOT]);
}

#[test]
fn the_merge_is_shallow_account_over_root() {
    let text = "{channels: {imessage: {
      allowFrom: ['+15550001111'], groups: {'*': {requireMention: true}}, region: 'DE', mediaMaxMb: 8,
      accounts: {bot: {allowFrom: ['a@b.c'], groups: {'42': {requireMention: false}}}},
    }}}";
    let config = config(text);
    let bot = account(&config, "bot");
    assert_eq!(bot.allow_from, vec!["a@b.c"], "arrays are replaced, not merged");
    assert_eq!(
        bot.groups.keys().collect::<Vec<_>>(),
        vec!["42"],
        "objects are replaced"
    );
    assert_eq!(
        (bot.region.as_str(), bot.media_max_mb),
        ("DE", 8),
        "unset keys come from the root"
    );
}

#[test]
fn account_ids_and_the_default_account_follow_the_listing_rules() {
    let cases: [(&str, &[&str], &str); 8] = [
        ("{}", &["default"], "default"),
        (
            "{channels: {imessage: {cliPath: 'imsg'}}}",
            &["default"],
            "default",
        ),
        (
            "{channels: {imessage: {accounts: {zed: {}, alpha: {}}}}}",
            &["alpha", "zed"],
            "alpha",
        ),
        (
            "{channels: {imessage: {accounts: {zed: {}, default: {}}}}}",
            &["default", "zed"],
            "default",
        ),
        (
            "{channels: {imessage: {defaultAccount: 'Zed', accounts: {zed: {}, default: {}}}}}",
            &["default", "zed"],
            "zed",
        ),
        (
            "{channels: {imessage: {accounts: {'My Bot': {}, Work: {}}}}}",
            &["my-bot", "work"],
            "my-bot",
        ),
        ("{channels: {imessage: {accounts: {'': {}, b: {}}}}}", &["b"], "b"),
        (
            "{channels: {imessage: {defaultAccount: 'default'}}}",
            &["default"],
            "default",
        ),
    ];
    for (text, want_ids, want_default) in cases {
        let config = config(text);
        let ids: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, want_ids, "{text}");
        assert_eq!(config.default_account, want_default, "{text}");
    }
}

#[test]
fn accounts_are_found_by_exact_or_normalised_id() {
    let config = config("{channels: {imessage: {accounts: {'My Bot': {name: ' Bot '}}}}}");
    assert_eq!(account(&config, "my-bot").name.as_deref(), Some("Bot"));
    assert_eq!(
        account(&config, "My Bot").key_path,
        "channels.imessage.accounts.My Bot"
    );
    assert!(config.account("other").is_none());
}

#[test]
fn an_account_is_enabled_unless_it_or_the_root_says_false() {
    let cases = [
        ("{channels: {imessage: {accounts: {a: {}}}}}", true),
        ("{channels: {imessage: {accounts: {a: {enabled: false}}}}}", false),
        (
            "{channels: {imessage: {enabled: false, accounts: {a: {enabled: true}}}}}",
            false,
        ),
        ("{channels: {imessage: {enabled: true, accounts: {a: {}}}}}", true),
    ];
    for (text, want) in cases {
        let config = config(text);
        assert_eq!(account(&config, "a").enabled, want, "{text}");
        assert_eq!(config.enabled_accounts().count(), usize::from(want), "{text}");
    }
}

#[test]
fn allowlist_entries_are_stringified_and_trimmed() {
    let text = "{channels: {imessage: {dmPolicy: 'open', allowFrom: ['*', 15551234567, ' a@b.c ', ''],
                 groupAllowFrom: ['chat_id:42']}}}";
    let a = &config(text).accounts[0];
    assert_eq!(a.allow_from, vec!["*", "15551234567", "a@b.c"]);
    assert_eq!(
        a.group_allow_from.as_deref(),
        Some(&["chat_id:42".to_owned()][..])
    );
    let unset = &config("{}").accounts[0];
    assert_eq!(
        unset.group_allow_from, None,
        "absent stays distinguishable from empty"
    );
}

#[test]
fn cli_path_is_tilde_expanded_on_the_gateway_but_db_path_is_kept_as_written() {
    let text = "{channels: {imessage: {cliPath: '~/bin/imsg-ssh', dbPath: '~/Library/Messages/chat.db',
                 ssh: {identityFile: '~/.ssh/id_ed25519', knownHostsFile: ['~/.ssh/known_hosts', '/etc/kh']}}}}";
    let a = &config(text).accounts[0];
    assert_eq!(a.cli_path_raw, "~/bin/imsg-ssh");
    assert_eq!(a.cli_path, expand_tilde("~/bin/imsg-ssh"));
    assert_eq!(a.db_path.as_deref(), Some("~/Library/Messages/chat.db"));
    let ssh = a.ssh.as_ref().expect("ssh block");
    assert_eq!(ssh.identity_files, vec![expand_tilde("~/.ssh/id_ed25519")]);
    assert_eq!(
        ssh.known_hosts_files,
        vec![expand_tilde("~/.ssh/known_hosts"), PathBuf::from("/etc/kh")]
    );
}

#[test]
fn the_ssh_block_gets_its_defaults() {
    let text =
        "{channels: {imessage: {transport: 'ssh', ssh: {host: 'mac-mini.tailnet-1234.ts.net', user: 'bot',
                 identityPassphraseEnv: 'IMSG_SSH_PASSPHRASE', proxyJump: 'me@bastion'}}}}";
    let a = &config(text).accounts[0];
    let ssh = a.ssh.as_ref().expect("ssh block");
    assert_eq!(a.transport, TransportKind::Ssh);
    assert_eq!(ssh.host.as_deref(), Some("mac-mini.tailnet-1234.ts.net"));
    assert_eq!(ssh.port, None, "left to ~/.ssh/config");
    assert!(ssh.use_agent);
    assert_eq!(
        ssh.strict_host_key_checking, None,
        "left to ~/.ssh/config, else yes"
    );
    assert_eq!(
        (
            ssh.connect_timeout_ms,
            ssh.keepalive_interval_ms,
            ssh.keepalive_max,
            ssh.sftp_request_timeout_ms
        ),
        (10_000, 15_000, 3, 60_000)
    );
    assert_eq!(
        ssh.identity_passphrase_env.as_deref(),
        Some("IMSG_SSH_PASSPHRASE")
    );
}

#[test]
fn connection_sharing_persists_a_minute_unless_set_and_zero_turns_it_off() {
    let with = |ssh: &str| {
        format!("{{channels: {{imessage: {{transport: 'ssh', ssh: {{host: 'mac', user: 'bot'{ssh}}}}}}}}}")
    };
    let default = config(&with("")).accounts[0].ssh.clone().expect("ssh block");
    assert_eq!(default.control_persist_ms, 60_000);
    let off = config(&with(", controlPersistMs: 0")).accounts[0]
        .ssh
        .clone()
        .expect("ssh block");
    assert_eq!(off.control_persist_ms, 0);
    let err = error(&with(", controlPersistMs: -1")).to_string();
    assert!(err.contains("controlPersistMs"), "{err}");
}

#[test]
fn accounts_that_reach_the_same_backend_are_warned_about() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "{channels: {imessage: {accounts: {a: {cliPath: '/usr/bin/imsg'}, b: {cliPath: '/usr/bin/imsg'}}}}}",
            &[
                "accounts \"a\" and \"b\" reach the same backend (cliPath /usr/bin/imsg, dbPath ~/Library/Messages/chat.db)",
            ],
        ),
        (
            "{channels: {imessage: {accounts: {a: {}, b: {dbPath: '~/Library/Messages/chat.db'}}}}}",
            &["accounts \"a\" and \"b\" reach the same backend"],
        ),
        (
            "{channels: {imessage: {accounts: {a: {}, b: {dbPath: '/Users/bot/chat.db'}}}}}",
            &[],
        ),
        (
            "{channels: {imessage: {accounts: {a: {}, b: {enabled: false}}}}}",
            &[],
        ),
        (
            "{channels: {imessage: {ssh: {host: 'Mac', user: 'bot'}, accounts: {a: {}, b: {ssh: {host: 'mac', user: 'bot'}}}}}}",
            &["accounts \"a\" and \"b\" reach the same backend (ssh bot@mac, dbPath"],
        ),
        (
            "{channels: {imessage: {accounts: {a: {ssh: {host: 'mac', port: 22}}, b: {ssh: {host: 'mac', port: 2222}}}}}}",
            &[],
        ),
    ];
    for (text, want) in cases {
        let warnings = config(text).warnings;
        assert_eq!(warnings.len(), want.len(), "{text}: {warnings:?}");
        for (warning, fragment) in warnings.iter().zip(want.iter()) {
            assert!(warning.contains(fragment), "{text}: {warning}");
        }
    }
}

#[test]
fn disabling_host_key_checks_is_a_warning_not_an_error() {
    let config = config(
        "{channels: {imessage: {accounts: {bot: {ssh: {host: 'mac', strictHostKeyChecking: 'no'}}}}}}",
    );
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("channels.imessage.accounts.bot.ssh.strictHostKeyChecking is \"no\""),
        "{}",
        config.warnings[0]
    );
}

#[test]
fn the_state_dir_comes_from_the_environment_then_the_file_then_the_default() {
    let cases = [
        (None, "{}", expand_tilde("~/.imsg-bridge")),
        (None, "{bridge: {stateDir: '~/state'}}", expand_tilde("~/state")),
        (
            Some("/var/lib/imsg"),
            "{bridge: {stateDir: '~/state'}}",
            PathBuf::from("/var/lib/imsg"),
        ),
        (Some("~/env-state"), "{}", expand_tilde("~/env-state")),
    ];
    for (override_dir, text, want) in cases {
        let env = Env {
            state_dir: override_dir.map(str::to_owned),
            ..Env::default()
        };
        let config = parse(text, None, &env).expect(text);
        assert_eq!(config.bridge.state_dir, want, "{override_dir:?} {text}");
    }
}

#[test]
fn the_bridge_section_has_defaults_and_three_agent_kinds() {
    let plain = config("{}").bridge;
    assert_eq!(plain.agent_id, "main");
    assert_eq!(plain.agent, AgentSink::Stdout);
    assert_eq!(plain.http, None);
    assert_eq!((plain.replay.max_rows, plain.replay.max_age_minutes), (500, 120));

    let exec = config("{bridge: {agent: {kind: 'exec', command: ['python3', 'agent.py']}}}").bridge;
    assert_eq!(
        exec.agent,
        AgentSink::Exec {
            command: vec!["python3".into(), "agent.py".into()]
        }
    );

    let text = "{bridge: {agent: {kind: 'webhook', url: 'https://agent.example/hook', headers: {Authorization: 'Bearer s3cret'}},
                 http: {listen: '127.0.0.1:7777'}}}";
    let hook = config(text).bridge;
    let AgentSink::Webhook { url, timeout_ms, .. } = &hook.agent else {
        panic!("{:?}", hook.agent);
    };
    assert_eq!(
        (url.as_str(), *timeout_ms),
        ("https://agent.example/hook", 60_000)
    );
    assert!(
        !format!("{hook:?}").contains("s3cret"),
        "header values never reach Debug output"
    );
    let http = hook.http.expect("http");
    assert_eq!(http.listen.to_string(), "127.0.0.1:7777");
    assert_eq!(http.token_env, "IMSG_BRIDGE_TOKEN");
}

#[test]
fn lenient_sections_feed_prefixes_history_agents_and_sessions() {
    let text = "{
      messages: {responsePrefix: 'auto', groupChat: {mentionPatterns: [], historyLimit: 20},
                 inbound: {debounceMs: 500, byChannel: {imessage: 1200.7}}},
      agents: {list: [{id: 'helper'}, {id: 'Ops', default: true, identity: {name: ' Otto '}, groupChat: {mentionPatterns: ['otto']}}]},
      commands: {config: true},
      session: {dmScope: 'per-channel-peer', mainKey: 'home'},
      channels: {imessage: {accounts: {a: {}, b: {responsePrefix: '[b]', historyLimit: 0}}}},
    }";
    let config = config(text);
    assert_eq!(
        config.messages.mention_patterns,
        Some(vec![]),
        "present-but-empty is kept"
    );
    assert_eq!(config.messages.debounce_ms(), 1200);
    assert_eq!(config.default_agent_id(), "ops");
    assert_eq!(config.agents[1].identity_name.as_deref(), Some("Otto"));
    assert!(config.commands_config);
    assert_eq!(config.session.dm_scope, DmScope::PerChannelPeer);
    assert_eq!(config.session.main_key, "home");
    let (a, b) = (account(&config, "a"), account(&config, "b"));
    assert_eq!(
        a.response_prefix.as_deref(),
        Some("auto"),
        "falls back to messages.responsePrefix"
    );
    assert_eq!(b.response_prefix.as_deref(), Some("[b]"));
    assert_eq!((a.history_limit, a.group_history_limit), (None, 20));
    assert_eq!((b.history_limit, b.group_history_limit), (Some(0), 0));
}

#[test]
fn the_default_agent_is_the_marked_one_then_the_first_then_bridge_agent_id() {
    let cases = [
        ("{agents: {list: [{id: 'a'}, {id: 'b', default: true}]}}", "b"),
        ("{agents: {list: [{id: 'a'}, {id: 'b'}]}}", "a"),
        ("{bridge: {agentId: 'Worker'}}", "worker"),
        ("{}", "main"),
    ];
    for (text, want) in cases {
        assert_eq!(config(text).default_agent_id(), want, "{text}");
    }
}

#[test]
fn attachment_roots_union_account_root_and_default() {
    let text = "{channels: {imessage: {attachmentRoots: ['/srv/att/'], remoteAttachmentRoots: ['/Volumes/x'],
                 accounts: {a: {attachmentRoots: ['/a']}, b: {}}}}}";
    let config = config(text);
    let a = account(&config, "a");
    assert_eq!(
        a.attachment_roots,
        vec!["/a", "/srv/att", DEFAULT_ATTACHMENT_ROOT]
    );
    assert_eq!(
        a.remote_attachment_roots,
        vec!["/Volumes/x", "/a", "/srv/att", DEFAULT_ATTACHMENT_ROOT]
    );
    let b = account(&config, "b");
    assert_eq!(b.attachment_roots, vec!["/srv/att", DEFAULT_ATTACHMENT_ROOT]);
}

#[test]
fn markdown_block_tables_mean_code() {
    let a = &config("{channels: {imessage: {markdown: {tables: 'block'}}}}").accounts[0];
    assert_eq!(a.markdown_tables, MarkdownTables::Code);
}

#[test]
fn probe_timeout_is_a_valid_key() {
    assert_eq!(
        config("{channels: {imessage: {probeTimeoutMs: 2500}}}").accounts[0].probe_timeout_ms,
        2500
    );
}

#[test]
fn the_file_is_found_by_flag_then_variable_then_default_locations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    let flag = dir.path().join("flag.json5");
    let var = dir.path().join("var.json5");
    let openclaw = home.join(".openclaw/openclaw.json");
    let ours = home.join(".config/imsg-bridge/config.json5");
    write(&flag, "{channels: {imessage: {region: 'FLAG'}}}");
    write(&var, "{channels: {imessage: {region: 'VAR'}}}");
    let env = |config: Option<&Path>| Env {
        config: config.map(|p| p.as_os_str().to_owned()),
        state_dir: None,
        home: Some(home.clone()),
    };
    let region = |config: &Config| config.accounts[0].region.clone();

    let empty = load_with(None, &env(None)).expect("no default file");
    assert_eq!((empty.path.as_deref(), empty.accounts.len()), (None, 1));
    write(&ours, "{channels: {imessage: {region: 'OURS'}}}");
    assert_eq!(region(&load_with(None, &env(None)).expect("ours")), "OURS");
    write(&openclaw, "{channels: {imessage: {region: 'OPENCLAW'}}}");
    let found = load_with(None, &env(None)).expect("openclaw");
    assert_eq!(
        (region(&found).as_str(), found.path.as_deref()),
        ("OPENCLAW", Some(openclaw.as_path()))
    );
    assert_eq!(region(&load_with(None, &env(Some(&var))).expect("var")), "VAR");
    assert_eq!(
        region(&load_with(Some(&flag), &env(Some(&var))).expect("flag")),
        "FLAG"
    );

    let missing = dir.path().join("missing.json5");
    let err = load_with(Some(&missing), &env(None)).expect_err("missing flag file");
    assert!(
        matches!(err, ConfigError::Missing { via: "--config", .. }),
        "{err:?}"
    );
    let err = load_with(None, &env(Some(&missing))).expect_err("missing variable file");
    assert!(err.to_string().contains("$IMSG_BRIDGE_CONFIG"), "{err}");
}

#[test]
fn every_complete_example_in_the_documentation_loads() {
    let doc = include_str!("../../../docs/configuration.md");
    let blocks: Vec<&str> = doc
        .split("```json5\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.starts_with('{'))
        .collect();
    assert!(blocks.len() >= 2, "found {} examples", blocks.len());
    for block in blocks {
        let config = config(block);
        assert!(config.warnings.is_empty(), "{block}\n{:?}", config.warnings);
    }
}

#[test]
fn outbound_media_roots_are_absolute_tilde_expanded_and_replace_the_defaults_when_set() {
    assert_eq!(
        config("{}").bridge.outbound_media_roots,
        None,
        "unset: the defaults"
    );
    let set = config("{bridge: {outboundMediaRoots: ['~/outbox', ' /srv/media/ ', '/srv/a/../b']}}").bridge;
    assert_eq!(
        set.outbound_media_roots,
        Some(vec![
            expand_tilde("~/outbox"),
            PathBuf::from("/srv/media"),
            PathBuf::from("/srv/b")
        ])
    );
    let none = config("{bridge: {outboundMediaRoots: []}}").bridge;
    assert_eq!(
        none.outbound_media_roots,
        Some(vec![]),
        "empty: agents send no files"
    );
    let cases = [
        (
            "{bridge: {outboundMediaRoots: ['media']}}",
            "bridge.outboundMediaRoots[0]: \"media\" is a relative path; roots must be absolute \
             (\"/srv/agent/outbox\") or start with ~/",
        ),
        (
            "{bridge: {outboundMediaRoots: ['/ok', '  ']}}",
            "bridge.outboundMediaRoots[1]: \"  \" is a relative path; roots must be absolute \
             (\"/srv/agent/outbox\") or start with ~/",
        ),
    ];
    for (text, want) in cases {
        let got = error(text).to_string();
        assert!(got.ends_with(want), "{text}\n{got}");
    }
}

//! The validation rules, one table row each: key path, bad value, what is allowed.

use super::*;

#[test]
fn every_validation_rule_names_the_key_path_the_value_and_what_is_allowed() {
    let cases = [
        (
            "{channels: {imessage: {dmPolicy: 'opne'}}}",
            "channels.imessage.dmPolicy",
            "\"opne\" is not allowed; expected one of \"pairing\", \"allowlist\", \"open\", \"disabled\" (did you mean \"open\"?)",
        ),
        (
            "{channels: {imessage: {accounts: {bot: {groupPolicy: 'closed'}}}}}",
            "channels.imessage.accounts.bot.groupPolicy",
            "expected one of \"open\", \"allowlist\", \"disabled\"",
        ),
        (
            "{channels: {imessage: {service: 'rcs'}}}",
            "channels.imessage.service",
            "\"rcs\" is not allowed",
        ),
        (
            "{channels: {imessage: {contextVisibility: 'none'}}}",
            "channels.imessage.contextVisibility",
            "\"allowlist_quote\"",
        ),
        (
            "{channels: {imessage: {chunkMode: 'words'}}}",
            "channels.imessage.chunkMode",
            "\"length\", \"newline\"",
        ),
        (
            "{channels: {imessage: {markdown: {tables: 'html'}}}}",
            "channels.imessage.markdown.tables",
            "\"off\", \"bullets\", \"code\"",
        ),
        (
            "{channels: {imessage: {transport: 'telnet'}}}",
            "channels.imessage.transport",
            "\"auto\", \"ssh\", \"process\"",
        ),
        (
            "{channels: {imessage: {ssh: {strictHostKeyChecking: 'maybe'}}}}",
            "channels.imessage.ssh.strictHostKeyChecking",
            "\"yes\", \"accept-new\", \"no\"",
        ),
        (
            "{session: {dmScope: 'per-user'}}",
            "session.dmScope",
            "\"per-peer\"",
        ),
        (
            "{channels: {imessage: {dmPolicy: 'open'}}}",
            "channels.imessage",
            "dmPolicy \"open\" requires \"*\" in allowFrom; add \"*\" to channels.imessage.allowFrom",
        ),
        (
            "{channels: {imessage: {dmPolicy: 'open', allowFrom: ['+15550001111']}}}",
            "channels.imessage",
            "requires \"*\"",
        ),
        (
            "{channels: {imessage: {dmPolicy: 'allowlist'}}}",
            "channels.imessage",
            "dmPolicy \"allowlist\" requires a non-empty allowFrom",
        ),
        (
            "{channels: {imessage: {dmPolicy: 'allowlist', accounts: {bot: {allowFrom: []}}}}}",
            "channels.imessage.accounts.bot",
            "channels.imessage.accounts.bot.allowFrom or channels.imessage.allowFrom",
        ),
        (
            "{channels: {imessage: {accounts: {bot: {dmPolicy: 'open', allowFrom: ['+1555']}}}}}",
            "channels.imessage.accounts.bot",
            "requires \"*\"",
        ),
        (
            "{channels: {imessage: {cliPath: 'imsg; rm -rf ~'}}}",
            "channels.imessage.cliPath",
            "is not a safe executable",
        ),
        (
            "{channels: {imessage: {accounts: {b: {ssh: {remoteCliPath: '$(x)'}}}}}}",
            "channels.imessage.accounts.b.ssh.remoteCliPath",
            "is not a safe executable",
        ),
        (
            "{channels: {imessage: {remoteHost: 'mac:22'}}}",
            "channels.imessage.remoteHost",
            "\"mac:22\" is not valid: expected SSH host or user@host (no spaces/options)",
        ),
        (
            "{channels: {imessage: {accounts: {b: {remoteHost: '-oProxyCommand=x'}}}}}",
            "channels.imessage.accounts.b.remoteHost",
            "expected SSH host or user@host (no spaces/options)",
        ),
        (
            "{channels: {imessage: {attachmentRoots: ['Library/Messages']}}}",
            "channels.imessage.attachmentRoots[0]",
            "expected absolute path root",
        ),
        (
            "{channels: {imessage: {remoteAttachmentRoots: ['/ok', '/Users/bot*/x']}}}",
            "channels.imessage.remoteAttachmentRoots[1]",
            "expected absolute path root",
        ),
        (
            "{channels: {imessage: {mediaMaxMb: 0}}}",
            "channels.imessage.mediaMaxMb",
            "expected a positive integer, got 0",
        ),
        (
            "{channels: {imessage: {textChunkLimit: -5}}}",
            "channels.imessage.textChunkLimit",
            "expected a positive integer, got -5",
        ),
        (
            "{channels: {imessage: {probeTimeoutMs: 0}}}",
            "channels.imessage.probeTimeoutMs",
            "expected a positive integer",
        ),
        (
            "{channels: {imessage: {historyLimit: -1}}}",
            "channels.imessage.historyLimit",
            "expected an integer >= 0, got -1",
        ),
        (
            "{channels: {imessage: {dmHistoryLimit: -2}}}",
            "channels.imessage.dmHistoryLimit",
            "expected an integer >= 0",
        ),
        (
            "{channels: {imessage: {dms: {'+1555': {historyLimit: -3}}}}}",
            "channels.imessage.dms.+1555.historyLimit",
            "expected an integer >= 0",
        ),
        (
            "{messages: {groupChat: {historyLimit: -1}}}",
            "messages.groupChat.historyLimit",
            "expected an integer >= 0",
        ),
        (
            "{channels: {imessage: {mediaMaxMb: 1.5}}}",
            "channels.imessage.mediaMaxMb",
            "expected an integer",
        ),
        (
            "{channels: {imessage: {defaultAccount: 'nope', accounts: {a: {}, b: {}}}}}",
            "channels.imessage.defaultAccount",
            "\"nope\" does not name an account; expected one of \"a\", \"b\"",
        ),
        (
            "{channels: {imessage: {allowFrom: ['+15550001111', 'John Doe']}}}",
            "channels.imessage.allowFrom[1]",
            "Invalid handle: John Doe",
        ),
        (
            "{channels: {imessage: {groupAllowFrom: ['chat_id:abc']}}}",
            "channels.imessage.groupAllowFrom[0]",
            "Invalid chat_id: chat_id:abc",
        ),
        (
            "{channels: {imessage: {allowFrom: ['chat_guid:']}}}",
            "channels.imessage.allowFrom[0]",
            "Invalid chat_guid entry",
        ),
        (
            "{channels: {imessage: {allowFrom: ['chat_identifier:']}}}",
            "channels.imessage.allowFrom[0]",
            "Invalid chat_identifier entry",
        ),
        (
            "{channels: {imessage: {accounts: {bot: {accounts: {}}}}}}",
            "channels.imessage.accounts.bot.accounts",
            "only allowed directly under channels.imessage",
        ),
        (
            "{channels: {imessage: {accounts: {Bot: {}, bot: {}}}}}",
            "channels.imessage.accounts",
            "keys \"Bot\" and \"bot\" both name account \"bot\"",
        ),
        (
            "{channels: {imessage: {accounts: {bot: 3}}}}",
            "channels.imessage.accounts.bot",
            "expected an object",
        ),
        (
            "{channels: {imessage: {ssh: {port: 0}}}}",
            "channels.imessage.ssh.port",
            "expected a port from 1 to 65535, got 0",
        ),
        (
            "{channels: {imessage: {ssh: {host: 'bot@mac'}}}}",
            "channels.imessage.ssh.host",
            "put the user in ssh.user",
        ),
        (
            "{channels: {imessage: {ssh: {identityFile: ['']}}}}",
            "channels.imessage.ssh.identityFile[0]",
            "expected a path",
        ),
        (
            "{channels: {imessage: {ssh: {identityPassphraseEnv: 'hunter2 pass'}}}}",
            "channels.imessage.ssh.identityPassphraseEnv",
            "environment variable name",
        ),
        (
            "{channels: {imessage: {ssh: {keepaliveMax: 0}}}}",
            "channels.imessage.ssh.keepaliveMax",
            "expected a positive integer",
        ),
        ("{channels: 'imessage'}", "channels", "expected an object"),
        ("[1]", "(top level)", "expected an object"),
        (
            "{bridge: {agent: {kind: 'pipe'}}}",
            "bridge.agent.kind",
            "expected one of \"stdout\", \"exec\", \"webhook\"",
        ),
        (
            "{bridge: {agent: {command: ['x']}}}",
            "bridge.agent.kind",
            "is required",
        ),
        (
            "{bridge: {agent: {kind: 'exec', command: []}}}",
            "bridge.agent.command",
            "expected a non-empty array",
        ),
        (
            "{bridge: {agent: {kind: 'exec'}}}",
            "bridge.agent.command",
            "expected a non-empty array",
        ),
        (
            "{bridge: {agent: {kind: 'exec', command: ['a'], url: 'http://x'}}}",
            "bridge.agent.url",
            "is only used with kind \"webhook\" or \"nats\", not \"exec\"",
        ),
        (
            "{bridge: {agent: {kind: 'stdout', command: ['a']}}}",
            "bridge.agent.command",
            "is only used with kind \"exec\"",
        ),
        (
            "{bridge: {agent: {kind: 'webhook', url: 'ftp://x'}}}",
            "bridge.agent.url",
            "expected an http:// or https:// URL",
        ),
        (
            "{bridge: {agent: {kind: 'webhook', url: 'http://x', timeoutMs: 0}}}",
            "bridge.agent.timeoutMs",
            "expected a positive integer",
        ),
        (
            "{bridge: {http: {listen: 'localhost:7777'}}}",
            "bridge.http.listen",
            "is not a socket address; expected IP:port",
        ),
        ("{bridge: {http: {}}}", "bridge.http.listen", "is required"),
        (
            "{bridge: {http: {listen: '127.0.0.1:1', tokenEnv: 'my token'}}}",
            "bridge.http.tokenEnv",
            "environment variable name",
        ),
        (
            "{bridge: {replay: {maxRows: -1}}}",
            "bridge.replay.maxRows",
            "expected an integer >= 0",
        ),
        (
            "{bridge: {agentId: '!!!'}}",
            "bridge.agentId",
            "is not a usable agent id",
        ),
        (
            "{agents: {list: [{default: true}]}}",
            "agents.list[0].id",
            "is required",
        ),
        (
            "{messages: {inbound: {debounceMs: -1}}}",
            "messages.inbound.debounceMs",
            "expected a number >= 0",
        ),
        (
            "{commands: {config: 'yes'}}",
            "commands.config",
            "expected a boolean",
        ),
    ];
    for (text, want_path, want_fragment) in cases {
        let err = error(text);
        assert_eq!(err.key_path(), Some(want_path), "{text}: {err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("config: {want_path}: ")),
            "{text}: {message}"
        );
        assert!(message.contains(want_fragment), "{text}: {message}");
    }
}

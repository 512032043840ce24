//! Checks of single values: enums, integer ranges, executables, SSH host tokens, path roots,
//! allowlist entries. Each returns the cleaned value or an error naming the key path, the bad value
//! and what is allowed.

use super::error::ConfigError;
use super::raw::Entry;
use super::suggest::closest;
use super::types::ConfigEnum;

/// Parse an enum spelling; the error lists the allowed spellings and the closest one.
pub fn enum_value<E: ConfigEnum>(value: Option<&str>, path: &str) -> Result<Option<E>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    if let Some(parsed) = E::parse(text) {
        return Ok(Some(parsed));
    }
    let allowed: Vec<String> = E::ALL.iter().map(|v| format!("\"{}\"", v.as_str())).collect();
    let hint = closest(text, E::ALL.iter().map(|v| v.as_str()))
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    Err(ConfigError::invalid(
        path,
        format!(
            "\"{text}\" is not allowed; expected one of {}{hint}",
            allowed.join(", ")
        ),
    ))
}

/// An integer that must be at least 1.
pub fn positive(value: Option<i64>, path: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(u64::try_from(n).ok()),
        Some(n) => Err(ConfigError::invalid(
            path,
            format!("expected a positive integer, got {n}"),
        )),
    }
}

/// An integer that must be at least 0.
pub fn non_negative(value: Option<i64>, path: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| ConfigError::invalid(path, format!("expected an integer >= 0, got {n}"))),
    }
}

/// A count that must fit in 32 bits (history limits, keepalive counts).
pub fn small(value: Option<u64>, path: &str) -> Result<Option<u32>, ConfigError> {
    value
        .map(|n| {
            u32::try_from(n)
                .map_err(|_| ConfigError::invalid(path, format!("{n} is too large (at most {})", u32::MAX)))
        })
        .transpose()
}

/// A TCP port, 1 to 65535.
pub fn port(value: Option<i64>, path: &str) -> Result<Option<u16>, ConfigError> {
    value
        .map(|n| {
            u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
                ConfigError::invalid(path, format!("expected a port from 1 to 65535, got {n}"))
            })
        })
        .transpose()
}

/// Trim; blank means unset.
pub fn trimmed(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The "safe executable" rule of `cliPath` (docs/configuration.md). Returns the trimmed value.
pub fn executable(raw: &str, path: &str) -> Result<String, ConfigError> {
    let value = raw.trim();
    let is_path_like = value.starts_with('.')
        || value.starts_with('~')
        || value.contains('/')
        || value.contains('\\')
        || is_drive_path(value);
    let safe = !value.is_empty()
        && !value.chars().any(|c| {
            matches!(
                c,
                '\0' | '\r' | '\n' | ';' | '&' | '|' | '`' | '$' | '<' | '>' | '"' | '\''
            )
        })
        && (is_path_like
            || (!value.starts_with('-')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))));
    if safe {
        Ok(value.to_owned())
    } else {
        Err(ConfigError::invalid(
            path,
            format!(
                "{raw:?} is not a safe executable; expected a path or a bare command name, without \
                 shell characters (; & | ` $ < >), quotes or line breaks"
            ),
        ))
    }
}

fn is_drive_path(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && matches!(bytes[2], b'/' | b'\\')
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.chars().all(is_token_char)
}

/// The host part of a `remoteHost` (docs/configuration.md): a name, or a bracketed IPv6 literal (a `:` anywhere else is a port).
fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.starts_with('-') {
        return false;
    }
    if host.contains(':') {
        return host.len() > 2
            && host.starts_with('[')
            && host.ends_with(']')
            && host[1..host.len() - 1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'));
    }
    host.chars().all(is_token_char)
}

/// `remoteHost`: `host` or `user@host` under the rules of docs/configuration.md.
///
/// Upstream ignores an unsafe value with a verbose log; we refuse it, because silently falling back
/// to local attachment paths is what made remote setups fail mysteriously.
pub fn remote_host(raw: Option<&str>, path: &str) -> Result<Option<String>, ConfigError> {
    let Some(value) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let error = || {
        ConfigError::invalid(
            path,
            format!(
                "{value:?} is not valid: expected SSH host or user@host (no spaces/options); \
                 put a port or options in ~/.ssh/config or the ssh block"
            ),
        )
    };
    if value.chars().any(|c| c.is_control() || c.is_whitespace())
        || value.starts_with('-')
        || value.contains('/')
        || value.contains('\\')
    {
        return Err(error());
    }
    let valid = match value.split_once('@') {
        Some((user, host)) => valid_user(user) && valid_host(host),
        None => valid_host(value),
    };
    if valid {
        Ok(Some(value.to_owned()))
    } else {
        Err(error())
    }
}

/// `ssh.host`: a host name or ssh_config alias, or an IPv6 literal with or without brackets.
pub fn ssh_host(raw: Option<&str>, path: &str) -> Result<Option<String>, ConfigError> {
    let Some(value) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    // The port is a separate key here, so a bare IPv6 literal is unambiguous.
    let bare_ipv6 = value.matches(':').count() >= 2
        && value
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'));
    if valid_host(value) || bare_ipv6 {
        return Ok(Some(value.to_owned()));
    }
    let remedy = if value.contains('@') {
        "put the user in ssh.user"
    } else {
        "put the port in ssh.port"
    };
    Err(ConfigError::invalid(
        path,
        format!("{value:?} is not valid: expected a host name, ssh_config alias or IP address; {remedy}"),
    ))
}

/// `ssh.user`.
pub fn ssh_user(raw: Option<&str>, path: &str) -> Result<Option<String>, ConfigError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(user) if valid_user(user) && !user.starts_with('-') => Ok(Some(user.to_owned())),
        Some(user) => Err(ConfigError::invalid(
            path,
            format!("{user:?} is not valid: expected a user name of letters, digits, '.', '_' and '-'"),
        )),
    }
}

/// `ssh.proxyJump`: `[user@]host[:port]`, comma-separated hops, as OpenSSH's `-J`.
pub fn proxy_jump(raw: Option<&str>, path: &str) -> Result<Option<String>, ConfigError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(jump)
            if !jump.starts_with('-')
                && jump
                    .chars()
                    .all(|c| is_token_char(c) || matches!(c, '@' | ':' | ',' | '[' | ']' | '%')) =>
        {
            Ok(Some(jump.to_owned()))
        }
        Some(jump) => Err(ConfigError::invalid(
            path,
            format!("{jump:?} is not valid: expected [user@]host[:port], several separated by commas"),
        )),
    }
}

/// The name of an environment variable (the bridge reads secrets from variables, never the file).
pub fn env_name(raw: Option<&str>, path: &str) -> Result<Option<String>, ConfigError> {
    match raw.map(str::trim) {
        None => Ok(None),
        Some(name)
            if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(Some(name.to_owned()))
        }
        Some(name) => Err(ConfigError::invalid(
            path,
            format!(
                "{name:?} is not an environment variable name; expected letters, digits and '_', \
                 not starting with a digit (the value itself belongs in the environment)"
            ),
        )),
    }
}

/// An attachment root pattern (docs/configuration.md), normalised: `\` → `/`, `.`/`..` and
/// repeated or trailing slashes removed.
pub fn attachment_root(raw: &str, path: &str) -> Result<String, ConfigError> {
    normalize_root(raw).ok_or_else(|| {
        ConfigError::invalid(
            path,
            format!(
                "{raw:?} is not valid: expected absolute path root (\"*\" only as a whole segment, \
                 e.g. \"/Users/*/Library/Messages/Attachments\")"
            ),
        )
    })
}

fn normalize_root(raw: &str) -> Option<String> {
    let value = raw.trim().replace('\\', "/");
    if value.contains('\0') {
        return None;
    }
    let (prefix, rest) = if is_drive_path(&value) {
        value.split_at(2)
    } else {
        ("", value.as_str())
    };
    if !rest.starts_with('/') {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in rest.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s if s.contains('*') && s != "*" => return None,
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return None;
    }
    Some(format!("{prefix}/{}", segments.join("/")))
}

/// Check allowlist entries (`allowFrom`, `groupAllowFrom`) and return them trimmed, blanks dropped.
///
/// The grammar is the setup wizard's (docs/configuration.md) plus docs/differences.md C7: a handle with neither
/// digits nor `@` can never match a sender, so it is an error rather than a silent `"+"`.
pub fn allowlist(entries: &[Entry], path: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(entries.len());
    for (index, Entry(raw)) in entries.iter().enumerate() {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        check_entry(entry).map_err(|message| {
            ConfigError::invalid(
                format!("{path}[{index}]"),
                format!(
                    "{message} (expected a phone number, an email address, \"*\", chat_id:<digits>, \
                     chat_guid:<guid> or chat_identifier:<identifier>)"
                ),
            )
        })?;
        out.push(entry.to_owned());
    }
    Ok(out)
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

fn check_entry(entry: &str) -> Result<(), String> {
    if entry == "*" {
        return Ok(());
    }
    let mut rest = entry;
    while let Some(stripped) = ["imessage:", "sms:", "auto:"]
        .iter()
        .find_map(|p| strip_prefix_ci(rest, p))
    {
        rest = stripped.trim_start();
    }
    let value_after = |prefixes: &[&str]| {
        prefixes
            .iter()
            .find_map(|p| strip_prefix_ci(rest, p))
            .map(str::trim)
    };
    if let Some(id) = value_after(&["chat_id:", "chatid:", "chat:"]) {
        return if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) {
            Ok(())
        } else {
            Err(format!("Invalid chat_id: {entry}"))
        };
    }
    if let Some(guid) = value_after(&["chat_guid:", "chatguid:", "guid:"]) {
        return if guid.is_empty() {
            Err(format!("Invalid chat_guid entry: {entry}"))
        } else {
            Ok(())
        };
    }
    if let Some(ident) = value_after(&["chat_identifier:", "chatidentifier:", "chatident:"]) {
        return if ident.is_empty() {
            Err(format!("Invalid chat_identifier entry: {entry}"))
        } else {
            Ok(())
        };
    }
    let is_email = rest.contains('@') && rest.len() > 1;
    if is_email || rest.chars().any(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("Invalid handle: {entry}"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::types::DmPolicy;
    use super::*;

    fn message(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
        result.expect_err("should be rejected").to_string()
    }

    #[test]
    fn enum_values_name_the_allowed_spellings_and_the_closest() {
        assert_eq!(
            enum_value::<DmPolicy>(Some("open"), "p").expect("ok"),
            Some(DmPolicy::Open)
        );
        assert_eq!(enum_value::<DmPolicy>(None, "p").expect("ok"), None);
        assert_eq!(
            message(enum_value::<DmPolicy>(Some("opne"), "channels.imessage.dmPolicy")),
            "config: channels.imessage.dmPolicy: \"opne\" is not allowed; expected one of \"pairing\", \
             \"allowlist\", \"open\", \"disabled\" (did you mean \"open\"?)"
        );
    }

    #[test]
    fn integer_ranges_are_enforced_with_the_value_in_the_message() {
        assert_eq!(positive(Some(16), "p").expect("ok"), Some(16));
        assert!(message(positive(Some(0), "x.mediaMaxMb")).contains("expected a positive integer, got 0"));
        assert_eq!(non_negative(Some(0), "p").expect("ok"), Some(0));
        assert!(
            message(non_negative(Some(-1), "x.historyLimit")).contains("expected an integer >= 0, got -1")
        );
        assert!(message(small(Some(u64::from(u32::MAX) + 1), "x")).contains("too large"));
        assert_eq!(port(Some(22), "p").expect("ok"), Some(22));
        assert!(message(port(Some(0), "p")).contains("1 to 65535"));
        assert!(message(port(Some(70000), "p")).contains("1 to 65535"));
    }

    #[test]
    fn executables_must_be_paths_or_plain_command_names() {
        let accepted = [
            ("imsg", "imsg"),
            ("  imsg  ", "imsg"),
            ("/usr/local/bin/imsg", "/usr/local/bin/imsg"),
            ("~/bin/imsg-ssh", "~/bin/imsg-ssh"),
            ("./imsg", "./imsg"),
            ("/Users/Me/My Tools/imsg", "/Users/Me/My Tools/imsg"),
            ("C:\\tools\\imsg.exe", "C:\\tools\\imsg.exe"),
            ("imsg+beta_1.2", "imsg+beta_1.2"),
        ];
        for (input, want) in accepted {
            assert_eq!(executable(input, "p").expect(input), want);
        }
        let rejected = [
            "",
            "   ",
            "imsg; rm -rf /",
            "imsg && x",
            "imsg | tee",
            "$(whoami)",
            "`id`",
            "imsg > out",
            "\"imsg\"",
            "'imsg'",
            "imsg\nrm",
            "-oProxyCommand=x",
            "imsg rpc",
        ];
        for input in rejected {
            let text = message(executable(input, "channels.imessage.cliPath"));
            assert!(text.contains("channels.imessage.cliPath: "), "{input}: {text}");
            assert!(text.contains("is not a safe executable"), "{input}: {text}");
        }
    }

    #[test]
    fn remote_host_accepts_host_or_user_at_host_only() {
        let accepted = [
            ("mac", "mac"),
            (
                " bot@mac-mini.tailnet-1234.ts.net ",
                "bot@mac-mini.tailnet-1234.ts.net",
            ),
            ("bob@192.168.1.5", "bob@192.168.1.5"),
            ("[fe80::1]", "[fe80::1]"),
            ("me@[::1]", "me@[::1]"),
        ];
        for (input, want) in accepted {
            assert_eq!(remote_host(Some(input), "p").expect(input).as_deref(), Some(want));
        }
        assert_eq!(remote_host(Some("  "), "p").expect("blank"), None);
        let rejected = [
            "host:22",
            "ssh://mac",
            "-oProxyCommand=x",
            "bob@",
            "@mac",
            "a@b@c",
            "bob smith@mac",
            "mac\tx",
            "mac/path",
            "b!ob@mac",
            "::1",
            "bob@-mac",
        ];
        for input in rejected {
            let text = message(remote_host(Some(input), "channels.imessage.remoteHost"));
            assert!(
                text.contains("expected SSH host or user@host (no spaces/options)"),
                "{input}: {text}"
            );
        }
    }

    #[test]
    fn ssh_host_user_and_jump_have_their_own_rules() {
        assert_eq!(ssh_host(Some("::1"), "p").expect("v6").as_deref(), Some("::1"));
        assert_eq!(
            ssh_host(Some("mac-mini"), "p").expect("alias").as_deref(),
            Some("mac-mini")
        );
        assert!(message(ssh_host(Some("bot@mac"), "p")).contains("ssh.user"));
        assert!(message(ssh_host(Some("mac:22"), "p")).contains("ssh.port"));
        assert!(message(ssh_user(Some("bob smith"), "p")).contains("user name"));
        assert_eq!(
            proxy_jump(Some("me@bastion:2222,other"), "p")
                .expect("jump")
                .as_deref(),
            Some("me@bastion:2222,other")
        );
        assert!(message(proxy_jump(Some("-J x"), "p")).contains("[user@]host[:port]"));
    }

    #[test]
    fn env_names_must_be_variable_names() {
        assert_eq!(
            env_name(Some("IMSG_TOKEN"), "p").expect("ok").as_deref(),
            Some("IMSG_TOKEN")
        );
        for bad in ["", "1X", "MY-VAR", "hunter2 secret"] {
            assert!(
                message(env_name(Some(bad), "p")).contains("environment variable name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn attachment_roots_must_be_absolute_with_whole_segment_wildcards() {
        let accepted = [
            (
                "/Users/*/Library/Messages/Attachments",
                "/Users/*/Library/Messages/Attachments",
            ),
            (
                "/Users/bot/Library/Messages/Attachments/",
                "/Users/bot/Library/Messages/Attachments",
            ),
            ("//Volumes//x/./y/../z", "/Volumes/x/z"),
            ("C:\\Users\\*\\Att", "C:/Users/*/Att"),
        ];
        for (input, want) in accepted {
            assert_eq!(attachment_root(input, "p").expect(input), want);
        }
        for bad in ["Library/Messages", "/", "/Users/bot*/x", "~/Library", "", "/a/\0"] {
            assert!(
                message(attachment_root(bad, "p")).contains("expected absolute path root"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn allowlist_entries_follow_the_wizard_grammar() {
        let entries: Vec<Entry> = [
            "*",
            " +1 (555) 222-3333 ",
            "",
            "Name@Example.com",
            "chat_id:42",
            "CHAT_ID:7",
            "chat:9",
            "imessage:+15551234567",
            "sms:chat_guid:iMessage;+;chat1",
            "guid:x",
            "chatident:foo",
            "tel:5551234",
        ]
        .iter()
        .map(|s| Entry((*s).to_owned()))
        .collect();
        let out = allowlist(&entries, "p").expect("valid");
        assert_eq!(out.len(), entries.len() - 1, "the blank entry is dropped");
        assert_eq!(out[1], "+1 (555) 222-3333", "entries are trimmed");

        let rejected = [
            ("John Doe", "Invalid handle: John Doe"),
            ("sms:", "Invalid handle: sms:"),
            ("chat_id:abc", "Invalid chat_id: chat_id:abc"),
            ("chat_id:", "Invalid chat_id: chat_id:"),
            ("chat_guid:", "Invalid chat_guid entry: chat_guid:"),
            (
                "chat_identifier: ",
                "Invalid chat_identifier entry: chat_identifier:",
            ),
        ];
        for (input, want) in rejected {
            let entries = [Entry("+15550001111".to_owned()), Entry(input.to_owned())];
            let err = allowlist(&entries, "channels.imessage.allowFrom").expect_err(input);
            assert_eq!(err.key_path(), Some("channels.imessage.allowFrom[1]"), "{input}");
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
    }
}

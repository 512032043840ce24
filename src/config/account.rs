//! Accounts (docs/configuration.md): the id list, the default account, the shallow merge
//! `{...root-without-accounts, ...account}`, per-account values with their defaults, and the
//! cross-account warnings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::error::ConfigError;
use super::raw::{RawAccount, RawSsh, typed};
use super::types::{
    Account, BlockStreamingCoalesce, ChunkMode, ContextVisibility, DmConfig, DmPolicy, GroupConfig,
    GroupPolicy, HeartbeatConfig, MarkdownTables, MessagesConfig, Service, SshConfig, StrictHostKeyChecking,
    TransportKind,
};
use super::validate::{self, enum_value, non_negative, positive, small, trimmed};
use crate::util::expand_tilde;

/// The id of the implicit account of a flat config.
pub const DEFAULT_ACCOUNT_ID: &str = "default";
/// Always part of the attachment roots (upstream cannot remove it either).
pub const DEFAULT_ATTACHMENT_ROOT: &str = "/Users/*/Library/Messages/Attachments";
/// imsg's own default, used to see that an unset and an explicit default `dbPath` are one database.
const IMSG_DEFAULT_DB_PATH: &str = "~/Library/Messages/chat.db";
const ROOT_PATH: &str = "channels.imessage";

const DEFAULT_CLI_PATH: &str = "imsg";
const DEFAULT_REGION: &str = "US";
const DEFAULT_MEDIA_MAX_MB: u64 = 16;
const DEFAULT_PROBE_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_TEXT_CHUNK_LIMIT: u64 = 4000;
const DEFAULT_GROUP_HISTORY_LIMIT: u32 = 50;
const DEFAULT_SSH_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// A master outlives its last client by a minute, like a typical `ControlPersist 60`.
const DEFAULT_SSH_CONTROL_PERSIST_MS: u64 = 60_000;
const DEFAULT_SSH_KEEPALIVE_INTERVAL_MS: u64 = 15_000;
const DEFAULT_SSH_KEEPALIVE_MAX: u32 = 3;
const DEFAULT_SFTP_REQUEST_TIMEOUT_MS: u64 = 60_000;

/// Normalise an account id as upstream does (`src/routing/account-id.ts`): trim, lowercase, runs of
/// characters outside `[a-z0-9_-]` become `-`, dashes trimmed, at most 64 characters; blank and
/// JavaScript prototype keys become `default`.
pub fn normalize_account_id(raw: &str) -> String {
    normalize_id(raw).unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned())
}

/// The same canonical form for agent ids; `None` when nothing usable is left.
pub(super) fn normalize_id(raw: &str) -> Option<String> {
    let lower = raw.trim().to_lowercase();
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    // Like /[^a-z0-9_-]+/g → "-": one dash per run of invalid characters.
    let mut out = String::with_capacity(lower.len());
    let mut in_run = false;
    for c in lower.chars() {
        if valid(c) {
            out.push(c);
        } else if !in_run {
            out.push('-');
        }
        in_run = !valid(c);
    }
    let simple = lower.chars().count() <= 64
        && lower.chars().all(valid)
        && lower.starts_with(|c: char| c.is_ascii_alphanumeric());
    let id: String = if simple {
        lower
    } else {
        out.trim_matches('-').chars().take(64).collect()
    };
    let blocked = matches!(id.as_str(), "" | "__proto__" | "constructor" | "prototype");
    (!blocked).then_some(id)
}

/// Resolve every listed account of `channels.imessage`; returns them sorted by id, and the default id.
pub(super) fn resolve(
    section: Option<&Value>,
    messages: &MessagesConfig,
) -> Result<(Vec<Account>, String), ConfigError> {
    let mut root_map = match section {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(ConfigError::invalid(ROOT_PATH, "expected an object")),
    };
    let accounts_value = root_map.remove("accounts");
    let default_value = root_map.remove("defaultAccount");

    // Field-level checks run on the root and on each entry where they are written, so an error names
    // the place to fix; the merged account below can then only fail on cross-key rules.
    let root_raw: RawAccount = typed(&Value::Object(root_map.clone()), ROOT_PATH)?;
    let root = parse_account(&root_raw, DEFAULT_ACCOUNT_ID, ROOT_PATH)?;
    let entries = account_entries(accounts_value.as_ref())?;

    let ids: Vec<String> = if entries.is_empty() {
        vec![DEFAULT_ACCOUNT_ID.to_owned()]
    } else {
        entries.keys().cloned().collect()
    };
    let default_id = default_account_id(default_value.as_ref(), &ids)?;

    let mut accounts = Vec::with_capacity(ids.len());
    for id in &ids {
        let (key_path, merged_map) = match entries.get(id) {
            Some((_, path, entry)) => {
                let mut merged = root_map.clone();
                merged.extend(entry.iter().map(|(k, v)| (k.clone(), v.clone())));
                (path.clone(), merged)
            }
            None => (ROOT_PATH.to_owned(), root_map.clone()),
        };
        let merged_raw: RawAccount = typed(&Value::Object(merged_map), &key_path)?;
        let mut account = parse_account(&merged_raw, id, &key_path)?;
        account.enabled = root_raw.enabled != Some(false) && merged_raw.enabled != Some(false);
        account.attachment_roots = dedupe(
            [&account.attachment_roots, &root.attachment_roots],
            DEFAULT_ATTACHMENT_ROOT,
        );
        account.remote_attachment_roots = dedupe(
            [
                &account.remote_attachment_roots,
                &root.remote_attachment_roots,
                &account.attachment_roots,
            ],
            DEFAULT_ATTACHMENT_ROOT,
        );
        if account.response_prefix.is_none() {
            account.response_prefix = messages.response_prefix.clone();
        }
        account.group_history_limit = account
            .history_limit
            .or(messages.group_history_limit)
            .unwrap_or(DEFAULT_GROUP_HISTORY_LIMIT);
        check_dm_policy(&account)?;
        accounts.push(account);
    }
    Ok((accounts, default_id))
}

/// Entries of `channels.imessage.accounts` by normalised id: (key as written, key path, entry).
type Entries = BTreeMap<String, (String, String, Map<String, Value>)>;

fn account_entries(value: Option<&Value>) -> Result<Entries, ConfigError> {
    let listed: BTreeMap<String, Value> = match value {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => typed(v, "channels.imessage.accounts")?,
    };
    let mut entries = Entries::new();
    // Upstream lists non-empty keys only.
    for (key, entry) in listed.into_iter().filter(|(k, _)| !k.is_empty()) {
        let path = format!("channels.imessage.accounts.{key}");
        let map = match entry {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            _ => return Err(ConfigError::invalid(path, "expected an object")),
        };
        let raw: RawAccount = typed(&Value::Object(map.clone()), &path)?;
        let id = normalize_account_id(&key);
        parse_account(&raw, &id, &path)?;
        // Upstream looks entries up exactly, then case-insensitively, so of two keys with one id the
        // second is silently unreachable; we refuse the ambiguity instead.
        if let Some((other, _, _)) = entries.get(&id) {
            return Err(ConfigError::invalid(
                "channels.imessage.accounts",
                format!("keys \"{other}\" and \"{key}\" both name account \"{id}\"; keep one of them"),
            ));
        }
        entries.insert(id, (key, path, map));
    }
    Ok(entries)
}

fn default_account_id(value: Option<&Value>, ids: &[String]) -> Result<String, ConfigError> {
    const PATH: &str = "channels.imessage.defaultAccount";
    let named: Option<String> = match value {
        None => None,
        Some(v) => typed(v, PATH)?,
    };
    if let Some(raw) = named.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let id = normalize_account_id(raw);
        if ids.contains(&id) {
            return Ok(id);
        }
        let listed: Vec<String> = ids.iter().map(|i| format!("\"{i}\"")).collect();
        return Err(ConfigError::invalid(
            PATH,
            format!(
                "\"{raw}\" does not name an account; expected one of {}",
                listed.join(", ")
            ),
        ));
    }
    Ok(if ids.iter().any(|i| i == DEFAULT_ACCOUNT_ID) {
        DEFAULT_ACCOUNT_ID.to_owned()
    } else {
        ids.first()
            .cloned()
            .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned())
    })
}

/// Union in order, without repeats, always ending with `default_root`.
fn dedupe<const N: usize>(lists: [&Vec<String>; N], default_root: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in lists
        .into_iter()
        .flatten()
        .map(String::as_str)
        .chain([default_root])
    {
        if !out.iter().any(|o| o == item) {
            out.push(item.to_owned());
        }
    }
    out
}

/// The allowFrom rules of dmPolicy, checked on the merged account (root values inherit, fix 5).
fn check_dm_policy(account: &Account) -> Result<(), ConfigError> {
    let place = if account.key_path == ROOT_PATH {
        "channels.imessage.allowFrom".to_owned()
    } else {
        format!("{}.allowFrom or channels.imessage.allowFrom", account.key_path)
    };
    let message = match account.dm_policy {
        DmPolicy::Open if !account.allow_from.iter().any(|e| e == "*") => format!(
            "dmPolicy \"open\" requires \"*\" in allowFrom; add \"*\" to {place}, or use dmPolicy \"pairing\""
        ),
        DmPolicy::Allowlist if account.allow_from.is_empty() => format!(
            "dmPolicy \"allowlist\" requires a non-empty allowFrom; list the allowed senders in {place}, \
             or use dmPolicy \"pairing\""
        ),
        _ => return Ok(()),
    };
    Err(ConfigError::invalid(&account.key_path, message))
}

/// Check and default every key of one account object. `resolve` finishes the values that depend on
/// the root or on other sections (enabled, attachment root unions, response prefix, history).
fn parse_account(raw: &RawAccount, id: &str, path: &str) -> Result<Account, ConfigError> {
    let p = |key: &str| format!("{path}.{key}");
    let cli_path_raw = match raw.cli_path.as_deref() {
        Some(value) => validate::executable(value, &p("cliPath"))?,
        None => DEFAULT_CLI_PATH.to_owned(),
    };
    let entries = |list: &Option<Vec<_>>, key: &str| {
        list.as_deref()
            .map(|l| validate::allowlist(l, &p(key)))
            .transpose()
    };
    let roots = |list: &Option<Vec<String>>, key: &str| -> Result<Vec<String>, ConfigError> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, root)| validate::attachment_root(root, &format!("{path}.{key}[{i}]")))
            .collect()
    };
    let history = |value: Option<i64>, key: &str| small(non_negative(value, key)?, key);

    let mut dms = BTreeMap::new();
    for (handle, dm) in raw.dms.iter().flatten() {
        let key = format!("{path}.dms.{handle}.historyLimit");
        dms.insert(
            handle.clone(),
            DmConfig {
                history_limit: history(dm.history_limit, &key)?,
            },
        );
    }
    let mut groups = BTreeMap::new();
    for (chat, group) in raw.groups.iter().flatten() {
        groups.insert(
            chat.clone(),
            GroupConfig {
                require_mention: group.require_mention,
                tools: group.tools.clone(),
                tools_by_sender: group.tools_by_sender.clone(),
            },
        );
    }
    let coalesce = raw
        .block_streaming_coalesce
        .as_ref()
        .map(|c| -> Result<_, ConfigError> {
            let key = |k: &str| format!("{path}.blockStreamingCoalesce.{k}");
            Ok(BlockStreamingCoalesce {
                min_chars: non_negative(c.min_chars, &key("minChars"))?,
                max_chars: non_negative(c.max_chars, &key("maxChars"))?,
                idle_ms: non_negative(c.idle_ms, &key("idleMs"))?,
            })
        })
        .transpose()?;
    let text_chunk_limit =
        positive(raw.text_chunk_limit, &p("textChunkLimit"))?.unwrap_or(DEFAULT_TEXT_CHUNK_LIMIT);
    let markdown_tables = raw.markdown.as_ref().and_then(|m| m.tables.as_deref());

    Ok(Account {
        id: id.to_owned(),
        key_path: path.to_owned(),
        enabled: raw.enabled != Some(false),
        name: trimmed(raw.name.as_deref()),
        cli_path: expand_tilde(&cli_path_raw),
        cli_path_raw,
        db_path: trimmed(raw.db_path.as_deref()),
        remote_host: validate::remote_host(raw.remote_host.as_deref(), &p("remoteHost"))?,
        transport: enum_value(raw.transport.as_deref(), &p("transport"))?.unwrap_or(TransportKind::Auto),
        ssh: raw.ssh.as_ref().map(|s| parse_ssh(s, &p("ssh"))).transpose()?,
        service: enum_value(raw.service.as_deref(), &p("service"))?.unwrap_or(Service::Auto),
        region: trimmed(raw.region.as_deref()).unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        // The defaults apply after the merge, never inside an account, so root values inherit (fix 5).
        dm_policy: enum_value(raw.dm_policy.as_deref(), &p("dmPolicy"))?.unwrap_or(DmPolicy::Pairing),
        allow_from: entries(&raw.allow_from, "allowFrom")?.unwrap_or_default(),
        group_allow_from: entries(&raw.group_allow_from, "groupAllowFrom")?,
        group_policy: enum_value(raw.group_policy.as_deref(), &p("groupPolicy"))?
            .unwrap_or(GroupPolicy::Allowlist),
        context_visibility: enum_value(raw.context_visibility.as_deref(), &p("contextVisibility"))?
            .unwrap_or(ContextVisibility::All),
        history_limit: history(raw.history_limit, &p("historyLimit"))?,
        group_history_limit: DEFAULT_GROUP_HISTORY_LIMIT,
        dm_history_limit: history(raw.dm_history_limit, &p("dmHistoryLimit"))?,
        dms,
        include_attachments: raw.include_attachments.unwrap_or(false),
        attachment_roots: roots(&raw.attachment_roots, "attachmentRoots")?,
        remote_attachment_roots: roots(&raw.remote_attachment_roots, "remoteAttachmentRoots")?,
        media_max_mb: positive(raw.media_max_mb, &p("mediaMaxMb"))?.unwrap_or(DEFAULT_MEDIA_MAX_MB),
        probe_timeout_ms: positive(raw.probe_timeout_ms, &p("probeTimeoutMs"))?
            .unwrap_or(DEFAULT_PROBE_TIMEOUT_MS),
        text_chunk_limit: usize::try_from(text_chunk_limit).map_err(|_| {
            ConfigError::invalid(p("textChunkLimit"), format!("{text_chunk_limit} is too large"))
        })?,
        chunk_mode: enum_value(raw.chunk_mode.as_deref(), &p("chunkMode"))?.unwrap_or(ChunkMode::Length),
        block_streaming: raw.block_streaming,
        block_streaming_coalesce: coalesce,
        groups,
        response_prefix: raw.response_prefix.clone().filter(|s| !s.trim().is_empty()),
        config_writes: raw.config_writes != Some(false),
        markdown_tables: enum_value(markdown_tables, &p("markdown.tables"))?.unwrap_or(MarkdownTables::Code),
        default_to: trimmed(raw.default_to.as_deref()),
        capabilities: raw
            .capabilities
            .iter()
            .flatten()
            .filter_map(|c| trimmed(Some(c)))
            .collect(),
        heartbeat: raw.heartbeat.as_ref().map(|h| HeartbeatConfig {
            show_ok: h.show_ok,
            show_alerts: h.show_alerts,
            use_indicator: h.use_indicator,
        }),
        health_monitor_enabled: raw.health_monitor.as_ref().and_then(|h| h.enabled) != Some(false),
        configured: is_configured(raw),
    })
}

/// OpenClaw's "configured" test (docs/configuration.md), plus our `ssh` block and `remoteHost`.
fn is_configured(raw: &RawAccount) -> bool {
    let set = |s: &Option<String>| trimmed(s.as_deref()).is_some();
    let non_empty = |l: &Option<Vec<String>>| l.as_ref().is_some_and(|l| !l.is_empty());
    set(&raw.cli_path)
        || set(&raw.db_path)
        || set(&raw.region)
        || set(&raw.remote_host)
        || raw.service.is_some()
        || raw.allow_from.as_ref().is_some_and(|l| !l.is_empty())
        || raw.group_allow_from.as_ref().is_some_and(|l| !l.is_empty())
        || non_empty(&raw.attachment_roots)
        || non_empty(&raw.remote_attachment_roots)
        || raw.dm_policy.is_some()
        || raw.group_policy.is_some()
        || raw.include_attachments.is_some()
        || raw.media_max_mb.is_some()
        || raw.text_chunk_limit.is_some()
        || raw.groups.as_ref().is_some_and(|g| !g.is_empty())
        || raw.ssh.is_some()
}

fn paths(list: Option<&Vec<String>>, path: &str) -> Result<Vec<PathBuf>, ConfigError> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, item)| {
            trimmed(Some(item)).map(|p| expand_tilde(&p)).ok_or_else(|| {
                ConfigError::invalid(format!("{path}[{i}]"), "expected a path, got an empty string")
            })
        })
        .collect()
}

/// The values of an `ssh` block that sets nothing: what a wrapper or `remoteHost` target uses.
impl Default for SshConfig {
    fn default() -> Self {
        Self {
            host: None,
            user: None,
            port: None,
            identity_files: Vec::new(),
            identity_passphrase_env: None,
            use_agent: true,
            known_hosts_files: Vec::new(),
            strict_host_key_checking: None,
            proxy_jump: None,
            remote_cli_path: None,
            connect_timeout_ms: DEFAULT_SSH_CONNECT_TIMEOUT_MS,
            keepalive_interval_ms: DEFAULT_SSH_KEEPALIVE_INTERVAL_MS,
            keepalive_max: DEFAULT_SSH_KEEPALIVE_MAX,
            sftp_request_timeout_ms: DEFAULT_SFTP_REQUEST_TIMEOUT_MS,
            control_persist_ms: DEFAULT_SSH_CONTROL_PERSIST_MS,
        }
    }
}

fn parse_ssh(raw: &RawSsh, path: &str) -> Result<SshConfig, ConfigError> {
    let p = |key: &str| format!("{path}.{key}");
    Ok(SshConfig {
        host: validate::ssh_host(raw.host.as_deref(), &p("host"))?,
        user: validate::ssh_user(raw.user.as_deref(), &p("user"))?,
        port: validate::port(raw.port, &p("port"))?,
        identity_files: paths(raw.identity_file.as_ref().map(|o| &o.0), &p("identityFile"))?,
        identity_passphrase_env: validate::env_name(
            raw.identity_passphrase_env.as_deref(),
            &p("identityPassphraseEnv"),
        )?,
        use_agent: raw.use_agent != Some(false),
        known_hosts_files: paths(raw.known_hosts_file.as_ref().map(|o| &o.0), &p("knownHostsFile"))?,
        strict_host_key_checking: enum_value(
            raw.strict_host_key_checking.as_deref(),
            &p("strictHostKeyChecking"),
        )?,
        proxy_jump: validate::proxy_jump(raw.proxy_jump.as_deref(), &p("proxyJump"))?,
        remote_cli_path: raw
            .remote_cli_path
            .as_deref()
            .map(|v| validate::executable(v, &p("remoteCliPath")))
            .transpose()?,
        connect_timeout_ms: positive(raw.connect_timeout_ms, &p("connectTimeoutMs"))?
            .unwrap_or(DEFAULT_SSH_CONNECT_TIMEOUT_MS),
        keepalive_interval_ms: non_negative(raw.keepalive_interval_ms, &p("keepaliveIntervalMs"))?
            .unwrap_or(DEFAULT_SSH_KEEPALIVE_INTERVAL_MS),
        keepalive_max: small(
            positive(raw.keepalive_max, &p("keepaliveMax"))?,
            &p("keepaliveMax"),
        )?
        .unwrap_or(DEFAULT_SSH_KEEPALIVE_MAX),
        sftp_request_timeout_ms: positive(raw.sftp_request_timeout_ms, &p("sftpRequestTimeoutMs"))?
            .unwrap_or(DEFAULT_SFTP_REQUEST_TIMEOUT_MS),
        control_persist_ms: non_negative(raw.control_persist_ms, &p("controlPersistMs"))?
            .unwrap_or(DEFAULT_SSH_CONTROL_PERSIST_MS),
    })
}

/// Warnings about enabled accounts: disabled host key checks, and accounts that reach one backend
/// (fix 11: they share a watcher, so the operator should know they are one mailbox).
pub(super) fn warnings(accounts: &[Account]) -> Vec<String> {
    let enabled: Vec<&Account> = accounts.iter().filter(|a| a.enabled).collect();
    let mut out = Vec::new();
    for account in &enabled {
        if let Some(ssh) = &account.ssh
            && ssh.strict_host_key_checking == Some(StrictHostKeyChecking::No)
        {
            out.push(format!(
                "{}.ssh.strictHostKeyChecking is \"no\": the Mac's host key is not verified, so anyone on \
                 the network path can impersonate it; use \"accept-new\" or \"yes\"",
                account.key_path
            ));
        }
    }
    let mut by_backend: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for account in &enabled {
        by_backend.entry(backend(account)).or_default().push(&account.id);
    }
    for (backend, ids) in by_backend.into_iter().filter(|(_, ids)| ids.len() > 1) {
        let names: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
        out.push(format!(
            "accounts {} reach the same backend ({backend}); they share one watcher, so each message is \
             handled once",
            names.join(" and ")
        ));
    }
    out
}

/// What identifies the Messages database an account reads: SSH target and dbPath, or cliPath and dbPath.
pub fn backend(account: &Account) -> String {
    let db = account.db_path.as_deref().unwrap_or(IMSG_DEFAULT_DB_PATH);
    let ssh_host = account.ssh.as_ref().and_then(|s| s.host.as_deref());
    match (&account.ssh, ssh_host) {
        (Some(ssh), Some(host)) if account.transport != TransportKind::Process => {
            let user = ssh.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
            let port = ssh.port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("ssh {user}{}{port}, dbPath {db}", host.to_lowercase())
        }
        _ => format!("cliPath {}, dbPath {db}", account.cli_path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_normalised_like_upstream() {
        let cases = [
            ("bot", "bot"),
            ("  Bot ", "bot"),
            ("", "default"),
            ("   ", "default"),
            ("My Bot!", "my-bot"),
            ("--x--", "x"),
            ("_x", "_x"),
            ("a.b", "a-b"),
            ("a-!b", "a--b"),
            ("__proto__", "default"),
            ("Constructor", "default"),
            ("!!!", "default"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_account_id(input), want, "{input:?}");
        }
        assert_eq!(normalize_account_id(&"a".repeat(80)).len(), 64);
    }

    #[test]
    fn attachment_roots_are_a_union_ending_with_the_default() {
        let a = vec!["/a".to_owned(), "/b".to_owned()];
        let b = vec!["/b".to_owned(), DEFAULT_ATTACHMENT_ROOT.to_owned()];
        assert_eq!(
            dedupe([&a, &b], DEFAULT_ATTACHMENT_ROOT),
            vec!["/a", "/b", DEFAULT_ATTACHMENT_ROOT]
        );
    }
}

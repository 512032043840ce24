//! Which transport an account uses, and its fully resolved SSH target.
//!
//! `transport: "auto"` picks `ssh` when an `ssh` block exists, else `ssh` when `cliPath` is a
//! *transparent* wrapper script (logged: which wrapper was replaced by which native target), else
//! `process`. Each SSH field comes from the first source that sets it: the `ssh` block, the wrapper,
//! `remoteHost`, then `ssh -G` / `~/.ssh/config`, then OpenSSH's defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::ssh::ssh_config::{self, HostSettings};
use super::ssh::{SshTarget, StrictHostKeyChecking};
use super::wrapper::{self, WrapperAnalysis};
use crate::config::{Account, SshConfig, TransportKind};
use crate::util::{expand_tilde, home_dir};

/// How an account reaches `imsg rpc`.
#[derive(Debug, Clone)]
pub enum Plan {
    Process { program: PathBuf, args: Vec<String> },
    Ssh(Box<SshPlan>),
}

/// An SSH destination before `~/.ssh/config` is consulted.
#[derive(Debug, Clone)]
pub struct SshPlan {
    /// As given: may be a Host alias.
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub config_file: Option<String>,
    pub options: BTreeMap<String, String>,
    /// The remote imsg, when known (config or wrapper); else found on the Mac once.
    pub remote_cli: Option<String>,
    pub db_path: Option<String>,
    /// Where the target came from, for logs and doctor (`ssh block`, `wrapper /path`, `remoteHost`).
    pub source: String,
    pub ssh: SshConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{account}: transport is \"ssh\" but no SSH host is known: set channels.imessage.ssh.host (or remoteHost), or point cliPath at a transparent wrapper script (see `imsg-bridge detect`)"
    )]
    NoHost { account: String },
    #[error("{account}: cannot tell the SSH user for {host}: set channels.imessage.ssh.user")]
    NoUser { account: String, host: String },
    #[error("{account}: bad ProxyJump entry {entry:?}: expected [user@]host[:port]")]
    BadJump { account: String, entry: String },
    #[error("--target {target:?} is not [user@]host[:port] (a Host alias of ~/.ssh/config works too)")]
    BadTarget { target: String },
    /// `ssh -G` rejected the configuration (or we cannot evaluate it): `ssh` would not connect either.
    #[error("{account}: {source}; nothing was connected")]
    SshConfig {
        account: String,
        #[source]
        source: ssh_config::SshConfigError,
    },
}

/// Decide the transport of `account` (reads the wrapper script at `cliPath` when that matters).
pub fn plan(account: &Account) -> Result<Plan, ResolveError> {
    let process = || Plan::Process {
        program: account.cli_path.clone(),
        args: super::rpc_args(account.db_path.as_deref()),
    };
    let wrapper = || read_wrapper(account);
    match account.transport {
        TransportKind::Process => Ok(process()),
        TransportKind::Ssh => ssh_plan(account, wrapper().filter(|w| w.host.is_some()))?
            .map(|p| Plan::Ssh(Box::new(p)))
            .ok_or_else(|| ResolveError::NoHost {
                account: account.id.clone(),
            }),
        TransportKind::Auto => {
            if account.ssh.is_some() {
                return ssh_plan(account, None)?
                    .map(|p| Plan::Ssh(Box::new(p)))
                    .ok_or_else(|| ResolveError::NoHost {
                        account: account.id.clone(),
                    });
            }
            match wrapper().filter(|w| w.transparent && w.host.is_some()) {
                Some(analysis) => {
                    let plan = ssh_plan(account, Some(analysis))?;
                    if let Some(plan) = &plan {
                        tracing::info!(
                            account = %account.id,
                            wrapper = %account.cli_path.display(),
                            target = %plan.host,
                            "transport auto: replacing the transparent wrapper with a native SSH connection"
                        );
                    }
                    Ok(plan.map(|p| Plan::Ssh(Box::new(p))).unwrap_or_else(process))
                }
                None => Ok(process()),
            }
        }
    }
}

/// The wrapper analysis of `cliPath` when it is a regular file (a binary analyses as not transparent).
fn read_wrapper(account: &Account) -> Option<WrapperAnalysis> {
    if !std::fs::metadata(&account.cli_path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    wrapper::analyze_file(&account.cli_path).ok()
}

fn ssh_plan(account: &Account, wrapper: Option<WrapperAnalysis>) -> Result<Option<SshPlan>, ResolveError> {
    let ssh = account.ssh.clone().unwrap_or_default();
    let remote = account.remote_host.as_deref().map(split_user_host);
    let (source, host) = if let Some(host) = ssh.host.clone() {
        ("ssh block".to_string(), host)
    } else if let Some(host) = wrapper.as_ref().and_then(|w| w.host.clone()) {
        (format!("wrapper {}", account.cli_path.display()), host)
    } else if let Some((_, host)) = &remote {
        ("remoteHost".to_string(), host.clone())
    } else {
        return Ok(None);
    };
    let w = wrapper.unwrap_or_else(empty_analysis);
    Ok(Some(SshPlan {
        user: ssh
            .user
            .clone()
            .or(w.user.clone())
            .or_else(|| remote.as_ref().and_then(|(u, _)| u.clone())),
        port: ssh.port.or(w.port),
        identity_files: if ssh.identity_files.is_empty() {
            w.identity_files.clone()
        } else {
            ssh.identity_files
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        },
        proxy_jump: ssh.proxy_jump.clone().or(w.proxy_jump.clone()),
        config_file: w.config_file.clone(),
        options: w.options.clone(),
        remote_cli: ssh.remote_cli_path.clone().or(w.remote_command.clone()),
        db_path: account.db_path.clone(),
        host,
        source,
        ssh,
    }))
}

/// The drop-in's `--target [user@]host[:port]` (or an account's `remoteHost`): this destination
/// with the account's SSH settings (keys, known_hosts policy, keepalive, ProxyJump), resolved
/// through `~/.ssh/config` as `ssh` would.
pub async fn target_from_cli(target: &str, account: &Account) -> Result<SshTarget, ResolveError> {
    let bad = || ResolveError::BadTarget {
        target: target.to_string(),
    };
    let (user, host, port) = parse_jump(target.trim()).ok_or_else(bad)?;
    if host.starts_with('-') {
        return Err(bad());
    }
    let ssh = account.ssh.clone().unwrap_or_default();
    let plan = SshPlan {
        host,
        user,
        port,
        identity_files: ssh
            .identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        proxy_jump: ssh.proxy_jump.clone(),
        config_file: None,
        options: BTreeMap::new(),
        remote_cli: ssh.remote_cli_path.clone(),
        db_path: None,
        source: "--target".to_string(),
        ssh,
    };
    resolve_target(&plan, &account.id).await
}

fn empty_analysis() -> WrapperAnalysis {
    wrapper::analyze("")
}

fn split_user_host(value: &str) -> (Option<String>, String) {
    match value.split_once('@') {
        Some((user, host)) => (Some(user.to_string()), host.to_string()),
        None => (None, value.to_string()),
    }
}

/// Turn a plan into a connectable target, consulting `ssh -G` / `~/.ssh/config` for what the plan
/// leaves open and resolving every ProxyJump hop the same way.
pub async fn resolve_target(plan: &SshPlan, account: &str) -> Result<SshTarget, ResolveError> {
    let mut extra = Vec::new();
    if let Some(file) = &plan.config_file {
        extra.push("-F".to_string());
        extra.push(file.clone());
    }
    for (key, value) in &plan.options {
        extra.push("-o".to_string());
        extra.push(format!("{key}={value}"));
    }
    let settings = if fully_specified(plan) {
        // Nothing left for ~/.ssh/config to decide: skip spawning `ssh -G` (saves a process start on
        // every connect).
        HostSettings::default()
    } else {
        lookup(&plan.host, &extra, account).await?
    };
    let mut target = merge(plan, &settings, account)?;
    if let Some(jumps) = plan.proxy_jump.clone().or(settings.proxy_jump.clone()) {
        for entry in jumps.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (user, host, port) = parse_jump(entry).ok_or_else(|| ResolveError::BadJump {
                account: account.to_string(),
                entry: entry.to_string(),
            })?;
            let hop_plan = SshPlan {
                host,
                user,
                port,
                identity_files: plan.identity_files.clone(),
                proxy_jump: None,
                config_file: plan.config_file.clone(),
                options: BTreeMap::new(),
                remote_cli: None,
                db_path: None,
                source: format!("ProxyJump {entry}"),
                ssh: plan.ssh.clone(),
            };
            let hop_settings = lookup(&hop_plan.host, &extra_config_only(&extra), account).await?;
            target.jumps.push(merge(&hop_plan, &hop_settings, account)?);
        }
    }
    Ok(target)
}

/// [`ssh_config::lookup`] with its error tied to the account.
async fn lookup(host: &str, extra: &[String], account: &str) -> Result<HostSettings, ResolveError> {
    ssh_config::lookup(host, extra)
        .await
        .map_err(|source| ResolveError::SshConfig {
            account: account.to_string(),
            source,
        })
}

/// An IP-literal host with user, port, identity files, known_hosts and host-key policy all given by
/// the config: `~/.ssh/config` could only add a ProxyJump or rename nothing, so it is not consulted.
fn fully_specified(plan: &SshPlan) -> bool {
    plan.host.parse::<std::net::IpAddr>().is_ok()
        && plan.user.is_some()
        && plan.port.is_some()
        && !plan.identity_files.is_empty()
        && !plan.ssh.known_hosts_files.is_empty()
        && plan.ssh.strict_host_key_checking.is_some()
        && plan.config_file.is_none()
        && plan.options.is_empty()
}

fn extra_config_only(extra: &[String]) -> Vec<String> {
    extra
        .windows(2)
        .filter(|w| w[0] == "-F")
        .flat_map(|w| w.to_vec())
        .collect()
}

fn merge(plan: &SshPlan, settings: &HostSettings, account: &str) -> Result<SshTarget, ResolveError> {
    let option = |name: &str| {
        plan.options
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let host = settings.hostname.clone().unwrap_or_else(|| plan.host.clone());
    let user = plan
        .user
        .clone()
        .or_else(|| settings.user.clone())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .ok_or_else(|| ResolveError::NoUser {
            account: account.to_string(),
            host: host.clone(),
        })?;
    let identities_explicit = !plan.identity_files.is_empty();
    let identity_files: Vec<PathBuf> = if identities_explicit {
        plan.identity_files.iter().map(|p| expand_tilde(p)).collect()
    } else if !settings.identity_files.is_empty() {
        settings.identity_files.iter().map(|p| expand_tilde(p)).collect()
    } else {
        ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .filter_map(|name| home_dir().map(|h| h.join(".ssh").join(name)))
            .collect()
    };
    let known_hosts_files: Vec<PathBuf> = if !plan.ssh.known_hosts_files.is_empty() {
        plan.ssh.known_hosts_files.clone()
    } else if let Some(files) = option("UserKnownHostsFile") {
        files.split_whitespace().map(expand_tilde).collect()
    } else if !settings.user_known_hosts_files.is_empty() {
        settings
            .user_known_hosts_files
            .iter()
            .map(|p| expand_tilde(p))
            .collect()
    } else {
        home_dir()
            .map(|h| vec![h.join(".ssh/known_hosts")])
            .unwrap_or_default()
    };
    let strict = plan
        .ssh
        .strict_host_key_checking
        .or_else(|| option("StrictHostKeyChecking").and_then(|v| strictness(&v)))
        .or_else(|| settings.strict_host_key_checking.as_deref().and_then(strictness))
        .unwrap_or(StrictHostKeyChecking::Yes);
    Ok(SshTarget {
        host,
        port: plan.port.or(settings.port).unwrap_or(22),
        user,
        identity_files,
        identities_explicit,
        identity_passphrase_env: plan.ssh.identity_passphrase_env.clone(),
        use_agent: plan.ssh.use_agent,
        known_hosts_files,
        strict_host_key_checking: strict,
        jumps: Vec::new(),
        connect_timeout: Duration::from_millis(plan.ssh.connect_timeout_ms),
        // 0 turns keepalives off: russh has no "off", so use a day (effectively never).
        keepalive_interval: match plan.ssh.keepalive_interval_ms {
            0 => Duration::from_secs(86_400),
            ms => Duration::from_millis(ms),
        },
        keepalive_max: plan.ssh.keepalive_max as usize,
    })
}

/// OpenSSH's spellings: `ask` cannot ask anyone in a service, so it means `yes`.
fn strictness(value: &str) -> Option<StrictHostKeyChecking> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "ask" => Some(StrictHostKeyChecking::Yes),
        "accept-new" => Some(StrictHostKeyChecking::AcceptNew),
        "no" | "false" | "off" => Some(StrictHostKeyChecking::No),
        _ => None,
    }
}

/// `[user@]host[:port]`, with `[v6]:port` brackets.
fn parse_jump(entry: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let (user, rest) = match entry.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, entry),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        (
            host.to_string(),
            after.strip_prefix(':').map(str::parse).transpose().ok()?,
        )
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port.parse().ok()?)),
            None => (rest.to_string(), None),
        }
    };
    (!host.is_empty()).then_some((user, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jump_entries() {
        assert_eq!(
            parse_jump("me@bastion"),
            Some((Some("me".into()), "bastion".into(), None))
        );
        assert_eq!(
            parse_jump("bastion:2222"),
            Some((None, "bastion".into(), Some(2222)))
        );
        assert_eq!(
            parse_jump("me@[::1]:22"),
            Some((Some("me".into()), "::1".into(), Some(22)))
        );
        assert_eq!(parse_jump("bad:port"), None);
        assert_eq!(parse_jump(""), None);
    }

    #[test]
    fn a_fully_specified_ip_target_skips_ssh_config() {
        let cfg = config(
            "{channels:{imessage:{ssh:{host:'10.0.0.5', port:22, user:'bot', identityFile:'/k', knownHostsFile:'/kh', strictHostKeyChecking:'yes'}}}}",
        );
        let Plan::Ssh(ssh) = plan(&cfg.accounts[0]).unwrap() else {
            panic!("ssh expected")
        };
        assert!(fully_specified(&ssh));
        let cfg = config(
            "{channels:{imessage:{ssh:{host:'mac.local', port:22, user:'bot', identityFile:'/k', knownHostsFile:'/kh', strictHostKeyChecking:'yes'}}}}",
        );
        let Plan::Ssh(alias) = plan(&cfg.accounts[0]).unwrap() else {
            panic!("ssh expected")
        };
        assert!(
            !fully_specified(&alias),
            "a name may be an alias in ~/.ssh/config"
        );
        let cfg = config("{channels:{imessage:{ssh:{host:'10.0.0.5', user:'bot'}}}}");
        let Plan::Ssh(partial) = plan(&cfg.accounts[0]).unwrap() else {
            panic!("ssh expected")
        };
        assert!(!fully_specified(&partial));
    }

    #[test]
    fn maps_openssh_strictness_spellings() {
        assert_eq!(strictness("ask"), Some(StrictHostKeyChecking::Yes));
        assert_eq!(strictness("accept-new"), Some(StrictHostKeyChecking::AcceptNew));
        assert_eq!(strictness("off"), Some(StrictHostKeyChecking::No));
        assert_eq!(strictness("maybe"), None);
    }

    fn config(text: &str) -> crate::config::Config {
        crate::config::from_str(text, None).unwrap()
    }

    #[test]
    fn auto_uses_the_ssh_block_when_present_and_process_otherwise() {
        let cfg = config(
            "{channels:{imessage:{ssh:{host:'mac.local', user:'bot', remoteCliPath:'/opt/homebrew/bin/imsg'}}}}",
        );
        let Plan::Ssh(ssh) = plan(&cfg.accounts[0]).unwrap() else {
            panic!("ssh expected")
        };
        assert_eq!(
            (ssh.host.as_str(), ssh.user.as_deref(), ssh.source.as_str()),
            ("mac.local", Some("bot"), "ssh block")
        );
        assert_eq!(ssh.remote_cli.as_deref(), Some("/opt/homebrew/bin/imsg"));
        let cfg = config("{channels:{imessage:{cliPath:'/nonexistent/imsg'}}}");
        assert!(matches!(plan(&cfg.accounts[0]).unwrap(), Plan::Process { .. }));
    }

    #[test]
    fn auto_replaces_a_transparent_wrapper_and_keeps_an_opaque_one() {
        let dir = tempfile::tempdir().unwrap();
        let transparent = dir.path().join("imsg-ssh");
        std::fs::write(
            &transparent,
            "#!/bin/sh\nexec ssh -T -p 2222 bot@mac.local /usr/local/bin/imsg \"$@\"\n",
        )
        .unwrap();
        let cfg = config(&format!(
            "{{channels:{{imessage:{{cliPath:{:?}}}}}}}",
            transparent.display().to_string()
        ));
        let Plan::Ssh(ssh) = plan(&cfg.accounts[0]).unwrap() else {
            panic!("ssh expected")
        };
        assert_eq!(
            (ssh.host.as_str(), ssh.user.as_deref(), ssh.port),
            ("mac.local", Some("bot"), Some(2222))
        );
        assert_eq!(ssh.remote_cli.as_deref(), Some("/usr/local/bin/imsg"));
        assert!(ssh.source.starts_with("wrapper "));

        let opaque = dir.path().join("imsg-grep");
        std::fs::write(
            &opaque,
            "#!/bin/sh\nssh bot@mac.local imsg \"$@\" | grep -v noise\n",
        )
        .unwrap();
        let cfg = config(&format!(
            "{{channels:{{imessage:{{cliPath:{:?}}}}}}}",
            opaque.display().to_string()
        ));
        assert!(matches!(plan(&cfg.accounts[0]).unwrap(), Plan::Process { .. }));
    }

    #[test]
    fn explicit_ssh_without_any_host_is_an_error_with_a_remedy() {
        let cfg = config("{channels:{imessage:{transport:'ssh', cliPath:'/nonexistent'}}}");
        let err = plan(&cfg.accounts[0]).unwrap_err().to_string();
        assert!(
            err.contains("no SSH host is known") && err.contains("imsg-bridge detect"),
            "{err}"
        );
    }

    #[test]
    fn remote_host_supplies_host_and_user_under_explicit_ssh() {
        let cfg = config(
            "{channels:{imessage:{transport:'ssh', remoteHost:'bot@mac.local', cliPath:'/nonexistent'}}}",
        );
        let Plan::Ssh(ssh) = plan(&cfg.accounts[0]).unwrap() else {
            panic!("ssh expected")
        };
        assert_eq!(
            (ssh.host.as_str(), ssh.user.as_deref(), ssh.source.as_str()),
            ("mac.local", Some("bot"), "remoteHost")
        );
    }
}

//! What the user's OpenSSH setup says about a host: `ssh -G` when the OpenSSH client exists (it is
//! authoritative for Match, Include and tokens), else our parser of `~/.ssh/config` for the keys we
//! use: Host, HostName, User, Port, IdentityFile, ProxyJump, UserKnownHostsFile,
//! StrictHostKeyChecking, and Include.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::pattern;

/// How deep Include may nest before we stop (OpenSSH's limit is 16).
const MAX_INCLUDE_DEPTH: usize = 16;
const SSH_G_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for one host; `None`/empty where nothing was said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub user_known_hosts_files: Vec<String>,
    pub strict_host_key_checking: Option<String>,
}

/// Resolve `host` the way `ssh` would. `extra` are arguments placed before the host (`-F file`,
/// `-o Key=Value`, …). Falls back to parsing `~/.ssh/config` when `ssh` is missing or fails.
pub async fn lookup(host: &str, extra: &[String]) -> HostSettings {
    match ssh_g(host, extra).await {
        Some(settings) => settings,
        None => {
            let config = extra
                .windows(2)
                .find(|w| w[0] == "-F")
                .map(|w| crate::util::expand_tilde(&w[1]))
                .or_else(|| crate::util::home_dir().map(|h| h.join(".ssh/config")));
            config.map(|path| parse_file(&path, host)).unwrap_or_default()
        }
    }
}

async fn ssh_g(host: &str, extra: &[String]) -> Option<HostSettings> {
    let mut command = tokio::process::Command::new("ssh");
    command
        .arg("-G")
        .args(extra)
        .arg("--")
        .arg(host)
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SSH_G_TIMEOUT, command.output()).await {
        Ok(Ok(output)) if output.status.success() => output,
        Ok(Ok(output)) => {
            debug!(host, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "ssh -G failed; parsing ~/.ssh/config instead");
            return None;
        }
        Ok(Err(err)) => {
            debug!(%err, "no OpenSSH client; parsing ~/.ssh/config instead");
            return None;
        }
        Err(_) => return None,
    };
    Some(parse_ssh_g(&String::from_utf8_lossy(&output.stdout)))
}

/// Parse `ssh -G` output: lowercase keys, one per line, repeated for lists.
pub fn parse_ssh_g(output: &str) -> HostSettings {
    let mut settings = HostSettings::default();
    for line in output.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        match key {
            "hostname" => settings.hostname = Some(value.to_string()),
            "user" => settings.user = Some(value.to_string()),
            "port" => settings.port = value.parse().ok(),
            "identityfile" => settings.identity_files.push(value.to_string()),
            "proxyjump" if value != "none" => settings.proxy_jump = Some(value.to_string()),
            "userknownhostsfile" => settings
                .user_known_hosts_files
                .extend(value.split_whitespace().map(str::to_string)),
            "stricthostkeychecking" => settings.strict_host_key_checking = Some(value.to_string()),
            _ => {}
        }
    }
    settings
}

/// Our own reading of an ssh_config file for `host` (first value wins; IdentityFile accumulates).
pub fn parse_file(path: &Path, host: &str) -> HostSettings {
    let mut settings = HostSettings::default();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    read_into(path, &base, host, &mut settings, 0);
    settings
}

/// Parse config text (for tests and Include).
pub fn parse_text(text: &str, base: &Path, host: &str) -> HostSettings {
    let mut settings = HostSettings::default();
    apply(text, base, host, &mut settings, 0);
    settings
}

fn read_into(path: &Path, base: &Path, host: &str, settings: &mut HostSettings, depth: usize) {
    match std::fs::read_to_string(path) {
        Ok(text) => apply(&text, base, host, settings, depth),
        Err(err) => debug!(path = %path.display(), %err, "ssh config not read"),
    }
}

fn apply(text: &str, base: &Path, host: &str, settings: &mut HostSettings, depth: usize) {
    // Options before the first Host apply to every host.
    let mut active = true;
    for line in text.lines() {
        let Some((key, args)) = split_directive(line) else {
            continue;
        };
        match key.as_str() {
            "host" => active = pattern::list_matches(args.iter().map(String::as_str), host),
            // Match needs ssh's own evaluation (exec, user, …): we cannot honour it, so its block
            // is skipped rather than leaking into the previous Host.
            "match" => active = false,
            "include" if active && depth < MAX_INCLUDE_DEPTH => {
                for pattern in &args {
                    for file in include_files(pattern, base) {
                        read_into(&file, base, host, settings, depth + 1);
                    }
                }
            }
            _ if !active => {}
            "hostname" => set_once(&mut settings.hostname, args.first()),
            "user" => set_once(&mut settings.user, args.first()),
            "port" if settings.port.is_none() => settings.port = args.first().and_then(|p| p.parse().ok()),
            "identityfile" => settings.identity_files.extend(args.first().cloned()),
            "proxyjump" => set_once(&mut settings.proxy_jump, args.first().filter(|v| *v != "none")),
            "userknownhostsfile" if settings.user_known_hosts_files.is_empty() => {
                settings.user_known_hosts_files = args.clone();
            }
            "stricthostkeychecking" => set_once(&mut settings.strict_host_key_checking, args.first()),
            _ => {}
        }
    }
    if let Some(hostname) = &mut settings.hostname {
        // `%h` in HostName stands for the name given on the command line.
        *hostname = hostname.replace("%h", host);
    }
}

fn set_once(slot: &mut Option<String>, value: Option<&String>) {
    if slot.is_none() {
        *slot = value.cloned();
    }
}

/// `Key value…` or `Key=value`, with double-quoted arguments; comments and blanks give `None`.
fn split_directive(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (key, rest) = match line.find(|c: char| c.is_whitespace() || c == '=') {
        Some(pos) => (
            &line[..pos],
            line[pos..].trim_start_matches(|c: char| c.is_whitespace() || c == '='),
        ),
        None => (line, ""),
    };
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in rest.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    args.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        args.push(current);
    }
    Some((key.to_ascii_lowercase(), args))
}

/// Files an Include names: `~` expanded, relative paths against the config's directory, `*`/`?` in
/// the file name matched against the directory listing (sorted, as ssh does).
fn include_files(pattern: &str, base: &Path) -> Vec<PathBuf> {
    let expanded = crate::util::expand_tilde(pattern);
    let path = if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![path];
    }
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| pattern::glob(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests;

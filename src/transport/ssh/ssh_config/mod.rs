//! What the user's OpenSSH setup says about a host: `ssh -G` when the OpenSSH client exists (it is
//! authoritative for Match, Include and tokens, and a config it rejects is an error: `ssh` would not
//! connect either), else our parser of `~/.ssh/config` for the keys we use: Host, HostName, User,
//! Port, IdentityFile, ProxyJump, UserKnownHostsFile, StrictHostKeyChecking, and Include. Our parser
//! refuses `Match`, which only ssh can evaluate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::pattern;

/// How deep Include may nest before we stop (OpenSSH's limit is 16).
const MAX_INCLUDE_DEPTH: usize = 16;
const SSH_G_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of `ssh -G`'s complaint is quoted: its first lines say what and where.
const QUOTED_LINES: usize = 3;

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

/// Why the ssh configuration could not be read the way `ssh` reads it. Each means `ssh` itself would
/// not connect (or we cannot tell where it would), so neither do we.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    #[error("`{command}` failed: {message}")]
    Rejected { command: String, message: String },
    #[error("`{command}` gave no answer within {} s", .after.as_secs())]
    Timeout { command: String, after: Duration },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} line {line}: cannot evaluate `{directive}` without the OpenSSH client (`ssh` is not on PATH), so the target it may change is unknown"
    )]
    Match {
        file: String,
        line: usize,
        directive: String,
    },
}

impl SshConfigError {
    /// What to do about it, for doctor's remedy column.
    pub fn remedy(&self) -> String {
        match self {
            Self::Rejected { command, .. } | Self::Timeout { command, .. } | Self::Spawn { command, .. } => {
                format!("fix the ssh config: `{command}` must succeed (ssh refuses to connect with it too)")
            }
            Self::Match { .. } => {
                "install the OpenSSH client (it evaluates Match), or move these settings into a Host block or the bridge's ssh block".to_string()
            }
        }
    }
}

/// Resolve `host` the way `ssh` would. `extra` are arguments placed before the host (`-F file`,
/// `-o Key=Value`, …). Only when the OpenSSH client is missing is `~/.ssh/config` (or `-F`'s file)
/// parsed by us instead.
pub async fn lookup(host: &str, extra: &[String]) -> Result<HostSettings, SshConfigError> {
    if let Some(settings) = ssh_g(host, extra).await? {
        return Ok(settings);
    }
    let config = extra
        .windows(2)
        .find(|w| w[0] == "-F")
        .map(|w| crate::util::expand_tilde(&w[1]))
        .or_else(|| crate::util::home_dir().map(|h| h.join(".ssh/config")));
    config.map_or(Ok(HostSettings::default()), |path| parse_file(&path, host))
}

/// `ssh -G`'s answer, or `None` when there is no OpenSSH client to ask.
async fn ssh_g(host: &str, extra: &[String]) -> Result<Option<HostSettings>, SshConfigError> {
    let shown = shown_command(host, extra);
    let mut command = tokio::process::Command::new("ssh");
    command
        .arg("-G")
        .args(extra)
        .arg("--")
        .arg(host)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SSH_G_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            debug!(%err, "no OpenSSH client; parsing the ssh config ourselves");
            return Ok(None);
        }
        Ok(Err(source)) => {
            return Err(SshConfigError::Spawn {
                command: shown,
                source,
            });
        }
        Err(_) => {
            return Err(SshConfigError::Timeout {
                command: shown,
                after: SSH_G_TIMEOUT,
            });
        }
    };
    if !output.status.success() {
        return Err(SshConfigError::Rejected {
            command: shown,
            message: complaint(&String::from_utf8_lossy(&output.stderr), output.status),
        });
    }
    Ok(Some(parse_ssh_g(&String::from_utf8_lossy(&output.stdout))))
}

/// `ssh -G [extra…] host` as the user would type it, control characters escaped.
fn shown_command(host: &str, extra: &[String]) -> String {
    let words: Vec<&str> = ["ssh", "-G"]
        .into_iter()
        .chain(extra.iter().map(String::as_str))
        .chain([host])
        .collect();
    crate::util::escape::escape_controls(&words.join(" ")).into_owned()
}

/// The first lines of ssh's stderr (escaped, joined with "; "), or its exit status when it said nothing.
fn complaint(stderr: &str, status: std::process::ExitStatus) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(QUOTED_LINES)
        .collect();
    if lines.is_empty() {
        return format!("it exited with {status} and said nothing");
    }
    let text = crate::rpc::truncate_chars(&lines.join("; "), 600);
    crate::util::escape::escape_controls(&text).into_owned()
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
pub fn parse_file(path: &Path, host: &str) -> Result<HostSettings, SshConfigError> {
    let mut settings = HostSettings::default();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    read_into(path, &base, host, &mut settings, 0)?;
    Ok(settings)
}

/// Parse config text (for tests).
pub fn parse_text(text: &str, base: &Path, host: &str) -> Result<HostSettings, SshConfigError> {
    let mut settings = HostSettings::default();
    apply(text, "ssh config", base, host, &mut settings, 0)?;
    Ok(settings)
}

fn read_into(
    path: &Path,
    base: &Path,
    host: &str,
    settings: &mut HostSettings,
    depth: usize,
) -> Result<(), SshConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => apply(&text, &path.display().to_string(), base, host, settings, depth),
        // A missing ~/.ssh/config (or Include target) is normal: ssh ignores it too.
        Err(err) => {
            debug!(path = %path.display(), %err, "ssh config not read");
            Ok(())
        }
    }
}

fn apply(
    text: &str,
    file: &str,
    base: &Path,
    host: &str,
    settings: &mut HostSettings,
    depth: usize,
) -> Result<(), SshConfigError> {
    // Options before the first Host apply to every host.
    let mut active = true;
    for (index, line) in text.lines().enumerate() {
        let Some((key, args)) = split_directive(line) else {
            continue;
        };
        match key.as_str() {
            "host" => active = pattern::list_matches(args.iter().map(String::as_str), host),
            // Match needs ssh's own evaluation (exec, user, localnetwork, …): skipping the block could
            // connect somewhere `ssh` would not, so we refuse instead.
            "match" => {
                return Err(SshConfigError::Match {
                    file: crate::util::escape::escape_controls(file).into_owned(),
                    line: index + 1,
                    directive: crate::util::escape::escape_controls(line.trim()).into_owned(),
                });
            }
            "include" if active && depth < MAX_INCLUDE_DEPTH => {
                for pattern in &args {
                    for file in include_files(pattern, base) {
                        read_into(&file, base, host, settings, depth + 1)?;
                    }
                }
            }
            _ if !active => {}
            _ => set(settings, &key, &args),
        }
    }
    if let Some(hostname) = &mut settings.hostname {
        // `%h` in HostName stands for the name given on the command line.
        *hostname = hostname.replace("%h", host);
    }
    Ok(())
}

/// One directive of an active block.
fn set(settings: &mut HostSettings, key: &str, args: &[String]) {
    match key {
        "hostname" => set_once(&mut settings.hostname, args.first()),
        "user" => set_once(&mut settings.user, args.first()),
        "port" if settings.port.is_none() => settings.port = args.first().and_then(|p| p.parse().ok()),
        "identityfile" => settings.identity_files.extend(args.first().cloned()),
        "proxyjump" => set_once(&mut settings.proxy_jump, args.first().filter(|v| *v != "none")),
        "userknownhostsfile" if settings.user_known_hosts_files.is_empty() => {
            settings.user_known_hosts_files = args.to_vec();
        }
        "stricthostkeychecking" => set_once(&mut settings.strict_host_key_checking, args.first()),
        _ => {}
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

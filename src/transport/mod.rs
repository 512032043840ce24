//! How we reach `imsg rpc`: a local (or wrapper) process, or the native SSH connection. `resolve`
//! decides which per account; `open` starts the peer and hands back a JSON-RPC client. Everything
//! else that runs over the connection (SFTP, exec) is asked of the peer's `SshConnection`.

pub mod control;
pub mod link;
pub mod process;
pub mod resolve;
pub mod ssh;
pub mod wrapper;

use std::path::PathBuf;
use std::sync::Arc;

use crate::rpc::{ClientOptions, ExitInfo, RpcClient};
use resolve::{Plan, ResolveError, SshPlan};
use ssh::{SshConnection, SshError, exec::ExecHandle};

/// Why a transport could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot start {program}: {source}{}", spawn_remedy(.source))]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} started without a {stream} pipe")]
    MissingPipe { program: PathBuf, stream: &'static str },
}

/// Why an account could not reach imsg.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(
        "no imsg found on {host}: tried the login shell's PATH, /opt/homebrew/bin and /usr/local/bin; set channels.imessage.ssh.remoteCliPath"
    )]
    NoRemoteImsg { host: String },
}

/// The running `imsg rpc` behind a client.
#[derive(Debug)]
pub enum Peer {
    Process(process::ProcessHandle),
    Ssh {
        exec: ExecHandle,
        connection: Arc<SshConnection>,
    },
}

impl Peer {
    /// Graceful stop: stdin EOF, wait for the exit, then kill / close and disconnect.
    pub async fn stop(self, rpc: &RpcClient) -> Option<ExitInfo> {
        match self {
            Peer::Process(handle) => handle.stop(rpc).await,
            Peer::Ssh { exec, connection } => {
                let exit = exec.stop(rpc).await;
                connection.disconnect().await;
                exit
            }
        }
    }

    /// Why the SSH connection under this peer ended, when it has (None: it is up, or no SSH).
    /// russh closes the channels a moment before it reports the reason, so wait for it briefly.
    pub async fn end_reason(&self) -> Option<String> {
        let Peer::Ssh { connection, .. } = self else {
            return None;
        };
        if !connection.is_closed() {
            return None;
        }
        for _ in 0..20 {
            if let Some(reason) = connection.end_reason() {
                return Some(reason);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Some("the SSH connection closed".to_string())
    }

    /// The SSH connection, when there is one: attachments ask it for SFTP or exec channels.
    pub fn connection(&self) -> Option<&Arc<SshConnection>> {
        match self {
            Peer::Ssh { connection, .. } => Some(connection),
            Peer::Process(_) => None,
        }
    }
}

/// Start the account's `imsg rpc`. `remote_cli` caches the imsg path found on the Mac, so the login
/// shell is asked once per run, not on every reconnect.
pub async fn open(
    plan: &Plan,
    account: &str,
    options: ClientOptions,
    remote_cli: &mut Option<String>,
) -> Result<(RpcClient, Peer), OpenError> {
    match plan {
        Plan::Process { program, args } => {
            let (rpc, handle) = process::spawn(program, args, options)?;
            Ok((rpc, Peer::Process(handle)))
        }
        Plan::Ssh(ssh_plan) => {
            let target = resolve::resolve_target(ssh_plan, account).await?;
            let connection = Arc::new(ssh::connect(&target).await?);
            let cli = match remote_cli.clone().or_else(|| ssh_plan.remote_cli.clone()) {
                Some(cli) => cli,
                None => {
                    let found = find_remote_imsg(&connection, ssh_plan).await?;
                    tracing::info!(account, imsg = %found, "found imsg on the Mac");
                    found
                }
            };
            *remote_cli = Some(cli.clone());
            let command = ssh::quote::rpc_command(&cli, ssh_plan.db_path.as_deref());
            tracing::debug!(account, command, "starting imsg rpc over ssh");
            let (rpc, exec) = ssh::exec::exec_rpc(&connection, &command, options).await?;
            Ok((rpc, Peer::Ssh { exec, connection }))
        }
    }
}

/// macOS runs `ssh host cmd` in a non-login shell whose PATH lacks /opt/homebrew/bin: ask the login
/// shell, then try the two Homebrew prefixes.
pub async fn find_remote_imsg(connection: &SshConnection, plan: &SshPlan) -> Result<String, OpenError> {
    const PROBE: &str = r#"for p in "$("${SHELL:-/bin/sh}" -lc 'command -v imsg' 2>/dev/null)" /opt/homebrew/bin/imsg /usr/local/bin/imsg; do if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; exit 0; fi; done; exit 1"#;
    let captured = ssh::exec::exec_capture(connection, PROBE, std::time::Duration::from_secs(20)).await?;
    let found = captured
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('/'))
        .map(str::to_string);
    found.ok_or_else(|| OpenError::NoRemoteImsg {
        host: plan.host.clone(),
    })
}

fn spawn_remedy(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            " (check channels.imessage.cliPath: the file does not exist or is not on PATH)"
        }
        std::io::ErrorKind::PermissionDenied => " (the file is not executable: chmod +x it)",
        _ => "",
    }
}

/// The arguments of `imsg rpc`: `rpc` plus `--db <path>` when a database path is configured.
pub fn rpc_args(db_path: Option<&str>) -> Vec<String> {
    let mut args = vec!["rpc".to_string()];
    if let Some(db) = db_path.map(str::trim).filter(|db| !db.is_empty()) {
        args.push("--db".to_string());
        args.push(db.to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_database_only_when_configured() {
        assert_eq!(rpc_args(None), vec!["rpc"]);
        assert_eq!(rpc_args(Some("  ")), vec!["rpc"]);
        assert_eq!(
            rpc_args(Some("~/Library/Messages/chat.db")),
            vec!["rpc", "--db", "~/Library/Messages/chat.db"]
        );
    }
}

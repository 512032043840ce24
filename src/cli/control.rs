//! `imsg-bridge control-master --socket PATH` (hidden): the background process a drop-in starts to
//! share one SSH connection with the drop-ins after it (docs/ssh.md, "Connection sharing"). It
//! resolves the Mac the way `imsg` does, from the same global options, and serves the socket until
//! `controlPersistMs` after its last client, or SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::CliError;
use crate::config::{Account, Config, SshConfig};
use crate::transport::control::{self, server};
use crate::transport::resolve::{self, Plan};
use crate::transport::ssh::SshTarget;

#[derive(Debug, clap::Args)]
pub struct ControlMasterArgs {
    /// The socket to serve (`<stateDir>/control/<hash>.sock`)
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
}

pub async fn control_master(
    config: &Config,
    account: &Account,
    target: Option<&str>,
    args: &ControlMasterArgs,
) -> anyhow::Result<ExitCode> {
    let target = target_of(account, target).await?;
    let expected = control::socket_path(&config.bridge.state_dir, &target);
    if expected != args.socket {
        // The client resolved the target differently (e.g. ~/.ssh/config changed in between): we
        // still serve what we resolved, the client finds its own master next time.
        warn!(
            socket = %args.socket.display(),
            expected = %expected.display(),
            "the socket is not the one this target maps to"
        );
    }
    let persist = account
        .ssh
        .as_ref()
        .map_or(SshConfig::default().control_persist_ms, |s| s.control_persist_ms);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let served = server::serve(target, &args.socket, Duration::from_millis(persist), cancel);
    tokio::pin!(served);
    tokio::select! {
        result = &mut served => result?,
        () = stop_signal() => {
            stop.cancel();
            served.await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves once SIGTERM or SIGINT arrives (never, when they cannot be watched).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The Mac as `imsg` resolves it: `--target` through ~/.ssh/config, else the account's SSH plan,
/// else its `remoteHost`.
async fn target_of(account: &Account, target: Option<&str>) -> anyhow::Result<SshTarget> {
    if let Some(target) = target {
        return Ok(resolve::target_from_cli(target, account).await?);
    }
    match resolve::plan(account)? {
        Plan::Ssh(plan) => Ok(resolve::resolve_target(&plan, &account.id).await?),
        Plan::Process { program, .. } => match account.remote_host.as_deref() {
            Some(remote_host) => Ok(resolve::target_from_cli(remote_host, account).await?),
            None => Err(not_ssh(account, &program).into()),
        },
    }
}

fn not_ssh(account: &Account, program: &Path) -> CliError {
    CliError::Usage(format!(
        "{}: imsg is reached through the local program {}, not over SSH: nothing to share",
        account.id,
        program.display()
    ))
}

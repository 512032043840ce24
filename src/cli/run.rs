//! `imsg-bridge run`: every enabled account (or `--account`) until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::CliError;
use crate::config::Config;
use crate::gateway::{AccountRuntime, run_account};
use crate::sink::Sink;
use crate::state::CursorStore;

pub async fn run(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let accounts: Vec<AccountRuntime> = match only {
        Some(id) => vec![super::runtime_of(
            config,
            super::select_account(config, Some(id))?,
        )?],
        None => config
            .enabled_accounts()
            .map(|a| super::runtime_of(config, a))
            .collect::<Result<_, _>>()?,
    };
    if accounts.is_empty() {
        return Err(
            CliError::Usage("no enabled iMessage account in the config (channels.imessage)".into()).into(),
        );
    }
    std::fs::create_dir_all(&config.bridge.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            config.bridge.state_dir.display()
        )
    })?;
    let cursors = CursorStore::new(&config.bridge.state_dir);
    let sink = Sink::stdout();
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));

    let mut tasks = tokio::task::JoinSet::new();
    for account in accounts {
        let (cursors, sink, cancel) = (cursors.clone(), sink.clone(), cancel.clone());
        tasks.spawn(async move {
            let result = run_account(&account, &cursors, &sink, &cancel).await;
            if let Err(err) = &result {
                error!(account = %account.id, "account stopped: {err}");
            }
            result.is_ok()
        });
    }
    let mut all_ok = true;
    while let Some(joined) = tasks.join_next().await {
        all_ok &= joined.unwrap_or(false);
    }
    if all_ok {
        info!("stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing the current message, then stopping"),
        _ = int.recv() => info!("SIGINT: finishing the current message, then stopping"),
    }
    cancel.cancel();
}

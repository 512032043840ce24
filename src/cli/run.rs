//! `imsg-bridge run`: every enabled account (or `--account`) until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::CliError;
use crate::config::Config;
use crate::gateway::{AccountRuntime, run_account};
use crate::sink::Sink;
use crate::sink::reply::Outboxes;
use crate::state::CursorStore;
use std::sync::Arc;

/// How long in-flight work may take to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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
    let cancel = CancellationToken::new();
    let outboxes = Arc::new(Outboxes::default());
    outboxes.set_default_account(&config.default_account);
    let mut receivers: Vec<_> = accounts.iter().map(|a| outboxes.open(&a.id)).collect();
    let sink = Sink::from_config(&config.bridge.agent, outboxes.clone(), cancel.clone());
    tokio::spawn(stop_on_signal(cancel.clone()));

    let mut tasks = tokio::task::JoinSet::new();
    for account in accounts {
        let (cursors, sink, cancel) = (cursors.clone(), sink.clone(), cancel.clone());
        let outbox = receivers.remove(0);
        tasks.spawn(async move {
            let result = run_account(&account, &cursors, &sink, outbox, &cancel).await;
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
    // A second signal, or work that does not drain in time, ends the process at once; cursors are
    // only ever written after delivery, so nothing accepted is lost.
    tokio::select! {
        _ = term.recv() => error!("second signal: exiting now"),
        _ = int.recv() => error!("second signal: exiting now"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => error!("still busy {} s after the signal: exiting now", DRAIN_TIMEOUT.as_secs()),
    }
    std::process::exit(1);
}

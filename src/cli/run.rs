//! `imsg-bridge run`: every enabled account (or `--account`) until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::CliError;
use crate::config::Config;
use crate::gateway::control::BridgeControl;
use crate::gateway::status::StatusBoard;
use crate::gateway::{AccountRuntime, run_account};
use crate::sink::Sink;
use crate::sink::reply::Outboxes;
use crate::state::CursorStore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long in-flight work may take to finish after SIGINT/SIGTERM.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn run(config: &Config, only: Option<&str>) -> anyhow::Result<ExitCode> {
    let accounts = runtimes(config, only)?;
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
    let cancel = CancellationToken::new();
    let outboxes = Arc::new(Outboxes::default());
    outboxes.set_default_account(&config.default_account);
    let shared = Shared {
        cursors: CursorStore::new(&config.bridge.state_dir),
        sink: Sink::from_config(&config.bridge.agent, outboxes.clone(), cancel.clone()),
        outboxes,
        status: Arc::new(StatusBoard::default()),
    };
    if let Some(http) = &config.bridge.http {
        // Refuse to start without a usable token rather than serve an open control API.
        let token = crate::http::token_from_env(http).map_err(|e| CliError::Usage(e.to_string()))?;
        let control = Arc::new(BridgeControl {
            outboxes: shared.outboxes.clone(),
            status: shared.status.clone(),
        });
        let (http, metrics, stop) = (http.clone(), shared.status.metrics.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(err) = crate::http::serve(&http, token, control, metrics, stop).await {
                error!("control API stopped: {err}");
            }
        });
    }
    tokio::spawn(stop_on_signal(cancel.clone()));

    let mut fleet: BTreeMap<String, Running> = BTreeMap::new();
    // Fix 11: accounts that reach one backend share the first one's watcher, so each message is
    // handled once; the others send through it.
    let mut watchers: BTreeMap<String, String> = BTreeMap::new();
    let mut sharing = Vec::new();
    for (account, fingerprint) in accounts {
        let backend = config
            .account(&account.id)
            .map(crate::config::account_backend)
            .unwrap_or_default();
        if let Some(first) = watchers.get(&backend) {
            sharing.push((account.id.clone(), first.clone()));
            continue;
        }
        watchers.insert(backend, account.id.clone());
        fleet.insert(account.id.clone(), start(&shared, account, fingerprint, &cancel));
    }
    for (account, via) in sharing {
        info!(account = %account, via = %via, "same backend as another account: sharing its watcher");
        let _ = shared.outboxes.alias(&account, &via);
        shared.status.update(&account, |s| {
            s.state = crate::gateway::status::AccountState::Shared;
            s.via = Some(via.clone());
        });
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut all_ok = true;
    loop {
        // An account that ended on its own (its sink failed for good) is not restarted.
        let finished: Vec<String> = fleet
            .iter()
            .filter(|(_, running)| running.handle.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            if let Some(running) = fleet.remove(&id) {
                all_ok &= running.handle.await.unwrap_or(false);
            }
        }
        if fleet.is_empty() {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = async { match hangup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => {
                reload(config, only, &shared, &mut fleet, &cancel).await;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
    for (_, running) in fleet {
        all_ok &= running.handle.await.unwrap_or(false);
    }
    if all_ok {
        info!("stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// What every account task shares.
struct Shared {
    cursors: CursorStore,
    sink: Sink,
    outboxes: Arc<Outboxes>,
    status: Arc<StatusBoard>,
}

/// A running account: its own stop token (a child of the process's) and what it was started from.
struct Running {
    fingerprint: String,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<bool>,
}

/// The accounts to run, each with a fingerprint of its settings (to tell a changed one on reload).
fn runtimes(config: &Config, only: Option<&str>) -> anyhow::Result<Vec<(AccountRuntime, String)>> {
    let selected: Vec<&crate::config::Account> = match only {
        Some(id) => vec![super::select_account(config, Some(id))?],
        None => config.enabled_accounts().collect(),
    };
    selected
        .into_iter()
        .map(|a| Ok((super::runtime_of(config, a)?, format!("{a:?}"))))
        .collect()
}

fn start(
    shared: &Shared,
    account: AccountRuntime,
    fingerprint: String,
    cancel: &CancellationToken,
) -> Running {
    let own = cancel.child_token();
    let outbox = shared.outboxes.open(&account.id);
    let (cursors, sink, status, stop) = (
        shared.cursors.clone(),
        shared.sink.clone(),
        shared.status.clone(),
        own.clone(),
    );
    let handle = tokio::spawn(async move {
        let result = run_account(&account, &cursors, &sink, outbox, status, &stop).await;
        if let Err(err) = &result {
            error!(account = %account.id, "account stopped: {err}");
        }
        result.is_ok()
    });
    Running {
        fingerprint,
        cancel: own,
        handle,
    }
}

/// SIGHUP: re-read the config; restart changed accounts, start new ones, stop removed ones, leave
/// the others untouched. A config that does not load changes nothing.
async fn reload(
    old: &Config,
    only: Option<&str>,
    shared: &Shared,
    fleet: &mut BTreeMap<String, Running>,
    cancel: &CancellationToken,
) {
    let Some(path) = old.path.as_deref() else {
        warn!("SIGHUP: no config file to reload");
        return;
    };
    let config = match crate::config::load(Some(path)) {
        Ok(config) => config,
        Err(err) => {
            error!("SIGHUP: the config does not load, keeping the running one: {err}");
            return;
        }
    };
    let wanted = match runtimes(&config, only) {
        Ok(wanted) => wanted,
        Err(err) => {
            error!("SIGHUP: {err:#}; keeping the running accounts");
            return;
        }
    };
    if format!("{:?}", config.bridge.agent) != format!("{:?}", old.bridge.agent) {
        warn!("SIGHUP: bridge.agent changed; that takes a restart of imsg-bridge");
    }
    let wanted_ids: Vec<String> = wanted.iter().map(|(a, _)| a.id.clone()).collect();
    let gone: Vec<String> = fleet
        .keys()
        .filter(|id| !wanted_ids.contains(id))
        .cloned()
        .collect();
    for id in gone {
        if let Some(running) = fleet.remove(&id) {
            info!(account = %id, "SIGHUP: account removed; stopping it");
            running.cancel.cancel();
            let _ = running.handle.await;
            shared.status.remove(&id);
        }
    }
    for (account, fingerprint) in wanted {
        match fleet.get(&account.id) {
            Some(running) if running.fingerprint == fingerprint => {}
            Some(_) => {
                info!(account = %account.id, "SIGHUP: account changed; restarting it");
                if let Some(running) = fleet.remove(&account.id) {
                    running.cancel.cancel();
                    let _ = running.handle.await;
                }
                fleet.insert(account.id.clone(), start(shared, account, fingerprint, cancel));
            }
            None => {
                info!(account = %account.id, "SIGHUP: new account; starting it");
                fleet.insert(account.id.clone(), start(shared, account, fingerprint, cancel));
            }
        }
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

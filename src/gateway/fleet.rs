//! The fleet: every enabled account of a config under its own supervisor, and what they share (the
//! sink, the cursor store, the outboxes, the status board, the optional control API), as one tree
//! of tasks. [`run`] starts it, re-reads the config when its [`ReloadHook`] asks, and stops it when
//! cancelled; every task it starts is tracked, so when `run` returns all of them have ended
//! (docs/agents.md, "Several accounts" and "Signals").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::channel::ChannelRuntime;
use super::control::BridgeControl;
use super::status::{AccountState, StatusBoard};
use super::{AccountRuntime, MediaRuntime, run_account};
use crate::config::{Account, Config, HttpConfig};
use crate::envelope::EnvelopeContext;
use crate::http::HttpError;
use crate::media::roots::OutboundRoots;
use crate::policy::Settings;
use crate::sink::reply::Outboxes;
use crate::sink::{Sink, SinkSetup};
use crate::state::CursorStore;
use crate::transport::control::{self, server};
use crate::transport::resolve::{self, Plan, ResolveError, SshPlan};

/// How a fleet runs. `Default` runs every enabled account with the configured sink.
pub struct FleetOptions {
    /// Run only this account (`--account`); every enabled account otherwise.
    pub only: Option<String>,
    /// Where envelopes go; `None`: the sink `bridge.agent` names.
    pub sink: Option<Sink>,
    /// The control API's bearer token; `None`: read from the variable `bridge.http.tokenEnv` names.
    pub http_token: Option<String>,
    /// Every task the fleet starts; `run` closes it and waits until it is empty.
    pub tasks: TaskTracker,
    /// Every account's state and the counters; the caller may watch them while the fleet runs.
    pub status: Arc<StatusBoard>,
    /// The accounts' outboxes; an agent inside this process routes its replies through them.
    pub outboxes: Arc<Outboxes>,
    /// Asks the running fleet to re-read the config file.
    pub reload: ReloadHook,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            only: None,
            sink: None,
            http_token: None,
            tasks: TaskTracker::new(),
            status: Arc::new(StatusBoard::default()),
            outboxes: Arc::new(Outboxes::default()),
            reload: ReloadHook::default(),
        }
    }
}

/// Asks a running fleet to re-read its config file (SIGHUP). Requests made while one is being
/// handled make one more reload, not one each.
#[derive(Debug, Clone, Default)]
pub struct ReloadHook(Arc<Notify>);

impl ReloadHook {
    pub fn request(&self) {
        self.0.notify_one();
    }

    async fn requested(&self) {
        self.0.notified().await;
    }
}

/// Why the fleet did not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("no enabled iMessage account in the config (channels.imessage)")]
    NoAccount,
    #[error("no account {id:?} in the config (accounts: {})", known.join(", "))]
    UnknownAccount { id: String, known: Vec<String> },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot create the state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The control API's token is missing or too weak.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The agent sink cannot start (the nats sink's token, credentials or TLS files).
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

impl FleetError {
    /// A mistake in the config or the environment (exit 2 in docs/cli.md) rather than a failure
    /// of this machine.
    pub fn is_usage(&self) -> bool {
        match self {
            Self::NoAccount
            | Self::UnknownAccount { .. }
            | Self::Resolve(_)
            | Self::Http(_)
            | Self::Sink(_) => true,
            Self::StateDir { .. } => false,
        }
    }
}

/// How a fleet ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FleetEnd {
    /// Accounts that stopped with an error (each was logged as it stopped).
    pub failed: Vec<String>,
}

/// Run the accounts of `config` until `cancel` fires or every account ended on its own (its sink
/// failed for good; such an account is not restarted). Returns once every task it started ended.
pub async fn run(
    config: &Config,
    options: FleetOptions,
    cancel: CancellationToken,
) -> Result<FleetEnd, FleetError> {
    let selected = select(config, options.only.as_deref())?;
    if selected.is_empty() {
        return Err(FleetError::NoAccount);
    }
    let state_dir = &config.bridge.state_dir;
    std::fs::create_dir_all(state_dir).map_err(|source| FleetError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    // The default root of outbound media exists from the start, for agents to put files in.
    let outbound = state_dir.join(crate::media::roots::OUTBOUND_DIR);
    if let Err(err) = std::fs::create_dir_all(&outbound) {
        warn!("cannot create {}: {err}", outbound.display());
    }
    // Refuse to start without a usable token rather than serve an open control API.
    let http = match (&config.bridge.http, options.http_token) {
        (Some(http), Some(token)) => Some((http, token)),
        (Some(http), None) => Some((http, crate::http::token_from_env(http)?)),
        (None, _) => None,
    };
    // The fleet's own token also stops the sink and the control API when every account ended.
    let stop = cancel.child_token();
    options.outboxes.set_default_account(&config.default_account);
    let sink = match options.sink {
        Some(sink) => sink,
        None => Sink::from_config(
            &config.bridge.agent,
            SinkSetup {
                outboxes: options.outboxes.clone(),
                metrics: options.status.metrics.clone(),
                state_dir,
                cancel: stop.clone(),
                tasks: &options.tasks,
            },
        )?,
    };
    if let Sink::Nats(nats) = &sink {
        let max_age = config.bridge.replay.max_age_minutes.saturating_mul(60);
        nats.health().set_replay_bound(Duration::from_secs(max_age));
        options.status.set_nats(nats.health());
    }
    let mut fleet = Fleet {
        config,
        only: options.only,
        resources: FleetResources {
            cursors: CursorStore::new(state_dir),
            sink,
            outboxes: options.outboxes,
            status: options.status,
        },
        accounts: BTreeMap::new(),
        joins: JoinSet::new(),
        deferred: Vec::new(),
        tasks: options.tasks,
        cancel: stop,
        failed: Vec::new(),
    };
    if let Some((http, token)) = http {
        fleet.serve(http, token);
    }
    fleet.start_all(selected);
    fleet.supervise(&options.reload).await;
    Ok(fleet.finish().await)
}

/// How long `run` waits before it tries again to be the master of an account's socket that another
/// master (a drop-in's, started before `run`) holds.
const SHARING_RETRY: Duration = Duration::from_secs(5);

/// `run` is the connection-sharing master of its SSH accounts (docs/ssh.md, "Connection sharing"):
/// `imsg-bridge imsg` processes for the same Mac use its socket instead of starting a master. It
/// serves until the account stops, with its own connection made on the first request.
async fn share_connection(plan: SshPlan, account: String, state_dir: PathBuf, cancel: CancellationToken) {
    let target = match resolve::resolve_target(&plan, &account).await {
        Ok(target) => target,
        Err(err) => {
            debug!(account = %account, "connection sharing off: {err}");
            return;
        }
    };
    let socket = match control::prepare(&state_dir, &target) {
        Ok(socket) => socket,
        Err(err) if err.is_unsafe() => {
            warn!(account = %account, "{err}");
            return;
        }
        Err(err) => {
            debug!(account = %account, "connection sharing off: {err}");
            return;
        }
    };
    loop {
        let served = server::serve_with(
            target.clone(),
            &socket,
            Duration::MAX,
            server::Connect::OnDemand,
            cancel.clone(),
        )
        .await;
        if let Err(err) = served {
            warn!(account = %account, "connection sharing: {err}");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SHARING_RETRY) => {}
        }
    }
}

/// Resolve what `run` and the one-shot commands need from an account (decides its transport).
pub fn account_runtime(config: &Config, account: &Account) -> Result<AccountRuntime, ResolveError> {
    let plan = resolve::plan(account)?;
    Ok(AccountRuntime {
        id: account.id.clone(),
        remote_host: crate::media::files::RemoteHost::of(account, &plan, &config.bridge.state_dir),
        plan,
        include_attachments: account.include_attachments,
        probe_timeout: Duration::from_millis(account.probe_timeout_ms),
        envelope: EnvelopeContext {
            account: account.id.clone(),
            agent_id: config.default_agent_id().to_string(),
            dm_scope: config.session.dm_scope,
            main_key: config.session.main_key.clone(),
        },
        replay: config.bridge.replay,
        debounce: Duration::from_millis(
            config
                .messages
                .imessage_debounce_ms
                .or(config.messages.inbound_debounce_ms)
                .unwrap_or(0),
        ),
        channel: channel_runtime(config, account),
        media: media_runtime(config, account),
    })
}

fn channel_runtime(config: &Config, account: &Account) -> ChannelRuntime {
    ChannelRuntime {
        settings: Settings::for_config(config, account),
        dm_history_limit: account.dm_history_limit,
        dms: account.dms.clone(),
        state_dir: config.bridge.state_dir.clone(),
        service: account.service,
        region: account.region.clone(),
        config_path: config.path.clone(),
        commands_config: config.commands_config,
        config_writes: account.config_writes,
        flat: config.accounts.len() == 1 && account.id == crate::config::DEFAULT_ACCOUNT_ID,
        shaping: crate::outbound::Shaping {
            service: account.service,
            region: account.region.clone(),
            chunk_limit: account.text_chunk_limit,
            chunk_mode: account.chunk_mode,
        },
        response_prefix: crate::outbound::prefix::resolve_prefix(
            account.response_prefix.as_deref(),
            &crate::outbound::prefix::PrefixContext {
                identity_name: config.default_agent().and_then(|a| a.identity_name.clone()),
                ..Default::default()
            },
        ),
        outbound_grace: Duration::from_millis(config.bridge.media.outbound_grace_ms),
        media_max_bytes: account.media_max_mb.saturating_mul(1024 * 1024),
        outbound_roots: OutboundRoots::from_config(config),
    }
}

/// The attachment settings of `account` (also the drop-in's).
pub fn media_runtime(config: &Config, account: &Account) -> MediaRuntime {
    MediaRuntime {
        inbound: config.bridge.state_dir.join("media").join("inbound"),
        local_roots: account.attachment_roots.clone(),
        remote_roots: account.remote_attachment_roots.clone(),
        max_bytes: account.media_max_mb.saturating_mul(1024 * 1024),
        retries: config.bridge.media.pull_retries,
        sftp_timeout: Duration::from_millis(
            account.ssh.as_ref().map_or(60_000, |s| s.sftp_request_timeout_ms),
        ),
        cache_max_bytes: config.bridge.media.cache_max_mb.saturating_mul(1024 * 1024),
        cache_max_age: Duration::from_secs(config.bridge.media.cache_max_age_hours.saturating_mul(3600)),
    }
}

/// An account to run, with a fingerprint of its settings (to tell a changed one on reload) and the
/// backend it reaches (to share one watcher between accounts that reach the same one).
struct Selected {
    runtime: AccountRuntime,
    fingerprint: String,
    backend: String,
}

/// The accounts `only` names (or every enabled one), resolved.
fn select(config: &Config, only: Option<&str>) -> Result<Vec<Selected>, FleetError> {
    let accounts: Vec<&Account> = match only {
        Some(id) => vec![config.account(id).ok_or_else(|| FleetError::UnknownAccount {
            id: id.to_string(),
            known: config.accounts.iter().map(|a| a.id.clone()).collect(),
        })?],
        None => config.enabled_accounts().collect(),
    };
    accounts
        .into_iter()
        .map(|account| {
            Ok(Selected {
                runtime: account_runtime(config, account)?,
                fingerprint: format!("{account:?}"),
                backend: crate::config::account_backend(account),
            })
        })
        .collect()
}

/// What every account task shares.
#[derive(Clone)]
struct FleetResources {
    cursors: CursorStore,
    sink: Sink,
    outboxes: Arc<Outboxes>,
    status: Arc<StatusBoard>,
}

/// A running account: its own stop token (a child of the fleet's), the settings it was started
/// from, and its task.
struct Running {
    fingerprint: String,
    cancel: CancellationToken,
    task: Id,
}

/// An account task's end: whether the account stopped without an error.
type Joined = Result<(Id, bool), JoinError>;

struct Fleet<'a> {
    /// The config the fleet started from: the file a reload re-reads, the agent it compares.
    config: &'a Config,
    only: Option<String>,
    resources: FleetResources,
    accounts: BTreeMap<String, Running>,
    /// The account tasks (also counted by `tasks`).
    joins: JoinSet<bool>,
    /// Account tasks that ended while a reload waited for another one; handled after the reload.
    deferred: Vec<Joined>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    failed: Vec<String>,
}

impl Fleet<'_> {
    fn serve(&self, http: &HttpConfig, token: String) {
        let control = Arc::new(BridgeControl {
            outboxes: self.resources.outboxes.clone(),
            status: self.resources.status.clone(),
        });
        let (http, metrics, stop) = (
            http.clone(),
            self.resources.status.metrics.clone(),
            self.cancel.clone(),
        );
        self.tasks.spawn(async move {
            if let Err(err) = crate::http::serve(&http, token, control, metrics, stop).await {
                error!("control API stopped: {err}");
            }
        });
    }

    /// Start every selected account. Accounts that reach one backend share the first one's
    /// watcher, so each message is handled once; the others send through it (docs/differences.md, C11).
    fn start_all(&mut self, selected: Vec<Selected>) {
        let mut watchers: BTreeMap<String, String> = BTreeMap::new();
        let mut sharing = Vec::new();
        for account in selected {
            if let Some(first) = watchers.get(&account.backend) {
                sharing.push((account.runtime.id.clone(), first.clone()));
                continue;
            }
            watchers.insert(account.backend, account.runtime.id.clone());
            self.start(account.runtime, account.fingerprint);
        }
        for (account, via) in sharing {
            info!(account = %account, via = %via, "same backend as another account: sharing its watcher");
            let _ = self.resources.outboxes.alias(&account, &via);
            self.resources.status.update(&account, |s| {
                s.state = AccountState::Shared;
                s.via = Some(via.clone());
            });
        }
    }

    fn start(&mut self, account: AccountRuntime, fingerprint: String) {
        let own = self.cancel.child_token();
        let outbox = self.resources.outboxes.open(&account.id);
        self.resources.sink.serve_account(&account.id, own.clone());
        let (resources, stop, id) = (self.resources.clone(), own.clone(), account.id.clone());
        if let Plan::Ssh(plan) = &account.plan
            && plan.ssh.control_persist_ms > 0
        {
            let sharing = share_connection(
                (**plan).clone(),
                account.id.clone(),
                account.channel.state_dir.clone(),
                own.clone(),
            );
            self.tasks.spawn(sharing);
        }
        let task = self.joins.spawn(self.tasks.track_future(async move {
            let FleetResources {
                cursors,
                sink,
                status,
                ..
            } = resources;
            let result = run_account(&account, &cursors, &sink, outbox, status, &stop).await;
            if let Err(err) = &result {
                error!(account = %account.id, "account stopped: {err}");
            }
            result.is_ok()
        }));
        let running = Running {
            fingerprint,
            cancel: own,
            task: task.id(),
        };
        self.accounts.insert(id, running);
    }

    /// Until cancelled or every account ended on its own: reload when asked, and let go of
    /// accounts that ended (they are not restarted).
    async fn supervise(&mut self, reload: &ReloadHook) {
        let cancel = self.cancel.clone();
        while !self.accounts.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = reload.requested() => self.reload().await,
                Some(joined) = self.joins.join_next_with_id() => self.ended(joined),
            }
        }
    }

    fn ended(&mut self, joined: Joined) {
        let task = task_of(&joined);
        let Some(id) = self
            .accounts
            .iter()
            .find(|(_, running)| running.task == task)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        self.accounts.remove(&id);
        if !matches!(joined, Ok((_, true))) {
            self.failed.push(id);
        }
    }

    /// Re-read the config: restart changed accounts, start new ones, stop removed ones, leave the
    /// others untouched. A config that does not load changes nothing.
    async fn reload(&mut self) {
        let Some(wanted) = self.reread() else {
            return;
        };
        let gone: Vec<String> = self
            .accounts
            .keys()
            .filter(|id| !wanted.iter().any(|w| &w.runtime.id == *id))
            .cloned()
            .collect();
        for id in gone {
            info!(account = %id, "SIGHUP: account removed; stopping it");
            self.stop(&id).await;
            self.resources.status.remove(&id);
        }
        for account in wanted {
            let id = account.runtime.id.clone();
            match self
                .accounts
                .get(&id)
                .map(|r| r.fingerprint == account.fingerprint)
            {
                Some(true) => {}
                Some(false) => {
                    info!(account = %id, "SIGHUP: account changed; restarting it");
                    self.stop(&id).await;
                    self.start(account.runtime, account.fingerprint);
                }
                None => {
                    info!(account = %id, "SIGHUP: new account; starting it");
                    self.start(account.runtime, account.fingerprint);
                }
            }
        }
        for joined in std::mem::take(&mut self.deferred) {
            self.ended(joined);
        }
    }

    /// The accounts the config file wants now; `None` (logged) when it cannot tell.
    fn reread(&self) -> Option<Vec<Selected>> {
        let Some(path) = self.config.path.as_deref() else {
            warn!("SIGHUP: no config file to reload");
            return None;
        };
        let config = match crate::config::load(Some(path)) {
            Ok(config) => config,
            Err(err) => {
                error!("SIGHUP: the config does not load, keeping the running one: {err}");
                return None;
            }
        };
        let wanted = match select(&config, self.only.as_deref()) {
            Ok(wanted) => wanted,
            Err(err) => {
                error!("SIGHUP: {err}; keeping the running accounts");
                return None;
            }
        };
        if config.bridge.agent != self.config.bridge.agent {
            warn!("SIGHUP: bridge.agent changed; that takes a restart of imsg-bridge");
        }
        Some(wanted)
    }

    /// Stop one account and wait for its task; its result does not count. Other account tasks
    /// that end meanwhile are kept for after the reload.
    async fn stop(&mut self, id: &str) {
        let Some(running) = self.accounts.remove(id) else {
            return;
        };
        running.cancel.cancel();
        if let Some(at) = self.deferred.iter().position(|j| task_of(j) == running.task) {
            // It had ended already, while the reload waited for another account.
            let _ = self.deferred.remove(at);
            return;
        }
        while let Some(joined) = self.joins.join_next_with_id().await {
            if task_of(&joined) == running.task {
                return;
            }
            self.deferred.push(joined);
        }
    }

    /// Stop what still runs and wait for every task: the accounts', the sink's, the control API's.
    async fn finish(mut self) -> FleetEnd {
        self.cancel.cancel();
        while let Some(joined) = self.joins.join_next_with_id().await {
            self.ended(joined);
        }
        self.tasks.close();
        self.tasks.wait().await;
        FleetEnd { failed: self.failed }
    }
}

fn task_of(joined: &Joined) -> Id {
    match joined {
        Ok((task, _)) => *task,
        Err(err) => err.id(),
    }
}

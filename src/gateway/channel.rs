//! The iMessage channel inside a session: run each row through the policy, answer strangers with
//! a pairing code, log drops (rate-limited per conversation), and build the envelope of what is
//! dispatched (mentions, quote, held group history, DM history, staged media). Everything the
//! account sends (its own answers, agent replies, API requests) goes through its one
//! [`outbound::Sender`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{debug, info, warn};

use crate::config::{DmConfig, Service};
use crate::envelope::{
    Envelope, EnvelopeContext, HistoryEntry, normalize, normalize_handle, strip_length_prefix,
};
use crate::imsg::{ImsgClient, Message};
use crate::media::roots::OutboundRoots;
use crate::media::{Files, Stager, policy::placeholder};
use crate::outbound::{self, Link, Request, Sender, Target};
use crate::pairing::PairingStore;
use crate::policy::{Decision, DropReason, Inbound, Policy, Settings};
use crate::sink::reply::Outgoing;

/// How long the same drop reason stays quiet for one conversation after it was logged.
const DROP_LOG_QUIET: Duration = Duration::from_secs(60);

/// The channel settings of one account that are not policy.
#[derive(Debug, Clone)]
pub struct ChannelRuntime {
    pub settings: Settings,
    pub dm_history_limit: Option<u32>,
    pub dms: BTreeMap<String, DmConfig>,
    pub state_dir: PathBuf,
    pub service: Service,
    pub region: String,
    /// The file `/config` edits (None: no file, nothing to edit).
    pub config_path: Option<PathBuf>,
    /// `commands.config`: `/config` from chat is allowed at all.
    pub commands_config: bool,
    pub config_writes: bool,
    /// A config without an `accounts` map.
    pub flat: bool,
    /// Chunking and addressing of outgoing text.
    pub shaping: outbound::Shaping,
    /// `responsePrefix`, resolved (templates filled), for agent replies.
    pub response_prefix: Option<String>,
    /// How long uploaded files stay on the Mac after their send.
    pub outbound_grace: Duration,
    pub media_max_bytes: u64,
    /// Which files agents and the API may send (docs/security.md, "Outbound media roots").
    pub outbound_roots: OutboundRoots,
}

/// What a row turned into.
pub enum Outcome {
    Deliver(Box<Envelope>),
    /// Handled (dropped or answered with a pairing code): nothing for the agent.
    Done,
}

impl ChannelRuntime {
    /// What the account's sender needs of these settings.
    fn sender_settings(&self) -> outbound::sender::Settings {
        outbound::sender::Settings {
            account: self.settings.account.clone(),
            shaping: self.shaping.clone(),
            response_prefix: self.response_prefix.clone(),
            max_bytes: self.media_max_bytes,
            grace: self.outbound_grace,
            state_dir: self.state_dir.clone(),
            roots: self.outbound_roots.clone(),
        }
    }
}

/// Per-account channel state; survives reconnects (echo cache, held group history, the sender and
/// its staged uploads).
#[derive(Debug)]
pub struct ChannelState {
    runtime: ChannelRuntime,
    pub policy: Policy,
    /// Every send of the account goes through it.
    pub sender: Sender,
    pairing: PairingStore,
    quiet_until: HashMap<(String, DropReason), Instant>,
    /// The clock of the echo cache (the policy reads it, the sender writes it).
    started: Instant,
    metrics: std::sync::Arc<crate::http::Metrics>,
}

impl ChannelState {
    pub fn new(runtime: ChannelRuntime, metrics: std::sync::Arc<crate::http::Metrics>) -> Self {
        let started = Instant::now();
        Self {
            metrics,
            policy: Policy::new(runtime.settings.clone()),
            sender: Sender::new(runtime.sender_settings(), started),
            pairing: PairingStore::new(&runtime.state_dir),
            runtime,
            quiet_until: HashMap::new(),
            started,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Decide about `message` and, when it is dispatched, build its envelope.
    pub async fn handle(
        &mut self,
        message: &Message,
        context: &EnvelopeContext,
        link: Link<'_>,
        stager: Option<&Stager>,
    ) -> Outcome {
        let account = self.runtime.settings.account.clone();
        let text = strip_length_prefix(&message.text).unwrap_or_else(|| message.text.clone());
        let body_text = if text.trim().is_empty() {
            kept_placeholder(message)
        } else {
            text.trim().to_string()
        };
        let paired =
            if self.runtime.settings.dm_policy == crate::config::DmPolicy::Pairing && !message.is_group {
                self.pairing.allowed(&account)
            } else {
                Vec::new()
            };
        let created_ms = chrono::DateTime::parse_from_rfc3339(&message.created_at)
            .ok()
            .map(|t| t.timestamp_millis());
        let inbound = Inbound {
            message,
            text: &text,
            body_text: &body_text,
            created_ms,
            paired: &paired,
        };
        let now = self.now_ms();
        match self.policy.decide(&inbound, now) {
            Decision::Drop(reason) => {
                self.metrics.inc_dropped(&account, reason.as_str());
                self.log_drop(message, reason);
                Outcome::Done
            }
            Decision::Pairing { sender_id, reply_to } => {
                self.metrics.inc_dropped(&account, "pairing");
                self.challenge(message, &sender_id, &reply_to, link).await;
                Outcome::Done
            }
            Decision::Dispatch(dispatch)
                if self.runtime.commands_config
                    && dispatch.command_authorized
                    && super::config_command::is_config_command(&text)
                    && self.is_owner(message) =>
            {
                self.config_command(message, &text, link).await;
                Outcome::Done
            }
            Decision::Dispatch(dispatch) => {
                let mut shaped = message.clone();
                shaped.is_group = dispatch.is_group;
                let mut envelope = normalize(&shaped, context);
                let history: Vec<HistoryEntry> = dispatch
                    .history
                    .into_iter()
                    .map(|e| HistoryEntry {
                        sender: e.sender,
                        body: e.body,
                        timestamp: e.timestamp,
                        message_id: Some(e.message_id),
                    })
                    .collect();
                envelope.apply_decision(
                    dispatch.was_mentioned,
                    dispatch.command_authorized,
                    dispatch.keep_reply,
                    history,
                );
                if !dispatch.is_group {
                    self.add_dm_history(&mut envelope, message, link.imsg).await;
                }
                if let Some(stager) = stager
                    && !message.attachments.is_empty()
                {
                    let media = stager.stage(message).await;
                    if matches!(stager.files, Files::Remote(_)) {
                        for m in &media {
                            self.metrics.inc_sftp_pulls(&account, m.status.as_str());
                            if m.status == crate::envelope::MediaStatus::Ok {
                                self.metrics.add_sftp_bytes(&account, m.size.unwrap_or(0));
                            }
                        }
                    }
                    envelope.set_media(media);
                }
                Outcome::Deliver(Box::new(envelope))
            }
        }
    }

    /// docs/differences.md C8: a DM envelope carries the chat's previous N messages.
    async fn add_dm_history(&self, envelope: &mut Envelope, message: &Message, imsg: &ImsgClient) {
        let peer = normalize_handle(&message.sender).to_lowercase();
        let limit = self
            .runtime
            .dms
            .iter()
            .find(|(handle, _)| normalize_handle(handle).to_lowercase() == peer)
            .and_then(|(_, dm)| dm.history_limit)
            .or(self.runtime.dm_history_limit)
            .unwrap_or(0);
        if limit == 0 || message.chat_id <= 0 {
            return;
        }
        match imsg.history(message.chat_id, limit + 1, false).await {
            Ok(rows) => {
                let mut earlier: Vec<HistoryEntry> = rows
                    .into_iter()
                    .filter(|m| m.id < message.id)
                    .take(limit as usize)
                    .map(|m| HistoryEntry {
                        sender: if m.is_from_me {
                            "me".to_string()
                        } else {
                            normalize_handle(&m.sender)
                        },
                        body: strip_length_prefix(&m.text).unwrap_or(m.text),
                        timestamp: m.created_at,
                        message_id: Some(m.id.to_string()),
                    })
                    .collect();
                earlier.reverse();
                envelope.history = earlier;
            }
            Err(err) => warn!(rowid = message.id, "cannot read the DM history: {err}"),
        }
    }

    /// Answer a stranger with a pairing code (once per hour, at most 3 pending per account).
    async fn challenge(&mut self, message: &Message, sender_id: &str, reply_to: &str, link: Link<'_>) {
        let account = self.runtime.settings.account.clone();
        let mut meta = serde_json::Map::new();
        meta.insert("sender".into(), json!(message.sender));
        if message.chat_id > 0 {
            meta.insert("chatId".into(), json!(message.chat_id));
        }
        let upsert = match self
            .pairing
            .upsert_request(&account, sender_id, meta, chrono::Utc::now())
        {
            Ok(upsert) => upsert,
            Err(err) => {
                warn!(account = %account, sender = sender_id, "cannot record the pairing request: {err}");
                return;
            }
        };
        if !upsert.created {
            info!(account = %account, sender = sender_id, "pairing request already pending (or 3 pending): no new code sent");
            return;
        }
        // The policy names the conversation in the target grammar (`chat_id:<id>`, or the sender).
        let to = match outbound::parse(reply_to) {
            Ok(to) => to,
            Err(err) => {
                warn!(account = %account, to = reply_to, "cannot address the pairing code: {err}");
                return;
            }
        };
        let text = crate::pairing::reply_text(sender_id, &upsert.code);
        if self.reply(to, &text, link).await {
            info!(account = %account, sender = sender_id, "pairing request: sent the code to the sender");
        }
    }

    /// Send a reply or an API request through the account's sender, count it, log it, and tell
    /// whoever waits (the HTTP API) how it went.
    pub async fn send(&mut self, outgoing: Outgoing, link: Link<'_>) {
        let Outgoing { request, done, gate } = outgoing;
        if let Some(gate) = gate
            && let Err(reason) = gate.await
        {
            // Not a failed send: whoever gated it (the nats sink) decides what happens next.
            debug!(to = %request.to, "send held back: {reason}");
            if let Some(done) = done {
                let _ = done.send(Err(crate::outbound::SendError::Held(reason)));
            }
            return;
        }
        let result = self
            .sender
            .send(&request, link, Some(&mut self.policy.echo), |_| {})
            .await;
        let account = &self.runtime.settings.account;
        match &result {
            Ok(ids) => {
                for _ in ids {
                    self.metrics.inc_sends(account);
                }
                info!(to = %request.to, sends = ids.len(), "delivered reply");
            }
            Err(err) => match err.media_refusal() {
                // Not an imsg send that failed: the file was never read (the message names the rule).
                Some((caller, reason)) => {
                    self.metrics.inc_media_refused(account, caller.as_str(), reason);
                    warn!(to = %request.to, caller = caller.as_str(), "send refused: {err}");
                }
                None => {
                    self.metrics.inc_send_failures(account);
                    warn!(to = %request.to, maybe_delivered = err.maybe_delivered(), "reply failed: {err}");
                }
            },
        }
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }

    /// The owner: a sender named in the config's `allowFrom` (not merely paired, not `*`).
    fn is_owner(&self, message: &Message) -> bool {
        let normalized = normalize_handle(&message.sender);
        let list = &self.runtime.settings.allow_from;
        !list.allows_everyone()
            && list.matches(&crate::policy::Who {
                sender_normalized: &normalized,
                chat_id: None,
                chat_guid: "",
                chat_identifier: "",
            })
    }

    /// Run `/config`, write the file when it changed, reload this account's rules, and reply.
    async fn config_command(&mut self, message: &Message, text: &str, link: Link<'_>) {
        let account = self.runtime.settings.account.clone();
        let reply = match self.runtime.config_path.clone() {
            None => "⚠️ No config file to edit: imsg-bridge was started without one.".to_string(),
            Some(path) => match std::fs::read_to_string(&path) {
                Err(_) => "⚠️ Config file is invalid; fix it before using /config.".to_string(),
                Ok(file_text) => {
                    let scope = super::config_command::Scope {
                        account: &account,
                        flat: self.runtime.flat,
                        config_writes: self.runtime.config_writes,
                    };
                    let outcome = super::config_command::run(&file_text, text, &scope);
                    if let Some(new_text) = &outcome.new_text {
                        match crate::util::atomic_write(&path, new_text.as_bytes()) {
                            Ok(()) => {
                                info!(account = %account, sender = %message.sender, "config changed from chat");
                                self.reload(&path, new_text);
                            }
                            Err(err) => {
                                warn!(account = %account, "cannot write {}: {err}", path.display());
                            }
                        }
                    }
                    outcome.reply
                }
            },
        };
        let to = if message.is_group && message.chat_id > 0 {
            Target::ChatId(message.chat_id)
        } else {
            Target::Handle {
                to: message.sender.trim().to_string(),
                service: Some(Service::Imessage),
            }
        };
        self.reply(to, &reply, link).await;
    }

    /// Take the new rules of this account from the edited file at once.
    fn reload(&mut self, path: &std::path::Path, text: &str) {
        match crate::config::from_str(text, Some(path)) {
            Ok(config) => {
                if let Some(account) = config.account(&self.runtime.settings.account) {
                    let settings = Settings::for_config(&config, account);
                    self.runtime.settings = settings.clone();
                    self.runtime.config_writes = account.config_writes;
                    self.policy.settings = settings;
                }
            }
            Err(err) => warn!("the edited config does not load: {err}"),
        }
    }

    /// Send a text from the bridge itself (remembered like every send, so its echo is not taken as
    /// inbound).
    async fn reply(&mut self, to: Target, text: &str, link: Link<'_>) -> bool {
        let request = Request::bridge(to, text);
        match self
            .sender
            .send(&request, link, Some(&mut self.policy.echo), |_| {})
            .await
        {
            Ok(_) => true,
            Err(err) => {
                warn!(to = %request.to, "reply failed: {err}");
                false
            }
        }
    }

    fn log_drop(&mut self, message: &Message, reason: DropReason) {
        let conversation = if message.chat_id > 0 {
            format!("chat_id:{}", message.chat_id)
        } else {
            message.sender.clone()
        };
        let now = Instant::now();
        let key = (conversation.clone(), reason);
        if self.quiet_until.get(&key).is_some_and(|until| *until > now) {
            debug!(
                rowid = message.id,
                conversation,
                reason = reason.as_str(),
                "dropped"
            );
            return;
        }
        self.quiet_until.insert(key, now + DROP_LOG_QUIET);
        if self.quiet_until.len() > 4096 {
            self.quiet_until.retain(|_, until| *until > now);
        }
        info!(
            account = %self.runtime.settings.account,
            rowid = message.id,
            conversation,
            "dropped inbound message: {}",
            reason.as_str()
        );
    }
}

/// The `<media:…>` placeholder from the first attachment imsg did not mark missing (docs/channel.md),
/// else the first one; empty without attachments.
fn kept_placeholder(message: &Message) -> String {
    let first = message
        .attachments
        .iter()
        .find(|a| !a.missing && !a.original_path.trim().is_empty())
        .or_else(|| message.attachments.first());
    match first {
        Some(a) => placeholder(&crate::media::policy::mime_for(&a.transfer_name, &a.mime_type)),
        None => String::new(),
    }
}

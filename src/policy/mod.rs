//! The inbound decision (docs/channel.md, with the fixes in docs/differences.md): dispatch, pairing challenge, or a
//! drop with its reason. Pure: no I/O, the clock comes in as milliseconds and the pairing store's
//! approvals come in as a list, so every rule is table-tested.

pub mod allowlist;
pub mod caches;
pub mod mention;

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::{Account, ContextVisibility, DmPolicy, GroupConfig, GroupPolicy};
use crate::echo::{EchoCache, is_reflected};
use crate::envelope::normalize_handle;
use crate::imsg::Message;
pub use allowlist::{Allowlist, Who};
pub use caches::{LoopRateLimiter, PendingEntry, PendingHistory, SelfChatCache};

/// Why a message was not dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    MissingSender,
    AgentEchoInSelfChat,
    /// One of our own rows that the echo cache recognises as something the bridge sent.
    OwnSend,
    FromMe,
    GroupWithoutChatId,
    GroupPolicyDisabled,
    GroupAllowlistEmpty,
    NotInGroupAllowFrom,
    DmPolicyDisabled,
    DmPolicyBlocked,
    GroupNotInAllowlist,
    EmptyBody,
    SelfChatEcho,
    Echo,
    Reflected,
    ControlCommandUnauthorized,
    NoMention,
    RateLimited,
}

impl DropReason {
    /// The reason as upstream logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSender => "missing sender",
            Self::AgentEchoInSelfChat => "agent echo in self-chat",
            Self::OwnSend => "from me (our own send)",
            Self::FromMe => "from me",
            Self::GroupWithoutChatId => "group without chat_id",
            Self::GroupPolicyDisabled => "groupPolicy disabled",
            Self::GroupAllowlistEmpty => "groupPolicy allowlist (empty groupAllowFrom)",
            Self::NotInGroupAllowFrom => "not in groupAllowFrom",
            Self::DmPolicyDisabled => "dmPolicy disabled",
            Self::DmPolicyBlocked => "dmPolicy blocked",
            Self::GroupNotInAllowlist => "group id not in allowlist",
            Self::EmptyBody => "empty body",
            Self::SelfChatEcho => "self-chat echo",
            Self::Echo => "echo",
            Self::Reflected => "reflected assistant content",
            Self::ControlCommandUnauthorized => "control command (unauthorized)",
            Self::NoMention => "no mention",
            Self::RateLimited => "rate-limited conversation (echo loop detected)",
        }
    }

    /// Drops that count towards the echo-loop rate limiter: reflections of what we sent
    /// (`Echo`, `SelfChatEcho`, `Reflected`) and own rows we did not send (`FromMe`). Our own
    /// recognised sends (`OwnSend`) are not evidence: imsg reports every reply back as a from-me
    /// row, so counting them silenced any conversation after five replies (docs/channel.md,
    /// "Differences from OpenClaw", 1).
    fn is_loop_hit(self) -> bool {
        matches!(
            self,
            Self::Echo | Self::SelfChatEcho | Self::Reflected | Self::FromMe
        )
    }
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Dispatch(Dispatch),
    /// A stranger in a `pairing` DM: send a code (if the store creates one).
    Pairing {
        sender_id: String,
        /// `chat_id:<id>` when the message had a chat, else the raw sender.
        reply_to: String,
    },
    Drop(DropReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// Group, or a group-ish thread (`is_group` false but its chat listed in `groups`).
    pub is_group: bool,
    pub was_mentioned: bool,
    pub command_authorized: bool,
    /// Whether the quoted message stays in the envelope (`contextVisibility`).
    pub keep_reply: bool,
    /// Unmentioned group messages held since the last dispatch.
    pub history: Vec<PendingEntry>,
}

/// An account's rules, resolved once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub account: String,
    pub dm_policy: DmPolicy,
    pub allow_from: Allowlist,
    pub group_policy: GroupPolicy,
    /// `groupAllowFrom` when the key is present (even empty); else `allowFrom` is used.
    pub group_allow_from: Option<Allowlist>,
    pub groups: BTreeMap<String, GroupConfig>,
    pub context_visibility: ContextVisibility,
    /// Empty: mentions cannot be detected, so nothing is gated.
    pub mention: Vec<Regex>,
    pub group_history_limit: usize,
    /// Other bridges send from this account too (the nats sink, docs/scale-out.md): their replies
    /// come back as from-me rows this bridge did not send, which are then no evidence of a loop.
    pub shared_sends: bool,
}

impl Settings {
    pub fn of(account: &Account, mention: Vec<Regex>) -> Self {
        Self {
            account: account.id.clone(),
            dm_policy: account.dm_policy,
            allow_from: Allowlist::parse(&account.allow_from),
            group_policy: account.group_policy,
            group_allow_from: account.group_allow_from.as_ref().map(Allowlist::parse),
            groups: account.groups.clone(),
            context_visibility: account.context_visibility,
            mention,
            group_history_limit: account.group_history_limit as usize,
            shared_sends: false,
        }
    }

    /// The settings of `account` in `config`: its mention patterns, and whether other bridges may
    /// send from it (the nats sink).
    pub fn for_config(config: &crate::config::Config, account: &Account) -> Self {
        Self {
            shared_sends: config.bridge.agent.kind() == crate::config::AgentKind::Nats,
            ..Self::of(account, mention::for_config(config))
        }
    }

    fn effective_group_allowlist(&self) -> &Allowlist {
        self.group_allow_from.as_ref().unwrap_or(&self.allow_from)
    }
}

/// What the decision needs about one message besides the message itself.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub message: &'a Message,
    /// The text after length-prefix stripping (`messageText`).
    pub text: &'a str,
    /// The text, or the media placeholder when there is none (`bodyText`).
    pub body_text: &'a str,
    /// `created_at` in epoch milliseconds.
    pub created_ms: Option<i64>,
    /// Senders approved through the pairing store (DMs only).
    pub paired: &'a [String],
}

/// The pipeline and its in-memory state.
#[derive(Debug)]
pub struct Policy {
    pub settings: Settings,
    pub echo: EchoCache,
    self_chat: SelfChatCache,
    limiter: LoopRateLimiter,
    history: PendingHistory,
}

impl Policy {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            echo: EchoCache::default(),
            self_chat: SelfChatCache::default(),
            limiter: LoopRateLimiter::default(),
            history: PendingHistory::default(),
        }
    }

    /// The echo-cache scope of a delivery target (`chat_id:<id>` or `imessage:<sender>`).
    pub fn echo_scope(&self, to: &str) -> String {
        format!("{}:{to}", self.settings.account)
    }

    /// Decide, in the order docs/channel.md gives, and record what the caches need.
    pub fn decide(&mut self, inbound: &Inbound<'_>, now_ms: u64) -> Decision {
        let decision = self.decide_inner(inbound, now_ms);
        let m = inbound.message;
        let loop_key = match chat_id_of(m) {
            Some(id) => format!("{}:group:{id}", self.settings.account),
            None => format!("{}:dm:{}", self.settings.account, m.sender.trim()),
        };
        match decision {
            Decision::Drop(DropReason::FromMe) if self.settings.shared_sends => decision,
            Decision::Drop(reason) if reason.is_loop_hit() => {
                self.limiter.hit(&loop_key, now_ms);
                decision
            }
            Decision::Dispatch(_) if self.limiter.is_limited(&loop_key, now_ms) => {
                Decision::Drop(DropReason::RateLimited)
            }
            other => other,
        }
    }

    fn decide_inner(&mut self, inbound: &Inbound<'_>, now_ms: u64) -> Decision {
        match self.stages(inbound, now_ms) {
            Stage::Break(verdict) => verdict,
            Stage::Continue(dispatch) => Decision::Dispatch(dispatch),
        }
    }

    /// The stages in the order of docs/channel.md; each one passes the row on or decides.
    fn stages(&mut self, inbound: &Inbound<'_>, now_ms: u64) -> Stage<Dispatch> {
        let row = self.classify(inbound, now_ms)?;
        let self_chat_checked = self.screen_own_row(&row, inbound, now_ms)?;
        if row.is_group && row.chat_id.is_none() {
            return dropped(DropReason::GroupWithoutChatId);
        }
        let dm_allowlist = self.check_access(&row, inbound)?;
        self.check_content(&row, inbound, self_chat_checked, now_ms)?;
        self.gate_mentions(&row, inbound, &dm_allowlist)
    }

    /// Who sent the row, in which chat, whether it is a group, and whether the echo cache knows
    /// it as ours; a row without a sender goes no further.
    fn classify<'a>(&self, inbound: &Inbound<'a>, now_ms: u64) -> Stage<Row<'a>> {
        let s = &self.settings;
        let m = inbound.message;
        let sender = m.sender.trim();
        if sender.is_empty() {
            return dropped(DropReason::MissingSender);
        }
        let sender_normalized = normalize_handle(sender);
        let chat_id = chat_id_of(m);
        let registry = Registry::of(s, chat_id);
        let is_group = m.is_group || (chat_id.is_some() && registry.allowlist_enabled && registry.listed);
        let self_scope = match (is_group, chat_id) {
            (true, Some(id)) => format!("{}:chat_id:{id}:imessage:{sender_normalized}", s.account),
            _ => format!("{}:imessage:{sender_normalized}", s.account),
        };
        let sent_by_us = self.sent_by_us(
            m,
            inbound.body_text,
            &echo_scopes(&s.account, sender, is_group, chat_id),
            now_ms,
        );
        Stage::Continue(Row {
            message: m,
            sender,
            sender_normalized,
            chat_id,
            is_group,
            registry,
            self_scope,
            sent_by_us,
        })
    }

    /// Whether the echo cache holds this row (by id or text) in one of its conversation's scopes.
    fn sent_by_us(&self, m: &Message, body_text: &str, scopes: &[String], now_ms: u64) -> bool {
        let id_text = m.id.to_string();
        let guid = m.guid.trim();
        let ids: Vec<&str> = [id_text.as_str(), guid]
            .into_iter()
            .filter(|i| !i.is_empty())
            .collect();
        scopes.iter().any(|scope| {
            self.echo
                .has(scope, Some(body_text), &ids, guid.is_empty(), now_ms)
        })
    }

    /// Our own rows: outside a true self-chat they are dropped (as our send when the echo
    /// cache knows them); in a self-chat, the user writing to themselves goes on as a normal
    /// inbound. Continues with whether the self-chat cache was consulted already.
    fn screen_own_row(&mut self, row: &Row<'_>, inbound: &Inbound<'_>, now_ms: u64) -> Stage<bool> {
        let m = row.message;
        if !m.is_from_me {
            return Stage::Continue(false);
        }
        let identifier = normalize_handle(&m.chat_identifier);
        let destination = m
            .destination_caller_id
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty());
        let same_thread = !row.is_group && identifier == row.sender_normalized;
        let true_self =
            same_thread && destination.is_some_and(|d| normalize_handle(d) == row.sender_normalized);
        // A thread with ourselves but no destination may be a self-chat: remembered, then dropped.
        let ambiguous = same_thread && destination.is_none();
        if ambiguous || true_self {
            self.self_chat
                .remember(&row.self_scope, inbound.created_ms, inbound.body_text, now_ms);
        }
        if !true_self {
            return dropped(own_row(row.sent_by_us));
        }
        if row.sent_by_us {
            return dropped(DropReason::AgentEchoInSelfChat);
        }
        Stage::Continue(true)
    }

    /// Access control: the group policy and sender list, or the DM policy (a stranger
    /// in a `pairing` DM gets a code), then the group registry. Continues with the DM allowlist,
    /// pairing approvals included.
    fn check_access(&self, row: &Row<'_>, inbound: &Inbound<'_>) -> Stage<Allowlist> {
        let s = &self.settings;
        let who = row.who();
        let dm_allowlist = s.allow_from.with(inbound.paired);
        if row.is_group {
            let list = s.effective_group_allowlist();
            match s.group_policy {
                GroupPolicy::Disabled => return dropped(DropReason::GroupPolicyDisabled),
                GroupPolicy::Allowlist if list.is_empty() => return dropped(DropReason::GroupAllowlistEmpty),
                GroupPolicy::Allowlist if !list.matches(&who) => {
                    return dropped(DropReason::NotInGroupAllowFrom);
                }
                _ => {}
            }
        } else {
            match s.dm_policy {
                DmPolicy::Disabled => return dropped(DropReason::DmPolicyDisabled),
                DmPolicy::Open => {}
                DmPolicy::Allowlist if !s.allow_from.matches(&who) => {
                    return dropped(DropReason::DmPolicyBlocked);
                }
                DmPolicy::Allowlist => {}
                DmPolicy::Pairing if !dm_allowlist.matches(&who) => {
                    return Stage::Break(Decision::Pairing {
                        sender_id: row.sender_normalized.clone(),
                        reply_to: row
                            .chat_id
                            .map_or_else(|| row.sender.to_string(), |id| format!("chat_id:{id}")),
                    });
                }
                DmPolicy::Pairing => {}
            }
        }
        if row.is_group && row.registry.allowlist_enabled && !row.registry.allows {
            return dropped(DropReason::GroupNotInAllowlist);
        }
        Stage::Continue(dm_allowlist)
    }

    /// What the row says: nothing, a self-chat echo, our own send coming back, or reflected
    /// assistant scaffolding are dropped.
    fn check_content(
        &mut self,
        row: &Row<'_>,
        inbound: &Inbound<'_>,
        self_chat_checked: bool,
        now_ms: u64,
    ) -> Stage<()> {
        if inbound.body_text.trim().is_empty() {
            return dropped(DropReason::EmptyBody);
        }
        if !self_chat_checked
            && self
                .self_chat
                .has(&row.self_scope, inbound.created_ms, inbound.body_text, now_ms)
        {
            return dropped(DropReason::SelfChatEcho);
        }
        if row.sent_by_us {
            return dropped(DropReason::Echo);
        }
        if is_reflected(inbound.text) {
            return dropped(DropReason::Reflected);
        }
        Stage::Continue(())
    }

    /// Mentions and control commands: an unauthorised command in a group is dropped, an
    /// unmentioned group message is held as history for the next dispatch; the rest is dispatched
    /// with the history held so far.
    fn gate_mentions(
        &mut self,
        row: &Row<'_>,
        inbound: &Inbound<'_>,
        dm_allowlist: &Allowlist,
    ) -> Stage<Dispatch> {
        let is_command = mention::is_control_command(inbound.text);
        let command_authorized = self.authorizes_commands(row, dm_allowlist);
        let was_mentioned = !row.is_group || mention::is_mentioned(inbound.text, &self.settings.mention);
        if row.is_group && is_command && !command_authorized {
            return dropped(DropReason::ControlCommandUnauthorized);
        }
        let keep_reply = self.keeps_reply(row);
        let history_key = history_key(row.message);
        if row.is_group
            && row.registry.require_mention
            && !self.settings.mention.is_empty()
            && !was_mentioned
            && !(is_command && command_authorized)
        {
            self.hold(row, inbound, &history_key);
            return dropped(DropReason::NoMention);
        }
        let history = if row.is_group {
            self.history.take(&history_key)
        } else {
            Vec::new()
        };
        Stage::Continue(Dispatch {
            is_group: row.is_group,
            was_mentioned: was_mentioned || (is_command && command_authorized),
            command_authorized,
            keep_reply,
            history,
        })
    }

    /// Whether the sender may run control commands. A wildcard admits everyone but authorises no one.
    fn authorizes_commands(&self, row: &Row<'_>, dm_allowlist: &Allowlist) -> bool {
        let s = &self.settings;
        let who = row.who();
        let authoriser = |list: &Allowlist| !list.allows_everyone() && list.matches(&who);
        if row.is_group {
            authoriser(&s.allow_from) || authoriser(s.effective_group_allowlist())
        } else {
            authoriser(dm_allowlist)
        }
    }

    /// Reply context visibility: whether the quoted message stays in the envelope.
    fn keeps_reply(&self, row: &Row<'_>) -> bool {
        let s = &self.settings;
        let m = row.message;
        m.reply_to_text.as_deref().is_some_and(|t| !t.trim().is_empty()) && {
            let group_list = s.effective_group_allowlist();
            let quoted_allowed = || {
                m.reply_to_sender
                    .as_deref()
                    .map(str::trim)
                    .filter(|q| !q.is_empty())
                    .is_some_and(|q| {
                        let normalized = normalize_handle(q);
                        group_list.matches(&Who {
                            sender_normalized: &normalized,
                            chat_id: None,
                            chat_guid: "",
                            chat_identifier: "",
                        })
                    })
            };
            !row.is_group
                || group_list.is_empty()
                || match s.context_visibility {
                    ContextVisibility::All | ContextVisibility::AllowlistQuote => true,
                    ContextVisibility::Allowlist => quoted_allowed(),
                }
        }
    }

    /// Keep an unmentioned group message for the next dispatch in its chat.
    fn hold(&mut self, row: &Row<'_>, inbound: &Inbound<'_>, history_key: &str) {
        let m = row.message;
        let entry = PendingEntry {
            sender: row.sender_normalized.clone(),
            body: inbound.body_text.to_string(),
            timestamp: m.created_at.clone(),
            message_id: m.id.to_string(),
        };
        self.history
            .record(history_key, entry, self.settings.group_history_limit);
    }
}

/// One stage of the decision: the row goes on (with what the stage found out), or the stage decided.
type Stage<T> = std::ops::ControlFlow<Decision, T>;

fn dropped<T>(reason: DropReason) -> Stage<T> {
    Stage::Break(Decision::Drop(reason))
}

/// What the stages know about a row that has a sender.
struct Row<'a> {
    message: &'a Message,
    /// The sender as imsg reported it (trimmed), and normalised.
    sender: &'a str,
    sender_normalized: String,
    chat_id: Option<i64>,
    /// A group, or a group-ish thread (`is_group` false but its chat listed in `groups`).
    is_group: bool,
    registry: Registry,
    /// The self-chat cache's scope of this conversation.
    self_scope: String,
    /// The echo cache knows the row as something the bridge sent.
    sent_by_us: bool,
}

impl Row<'_> {
    fn who(&self) -> Who<'_> {
        Who {
            sender_normalized: &self.sender_normalized,
            chat_id: self.chat_id,
            chat_guid: &self.message.chat_guid,
            chat_identifier: &self.message.chat_identifier,
        }
    }
}

/// The group registry's view of a row's chat.
struct Registry {
    /// The chat has its own entry in `groups`.
    listed: bool,
    /// `groupPolicy: "allowlist"`, or a non-empty `groups`: a chat must be admitted.
    allowlist_enabled: bool,
    /// The registry admits the chat.
    allows: bool,
    /// `requireMention` of the chat, else of `*`, else on.
    require_mention: bool,
}

impl Registry {
    /// With fix 4: under `allowlist`, a non-empty groupAllowFrom admits matching senders without a
    /// `groups` map.
    fn of(s: &Settings, chat_id: Option<i64>) -> Self {
        let group_key = chat_id.map(|id| id.to_string());
        let group_config = group_key.as_ref().and_then(|k| s.groups.get(k));
        let wildcard = s.groups.get("*");
        let allowlist_enabled = s.group_policy == GroupPolicy::Allowlist || !s.groups.is_empty();
        let sender_list_suffices = s.group_policy == GroupPolicy::Allowlist
            && s.groups.is_empty()
            && s.group_allow_from.as_ref().is_some_and(|l| !l.is_empty());
        let allows = s.group_policy != GroupPolicy::Disabled
            && (!allowlist_enabled || wildcard.is_some() || group_config.is_some() || sender_list_suffices);
        let require_mention = group_config
            .and_then(|g| g.require_mention)
            .or_else(|| wildcard.and_then(|g| g.require_mention))
            .unwrap_or(true);
        Self {
            listed: group_config.is_some(),
            allowlist_enabled,
            allows,
            require_mention,
        }
    }
}

/// The echo-cache scopes a row's conversation may have been sent to (see [`Policy::echo_scope`]):
/// a group by its chat; a direct chat by its handle, and by its chat too, since the bridge
/// addresses some sends to a direct chat as `chat_id:<id>` (pairing codes, API requests).
fn echo_scopes(account: &str, sender: &str, is_group: bool, chat_id: Option<i64>) -> Vec<String> {
    match (is_group, chat_id) {
        (true, Some(id)) => vec![format!("{account}:chat_id:{id}")],
        (false, Some(id)) => vec![
            format!("{account}:imessage:{sender}"),
            format!("{account}:chat_id:{id}"),
        ],
        (_, None) => vec![format!("{account}:imessage:{sender}")],
    }
}

/// The drop reason of an own row outside a self-chat: ours when the echo cache knows it.
fn own_row(our_send: bool) -> DropReason {
    if our_send {
        DropReason::OwnSend
    } else {
        DropReason::FromMe
    }
}

fn chat_id_of(m: &Message) -> Option<i64> {
    (m.chat_id > 0).then_some(m.chat_id)
}

fn history_key(m: &Message) -> String {
    if let Some(id) = chat_id_of(m) {
        return id.to_string();
    }
    [&m.chat_guid, &m.chat_identifier]
        .into_iter()
        .find(|v| !v.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests;

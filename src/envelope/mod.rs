//! The envelope: what the agent receives for each accepted inbound message (docs/envelope.md), and the pure
//! normalisation of an imsg message into it (sender normalisation, session key, formatted body).

mod handle;
mod text;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub use crate::config::DmScope;
use crate::imsg::Message;
pub use handle::{is_valid_handle, normalize_handle};
pub use text::{sanitize_header, strip_length_prefix, strip_length_prefix_bytes};

/// The channel name in ids, session keys and envelopes.
pub const CHANNEL: &str = "imessage";

/// One inbound message as handed to the agent. Field names are snake_case and stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// `imessage:<account>:<message guid>`: stable across redelivery, the idempotency key; characters
    /// outside visible ASCII and `%` are percent-encoded (see [`envelope_id`]).
    pub id: String,
    pub account: String,
    pub channel: String,
    /// chat.db ROWID of the message (the account's cursor).
    pub rowid: i64,
    pub session_key: String,
    pub chat_type: ChatType,
    /// Where a reply goes: `chat_id:<id>` for groups, `imessage:<sender>` for direct chats.
    pub to: String,
    pub chat: ChatInfo,
    pub sender: Sender,
    pub text: String,
    /// The text as the agent should read it: `[iMessage <from> <when>] <body>`.
    pub body: String,
    pub was_mentioned: bool,
    pub command_authorized: bool,
    /// ISO-8601 UTC with milliseconds.
    pub timestamp: String,
    pub reply_to: Option<ReplyTo>,
    pub history: Vec<HistoryEntry>,
    pub media: Vec<Media>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatType {
    Direct,
    Group,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatInfo {
    pub chat_id: i64,
    pub guid: String,
    pub identifier: String,
    pub name: String,
    pub participants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sender {
    /// As imsg reported it.
    pub handle: String,
    pub normalized: String,
}

/// The quoted message a reply refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub id: Option<String>,
    pub body: Option<String>,
    pub sender: Option<String>,
}

/// An earlier message of the conversation given as context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub sender: String,
    pub body: String,
    pub timestamp: String,
    pub message_id: Option<String>,
}

/// One attachment and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Media {
    pub status: MediaStatus,
    /// Local path of the staged (or, with the process transport, in-place) file.
    pub path: Option<String>,
    pub remote_path: String,
    pub mime: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaStatus {
    Ok,
    Missing,
    TooLarge,
    OutsideRoots,
    Denied,
    Failed,
}

impl MediaStatus {
    /// The status as the envelope spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaStatus::Ok => "ok",
            MediaStatus::Missing => "missing",
            MediaStatus::TooLarge => "too_large",
            MediaStatus::OutsideRoots => "outside_roots",
            MediaStatus::Denied => "denied",
            MediaStatus::Failed => "failed",
        }
    }
}

/// What normalisation needs to know about the account and the agent.
#[derive(Debug, Clone)]
pub struct EnvelopeContext {
    pub account: String,
    pub agent_id: String,
    pub dm_scope: DmScope,
    pub main_key: String,
}

/// The session key of a conversation (docs/envelope.md).
pub fn session_key(ctx: &EnvelopeContext, chat_type: ChatType, chat_id: i64, peer: &str) -> String {
    let agent = &ctx.agent_id;
    let peer = peer.to_lowercase();
    match (chat_type, ctx.dm_scope) {
        (ChatType::Group, _) => format!("agent:{agent}:{CHANNEL}:group:{chat_id}"),
        (ChatType::Direct, DmScope::Main) => format!("agent:{agent}:{}", ctx.main_key),
        (ChatType::Direct, DmScope::PerPeer) => format!("agent:{agent}:direct:{peer}"),
        (ChatType::Direct, DmScope::PerChannelPeer) => format!("agent:{agent}:{CHANNEL}:direct:{peer}"),
        (ChatType::Direct, DmScope::PerAccountChannelPeer) => {
            format!("agent:{agent}:{CHANNEL}:{}:direct:{peer}", ctx.account)
        }
    }
}

/// The stable envelope id of a message. The account and guid go through [`header_safe`], so the id
/// is always one line and a valid HTTP header value (the webhook's `Idempotency-Key`, docs/envelope.md).
pub fn envelope_id(account: &str, msg: &Message) -> String {
    let account = header_safe(account);
    if msg.guid.is_empty() {
        // Very old schemas have no guid column; the ROWID is the next best stable key.
        format!("{CHANNEL}:{account}:rowid:{}", msg.id)
    } else {
        format!("{CHANNEL}:{account}:{}", header_safe(&msg.guid))
    }
}

/// `raw` with every character outside visible ASCII (`!`..`~`), and `%` itself, percent-encoded as
/// `%XX` (uppercase hex) of its UTF-8 bytes. Visible ASCII such as Messages' guids
/// (`8DF1B3D7-…`, `p:0/…`) comes out unchanged; encoding `%` keeps the mapping one-to-one.
pub fn header_safe(raw: &str) -> std::borrow::Cow<'_, str> {
    let keep = |b: u8| b.is_ascii_graphic() && b != b'%';
    if raw.bytes().all(keep) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for byte in raw.bytes() {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    std::borrow::Cow::Owned(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Parse imsg's timestamp; `None` when it is not RFC 3339.
pub fn parse_timestamp(created_at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(created_at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Normalise an imsg message into an envelope. Policy fields (`was_mentioned`,
/// `command_authorized`, `history`) and media are filled by later stages.
pub fn normalize(msg: &Message, ctx: &EnvelopeContext) -> Envelope {
    let chat_type = if msg.is_group {
        ChatType::Group
    } else {
        ChatType::Direct
    };
    let normalized = normalize_handle(&msg.sender);
    let text = strip_length_prefix(&msg.text).unwrap_or_else(|| msg.text.clone());
    let when = parse_timestamp(&msg.created_at);
    let timestamp = when
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| msg.created_at.clone());
    let to = match chat_type {
        ChatType::Group => format!("chat_id:{}", msg.chat_id),
        ChatType::Direct => format!("{CHANNEL}:{}", msg.sender),
    };
    let chat = ChatInfo {
        chat_id: msg.chat_id,
        guid: msg.chat_guid.clone(),
        identifier: msg.chat_identifier.clone(),
        name: msg.chat_name.clone(),
        participants: msg.participants.clone(),
    };
    let sender = Sender {
        handle: msg.sender.clone(),
        normalized,
    };
    let body = format_body(chat_type, &chat, &sender, when, text.trim());
    let reply_to = reply_context(msg);
    Envelope {
        id: envelope_id(&ctx.account, msg),
        account: ctx.account.clone(),
        channel: CHANNEL.to_string(),
        rowid: msg.id,
        session_key: session_key(ctx, chat_type, msg.chat_id, &sender.normalized),
        chat_type,
        to,
        chat,
        sender,
        text,
        body,
        was_mentioned: chat_type == ChatType::Direct,
        command_authorized: false,
        timestamp,
        reply_to,
        history: Vec::new(),
        media: Vec::new(),
    }
}

impl Envelope {
    /// Apply the policy's verdict (docs/envelope.md): mention and command flags, the quote
    /// (dropped when `keep_reply` is false, else appended to the body), and held group messages as
    /// `history`, with the body wrapped the way upstream shows them to the agent.
    pub fn apply_decision(
        &mut self,
        was_mentioned: bool,
        command_authorized: bool,
        keep_reply: bool,
        history: Vec<HistoryEntry>,
    ) {
        self.was_mentioned = was_mentioned;
        self.command_authorized = command_authorized;
        if !keep_reply {
            self.reply_to = None;
        }
        if let Some(reply) = self
            .reply_to
            .as_ref()
            .filter(|r| r.body.as_deref().is_some_and(|b| !b.trim().is_empty()))
        {
            let who = reply
                .sender
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown sender");
            let id = reply
                .id
                .as_deref()
                .map(|id| format!(" id:{id}"))
                .unwrap_or_default();
            self.body = format!(
                "{}\n\n[Replying to {who}{id}]\n{}\n[/Replying]",
                self.body,
                reply.body.as_deref().unwrap_or_default()
            );
        }
        if !history.is_empty() {
            let lines: Vec<String> = history
                .iter()
                .map(|entry| {
                    let sender = Sender {
                        handle: entry.sender.clone(),
                        normalized: entry.sender.clone(),
                    };
                    let text = match &entry.message_id {
                        Some(id) => format!("{} [id:{id}]", entry.body),
                        None => entry.body.clone(),
                    };
                    format_body(
                        self.chat_type,
                        &self.chat,
                        &sender,
                        parse_timestamp(&entry.timestamp),
                        &text,
                    )
                })
                .collect();
            self.body = format!(
                "[Chat messages since your last reply - for context]\n{}\n\n[Current message - respond to this]\n{}",
                lines.join("\n"),
                self.body
            );
        }
        self.history = history;
    }

    /// Attach the staged media. A message with media and no text gets the `<media:…>` placeholder
    /// as its body text (docs/envelope.md), from the first attachment's MIME type.
    pub fn set_media(&mut self, media: Vec<Media>) {
        if self.text.trim().is_empty()
            && let Some(first) = media.first()
        {
            let placeholder = crate::media::policy::placeholder(first.mime.as_deref().unwrap_or(""));
            let when = parse_timestamp(&self.timestamp);
            self.body = format_body(self.chat_type, &self.chat, &self.sender, when, &placeholder);
        }
        self.media = media;
    }
}

fn reply_context(msg: &Message) -> Option<ReplyTo> {
    let id = msg.reply_to_guid.clone().or_else(|| {
        msg.reply_to_id.as_ref().and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    });
    let body = msg
        .reply_to_text
        .as_deref()
        .map(|t| strip_length_prefix(t).unwrap_or_else(|| t.to_string()));
    if id.is_none() && body.is_none() {
        return None;
    }
    Some(ReplyTo {
        id,
        body,
        sender: msg.reply_to_sender.clone(),
    })
}

/// `[iMessage <fromLabel> <weekday> <YYYY-MM-DD HH:MM> UTC] <body>` (docs/envelope.md), in UTC.
pub fn format_body(
    chat_type: ChatType,
    chat: &ChatInfo,
    sender: &Sender,
    when: Option<DateTime<Utc>>,
    body: &str,
) -> String {
    let sender_label = if sender.handle.trim() == sender.normalized || sender.handle.is_empty() {
        sender.normalized.clone()
    } else {
        format!("{} ({})", sender.normalized, sender.handle.trim())
    };
    let (from, body) = match chat_type {
        ChatType::Group => {
            let name = if chat.name.trim().is_empty() {
                "Group"
            } else {
                chat.name.trim()
            };
            (
                format!("{name} id:{}", chat.chat_id),
                format!("{sender_label}: {body}"),
            )
        }
        ChatType::Direct if sender.handle.trim() != sender.normalized && !sender.handle.is_empty() => (
            format!("{} id:{}", sender.normalized, sender.handle.trim()),
            body.to_string(),
        ),
        ChatType::Direct => (sender.normalized.clone(), body.to_string()),
    };
    let mut header = format!("iMessage {}", sanitize_header(&from));
    if let Some(when) = when {
        header.push(' ');
        header.push_str(&when.format("%a %Y-%m-%d %H:%M UTC").to_string());
    }
    format!("[{header}] {body}")
}

#[cfg(test)]
mod tests;

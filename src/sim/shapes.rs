//! The JSON objects `imsg` prints — Chat, Group, Message, Attachment, Reaction — built from rows.
//!
//! Pure functions only (the file system is touched only to compute `missing`): `query` reads the
//! rows, this file decides the shape. Rules from docs/simulator.md: absent optional strings
//! are omitted, arrays are always present, times are ISO-8601 UTC with milliseconds, `is_group` is
//! the `;+;` rule, participants are sorted and de-duplicated.

use serde_json::{Map, Value, json};

use crate::sim::Dialect;
use crate::sim::attachments::{is_missing, original_path};
use crate::sim::time::iso_from_apple_ns;
use crate::sim::typedstream;

/// The chat columns a Chat, Group or Message object needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatInfo {
    pub id: i64,
    pub guid: String,
    pub identifier: String,
    pub display_name: Option<String>,
    pub service: String,
    /// Other people's handles, already normalised with [`normalize_participants`].
    pub participants: Vec<String>,
    pub account_id: Option<String>,
    pub account_login: Option<String>,
    pub last_addressed_handle: Option<String>,
}

impl ChatInfo {
    /// `IFNULL(display_name, chat_identifier)`: Apple writes `''` for unnamed chats, so this is often
    /// empty for 1:1 chats.
    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.identifier)
    }

    pub fn is_group(&self) -> bool {
        is_group(&self.guid, &self.identifier)
    }
}

/// A chat as `chats.list` lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatSummary {
    pub info: ChatInfo,
    /// `MAX(chat_message_join.message_date)`.
    pub last_message_date: Option<i64>,
    /// Inbound unread messages.
    pub unread_count: i64,
}

/// One `message` row joined with its sender handle and (maybe) its chat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageRow {
    pub rowid: i64,
    /// `None` for a row that is not joined to any chat yet.
    pub chat_id: Option<i64>,
    pub guid: String,
    pub text: Option<String>,
    pub attributed_body: Option<Vec<u8>>,
    /// `handle.id` of `message.handle_id` (empty when none).
    pub handle: String,
    pub is_from_me: bool,
    pub date: Option<i64>,
    pub service: Option<String>,
    pub destination_caller_id: Option<String>,
    pub associated_message_guid: Option<String>,
    pub associated_message_type: Option<i64>,
    pub associated_message_emoji: Option<String>,
    pub thread_originator_guid: Option<String>,
    pub thread_originator_part: Option<String>,
    pub balloon_bundle_id: Option<String>,
    pub is_read: bool,
    pub date_read: Option<i64>,
}

impl MessageRow {
    /// `sender`: the handle, else `destination_caller_id`, else `""`.
    pub fn sender(&self) -> String {
        if !self.handle.is_empty() {
            return self.handle.clone();
        }
        self.destination_caller_id.clone().unwrap_or_default()
    }

    /// `text`, falling back to the decoded `attributedBody` when the column is NULL or empty.
    pub fn resolved_text(&self) -> String {
        match self.text.as_deref() {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => self
                .attributed_body
                .as_deref()
                .and_then(typedstream::decode)
                .unwrap_or_default(),
        }
    }

    /// The tapback this row is, if it is one.
    pub fn tapback(&self) -> Option<Tapback> {
        self.associated_message_type.and_then(Tapback::from_type)
    }

    /// The guid this row replies to or reacts to, with the `p:N/` part prefix stripped.
    pub fn associated_target(&self) -> Option<String> {
        self.associated_message_guid
            .as_deref()
            .filter(|g| !g.is_empty())
            .map(strip_part_prefix)
    }
}

/// One `attachment` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachmentRow {
    pub filename: Option<String>,
    pub transfer_name: Option<String>,
    pub uti: Option<String>,
    pub mime_type: Option<String>,
    pub total_bytes: Option<i64>,
    pub is_sticker: bool,
}

/// One tapback row that targets a message, for aggregation into `reactions`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReactionRow {
    pub rowid: i64,
    pub associated_message_type: i64,
    pub sender: String,
    pub is_from_me: bool,
    pub date: Option<i64>,
    pub text: Option<String>,
    pub emoji: Option<String>,
}

/// Text and sender of the message a reply points at.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyContext {
    pub text: String,
    pub sender: String,
}

/// The six classic tapbacks plus custom emoji; rows 2000–2006 add one, 3000–3006 remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TapbackKind {
    Love,
    Like,
    Dislike,
    Laugh,
    Emphasis,
    Question,
    Custom,
}

impl TapbackKind {
    pub fn name(self) -> &'static str {
        match self {
            TapbackKind::Love => "love",
            TapbackKind::Like => "like",
            TapbackKind::Dislike => "dislike",
            TapbackKind::Laugh => "laugh",
            TapbackKind::Emphasis => "emphasis",
            TapbackKind::Question => "question",
            TapbackKind::Custom => "custom",
        }
    }

    /// The emoji of a classic tapback (`None` for custom, whose emoji lives in the row).
    pub fn emoji(self) -> Option<&'static str> {
        match self {
            TapbackKind::Love => Some("❤️"),
            TapbackKind::Like => Some("👍"),
            TapbackKind::Dislike => Some("👎"),
            TapbackKind::Laugh => Some("😂"),
            TapbackKind::Emphasis => Some("‼️"),
            TapbackKind::Question => Some("❓"),
            TapbackKind::Custom => None,
        }
    }
}

/// A tapback row: which kind, and whether it adds or removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tapback {
    pub kind: TapbackKind,
    pub is_add: bool,
}

impl Tapback {
    /// Decode `associated_message_type`: 2000–2006 add, 3000–3006 remove, anything else is no tapback.
    pub fn from_type(t: i64) -> Option<Tapback> {
        let (base, is_add) = match t {
            2000..=2006 => (t - 2000, true),
            3000..=3006 => (t - 3000, false),
            _ => return None,
        };
        let kind = match base {
            0 => TapbackKind::Love,
            1 => TapbackKind::Like,
            2 => TapbackKind::Dislike,
            3 => TapbackKind::Laugh,
            4 => TapbackKind::Emphasis,
            5 => TapbackKind::Question,
            _ => TapbackKind::Custom,
        };
        Some(Tapback { kind, is_add })
    }
}

/// True for `associated_message_type` values that are tapbacks (2000–3006, as imsg filters them).
pub fn is_tapback_type(t: Option<i64>) -> bool {
    matches!(t, Some(2000..=3006))
}

/// `p:0/GUID` → `GUID`: everything up to and including the last `/` goes; `bp:GUID` stays as is.
pub fn strip_part_prefix(guid: &str) -> String {
    match guid.rfind('/') {
        Some(i) => guid[i + 1..].to_string(),
        None => guid.to_string(),
    }
}

/// `;+;` in the guid or the identifier marks a group chat.
pub fn is_group(guid: &str, identifier: &str) -> bool {
    guid.contains(";+;") || identifier.contains(";+;")
}

/// Sorted ascending, de-duplicated, empties dropped.
pub fn normalize_participants(mut handles: Vec<String>) -> Vec<String> {
    handles.retain(|h| !h.is_empty());
    handles.sort();
    handles.dedup();
    handles
}

/// The emoji of a custom tapback: the `associated_message_emoji` column when set, else the text of
/// `Reacted 🎉 to “…”`, else the first emoji-looking character of the text.
pub fn custom_emoji(text: Option<&str>, column: Option<&str>) -> Option<String> {
    if let Some(e) = column.filter(|e| !e.is_empty()) {
        return Some(e.to_string());
    }
    let text = text?;
    if let Some(rest) = text.strip_prefix("Reacted ")
        && let Some(end) = rest.find(" to ")
        && end > 0
    {
        return Some(rest[..end].to_string());
    }
    let start = text.char_indices().find(|(_, c)| looks_like_emoji(*c))?.0;
    // Keep the joiners and modifiers that glue a multi-codepoint emoji together.
    let mut out = String::new();
    let mut prev_joiner = true;
    for c in text[start..].chars() {
        let glue = matches!(c, '\u{200D}' | '\u{FE0F}' | '\u{1F3FB}'..='\u{1F3FF}');
        if glue || prev_joiner {
            out.push(c);
            prev_joiner = c == '\u{200D}';
        } else {
            break;
        }
    }
    Some(out)
}

fn looks_like_emoji(c: char) -> bool {
    matches!(c, '\u{1F000}'..='\u{1FAFF}' | '\u{2600}'..='\u{27BF}' | '\u{2190}'..='\u{21FF}' | '\u{203C}' | '\u{2049}')
}

/// Fold tapback rows (in date order) into the current reactions of one message.
///
/// An add inserts or replaces the entry of (sender, is_from_me, kind); a removal deletes it. A custom
/// add without a recoverable emoji is ignored.
pub fn aggregate_reactions(rows: &[ReactionRow]) -> Vec<Value> {
    let mut current: Vec<((String, bool, TapbackKind), Value)> = Vec::new();
    for row in rows {
        let Some(tapback) = Tapback::from_type(row.associated_message_type) else {
            continue;
        };
        let key = (row.sender.clone(), row.is_from_me, tapback.kind);
        current.retain(|(k, _)| *k != key);
        if !tapback.is_add {
            continue;
        }
        let emoji = match tapback.kind.emoji() {
            Some(e) => e.to_string(),
            None => match custom_emoji(row.text.as_deref(), row.emoji.as_deref()) {
                Some(e) => e,
                None => continue,
            },
        };
        let value = json!({
            "id": row.rowid,
            "type": tapback.kind.name(),
            "emoji": emoji,
            "sender": row.sender,
            "is_from_me": row.is_from_me,
            "created_at": iso_from_apple_ns(row.date),
        });
        current.push((key, value));
    }
    current.into_iter().map(|(_, v)| v).collect()
}

/// An Attachment object (docs/simulator.md); `missing` looks at the real file system.
pub fn attachment_json(row: &AttachmentRow) -> Value {
    let filename = row.filename.clone().unwrap_or_default();
    let original = original_path(&filename);
    json!({
        "filename": filename,
        "transfer_name": row.transfer_name.clone().unwrap_or_default(),
        "uti": row.uti.clone().unwrap_or_default(),
        "mime_type": row.mime_type.clone().unwrap_or_default(),
        "total_bytes": row.total_bytes.unwrap_or(0),
        "is_sticker": row.is_sticker,
        "missing": is_missing(&original),
        "original_path": original,
    })
}

/// A Chat object as `chats.list` and `chats --json` print it.
///
/// Strict is the canonical 0.14+ payload; baseline is the older hand-built dictionary without
/// `display_name`, routing fields or `unread_count`.
pub fn chat_json(chat: &ChatSummary, dialect: Dialect) -> Value {
    let info = &chat.info;
    let mut m = Map::new();
    m.insert("id".into(), json!(info.id));
    m.insert("name".into(), json!(info.name()));
    m.insert("identifier".into(), json!(info.identifier));
    m.insert("service".into(), json!(info.service));
    m.insert(
        "last_message_at".into(),
        json!(iso_from_apple_ns(chat.last_message_date)),
    );
    m.insert("is_group".into(), json!(info.is_group()));
    m.insert("participants".into(), json!(info.participants));
    match dialect {
        Dialect::Baseline => {
            m.insert("guid".into(), json!(info.guid));
        }
        Dialect::Strict => {
            insert_non_empty(&mut m, "guid", Some(&info.guid));
            m.insert("display_name".into(), json!(info.name()));
            insert_routing(&mut m, info);
            m.insert("unread_count".into(), json!(chat.unread_count));
        }
    }
    Value::Object(m)
}

/// A Group object as `chats.get` returns it.
pub fn group_json(info: &ChatInfo) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(info.id));
    m.insert("identifier".into(), json!(info.identifier));
    m.insert("guid".into(), json!(info.guid));
    m.insert("name".into(), json!(info.name()));
    m.insert("service".into(), json!(info.service));
    m.insert("is_group".into(), json!(info.is_group()));
    m.insert("participants".into(), json!(info.participants));
    insert_routing(&mut m, info);
    Value::Object(m)
}

fn insert_routing(m: &mut Map<String, Value>, info: &ChatInfo) {
    insert_non_empty(m, "account_id", info.account_id.as_deref());
    insert_non_empty(m, "account_login", info.account_login.as_deref());
    insert_non_empty(m, "last_addressed_handle", info.last_addressed_handle.as_deref());
}

fn insert_non_empty(m: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        m.insert(key.into(), json!(v));
    }
}

/// What goes into a Message object besides its row.
#[derive(Debug, Default)]
pub struct MessageExtras<'a> {
    pub chat: Option<&'a ChatInfo>,
    /// Already-built Attachment objects (empty unless they were asked for).
    pub attachments: Vec<Value>,
    /// Already-aggregated Reaction objects (empty unless they were asked for).
    pub reactions: Vec<Value>,
    pub reply: Option<ReplyContext>,
}

/// A Message object.
pub fn message_json(row: &MessageRow, extras: MessageExtras<'_>, dialect: Dialect) -> Value {
    let strict = dialect.is_strict();
    let tapback = row.tapback();
    let mut m = Map::new();
    m.insert("id".into(), json!(row.rowid));
    m.insert("chat_id".into(), json!(row.chat_id.unwrap_or(0)));
    m.insert("guid".into(), json!(row.guid));
    m.insert("sender".into(), json!(row.sender()));
    m.insert("is_from_me".into(), json!(row.is_from_me));
    m.insert("text".into(), json!(row.resolved_text()));
    m.insert("created_at".into(), json!(iso_from_apple_ns(row.date)));
    m.insert("attachments".into(), Value::Array(extras.attachments));
    m.insert("reactions".into(), Value::Array(extras.reactions));
    insert_non_empty(
        &mut m,
        "destination_caller_id",
        row.destination_caller_id.as_deref(),
    );

    match tapback {
        Some(t) => {
            m.insert("is_reaction".into(), json!(true));
            m.insert("reaction_type".into(), json!(t.kind.name()));
            let emoji = t
                .kind
                .emoji()
                .map(str::to_string)
                .or_else(|| custom_emoji(row.text.as_deref(), row.associated_message_emoji.as_deref()));
            if let Some(e) = emoji {
                m.insert("reaction_emoji".into(), json!(e));
            }
            m.insert("is_reaction_add".into(), json!(t.is_add));
            if let Some(target) = row.associated_target() {
                m.insert("reacted_to_guid".into(), json!(target));
            }
        }
        None => {
            if let Some(target) = row.associated_target() {
                m.insert("reply_to_guid".into(), json!(target));
            }
            insert_non_empty(
                &mut m,
                "thread_originator_guid",
                row.thread_originator_guid.as_deref(),
            );
            if strict {
                insert_non_empty(
                    &mut m,
                    "thread_originator_part",
                    row.thread_originator_part.as_deref(),
                );
            }
        }
    }
    if let Some(reply) = extras.reply {
        m.insert("reply_to_text".into(), json!(reply.text));
        m.insert("reply_to_sender".into(), json!(reply.sender));
    }
    if strict {
        insert_non_empty(&mut m, "balloon_bundle_id", row.balloon_bundle_id.as_deref());
        if !row.is_from_me {
            m.insert("is_read".into(), json!(row.is_read));
            if row.is_read && row.date_read.is_some_and(|d| d != 0) {
                m.insert("date_read".into(), json!(iso_from_apple_ns(row.date_read)));
            }
        }
    }

    let empty = ChatInfo::default();
    let chat = extras.chat.unwrap_or(&empty);
    m.insert("chat_identifier".into(), json!(chat.identifier));
    m.insert("chat_guid".into(), json!(chat.guid));
    m.insert(
        "chat_name".into(),
        json!(if extras.chat.is_some() { chat.name() } else { "" }),
    );
    m.insert("participants".into(), json!(chat.participants));
    m.insert("is_group".into(), json!(chat.is_group()));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family() -> ChatInfo {
        ChatInfo {
            id: 2,
            guid: "iMessage;+;chat900000000000000001".into(),
            identifier: "chat900000000000000001".into(),
            display_name: Some("Family".into()),
            service: "iMessage".into(),
            participants: normalize_participants(vec![
                "jane@example.com".into(),
                "+14155551212".into(),
                "".into(),
                "jane@example.com".into(),
            ]),
            ..ChatInfo::default()
        }
    }

    fn row() -> MessageRow {
        MessageRow {
            rowid: 11,
            chat_id: Some(2),
            guid: "G-11".into(),
            text: Some("dinner at 7?".into()),
            handle: "jane@example.com".into(),
            date: Some(800_637_910_000_000_000),
            ..MessageRow::default()
        }
    }

    #[test]
    fn builds_a_message_with_its_chat_fields() {
        let chat = family();
        let extras = MessageExtras {
            chat: Some(&chat),
            ..MessageExtras::default()
        };
        let v = message_json(&row(), extras, Dialect::Strict);
        assert_eq!(v["id"], 11);
        assert_eq!(v["chat_id"], 2);
        assert_eq!(v["sender"], "jane@example.com");
        assert_eq!(v["text"], "dinner at 7?");
        assert_eq!(v["created_at"], "2026-05-16T15:25:10.000Z");
        assert_eq!(v["attachments"], json!([]));
        assert_eq!(v["reactions"], json!([]));
        assert_eq!(v["chat_name"], "Family");
        assert_eq!(v["is_group"], true);
        assert_eq!(v["participants"], json!(["+14155551212", "jane@example.com"]));
        assert_eq!(v["is_read"], false);
        // Absent optional strings are omitted, not null.
        for key in [
            "reply_to_guid",
            "thread_originator_guid",
            "destination_caller_id",
            "is_reaction",
        ] {
            assert!(v.get(key).is_none(), "{key}");
        }
    }

    #[test]
    fn leaves_newer_fields_out_of_baseline_messages() {
        let v = message_json(&row(), MessageExtras::default(), Dialect::Baseline);
        assert!(v.get("is_read").is_none());
        assert_eq!(v["chat_id"], 2);
        assert_eq!(v["chat_guid"], "");
        assert_eq!(v["is_group"], false);
    }

    #[test]
    fn describes_a_tapback_row_as_a_reaction_event() {
        let mut r = row();
        r.text = Some("Loved “hello”".into());
        r.associated_message_type = Some(2000);
        r.associated_message_guid = Some("p:0/TARGET".into());
        r.thread_originator_guid = Some("ROOT".into());
        let v = message_json(&r, MessageExtras::default(), Dialect::Strict);
        assert_eq!(v["is_reaction"], true);
        assert_eq!(v["reaction_type"], "love");
        assert_eq!(v["reaction_emoji"], "❤️");
        assert_eq!(v["is_reaction_add"], true);
        assert_eq!(v["reacted_to_guid"], "TARGET");
        assert!(v.get("reply_to_guid").is_none());
        assert!(v.get("thread_originator_guid").is_none());
    }

    #[test]
    fn reports_non_tapback_associations_as_replies() {
        let mut r = row();
        r.associated_message_type = Some(1000);
        r.associated_message_guid = Some("bp:BALLOON".into());
        let v = message_json(&r, MessageExtras::default(), Dialect::Strict);
        assert_eq!(v["reply_to_guid"], "bp:BALLOON");
    }

    #[test]
    fn falls_back_to_the_attributed_body_and_the_caller_id() {
        let mut r = row();
        r.text = None;
        r.attributed_body = Some(typedstream::encode("from the body"));
        r.handle = String::new();
        r.destination_caller_id = Some("me@example.com".into());
        let v = message_json(&r, MessageExtras::default(), Dialect::Strict);
        assert_eq!(v["text"], "from the body");
        assert_eq!(v["sender"], "me@example.com");
    }

    #[test]
    fn aggregates_adds_replacements_and_removals() {
        let r = |rowid, t, sender: &str| ReactionRow {
            rowid,
            associated_message_type: t,
            sender: sender.into(),
            date: Some(rowid),
            ..ReactionRow::default()
        };
        let rows = [
            r(1, 2000, "a"),
            r(2, 2001, "b"),
            r(3, 3000, "a"),
            r(4, 2003, "a"),
            r(5, 2001, "b"),
        ];
        let got = aggregate_reactions(&rows);
        let kinds: Vec<_> = got.iter().map(|v| (v["id"].clone(), v["type"].clone())).collect();
        assert_eq!(kinds, vec![(json!(4), json!("laugh")), (json!(5), json!("like"))]);
    }

    #[test]
    fn recovers_custom_emoji_or_ignores_the_row() {
        assert_eq!(
            custom_emoji(Some("Reacted 🎉 to “hi”"), None).as_deref(),
            Some("🎉")
        );
        assert_eq!(custom_emoji(Some("x 👍🏽 y"), None).as_deref(), Some("👍🏽"));
        assert_eq!(custom_emoji(Some("plain"), Some("🔥")).as_deref(), Some("🔥"));
        assert_eq!(custom_emoji(Some("plain words"), None), None);
        let rows = [ReactionRow {
            rowid: 1,
            associated_message_type: 2006,
            text: Some("no emoji".into()),
            ..ReactionRow::default()
        }];
        assert!(aggregate_reactions(&rows).is_empty());
    }

    #[test]
    fn strips_part_prefixes_but_keeps_balloon_guids() {
        assert_eq!(strip_part_prefix("p:0/ABC"), "ABC");
        assert_eq!(strip_part_prefix("bp:ABC"), "bp:ABC");
        assert_eq!(strip_part_prefix("ABC"), "ABC");
    }

    #[test]
    fn builds_strict_and_baseline_chats() {
        let summary = ChatSummary {
            info: family(),
            last_message_date: Some(800_637_910_000_000_000),
            unread_count: 1,
        };
        let strict = chat_json(&summary, Dialect::Strict);
        assert_eq!(strict["name"], "Family");
        assert_eq!(strict["display_name"], "Family");
        assert_eq!(strict["unread_count"], 1);
        assert_eq!(strict["last_message_at"], "2026-05-16T15:25:10.000Z");
        assert!(strict.get("account_id").is_none());
        let baseline = chat_json(&summary, Dialect::Baseline);
        assert!(baseline.get("display_name").is_none());
        assert!(baseline.get("unread_count").is_none());
        assert_eq!(baseline["guid"], "iMessage;+;chat900000000000000001");
    }

    #[test]
    fn names_an_unnamed_dm_with_the_empty_display_name() {
        let info = ChatInfo {
            identifier: "+14155551212".into(),
            guid: "iMessage;-;+14155551212".into(),
            display_name: Some(String::new()),
            ..ChatInfo::default()
        };
        assert_eq!(info.name(), "");
        assert!(!info.is_group());
        let g = group_json(&info);
        assert_eq!(g["is_group"], false);
        assert_eq!(g["name"], "");
    }

    #[test]
    fn computes_missing_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.png");
        std::fs::write(&file, b"x").unwrap();
        let present = attachment_json(&AttachmentRow {
            filename: Some(file.display().to_string()),
            ..AttachmentRow::default()
        });
        assert_eq!(present["missing"], false);
        assert_eq!(present["total_bytes"], 0);
        assert_eq!(present["mime_type"], "");
        let gone = attachment_json(&AttachmentRow {
            filename: Some(dir.path().join("b.png").display().to_string()),
            ..AttachmentRow::default()
        });
        assert_eq!(gone["missing"], true);
        let empty = attachment_json(&AttachmentRow::default());
        assert_eq!(empty["original_path"], "");
        assert_eq!(empty["missing"], true);
    }
}

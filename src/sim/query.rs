//! The read queries behind `chats.*`, `messages.*`, `message.send_status` and the watch.
//!
//! Each function takes a plain `&Connection` and blocks; callers run them on the blocking pool. Rows
//! come back as the structs of [`crate::sim::shapes`]; [`build_messages`] adds the per-message
//! lookups (chat, attachments, reactions, reply context) and produces the JSON objects.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use crate::sim::Dialect;
use crate::sim::shapes::{
    self, AttachmentRow, ChatInfo, ChatSummary, MessageExtras, MessageRow, ReactionRow, ReplyContext,
};

/// The message columns every message query selects, in the order [`message_row`] reads them.
macro_rules! message_select {
    () => {
        "SELECT m.ROWID, cmj.chat_id, IFNULL(m.guid, ''), m.text, m.attributedBody, IFNULL(h.id, ''),
                m.is_from_me, m.date, m.service, m.destination_caller_id, m.associated_message_guid,
                m.associated_message_type, m.associated_message_emoji, m.thread_originator_guid,
                m.thread_originator_part, m.balloon_bundle_id, m.is_read, m.date_read
         FROM message m "
    };
}

/// SQL condition that keeps everything but tapback rows (2000–3006).
macro_rules! not_tapback {
    () => {
        "(m.associated_message_type IS NULL OR m.associated_message_type NOT BETWEEN 2000 AND 3006)"
    };
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        rowid: r.get(0)?,
        chat_id: r.get(1)?,
        guid: r.get(2)?,
        text: r.get(3)?,
        attributed_body: r.get(4)?,
        handle: r.get(5)?,
        is_from_me: r.get::<_, Option<i64>>(6)?.unwrap_or(0) != 0,
        date: r.get(7)?,
        service: r.get(8)?,
        destination_caller_id: r.get(9)?,
        associated_message_guid: r.get(10)?,
        associated_message_type: r.get(11)?,
        associated_message_emoji: r.get(12)?,
        thread_originator_guid: r.get(13)?,
        thread_originator_part: r.get(14)?,
        balloon_bundle_id: r.get(15)?,
        is_read: r.get::<_, Option<i64>>(16)?.unwrap_or(0) != 0,
        date_read: r.get(17)?,
    })
}

/// `MAX(message.ROWID)`, the tail position of a watch (0 for an empty table).
pub fn max_rowid(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT IFNULL(MAX(ROWID), 0) FROM message", [], |r| r.get(0))
}

/// How to look a chat up.
#[derive(Debug, Clone, Copy)]
pub enum ChatKey<'a> {
    Id(i64),
    Guid(&'a str),
    Identifier(&'a str),
}

/// One chat with its participants, or `None` when it does not exist.
pub fn chat_info(conn: &Connection, key: ChatKey<'_>) -> rusqlite::Result<Option<ChatInfo>> {
    macro_rules! chat_select {
        () => {
            "SELECT ROWID, IFNULL(guid, ''), IFNULL(chat_identifier, ''), display_name,
                    IFNULL(service_name, ''), account_id, account_login, last_addressed_handle FROM chat "
        };
    }
    let read = |r: &Row<'_>| {
        Ok(ChatInfo {
            id: r.get(0)?,
            guid: r.get(1)?,
            identifier: r.get(2)?,
            display_name: r.get(3)?,
            service: r.get(4)?,
            participants: Vec::new(),
            account_id: r.get(5)?,
            account_login: r.get(6)?,
            last_addressed_handle: r.get(7)?,
        })
    };
    let found = match key {
        ChatKey::Id(id) => conn
            .prepare_cached(concat!(chat_select!(), "WHERE ROWID = ?1"))?
            .query_row(params![id], read)
            .optional()?,
        ChatKey::Guid(guid) => conn
            .prepare_cached(concat!(chat_select!(), "WHERE guid = ?1 ORDER BY ROWID LIMIT 1"))?
            .query_row(params![guid], read)
            .optional()?,
        ChatKey::Identifier(ident) => conn
            .prepare_cached(concat!(
                chat_select!(),
                "WHERE chat_identifier = ?1 ORDER BY ROWID LIMIT 1"
            ))?
            .query_row(params![ident], read)
            .optional()?,
    };
    match found {
        Some(mut info) => {
            info.participants = participants(conn, info.id)?;
            Ok(Some(info))
        }
        None => Ok(None),
    }
}

/// Other people's handles in a chat, sorted and de-duplicated.
pub fn participants(conn: &Connection, chat_id: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT IFNULL(h.id, '') FROM chat_handle_join chj JOIN handle h ON h.ROWID = chj.handle_id
         WHERE chj.chat_id = ?1",
    )?;
    let handles = stmt
        .query_map(params![chat_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(shapes::normalize_participants(handles))
}

/// Chat lookups of one request, so a batch of messages from one chat reads it once.
#[derive(Debug, Default)]
pub struct ChatCache {
    chats: HashMap<i64, Option<ChatInfo>>,
}

impl ChatCache {
    pub fn get(&mut self, conn: &Connection, id: i64) -> rusqlite::Result<Option<&ChatInfo>> {
        let info = match self.chats.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(chat_info(conn, ChatKey::Id(id))?),
        };
        Ok(info.as_ref())
    }
}

/// Chats that have at least one message, most recent activity first (`chats.list`).
pub fn list_chats(conn: &Connection, limit: i64, unread_only: bool) -> rusqlite::Result<Vec<ChatSummary>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT c.ROWID, MAX(cmj.message_date) AS last_date,
                (SELECT COUNT(*) FROM chat_message_join j JOIN message m ON m.ROWID = j.message_id
                 WHERE j.chat_id = c.ROWID AND m.is_from_me = 0 AND m.is_read = 0 AND ",
        not_tapback!(),
        ") AS unread
         FROM chat c JOIN chat_message_join cmj ON cmj.chat_id = c.ROWID
         GROUP BY c.ROWID
         HAVING ?1 = 0 OR unread > 0
         ORDER BY last_date DESC, c.ROWID DESC
         LIMIT ?2"
    ))?;
    let ids = stmt
        .query_map(params![unread_only, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, last_message_date, unread_count) in ids {
        if let Some(info) = chat_info(conn, ChatKey::Id(id))? {
            out.push(ChatSummary {
                info,
                last_message_date,
                unread_count,
            });
        }
    }
    Ok(out)
}

/// The filters of `messages.history` (all applied in SQL, before the limit).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub chat_id: i64,
    pub limit: i64,
    /// Case-insensitive sender handles; `None` = everyone.
    pub participants: Option<Vec<String>>,
    /// Inclusive lower bound, Apple nanoseconds.
    pub start: Option<i64>,
    /// Exclusive upper bound, Apple nanoseconds.
    pub end: Option<i64>,
}

/// A chat's messages, newest first, tapback rows excluded.
pub fn history(conn: &Connection, f: &HistoryFilter) -> rusqlite::Result<Vec<MessageRow>> {
    let participants = f
        .participants
        .as_ref()
        .map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
    let mut stmt = conn.prepare_cached(concat!(
        message_select!(),
        "JOIN chat_message_join cmj ON cmj.message_id = m.ROWID
         LEFT JOIN handle h ON h.ROWID = m.handle_id
         WHERE cmj.chat_id = ?1 AND ",
        not_tapback!(),
        " AND (?2 IS NULL OR m.date >= ?2)
          AND (?3 IS NULL OR m.date < ?3)
          AND (?4 IS NULL OR LOWER(COALESCE(NULLIF(h.id, ''), m.destination_caller_id, ''))
                             IN (SELECT LOWER(value) FROM json_each(?4)))
         ORDER BY m.date DESC, m.ROWID DESC
         LIMIT ?5"
    ))?;
    stmt.query_map(
        params![f.chat_id, f.start, f.end, participants, f.limit],
        message_row,
    )?
    .collect()
}

/// Rows with ROWID > `since`, ROWID ascending, at most `limit` (the watch and `messages.after` scan).
///
/// Tapback rows are dropped in SQL when `skip_tapbacks`; rows not joined to any chat come back with
/// `chat_id: None` unless a chat is given.
pub fn rows_after(
    conn: &Connection,
    since: i64,
    chat_id: Option<i64>,
    skip_tapbacks: bool,
    limit: i64,
) -> rusqlite::Result<Vec<MessageRow>> {
    let mut stmt = conn.prepare_cached(concat!(
        message_select!(),
        "LEFT JOIN chat_message_join cmj ON cmj.message_id = m.ROWID
         LEFT JOIN handle h ON h.ROWID = m.handle_id
         WHERE m.ROWID > ?1 AND (?2 IS NULL OR cmj.chat_id = ?2) AND (?3 = 0 OR ",
        not_tapback!(),
        ")
         ORDER BY m.ROWID ASC, cmj.chat_id ASC
         LIMIT ?4"
    ))?;
    stmt.query_map(params![since, chat_id, skip_tapbacks, limit], message_row)?
        .collect()
}

/// `messages.search`: case-insensitive match on the text, newest first, each message once (with its
/// lowest chat id), tapback rows excluded.
pub fn search(conn: &Connection, query: &str, exact: bool, limit: i64) -> rusqlite::Result<Vec<MessageRow>> {
    let pattern = format!("%{}%", escape_like(query));
    let mut stmt = conn.prepare_cached(concat!(
        message_select!(),
        "JOIN chat_message_join cmj ON cmj.message_id = m.ROWID
              AND cmj.chat_id = (SELECT MIN(chat_id) FROM chat_message_join WHERE message_id = m.ROWID)
         LEFT JOIN handle h ON h.ROWID = m.handle_id
         WHERE ",
        not_tapback!(),
        " AND CASE WHEN ?1 THEN LOWER(IFNULL(m.text, '')) = LOWER(?2)
                   ELSE IFNULL(m.text, '') LIKE ?3 ESCAPE '\\' END
         ORDER BY m.date DESC, m.ROWID DESC
         LIMIT ?4"
    ))?;
    stmt.query_map(params![exact, query, pattern, limit], message_row)?
        .collect()
}

/// Make `%`, `_` and `\` match literally in a LIKE pattern with `ESCAPE '\'`.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Attachments of a message, in join order.
pub fn attachments(conn: &Connection, message_id: i64) -> rusqlite::Result<Vec<AttachmentRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.filename, a.transfer_name, a.uti, a.mime_type, a.total_bytes, a.is_sticker
         FROM message_attachment_join j JOIN attachment a ON a.ROWID = j.attachment_id
         WHERE j.message_id = ?1 ORDER BY j.rowid",
    )?;
    stmt.query_map(params![message_id], |r| {
        Ok(AttachmentRow {
            filename: r.get(0)?,
            transfer_name: r.get(1)?,
            uti: r.get(2)?,
            mime_type: r.get(3)?,
            total_bytes: r.get(4)?,
            is_sticker: r.get::<_, Option<i64>>(5)?.unwrap_or(0) != 0,
        })
    })?
    .collect()
}

/// Highest message part a tapback's `p:N/<guid>` target is looked up for.
const MAX_PART: usize = 63;

/// Tapback rows aimed at `guid` (exactly, or as `p:N/<guid>` for parts up to [`MAX_PART`]; `bp:<guid>`
/// does not count), by date. The targets are listed exactly so that SQLite uses the index on
/// `associated_message_guid`: a suffix match would scan the whole table once per message, which
/// made a page of a large chat.db take seconds.
pub fn reaction_rows(conn: &Connection, guid: &str) -> rusqlite::Result<Vec<ReactionRow>> {
    let targets: Vec<String> = std::iter::once(guid.to_string())
        .chain((0..=MAX_PART).map(|part| format!("p:{part}/{guid}")))
        .collect();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT m.ROWID, m.associated_message_type, COALESCE(NULLIF(h.id, ''), m.destination_caller_id, ''),
                m.is_from_me, m.date, m.text, m.associated_message_emoji
         FROM message m LEFT JOIN handle h ON h.ROWID = m.handle_id
         WHERE m.associated_message_guid IN ({})
           AND m.associated_message_type BETWEEN 2000 AND 3006
         ORDER BY m.date ASC, m.ROWID ASC",
        vec!["?"; targets.len()].join(", ")
    ))?;
    stmt.query_map(rusqlite::params_from_iter(&targets), |r| {
        Ok(ReactionRow {
            rowid: r.get(0)?,
            associated_message_type: r.get(1)?,
            sender: r.get(2)?,
            is_from_me: r.get::<_, Option<i64>>(3)?.unwrap_or(0) != 0,
            date: r.get(4)?,
            text: r.get(5)?,
            emoji: r.get(6)?,
        })
    })?
    .collect()
}

/// Text and sender of the message with `guid`, for `reply_to_text` / `reply_to_sender`.
fn reply_target(conn: &Connection, guid: &str) -> rusqlite::Result<Option<ReplyContext>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.text, m.attributedBody, IFNULL(h.id, ''), m.destination_caller_id
         FROM message m LEFT JOIN handle h ON h.ROWID = m.handle_id WHERE m.guid = ?1 LIMIT 1",
    )?;
    stmt.query_row(params![guid], |r| {
        let row = MessageRow {
            text: r.get(0)?,
            attributed_body: r.get(1)?,
            handle: r.get(2)?,
            destination_caller_id: r.get(3)?,
            ..MessageRow::default()
        };
        Ok(ReplyContext {
            text: row.resolved_text(),
            sender: row.sender(),
        })
    })
    .optional()
}

/// What to fill in while building Message objects.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    pub attachments: bool,
    pub reactions: bool,
    pub dialect: Dialect,
}

/// Turn rows into Message objects, with their chat fields and the requested extras.
pub fn build_messages(
    conn: &Connection,
    rows: &[MessageRow],
    opts: BuildOptions,
    cache: &mut ChatCache,
) -> rusqlite::Result<Vec<Value>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(build_message(conn, row, opts, cache)?);
    }
    Ok(out)
}

/// One Message object; see [`build_messages`].
pub fn build_message(
    conn: &Connection,
    row: &MessageRow,
    opts: BuildOptions,
    cache: &mut ChatCache,
) -> rusqlite::Result<Value> {
    let attachments = if opts.attachments {
        attachments(conn, row.rowid)?
            .iter()
            .map(shapes::attachment_json)
            .collect()
    } else {
        Vec::new()
    };
    let is_tapback = row.tapback().is_some();
    let reactions = if opts.reactions && !is_tapback && !row.guid.is_empty() {
        shapes::aggregate_reactions(&reaction_rows(conn, &row.guid)?)
    } else {
        Vec::new()
    };
    let mut reply = None;
    if !is_tapback {
        let thread = row.thread_originator_guid.clone().filter(|g| !g.is_empty());
        for guid in thread.into_iter().chain(row.associated_target()) {
            reply = reply_target(conn, &guid)?;
            if reply.is_some() {
                break;
            }
        }
    }
    let chat = match row.chat_id {
        Some(id) => cache.get(conn, id)?,
        None => None,
    };
    Ok(shapes::message_json(
        row,
        MessageExtras {
            chat,
            attachments,
            reactions,
            reply,
        },
        opts.dialect,
    ))
}

/// The delivery columns `message.send_status` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendStatusRow {
    pub service: Option<String>,
    pub is_sent: bool,
    pub is_delivered: bool,
    pub is_finished: bool,
    pub error: i64,
    pub date_delivered: Option<i64>,
    pub date_read: Option<i64>,
    pub is_delayed: bool,
    pub is_prepared: bool,
    pub is_pending_satellite_send: bool,
    pub was_downgraded: bool,
}

/// The delivery state of the message with `guid`.
pub fn send_status(conn: &Connection, guid: &str) -> rusqlite::Result<Option<SendStatusRow>> {
    let flag = |r: &Row<'_>, i: usize| -> rusqlite::Result<bool> {
        Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) != 0)
    };
    conn.prepare_cached(
        "SELECT service, is_sent, is_delivered, is_finished, IFNULL(error, 0), date_delivered, date_read,
                is_delayed, is_prepared, is_pending_satellite_send, was_downgraded
         FROM message WHERE guid = ?1 LIMIT 1",
    )?
    .query_row(params![guid], |r| {
        Ok(SendStatusRow {
            service: r.get(0)?,
            is_sent: flag(r, 1)?,
            is_delivered: flag(r, 2)?,
            is_finished: flag(r, 3)?,
            error: r.get(4)?,
            date_delivered: r.get(5)?,
            date_read: r.get(6)?,
            is_delayed: flag(r, 7)?,
            is_prepared: flag(r, 8)?,
            is_pending_satellite_send: flag(r, 9)?,
            was_downgraded: flag(r, 10)?,
        })
    })
    .optional()
}

/// Which optional features the schema supports, for `status.database.features`.
pub fn schema_features(conn: &Connection) -> rusqlite::Result<serde_json::Map<String, Value>> {
    let columns = |table: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("SELECT LOWER(name) FROM pragma_table_info(?1)")?;
        stmt.query_map(params![table], |r| r.get(0))?.collect()
    };
    let message = columns("message")?;
    let chat = columns("chat")?;
    let has = |cols: &[String], name: &str| cols.iter().any(|c| c == name);
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: bool| {
        m.insert(k.into(), Value::Bool(v));
    };
    put("unread_state", has(&message, "is_read"));
    put(
        "scheduled_messages",
        has(&message, "schedule_type") && has(&message, "schedule_state"),
    );
    put(
        "reactions",
        has(&message, "guid")
            && has(&message, "associated_message_guid")
            && has(&message, "associated_message_type"),
    );
    put("reply_context", has(&message, "thread_originator_guid"));
    put(
        "routing_metadata",
        has(&chat, "account_id") && has(&chat, "account_login") && has(&chat, "last_addressed_handle"),
    );
    put("balloon_payloads", has(&message, "balloon_bundle_id"));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::schema;

    fn seeded() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        schema::create(&conn, true).unwrap();
        conn
    }

    fn add(conn: &Connection, rowid: i64, chat: i64, text: &str, assoc: Option<(&str, i64)>) {
        conn.execute(
            "INSERT INTO message (ROWID, guid, text, handle_id, date, associated_message_guid,
                                  associated_message_type)
             VALUES (?1, ?2, ?3, 2, ?4, ?5, ?6)",
            params![
                rowid,
                format!("G{rowid}"),
                text,
                800_637_910_000_000_000i64 + rowid,
                assoc.map(|a| a.0),
                assoc.map(|a| a.1).unwrap_or(0)
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO chat_message_join VALUES (?1, ?2, ?3)",
            params![chat, rowid, 800_637_910_000_000_000i64 + rowid],
        )
        .unwrap();
    }

    const OPTS: BuildOptions = BuildOptions {
        attachments: false,
        reactions: true,
        dialect: Dialect::Strict,
    };

    #[test]
    fn lists_chats_by_last_activity() {
        let conn = seeded();
        let chats = list_chats(&conn, 20, false).unwrap();
        let ids: Vec<i64> = chats.iter().map(|c| c.info.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(
            chats[0].info.participants,
            vec!["+14155551212", "jane@example.com"]
        );
        assert_eq!(chats[0].unread_count, 1);
        assert_eq!(list_chats(&conn, 1, false).unwrap().len(), 1);
    }

    #[test]
    fn hides_tapbacks_from_history_but_aggregates_them() {
        let conn = seeded();
        add(
            &conn,
            20,
            2,
            "Loved “dinner at 7?”",
            Some(("p:0/6F1C0B7E-0000-4000-8000-000000000011", 2000)),
        );
        let rows = history(
            &conn,
            &HistoryFilter {
                chat_id: 2,
                limit: 50,
                ..HistoryFilter::default()
            },
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        let built = build_messages(&conn, &rows, OPTS, &mut ChatCache::default()).unwrap();
        assert_eq!(built[0]["reactions"][0]["type"], "love");
        assert_eq!(built[0]["reactions"][0]["sender"], "jane@example.com");
    }

    #[test]
    fn filters_history_by_participant_and_time_before_the_limit() {
        let conn = seeded();
        add(&conn, 20, 2, "later", None);
        let filter = |participants: Option<Vec<String>>, start: Option<i64>| HistoryFilter {
            chat_id: 2,
            limit: 1,
            participants,
            start,
            end: None,
        };
        let by_jane = history(&conn, &filter(Some(vec!["JANE@example.com".into()]), None)).unwrap();
        assert_eq!(by_jane[0].rowid, 20);
        let nobody = history(&conn, &filter(Some(vec!["+1999".into()]), None)).unwrap();
        assert!(nobody.is_empty());
        let late = history(&conn, &filter(None, Some(800_637_910_000_000_001))).unwrap();
        assert_eq!(late.len(), 1);
    }

    #[test]
    fn scans_after_a_rowid_in_ascending_order() {
        let conn = seeded();
        add(&conn, 20, 1, "a", None);
        add(&conn, 21, 1, "tap", Some(("p:0/G20", 2001)));
        let rows: Vec<i64> = rows_after(&conn, 10, None, true, 100)
            .unwrap()
            .iter()
            .map(|r| r.rowid)
            .collect();
        assert_eq!(rows, vec![11, 20]);
        let with_taps = rows_after(&conn, 10, Some(1), false, 100).unwrap();
        assert_eq!(
            with_taps.iter().map(|r| r.rowid).collect::<Vec<_>>(),
            vec![20, 21]
        );
        assert_eq!(max_rowid(&conn).unwrap(), 21);
    }

    #[test]
    fn searches_literally_and_case_insensitively() {
        let conn = seeded();
        add(&conn, 20, 1, "100% DONE_now", None);
        assert_eq!(search(&conn, "% done_", false, 50).unwrap().len(), 1);
        assert_eq!(search(&conn, "%x", false, 50).unwrap().len(), 0);
        assert_eq!(search(&conn, "HELLO", true, 50).unwrap().len(), 1);
        assert_eq!(search(&conn, "hell", true, 50).unwrap().len(), 0);
    }

    #[test]
    fn finds_reply_context_through_the_thread_originator() {
        let conn = seeded();
        conn.execute(
            "INSERT INTO message (ROWID, guid, text, handle_id, date, thread_originator_guid)
             VALUES (30, 'R', 'yes!', 1, 1, '6F1C0B7E-0000-4000-8000-000000000011')",
            [],
        )
        .unwrap();
        let rows = rows_after(&conn, 29, None, true, 10).unwrap();
        let v = build_message(&conn, &rows[0], OPTS, &mut ChatCache::default()).unwrap();
        assert_eq!(v["reply_to_text"], "dinner at 7?");
        assert_eq!(v["reply_to_sender"], "jane@example.com");
        assert_eq!(v["chat_id"], 0);
    }

    #[test]
    fn reports_schema_features() {
        let conn = seeded();
        let f = schema_features(&conn).unwrap();
        assert!(f.values().all(|v| v == &Value::Bool(true)), "{f:?}");
    }
}

//! `send`: validate like imsg, write the rows Messages would write (docs/simulator.md), then verify by
//! reading the row back the way imsg's AppleScript path does.
//!
//! A text and a file are two sends and two rows, as with AppleScript. Outgoing rows get
//! `is_from_me = 1`, `is_sent = 1`, `destination_caller_id` = the simulated user's handle, and the
//! recipient's handle (1:1) or 0 (groups); `is_delivered` follows a moment later.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde_json::{Value, json};

use crate::sim::attachments::{self, StoredFile};
use crate::sim::chat_guid;
use crate::sim::db::{self, ChatRef, NewMessage, SELF_HANDLE};
use crate::sim::faults::{
    ECHO_RACE_FLIP_DELAY, NOT_AUTHORIZED_ERROR, SEND_FAILS_DETAIL, SEND_TIMEOUT_DETAIL,
};
use crate::sim::methods::optional_chat_id;
use crate::sim::params::Params;
use crate::sim::protocol::{Disposition, RpcError};
use crate::sim::query::{self, ChatKey};
use crate::sim::rpc::Backend;
use crate::sim::time::apple_ns_now;
use crate::sim::{Dialect, SimError};
use crate::util::expand_tilde;

/// How long after sending the rows turn `is_delivered = 1`.
const DELIVERY_DELAY: Duration = Duration::from_millis(300);

/// Verification polls chat.db this often, for at most [`VERIFY_TIMEOUT`] (imsg: 100 ms, 2 s).
const VERIFY_INTERVAL: Duration = Duration::from_millis(100);
const VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages' placeholder text of an attachment-only row (OBJECT REPLACEMENT CHARACTER).
const ATTACHMENT_PLACEHOLDER: &str = "\u{FFFC}";

const STRICT_KEYS: &[&str] = &[
    "to",
    "chat_id",
    "chat_identifier",
    "chat_guid",
    "text",
    "file",
    "path",
    "service",
    "region",
    "transport",
    "reply_to",
    "replyTo",
    "reply_to_guid",
    "message_guid",
    "text_formatting",
    "textFormatting",
    "formatting",
    "allow_sms_fallback",
    "allowSMSFallback",
];

/// Where a send goes.
#[derive(Debug, Clone)]
enum Target {
    Direct {
        handle: String,
        service: Service,
    },
    ChatId(i64),
    /// A chat guid in any spelling Messages accepts (`any;-;HANDLE`, …), resolved by
    /// [`chat_guid::resolve`] with `region` for the handle.
    ChatGuid {
        guid: String,
        region: String,
    },
    ChatIdentifier(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    IMessage,
    Sms,
    Auto,
}

/// A validated send request.
#[derive(Debug, Clone)]
struct SendRequest {
    target: Target,
    text: String,
    file: Option<PathBuf>,
}

/// `send` over RPC (and the CLI `send`, which goes through the same validation).
pub(crate) async fn send(backend: &Arc<Backend>, p: &Params) -> Result<Value, RpcError> {
    let req = validate(p)?;
    let dialect = backend.dialect;
    if backend.faults.send_fails {
        // `tell application "Messages"` fails before the send event: nothing was dispatched.
        return Err(applescript_failure(
            dialect,
            Disposition::NotStarted,
            NOT_AUTHORIZED_ERROR,
            SEND_FAILS_DETAIL,
        ));
    }
    if let Some(file) = &req.file
        && !file.is_file()
    {
        return Err(RpcError::internal(format!(
            "AppleScript failed: Attachment not found at {}",
            file.display()
        )));
    }
    let echo_race = backend.faults.echo_race;
    let sent_at = apple_ns_now();
    let write_req = req.clone();
    let db_path = backend.pool.path().to_path_buf();
    let written = backend
        .pool
        .run(move |conn| write_rows(conn, &db_path, &write_req, !echo_race))
        .await
        .map_err(|e| match e {
            SimError::BadInput(detail) => RpcError::invalid_params(detail),
            e => backend.db_error(e),
        })?
        .map_err(|failure| failure.into_rpc(dialect))?;
    follow_up(backend, written.rowids.clone(), echo_race);
    if backend.faults.send_unknown {
        return Err(match dialect {
            Dialect::Strict => RpcError::delivery(Disposition::MayHaveCompleted, SEND_TIMEOUT_DETAIL),
            Dialect::Baseline => RpcError::internal(format!("AppleScript failed: {SEND_TIMEOUT_DETAIL}")),
        });
    }

    let verified = verify(backend, &req, &written, sent_at).await;
    let mut result = json!({"ok": true, "transport": "applescript"});
    if let (Some((id, guid)), Some(obj)) = (verified, result.as_object_mut()) {
        obj.insert("id".into(), json!(id));
        obj.insert("guid".into(), json!(guid));
        if backend.dialect.is_strict() {
            obj.insert("message_id".into(), json!(guid));
        }
    }
    if backend.dialect.is_strict()
        && let Some(obj) = result.as_object_mut()
    {
        obj.insert("chat_guid".into(), json!(written.chat.guid));
        obj.insert("service".into(), json!(written.chat.service));
    }
    Ok(result)
}

fn validate(p: &Params) -> Result<SendRequest, RpcError> {
    let strict = p.dialect().is_strict();
    p.allow(STRICT_KEYS)?;
    let text = p.string("text")?.unwrap_or_default();
    let file = p.string_any(&["file", "path"])?.unwrap_or_default();
    let service = match p.string("service")?.as_deref() {
        None | Some("auto") => Service::Auto,
        Some("imessage") => Service::IMessage,
        Some("sms") => Service::Sms,
        Some(_) => return Err(RpcError::invalid_params("invalid service")),
    };
    let region = p.string("region")?.unwrap_or_else(|| "US".into());
    match p.string("transport")?.map(|t| t.to_ascii_lowercase()).as_deref() {
        None | Some("auto") | Some("applescript") => {}
        Some("bridge") => {
            let detail = "The bridge is not started. Run imsg launch explicitly before using bridge methods.";
            return Err(match p.dialect() {
                Dialect::Strict => RpcError::bridge_unavailable(detail),
                Dialect::Baseline => RpcError::internal(detail),
            });
        }
        Some(_) => return Err(RpcError::invalid_params("invalid transport")),
    }
    if strict {
        if p.string_any(&["reply_to", "replyTo", "reply_to_guid", "message_guid"])?
            .is_some()
        {
            return Err(RpcError::invalid_params(
                "reply_to requires bridge transport; AppleScript fallback cannot send threaded replies",
            ));
        }
        if let Some(v) = p
            .raw("text_formatting")
            .or(p.raw("textFormatting"))
            .or(p.raw("formatting"))
            && !v.is_array()
        {
            return Err(RpcError::invalid_params("text_formatting must be an array"));
        }
        p.bool_any(&["allow_sms_fallback", "allowSMSFallback"])?;
    }

    let chat_id = optional_chat_id(p)?;
    let chat_identifier = p.string("chat_identifier")?.filter(|s| !s.is_empty());
    let chat_guid = p.string("chat_guid")?.filter(|s| !s.is_empty());
    let to = p
        .string("to")?
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let selectors = usize::from(chat_id.is_some())
        + usize::from(chat_identifier.is_some())
        + usize::from(chat_guid.is_some());
    let conflict = if strict {
        "use to or exactly one chat selector; not both"
    } else {
        "use to or chat_*; not both"
    };
    if (to.is_some() && selectors > 0) || (strict && selectors > 1) {
        return Err(RpcError::invalid_params(conflict));
    }
    let target = match (to, chat_id, chat_guid, chat_identifier) {
        (Some(to), ..) => Target::Direct {
            handle: normalize_handle(&to, &region),
            service,
        },
        (None, Some(id), ..) => Target::ChatId(id),
        (None, None, Some(guid), _) => Target::ChatGuid { guid, region },
        (None, None, None, Some(ident)) => match handle_like(&ident) {
            Some((handle, prefixed)) => Target::Direct {
                handle: normalize_handle(&handle, &region),
                service: prefixed.unwrap_or(service),
            },
            None => Target::ChatIdentifier(ident),
        },
        (None, None, None, None) => return Err(RpcError::invalid_params("to is required for direct sends")),
    };
    if text.is_empty() && file.is_empty() {
        return Err(RpcError::invalid_params("text or file is required"));
    }
    Ok(SendRequest {
        target,
        text,
        file: (!file.is_empty()).then(|| expand_tilde(&file)),
    })
}

/// A chat identifier that "looks like a handle" is sent to as a buddy (docs/simulator.md):
/// it has `@`, only phone characters, or an `imessage:`/`sms:`/`auto:` prefix.
fn handle_like(ident: &str) -> Option<(String, Option<Service>)> {
    let lower = ident.to_ascii_lowercase();
    for (prefix, service) in [
        ("imessage:", Service::IMessage),
        ("sms:", Service::Sms),
        ("auto:", Service::Auto),
    ] {
        if lower.starts_with(prefix) {
            return Some((ident[prefix.len()..].to_string(), Some(service)));
        }
    }
    let phone = ident.chars().all(|c| c.is_ascii_digit() || "+ ()-".contains(c));
    (ident.contains('@') || phone).then(|| (ident.to_string(), None))
}

/// Phone numbers to E.164 the way imsg does for its default region (US/CA: 10 digits get `+1`);
/// emails, names and numbers it cannot read stay as they are.
fn normalize_handle(handle: &str, region: &str) -> String {
    if handle.contains('@') {
        return handle.to_string();
    }
    let stripped: String = handle.chars().filter(|c| !" -().".contains(*c)).collect();
    let (plus, digits) = match stripped.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, stripped.as_str()),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return handle.to_string();
    }
    let nanp = matches!(region.to_ascii_uppercase().as_str(), "US" | "CA");
    match (plus, digits.len()) {
        (true, _) => format!("+{digits}"),
        (false, 10) if nanp => format!("+1{digits}"),
        (false, 11) if nanp && digits.starts_with('1') => format!("+{digits}"),
        _ => handle.to_string(),
    }
}

/// What the write produced.
#[derive(Debug, Clone)]
struct Written {
    chat: ChatRef,
    /// (ROWID, guid) of the text row.
    text_row: Option<(i64, String)>,
    /// (ROWID, guid) of the attachment row.
    file_row: Option<(i64, String)>,
    rowids: Vec<i64>,
}

/// A send that fails like AppleScript would, rather than with a database error.
#[derive(Debug)]
enum SendFailure {
    UnknownChatId(i64),
    NoSuchChat(String),
}

impl SendFailure {
    fn into_rpc(self, dialect: Dialect) -> RpcError {
        match self {
            SendFailure::UnknownChatId(id) => RpcError::invalid_params(format!("unknown chat_id {id}")),
            // `set targetChat to chat id …` fails before the send event: nothing was dispatched.
            SendFailure::NoSuchChat(target) => applescript_failure(
                dialect,
                Disposition::NotStarted,
                NO_SUCH_CHAT_ERROR,
                &format!(
                    "AppleScript failed: Messages got an error: Can't get chat id \"{target}\". ({NO_SUCH_CHAT_ERROR})"
                ),
            ),
        }
    }
}

/// AppleScript's "Can't get …" error number.
const NO_SUCH_CHAT_ERROR: i64 = -1728;

/// A failed AppleScript send: strict servers (imsg 0.14+) report how far it got with only the error
/// number in `detail`, as imsg's osascript transport does; baseline servers pass the message on.
fn applescript_failure(dialect: Dialect, disposition: Disposition, number: i64, baseline: &str) -> RpcError {
    match dialect {
        Dialect::Strict => RpcError::delivery(
            disposition,
            format!("Messages automation failed with AppleScript error {number}."),
        ),
        Dialect::Baseline => RpcError::internal(baseline),
    }
}

fn write_rows(
    conn: &mut rusqlite::Connection,
    db_path: &std::path::Path,
    req: &SendRequest,
    is_from_me: bool,
) -> Result<Result<Written, SendFailure>, SimError> {
    // Copy the file before taking the write lock.
    let stored: Option<StoredFile> = req
        .file
        .as_deref()
        .map(|f| attachments::store(db_path, f))
        .transpose()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let chat = match &req.target {
        Target::Direct { handle, service } => {
            let existing = match service {
                Service::Auto => db::existing_direct_chat(&tx, handle)?,
                _ => None,
            };
            match existing {
                Some(chat) => chat,
                None => {
                    let svc = if *service == Service::Sms {
                        "SMS"
                    } else {
                        "iMessage"
                    };
                    db::direct_chat(&tx, handle, svc)?
                }
            }
        }
        Target::ChatId(id) => match query::chat_info(&tx, ChatKey::Id(*id))? {
            Some(info) => chat_ref(info),
            None => return Ok(Err(SendFailure::UnknownChatId(*id))),
        },
        Target::ChatGuid { guid, region } => {
            match chat_guid::resolve(&tx, guid, |h| normalize_handle(h, region))? {
                Some(info) => chat_ref(info),
                None => return Ok(Err(SendFailure::NoSuchChat(guid.clone()))),
            }
        }
        Target::ChatIdentifier(ident) => match query::chat_info(&tx, ChatKey::Identifier(ident))? {
            Some(info) => chat_ref(info),
            None => return Ok(Err(SendFailure::NoSuchChat(ident.clone()))),
        },
    };
    let is_group = chat.guid.contains(";+;");
    let handle_id = if is_group {
        0
    } else {
        db::find_or_create_handle(&tx, &chat.identifier, &chat.service)?
    };
    let base = NewMessage {
        chat_id: chat.id,
        text: None,
        handle_id,
        service: chat.service.clone(),
        date: apple_ns_now(),
        is_from_me,
        destination_caller_id: Some(SELF_HANDLE.to_string()),
        is_sent: true,
        is_delivered: false,
        room_name: is_group.then(|| chat.identifier.clone()),
        has_attachments: false,
        guid: None,
    };
    let mut rowids = Vec::new();
    let text_row = if req.text.is_empty() {
        None
    } else {
        let row = db::insert_message(
            &tx,
            &NewMessage {
                text: Some(req.text.clone()),
                ..base.clone()
            },
        )?;
        rowids.push(row.0);
        Some(row)
    };
    let file_row = match &stored {
        None => None,
        Some(file) => {
            let date = apple_ns_now();
            let row = db::insert_message(
                &tx,
                &NewMessage {
                    text: Some(ATTACHMENT_PLACEHOLDER.to_string()),
                    date,
                    has_attachments: true,
                    ..base.clone()
                },
            )?;
            db::attach(&tx, row.0, file, date, true)?;
            rowids.push(row.0);
            Some(row)
        }
    };
    tx.commit()?;
    Ok(Ok(Written {
        chat,
        text_row,
        file_row,
        rowids,
    }))
}

fn chat_ref(info: crate::sim::shapes::ChatInfo) -> ChatRef {
    ChatRef {
        id: info.id,
        service: if info.service.is_empty() {
            "iMessage".into()
        } else {
            info.service
        },
        guid: info.guid,
        identifier: info.identifier,
    }
}

/// After the send: flip `is_from_me` (echo-race fault), then mark the rows delivered, in the
/// background like Messages does; the server waits for these writes before it exits.
fn follow_up(backend: &Arc<Backend>, rowids: Vec<i64>, echo_race: bool) {
    let pool = Arc::clone(&backend.pool);
    backend.tasks.spawn(async move {
        if echo_race {
            tokio::time::sleep(ECHO_RACE_FLIP_DELAY).await;
            let ids = rowids.clone();
            let flipped = pool
                .run(move |c| {
                    for id in ids {
                        c.execute("UPDATE message SET is_from_me = 1 WHERE ROWID = ?1", params![id])?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = flipped {
                tracing::warn!("echo-race fault: cannot flip is_from_me: {e}");
            }
        }
        tokio::time::sleep(DELIVERY_DELAY).await;
        let delivered = pool
            .run(move |c| {
                let now = apple_ns_now();
                for id in rowids {
                    c.execute(
                        "UPDATE message SET is_delivered = 1, date_delivered = ?2 WHERE ROWID = ?1",
                        params![id, now],
                    )?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = delivered {
            tracing::warn!("cannot mark sent rows delivered: {e}");
        }
    });
}

/// imsg's verification: poll for the newest outgoing row with exactly the sent text in the chat,
/// dated at most 2 s before the send. File-only sends: strict servers confirm the attachment row,
/// baseline servers never report an id for them.
async fn verify(
    backend: &Arc<Backend>,
    req: &SendRequest,
    written: &Written,
    sent_at: i64,
) -> Option<(i64, String)> {
    let probe = match (&written.text_row, &written.file_row) {
        (Some(_), _) => Probe::Text {
            chat_id: written.chat.id,
            text: req.text.clone(),
            since: sent_at - 2_000_000_000,
        },
        (None, Some((rowid, _))) if backend.dialect.is_strict() => Probe::Row(*rowid),
        _ => return None,
    };
    let deadline = tokio::time::Instant::now() + VERIFY_TIMEOUT;
    loop {
        let p = probe.clone();
        let found = backend.pool.run(move |c| Ok(p.find(c)?)).await.ok().flatten();
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(VERIFY_INTERVAL).await;
    }
}

#[derive(Debug, Clone)]
enum Probe {
    Text { chat_id: i64, text: String, since: i64 },
    Row(i64),
}

impl Probe {
    fn find(&self, c: &rusqlite::Connection) -> rusqlite::Result<Option<(i64, String)>> {
        let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        match self {
            Probe::Text { chat_id, text, since } => c
                .query_row(
                    "SELECT m.ROWID, m.guid FROM message m
                     JOIN chat_message_join cmj ON cmj.message_id = m.ROWID
                     WHERE cmj.chat_id = ?1 AND m.is_from_me = 1 AND IFNULL(m.text, '') = ?2 AND m.date >= ?3
                     ORDER BY m.ROWID DESC LIMIT 1",
                    params![chat_id, text, since],
                    read,
                )
                .optional(),
            Probe::Row(rowid) => c
                .query_row(
                    "SELECT ROWID, guid FROM message WHERE ROWID = ?1 AND is_from_me = 1",
                    params![rowid],
                    read,
                )
                .optional(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value, dialect: Dialect) -> Result<SendRequest, String> {
        let p = Params::new("send", Some(v), dialect).unwrap();
        validate(&p).map_err(|e| e.detail())
    }

    #[test]
    fn validates_targets_with_imsg_messages() {
        use serde_json::json;
        let s = Dialect::Strict;
        assert_eq!(
            check(json!({"to": "+1", "chat_id": 1, "text": "x"}), s).unwrap_err(),
            "use to or exactly one chat selector; not both"
        );
        assert_eq!(
            check(json!({"to": "+1", "chat_id": 1, "text": "x"}), Dialect::Baseline).unwrap_err(),
            "use to or chat_*; not both"
        );
        assert_eq!(
            check(json!({"text": "x"}), s).unwrap_err(),
            "to is required for direct sends"
        );
        assert_eq!(
            check(json!({"to": "+1"}), s).unwrap_err(),
            "text or file is required"
        );
        assert_eq!(
            check(json!({"to": "+1", "text": "x", "service": "iMessage"}), s).unwrap_err(),
            "invalid service"
        );
        assert_eq!(
            check(json!({"to": "+1", "text": "x", "bogus": 1}), s).unwrap_err(),
            "unknown send param: bogus"
        );
        assert!(check(json!({"to": "+1", "text": "x", "bogus": 1}), Dialect::Baseline).is_ok());
        assert!(check(json!({"to": "+1", "text": "x", "reply_to": "G"}), s).is_err());
    }

    #[test]
    fn sends_to_handle_like_chat_identifiers_directly() {
        use serde_json::json;
        let req = check(
            json!({"chat_identifier": "sms:+14155551212", "text": "x"}),
            Dialect::Strict,
        )
        .unwrap();
        assert!(matches!(
            req.target,
            Target::Direct {
                service: Service::Sms,
                ..
            }
        ));
        let req = check(
            json!({"chat_identifier": "chat123", "text": "x"}),
            Dialect::Strict,
        )
        .unwrap();
        assert!(matches!(req.target, Target::ChatIdentifier(_)));
    }

    #[test]
    fn normalizes_phone_numbers_to_e164() {
        assert_eq!(normalize_handle("415-555-1212", "US"), "+14155551212");
        assert_eq!(normalize_handle("(415) 555 1212", "us"), "+14155551212");
        assert_eq!(normalize_handle("1 415 555 1212", "US"), "+14155551212");
        assert_eq!(normalize_handle("+44 20 7946 0958", "US"), "+442079460958");
        assert_eq!(normalize_handle("020 7946 0958", "GB"), "020 7946 0958");
        assert_eq!(normalize_handle("Jane@Example.com", "US"), "Jane@Example.com");
        assert_eq!(normalize_handle("John Appleseed", "US"), "John Appleseed");
    }
}

//! Opening the database, `init`, `inject`, and the row writers that `inject` and `send` share.
//!
//! Every connection gets a busy timeout so an `inject` process, the `rpc` server and its watch can
//! write and read the same file at once; SQLite's WAL mode lets readers run beside one writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::sim::SimError;
use crate::sim::attachments::{self, StoredFile};
use crate::sim::schema;
use crate::sim::time::apple_ns_now;

/// How long a statement waits for another connection's write lock before failing (imsg uses 5 s).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The handle the simulated Mac user sends from (`destination_caller_id` of outgoing rows).
pub const SELF_HANDLE: &str = "me@example.com";

/// Open an existing database for reading and writing, never creating it.
///
/// The file is checked to be a readable SQLite database, so a missing or broken file fails here
/// (and becomes "Database unavailable") rather than in the first query.
pub fn open(path: &Path) -> Result<Connection, SimError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let open_err = |source| SimError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
        .map_err(open_err)?;
    Ok(conn)
}

/// A few reusable connections to one database, used from blocking tasks.
///
/// SQLite connections are cheap but not free to open; keeping the idle ones avoids reopening the
/// file for every request. A connection that saw an error is dropped rather than reused.
#[derive(Debug)]
pub struct Pool {
    path: PathBuf,
    simulate_unavailable: bool,
    idle: Mutex<Vec<Connection>>,
}

/// How many idle connections the pool keeps (reads run at most 4 wide, plus the mutation lane).
const POOL_IDLE_CAPACITY: usize = 6;

impl Pool {
    /// A pool over `path`; with `simulate_unavailable` every access fails like a missing grant.
    pub fn new(path: PathBuf, simulate_unavailable: bool) -> Arc<Self> {
        Arc::new(Pool {
            path,
            simulate_unavailable,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connection of its own (for a watch, which keeps one for its whole life).
    pub fn open_dedicated(&self) -> Result<Connection, SimError> {
        if self.simulate_unavailable {
            return Err(SimError::SimulatedUnavailable {
                path: self.path.clone(),
            });
        }
        open(&self.path)
    }

    /// Run `f` with a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, SimError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SimError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let reused = pool.idle.lock().ok().and_then(|mut idle| idle.pop());
            let mut conn = match reused {
                Some(c) => c,
                None => pool.open_dedicated()?,
            };
            let result = f(&mut conn);
            if result.is_ok()
                && let Ok(mut idle) = pool.idle.lock()
                && idle.len() < POOL_IDLE_CAPACITY
            {
                idle.push(conn);
            }
            result
        })
        .await?
    }
}

/// Create a chat.db with Apple's schema at `path` (WAL mode), optionally with the demo seed.
///
/// Refuses to touch an existing non-empty file. The parent directory is created when missing.
pub fn init(path: &Path, seed_demo: bool) -> Result<(), SimError> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Err(SimError::AlreadyExists(path.to_path_buf()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| SimError::io("cannot create", parent, e))?;
    }
    let conn = Connection::open(path).map_err(|source| SimError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    schema::create(&conn, seed_demo)?;
    Ok(())
}

/// What `imsg-sim inject` writes: one incoming message.
#[derive(Debug, Clone, Default)]
pub struct InjectSpec {
    /// The sender's handle (`+14155551212`, `jane@example.com`).
    pub from: String,
    /// Deliver into this existing chat (or create it when the guid has the `svc;-;id` / `svc;+;id` form).
    pub chat_guid: Option<String>,
    /// Deliver into the group chat with this display name, created on first use.
    pub group: Option<String>,
    /// Other members of a group created or extended by `group`.
    pub participants: Vec<String>,
    pub text: String,
    /// Files to attach; each is copied into the attachment store beside the database.
    pub attachments: Vec<PathBuf>,
    /// Absolute paths recorded as attachments as they are, without copying (they may not exist yet).
    pub attachment_refs: Vec<PathBuf>,
    /// How many messages to write in the one transaction (0 and 1 both mean one); with more than one,
    /// each text gets its number appended (`text 1`, `text 2`, …).
    pub count: u32,
    /// The guid of the row instead of a fresh one (tests of hostile guids); only with one message.
    pub guid: Option<String>,
}

/// The row `inject` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub id: i64,
    pub guid: String,
    pub chat_id: i64,
}

/// Insert an incoming message (`is_from_me = 0`) the way Messages would, in one transaction.
pub fn inject(path: &Path, spec: &InjectSpec) -> Result<Injected, SimError> {
    let rows = inject_many(path, spec)?;
    rows.into_iter()
        .next()
        .ok_or_else(|| SimError::BadInput("nothing was injected".into()))
}

/// Insert `spec.count` incoming messages in one transaction (a backlog that arrived at once), texts
/// numbered from 1 when there is more than one. Returns the rows in ROWID order.
pub fn inject_many(path: &Path, spec: &InjectSpec) -> Result<Vec<Injected>, SimError> {
    check_inject(spec)?;
    // Copy the files first, so the write lock is not held while large files are copied.
    let mut stored = spec
        .attachments
        .iter()
        .map(|file| attachments::store(path, file))
        .collect::<Result<Vec<_>, _>>()?;
    for file in &spec.attachment_refs {
        stored.push(attachments::reference(file)?);
    }

    let mut conn = open(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = spec.from.trim();
    let chat = match (&spec.chat_guid, &spec.group) {
        (Some(guid), _) => chat_for_guid(&tx, guid, &spec.participants)?,
        (None, Some(name)) => group_chat_named(&tx, name.trim(), &spec.participants)?,
        (None, None) => direct_chat(&tx, from, "iMessage")?,
    };
    let handle_id = find_or_create_handle(&tx, from, &chat.service)?;
    join_handle(&tx, chat.id, handle_id)?;
    let count = spec.count.max(1);
    let mut injected = Vec::with_capacity(count as usize);
    for number in 1..=count {
        let text = if count > 1 {
            format!("{} {number}", spec.text)
        } else {
            spec.text.clone()
        };
        let date = apple_ns_now();
        let (id, guid) = insert_message(
            &tx,
            &NewMessage {
                chat_id: chat.id,
                text: Some(text),
                handle_id,
                service: chat.service.clone(),
                date,
                is_from_me: false,
                destination_caller_id: Some(SELF_HANDLE.to_string()),
                is_sent: false,
                is_delivered: true,
                room_name: chat.group_identifier(),
                has_attachments: !stored.is_empty(),
                guid: spec.guid.clone(),
            },
        )?;
        for file in &stored {
            attach(&tx, id, file, date, false)?;
        }
        injected.push(Injected {
            id,
            guid,
            chat_id: chat.id,
        });
    }
    tx.commit()?;
    Ok(injected)
}

/// Refuse an inject that cannot be written as asked.
fn check_inject(spec: &InjectSpec) -> Result<(), SimError> {
    if spec.from.trim().is_empty() {
        return Err(SimError::BadInput("--from must name a handle".into()));
    }
    if spec.chat_guid.is_some() && spec.group.is_some() {
        return Err(SimError::BadInput(
            "use either a chat guid or a group name, not both".into(),
        ));
    }
    if spec.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
        return Err(SimError::BadInput("the group name must not be empty".into()));
    }
    let many = spec.count > 1;
    if many && !(spec.attachments.is_empty() && spec.attachment_refs.is_empty()) {
        return Err(SimError::BadInput(
            "--count cannot be combined with attachments (each attachment row is one file)".into(),
        ));
    }
    if many && spec.guid.is_some() {
        return Err(SimError::BadInput(
            "--guid names one row: it cannot be combined with --count".into(),
        ));
    }
    Ok(())
}

/// The chat a new row goes into.
#[derive(Debug, Clone)]
pub(crate) struct ChatRef {
    pub id: i64,
    pub guid: String,
    pub identifier: String,
    pub service: String,
}

impl ChatRef {
    /// From a row selecting `ROWID, guid, identifier, service` in that order.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(ChatRef {
            id: r.get(0)?,
            guid: r.get(1)?,
            identifier: r.get(2)?,
            service: r.get(3)?,
        })
    }

    /// `cache_roomnames` of a group message: the group's identifier.
    fn group_identifier(&self) -> Option<String> {
        self.guid.contains(";+;").then(|| self.identifier.clone())
    }
}

/// Style of a 1:1 chat and of a group chat in `chat.style`.
const STYLE_DIRECT: i64 = 45;
const STYLE_GROUP: i64 = 43;

pub(crate) fn find_or_create_handle(tx: &Transaction<'_>, id: &str, service: &str) -> rusqlite::Result<i64> {
    let found = tx
        .query_row(
            "SELECT ROWID FROM handle WHERE id = ?1 AND service = ?2",
            params![id, service],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(rowid) = found {
        return Ok(rowid);
    }
    tx.execute(
        "INSERT INTO handle (id, service, uncanonicalized_id) VALUES (?1, ?2, ?1)",
        params![id, service],
    )?;
    Ok(tx.last_insert_rowid())
}

pub(crate) fn join_handle(tx: &Transaction<'_>, chat_id: i64, handle_id: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO chat_handle_join (chat_id, handle_id) VALUES (?1, ?2)",
        params![chat_id, handle_id],
    )?;
    Ok(())
}

fn chat_by_guid(tx: &Transaction<'_>, guid: &str) -> rusqlite::Result<Option<ChatRef>> {
    tx.query_row(
        "SELECT ROWID, guid, IFNULL(chat_identifier, ''), IFNULL(NULLIF(service_name, ''), 'iMessage')
         FROM chat WHERE guid = ?1",
        params![guid],
        ChatRef::from_row,
    )
    .optional()
}

fn create_chat(
    tx: &Transaction<'_>,
    guid: &str,
    style: i64,
    identifier: &str,
    service: &str,
    display_name: &str,
) -> rusqlite::Result<ChatRef> {
    tx.execute(
        "INSERT INTO chat (guid, style, state, chat_identifier, service_name, display_name, account_login)
         VALUES (?1, ?2, 3, ?3, ?4, ?5, ?6)",
        params![guid, style, identifier, service, display_name, SELF_HANDLE],
    )?;
    Ok(ChatRef {
        id: tx.last_insert_rowid(),
        guid: guid.to_string(),
        identifier: identifier.to_string(),
        service: service.to_string(),
    })
}

/// The 1:1 chat with `handle` on `service` (`iMessage;-;h`), created on first contact.
pub(crate) fn direct_chat(tx: &Transaction<'_>, handle: &str, service: &str) -> Result<ChatRef, SimError> {
    let guid = format!("{service};-;{handle}");
    if let Some(chat) = chat_by_guid(tx, &guid)? {
        return Ok(chat);
    }
    let chat = create_chat(tx, &guid, STYLE_DIRECT, handle, service, "")?;
    let handle_id = find_or_create_handle(tx, handle, service)?;
    join_handle(tx, chat.id, handle_id)?;
    Ok(chat)
}

/// An existing 1:1 chat with `handle`, trying the guid forms Messages uses (`iMessage`, `any`, `SMS`).
pub(crate) fn existing_direct_chat(tx: &Transaction<'_>, handle: &str) -> Result<Option<ChatRef>, SimError> {
    for service in ["iMessage", "any", "SMS"] {
        if let Some(chat) = chat_by_guid(tx, &format!("{service};-;{handle}"))? {
            return Ok(Some(chat));
        }
    }
    Ok(None)
}

/// The chat with `guid`; a well-formed guid that does not exist yet is created (direct or group).
fn chat_for_guid(tx: &Transaction<'_>, guid: &str, participants: &[String]) -> Result<ChatRef, SimError> {
    if let Some(chat) = chat_by_guid(tx, guid)? {
        return Ok(chat);
    }
    let parts: Vec<&str> = guid.splitn(3, ';').collect();
    let chat = match parts.as_slice() {
        [service, "-", identifier] if !service.is_empty() && !identifier.is_empty() => {
            create_chat(tx, guid, STYLE_DIRECT, identifier, service, "")?
        }
        [service, "+", identifier] if !service.is_empty() && !identifier.is_empty() => {
            let chat = create_chat(tx, guid, STYLE_GROUP, identifier, service, "")?;
            join_all(tx, &chat, participants)?;
            chat
        }
        _ => {
            return Err(SimError::BadInput(format!(
                "no chat with guid {guid}, and it is not of the form iMessage;-;HANDLE or iMessage;+;chatNNN"
            )));
        }
    };
    Ok(chat)
}

/// The group chat whose display name is `name`, created (with a generated identifier) on first use.
fn group_chat_named(tx: &Transaction<'_>, name: &str, participants: &[String]) -> Result<ChatRef, SimError> {
    let found = tx
        .query_row(
            "SELECT ROWID, guid, IFNULL(chat_identifier, ''), IFNULL(NULLIF(service_name, ''), 'iMessage')
             FROM chat WHERE display_name = ?1 AND (guid LIKE '%;+;%' OR style = ?2)
             ORDER BY ROWID LIMIT 1",
            params![name, STYLE_GROUP],
            ChatRef::from_row,
        )
        .optional()?;
    let chat = match found {
        Some(chat) => chat,
        None => {
            let identifier = new_group_identifier();
            let guid = format!("iMessage;+;{identifier}");
            create_chat(tx, &guid, STYLE_GROUP, &identifier, "iMessage", name)?
        }
    };
    join_all(tx, &chat, participants)?;
    Ok(chat)
}

fn join_all(tx: &Transaction<'_>, chat: &ChatRef, participants: &[String]) -> Result<(), SimError> {
    for p in participants.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let handle_id = find_or_create_handle(tx, p, &chat.service)?;
        join_handle(tx, chat.id, handle_id)?;
    }
    Ok(())
}

/// `chat` followed by 18 digits, like Messages' group identifiers.
fn new_group_identifier() -> String {
    let digits: String = (0..18).map(|_| fastrand::digit(10)).collect();
    format!("chat{digits}")
}

/// The columns of a new `message` row that differ between inbound and outbound messages.
#[derive(Debug, Clone)]
pub(crate) struct NewMessage {
    pub chat_id: i64,
    pub text: Option<String>,
    pub handle_id: i64,
    pub service: String,
    pub date: i64,
    pub is_from_me: bool,
    pub destination_caller_id: Option<String>,
    pub is_sent: bool,
    pub is_delivered: bool,
    /// `cache_roomnames` (the group identifier for group messages).
    pub room_name: Option<String>,
    pub has_attachments: bool,
    /// The row's guid; `None` makes a fresh one, as Messages does.
    pub guid: Option<String>,
}

/// Insert a message row and its `chat_message_join` (with `message_date = date`); returns (ROWID, guid).
pub(crate) fn insert_message(tx: &Transaction<'_>, m: &NewMessage) -> rusqlite::Result<(i64, String)> {
    let guid = m
        .guid
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().to_uppercase());
    tx.execute(
        "INSERT INTO message (guid, text, handle_id, service, date, is_from_me, is_sent, is_delivered,
                              is_finished, is_read, destination_caller_id, cache_roomnames,
                              cache_has_attachments, associated_message_type, date_delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 0, ?9, ?10, ?11, 0, ?12)",
        params![
            guid,
            m.text,
            m.handle_id,
            m.service,
            m.date,
            m.is_from_me,
            m.is_sent,
            m.is_delivered,
            m.destination_caller_id,
            m.room_name,
            m.has_attachments,
            if m.is_delivered { m.date } else { 0 },
        ],
    )?;
    let rowid = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?1, ?2, ?3)",
        params![m.chat_id, rowid, m.date],
    )?;
    Ok((rowid, guid))
}

/// Insert an attachment row for a stored file and join it to a message.
pub(crate) fn attach(
    tx: &Transaction<'_>,
    message_id: i64,
    file: &StoredFile,
    date: i64,
    is_outgoing: bool,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO attachment (guid, created_date, filename, uti, mime_type, transfer_state, is_outgoing,
                                 transfer_name, total_bytes, is_sticker, original_guid)
         VALUES (?1, ?2, ?3, ?4, ?5, 5, ?6, ?7, ?8, 0, ?1)",
        params![
            file.guid,
            date,
            file.filename,
            file.uti,
            file.mime_type,
            is_outgoing,
            file.transfer_name,
            file.total_bytes
        ],
    )?;
    let attachment_id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?1, ?2)",
        params![message_id, attachment_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(seed: bool) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        init(&path, seed).unwrap();
        (dir, path)
    }

    fn spec(from: &str, text: &str) -> InjectSpec {
        InjectSpec {
            from: from.into(),
            text: text.into(),
            ..InjectSpec::default()
        }
    }

    #[test]
    fn refuses_to_overwrite_an_existing_database() {
        let (_dir, path) = fresh(false);
        assert!(matches!(init(&path, false), Err(SimError::AlreadyExists(_))));
    }

    #[test]
    fn creates_the_database_in_wal_mode() {
        let (_dir, path) = fresh(true);
        let conn = open(&path).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn fails_to_open_a_missing_database() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(&dir.path().join("nope.db")).unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    #[test]
    fn injects_into_the_seeded_dm_and_then_a_new_one() {
        let (_dir, path) = fresh(true);
        let first = inject(&path, &spec("+14155551212", "again")).unwrap();
        assert_eq!(first.chat_id, 1);
        assert_eq!(first.id, 12);
        assert_eq!(first.guid, first.guid.to_uppercase());
        let second = inject(&path, &spec("+14155550000", "new")).unwrap();
        assert_eq!(second.chat_id, 3);
        let conn = open(&path).unwrap();
        let (guid, style): (String, i64) = conn
            .query_row("SELECT guid, style FROM chat WHERE ROWID = 3", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((guid.as_str(), style), ("iMessage;-;+14155550000", 45));
        let date: i64 = conn
            .query_row(
                "SELECT message_date FROM chat_message_join WHERE message_id = ?1",
                [second.id],
                |r| r.get(0),
            )
            .unwrap();
        let msg_date: i64 = conn
            .query_row("SELECT date FROM message WHERE ROWID = ?1", [second.id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(date, msg_date);
    }

    #[test]
    fn injects_a_numbered_backlog_in_one_transaction() {
        let (_dir, path) = fresh(false);
        let mut s = spec("+14155551212", "backlog");
        s.count = 250;
        let rows = inject_many(&path, &s).unwrap();
        assert_eq!(rows.len(), 250);
        assert!(
            rows.windows(2)
                .all(|w| w[1].id == w[0].id + 1 && w[0].guid != w[1].guid)
        );
        let conn = open(&path).unwrap();
        let texts: Vec<String> = conn
            .prepare("SELECT text FROM message ORDER BY ROWID")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(texts.first().map(String::as_str), Some("backlog 1"));
        assert_eq!(texts.last().map(String::as_str), Some("backlog 250"));
    }

    #[test]
    fn keeps_a_given_guid_and_refuses_it_with_a_count() {
        let (_dir, path) = fresh(false);
        let mut s = spec("+14155551212", "hostile");
        s.guid = Some("AB\r\nX-Injected: 1".into());
        assert_eq!(inject(&path, &s).unwrap().guid, "AB\r\nX-Injected: 1");
        s.count = 2;
        let err = inject_many(&path, &s).unwrap_err().to_string();
        assert!(err.contains("--guid"), "{err}");
    }

    #[test]
    fn creates_a_named_group_once_and_reuses_it() {
        let (_dir, path) = fresh(false);
        let mut s = spec("+14155551212", "hi all");
        s.group = Some("Climbing".into());
        s.participants = vec!["jane@example.com".into()];
        let a = inject(&path, &s).unwrap();
        let b = inject(&path, &s).unwrap();
        assert_eq!(a.chat_id, b.chat_id);
        let conn = open(&path).unwrap();
        let (guid, ident, members): (String, String, i64) = conn
            .query_row(
                "SELECT guid, chat_identifier,
                        (SELECT COUNT(*) FROM chat_handle_join WHERE chat_id = chat.ROWID)
                 FROM chat WHERE ROWID = ?1",
                [a.chat_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(guid, format!("iMessage;+;{ident}"));
        assert_eq!(ident.len(), 4 + 18);
        assert_eq!(members, 2);
    }

    #[test]
    fn injects_into_the_seeded_group_by_guid() {
        let (_dir, path) = fresh(true);
        let mut s = spec("jane@example.com", "yes");
        s.chat_guid = Some("iMessage;+;chat900000000000000001".into());
        assert_eq!(inject(&path, &s).unwrap().chat_id, 2);
        s.chat_guid = Some("bogus".into());
        assert!(matches!(inject(&path, &s), Err(SimError::BadInput(_))));
    }

    #[test]
    fn stores_attachments_beside_the_database() {
        let (dir, path) = fresh(true);
        let file = dir.path().join("IMG_0001.heic");
        std::fs::write(&file, vec![7u8; 1234]).unwrap();
        let mut s = spec("+14155551212", "see attached");
        s.attachments = vec![file];
        let injected = inject(&path, &s).unwrap();
        let conn = open(&path).unwrap();
        let (filename, mime, bytes): (String, String, i64) = conn
            .query_row(
                "SELECT a.filename, a.mime_type, a.total_bytes FROM attachment a
                 JOIN message_attachment_join j ON j.attachment_id = a.ROWID WHERE j.message_id = ?1",
                [injected.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(mime, "image/heic");
        assert_eq!(bytes, 1234);
        assert!(Path::new(&attachments::original_path(&filename)).is_file());
    }

    #[test]
    fn rejects_a_missing_attachment_without_writing_a_row() {
        let (dir, path) = fresh(true);
        let mut s = spec("+14155551212", "x");
        s.attachments = vec![dir.path().join("missing.png")];
        assert!(matches!(inject(&path, &s), Err(SimError::BadInput(_))));
        let conn = open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM message", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }
}

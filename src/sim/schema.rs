//! The chat.db tables the simulator creates, and the demo seed.
//!
//! The tables carry every column `imsg` reads (both generations) plus the NOT NULL and UNIQUE columns
//! Apple's schema has, so SQL written against a real chat.db works here unchanged.

use rusqlite::Connection;

/// Apple's chat.db tables, reduced to the columns imsg reads (docs/simulator.md).
pub const SCHEMA_SQL: &str = "
CREATE TABLE handle (
  ROWID INTEGER PRIMARY KEY AUTOINCREMENT UNIQUE,
  id TEXT NOT NULL,
  country TEXT,
  service TEXT NOT NULL,
  uncanonicalized_id TEXT,
  person_centric_id TEXT,
  UNIQUE (id, service)
);

CREATE TABLE chat (
  ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
  guid TEXT UNIQUE NOT NULL,
  style INTEGER,
  state INTEGER,
  account_id TEXT,
  properties BLOB,
  chat_identifier TEXT,
  service_name TEXT,
  room_name TEXT,
  account_login TEXT,
  is_archived INTEGER DEFAULT 0,
  last_addressed_handle TEXT,
  display_name TEXT,
  group_id TEXT
);

CREATE TABLE message (
  ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
  guid TEXT UNIQUE NOT NULL,
  text TEXT,
  handle_id INTEGER DEFAULT 0,
  subject TEXT,
  attributedBody BLOB,
  service TEXT,
  error INTEGER DEFAULT 0,
  date INTEGER,
  date_read INTEGER,
  date_delivered INTEGER,
  is_delivered INTEGER DEFAULT 0,
  is_finished INTEGER DEFAULT 0,
  is_from_me INTEGER DEFAULT 0,
  is_delayed INTEGER DEFAULT 0,
  is_prepared INTEGER DEFAULT 0,
  is_read INTEGER DEFAULT 0,
  is_sent INTEGER DEFAULT 0,
  was_downgraded INTEGER DEFAULT 0,
  cache_has_attachments INTEGER DEFAULT 0,
  cache_roomnames TEXT,
  is_audio_message INTEGER DEFAULT 0,
  item_type INTEGER DEFAULT 0,
  group_action_type INTEGER DEFAULT 0,
  associated_message_guid TEXT,
  associated_message_type INTEGER DEFAULT 0,
  balloon_bundle_id TEXT,
  payload_data BLOB,
  message_summary_info BLOB,
  destination_caller_id TEXT,
  reply_to_guid TEXT,
  thread_originator_guid TEXT,
  thread_originator_part TEXT,
  associated_message_emoji TEXT,
  is_pending_satellite_send INTEGER DEFAULT 0,
  schedule_type INTEGER DEFAULT 0,
  schedule_state INTEGER DEFAULT 0
);

CREATE TABLE attachment (
  ROWID INTEGER PRIMARY KEY AUTOINCREMENT,
  guid TEXT UNIQUE NOT NULL,
  created_date INTEGER DEFAULT 0,
  filename TEXT,
  uti TEXT,
  mime_type TEXT,
  transfer_state INTEGER DEFAULT 0,
  is_outgoing INTEGER DEFAULT 0,
  user_info BLOB,
  transfer_name TEXT,
  total_bytes INTEGER DEFAULT 0,
  is_sticker INTEGER DEFAULT 0,
  original_guid TEXT UNIQUE NOT NULL
);

CREATE TABLE chat_handle_join (
  chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
  handle_id INTEGER REFERENCES handle (ROWID) ON DELETE CASCADE,
  UNIQUE (chat_id, handle_id)
);

CREATE TABLE chat_message_join (
  chat_id INTEGER REFERENCES chat (ROWID) ON DELETE CASCADE,
  message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
  message_date INTEGER DEFAULT 0,
  PRIMARY KEY (chat_id, message_id)
);

CREATE TABLE message_attachment_join (
  message_id INTEGER REFERENCES message (ROWID) ON DELETE CASCADE,
  attachment_id INTEGER REFERENCES attachment (ROWID) ON DELETE CASCADE,
  UNIQUE (message_id, attachment_id)
);

-- Apple's database has these too; the watch and the history queries rely on them to stay fast.
CREATE INDEX chat_message_join_idx_message_id_only ON chat_message_join (message_id);
CREATE INDEX message_idx_handle ON message (handle_id, date);
CREATE INDEX message_idx_associated_message ON message (associated_message_guid);
CREATE INDEX message_attachment_join_idx_message_id ON message_attachment_join (message_id);
";

/// The demo conversation of `init --seed demo`: one DM and one group, one message each (docs/simulator.md).
///
/// Fixed ROWIDs and dates make the demo reproducible; later rows continue after them because the
/// tables use AUTOINCREMENT.
pub const DEMO_SEED_SQL: &str = "
INSERT INTO handle (ROWID, id, service) VALUES
  (1, '+14155551212', 'iMessage'),
  (2, 'jane@example.com', 'iMessage');
INSERT INTO chat (ROWID, guid, style, chat_identifier, service_name, display_name) VALUES
  (1, 'iMessage;-;+14155551212', 45, '+14155551212', 'iMessage', ''),
  (2, 'iMessage;+;chat900000000000000001', 43, 'chat900000000000000001', 'iMessage', 'Family');
INSERT INTO chat_handle_join (chat_id, handle_id) VALUES (1, 1), (2, 1), (2, 2);
-- 2026-05-16T15:24:36Z and 2026-05-16T15:25:10Z in Apple nanoseconds.
INSERT INTO message (ROWID, guid, text, handle_id, service, date, is_from_me, is_delivered, is_finished,
                     associated_message_type) VALUES
  (10, '6F1C0B7E-0000-4000-8000-000000000010', 'hello', 1, 'iMessage', 800637876000000000, 0, 1, 1, 0);
INSERT INTO message (ROWID, guid, text, handle_id, service, date, is_from_me, is_delivered, is_finished,
                     cache_roomnames, associated_message_type) VALUES
  (11, '6F1C0B7E-0000-4000-8000-000000000011', 'dinner at 7?', 2, 'iMessage', 800637910000000000, 0, 1, 1,
   'chat900000000000000001', 0);
INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES
  (1, 10, 800637876000000000),
  (2, 11, 800637910000000000);
";

/// Create the tables in an empty database and switch it to WAL mode, as Messages runs it.
pub fn create(conn: &Connection, seed_demo: bool) -> rusqlite::Result<()> {
    // journal_mode returns a row, so it goes through query_row rather than execute_batch.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        conn.execute_batch(SCHEMA_SQL)?;
        if seed_demo {
            conn.execute_batch(DEMO_SEED_SQL)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            // The original error matters more than a failed rollback.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_schema_and_the_demo_seed() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn, true).unwrap();
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM message", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
        let name: String = conn
            .query_row("SELECT display_name FROM chat WHERE ROWID = 2", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "Family");
    }

    #[test]
    fn continues_rowids_after_the_seed() {
        let conn = Connection::open_in_memory().unwrap();
        create(&conn, true).unwrap();
        conn.execute("INSERT INTO message (guid, text) VALUES ('X', 'next')", [])
            .unwrap();
        assert_eq!(conn.last_insert_rowid(), 12);
    }
}

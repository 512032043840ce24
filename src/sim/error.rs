//! The simulator's error type, shared by its library functions.

use std::path::PathBuf;

/// What can go wrong in the simulator's library functions.
///
/// RPC handlers turn these into JSON-RPC errors; the CLI prints them as one line.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The database file could not be opened (missing, unreadable, not SQLite).
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The `--fault-db-unavailable` knob is on: every database access fails like a missing grant.
    #[error(
        "cannot open the database at {path}: authorization denied (simulated by the db-unavailable fault)"
    )]
    SimulatedUnavailable { path: PathBuf },
    /// `init` refuses to overwrite an existing database.
    #[error("a database already exists at {0}; remove it first or pick another path")]
    AlreadyExists(PathBuf),
    /// A query or write failed after the database was opened.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A file operation failed (attachments, creating directories, stdio).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The caller asked for something that cannot be done, e.g. an attachment file that does not exist.
    #[error("{0}")]
    BadInput(String),
    /// A blocking database task panicked or was cancelled.
    #[error("a database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl SimError {
    /// True when the database itself could not be reached (as opposed to a failing query).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            SimError::Open { .. } | SimError::SimulatedUnavailable { .. }
        )
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SimError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

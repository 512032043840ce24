//! Durable per-account state: the cursor (last handled ROWID) that makes restarts lossless.
//! Files live under `stateDir/cursors/<account>.json` and are replaced atomically. Also the I/O
//! error of every file under the state directory (`FileError`: cursors, pairing, dead letters).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util::atomic_write;

/// A file under the state directory that could not be read or written, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source} (is the state directory writable?)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// For `map_err`: reading `path` failed.
    pub fn reading(path: &Path) -> impl Fn(std::io::Error) -> Self + '_ {
        |source| Self::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    /// For `map_err`: writing `path` failed.
    pub fn writing(path: &Path) -> impl Fn(std::io::Error) -> Self + '_ {
        |source| Self::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path} is corrupt ({detail}); move it aside to start from the newest message")]
    Corrupt { path: PathBuf, detail: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct CursorFile {
    version: u32,
    rowid: i64,
}

/// Reads and writes the cursors of every account under one state directory.
#[derive(Debug, Clone)]
pub struct CursorStore {
    dir: PathBuf,
}

impl CursorStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("cursors"),
        }
    }

    fn path(&self, account: &str) -> PathBuf {
        self.dir.join(format!("{account}.json"))
    }

    /// The last handled ROWID of `account`, or `None` before its first message.
    ///
    /// A corrupt file is an error rather than "no cursor": silently starting at the newest message
    /// would skip everything that arrived while we were down.
    pub fn load(&self, account: &str) -> Result<Option<i64>, StateError> {
        let path = self.path(account);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FileError::reading(&path)(source).into()),
        };
        let file: CursorFile = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path,
            detail: e.to_string(),
        })?;
        Ok(Some(file.rowid))
    }

    /// Persist `rowid` as the last handled message of `account`.
    pub fn save(&self, account: &str, rowid: i64) -> Result<(), StateError> {
        let path = self.path(account);
        let bytes = serde_json::to_vec(&CursorFile { version: 1, rowid })
            .map_err(|e| FileError::writing(&path)(std::io::Error::other(e)))?;
        atomic_write(&path, &bytes).map_err(FileError::writing(&path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_cursors_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::new(dir.path());
        assert_eq!(store.load("default").unwrap(), None);
        store.save("default", 41).unwrap();
        store.save("bot", 7).unwrap();
        store.save("default", 42).unwrap();
        assert_eq!(store.load("default").unwrap(), Some(42));
        assert_eq!(store.load("bot").unwrap(), Some(7));
    }

    #[test]
    fn refuses_a_corrupt_cursor_instead_of_starting_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = CursorStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("cursors")).unwrap();
        std::fs::write(dir.path().join("cursors/default.json"), b"{not json").unwrap();
        let err = store.load("default").unwrap_err().to_string();
        assert!(err.contains("is corrupt"), "{err}");
    }
}

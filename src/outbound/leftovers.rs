//! Staged uploads an account could not remove from the Mac before its connection closed, kept in
//! `stateDir/outbound-pending/<account>.json` (one file per account: accounts run side by side) and
//! removed at the account's next start. Only staging folders are ever removed from it
//! (`media::upload::remove` refuses anything else), so a tampered file cannot delete other files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::media::upload::Uploaded;

const VERSION: u32 = 1;

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a record of staged uploads: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    version: u32,
    uploads: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    remote_path: String,
    remote_dir: String,
}

impl From<&Uploaded> for Entry {
    fn from(uploaded: &Uploaded) -> Self {
        Self {
            remote_path: uploaded.remote_path.clone(),
            remote_dir: uploaded.remote_dir.clone(),
        }
    }
}

impl From<Entry> for Uploaded {
    fn from(entry: Entry) -> Self {
        Self {
            remote_path: entry.remote_path,
            remote_dir: entry.remote_dir,
            bytes: 0,
        }
    }
}

/// Where `account`'s record lives.
pub fn path(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join("outbound-pending").join(format!("{account}.json"))
}

/// The recorded uploads; none when there is no record.
pub fn load(path: &Path) -> Result<Vec<Uploaded>, LeftoverError> {
    Ok(read(path)?.into_iter().map(Uploaded::from).collect())
}

/// Add `uploads` to the record (each folder once).
pub fn add(path: &Path, uploads: &[Uploaded]) -> Result<(), LeftoverError> {
    let mut entries = read(path)?;
    for entry in uploads.iter().map(Entry::from) {
        if !entries.iter().any(|e| e.remote_dir == entry.remote_dir) {
            entries.push(entry);
        }
    }
    write(path, entries)
}

/// Replace the record with `uploads`; no uploads, no file.
pub fn store(path: &Path, uploads: &[Uploaded]) -> Result<(), LeftoverError> {
    write(path, uploads.iter().map(Entry::from).collect())
}

fn read(path: &Path) -> Result<Vec<Entry>, LeftoverError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LeftoverError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|source| LeftoverError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(record.uploads)
}

fn write(path: &Path, uploads: Vec<Entry>) -> Result<(), LeftoverError> {
    let failed = |source| LeftoverError::Write {
        path: path.to_path_buf(),
        source,
    };
    if uploads.is_empty() {
        return match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(failed(err)),
            _ => Ok(()),
        };
    }
    let record = Record {
        version: VERSION,
        uploads,
    };
    let mut text = serde_json::to_vec_pretty(&record).map_err(|e| failed(std::io::Error::other(e)))?;
    text.push(b'\n');
    crate::util::atomic_write(path, &text).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &str) -> Uploaded {
        Uploaded {
            remote_path: format!("/Users/bot/.imsg-bridge/outbound/{dir}/a.jpg"),
            remote_dir: format!("/Users/bot/.imsg-bridge/outbound/{dir}"),
            bytes: 0,
        }
    }

    #[test]
    fn the_record_adds_each_folder_once_and_disappears_when_emptied() {
        let state = tempfile::tempdir().unwrap();
        let file = path(state.path(), "work");
        assert_eq!(file, state.path().join("outbound-pending/work.json"));
        assert!(load(&file).unwrap().is_empty(), "no record, nothing left");
        let steps: &[(&[&str], &[&str])] = &[
            (&["u1"], &["u1"]),
            (&["u1", "u2"], &["u1", "u2"]),
            (&["u3"], &["u1", "u2", "u3"]),
        ];
        for (added, want) in steps {
            let uploads: Vec<Uploaded> = added.iter().map(|d| staged(d)).collect();
            add(&file, &uploads).unwrap();
            let want: Vec<Uploaded> = want.iter().map(|d| staged(d)).collect();
            assert_eq!(load(&file).unwrap(), want);
        }
        store(&file, &[staged("u2")]).unwrap();
        assert_eq!(load(&file).unwrap(), vec![staged("u2")]);
        store(&file, &[]).unwrap();
        assert!(!file.exists());
        store(&file, &[]).unwrap();
    }

    #[test]
    fn a_record_that_is_not_one_is_an_error_not_an_empty_list() {
        let state = tempfile::tempdir().unwrap();
        let file = path(state.path(), "default");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"{not json").unwrap();
        let err = load(&file).unwrap_err();
        assert!(matches!(err, LeftoverError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("outbound-pending/default.json"), "{err}");
    }
}

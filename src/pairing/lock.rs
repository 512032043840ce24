//! The sidecar lock (`<file>.lock`) that serialises read-modify-write cycles of a store file between
//! processes: ours (`run` and one-shot `pairing` commands) and OpenClaw's own CLI, which takes the same
//! lock the same way (exclusive create, JSON payload `{pid, createdAt}`, stale after 30 s).

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{SecondsFormat, Utc};
use tracing::warn;

use super::PairingError;

/// A lock older than this belongs to a crashed holder: a holder only keeps it for one small
/// read-modify-write, and OpenClaw uses the same limit.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(30);
/// How long `acquire` waits for a live holder before giving up.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_millis(250);

/// An acquired lock; removed again on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    path: PathBuf,
    /// The inode we created, so drop never removes a lock someone else took over.
    ino: u64,
}

/// `<file>.lock` beside `target`.
pub(crate) fn lock_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

impl FileLock {
    /// Lock `target` (the store file), waiting up to [`WAIT`] with exponential backoff.
    pub(crate) fn acquire(target: &Path) -> Result<Self, PairingError> {
        Self::acquire_within(target, WAIT)
    }

    pub(crate) fn acquire_within(target: &Path, wait: Duration) -> Result<Self, PairingError> {
        let path = lock_path(target);
        let deadline = Instant::now() + wait;
        let mut delay = FIRST_DELAY;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let ino = file
                        .metadata()
                        .map(|m| m.ino())
                        .map_err(|source| PairingError::Lock {
                            path: path.clone(),
                            source,
                        })?;
                    let lock = Self { path, ino };
                    // The payload only helps OpenClaw judge staleness by pid; the lock is the file itself.
                    let payload = serde_json::json!({
                        "pid": std::process::id(),
                        "createdAt": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    });
                    let _ = file.write_all(format!("{payload:#}").as_bytes());
                    return Ok(lock);
                }
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                    // A reclaimed stale lock is retried at once; a live one is waited for.
                    if remove_if_stale(&path) {
                        continue;
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(PairingError::Locked {
                            path: target.to_path_buf(),
                            lock: path,
                        });
                    }
                    // Jitter keeps two waiters from retrying in lockstep.
                    let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 2));
                    std::thread::sleep((delay + jitter).min(deadline - now));
                    delay = (delay * 2).min(MAX_DELAY);
                }
                Err(source) => return Err(PairingError::Lock { path, source }),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Remove the lock at `path` when it is older than [`STALE_AFTER`]; true when the path is free now.
fn remove_if_stale(path: &Path) -> bool {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Released between our create and this look: try again.
        Err(err) if err.kind() == ErrorKind::NotFound => return true,
        Err(_) => return false,
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .unwrap_or_default();
    if age <= STALE_AFTER {
        return false;
    }
    // Another waiter may have reclaimed it and taken a fresh lock meanwhile; leave that one alone.
    let same = std::fs::symlink_metadata(path).is_ok_and(|now| now.ino() == meta.ino());
    if !same {
        return true;
    }
    // Older OpenClaw versions (proper-lockfile) locked with a directory of the same name.
    let removed = if meta.is_dir() {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => {
            warn!(lock = %path.display(), age_s = age.as_secs(), "removed a stale lock left by a crashed process");
            true
        }
        Err(err) if err.kind() == ErrorKind::NotFound => true,
        Err(err) => {
            warn!(lock = %path.display(), "cannot remove a stale lock: {err}");
            false
        }
    }
}

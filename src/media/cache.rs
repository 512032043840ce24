//! Housekeeping of `stateDir/media/inbound`: message folders older than `cacheMaxAgeHours` go, then
//! the oldest until the cache fits `cacheMaxMb`. A folder an envelope in flight names is never
//! touched (the caller passes those as `keep`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub folders: usize,
    pub bytes: u64,
}

struct Folder {
    path: PathBuf,
    modified: SystemTime,
    bytes: u64,
}

/// Sweep every account folder under `inbound` (`stateDir/media/inbound`).
pub fn sweep(inbound: &Path, max_bytes: u64, max_age: Duration, keep: &HashSet<PathBuf>) -> Swept {
    let Ok(accounts) = std::fs::read_dir(inbound) else {
        return Swept::default();
    };
    let folders = accounts
        .flatten()
        .flat_map(|account| message_folders(&account.path()))
        .collect();
    remove_beyond(folders, max_bytes, max_age, keep)
}

/// Sweep one account's folder (`stateDir/media/inbound/<account>`) alone: the drop-in's, which
/// must never touch what `run` is still delivering for its accounts.
pub fn sweep_account(account: &Path, max_bytes: u64, max_age: Duration) -> Swept {
    remove_beyond(message_folders(account), max_bytes, max_age, &HashSet::new())
}

/// The message folders of one account folder.
fn message_folders(account: &Path) -> Vec<Folder> {
    let Ok(messages) = std::fs::read_dir(account) else {
        return Vec::new();
    };
    messages
        .flatten()
        .map(|message| message.path())
        .filter(|path| path.is_dir())
        .map(|path| {
            let (bytes, newest) = folder_size(&path);
            Folder {
                path,
                modified: newest,
                bytes,
            }
        })
        .collect()
}

/// Remove folders older than `max_age`, and the oldest while the total exceeds `max_bytes`.
fn remove_beyond(
    mut folders: Vec<Folder>,
    max_bytes: u64,
    max_age: Duration,
    keep: &HashSet<PathBuf>,
) -> Swept {
    // Oldest first: they go first, whether for age or for size.
    folders.sort_by_key(|f| f.modified);
    let mut total: u64 = folders.iter().map(|f| f.bytes).sum();
    let now = SystemTime::now();
    let mut swept = Swept::default();
    for folder in folders {
        let too_old = now.duration_since(folder.modified).is_ok_and(|age| age > max_age);
        if !(too_old || total > max_bytes) || keep.contains(&folder.path) {
            continue;
        }
        match std::fs::remove_dir_all(&folder.path) {
            Ok(()) => {
                debug!(folder = %folder.path.display(), bytes = folder.bytes, too_old, "removed staged media");
                total = total.saturating_sub(folder.bytes);
                swept.folders += 1;
                swept.bytes += folder.bytes;
            }
            Err(err) => warn!(folder = %folder.path.display(), "cannot remove staged media: {err}"),
        }
    }
    if swept.folders > 0 {
        info!(folders = swept.folders, bytes = swept.bytes, "media cache swept");
    }
    swept
}

/// Total size and newest modification time of the files in a message folder.
fn folder_size(path: &Path) -> (u64, SystemTime) {
    let mut bytes = 0;
    let mut newest = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata() {
                bytes += meta.len();
                if let Ok(modified) = meta.modified() {
                    newest = newest.max(modified);
                }
            }
        }
    }
    (bytes, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(root: &Path, name: &str, bytes: usize, age: Duration) -> PathBuf {
        let dir = root.join("default").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, vec![0u8; bytes]).unwrap();
        let when = SystemTime::now() - age;
        let f = std::fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(when).unwrap();
        std::fs::File::open(&dir).unwrap().set_modified(when).unwrap();
        dir
    }

    #[test]
    fn an_account_sweep_leaves_the_other_accounts_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let mine = folder(tmp.path(), "mine", 100, Duration::ZERO);
        let theirs = tmp.path().join("work").join("theirs");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("f"), vec![0u8; 100]).unwrap();
        let swept = sweep_account(&tmp.path().join("default"), 0, Duration::from_secs(3600));
        assert_eq!(swept.folders, 1);
        assert!(!mine.exists());
        assert!(theirs.exists());
    }

    #[test]
    fn removes_old_folders_then_the_oldest_until_it_fits_but_never_a_kept_one() {
        let tmp = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let ancient = folder(tmp.path(), "ancient", 10, hour * 24 * 30);
        let old = folder(tmp.path(), "old", 600, hour * 3);
        let kept = folder(tmp.path(), "kept", 600, hour * 2);
        let new = folder(tmp.path(), "new", 600, Duration::ZERO);
        let keep: HashSet<PathBuf> = [kept.clone()].into_iter().collect();
        let swept = sweep(tmp.path(), 700, hour * 24 * 7, &keep);
        assert_eq!(
            swept,
            Swept {
                folders: 3,
                bytes: 1210
            }
        );
        assert!(!ancient.exists() && !old.exists());
        assert!(
            kept.exists(),
            "in flight: kept although it is older and the cache is over its bound"
        );
        assert!(!new.exists(), "removed to fit, since the older one could not be");
        let swept = sweep(tmp.path(), 700, hour * 24 * 7, &HashSet::new());
        assert_eq!(swept, Swept::default(), "600 bytes fit");
    }
}

//! Small helpers shared by several modules: home-directory expansion, lexical path folding, atomic file
//! writes, locks
//! that survive a panicked holder, the retry schedule (`backoff`), and log-safe escaping of control
//! characters (`escape`).

pub mod backoff;
pub mod escape;

use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `mutex` even when a thread panicked while holding it. Every mutex of the bridge guards data
/// that is whole between two statements (status entries, counters, caches, queues), so a panic
/// elsewhere must not take every later caller down with it.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gateway user's home directory, from `$HOME`.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Expand a leading `~` or `~/` against the gateway user's home; other paths are returned unchanged.
///
/// `~user/…` is left alone on purpose: resolving another user's home needs the password database,
/// and the config never needs it.
pub fn expand_tilde(path: &str) -> PathBuf {
    expand_tilde_with(path, home_dir().as_deref())
}

fn expand_tilde_with(path: &str, home: Option<&Path>) -> PathBuf {
    match (path, home) {
        ("~", Some(home)) => home.to_path_buf(),
        (p, Some(home)) if p.starts_with("~/") => home.join(&p[2..]),
        (p, _) => PathBuf::from(p),
    }
}

/// `path` with `.` and `..` folded away by name, without touching the disk (`..` of the root is the
/// root). Not the real path (a symlink followed by `..` lands elsewhere on disk): for checks on the path
/// as written, next to `canonicalize` for the real one.
pub fn fold_dots(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Replace `path` with `bytes` atomically: write a temp file beside it, fsync, rename over, fsync the
/// directory. A crash leaves either the old or the new content, never a torn file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory entry is on disk.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_dots_by_name_and_stops_at_the_root() {
        for (path, folded) in [
            ("/srv/media/../media2/./a.jpg", "/srv/media2/a.jpg"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a"),
            ("rel/./x/../y", "rel/y"),
        ] {
            assert_eq!(fold_dots(Path::new(path)), PathBuf::from(folded), "{path}");
        }
    }

    #[test]
    fn expands_only_a_leading_tilde_of_the_current_user() {
        let home = Path::new("/home/gw");
        let cases = [
            ("~", "/home/gw"),
            ("~/bin/imsg", "/home/gw/bin/imsg"),
            ("/usr/bin/imsg", "/usr/bin/imsg"),
            ("~bob/imsg", "~bob/imsg"),
            ("a/~/b", "a/~/b"),
        ];
        for (input, want) in cases {
            assert_eq!(
                expand_tilde_with(input, Some(home)),
                PathBuf::from(want),
                "{input}"
            );
        }
    }

    #[test]
    fn atomic_write_replaces_the_whole_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cursor.json");
        atomic_write(&path, b"first, longer content").unwrap();
        atomic_write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cursor.json")]);
    }

    #[test]
    fn a_lock_poisoned_by_a_panicked_holder_still_hands_out_its_data() {
        let mutex = std::sync::Arc::new(Mutex::new(41));
        let holder = mutex.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = holder.lock().unwrap();
            panic!("the holder panics");
        })
        .join();
        assert!(panicked.is_err() && mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 42);
    }

    #[test]
    fn leaves_tilde_alone_without_a_home() {
        assert_eq!(expand_tilde_with("~/x", None), PathBuf::from("~/x"));
    }
}

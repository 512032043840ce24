//! Small helpers shared by several modules: home-directory expansion and atomic file writes.

use std::path::{Path, PathBuf};

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn leaves_tilde_alone_without_a_home() {
        assert_eq!(expand_tilde_with("~/x", None), PathBuf::from("~/x"));
    }
}

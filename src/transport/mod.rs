//! How we reach `imsg rpc`: a local (or wrapper) process today; the native SSH connection joins here.

pub mod process;
pub mod ssh;
pub mod wrapper;

use std::path::PathBuf;

/// Why a transport could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot start {program}: {source}{}", spawn_remedy(.source))]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} started without a {stream} pipe")]
    MissingPipe { program: PathBuf, stream: &'static str },
}

fn spawn_remedy(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            " (check channels.imessage.cliPath: the file does not exist or is not on PATH)"
        }
        std::io::ErrorKind::PermissionDenied => " (the file is not executable: chmod +x it)",
        _ => "",
    }
}

/// The arguments of `imsg rpc`: `rpc` plus `--db <path>` when a database path is configured.
pub fn rpc_args(db_path: Option<&str>) -> Vec<String> {
    let mut args = vec!["rpc".to_string()];
    if let Some(db) = db_path.map(str::trim).filter(|db| !db.is_empty()) {
        args.push("--db".to_string());
        args.push(db.to_string());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_database_only_when_configured() {
        assert_eq!(rpc_args(None), vec!["rpc"]);
        assert_eq!(rpc_args(Some("  ")), vec!["rpc"]);
        assert_eq!(
            rpc_args(Some("~/Library/Messages/chat.db")),
            vec!["rpc", "--db", "~/Library/Messages/chat.db"]
        );
    }
}

//! DM pairing (docs/channel.md): pending requests of unknown senders and the approvals that admit them,
//! stored under `stateDir/credentials/` in OpenClaw's version-1 JSON files so that a state dir shared
//! with OpenClaw (`~/.openclaw`) works with either CLI. Also the two texts a sender receives.
//!
//! Every operation is synchronous file I/O under a short-lived lock (it may wait up to a few seconds
//! for another process); async callers on a busy runtime should use `spawn_blocking`.

mod lock;
mod store;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use store::{Approved, OsRandom, PairingStore, Random, Request, Upsert};

/// The channel name in file names and in `pairing list --json`.
pub const CHANNEL: &str = "imessage";
/// Pairing codes avoid look-alikes (no 0/O, no 1/I); 32 symbols, so `u32 % 32` is unbiased.
pub const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub const CODE_LENGTH: usize = 8;
/// A request expires this long after it was created (not after it was last seen).
pub const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(60 * 60);
/// Pending requests per account; a further stranger gets no code (and no reply) until one goes.
pub const MAX_PENDING: usize = 3;

/// Why a pairing operation failed. One line each, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error(transparent)]
    File(#[from] crate::state::FileError),
    #[error("{path} is corrupt ({detail}); fix it or move it aside")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot create the lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is locked by another process; try again, or remove {lock} if no imsg-bridge or openclaw is running"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("No pending pairing request found for code: {0}")]
    UnknownCode(String),
    #[error("a pairing request needs a sender id")]
    EmptySender,
    #[error("cannot generate a unique pairing code (500 tries)")]
    NoUniqueCode,
    #[error("the system random number source failed: {0}")]
    Random(String),
}

/// The challenge sent to an unknown sender (docs/channel.md, lines joined with `\n`). The command
/// really appears twice: once to read, once in a block that phones make easy to copy.
pub fn reply_text(sender_id: &str, code: &str) -> String {
    let command = format!("imsg-bridge pairing approve {code}");
    [
        "imsg-bridge: access not configured.",
        "",
        &format!("Your iMessage sender id: {sender_id}"),
        "Pairing code:",
        "```",
        code,
        "```",
        "",
        "Ask the bot owner to approve with:",
        &command,
        "```",
        &command,
        "```",
    ]
    .join("\n")
}

/// What `pairing approve --notify` sends to the approved sender.
pub fn approved_text() -> &'static str {
    "✅ imsg-bridge access approved. Send a message to start chatting."
}

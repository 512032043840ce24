//! The `imsg`-compatible simulator over a SQLite file with Apple's chat.db schema.
//!
//! `imsg-sim` is what the tests, the benchmarks and the demo talk to instead of a Mac. It keeps the
//! parts of `imsg` that a client can observe — the JSON-RPC protocol of `imsg rpc` (strict protocol v1
//! by default, the 0.9-era quirks with `--baseline`), the JSON shapes, the watch cursor semantics and
//! the rows `send` writes — over a real SQLite file, so another process (`imsg-sim inject`) can play the
//! part of Messages.app writing incoming messages.
//!
//! # Layout
//! - [`schema`]: the chat.db tables and the demo seed.
//! - [`time`]: Apple epoch nanoseconds ↔ ISO-8601.
//! - [`typedstream`]: text recovery from `attributedBody` (and a builder for seeding tests).
//! - [`db`]: opening connections, `init`, `inject` and the row writers that `send` shares.
//! - [`attachments`]: storing attachment files beside the database, MIME types, `missing`.
//! - [`shapes`]: the pure JSON builders for Chat, Message, Attachment and Reaction objects.
//! - [`query`]: the read queries behind `chats.*`, `messages.*` and the watch.
//! - [`chat_guid`]: reading a chat guid the way Messages does (`any;-;HANDLE` finds `iMessage;-;HANDLE`).
//! - [`params`]: strict and lenient JSON-RPC parameter readers.
//! - [`protocol`]: JSON-RPC framing: request validation, response and notification lines.
//! - [`faults`]: the fault-injection knobs.
//! - [`rpc`]: the JSON-RPC server ([`rpc::serve`]); [`methods`] and [`send`] hold the handlers.
//! - [`watch`]: subscriptions and the change feed that notices rows written by other processes.
//! - [`cli`]: the `imsg-sim` command line; [`imsg_cli`] holds the texts where it plays `imsg` itself.

pub mod attachments;
mod chat_guid;
pub mod cli;
pub mod db;
mod error;
pub mod faults;
pub mod imsg_cli;
mod methods;
pub mod params;
pub mod protocol;
pub mod query;
pub mod rpc;
pub mod schema;
mod send;
pub mod shapes;
pub mod time;
pub mod typedstream;
pub mod watch;

pub use error::SimError;

/// Which generation of `imsg rpc` the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// Protocol v1 (imsg 0.14+): strict framing and params, `initialize`/`status`, canonical payloads.
    #[default]
    Strict,
    /// The 0.9-era server: lenient framing, loose coercion, serial processing, older payloads.
    Baseline,
}

impl Dialect {
    pub fn is_strict(self) -> bool {
        self == Dialect::Strict
    }
}

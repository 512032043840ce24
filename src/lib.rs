//! imsg-bridge: connect an agent gateway to iMessage on a Mac running `imsg`.
//!
//! # Layout
//! Data flows left to right: `transport` reaches `imsg rpc` (a local process or a native SSH
//! connection), `rpc` speaks NDJSON JSON-RPC over it, `imsg` types the protocol, `envelope` turns an
//! imsg message into what the agent receives, `gateway` supervises an account end to end, `state`
//! keeps the cursors that make restarts lossless and `pairing` the pending requests and approvals of
//! unknown senders. `config` loads and validates the json5 file. `sim` is the `imsg`-compatible
//! simulator behind `imsg-sim`; `demo` serves it from an embedded SSH server as a stand-in Mac. `cli`
//! holds the subcommands; `anyhow` lives there and in `main` only.

pub mod cli;
pub mod config;
pub mod demo;
pub mod echo;
pub mod envelope;
pub mod gateway;
pub mod http;
pub mod imsg;
pub mod media;
pub mod outbound;
pub mod pairing;
pub mod policy;
pub mod rpc;
pub mod sim;
pub mod sink;
pub mod state;
pub mod transport;
pub mod util;

//! imsg-bridge: connect an agent gateway to iMessage on a Mac running `imsg`.
//!
//! # Layout
//! Data flows from the Mac to the agent and back, in this order:
//! - `transport` reaches `imsg rpc` (a local process or a native SSH connection);
//! - `rpc` speaks NDJSON JSON-RPC over it;
//! - `imsg` types the protocol (watch events, messages, sends);
//! - `gateway` supervises each account end to end (`gateway::fleet` runs them all as one tree of
//!   tasks). Per message it asks `policy` for the decision (dispatch, pairing challenge or drop),
//!   which reads `echo` (our own output coming back) and `pairing` (pending requests and approvals
//!   of unknown senders); stages attachments with `media` (SFTP, or in place); builds the
//!   `envelope` the agent receives; and moves the cursors of `state` that make restarts lossless;
//! - `sink` hands envelopes to the agent (stdout, exec, webhook) and takes its replies back;
//! - `outbound` turns replies into imsg sends (targets, chunking, prefix, echo protection), with
//!   their files uploaded by `media`.
//!
//! Beside the flow: `config` loads and validates the json5 file; `http` is the control API (send,
//! status, metrics); `util` holds small shared helpers; `sim` is the `imsg`-compatible simulator
//! behind `imsg-sim`, and `demo` serves it from an embedded SSH server as a stand-in Mac; `cli`
//! holds the subcommands (`anyhow` lives there and in `main` only).

pub mod cli;
pub mod config;
pub mod demo;
pub mod dropin;
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

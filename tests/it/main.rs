//! The integration test binary: real child processes, real SQLite, real sshd.
//!
//! One module per area; `support` and `sshd` hold the shared fixtures.

// Test code: a failed unwrap is a failed test with its location, which is what we want. Fixture
// helpers are not `#[test]` functions, so clippy's test exemption does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod api;
mod backlog;
mod channel;
mod client;
mod config;
mod control;
mod crypto;
mod demo;
mod doctor;
mod dropin;
mod fleet;
mod guide;
mod media;
mod native;
mod natsd;
mod proxy;
mod run;
mod scaleout;
mod schema;
mod sim;
mod soak;
mod ssh;
mod sshd;
mod support;

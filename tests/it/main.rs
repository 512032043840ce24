//! The integration test binary: real child processes, real SQLite, real sshd.
//!
//! One module per area; `support` holds the shared fixtures.

mod config;
mod sim;
mod support;

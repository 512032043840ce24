//! `imsg-bridge demo`'s stand-in Mac: an embedded SSH server on 127.0.0.1 ([`DemoServer`]) that runs
//! the simulator's `imsg rpc` in process on exec channels and serves the demo folder over SFTP, so the
//! bridge's own native SSH path is exercised end to end with nothing installed.
//!
//! # Layout
//! - [`server`]: keys, listening, authentication, exec and subsystem requests.
//! - [`sftp`]: the SFTP v3 handler over the real file system.
//! - [`words`]: shell-word splitting of the exec command line.

pub mod server;
pub mod sftp;
pub mod words;

pub use server::{AcceptedSession, CLIENT_KEY_FILE, DEMO_USER, DemoError, DemoServer};

#[cfg(test)]
mod tests;

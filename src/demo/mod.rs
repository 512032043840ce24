//! `imsg-bridge demo`'s stand-in Mac: an embedded SSH server on 127.0.0.1 that runs the simulator's
//! `imsg rpc` in process on exec channels and serves the demo folder over SFTP, so the bridge's own
//! native SSH path is exercised end to end with nothing installed.
//!
//! # Layout
//! - [`sftp`]: the SFTP v3 handler over the real file system.
//! - [`words`]: shell-word splitting of the exec command line.

pub mod sftp;
pub mod words;

//! The drop-in: `imsg-bridge imsg ARGS…` is `imsg ARGS…` run on the Mac over the native SSH link
//! (docs/guides/openclaw.md). Any command runs as it is, its output and exit code passed through;
//! `imsg rpc` is proxied so attachments arrive as local files, local files to send are uploaded, and
//! a cut or frozen link is healed underneath the client.

pub mod command;
pub mod wire;

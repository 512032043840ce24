//! The drop-in: `imsg-bridge imsg ARGS…` is `imsg ARGS…` run on the Mac over the native SSH link
//! (docs/guides/openclaw.md). Any command runs as it is, its output and exit code passed through;
//! `imsg rpc` is proxied so attachments arrive as local files, local files to send are uploaded, and
//! a cut or frozen link is healed underneath the client.

pub mod book;
pub mod command;
pub mod link_source;
pub mod passthrough;
pub mod proxy;
pub mod upstream;
pub mod wire;

use std::time::Duration;

use tracing::{debug, warn};

pub use link_source::LinkSource;
pub use proxy::{Finish, ProxySettings};

use crate::media::FileError;
use crate::media::upload::STAGING;
use crate::transport::link::Link;
use crate::transport::ssh::SshError;

/// Staging folders older than this are left over from an earlier run: removed at the next start.
/// Generous, so a send that Messages is still reading is never pulled from under it.
const STALE_STAGING_MINUTES: u32 = 10;

/// Why the drop-in could not do what it was asked (imsg's own failures pass through as its exit code).
#[derive(Debug, thiserror::Error)]
pub enum DropinError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("cannot write to the client: {0}")]
    Client(#[source] std::io::Error),
    #[error("cannot upload {path} to the Mac: {source}")]
    Upload {
        path: String,
        #[source]
        source: FileError,
    },
    #[error("the connection to the Mac closed before imsg exited")]
    Lost,
    /// A `--file` in a place never sent from (docs/security.md, "Outbound media roots").
    #[error(transparent)]
    Refused(#[from] crate::media::roots::RootsError),
}

/// Remove staging folders an earlier run left on the Mac (best effort, in the background).
pub async fn sweep_staging(link: Option<Link>) {
    let Some(link) = link else { return };
    let command = format!(
        "d=\"$HOME\"/{STAGING}; if [ -d \"$d\" ]; then find \"$d\" -mindepth 1 -maxdepth 1 -type d -mmin +{STALE_STAGING_MINUTES} -exec rm -rf {{}} +; fi"
    );
    match link.capture(&command, Duration::from_secs(60)).await {
        Ok(done) if done.status == Some(0) => debug!("swept stale staging folders on the Mac"),
        Ok(done) => warn!(status = ?done.status, "cannot sweep stale staging folders on the Mac"),
        Err(err) => debug!("cannot sweep stale staging folders on the Mac: {err}"),
    }
}

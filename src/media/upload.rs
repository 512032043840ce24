//! Outbound files: upload into an owner-only staging folder on the Mac
//! (`~/.imsg-bridge/outbound/<uuid>/<name>`, folder mode 0700) so imsg's `send` can name a path the
//! Mac can read, and remove it after the grace period. SFTP when the server offers it, else `cat >`
//! on an exec channel (written only once the server has accepted the exec).

use std::collections::HashSet;
use std::path::Path;

use tokio::io::AsyncWriteExt;
use tracing::{debug, warn};

use super::files::{FileError, RemoteFiles};
use super::policy::safe_name;
use crate::transport::ssh::{ExecEvent, Sftp, SftpError, SshError, quote};

/// Staging folder under the remote user's home.
pub const STAGING: &str = ".imsg-bridge/outbound";

/// A file staged on the Mac.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Absolute path on the Mac, what `send` gets as `file`.
    pub remote_path: String,
    /// Its private folder, removed with it.
    pub remote_dir: String,
    pub bytes: u64,
}

/// Upload `local` (at most `max_bytes`) into a fresh staging folder.
pub async fn upload(remote: &RemoteFiles, local: &Path, max_bytes: u64) -> Result<Uploaded, FileError> {
    let meta = tokio::fs::metadata(local)
        .await
        .map_err(|e| FileError::Other(format!("cannot read {}: {e}", local.display())))?;
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    if meta.len() > max_bytes {
        return Err(FileError::TooLarge { limit: max_bytes });
    }
    let name = safe_name(
        &local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        &mut HashSet::new(),
    );
    let id = uuid::Uuid::new_v4().to_string();
    match remote.sftp().await {
        Some(sftp) => sftp_upload(&sftp, local, &id, &name).await,
        None => exec_upload(remote, local, &id, &name).await,
    }
}

/// Over SFTP: create the folders, make the last one owner-only, write the file.
async fn sftp_upload(sftp: &Sftp, local: &Path, id: &str, name: &str) -> Result<Uploaded, FileError> {
    let sftp_err = |e: SftpError| FileError::Other(format!("sftp: {e}"));
    let home = sftp.realpath(".").await.map_err(sftp_err)?;
    let mut dir = home.trim_end_matches('/').to_string();
    for part in STAGING.split('/').chain([id]) {
        dir = format!("{dir}/{part}");
        // Existing parents are fine; the last create must succeed (checked by the open below).
        let _ = sftp.create_dir(&dir).await;
    }
    sftp.set_mode(&dir, 0o700).await.map_err(sftp_err)?;
    let remote_path = format!("{dir}/{name}");
    let mut file = sftp.create(&remote_path).await.map_err(sftp_err)?;
    let mut source = tokio::fs::File::open(local)
        .await
        .map_err(|e| FileError::Other(format!("cannot read {}: {e}", local.display())))?;
    let bytes = tokio::io::copy(&mut source, &mut file)
        .await
        .map_err(|e| FileError::Other(format!("upload failed: {e}")))?;
    file.shutdown()
        .await
        .map_err(|e| FileError::Other(format!("upload failed: {e}")))?;
    Ok(Uploaded {
        remote_path,
        remote_dir: dir,
        bytes,
    })
}

/// Without SFTP: `mkdir` and `cat >` over an exec channel, the file on stdin.
async fn exec_upload(
    remote: &RemoteFiles,
    local: &Path,
    id: &str,
    name: &str,
) -> Result<Uploaded, FileError> {
    let command = format!(
        "umask 077; d=\"$HOME\"/{STAGING}/{id}; mkdir -p \"$d\" && cat > \"$d\"/{name} && printf '%s\\n' \"$d\"",
        name = quote::quote(name)
    );
    let source = tokio::fs::File::open(local)
        .await
        .map_err(|e| FileError::Other(format!("cannot read {}: {e}", local.display())))?;
    let bytes = tokio::fs::metadata(local).await.map(|m| m.len()).unwrap_or(0);
    let other = |e: SshError| FileError::Other(e.to_string());
    // Returns once the server accepted the exec: the file is never written into a refused channel.
    let mut exec = remote.link().exec(&command).await.map_err(other)?;
    exec.send(source).await.map_err(other)?;
    exec.eof().await.map_err(other)?;
    let (mut stdout, mut status) = (Vec::new(), None);
    while let Some(event) = exec.next().await {
        match event {
            ExecEvent::Stdout(data) => stdout.extend_from_slice(&data),
            ExecEvent::Exited(code) => status = Some(code),
            _ => {}
        }
    }
    let dir = String::from_utf8_lossy(&stdout).trim().to_string();
    if status != Some(0) || dir.is_empty() {
        return Err(FileError::Other(format!(
            "upload over exec failed (exit {status:?})"
        )));
    }
    Ok(Uploaded {
        remote_path: format!("{dir}/{name}"),
        remote_dir: dir,
        bytes,
    })
}

/// Remove an uploaded file and its folder (best effort: a leftover is logged, not fatal).
pub async fn remove(remote: &RemoteFiles, uploaded: &Uploaded) {
    // Never remove anything but one of our own staging folders.
    if !uploaded.remote_dir.contains(&format!("/{STAGING}/")) {
        warn!(dir = %uploaded.remote_dir, "refusing to remove a folder outside the staging area");
        return;
    }
    let result = match remote.sftp().await {
        Some(sftp) => {
            let file = sftp.remove_file(&uploaded.remote_path).await;
            let dir = sftp.remove_dir(&uploaded.remote_dir).await;
            file.and(dir).map_err(|e| e.to_string())
        }
        None => {
            let command = format!("rm -rf -- {}", quote::quote(&uploaded.remote_dir));
            remote
                .link()
                .capture(&command, std::time::Duration::from_secs(30))
                .await
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    if c.status == Some(0) {
                        Ok(())
                    } else {
                        Err(c.stderr)
                    }
                })
        }
    };
    match result {
        Ok(()) => debug!(path = %uploaded.remote_path, "removed the uploaded file"),
        Err(err) => warn!(path = %uploaded.remote_path, "cannot remove the uploaded file: {err}"),
    }
}

//! Inbound staging (docs/attachments.md): for each attachment of a message, check the roots, resolve and stat
//! it, enforce `mediaMaxMb`, and pull it into `stateDir/media/inbound/<account>/<guid>/<safe name>`
//! (temp file, size enforced while reading, sha256 on the way, fsync, rename). Each attachment ends
//! with a status; the envelope waits for all of them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::files::{FileError, Files, Probe};
use super::policy::{in_roots, mime_for, safe_name};
use crate::envelope::{Media, MediaStatus};
use crate::imsg::{Attachment, Message};

/// Pause before each retry of a missing or growing file: ~10 s over the first five, 4 s apart after.
const RETRY_DELAYS_MS: [u64; 5] = [500, 1_000, 2_000, 3_000, 3_500];
const LATER_RETRY_MS: u64 = 4_000;
/// Messages older than this are not waited for: their files are complete or gone for good.
const FRESH: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What staging needs about one account.
#[derive(Debug, Clone)]
pub struct Stager {
    /// `stateDir/media/inbound/<account>`.
    pub dir: PathBuf,
    /// Normalised root patterns (remote roots over SSH, local roots otherwise).
    pub roots: Vec<String>,
    pub max_bytes: u64,
    pub retries: u32,
    pub files: Files,
}

/// The outcome of one attempt.
enum Attempt {
    Done(Media),
    Retry(String),
}

impl Stager {
    /// The folder of a message's staged files.
    pub fn message_dir(&self, message: &Message) -> PathBuf {
        let folder: String = message
            .guid
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let folder = if folder.is_empty() {
            format!("rowid-{}", message.id)
        } else {
            folder
        };
        self.dir.join(folder)
    }

    /// Stage every attachment of `message`, in order.
    pub async fn stage(&self, message: &Message) -> Vec<Media> {
        let fresh = chrono::DateTime::parse_from_rfc3339(&message.created_at)
            .map_or(true, |t| chrono::Utc::now().signed_duration_since(t) < FRESH);
        let retries = if fresh { self.retries } else { 0 };
        let dir = self.message_dir(message);
        let mut taken = HashSet::new();
        let mut media = Vec::with_capacity(message.attachments.len());
        for attachment in &message.attachments {
            let name_source = if attachment.transfer_name.trim().is_empty() {
                &attachment.original_path
            } else {
                &attachment.transfer_name
            };
            let name = safe_name(name_source, &mut taken);
            let staged = self.stage_one(attachment, &dir, &name, retries).await;
            log_outcome(message, &staged);
            media.push(staged);
        }
        media
    }

    async fn stage_one(&self, attachment: &Attachment, dir: &Path, name: &str, retries: u32) -> Media {
        let path = attachment.original_path.trim();
        let base = Media {
            status: MediaStatus::Failed,
            path: None,
            remote_path: path.to_string(),
            mime: Some(mime_for(name, &attachment.mime_type)),
            size: u64::try_from(attachment.total_bytes).ok().filter(|n| *n > 0),
            sha256: None,
            reason: None,
        };
        let done = |status: MediaStatus, reason: String| Media {
            status,
            reason: Some(reason),
            ..base.clone()
        };
        if path.is_empty() {
            return done(
                MediaStatus::Missing,
                "imsg reports no file path (not downloaded to the Mac yet?)".into(),
            );
        }
        if !in_roots(path, &self.roots) {
            return done(
                MediaStatus::OutsideRoots,
                format!("{path} is outside the attachment roots"),
            );
        }
        let mut attempt = 0u32;
        loop {
            match self.attempt(path, &base, dir, name).await {
                Attempt::Done(media) => return media,
                Attempt::Retry(reason) if attempt >= retries => {
                    let status = if reason.contains("no such file") {
                        MediaStatus::Missing
                    } else {
                        MediaStatus::Failed
                    };
                    return done(status, reason);
                }
                Attempt::Retry(reason) => {
                    let delay = RETRY_DELAYS_MS
                        .get(attempt as usize)
                        .copied()
                        .unwrap_or(LATER_RETRY_MS);
                    debug!(
                        path,
                        attempt, reason, "attachment not ready; retrying in {delay} ms"
                    );
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, path: &str, base: &Media, dir: &Path, name: &str) -> Attempt {
        let done = |status: MediaStatus, reason: String| {
            Attempt::Done(Media {
                status,
                reason: Some(reason),
                ..base.clone()
            })
        };
        let probe = match self.files.probe(path).await {
            Ok(probe) => probe,
            Err(FileError::Denied(detail)) => return done(MediaStatus::Denied, denied_reason(&detail)),
            Err(FileError::NotAFile) => return done(MediaStatus::Failed, "not a regular file".into()),
            Err(err) => return Attempt::Retry(err.to_string()),
        };
        if !in_roots(&probe.real_path, &self.roots) {
            return done(
                MediaStatus::OutsideRoots,
                format!(
                    "{path} resolves to {} outside the attachment roots",
                    probe.real_path
                ),
            );
        }
        if probe.size > self.max_bytes {
            return Attempt::Done(Media {
                status: MediaStatus::TooLarge,
                size: Some(probe.size),
                reason: Some(format!(
                    "{} bytes is over mediaMaxMb ({} bytes)",
                    probe.size, self.max_bytes
                )),
                ..base.clone()
            });
        }
        let pulled = match &self.files {
            Files::Local => self.hash_in_place(&probe).await,
            Files::Remote(_) => self.pull(&probe, dir, name).await,
        };
        match pulled {
            Ok((local, sha256)) => Attempt::Done(Media {
                status: MediaStatus::Ok,
                path: Some(local.display().to_string()),
                size: Some(probe.size),
                sha256: Some(sha256),
                reason: None,
                ..base.clone()
            }),
            Err(FileError::TooLarge { .. }) => done(
                MediaStatus::TooLarge,
                format!("grew past mediaMaxMb ({} bytes) while being read", self.max_bytes),
            ),
            Err(FileError::Denied(detail)) => done(MediaStatus::Denied, denied_reason(&detail)),
            Err(err) => Attempt::Retry(err.to_string()),
        }
    }

    /// The local transport references files in place: read once for the size check and sha256.
    async fn hash_in_place(&self, probe: &Probe) -> Result<(PathBuf, String), FileError> {
        let mut sink = HashingWriter::new(tokio::io::sink());
        let n = self
            .files
            .read_into(&probe.real_path, self.max_bytes, &mut sink)
            .await?;
        if n != probe.size {
            return Err(FileError::Other(format!(
                "still being written ({} bytes at stat, {n} read)",
                probe.size
            )));
        }
        Ok((PathBuf::from(&probe.real_path), sink.finish()))
    }

    /// Pull into a temp file beside the destination, then fsync and rename.
    async fn pull(&self, probe: &Probe, dir: &Path, name: &str) -> Result<(PathBuf, String), FileError> {
        let local_error =
            |e: std::io::Error| FileError::Other(format!("cannot write under {}: {e}", dir.display()));
        tokio::fs::create_dir_all(dir).await.map_err(local_error)?;
        let final_path = dir.join(name);
        let temp = dir.join(format!(".{name}.part"));
        let file = tokio::fs::File::create(&temp).await.map_err(local_error)?;
        let mut writer = HashingWriter::new(file);
        let read = self
            .files
            .read_into(&probe.real_path, self.max_bytes, &mut writer)
            .await;
        let result = async {
            let n = read?;
            if n != probe.size {
                return Err(FileError::Other(format!(
                    "still being written ({} bytes at stat, {n} read)",
                    probe.size
                )));
            }
            writer.inner.flush().await.map_err(local_error)?;
            writer.inner.sync_all().await.map_err(local_error)?;
            tokio::fs::rename(&temp, &final_path).await.map_err(local_error)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result.map(|()| (final_path, writer.finish()))
    }
}

fn denied_reason(detail: &str) -> String {
    let mut reason = "permission denied reading the file on the Mac".to_string();
    if !detail.trim().is_empty() {
        reason.push_str(&format!(" ({})", detail.trim()));
    }
    reason
}

fn log_outcome(message: &Message, media: &Media) {
    match media.status {
        MediaStatus::Ok => {
            debug!(rowid = message.id, path = ?media.path, size = ?media.size, "attachment staged")
        }
        MediaStatus::Missing | MediaStatus::TooLarge | MediaStatus::OutsideRoots => info!(
            rowid = message.id,
            status = ?media.status,
            "attachment not staged: {}",
            media.reason.as_deref().unwrap_or("")
        ),
        MediaStatus::Denied | MediaStatus::Failed => warn!(
            rowid = message.id,
            status = ?media.status,
            "attachment not staged: {}",
            media.reason.as_deref().unwrap_or("")
        ),
    }
}

/// Passes writes through and hashes them on the way.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for HashingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            this.hasher.update(&buf[..*n]);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stager(dir: &Path, roots: Vec<String>, max_bytes: u64) -> Stager {
        Stager {
            dir: dir.join("cache"),
            roots,
            max_bytes,
            retries: 0,
            files: Files::Local,
        }
    }

    fn message_with(paths: &[&str]) -> Message {
        Message {
            id: 7,
            guid: "G-1".into(),
            created_at: "2020-01-01T00:00:00Z".into(),
            attachments: paths
                .iter()
                .map(|p| Attachment {
                    original_path: p.to_string(),
                    transfer_name: Path::new(p).file_name().unwrap().to_string_lossy().into_owned(),
                    ..Attachment::default()
                })
                .collect(),
            ..Message::default()
        }
    }

    #[tokio::test]
    async fn references_local_files_in_place_after_the_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Attachments");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a.txt"), b"abc").unwrap();
        std::fs::write(root.join("big.bin"), vec![0u8; 100]).unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("link.txt")).unwrap();
        let roots = vec![root.display().to_string()];
        let s = stager(tmp.path(), roots, 50);
        let p = |n: &str| root.join(n).display().to_string();
        let outside = tmp.path().join("secret").display().to_string();
        let dotted = format!("{}/../secret", root.display());
        let gone = p("gone.txt");
        let msg = message_with(&[
            &p("a.txt"),
            &p("big.bin"),
            &p("link.txt"),
            &outside,
            &dotted,
            &gone,
        ]);
        let media = s.stage(&msg).await;
        let statuses: Vec<MediaStatus> = media.iter().map(|m| m.status).collect();
        assert_eq!(
            statuses,
            vec![
                MediaStatus::Ok,
                MediaStatus::TooLarge,
                MediaStatus::OutsideRoots,
                MediaStatus::OutsideRoots,
                MediaStatus::OutsideRoots,
                MediaStatus::Missing
            ]
        );
        assert_eq!(
            media[0].sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(media[0].path.as_deref(), Some(p("a.txt").as_str()));
        assert_eq!(media[0].mime.as_deref(), Some("text/plain"));
        assert_eq!(media[1].size, Some(100));
        assert!(
            !tmp.path().join("cache").exists(),
            "nothing copied for the local transport"
        );
    }
}

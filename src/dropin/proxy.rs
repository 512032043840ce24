//! `imsg rpc` proxied line by line (docs/guides/openclaw.md): the client's requests go to the Mac's
//! imsg under ids of ours, local files named by sends are uploaded first, attachments of messages
//! are pulled before the line is forwarded, and when the link dies the requests in flight are
//! answered with their disposition while the proxy reconnects and resumes every subscription from
//! the last row it forwarded, under the id the client knows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::book::{Answer, Book, Delivery, not_started};
use super::link_source::LinkSource;
use super::upstream::{End, MAX_LINE, Upstream};
use super::wire::{
    FileParams, Frame, Kind, MessageParams, MessagesResult, SubscribeParams, WireAttachment, WireMessage,
    WithSubscription, value_of, view,
};
use super::{DropinError, sweep_staging};
use crate::envelope::{Media, MediaStatus};
use crate::imsg::Message;
use crate::media::roots::{Caller, OutboundRoots};
use crate::media::upload::{self, Uploaded};
use crate::media::{Files, RemoteFiles, Stager};
use crate::util::backoff::{Backoff, Schedule};

/// When a proxy that is still running sweeps the staging folders earlier runs left on the Mac.
const SWEEP_AFTER: Duration = Duration::from_secs(30);
/// Client lines read ahead of the proxy.
const CLIENT_LINES: usize = 64;
/// Reconnect pacing while the Mac cannot be reached; the first retry is immediate.
const RECONNECT: Schedule = Schedule {
    first: Duration::from_millis(250),
    max: Duration::from_secs(10),
    jitter: 0.2,
    healthy: Some(Duration::from_secs(30)),
};

/// Everything the proxy needs besides the link.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The remote shell line that starts `imsg rpc …`.
    pub command: String,
    /// `stateDir/media/inbound/<account>`.
    pub media_dir: PathBuf,
    /// Remote attachment roots, normalised.
    pub roots: Vec<String>,
    pub media_max_bytes: u64,
    pub media_retries: u32,
    pub sftp_timeout: Duration,
    /// Upload bound of one outbound file.
    pub upload_max_bytes: u64,
    /// The places never sent from: the drop-in trusts its caller as imsg would, but not with those.
    pub outbound: OutboundRoots,
    /// How long an uploaded file stays on the Mac after imsg answered the send.
    pub grace: Duration,
    /// Bounds of this account's part of the media cache (`bridge.media.cacheMaxMb`, `cacheMaxAgeHours`).
    pub cache_max_bytes: u64,
    pub cache_max_age: Duration,
}

/// How the proxy's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// imsg's exit status, as `imsg rpc` would have exited.
    Exited(i32),
    /// The client went away (stdin and stdout closed) or we were told to stop.
    Stopped,
    /// The link died after the client closed its side: nothing left to heal for.
    Lost,
}

/// What one session with the remote imsg came to.
enum Outcome {
    Ended(End),
    Stopped,
}

/// Proxy `imsg rpc` between `input`/`output` (the client) and the Mac.
pub async fn run<R, W>(
    input: R,
    output: W,
    mut source: LinkSource,
    settings: ProxySettings,
    cancel: CancellationToken,
) -> Result<Finish, DropinError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let tasks = TaskTracker::new();
    let (client_tx, client_rx) = mpsc::channel(CLIENT_LINES);
    tasks.spawn(read_client(input, client_tx));
    let mut proxy = Proxy {
        book: Book::default(),
        out: BufWriter::new(output),
        client: client_rx,
        client_open: true,
        uploads: HashMap::new(),
        removals: Vec::new(),
        settings,
        tasks: tasks.clone(),
        files: None,
        answered: false,
    };
    let finish = proxy.run(&mut source, &cancel).await;
    proxy.remove_all_due().await;
    let _ = proxy.out.flush().await;
    tasks.close();
    finish
}

/// The client's stdin, as lines; None at its end.
async fn read_client<R: AsyncRead + Unpin>(input: R, lines: mpsc::Sender<Vec<u8>>) {
    let mut reader = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > MAX_LINE => warn!(bytes = line.len(), "dropped a client line over 16 MiB"),
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

struct Proxy<W> {
    book: Book,
    out: BufWriter<W>,
    client: mpsc::Receiver<Vec<u8>>,
    client_open: bool,
    /// Files uploaded for a request, by our request id, until imsg answers it.
    uploads: HashMap<u64, Vec<Uploaded>>,
    /// Uploads to remove once their grace period is over.
    removals: Vec<(Instant, Uploaded)>,
    settings: ProxySettings,
    tasks: TaskTracker,
    /// SFTP (and exec) on the current link, for pulls and uploads.
    files: Option<Arc<RemoteFiles>>,
    /// The current session answered something: an exit now is a crash to heal, not imsg refusing.
    answered: bool,
}

impl<W: AsyncWrite + Unpin> Proxy<W> {
    async fn run(
        &mut self,
        source: &mut LinkSource,
        cancel: &CancellationToken,
    ) -> Result<Finish, DropinError> {
        let mut backoff = Backoff::new(RECONNECT);
        let mut resume: Vec<Frame> = Vec::new();
        let mut sessions = 0u32;
        loop {
            let started = Instant::now();
            let upstream = tokio::select! {
                up = self.connect(source) => up,
                () = cancel.cancelled() => return Ok(Finish::Stopped),
            };
            let mut upstream = match upstream {
                Ok(upstream) => upstream,
                // The first connect fails as `ssh … imsg rpc` would: one line, no retrying.
                Err(err) if sessions == 0 => return Err(err),
                Err(err) => {
                    warn!("cannot reach the Mac again yet: {err}");
                    if !self.pause(backoff.next_delay(), cancel).await {
                        return Ok(Finish::Stopped);
                    }
                    continue;
                }
            };
            if sessions == 0 {
                // Not on the way to the first answer: a short-lived send child never waits for it,
                // the long-lived monitor sweeps a little later.
                let link = source.current();
                let cancel = cancel.clone();
                let cache = self.settings.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(SWEEP_AFTER) => {
                            sweep_staging(link).await;
                            sweep_cache(cache).await;
                        }
                        () = cancel.cancelled() => {}
                    }
                });
            } else {
                info!(
                    subscriptions = resume.len(),
                    "reconnected to the Mac; resuming the watch"
                );
            }
            sessions += 1;
            self.answered = false;
            for frame in resume.drain(..) {
                upstream.send(frame.to_line()).await;
            }
            let outcome = self.serve(&mut upstream, cancel).await?;
            let end = match outcome {
                Outcome::Stopped => return Ok(Finish::Stopped),
                Outcome::Ended(end) => end,
            };
            match self.after(end) {
                Some(finish) => {
                    let (failed, _) = self.book.lost("the connection to the Mac closed");
                    self.write_frames(&failed).await?;
                    return Ok(finish);
                }
                None => {
                    warn!(?end, "the link to the Mac was cut or imsg stopped; reconnecting");
                    let (failed, again) = self.book.lost("the link to the Mac was lost");
                    self.write_frames(&failed).await?;
                    self.out.flush().await.map_err(DropinError::Client)?;
                    resume = again;
                    backoff.record_uptime(started.elapsed());
                    if sessions > 1 && !self.pause(backoff.next_delay(), cancel).await {
                        return Ok(Finish::Stopped);
                    }
                }
            }
        }
    }

    /// Open (or reuse) the link and start `imsg rpc` on it.
    async fn connect(&mut self, source: &mut LinkSource) -> Result<Upstream, DropinError> {
        let link = source.link().await?;
        let upstream = Upstream::start(&link, &self.settings.command, &self.tasks).await;
        let upstream = match upstream {
            Ok(upstream) => upstream,
            Err(err) => {
                source.forget();
                return Err(err.into());
            }
        };
        self.files = Some(Arc::new(RemoteFiles::new(link, self.settings.sftp_timeout)));
        Ok(upstream)
    }

    /// Whether a session's end finishes the run (Some) or is healed by reconnecting (None).
    fn after(&self, end: End) -> Option<Finish> {
        match end {
            End::Exited(code) if !self.client_open => Some(Finish::Exited(code)),
            End::Killed(number) if !self.client_open => Some(Finish::Exited(128 + number)),
            _ if !self.client_open => Some(Finish::Lost),
            // imsg refused to start (bad arguments, no Full Disk Access): exit as it did.
            End::Exited(code) if !self.answered => Some(Finish::Exited(code)),
            _ => None,
        }
    }

    /// Sleep unless cancelled; false when cancelled.
    async fn pause(&self, delay: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = cancel.cancelled() => false,
        }
    }

    /// Relay one session until imsg's side ends.
    async fn serve(
        &mut self,
        upstream: &mut Upstream,
        cancel: &CancellationToken,
    ) -> Result<Outcome, DropinError> {
        loop {
            if !upstream.has_ready() && self.client.is_empty() {
                self.out.flush().await.map_err(DropinError::Client)?;
            }
            let due = self.removals.iter().map(|(at, _)| *at).min();
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(Outcome::Stopped),
                line = upstream.next() => match line {
                    Some(line) => self.on_imsg_line(line, upstream).await?,
                    None => return Ok(Outcome::Ended(upstream.ended().await)),
                },
                line = self.client.recv(), if self.client_open => match line {
                    Some(line) => self.on_client_line(line, upstream).await?,
                    None => {
                        debug!("the client closed its side; imsg's stdin follows");
                        self.client_open = false;
                        upstream.close_input();
                    }
                },
                () = sleep_until(due), if due.is_some() => self.remove_due(Instant::now()).await,
            }
        }
    }

    async fn on_client_line(&mut self, line: Vec<u8>, upstream: &Upstream) -> Result<(), DropinError> {
        let Some(frame) = Frame::parse(&line).filter(|f| f.kind() == Kind::Request) else {
            upstream.send(line).await;
            return Ok(());
        };
        let (frame, uploaded) = match self.upload_files(frame).await {
            Ok(ready) => ready,
            Err(answer) => return self.write_frames(&[*answer]).await,
        };
        if wants_attachments(&frame)
            && let Some(files) = self.files.clone()
        {
            // Open SFTP now, so the first photo does not wait for the subsystem to start.
            self.tasks.spawn(async move {
                files.sftp().await;
            });
        }
        let frame = if Book::wants_floor(&frame) {
            self.book.subscribe_from_now(frame)
        } else {
            self.book.request(frame)
        };
        if let (Some(id), false) = (frame.id.as_ref().and_then(|v| v.as_u64()), uploaded.is_empty()) {
            self.uploads.insert(id, uploaded);
        }
        upstream.send(frame.to_line()).await;
        Ok(())
    }

    /// Upload a local `file` of a send and point the request at the Mac's copy. A path that is
    /// not a file here is the Mac's own and goes as it is.
    async fn upload_files(&mut self, mut frame: Frame) -> Result<(Frame, Vec<Uploaded>), Box<Frame>> {
        let Some(mut params) = frame.params.as_ref().and_then(view::<FileParams>) else {
            return Ok((frame, Vec::new()));
        };
        let Some(local) = params.file.clone().filter(|f| Path::new(f).is_file()) else {
            return Ok((frame, Vec::new()));
        };
        let Some(files) = self.files.clone() else {
            return Ok((frame, Vec::new()));
        };
        let id = frame.id.clone().unwrap_or_default();
        // The real path is what is uploaded: a link swapped after the check changes nothing.
        let real = match self.settings.outbound.check(Path::new(&local), Caller::Operator) {
            Ok(real) => real,
            Err(err) => {
                warn!("imsg-bridge: {err}");
                return Err(Box::new(not_started(id, format!("imsg-bridge: {err}"))));
            }
        };
        match upload::upload(&files, &real, self.settings.upload_max_bytes).await {
            Ok(uploaded) => {
                debug!(local = %crate::util::escape::escape_controls(&local), remote = %uploaded.remote_path, "uploaded a file to send");
                params.file = Some(uploaded.remote_path.clone());
                frame.params = Some(value_of(&params));
                Ok((frame, vec![uploaded]))
            }
            Err(err) => {
                let local = crate::util::escape::escape_controls(&local);
                let message = format!("imsg-bridge: cannot upload {local} to the Mac: {err}");
                Err(Box::new(not_started(id, message)))
            }
        }
    }

    async fn on_imsg_line(&mut self, line: Vec<u8>, upstream: &Upstream) -> Result<(), DropinError> {
        let Some(frame) = Frame::parse(&line) else {
            return self.write_raw(&line).await;
        };
        match frame.kind() {
            Kind::Response => self.answer(frame, line, upstream).await,
            Kind::Notification => self.notification(frame, line, upstream).await,
            Kind::Request | Kind::Other => self.write_raw(&line).await,
        }
    }

    async fn answer(&mut self, frame: Frame, line: Vec<u8>, upstream: &Upstream) -> Result<(), DropinError> {
        self.answered = true;
        let ours = frame.id.as_ref().and_then(|v| v.as_u64());
        if let Some(done) = ours.and_then(|id| self.uploads.remove(&id)) {
            let at = Instant::now() + self.settings.grace;
            self.removals.extend(done.into_iter().map(|u| (at, u)));
        }
        match self.book.answer(frame) {
            Answer::Client { mut frame, method } => {
                if method.starts_with("messages.") {
                    self.pull_result(&mut frame).await;
                }
                self.write_frames(&[frame]).await?;
                self.release_held().await
            }
            Answer::Own => self.release_held().await,
            Answer::Send(next) => {
                upstream.send(next.to_line()).await;
                Ok(())
            }
            Answer::Unknown => self.write_raw(&line).await,
        }
    }

    async fn release_held(&mut self) -> Result<(), DropinError> {
        for params in self.book.release_held() {
            self.deliver(params).await?;
        }
        Ok(())
    }

    async fn notification(
        &mut self,
        mut frame: Frame,
        line: Vec<u8>,
        upstream: &Upstream,
    ) -> Result<(), DropinError> {
        let method = frame.method.clone().unwrap_or_default();
        match method.as_str() {
            "message" => match frame.params.as_ref().and_then(view::<MessageParams>) {
                Some(params) => self.deliver(params).await,
                None => self.write_raw(&line).await,
            },
            "watch.overflow" => {
                // imsg's buffer overflowed: resume from the last forwarded row; the client sees nothing.
                if let Some(client) = self.subscription_of(&frame)
                    && let Some(again) = self.book.resubscribe(client)
                {
                    info!(
                        subscription = client,
                        "imsg's watch overflowed; resuming it from the last forwarded row"
                    );
                    upstream.send(again.to_line()).await;
                    return Ok(());
                }
                self.write_raw(&line).await
            }
            _ => {
                // `error` ends the subscription for good; others just get the client's id.
                let Some(client) = self.subscription_of(&frame) else {
                    return self.write_raw(&line).await;
                };
                if method == "error" {
                    self.book.forget_subscription(client);
                }
                if let Some(mut with) = frame.params.as_ref().and_then(view::<WithSubscription>) {
                    with.subscription = client.into();
                    frame.params = Some(value_of(&with));
                }
                self.write_frames(&[frame]).await
            }
        }
    }

    fn subscription_of(&self, frame: &Frame) -> Option<i64> {
        let with = frame.params.as_ref().and_then(view::<WithSubscription>)?;
        self.book.client_subscription(with.subscription.as_i64()?)
    }

    async fn deliver(&mut self, params: MessageParams) -> Result<(), DropinError> {
        match self.book.message(params.clone()) {
            Delivery::Forward(mut params) => {
                self.pull(&mut params.message).await;
                self.write_frames(&[Frame::notification("message", value_of(&params))])
                    .await
            }
            Delivery::Duplicate | Delivery::Held => Ok(()),
            Delivery::Unknown => {
                self.write_frames(&[Frame::notification("message", value_of(&params))])
                    .await
            }
        }
    }

    /// Pull the attachments of every message in a `messages.*` result.
    async fn pull_result(&mut self, frame: &mut Frame) {
        let Some(mut result) = frame.result.as_ref().and_then(view::<MessagesResult>) else {
            return;
        };
        for message in &mut result.messages {
            self.pull(message).await;
        }
        frame.result = Some(value_of(&result));
    }

    /// Pull a message's attachments into the local cache and point them at the local files.
    async fn pull(&mut self, message: &mut WireMessage) {
        let Some(attachments) = message.attachments.as_ref().filter(|a| !a.is_empty()) else {
            return;
        };
        let count = attachments.len();
        let (Some(files), Some(typed)) = (self.files.clone(), view::<Message>(&value_of(message))) else {
            return;
        };
        // Our own sends come back as rows from me: their files came from this side, and pulling
        // them back would only cost a transfer. They keep the Mac's paths.
        if typed.is_from_me {
            return;
        }
        let stager = Stager {
            dir: self.settings.media_dir.clone(),
            roots: self.settings.roots.clone(),
            max_bytes: self.settings.media_max_bytes,
            retries: self.settings.media_retries,
            files: Files::Remote(files),
        };
        let media = stager.stage(&typed).await;
        if let Some(attachments) = message.attachments.as_mut() {
            for (attachment, media) in attachments.iter_mut().zip(media).take(count) {
                rewrite(attachment, media);
            }
        }
    }

    async fn write_frames(&mut self, frames: &[Frame]) -> Result<(), DropinError> {
        for frame in frames {
            self.out
                .write_all(&frame.to_line())
                .await
                .map_err(DropinError::Client)?;
        }
        Ok(())
    }

    async fn write_raw(&mut self, line: &[u8]) -> Result<(), DropinError> {
        self.out.write_all(line).await.map_err(DropinError::Client)?;
        self.out.write_all(b"\n").await.map_err(DropinError::Client)
    }

    async fn remove_due(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = self.removals.drain(..).partition(|(at, _)| *at <= now);
        self.removals = later;
        if let Some(files) = self.files.clone() {
            for (_, uploaded) in due {
                upload::remove(&files, &uploaded).await;
            }
        }
    }

    /// At the end: remove what is already due; the rest is swept at the next start.
    async fn remove_all_due(&mut self) {
        self.remove_due(Instant::now()).await;
        if !self.removals.is_empty() {
            debug!(
                left = self.removals.len(),
                "uploads still in their grace period are left to the next start's sweep"
            );
        }
    }
}

/// Keep this account's pulled files within the cache bounds, as `run` does with its own.
async fn sweep_cache(settings: ProxySettings) {
    let sweep = move || {
        crate::media::cache::sweep_account(
            &settings.media_dir,
            settings.cache_max_bytes,
            settings.cache_max_age,
        )
    };
    let _ = tokio::task::spawn_blocking(sweep).await;
}

/// A `watch.subscribe` that asks for attachments.
fn wants_attachments(frame: &Frame) -> bool {
    frame.method.as_deref() == Some("watch.subscribe")
        && frame
            .params
            .as_ref()
            .and_then(view::<SubscribeParams>)
            .is_some_and(|p| p.attachments == Some(true))
}

/// Point an attachment at its local copy, or mark it missing and keep the Mac's path aside.
fn rewrite(attachment: &mut WireAttachment, media: Media) {
    match (media.status, media.path) {
        (MediaStatus::Ok, Some(path)) => {
            attachment.original_path = Some(path);
            attachment.missing = Some(false);
        }
        (status, _) => {
            attachment.imsg_bridge_remote_path = Some(media.remote_path);
            attachment.missing = Some(true);
            let reason = media.reason.unwrap_or_default();
            attachment.imsg_bridge_error = Some(format!("{}: {reason}", status.as_str()));
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attachment() -> WireAttachment {
        view(&json!({"original_path": "/Users/bot/Library/Messages/Attachments/a.jpg", "mime_type": "image/jpeg"})).unwrap()
    }

    fn media(status: MediaStatus, path: Option<&str>) -> Media {
        Media {
            status,
            path: path.map(str::to_string),
            remote_path: "/Users/bot/Library/Messages/Attachments/a.jpg".into(),
            mime: None,
            size: None,
            sha256: None,
            reason: Some("why".into()),
        }
    }

    #[test]
    fn a_pulled_attachment_points_at_the_local_copy() {
        let mut a = attachment();
        rewrite(
            &mut a,
            media(MediaStatus::Ok, Some("/state/media/inbound/default/g/a.jpg")),
        );
        let v = value_of(&a);
        assert_eq!(v["original_path"], json!("/state/media/inbound/default/g/a.jpg"));
        assert_eq!(v["missing"], json!(false));
        assert_eq!(v["mime_type"], json!("image/jpeg"));
        assert!(v.get("imsg_bridge_remote_path").is_none());
    }

    #[test]
    fn a_failed_pull_is_missing_and_keeps_the_macs_path() {
        let mut a = attachment();
        rewrite(&mut a, media(MediaStatus::TooLarge, None));
        let v = value_of(&a);
        assert_eq!(v["missing"], json!(true));
        assert_eq!(
            v["imsg_bridge_remote_path"],
            json!("/Users/bot/Library/Messages/Attachments/a.jpg")
        );
        assert_eq!(v["imsg_bridge_error"], json!("too_large: why"));
    }
}

//! The one way out. Every send of an account (agent replies, HTTP API requests, pairing codes and
//! `/config` answers, `imsg-bridge send`) goes through its [`Sender`]: stage the files (uploaded
//! over the account's connection, or read in place by a local imsg), build the requests, send them
//! in order, remember each in the echo cache, and remove the staged uploads once Messages has had
//! the grace period to read them (docs/attachments.md, docs/channel.md "Sending").
//!
//! No task outlives the sender: removals wait in it with their due time, and the account's loop
//! runs the due ones. When a session ends, everything still staged is removed before the
//! connection closes; what cannot be is recorded ([`super::leftovers`]) and removed at the next start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{SendError, Shaping, Target, chunked_params, leftovers, reply_params, send_params};
use crate::echo::{self, EchoCache};
use crate::imsg::{ImsgClient, SendParams, SendResult};
use crate::media::roots::{Caller, OutboundRoots};
use crate::media::upload::{self, Uploaded};
use crate::media::{Files, RemoteFiles};

/// imsg's `send` may wait on Messages: longer than the probe timeout.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long removing the staged uploads may hold up the end of a session (or of `imsg-bridge send`).
const REMOVE_AT_END: Duration = Duration::from_secs(5);
/// How long due removals wait when the connection is gone but the session has not ended yet.
const CLOSED_RETRY: Duration = Duration::from_secs(1);
/// `reply_to` as upstream accepts it: at most this many characters.
const REPLY_TO_MAX_CHARS: usize = 256;

/// How the text of a send is shaped into requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Written by the agent: cleaned of scaffolding, prefixed with `responsePrefix`, chunked.
    AgentReply,
    /// Sent as asked (the HTTP API, `imsg-bridge send`): chunked.
    Chunked,
    /// Written by the bridge itself (a pairing code, a `/config` answer): one request as it is.
    Whole,
}

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub to: Target,
    pub text: String,
    /// Files on this machine; the text goes with the first one.
    pub media: Vec<PathBuf>,
    pub shape: Shape,
    /// The guid of the message this one answers (cleaned before it is sent).
    pub reply_to: Option<String>,
    /// Who named the files: agents and the API send only from under the outbound media roots.
    pub origin: Caller,
}

impl Request {
    /// A reply written by the agent.
    pub fn agent_reply(to: Target, text: String, media: Vec<PathBuf>) -> Self {
        Self {
            to,
            text,
            media,
            shape: Shape::AgentReply,
            reply_to: None,
            origin: Caller::Agent,
        }
    }

    /// A text the bridge writes itself.
    pub fn bridge(to: Target, text: &str) -> Self {
        Self {
            to,
            text: text.to_string(),
            media: Vec::new(),
            shape: Shape::Whole,
            reply_to: None,
            origin: Caller::Operator,
        }
    }
}

/// The connection a send goes over.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub imsg: &'a ImsgClient,
    pub files: &'a Files,
}

/// One request imsg answered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub params: SendParams,
    pub result: SendResult,
}

/// What an account's sender needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub account: String,
    pub shaping: Shaping,
    /// `responsePrefix`, resolved, for agent replies.
    pub response_prefix: Option<String>,
    /// `mediaMaxMb` in bytes.
    pub max_bytes: u64,
    /// How long uploaded files stay on the Mac after their send (`bridge.media.outboundGraceMs`).
    pub grace: Duration,
    /// Where uploads that could not be removed are recorded.
    pub state_dir: PathBuf,
    /// Which files may be sent, by whom (docs/security.md, "Outbound media roots").
    pub roots: OutboundRoots,
}

/// An upload waiting for its removal.
#[derive(Debug)]
struct Staged {
    uploaded: Uploaded,
    due: Instant,
}

/// The sender of one account; it lives as long as the account (across reconnects).
#[derive(Debug)]
pub struct Sender {
    settings: Settings,
    /// The echo cache's clock: milliseconds since this instant.
    epoch: Instant,
    staged: Vec<Staged>,
}

impl Sender {
    /// `epoch` is the clock the echo cache is read with (the inbound policy's).
    pub fn new(settings: Settings, epoch: Instant) -> Self {
        Self {
            settings,
            epoch,
            staged: Vec::new(),
        }
    }

    /// The requests of `request` with its files at `paths` (where imsg will read them).
    pub fn plan(&self, request: &Request, paths: &[String]) -> Result<Vec<SendParams>, SendError> {
        let (to, text, shaping) = (&request.to, request.text.as_str(), &self.settings.shaping);
        let mut params = match request.shape {
            Shape::AgentReply => {
                let prefix = self.settings.response_prefix.as_deref();
                reply_params(to, text, paths, shaping, prefix)
            }
            Shape::Chunked => chunked_params(to, text, paths, shaping),
            Shape::Whole => send_params(to, text, paths, shaping.service, &shaping.region),
        }?;
        let reply_to = request
            .reply_to
            .as_deref()
            .map(sanitize_reply_to)
            .filter(|r| !r.is_empty());
        for p in &mut params {
            p.reply_to.clone_from(&reply_to);
        }
        Ok(params)
    }

    /// Send `request` over `link` and report the message ids imsg gave, one per request. Each sent
    /// request is remembered in `echo` (when given) and shown to `on_sent`. A failure stops the
    /// send and is never retried (docs/agents.md): what went out before it stays sent. Uploads are
    /// removed after the grace period whatever happened.
    pub async fn send(
        &mut self,
        request: &Request,
        link: Link<'_>,
        echo: Option<&mut EchoCache>,
        on_sent: impl FnMut(&Sent),
    ) -> Result<Vec<String>, SendError> {
        let mut uploads = Vec::new();
        let result = self
            .stage_and_send(request, link, echo, on_sent, &mut uploads)
            .await;
        // Messages may still be reading the files when `send` returns.
        let due = Instant::now() + self.settings.grace;
        self.staged
            .extend(uploads.into_iter().map(|uploaded| Staged { uploaded, due }));
        result
    }

    async fn stage_and_send(
        &self,
        request: &Request,
        link: Link<'_>,
        mut echo: Option<&mut EchoCache>,
        mut on_sent: impl FnMut(&Sent),
        uploads: &mut Vec<Uploaded>,
    ) -> Result<Vec<String>, SendError> {
        let media = checked(&self.settings.roots, &request.media, request.origin)?;
        let paths = stage(&media, link.files, self.settings.max_bytes, uploads).await?;
        let requests = self.plan(request, &paths)?;
        let scope = echo::scope(&self.settings.account, &request.to.to_string());
        let mut ids = Vec::with_capacity(requests.len());
        for params in requests {
            let result = link.imsg.send(&params, SEND_TIMEOUT).await?;
            let id = result.message_id();
            if let Some(cache) = echo.as_deref_mut() {
                cache.remember(&scope, params.text.as_deref(), Some(&id), self.now_ms());
            }
            on_sent(&Sent { params, result });
            ids.push(id);
        }
        Ok(ids)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the next staged upload is due for removal.
    pub fn next_removal(&self) -> Option<Instant> {
        self.staged.iter().map(|s| s.due).min()
    }

    /// Remove the staged uploads whose grace period is over; the account's loop calls this.
    pub async fn remove_due(&mut self, files: &Files) {
        let Files::Remote(remote) = files else {
            return;
        };
        let now = Instant::now();
        // A dead connection removes nothing: the session is ending, and its end records them. Until
        // then they wait a little, so the loop does not spin on them.
        if remote.link().is_closed() {
            for staged in self.staged.iter_mut().filter(|s| s.due <= now) {
                staged.due = now + CLOSED_RETRY;
            }
            return;
        }
        let (due, later) = std::mem::take(&mut self.staged)
            .into_iter()
            .partition::<Vec<_>, _>(|s| s.due <= now);
        self.staged = later;
        for staged in due {
            upload::remove(remote, &staged.uploaded).await;
        }
    }

    /// Remove every staged upload now, due or not: the connection is about to close. Bounded by a
    /// short timeout; what is left is recorded for the account's next start.
    pub async fn remove_all(&mut self, files: &Files) {
        let staged: Vec<Uploaded> = self.staged.drain(..).map(|s| s.uploaded).collect();
        if staged.is_empty() {
            return;
        }
        let left = remove_within(files, staged, REMOVE_AT_END).await;
        if left.is_empty() {
            return;
        }
        let record = self.leftovers_path();
        match leftovers::add(&record, &left) {
            Ok(()) => warn!(
                account = %self.settings.account,
                "{} uploaded file(s) could not be removed from the Mac before the connection closed; \
                 recorded in {} for the next start", left.len(), record.display()
            ),
            Err(err) => {
                warn!(account = %self.settings.account, "{} uploaded file(s) stay on the Mac: {err}", left.len())
            }
        }
    }

    /// `imsg-bridge send`: wait out the grace period of the last upload, then remove them all.
    pub async fn remove_after_grace(&mut self, files: &Files) {
        let Some(last) = self.staged.iter().map(|s| s.due).max() else {
            return;
        };
        info!(
            "removing {} uploaded file(s) from the Mac in {:.1} s",
            self.staged.len(),
            last.saturating_duration_since(Instant::now()).as_secs_f64()
        );
        tokio::time::sleep_until(last.into()).await;
        self.remove_all(files).await;
    }

    /// Remove what an earlier run recorded as left on the Mac; called as a session starts.
    pub async fn remove_leftovers(&self, files: &Files) {
        if !matches!(files, Files::Remote(_)) {
            return;
        }
        let record = self.leftovers_path();
        let recorded = match leftovers::load(&record) {
            Ok(recorded) if recorded.is_empty() => return,
            Ok(recorded) => recorded,
            Err(err) => {
                warn!(account = %self.settings.account, "{err}");
                return;
            }
        };
        info!(account = %self.settings.account, "removing {} uploaded file(s) an earlier run left on the Mac", recorded.len());
        let left = remove_within(files, recorded, REMOVE_AT_END).await;
        if let Err(err) = leftovers::store(&record, &left) {
            warn!(account = %self.settings.account, "{err}");
        }
    }

    fn leftovers_path(&self) -> PathBuf {
        leftovers::path(&self.settings.state_dir, &self.settings.account)
    }
}

/// The real path of each file `caller` may send; one refusal refuses the whole send, before anything
/// is uploaded. The real path is what is read: a link swapped after the check changes nothing.
fn checked(roots: &OutboundRoots, media: &[PathBuf], caller: Caller) -> Result<Vec<PathBuf>, SendError> {
    media
        .iter()
        .map(|file| {
            roots
                .check(file, caller)
                .map_err(|err| SendError::from_roots(caller, err))
        })
        .collect()
}

/// Where imsg reads each file: uploaded into the Mac's staging folder (recorded in `uploads` at
/// once, so a later failure still removes it), or in place when imsg runs here.
async fn stage(
    media: &[PathBuf],
    files: &Files,
    max_bytes: u64,
    uploads: &mut Vec<Uploaded>,
) -> Result<Vec<String>, SendError> {
    let mut paths = Vec::with_capacity(media.len());
    for file in media {
        let path = match files {
            Files::Local => local_path(file),
            Files::Remote(remote) => {
                let uploaded = upload_one(remote, file, max_bytes).await?;
                let path = uploaded.remote_path.clone();
                uploads.push(uploaded);
                path
            }
        };
        paths.push(path);
    }
    Ok(paths)
}

async fn upload_one(remote: &RemoteFiles, file: &Path, max_bytes: u64) -> Result<Uploaded, SendError> {
    let uploaded = upload::upload(remote, file, max_bytes)
        .await
        .map_err(|source| SendError::Upload {
            path: file.to_path_buf(),
            source,
        })?;
    info!(file = %file.display(), remote = %uploaded.remote_path, bytes = uploaded.bytes, "uploaded");
    Ok(uploaded)
}

/// A local imsg reads the file where it is; its real path does not depend on imsg's working
/// directory. A path that cannot be resolved goes as given, and imsg's answer names the problem.
fn local_path(file: &Path) -> String {
    std::fs::canonicalize(file)
        .unwrap_or_else(|_| file.to_path_buf())
        .display()
        .to_string()
}

/// Remove `staged` within `limit`; returns what was not removed (the connection is gone, or time
/// ran out).
async fn remove_within(files: &Files, staged: Vec<Uploaded>, limit: Duration) -> Vec<Uploaded> {
    let Files::Remote(remote) = files else {
        return staged;
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut left = Vec::new();
    for uploaded in staged {
        let removed = !remote.link().is_closed()
            && tokio::time::timeout_at(deadline, upload::remove(remote, &uploaded))
                .await
                .is_ok()
            && !remote.link().is_closed();
        if !removed {
            left.push(uploaded);
        }
    }
    left
}

/// Check the files of `imsg-bridge send` before anything is connected: none from a place never sent
/// from (`roots`), each a regular file of at most `max_bytes` (`mediaMaxMb`, given as `limit_mb` for
/// the message).
pub fn check_files(
    files: &[PathBuf],
    roots: &OutboundRoots,
    max_bytes: u64,
    limit_mb: u64,
) -> Result<(), SendError> {
    checked(roots, files, Caller::Operator)?;
    for file in files {
        let meta = std::fs::metadata(file).map_err(|e| SendError::Unreadable {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        if !meta.is_file() {
            return Err(SendError::NotAFile { path: file.clone() });
        }
        if meta.len() > max_bytes {
            return Err(SendError::TooLarge {
                path: file.clone(),
                size: meta.len(),
                limit_mb,
            });
        }
    }
    Ok(())
}

/// `replyToId` as upstream sanitises it: control characters and brackets removed, at most 256 chars.
fn sanitize_reply_to(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control() && *c != '[' && *c != ']')
        .collect();
    cleaned.trim().chars().take(REPLY_TO_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{ChunkMode, Service};
    use crate::outbound::parse;

    fn sender(prefix: Option<&str>) -> Sender {
        let settings = Settings {
            account: "default".into(),
            shaping: Shaping {
                service: Service::Auto,
                region: "US".into(),
                chunk_limit: 5,
                chunk_mode: ChunkMode::Length,
            },
            response_prefix: prefix.map(str::to_string),
            max_bytes: 1024,
            grace: Duration::from_secs(1),
            state_dir: PathBuf::from("/nonexistent"),
            roots: OutboundRoots::default(),
        };
        Sender::new(settings, Instant::now())
    }

    fn request(shape: Shape, text: &str, reply_to: Option<&str>) -> Request {
        Request {
            to: parse("chat_id:7").unwrap(),
            text: text.into(),
            media: Vec::new(),
            shape,
            reply_to: reply_to.map(str::to_string),
            origin: Caller::Api,
        }
    }

    fn texts(params: &[SendParams]) -> Vec<&str> {
        params.iter().filter_map(|p| p.text.as_deref()).collect()
    }

    #[test]
    fn each_shape_turns_text_into_its_requests() {
        let sender = sender(Some("[Ada]"));
        let cases: &[(Shape, &str, &[&str])] = &[
            (Shape::Chunked, "hello world", &["hello", "world"]),
            (Shape::AgentReply, "<think>x</think>hi", &["[Ada]", "hi"]),
            (Shape::Whole, "hello world", &["hello world"]),
        ];
        for (shape, text, want) in cases {
            let got = sender.plan(&request(*shape, text, None), &[]).unwrap();
            assert_eq!(texts(&got), *want, "{shape:?}");
        }
        let got = sender
            .plan(&request(Shape::Chunked, "hello world", None), &["/f.jpg".into()])
            .unwrap();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            json!([{"chat_id": 7, "text": "hello world", "file": "/f.jpg", "service": "auto", "region": "US"}])
        );
    }

    #[test]
    fn nothing_to_send_is_an_error_for_every_shape() {
        let sender = sender(None);
        for shape in [Shape::AgentReply, Shape::Chunked, Shape::Whole] {
            let err = sender.plan(&request(shape, " ", None), &[]).unwrap_err();
            assert!(matches!(err, SendError::Empty), "{shape:?}: {err}");
        }
        let err = sender
            .plan(
                &request(Shape::AgentReply, "<thinking>only</thinking>", None),
                &[],
            )
            .unwrap_err();
        assert!(matches!(err, SendError::Empty), "{err}");
    }

    #[test]
    fn reply_to_is_cleaned_and_goes_with_every_request() {
        let long = "g".repeat(300);
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (Some(" [p:0/GUID-1]\n"), Some("p:0/GUID-1")),
            (Some("[]\t"), None),
            (Some(&long), Some(&long[..REPLY_TO_MAX_CHARS])),
        ];
        let sender = sender(None);
        for (raw, want) in cases {
            let got = sender
                .plan(&request(Shape::Chunked, "hello world", *raw), &[])
                .unwrap();
            assert_eq!(got.len(), 2);
            assert!(got.iter().all(|p| p.reply_to.as_deref() == *want), "{raw:?}");
        }
    }

    #[test]
    fn files_are_checked_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small.jpg");
        std::fs::write(&small, [0u8; 10]).unwrap();
        let big = dir.path().join("big.jpg");
        std::fs::write(&big, [0u8; 2000]).unwrap();
        let missing = dir.path().join("missing.jpg");
        let cases: Vec<(Vec<PathBuf>, Option<String>)> = vec![
            (vec![], None),
            (vec![small.clone()], None),
            (
                vec![small.clone(), big.clone()],
                Some(format!("{} is 2000 bytes, over mediaMaxMb (1 MB)", big.display())),
            ),
            (
                vec![dir.path().to_path_buf()],
                Some(format!("{} is not a regular file", dir.path().display())),
            ),
            (
                vec![missing.clone()],
                Some(format!("cannot read {}: ", missing.display())),
            ),
        ];
        for (files, want) in cases {
            let got = check_files(&files, &OutboundRoots::default(), 1024, 1)
                .err()
                .map(|e| e.to_string());
            match (got, want) {
                (None, None) => {}
                (Some(got), Some(want)) => assert!(got.starts_with(&want), "{got} vs {want}"),
                (got, want) => panic!("{files:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn one_file_outside_the_roots_refuses_the_whole_send_and_the_rest_go_by_their_real_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("outbox");
        std::fs::create_dir_all(&root).unwrap();
        let inside = root.join("a.jpg");
        let outside = dir.path().join("b.jpg");
        std::fs::write(&inside, b"x").unwrap();
        std::fs::write(&outside, b"y").unwrap();
        let roots = OutboundRoots::new(vec![root.clone()], &dir.path().join("state"), None, None);
        let real = std::fs::canonicalize(&inside).unwrap();
        let dotted = root.join(".").join("a.jpg");
        assert_eq!(checked(&roots, &[dotted], Caller::Agent).unwrap(), vec![real]);
        let both = [inside, outside.clone()];
        let err = checked(&roots, &both, Caller::Agent).unwrap_err();
        assert_eq!(
            err.media_refusal(),
            Some((Caller::Agent, "outside_roots")),
            "{err}"
        );
        assert_eq!(checked(&roots, &both, Caller::Operator).unwrap().len(), 2);
    }

    #[test]
    fn a_local_file_goes_by_its_real_path_and_an_unknown_one_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.jpg");
        std::fs::write(&file, b"x").unwrap();
        let real = std::fs::canonicalize(&file).unwrap();
        let dotted = dir.path().join(".").join("a.jpg");
        assert_eq!(local_path(&dotted), real.display().to_string());
        assert_eq!(local_path(Path::new("/no/such/file")), "/no/such/file");
    }

    #[tokio::test]
    async fn a_local_account_stages_nothing_to_remove() {
        let mut sender = sender(None);
        let mut uploads = Vec::new();
        let paths = stage(&[PathBuf::from("/no/such/file")], &Files::Local, 10, &mut uploads)
            .await
            .unwrap();
        assert_eq!(paths, vec!["/no/such/file".to_string()]);
        assert!(uploads.is_empty());
        assert_eq!(sender.next_removal(), None);
        sender.remove_all(&Files::Local).await;
        sender.remove_after_grace(&Files::Local).await;
        sender.remove_leftovers(&Files::Local).await;
    }
}

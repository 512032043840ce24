//! `imsg-bridge demo [--keep-running]`: the whole product on a simulated Mac, with nothing
//! installed. An embedded SSH server plays the Mac (imsg-sim behind exec, SFTP over its folder),
//! the gateway reaches it over the native SSH path, a built-in echo agent answers, and a scripted
//! conversation shows pairing, replies, group gating and a photo pulled over SFTP.

use std::collections::VecDeque;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::demo::DemoServer;
use crate::envelope::{ChatType, Envelope};
use crate::gateway::fleet::{self, FleetOptions};
use crate::gateway::status::{AccountState, StatusBoard};
use crate::sim::db::{InjectSpec, inject};
use crate::sink::Sink;
use crate::sink::reply::{AgentReply, Outboxes, RouteError};
use crate::util::escape::escape_controls;

const OWNER: &str = "+14155550100";
const FRIEND: &str = "jane@example.com";
const STRANGER: &str = "+14155550199";
/// Each step of the script gets this long; the demo normally takes a few seconds in all.
const STEP: Duration = Duration::from_secs(30);
/// How long the gateway may take to stop after the script or a signal: the bound for Ctrl-C is
/// 2 s, and a clean stop takes milliseconds (unsubscribe, close the exec channel, disconnect).
const SHUTDOWN: Duration = Duration::from_millis(1500);
/// How often the kept demo looks for the bot's new rows in chat.db.
const POLL: Duration = Duration::from_millis(100);
/// The sink's envelope channel: the script reads it, and the kept demo drains it as envelopes come.
const ENVELOPE_QUEUE: usize = 64;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stay up after the script (inject more with `imsg-sim inject --db <printed path>`); Ctrl-C stops
    #[arg(long)]
    keep_running: bool,
}

/// The readable timeline on stdout.
struct Timeline {
    started: Instant,
}

impl Timeline {
    fn say(&self, line: &str) {
        println!("[{:>6.2}s] {line}", self.started.elapsed().as_secs_f64());
    }
}

/// SIGINT and SIGTERM, caught from the very start so that either stops the demo cleanly at any
/// point: without a handler SIGTERM killed it outright, and tokio's `ctrl_c()`, installed only after
/// the script, kept a later Ctrl-C from killing a demo whose shutdown hung.
struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// How the demo ended.
enum Ended {
    /// The script played (and, kept running, was stopped by a signal afterwards).
    Played,
    /// A signal stopped the script half-way: exit 128 + the signal's number, as a shell reports it.
    Interrupted(&'static str),
}

pub async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let mut stop = StopSignals::install()?;
    let t = Timeline {
        started: Instant::now(),
    };
    let dir = std::env::temp_dir().join(format!("imsg-bridge-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let result = run_script(&dir, &t, args.keep_running, &mut stop).await;
    if !args.keep_running {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_script(
    dir: &Path,
    t: &Timeline,
    keep_running: bool,
    stop: &mut StopSignals,
) -> anyhow::Result<ExitCode> {
    let db = dir.join("chat.db");
    crate::sim::db::init(&db, false)?;
    std::fs::create_dir_all(dir.join("Attachments"))?;
    let server = DemoServer::start(dir, &db).await?;
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line()))?;
    t.say(&format!(
        "a simulated Mac is up: chat.db and Attachments/ in {}, SSH on 127.0.0.1:{} (host key pinned)",
        dir.display(),
        server.port
    ));
    let config_path = dir.join("demo.json5");
    std::fs::write(&config_path, demo_config(dir, &server, &known_hosts, &db))?;
    let config = crate::config::load(Some(&config_path))?;

    // The gateway is the library's fleet, as `run` runs it, with the echo agent as its sink.
    let cancel = CancellationToken::new();
    let (envelopes_tx, mut envelopes) = mpsc::channel::<Envelope>(ENVELOPE_QUEUE);
    let options = FleetOptions {
        sink: Some(Sink::Channel(envelopes_tx)),
        ..FleetOptions::default()
    };
    let script = Script {
        t,
        dir,
        db: &db,
        state_dir: &config.bridge.state_dir,
        status: options.status.clone(),
        outboxes: options.outboxes.clone(),
    };
    let fleet = fleet::run(&config, options, cancel.clone());
    tokio::pin!(fleet);
    let ended = tokio::select! {
        ended = script.run(&mut envelopes, keep_running, stop) => ended,
        end = &mut fleet => Err(anyhow::anyhow!("the gateway stopped before the script ended: {end:?}")),
    };
    cancel.cancel();
    // The envelope channel stays open until the gateway is down: an envelope in hand is taken, not
    // failed with "stopped before the agent took the envelope".
    if tokio::time::timeout(SHUTDOWN, &mut fleet).await.is_err() {
        tracing::warn!(
            "the gateway did not stop within {} ms; leaving it",
            SHUTDOWN.as_millis()
        );
    }
    drop(envelopes);
    drop(server);
    match ended? {
        Ended::Played => Ok(ExitCode::SUCCESS),
        Ended::Interrupted(name) => Ok(ExitCode::from(if name == "SIGINT" { 130 } else { 143 })),
    }
}

/// The scripted conversation against the running gateway.
struct Script<'a> {
    t: &'a Timeline,
    dir: &'a Path,
    db: &'a Path,
    state_dir: &'a Path,
    status: Arc<StatusBoard>,
    outboxes: Arc<Outboxes>,
}

impl Script<'_> {
    /// The script, then (kept running) the injected conversation, until the end or a signal.
    async fn run(
        &self,
        envelopes: &mut mpsc::Receiver<Envelope>,
        keep_running: bool,
        stop: &mut StopSignals,
    ) -> anyhow::Result<Ended> {
        tokio::select! {
            played = self.play(envelopes) => played?,
            name = stop.next() => {
                self.t.say(&format!("{name}: stopping before the script ended"));
                return Ok(Ended::Interrupted(name));
            }
        }
        self.t.say(
            "done: pairing, reply, held group history and an SFTP-pulled photo, all over one SSH connection",
        );
        if keep_running {
            println!();
            println!("still running. Inject with:");
            println!(
                "  imsg-sim inject --db {} --from {OWNER} --text \"hi\"",
                self.db.display()
            );
            println!("Ctrl-C stops.");
            let name = self.keep_running(envelopes, stop).await?;
            self.t.say(&format!("{name}: stopping"));
        }
        Ok(Ended::Played)
    }

    /// Answer whatever is injected, showing each message and the reply as the simulated Messages
    /// stored it, until a signal. The envelope channel is drained as envelopes come: left unread, it
    /// filled up after 64 envelopes and the gateway (and its cursor) stopped there.
    async fn keep_running(
        &self,
        envelopes: &mut mpsc::Receiver<Envelope>,
        stop: &mut StopSignals,
    ) -> anyhow::Result<&'static str> {
        let mut sent = SentLog::from_now(self.db)?;
        let mut replies = VecDeque::new();
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                name = stop.next() => return Ok(name),
                envelope = envelopes.recv() => {
                    let envelope = envelope.context("the gateway stopped taking envelopes")?;
                    self.t.say(&inbound_line(&envelope));
                    replies.push_back(echo_reply(&self.outboxes, &envelope));
                    route_waiting(&self.outboxes, &mut replies);
                }
                _ = poll.tick() => {
                    route_waiting(&self.outboxes, &mut replies);
                    for line in sent.new_lines()? {
                        self.t.say(&line);
                    }
                }
            }
        }
    }

    async fn play(&self, envelopes: &mut mpsc::Receiver<Envelope>) -> anyhow::Result<()> {
        let t = self.t;
        wait_for(STEP, "the gateway to connect", || {
            self.status
                .get("default")
                .is_some_and(|s| s.state == AccountState::Connected)
        })
        .await?;
        let fingerprint = self
            .status
            .get("default")
            .and_then(|s| s.host_key)
            .unwrap_or_default();
        t.say(&format!(
            "imsg-bridge connected over native SSH (host key {fingerprint})"
        ));
        let stranger_chat = self.pairing().await?;
        let mut delivered = vec![self.reply(envelopes, stranger_chat).await?];
        delivered.push(self.group(envelopes).await?);
        let (photo, matches) = self.photo(envelopes).await?;
        delivered.push(photo);
        println!();
        println!("envelopes handed to the agent:");
        for envelope in &delivered {
            println!("{}", serde_json::to_string(envelope)?);
        }
        if !matches {
            bail!("the staged photo's sha256 differs from the source");
        }
        Ok(())
    }

    /// 1. A stranger writes: a pairing code, no envelope; the owner approves it. Returns the
    ///    stranger's chat.
    async fn pairing(&self) -> anyhow::Result<i64> {
        let t = self.t;
        let stranger_chat = dm(self.db, STRANGER, "hi, who is this?", None)?;
        t.say(&format!("{STRANGER} → bot: hi, who is this?"));
        let reply = wait_sent(self.db, stranger_chat, 1).await?;
        let code = reply
            .lines()
            .skip_while(|l| *l != "Pairing code:")
            .nth(2)
            .unwrap_or_default()
            .trim()
            .to_string();
        t.say(&format!(
            "bot → {STRANGER}: pairing code {code} (the stranger is not let in)"
        ));
        let store = crate::pairing::PairingStore::new(self.state_dir);
        let approved = store.approve(&code, None, chrono::Utc::now())?;
        t.say(&format!(
            "owner runs `imsg-bridge pairing approve {code}`: Approved imessage sender {}.",
            approved.id
        ));
        Ok(stranger_chat)
    }

    /// 2. Now the stranger is let in; the echo agent answers.
    async fn reply(
        &self,
        envelopes: &mut mpsc::Receiver<Envelope>,
        stranger_chat: i64,
    ) -> anyhow::Result<Envelope> {
        let t = self.t;
        dm(self.db, STRANGER, "hello again", None)?;
        t.say(&format!("{STRANGER} → bot: hello again"));
        let envelope = next_envelope(envelopes).await?;
        t.say(&format!("envelope → agent: {}", envelope.body));
        echo(&self.outboxes, &envelope);
        let reply = wait_sent(self.db, stranger_chat, 2).await?;
        t.say(&format!("bot → {STRANGER}: {reply}"));
        Ok(envelope)
    }

    /// 3. A group: an unmentioned message is held, the mention carries it as history.
    async fn group(&self, envelopes: &mut mpsc::Receiver<Envelope>) -> anyhow::Result<Envelope> {
        let t = self.t;
        group(self.db, FRIEND, "dinner at 7?")?;
        t.say(&format!("{FRIEND} → Crew: dinner at 7?   (no mention: held)"));
        group(self.db, OWNER, "@bot are you in?")?;
        t.say(&format!("{OWNER} → Crew: @bot are you in?"));
        let envelope = next_envelope(envelopes).await?;
        let held: Vec<String> = envelope
            .history
            .iter()
            .map(|h| format!("{}: {}", h.sender, h.body))
            .collect();
        t.say(&format!(
            "envelope → agent (group, held history: {})",
            held.join(" | ")
        ));
        echo(&self.outboxes, &envelope);
        Ok(envelope)
    }

    /// 4. A photo, pulled over SFTP before the envelope leaves. Also returns whether the staged
    ///    copy's sha256 matches the source's.
    async fn photo(&self, envelopes: &mut mpsc::Receiver<Envelope>) -> anyhow::Result<(Envelope, bool)> {
        let photo = self.dir.join("sunset.jpg");
        std::fs::write(&photo, demo_photo())?;
        let source_sha = hex(&Sha256::digest(std::fs::read(&photo)?));
        dm(self.db, OWNER, "look at this", Some(&photo))?;
        self.t.say(&format!(
            "{OWNER} → bot: look at this [sunset.jpg, sha256 {source_sha}]"
        ));
        let envelope = next_envelope(envelopes).await?;
        let media = envelope
            .media
            .first()
            .context("the photo envelope has no media")?;
        let matches = media.sha256.as_deref() == Some(source_sha.as_str());
        self.t.say(&format!(
            "envelope → agent with media: {} {} bytes, staged at {}, sha256 {} ({})",
            media.status.as_str(),
            media.size.unwrap_or(0),
            media.path.as_deref().unwrap_or("-"),
            media.sha256.as_deref().unwrap_or("-"),
            if matches {
                "matches the source"
            } else {
                "DOES NOT MATCH"
            }
        ));
        echo(&self.outboxes, &envelope);
        Ok((envelope, matches))
    }
}

fn demo_config(dir: &Path, server: &DemoServer, known_hosts: &Path, db: &Path) -> String {
    format!(
        "// written by `imsg-bridge demo`\n{{ channels: {{ imessage: {{
  ssh: {{ host: \"127.0.0.1\", port: {port}, user: {user:?}, identityFile: {key:?}, knownHostsFile: {kh:?},
         remoteCliPath: \"/opt/homebrew/bin/imsg\", useAgent: false }},
  dbPath: {db:?}, includeAttachments: true, remoteAttachmentRoots: [{att:?}],
  dmPolicy: \"pairing\", allowFrom: [\"{OWNER}\"],
  groupPolicy: \"allowlist\", groupAllowFrom: [\"{OWNER}\", \"{FRIEND}\"] }} }},
  messages: {{ groupChat: {{ mentionPatterns: [\"@bot\\\\b\"] }} }},
  bridge: {{ stateDir: {state:?}, media: {{ outboundGraceMs: 500 }} }} }}\n",
        port = server.port,
        user = server.user,
        key = server.client_key_path.display().to_string(),
        kh = known_hosts.display().to_string(),
        db = db.display().to_string(),
        att = dir.join("Attachments").display().to_string(),
        state = dir.join("state").display().to_string(),
    )
}

/// The built-in agent: answers every envelope with "echo: <text>".
fn echo(outboxes: &Outboxes, envelope: &Envelope) {
    if let Err(err) = outboxes.route(echo_reply(outboxes, envelope)) {
        tracing::warn!("demo agent: {err}");
    }
}

/// The echo agent's answer to `envelope`, addressable once the envelope is remembered.
fn echo_reply(outboxes: &Outboxes, envelope: &Envelope) -> AgentReply {
    outboxes.remember(&envelope.id, &envelope.account, &envelope.to);
    let text = if envelope.text.trim().is_empty() {
        "echo: (a photo, thanks)".to_string()
    } else {
        format!("echo: {}", envelope.text)
    };
    AgentReply {
        envelope_id: Some(envelope.id.clone()),
        text: Some(text),
        ..AgentReply::default()
    }
}

/// Queue the waiting replies in order. A full outbox keeps the rest for the next try rather than
/// waiting: the account empties its outbox only between batches, and a batch may be waiting on us.
fn route_waiting(outboxes: &Outboxes, replies: &mut VecDeque<AgentReply>) {
    while let Some(reply) = replies.front() {
        match outboxes.route(reply.clone()) {
            Err(RouteError::Full(_)) => return,
            Err(err) => tracing::warn!("demo agent: {err}"),
            Ok(()) => {}
        }
        replies.pop_front();
    }
}

/// `+1415… → bot: text` for a direct message, `+1415… → Crew: text` in a group.
fn inbound_line(envelope: &Envelope) -> String {
    let to = match envelope.chat_type {
        ChatType::Direct => "bot",
        ChatType::Group if !envelope.chat.name.is_empty() => &envelope.chat.name,
        ChatType::Group => &envelope.chat.identifier,
    };
    let media = match envelope.media.len() {
        0 => String::new(),
        n => format!(" [{n} attachment(s)]"),
    };
    format!(
        "{} → {}: {}{media}",
        escape_controls(&envelope.sender.handle),
        escape_controls(to),
        escape_controls(&envelope.text)
    )
}

/// The bot's rows in chat.db after a starting point: the kept demo shows a reply once the simulated
/// Messages has stored it, not when the agent queued it.
struct SentLog<'a> {
    db: &'a Path,
    after: i64,
}

impl<'a> SentLog<'a> {
    /// Starting after the newest row now in the database.
    fn from_now(db: &'a Path) -> anyhow::Result<Self> {
        let conn = read_only(db)?;
        let after = conn.query_row("SELECT IFNULL(MAX(ROWID), 0) FROM message", [], |row| row.get(0))?;
        Ok(Self { db, after })
    }

    /// `bot → <chat>: text` for each row sent since the last call, oldest first.
    fn new_lines(&mut self) -> anyhow::Result<Vec<String>> {
        let conn = read_only(self.db)?;
        let mut stmt = conn.prepare(
            "SELECT m.ROWID, IFNULL(m.text, ''), IFNULL(NULLIF(c.display_name, ''), c.chat_identifier)
             FROM message m JOIN chat_message_join j ON j.message_id = m.ROWID JOIN chat c ON c.ROWID = j.chat_id
             WHERE m.is_from_me = 1 AND m.ROWID > ?1 ORDER BY m.ROWID",
        )?;
        let rows = stmt.query_map([self.after], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut lines = Vec::new();
        for row in rows {
            let (rowid, text, chat) = row?;
            self.after = rowid;
            let chat = chat.unwrap_or_default();
            lines.push(format!(
                "bot → {}: {}",
                escape_controls(&chat),
                escape_controls(&text)
            ));
        }
        Ok(lines)
    }
}

fn read_only(db: &Path) -> rusqlite::Result<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn dm(db: &Path, from: &str, text: &str, file: Option<&Path>) -> anyhow::Result<i64> {
    let spec = InjectSpec {
        from: from.into(),
        text: text.into(),
        attachments: file.map(Path::to_path_buf).into_iter().collect(),
        ..InjectSpec::default()
    };
    Ok(inject(db, &spec)?.chat_id)
}

fn group(db: &Path, from: &str, text: &str) -> anyhow::Result<()> {
    let spec = InjectSpec {
        from: from.into(),
        text: text.into(),
        group: Some("Crew".into()),
        participants: vec![OWNER.into(), FRIEND.into()],
        ..InjectSpec::default()
    };
    inject(db, &spec)?;
    Ok(())
}

async fn next_envelope(rx: &mut mpsc::Receiver<Envelope>) -> anyhow::Result<Envelope> {
    match tokio::time::timeout(STEP, rx.recv()).await {
        Ok(Some(envelope)) => Ok(envelope),
        _ => bail!("no envelope within {} s", STEP.as_secs()),
    }
}

/// Wait until the chat holds `count` rows we sent; returns the newest one's text.
async fn wait_sent(db: &Path, chat_id: i64, count: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + STEP;
    loop {
        let sent = sent_rows(db, chat_id)?;
        if sent.len() >= count {
            return Ok(sent.last().cloned().unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!(
                "the bot did not answer in chat {chat_id} within {} s",
                STEP.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Our rows in a chat, oldest first, read straight from chat.db.
fn sent_rows(db: &Path, chat_id: i64) -> anyhow::Result<Vec<String>> {
    let conn = read_only(db)?;
    let mut stmt = conn.prepare(
        "SELECT m.text FROM message m JOIN chat_message_join j ON j.message_id = m.ROWID
         WHERE j.chat_id = ?1 AND m.is_from_me = 1 ORDER BY m.ROWID",
    )?;
    let rows = stmt
        .query_map([chat_id], |row| row.get::<_, Option<String>>(0))?
        .filter_map(Result::ok)
        .map(Option::unwrap_or_default)
        .collect();
    Ok(rows)
}

async fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small JPEG-looking file (a real JFIF header and pseudo-random body): enough to pull and hash.
fn demo_photo() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00];
    let mut state = 0x1234_5678_9abc_def0u64;
    while bytes.len() < 48 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    bytes
}

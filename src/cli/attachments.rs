//! `imsg-bridge attachments check|pull`: the attachment sync diagnostic (try to pull the newest
//! attachments exactly as `run` would, and say per status what to do) and a one-message pull.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::account::OpenAccount;
use crate::config::{Account, Config};
use crate::envelope::{Media, MediaStatus};
use crate::imsg::{ImsgClient, Message};
use crate::media::{Method, Stager};

#[derive(Debug, Subcommand)]
pub enum AttachmentsCommand {
    /// Pull the newest attachments as `run` would and report per status, with remedies
    Check(CheckArgs),
    /// Pull the attachments of one message (by ROWID)
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How many of the newest messages with attachments to try
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// One JSON object instead of the table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The message's ROWID (the envelope's `rowid`)
    rowid: i64,
    /// Where to put the files (default: the media cache, stateDir/media/inbound/<account>)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// One JSON object per attachment
    #[arg(long)]
    json: bool,
}

/// How many chats and messages per chat `check` looks through for attachments.
const SCAN_CHATS: u32 = 30;
const SCAN_PER_CHAT: u32 = 100;

pub async fn run(
    config: &Config,
    account: &Account,
    command: &AttachmentsCommand,
) -> anyhow::Result<ExitCode> {
    super::account::with_account(config, account, async |open: &OpenAccount| {
        let mut stager = open.runtime.media.stager(&open.runtime.id, open.files.clone());
        match command {
            AttachmentsCommand::Check(args) => check(&open.imsg, stager, args).await,
            AttachmentsCommand::Pull(args) => {
                if let Some(out) = &args.out {
                    stager.dir = out.clone();
                }
                pull(&open.imsg, stager, args).await
            }
        }
    })
    .await
}

/// The newest messages with attachments, newest first.
pub(crate) async fn recent_with_attachments(imsg: &ImsgClient, limit: usize) -> anyhow::Result<Vec<Message>> {
    let mut found = Vec::new();
    for chat in imsg.chats_list(SCAN_CHATS).await? {
        let history = imsg.history(chat.id, SCAN_PER_CHAT, true).await?;
        found.extend(history.into_iter().filter(|m| !m.attachments.is_empty()));
    }
    found.sort_by_key(|m| std::cmp::Reverse(m.id));
    found.dedup_by_key(|m| m.id);
    found.truncate(limit);
    Ok(found)
}

/// Totals of one status.
#[derive(Default)]
struct Tally {
    count: usize,
    bytes: u64,
}

async fn check(imsg: &ImsgClient, mut stager: Stager, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    // Pull into a scratch folder beside the cache, removed afterwards: a diagnostic must not fill
    // or disturb the cache.
    let scratch = stager.dir.with_file_name(format!("check-{}", std::process::id()));
    stager.dir = scratch.clone();
    // Old messages: their files are complete or gone; do not wait for them.
    stager.retries = 0;
    let result = check_into(imsg, &stager, args).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn check_into(imsg: &ImsgClient, stager: &Stager, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let method = stager.files.method().await;
    let messages = recent_with_attachments(imsg, args.limit).await?;
    let total: usize = messages.iter().map(|m| m.attachments.len()).sum();
    let progress = progress_bar(total as u64, !args.json);
    let started = Instant::now();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut failures: Vec<(i64, Media)> = Vec::new();
    for message in &messages {
        for media in stager.stage(message).await {
            let tally = tallies.entry(status_name(media.status)).or_default();
            tally.count += 1;
            if media.status == MediaStatus::Ok {
                tally.bytes += media.size.unwrap_or(0);
            } else {
                failures.push((message.id, media.clone()));
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    let ok_bytes = tallies.get("ok").map_or(0, |t| t.bytes);
    let throughput = mib_per_s(ok_bytes, elapsed);
    let failed = failures.len();
    if args.json {
        let statuses: serde_json::Map<String, serde_json::Value> = tallies
            .iter()
            .map(|(k, t)| (k.to_string(), json!({"count": t.count, "bytes": t.bytes})))
            .collect();
        let failures: Vec<_> = failures
            .iter()
            .map(|(rowid, m)| {
                json!({"rowid": rowid, "status": status_name(m.status), "remote_path": m.remote_path,
                       "reason": m.reason, "remedy": remedy(m.status, method)})
            })
            .collect();
        println!(
            "{}",
            json!({"method": method.to_string(), "messages": messages.len(), "attachments": total,
                   "statuses": statuses, "bytes": ok_bytes, "seconds": elapsed.as_secs_f64(),
                   "mib_per_s": throughput, "failures": failures})
        );
    } else {
        println!("files read with: {method}");
        println!(
            "{} attachments in the newest {} messages with attachments",
            total,
            messages.len()
        );
        println!("{:<14} {:>6} {:>12}", "status", "count", "bytes");
        for (status, tally) in &tallies {
            println!("{status:<14} {:>6} {:>12}", tally.count, tally.bytes);
        }
        println!(
            "pulled {ok_bytes} bytes in {:.2} s ({throughput:.1} MiB/s)",
            elapsed.as_secs_f64()
        );
        for (rowid, media) in &failures {
            println!(
                "{} rowid {rowid}: {} — {}",
                status_name(media.status),
                media.remote_path,
                media.reason.as_deref().unwrap_or("")
            );
        }
        let mut seen = Vec::new();
        for (_, media) in &failures {
            if !seen.contains(&media.status) {
                seen.push(media.status);
                println!(
                    "remedy ({}): {}",
                    status_name(media.status),
                    remedy(media.status, method)
                );
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn pull(imsg: &ImsgClient, stager: Stager, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let message = find_message(imsg, args.rowid).await?;
    let started = Instant::now();
    let media = stager.stage(&message).await;
    let method = stager.files.method().await;
    let mut all_ok = true;
    for m in &media {
        all_ok &= m.status == MediaStatus::Ok;
        if args.json {
            println!("{}", serde_json::to_string(m)?);
        } else {
            match m.status {
                MediaStatus::Ok => println!(
                    "ok {} ({} bytes, sha256 {})",
                    m.path.as_deref().unwrap_or(""),
                    m.size.unwrap_or(0),
                    m.sha256.as_deref().unwrap_or("")
                ),
                status => println!(
                    "{} {}: {}\n  remedy: {}",
                    status_name(status),
                    m.remote_path,
                    m.reason.as_deref().unwrap_or(""),
                    remedy(status, method)
                ),
            }
        }
    }
    if !args.json {
        println!(
            "{} attachment(s) in {:.2} s",
            media.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The message with this ROWID: `messages.after` when imsg has it, else a scan of recent chats.
async fn find_message(imsg: &ImsgClient, rowid: i64) -> anyhow::Result<Message> {
    if let Some(message) = imsg.message_at(rowid).await? {
        return Ok(message);
    }
    for chat in imsg.chats_list(SCAN_CHATS).await? {
        if let Some(m) = imsg
            .history(chat.id, SCAN_PER_CHAT, true)
            .await?
            .into_iter()
            .find(|m| m.id == rowid)
        {
            return Ok(m);
        }
    }
    Err(super::CliError::Usage(format!(
        "no message with ROWID {rowid} (see `imsg-bridge history CHAT_ID`)"
    ))
    .into())
}

fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    if !visible || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} attachments {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / (1024.0 * 1024.0) / secs
    }
}

pub fn status_name(status: MediaStatus) -> &'static str {
    status.as_str()
}

/// What to do about a failure kind.
pub fn remedy(status: MediaStatus, method: Method) -> &'static str {
    match (status, method) {
        (MediaStatus::Ok, _) => "",
        (MediaStatus::Denied, Method::Local) => {
            "give the process running imsg-bridge Full Disk Access (System Settings → Privacy & Security → Full Disk Access); it does not propagate to LaunchAgents started elsewhere"
        }
        (MediaStatus::Denied, _) => {
            "the SSH login on the Mac lacks Full Disk Access: System Settings → General → Sharing → Remote Login (i) → turn on \"Allow full disk access for remote users\" (TCC attributes it to sshd-keygen-wrapper), then reconnect"
        }
        (MediaStatus::Missing, _) => {
            "the file is not on the Mac: offloaded to iCloud (Messages in iCloud with Optimize Storage) or deleted; open the conversation on the Mac to download it"
        }
        (MediaStatus::TooLarge, _) => "raise channels.imessage.mediaMaxMb if you want files this large",
        (MediaStatus::OutsideRoots, _) => {
            "the path is outside the attachment roots: add its folder to channels.imessage.remoteAttachmentRoots (or attachmentRoots for a local imsg) if it is legitimate"
        }
        (MediaStatus::Failed, _) => "see the reason; check the connection with `imsg-bridge doctor`",
    }
}

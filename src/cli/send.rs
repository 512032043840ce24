//! `imsg-bridge send TARGET [TEXT] [--file PATH]... [--dry-run] [--json]`: send through the
//! account's transport. Files are uploaded into the Mac's owner-only staging folder over the open
//! connection and removed after `bridge.media.outboundGraceMs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::CliError;
use super::account::OpenAccount;
use crate::config::{Account, Config};
use crate::media::roots::{Caller, OutboundRoots};
use crate::outbound::sender::{self, Sent};
use crate::outbound::{self, Link, Request, SendError, Sender, Shape};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// `+14155551212`, `jane@example.com`, `sms:+1…`, `chat_id:42`, `chat_guid:…`, `chat_identifier:…`
    target: String,
    /// The message text (optional with --file)
    text: Option<String>,
    /// A file to send (repeatable); the text goes with the first one
    #[arg(long, value_name = "PATH")]
    file: Vec<PathBuf>,
    /// Print the `send` requests instead of sending (needs no reachable imsg)
    #[arg(long)]
    dry_run: bool,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

pub async fn send(config: &Config, account: &Account, args: &SendArgs) -> anyhow::Result<ExitCode> {
    let usage = |e: SendError| CliError::Usage(e.to_string());
    let target = outbound::parse(&args.target).map_err(|e| CliError::Usage(e.0))?;
    let max_bytes = account.media_max_mb.saturating_mul(1024 * 1024);
    // Refused files exit 2 before anything connects: asking again will not change the answer.
    let roots = OutboundRoots::for_operator(config);
    sender::check_files(&args.file, &roots, max_bytes, account.media_max_mb).map_err(usage)?;
    let request = Request {
        to: target,
        text: args.text.clone().unwrap_or_default(),
        media: args.file.clone(),
        shape: Shape::Chunked,
        reply_to: None,
        origin: Caller::Operator,
    };
    let mut sender = Sender::new(
        sender::Settings {
            account: account.id.clone(),
            shaping: outbound::Shaping::of(account),
            response_prefix: None,
            max_bytes,
            grace: Duration::from_millis(config.bridge.media.outbound_grace_ms),
            state_dir: config.bridge.state_dir.clone(),
            roots,
        },
        Instant::now(),
    );
    // Validate text-or-media before connecting.
    let local: Vec<String> = args.file.iter().map(|f| f.display().to_string()).collect();
    let planned = sender.plan(&request, &local).map_err(usage)?;
    if args.dry_run {
        for params in planned {
            println!("{}", json!({"method": "send", "params": params}));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let open = OpenAccount::open(config, account).await?;
    let result = async {
        let link = Link {
            imsg: &open.imsg,
            files: &open.files,
        };
        sender
            .send(&request, link, None, |sent| print_sent(sent, args.json))
            .await?;
        anyhow::Ok(())
    }
    .await;
    sender.remove_after_grace(&open.files).await;
    open.stop().await;
    result.map(|()| ExitCode::SUCCESS)
}

fn print_sent(sent: &Sent, as_json: bool) {
    if as_json {
        println!("{}", json!({"params": sent.params, "result": sent.result}));
    } else {
        let rowid = sent
            .result
            .id
            .map(|id| format!(" (rowid {id})"))
            .unwrap_or_default();
        println!("sent{rowid}");
    }
}

//! `imsg-bridge send TARGET [TEXT] [--file PATH]... [--dry-run] [--json]`: send through the
//! account's transport. Files are uploaded into the Mac's owner-only staging folder over the open
//! connection and removed after `bridge.media.outboundGraceMs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use tracing::info;

use super::CliError;
use super::account::OpenAccount;
use crate::config::{Account, Config};
use crate::media::{Files, upload};
use crate::outbound;

/// imsg's `send` may wait on Messages; longer than the probe timeout (DESIGN §4).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

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
    let target = outbound::parse(&args.target).map_err(|e| CliError::Usage(e.0))?;
    let text = args.text.clone().unwrap_or_default();
    let max_bytes = account.media_max_mb.saturating_mul(1024 * 1024);
    for file in &args.file {
        let meta = std::fs::metadata(file)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
        if !meta.is_file() {
            return Err(CliError::Usage(format!("{} is not a regular file", file.display())).into());
        }
        if meta.len() > max_bytes {
            return Err(CliError::Usage(format!(
                "{} is {} bytes, over mediaMaxMb ({} MB)",
                file.display(),
                meta.len(),
                account.media_max_mb
            ))
            .into());
        }
    }
    let local: Vec<String> = args.file.iter().map(|f| f.display().to_string()).collect();
    let shaping = outbound::Shaping {
        service: account.service,
        region: account.region.clone(),
        chunk_limit: account.text_chunk_limit,
        chunk_mode: account.chunk_mode,
    };
    // Validate text-or-media before connecting.
    let planned =
        outbound::chunked_params(&target, &text, &local, &shaping).map_err(|e| CliError::Usage(e.0))?;
    if args.dry_run {
        for params in planned {
            println!("{}", json!({"method": "send", "params": params}));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let open = OpenAccount::open(config, account).await?;
    let files = &open.files;
    let mut uploads = Vec::new();
    let result = async {
        let imsg = &open.imsg;
        let mut remote_paths = Vec::new();
        for file in &args.file {
            match files {
                // imsg runs here: it reads the file where it is.
                Files::Local => remote_paths.push(std::fs::canonicalize(file)?.display().to_string()),
                Files::Remote(remote) => {
                    let uploaded = upload::upload(remote, file, max_bytes)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot upload {}: {e}", file.display()))?;
                    info!(file = %file.display(), remote = %uploaded.remote_path, bytes = uploaded.bytes, "uploaded");
                    remote_paths.push(uploaded.remote_path.clone());
                    uploads.push(uploaded);
                }
            }
        }
        let requests = outbound::chunked_params(&target, &text, &remote_paths, &shaping)
            .map_err(|e| CliError::Usage(e.0))?;
        for params in requests {
            let sent = imsg.send(params.clone(), SEND_TIMEOUT).await?;
            if args.json {
                println!("{}", json!({"params": params, "result": sent}));
            } else {
                println!("sent{}", sent.id.map(|id| format!(" (rowid {id})")).unwrap_or_default());
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Files::Remote(remote) = files
        && !uploads.is_empty()
    {
        // Messages may still be reading the file when `send` returns.
        let grace = Duration::from_millis(config.bridge.media.outbound_grace_ms);
        info!(
            "removing {} uploaded file(s) from the Mac in {:.1} s",
            uploads.len(),
            grace.as_secs_f64()
        );
        tokio::time::sleep(grace).await;
        for uploaded in &uploads {
            upload::remove(remote, uploaded).await;
        }
    }
    open.stop().await;
    result.map(|()| ExitCode::SUCCESS)
}

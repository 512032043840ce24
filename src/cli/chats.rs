//! `imsg-bridge chats` and `imsg-bridge history`: read-only views through the account's transport.

use std::process::ExitCode;

use clap::Args;

use crate::config::{Account, Config};
use crate::imsg::ImsgClient;
use crate::rpc::ClientOptions;
use crate::transport;

#[derive(Debug, Args)]
pub struct ChatsArgs {
    /// How many chats, newest activity first
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The chat's id (see `imsg-bridge chats`)
    chat_id: i64,
    /// How many messages, newest first
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Include attachment metadata
    #[arg(long)]
    attachments: bool,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

/// Start the account's `imsg rpc` (process or SSH), run `f` against it, stop it.
async fn with_imsg<T>(
    config: &Config,
    account: &Account,
    f: impl AsyncFnOnce(&ImsgClient) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = super::runtime_of(config, account)?;
    let options = ClientOptions {
        request_timeout: runtime.probe_timeout,
        ..ClientOptions::default()
    };
    let (rpc, peer) = transport::open(&runtime.plan, &runtime.id, options, &mut None).await?;
    let result = async {
        let imsg = ImsgClient::initialize(rpc.clone(), runtime.probe_timeout).await?;
        f(&imsg).await
    }
    .await;
    peer.stop(&rpc).await;
    result
}

pub async fn chats(config: &Config, account: &Account, args: &ChatsArgs) -> anyhow::Result<ExitCode> {
    let chats = with_imsg(config, account, async |imsg: &ImsgClient| {
        Ok(imsg.chats_list(args.limit).await?)
    })
    .await?;
    for chat in chats {
        if args.json {
            println!("{}", serde_json::to_string(&chat)?);
        } else {
            let name = if chat.name.is_empty() {
                chat.contact_name.clone().unwrap_or_default()
            } else {
                chat.name.clone()
            };
            let kind = if chat.is_group { "group" } else { "direct" };
            let last = chat.last_message_at.as_deref().unwrap_or("-");
            println!("[{}] {name} ({}) {kind} last={last}", chat.id, chat.identifier);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn history(config: &Config, account: &Account, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let messages = with_imsg(config, account, async |imsg: &ImsgClient| {
        Ok(imsg.history(args.chat_id, args.limit, args.attachments).await?)
    })
    .await?;
    for message in messages {
        if args.json {
            println!("{}", serde_json::to_string(&message)?);
            continue;
        }
        let direction = if message.is_from_me { "sent" } else { "recv" };
        let who = if message.sender.is_empty() {
            "me"
        } else {
            message.sender.as_str()
        };
        println!("{} [{direction}] {who}: {}", message.created_at, message.text);
        for attachment in &message.attachments {
            println!(
                "  attachment: name={} mime={} missing={} path={}",
                attachment.transfer_name, attachment.mime_type, attachment.missing, attachment.original_path
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

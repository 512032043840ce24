//! `imsg-bridge chats` and `imsg-bridge history`: read-only views through the account's transport.

use std::process::ExitCode;

use clap::Args;

use super::account::{OpenAccount, with_account};
use crate::config::{Account, Config};

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

pub async fn chats(config: &Config, account: &Account, args: &ChatsArgs) -> anyhow::Result<ExitCode> {
    let chats = with_account(config, account, async |open: &OpenAccount| {
        Ok(open.imsg.chats_list(args.limit).await?)
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
    let messages = with_account(config, account, async |open: &OpenAccount| {
        Ok(open
            .imsg
            .history(args.chat_id, args.limit, args.attachments)
            .await?)
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

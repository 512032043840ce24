//! `imsg-bridge pairing list [--json] | pairing approve CODE [--notify]`: the operator's side of DM
//! pairing (docs/channel.md) for the selected account, over the same files as `openclaw pairing`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use clap::Subcommand;
use serde::Serialize;

use super::account::{OpenAccount, with_account};
use crate::config::{Account, Config};
use crate::outbound;
use crate::pairing::{self, PairingStore, Request};

/// imsg's `send` may wait on Messages; as long as `imsg-bridge send` allows.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// List the account's pending pairing requests (expired ones are pruned)
    List {
        /// One JSON object instead of the table
        #[arg(long)]
        json: bool,
    },
    /// Approve a pairing code: its sender may message the bot from now on
    Approve {
        /// The code the sender received (any case)
        code: String,
        /// Tell the sender they were approved, through the account's transport
        #[arg(long)]
        notify: bool,
    },
}

pub async fn run(config: &Config, account: &Account, command: &PairingCommand) -> anyhow::Result<ExitCode> {
    // The store blocks on small file reads and a short lock wait; a one-shot command has nothing else
    // to run meanwhile, so no spawn_blocking here.
    let store = PairingStore::new(&config.bridge.state_dir);
    match command {
        PairingCommand::List { json } => list(&store, account, *json),
        PairingCommand::Approve { code, notify } => {
            let approved = store.approve(code, Some(&account.id), Utc::now())?;
            println!("Approved {} sender {}.", pairing::CHANNEL, approved.id);
            if *notify {
                notify_approved(config, account, &approved.id)
                    .await
                    .with_context(|| format!("approved, but the notice to {} was not sent", approved.id))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(store: &PairingStore, account: &Account, json: bool) -> anyhow::Result<ExitCode> {
    let requests = store.list(Some(&account.id), Utc::now())?;
    print!("{}", render(&requests, json)?);
    Ok(ExitCode::SUCCESS)
}

/// `{"channel":"imessage","requests":[…]}` (as `openclaw pairing list --json` prints it).
#[derive(Serialize)]
struct Listing<'a> {
    channel: &'a str,
    requests: &'a [Request],
}

/// What `pairing list` prints: the JSON listing, the empty notice or the table.
fn render(requests: &[Request], json: bool) -> anyhow::Result<String> {
    Ok(if json {
        let listing = Listing {
            channel: pairing::CHANNEL,
            requests,
        };
        format!("{}\n", serde_json::to_string_pretty(&listing)?)
    } else if requests.is_empty() {
        format!("No pending {} pairing requests.\n", pairing::CHANNEL)
    } else {
        table(requests)
    })
}

/// Code, sender id, meta as compact JSON and the creation time, in aligned columns.
fn table(requests: &[Request]) -> String {
    let header = ["Code", "imessageSenderId", "Meta", "Requested"].map(str::to_owned);
    let rows: Vec<[String; 4]> = requests
        .iter()
        .map(|r| {
            [
                r.code.clone(),
                r.id.clone(),
                serde_json::Value::Object(r.meta.clone()).to_string(),
                r.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Send the approval notice to `id` as `imsg-bridge send` would: open, initialize, send, stop.
async fn notify_approved(config: &Config, account: &Account, id: &str) -> anyhow::Result<()> {
    let target = outbound::parse(id).map_err(|e| anyhow::anyhow!(e.0))?;
    let requests = outbound::send_params(
        &target,
        pairing::approved_text(),
        &[],
        account.service,
        &account.region,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    with_account(config, account, async |open: &OpenAccount| {
        for params in requests {
            open.imsg.send(&params, SEND_TIMEOUT).await?;
        }
        anyhow::Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::{Map, json};

    fn request(code: &str, id: &str, minute: u32) -> Request {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::with_random(dir.path(), {
            let code = code.to_owned();
            let mut next = 0;
            move || {
                let byte = code.as_bytes()[next % code.len()];
                next += 1;
                pairing::CODE_ALPHABET.iter().position(|b| *b == byte).unwrap() as u32
            }
        });
        let now = DateTime::parse_from_rfc3339(&format!("2026-05-16T15:{minute:02}:00.000Z"))
            .unwrap()
            .with_timezone(&Utc);
        let mut meta = Map::new();
        meta.insert("sender".into(), json!(id));
        store.upsert_request("default", id, meta, now).unwrap();
        store.list(None, now).unwrap().remove(0)
    }

    #[test]
    fn the_table_aligns_code_sender_meta_and_creation_time() {
        let rows = [
            request("ABCD2345", "+15551230001", 1),
            request("EFGH6789", "jane@example.com", 2),
        ];
        let expected = "\
Code      imessageSenderId  Meta                                                 Requested
ABCD2345  +15551230001      {\"accountId\":\"default\",\"sender\":\"+15551230001\"}      2026-05-16T15:01:00.000Z
EFGH6789  jane@example.com  {\"accountId\":\"default\",\"sender\":\"jane@example.com\"}  2026-05-16T15:02:00.000Z
";
        assert_eq!(table(&rows), expected);
    }

    #[test]
    fn the_json_listing_names_the_channel_and_keeps_the_file_fields() {
        let requests = [request("ABCD2345", "+15551230001", 1)];
        let text = render(&requests, true).unwrap();
        assert!(
            text.starts_with("{\n  \"channel\": \"imessage\",\n  \"requests\": ["),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"channel": "imessage", "requests": [{"id": "+15551230001", "code": "ABCD2345",
                "createdAt": "2026-05-16T15:01:00.000Z", "lastSeenAt": "2026-05-16T15:01:00.000Z",
                "meta": {"accountId": "default", "sender": "+15551230001"}}]})
        );
        assert_eq!(
            render(&[], true).unwrap(),
            "{\n  \"channel\": \"imessage\",\n  \"requests\": []\n}\n"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        assert_eq!(
            render(&[], false).unwrap(),
            "No pending imessage pairing requests.\n"
        );
    }

    fn config_in(state: &std::path::Path) -> Config {
        let text = format!("{{ bridge: {{ stateDir: {:?} }} }}", state.display().to_string());
        crate::config::from_str(&text, None).unwrap()
    }

    #[tokio::test]
    async fn approve_admits_the_sender_of_a_code_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let account = config.account("default").unwrap();
        let store = PairingStore::new(&config.bridge.state_dir);
        let code = store
            .upsert_request("default", "+15551230001", Map::new(), Utc::now())
            .unwrap()
            .code;
        let command = PairingCommand::Approve {
            code: code.to_lowercase(),
            notify: false,
        };
        let exit = run(&config, account, &command).await.unwrap();
        assert_eq!(exit, ExitCode::SUCCESS);
        assert_eq!(store.allowed("default"), ["+15551230001"]);
        let list = PairingCommand::List { json: false };
        assert_eq!(run(&config, account, &list).await.unwrap(), ExitCode::SUCCESS);
    }

    #[tokio::test]
    async fn approving_an_unknown_code_fails_with_the_reference_text() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let account = config.account("default").unwrap();
        let command = PairingCommand::Approve {
            code: "NOPE2345".into(),
            notify: true,
        };
        let err = run(&config, account, &command).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "No pending pairing request found for code: NOPE2345"
        );
        // Not a usage error: main maps it to exit code 1.
        assert!(err.downcast_ref::<super::super::CliError>().is_none());
    }
}

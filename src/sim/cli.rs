//! The `imsg-sim` command line: `init`, `inject`, `rpc`, and the `imsg` commands `chats`, `history`,
//! `send`, `group`, `status`, `send-attachment`, `send-rich` and `poll`.
//!
//! Like `imsg`, the imsg commands print their errors to stdout and exit 1, an unknown first word is
//! imsg's `Unknown subcommand` error (exit 1), and `--help` of the commands a client probes prints
//! imsg's help format (exit 0; texts in [`imsg_cli`]). The simulator's own commands (`init`,
//! `inject`, `rpc`) print errors to stderr: exit 2 for bad input, 1 for anything else. Other usage
//! errors exit 2. Every command accepts `--json`, `-v` and `--log-level`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::sim::db::{self, InjectSpec};
use crate::sim::faults::Faults;
use crate::sim::rpc::{self, Backend, ServeOptions};
use crate::sim::{Dialect, SimError};
use crate::sim::{imsg_cli, methods};
use crate::util::expand_tilde;

/// Where `imsg` finds Messages' database.
const DEFAULT_DB: &str = "~/Library/Messages/chat.db";

#[derive(Debug, Parser)]
#[command(
    name = "imsg-sim",
    version,
    about = "An imsg-compatible simulator over a SQLite file with Apple's chat.db schema",
    long_about = "An imsg-compatible simulator over a SQLite file with Apple's chat.db schema.\n\n\
                  `imsg-sim rpc` speaks the `imsg rpc` JSON-RPC protocol on stdio (strict protocol v1, or the \
                  0.9-era quirks with --baseline); `imsg-sim inject` plays Messages.app receiving a message."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The runtime flags `imsg` adds to every command.
#[derive(Debug, Args)]
struct Global {
    /// Print JSON, one object per line.
    #[arg(
        long,
        short = 'j',
        global = true,
        visible_alias = "json-output",
        alias = "jsonOutput"
    )]
    json: bool,
    /// Log more (debug level) to stderr.
    #[arg(long, short = 'v', global = true)]
    verbose: bool,
    /// Log level for stderr: error, warn, info, debug or trace.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a chat.db with Apple's schema (WAL mode), optionally seeded.
    Init(InitArgs),
    /// Write an incoming message into the database, as Messages.app would.
    Inject(InjectArgs),
    /// Serve the imsg JSON-RPC protocol on stdin/stdout until stdin closes.
    Rpc(RpcArgs),
    /// List chats, most recent first.
    Chats(ChatsArgs),
    /// Show a chat's messages, newest first.
    History(HistoryArgs),
    /// Send a message (writes the outgoing rows).
    Send(SendArgs),
    /// Show chat identity and participants for a chat id.
    Group(GroupArgs),
    /// Check availability of imsg advanced features (the simulated Mac has SIP on: none).
    Status(StatusArgs),
    /// Send a file attachment (without the bridge: through the AppleScript path, as imsg falls back).
    SendAttachment(SendAttachmentArgs),
    /// Send via the IMCore bridge: always fails here, as on a Mac with SIP on.
    SendRich(SendRichArgs),
    /// Native polls via the IMCore bridge: always fail here, as on a Mac with SIP on.
    Poll(PollArgs),
}

/// Every first word the command line knows (clap's names of [`Command`]).
const COMMANDS: &[&str] = &[
    "init",
    "inject",
    "rpc",
    "chats",
    "history",
    "send",
    "group",
    "status",
    "send-attachment",
    "send-rich",
    "poll",
    "help",
];

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Seed {
    /// One DM (+14155551212) and one group ("Family" with jane@example.com), one message each.
    Demo,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Path of the database to create.
    #[arg(long, value_name = "PATH")]
    db: String,
    /// Seed the database.
    #[arg(long, value_enum)]
    seed: Option<Seed>,
}

#[derive(Debug, Args)]
struct InjectArgs {
    /// Path of the database.
    #[arg(long, value_name = "PATH")]
    db: String,
    /// Sender handle, e.g. +14155551212 or jane@example.com.
    #[arg(long, value_name = "HANDLE")]
    from: String,
    /// Deliver into this chat (created when it has the iMessage;-;HANDLE or iMessage;+;chatNNN form).
    #[arg(long, value_name = "GUID", conflicts_with = "group")]
    chat_guid: Option<String>,
    /// Deliver into the group chat with this name (created on first use).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Other members of the group, comma separated.
    #[arg(long, value_name = "HANDLES", value_delimiter = ',', requires = "group")]
    participants: Vec<String>,
    /// Message text.
    #[arg(long)]
    text: String,
    /// A file to attach (repeatable); copied into Attachments/ beside the database.
    #[arg(long, value_name = "FILE")]
    attachment: Vec<PathBuf>,
    /// Record an absolute path as an attachment without copying it (repeatable); it may be a
    /// symlink, unreadable, outside the attachment store, or not exist yet.
    #[arg(long, value_name = "PATH")]
    attachment_ref: Vec<PathBuf>,
    /// Write N messages in one transaction, texts numbered `TEXT 1` … `TEXT N` (a backlog at once).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Use this guid for the row instead of a fresh one (for tests of hostile guids).
    #[arg(long, value_name = "GUID", conflicts_with = "count")]
    guid: Option<String>,
}

#[derive(Debug, Args)]
struct DbArg {
    /// Path of the database.
    #[arg(long, value_name = "PATH", env = "IMSG_SIM_DB", default_value = DEFAULT_DB)]
    db: String,
}

impl DbArg {
    fn path(&self) -> PathBuf {
        expand_tilde(&self.db)
    }
}

#[derive(Debug, Args)]
struct RpcArgs {
    #[command(flatten)]
    db: DbArg,
    /// Imitate the 0.9-era server: lenient framing and params, serial processing, no initialize/status.
    #[arg(long)]
    baseline: bool,
    #[command(flatten)]
    faults: Faults,
    /// Append every request line to this file (for tests and debugging clients).
    #[arg(long, value_name = "FILE", env = "IMSG_SIM_REQUEST_LOG")]
    request_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ChatsArgs {
    #[command(flatten)]
    db: DbArg,
    /// How many chats.
    #[arg(long, default_value_t = 20)]
    limit: i64,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[command(flatten)]
    db: DbArg,
    /// The chat's id (from `chats`).
    #[arg(long)]
    chat_id: i64,
    /// How many messages.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Only messages from these senders (comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    participants: Vec<String>,
    /// Only messages at or after this ISO-8601 time.
    #[arg(long)]
    start: Option<String>,
    /// Only messages before this ISO-8601 time.
    #[arg(long)]
    end: Option<String>,
    /// Show attachment details.
    #[arg(long)]
    attachments: bool,
}

#[derive(Debug, Args)]
#[group(id = "target", required = true, multiple = false, args = ["to", "chat_id", "chat_identifier", "chat_guid"])]
struct SendArgs {
    #[command(flatten)]
    db: DbArg,
    /// Recipient handle (phone number or email).
    #[arg(long)]
    to: Option<String>,
    /// Send into this chat id.
    #[arg(long)]
    chat_id: Option<i64>,
    /// Send into the chat with this identifier.
    #[arg(long)]
    chat_identifier: Option<String>,
    /// Send into the chat with this guid.
    #[arg(long)]
    chat_guid: Option<String>,
    /// Message text.
    #[arg(long)]
    text: Option<String>,
    /// A file to send.
    #[arg(long)]
    file: Option<String>,
    /// imessage, sms or auto.
    #[arg(long, default_value = "auto")]
    service: String,
    /// Region for phone number normalisation.
    #[arg(long, default_value = "US")]
    region: String,
}

#[derive(Debug, Args)]
struct GroupArgs {
    #[command(flatten)]
    db: DbArg,
    /// chat rowid from 'imsg chats'.
    #[arg(long)]
    chat_id: Option<i64>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Accepted and ignored (imsg's status reads no database).
    #[arg(long, value_name = "PATH", hide = true)]
    db: Option<String>,
}

#[derive(Debug, Args)]
struct SendAttachmentArgs {
    #[command(flatten)]
    db: DbArg,
    /// chat guid.
    #[arg(long)]
    chat: Option<String>,
    /// absolute path to file.
    #[arg(long)]
    file: Option<String>,
    /// guid of message to reply to.
    #[arg(long)]
    reply_to: Option<String>,
    /// transport to use: auto|dylib|applescript.
    #[arg(long)]
    transport: Option<String>,
    /// send as audio message.
    #[arg(long)]
    audio: bool,
}

#[derive(Debug, Args)]
struct SendRichArgs {
    #[command(flatten)]
    db: DbArg,
    #[arg(long)]
    chat: Option<String>,
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    file: Option<String>,
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    effect: Option<String>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    reply_to: Option<String>,
    #[arg(long)]
    part: Option<String>,
    #[arg(long)]
    format: Option<String>,
    #[arg(long)]
    format_file: Option<String>,
    #[arg(long)]
    no_dd_scan: bool,
}

#[derive(Debug, Args)]
struct PollArgs {
    /// send|vote|unvote.
    action: Option<String>,
    #[command(flatten)]
    db: DbArg,
    #[arg(long)]
    chat: Option<String>,
    #[arg(long)]
    chat_id: Option<i64>,
    #[arg(long)]
    question: Option<String>,
    #[arg(long)]
    comment: Option<String>,
    #[arg(long)]
    reply_to: Option<String>,
    #[arg(long)]
    option: Vec<String>,
    #[arg(long)]
    poll: Option<String>,
    #[arg(long)]
    option_id: Option<String>,
    #[arg(long)]
    option_index: Option<String>,
    #[arg(long)]
    no_comment: bool,
}

/// What imsg's router does before it parses: `--help` anywhere prints help (imsg's format for the
/// commands in [`imsg_cli`], the simulator's own otherwise; an unknown command gets the root help),
/// and an unknown first word is `Unknown subcommand` on stdout with exit 1. `None`: parse normally.
fn route(args: &[String]) -> Option<ExitCode> {
    let options: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .take_while(|a| *a != "--")
        .collect();
    let first = options.first().copied();
    let asks_help = options.iter().any(|a| *a == "--help" || *a == "-h");
    match first {
        None => {
            let _ = Cli::command().print_help();
            Some(ExitCode::SUCCESS)
        }
        Some(name) if asks_help && imsg_cli::has_imsg_help(name) => {
            print!("{}", imsg_cli::help(name).unwrap_or_default());
            Some(ExitCode::SUCCESS)
        }
        Some(name) if asks_help && !COMMANDS.contains(&name) && !name.starts_with('-') => {
            let _ = Cli::command().print_help();
            Some(ExitCode::SUCCESS)
        }
        Some(name) if !asks_help && !name.starts_with('-') && !COMMANDS.contains(&name) => {
            println!("{}", imsg_cli::unknown_subcommand(name));
            Some(ExitCode::FAILURE)
        }
        _ => None,
    }
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = route(&args) {
        return code;
    }
    let cli = Cli::parse_from(args);
    init_logging(&cli.global);
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imsg-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        Command::Init(args) => own_command(run_init(&args, json)),
        Command::Inject(args) => own_command(run_inject(&args, json)),
        Command::Rpc(args) => {
            let opts = ServeOptions {
                db_path: args.db.path(),
                dialect: if args.baseline {
                    Dialect::Baseline
                } else {
                    Dialect::Strict
                },
                faults: args.faults,
                request_log: args.request_log,
            };
            own_command(runtime.block_on(rpc::serve(tokio::io::stdin(), tokio::io::stdout(), opts)))
        }
        Command::Chats(args) => imsg_command(runtime.block_on(run_chats(&args, json))),
        Command::History(args) => imsg_command(runtime.block_on(run_history(&args, json))),
        Command::Send(args) => imsg_command(runtime.block_on(run_send(&args, json))),
        Command::Group(args) => imsg_command(runtime.block_on(run_group(&args, json))),
        Command::Status(_) => {
            if json {
                println!("{}", imsg_cli::status_json());
            } else {
                print!("{}", imsg_cli::status_text());
            }
            ExitCode::SUCCESS
        }
        Command::SendAttachment(args) => imsg_command(runtime.block_on(run_send_attachment(&args, json))),
        Command::SendRich(args) => imsg_command(run_send_rich(&args, json)),
        Command::Poll(args) => imsg_command(run_poll(&args, json)),
    };
    // Nothing should be left running; don't let a stuck blocking read hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

fn init_logging(global: &Global) {
    let level = match (&global.log_level, global.verbose) {
        (Some(level), _) => level.clone(),
        (None, true) => "debug".into(),
        (None, false) => "warn".into(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour codes only for a person at a terminal; a parent process reading stderr gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Values are escaped so a hostile guid or text cannot forge a log line (docs/security.md).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .fmt_fields(crate::util::escape::EscapingFields)
        .try_init();
}

/// Exit status of `init`/`inject`/`rpc`: errors on stderr, 2 for bad input, 1 otherwise.
fn own_command(result: Result<(), SimError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imsg-sim: {e}");
            match e {
                SimError::BadInput(_) | SimError::AlreadyExists(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Exit status of the imsg-compatible commands: errors on stdout (as imsg does), exit 1.
fn imsg_command(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run_init(args: &InitArgs, json: bool) -> Result<(), SimError> {
    let path = expand_tilde(&args.db);
    let seeded = matches!(args.seed, Some(Seed::Demo));
    db::init(&path, seeded)?;
    if json {
        println!(
            "{}",
            json!({"path": path.display().to_string(), "seeded": seeded})
        );
    } else {
        let how = if seeded { " with the demo seed" } else { "" };
        println!("created {}{how}", path.display());
    }
    Ok(())
}

fn run_inject(args: &InjectArgs, json: bool) -> Result<(), SimError> {
    let spec = InjectSpec {
        from: args.from.clone(),
        chat_guid: args.chat_guid.clone(),
        group: args.group.clone(),
        participants: args.participants.clone(),
        text: args.text.clone(),
        attachments: args.attachment.clone(),
        attachment_refs: args.attachment_ref.clone(),
        count: args.count,
        guid: args.guid.clone(),
    };
    let rows = db::inject_many(&expand_tilde(&args.db), &spec)?;
    match (rows.as_slice(), json) {
        ([one], true) => println!(
            "{}",
            json!({"id": one.id, "guid": one.guid, "chat_id": one.chat_id})
        ),
        ([one], false) => println!("{} {}", one.id, one.guid),
        ([first, .., last], true) => println!(
            "{}",
            json!({"count": rows.len(), "first_id": first.id, "last_id": last.id, "chat_id": first.chat_id})
        ),
        ([first, .., last], false) => {
            println!("{} messages, rowid {}..{}", rows.len(), first.id, last.id)
        }
        ([], _) => {}
    }
    Ok(())
}

fn backend(db: &DbArg) -> std::sync::Arc<Backend> {
    Backend::new(&ServeOptions {
        db_path: db.path(),
        dialect: Dialect::Strict,
        faults: Faults::default(),
        request_log: None,
    })
}

/// Run one RPC method in-process and return its result, or imsg's one-line error text (a failed
/// send reads like imsg's delivery failure).
async fn call(backend: &std::sync::Arc<Backend>, method: &str, params: Value) -> Result<Value, String> {
    methods::call(backend, method, Some(params)).await.map_err(|e| {
        e.data
            .as_ref()
            .and_then(imsg_cli::delivery_failure_text)
            .unwrap_or_else(|| e.detail())
    })
}

async fn run_chats(args: &ChatsArgs, json: bool) -> Result<(), String> {
    let result = call(&backend(&args.db), "chats.list", json!({"limit": args.limit})).await?;
    for chat in items(&result, "chats") {
        if json {
            println!("{chat}");
        } else {
            println!(
                "[{}] {} ({}) last={}",
                chat["id"],
                str_field(chat, "name"),
                str_field(chat, "identifier"),
                str_field(chat, "last_message_at")
            );
        }
    }
    Ok(())
}

async fn run_history(args: &HistoryArgs, json: bool) -> Result<(), String> {
    let mut params = json!({"chat_id": args.chat_id, "limit": args.limit, "attachments": true});
    if let Some(obj) = params.as_object_mut() {
        if !args.participants.is_empty() {
            obj.insert("participants".into(), json!(args.participants));
        }
        if let Some(start) = &args.start {
            obj.insert("start".into(), json!(start));
        }
        if let Some(end) = &args.end {
            obj.insert("end".into(), json!(end));
        }
    }
    let result = call(&backend(&args.db), "messages.history", params).await?;
    for m in items(&result, "messages") {
        if json {
            // CLI JSON always carries attachments and reactions (imsg does the same).
            println!("{m}");
            continue;
        }
        let direction = if m["is_from_me"] == Value::Bool(true) {
            "sent"
        } else {
            "recv"
        };
        println!(
            "{} [{direction}] {}: {}",
            str_field(m, "created_at"),
            str_field(m, "sender"),
            str_field(m, "text")
        );
        let attachments = m["attachments"].as_array().map(Vec::as_slice).unwrap_or_default();
        if args.attachments {
            for a in attachments {
                let name = match str_field(a, "transfer_name") {
                    "" => str_field(a, "filename"),
                    n => n,
                };
                println!(
                    "  attachment: name={name} mime={} missing={} path={}",
                    str_field(a, "mime_type"),
                    a["missing"],
                    str_field(a, "original_path")
                );
            }
        } else if !attachments.is_empty() {
            let s = if attachments.len() == 1 { "" } else { "s" };
            println!("  ({} attachment{s})", attachments.len());
        }
    }
    Ok(())
}

async fn run_send(args: &SendArgs, json: bool) -> Result<(), String> {
    let mut params = json!({"service": args.service, "region": args.region});
    if let Some(obj) = params.as_object_mut() {
        let fields = [
            ("to", args.to.as_ref().map(|v| json!(v))),
            ("chat_id", args.chat_id.map(|v| json!(v))),
            ("chat_identifier", args.chat_identifier.as_ref().map(|v| json!(v))),
            ("chat_guid", args.chat_guid.as_ref().map(|v| json!(v))),
            ("text", args.text.as_ref().map(|v| json!(v))),
            ("file", args.file.as_ref().map(|v| json!(v))),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                obj.insert(key.into(), v);
            }
        }
    }
    let backend = backend(&args.db);
    let result = call(&backend, "send", params).await;
    // Let the delivery update land before the process exits.
    backend.tasks.close();
    backend.tasks.wait().await;
    let result = result?;
    if json {
        // imsg adds the verified row's id and guid when it found one.
        let mut out = json!({"status": "sent"});
        if let (Some(obj), Some(id)) = (out.as_object_mut(), result.get("id")) {
            obj.insert("id".into(), id.clone());
            if let Some(guid) = result.get("guid") {
                obj.insert("guid".into(), guid.clone());
                obj.insert("message_id".into(), guid.clone());
            }
        }
        println!("{out}");
    } else {
        println!("sent");
    }
    Ok(())
}

/// `group --chat-id N`: the chat's identity and participants (imsg's GroupCommand output).
async fn run_group(args: &GroupArgs, json: bool) -> Result<(), String> {
    let Some(chat_id) = args.chat_id else {
        return Err(imsg_cli::missing_option("chat-id"));
    };
    let info = call(&backend(&args.db), "chats.get", json!({"chat_id": chat_id})).await?;
    if json {
        println!("{info}");
        return Ok(());
    }
    println!("id: {}", info["id"]);
    for key in ["identifier", "guid", "name", "service"] {
        println!("{key}: {}", str_field(&info, key));
    }
    for key in ["account_id", "account_login", "last_addressed_handle"] {
        if let Some(v) = info.get(key).and_then(Value::as_str) {
            println!("{key}: {v}");
        }
    }
    println!("is_group: {}", info["is_group"] == Value::Bool(true));
    let participants = items(&info, "participants");
    if participants.is_empty() {
        println!("participants: (none)");
    } else {
        println!("participants:");
        for p in participants {
            println!("  - {}", p.as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// `send-attachment`: imsg tries the bridge first unless `--transport applescript`; without it
/// (SIP on) a `dylib` transport, `--audio` or `--reply-to` fail, anything else falls back to
/// AppleScript, which the simulator plays by writing the rows like `send --chat-guid --file`.
async fn run_send_attachment(args: &SendAttachmentArgs, json: bool) -> Result<(), String> {
    let chat = args.chat.as_deref().filter(|c| !c.is_empty());
    let Some(chat) = chat else {
        return Err(imsg_cli::missing_option("chat"));
    };
    let Some(file) = args.file.as_deref().filter(|f| !f.is_empty()) else {
        return Err(imsg_cli::missing_option("file"));
    };
    let transport = args.transport.as_deref().unwrap_or("auto");
    if !["auto", "dylib", "applescript"].contains(&transport) {
        return Err(imsg_cli::invalid_option("transport"));
    }
    let reply_to = args.reply_to.as_deref().filter(|r| !r.is_empty());
    if transport == "applescript" && args.audio {
        return Err(imsg_cli::invalid_option("audio"));
    }
    if transport == "applescript" && reply_to.is_some() {
        return Err(imsg_cli::invalid_option("reply-to"));
    }
    if transport != "applescript" && (transport == "dylib" || args.audio || reply_to.is_some()) {
        return Err(imsg_cli::bridge_error(imsg_cli::BRIDGE_REFUSED, json));
    }
    let backend = backend(&args.db);
    let result = call(&backend, "send", json!({"chat_guid": chat, "file": file})).await;
    backend.tasks.close();
    backend.tasks.wait().await;
    result?;
    if json {
        println!("{}", json!({"success": true, "transport": "applescript"}));
    } else {
        println!("send-attachment: sent via AppleScript");
    }
    Ok(())
}

/// `send-rich` needs the bridge: after imsg's own checks it fails the way imsg does with SIP on.
fn run_send_rich(args: &SendRichArgs, json: bool) -> Result<(), String> {
    if args.chat.as_deref().is_none_or(str::is_empty) {
        return Err(imsg_cli::missing_option("chat"));
    }
    Err(imsg_cli::bridge_error(imsg_cli::BRIDGE_REFUSED, json))
}

/// `poll send|vote|unvote` needs the bridge: after imsg's own checks it fails as with SIP on.
fn run_poll(args: &PollArgs, json: bool) -> Result<(), String> {
    match args.action.as_deref() {
        Some("send") => {
            if args.comment.is_some() && args.no_comment {
                return Err(imsg_cli::invalid_option("comment"));
            }
            if args.chat.as_deref().is_none_or(str::is_empty) && args.chat_id.is_none() {
                return Err(imsg_cli::missing_option("chat"));
            }
            if args.question.as_deref().is_none_or(str::is_empty) {
                return Err(imsg_cli::missing_option("question"));
            }
            if args.option.iter().filter(|o| !o.trim().is_empty()).count() < 2 {
                return Err(imsg_cli::missing_option("option"));
            }
        }
        Some("vote" | "unvote") => {
            if args.chat.as_deref().is_none_or(str::is_empty) && args.chat_id.is_none() {
                return Err(imsg_cli::missing_option("chat"));
            }
            if args.poll.as_deref().is_none_or(|p| p.trim().is_empty()) {
                return Err(imsg_cli::missing_option("poll"));
            }
        }
        Some(_) => return Err(imsg_cli::invalid_option("action")),
        None => return Err("Missing required argument: action".into()),
    }
    Err(imsg_cli::bridge_error(imsg_cli::BRIDGE_REFUSED, json))
}

fn items<'a>(result: &'a Value, key: &str) -> &'a [Value] {
    result[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn has_a_consistent_command_line() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reads_fault_knobs_from_flags() {
        let cli = Cli::try_parse_from([
            "imsg-sim",
            "rpc",
            "--db",
            "x.db",
            "--fault-watch-death-after",
            "3",
            "--fault-send-fails",
            "--json",
        ])
        .unwrap();
        let Command::Rpc(args) = cli.command else {
            panic!("not rpc");
        };
        assert_eq!(args.faults.watch_death_after, Some(3));
        assert!(args.faults.send_fails);
        assert!(!args.faults.echo_race);
    }

    fn routed(args: &[&str]) -> Option<ExitCode> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        route(&args)
    }

    #[test]
    fn routes_unknown_words_and_probed_help_like_imsg() {
        assert_eq!(routed(&["imsg-sim", "frobnicate"]), Some(ExitCode::FAILURE));
        assert_eq!(routed(&["imsg-sim", "rpc", "--help"]), Some(ExitCode::SUCCESS));
        assert_eq!(
            routed(&["imsg-sim", "poll", "send", "--help"]),
            Some(ExitCode::SUCCESS)
        );
        assert_eq!(
            routed(&["imsg-sim", "frobnicate", "--help"]),
            Some(ExitCode::SUCCESS)
        );
        assert_eq!(routed(&["imsg-sim", "rpc", "--json"]), None);
        assert_eq!(routed(&["imsg-sim", "init", "--help"]), None);
        assert_eq!(routed(&["imsg-sim", "--json", "chats"]), None);
    }

    #[test]
    fn knows_every_subcommand_by_name() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        for name in &names {
            assert!(COMMANDS.contains(&name.as_str()), "{name} missing from COMMANDS");
        }
        assert_eq!(
            names.len() + 1,
            COMMANDS.len(),
            "COMMANDS has a word clap does not know"
        );
    }

    #[test]
    fn requires_exactly_one_send_target() {
        assert!(Cli::try_parse_from(["imsg-sim", "send", "--text", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["imsg-sim", "send", "--to", "a", "--chat-id", "1", "--text", "x"]).is_err()
        );
        assert!(Cli::try_parse_from(["imsg-sim", "send", "--chat-id", "1", "--text", "x"]).is_ok());
    }
}

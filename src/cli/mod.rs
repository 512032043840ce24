//! Command line: clap subcommands, one file each, logging set-up, and the mapping of errors to exit
//! codes (0 success, 1 a check or operation failed, 2 usage or config error). `anyhow` lives here.

mod account;
mod attachments;
mod chats;
mod control;
mod demo;
mod detect;
mod doctor;
mod imsg;
mod pairing;
mod run;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::{self, Account, Config, ConfigError};
use crate::gateway::AccountRuntime;
use crate::gateway::fleet::FleetError;
use crate::transport::OpenError;
use crate::transport::resolve::ResolveError;
use crate::util::escape::EscapingFields;

/// Connect an agent gateway to iMessage on a Mac running imsg.
#[derive(Debug, Parser)]
#[command(name = "imsg-bridge", version, about)]
pub struct Cli {
    /// Config file (json5); default: $IMSG_BRIDGE_CONFIG, ~/.openclaw/openclaw.json, ~/.config/imsg-bridge/config.json5
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Act on this account only (default: every enabled account for `run`, the default account otherwise)
    #[arg(long, global = true, value_name = "ID")]
    account: Option<String>,
    /// The Mac for `imsg`, as ssh takes it (resolved through ~/.ssh/config); default: the account's
    #[arg(long, global = true, value_name = "[USER@]HOST[:PORT]")]
    target: Option<String>,
    /// More log output (-v debug, -vv trace); logs go to stderr
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only warnings and errors in the log
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log line format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: watch every enabled account and print one envelope per line on stdout
    Run,
    /// The whole pipeline against a simulated Mac over an embedded SSH server: nothing to install
    Demo(demo::DemoArgs),
    /// List chats through the account's transport
    Chats(chats::ChatsArgs),
    /// Show the newest messages of a chat
    History(chats::HistoryArgs),
    /// Diagnose an account: config, wrapper, network, SSH, imsg, database, SFTP, attachments, state
    Doctor(doctor::DoctorArgs),
    /// Read a wrapper script (never run it): its SSH target and whether transport "auto" replaces it
    Detect(detect::DetectArgs),
    /// Pending pairing requests: `list` them, `approve` a code
    #[command(subcommand)]
    Pairing(pairing::PairingCommand),
    /// Send a message (and files) through the account's transport
    Send(send::SendArgs),
    /// Be `imsg ARGS…` on the Mac: a drop-in for an `ssh … imsg "$@"` wrapper at OpenClaw's cliPath
    Imsg(imsg::ImsgArgs),
    /// Attachment sync diagnostics: `check` the newest attachments, `pull` one message's files
    #[command(subcommand)]
    Attachments(attachments::AttachmentsCommand),
    /// Share one SSH connection with `imsg` drop-ins over a control socket (started by them)
    #[command(hide = true)]
    ControlMaster(control::ControlMasterArgs),
}

/// Errors that carry their own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
}

/// Entry point of the `imsg-bridge` binary.
pub fn main() -> ExitCode {
    let (head, imsg_args) = imsg::split_argv(std::env::args_os().collect());
    let mut cli = Cli::parse_from(head);
    if let (Command::Imsg(args), Some(tail)) = (&mut cli.command, imsg_args) {
        args.set(tail);
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(exit_code_of(&err))
        }
    };
    // Everything was awaited; only a read of our stdin may still block a thread (the drop-in
    // forwards stdin), and it must not hold the exit.
    runtime.shutdown_background();
    code
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    // Needs no config: it inspects a file the operator names.
    if let Command::Detect(args) = &cli.command {
        return detect::detect(args);
    }
    if let Command::Demo(args) = &cli.command {
        return demo::demo(args).await;
    }
    let config = config::load(cli.config.as_deref())?;
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    match &cli.command {
        Command::Run => run::run(&config, cli.account.as_deref()).await,
        Command::Chats(args) => {
            chats::chats(&config, select_account(&config, cli.account.as_deref())?, args).await
        }
        Command::History(args) => {
            chats::history(&config, select_account(&config, cli.account.as_deref())?, args).await
        }
        Command::Detect(args) => detect::detect(args),
        Command::Doctor(args) => {
            doctor::doctor(&config, select_account(&config, cli.account.as_deref())?, args).await
        }
        Command::Demo(args) => demo::demo(args).await,
        Command::Pairing(command) => {
            pairing::run(&config, select_account(&config, cli.account.as_deref())?, command).await
        }
        Command::Send(args) => {
            send::send(&config, select_account(&config, cli.account.as_deref())?, args).await
        }
        Command::Imsg(args) => {
            let globals = imsg::Globals {
                config: cli.config.clone(),
                account: cli.account.clone(),
                target: cli.target.clone(),
            };
            imsg::imsg(
                &config,
                select_account(&config, cli.account.as_deref())?,
                &globals,
                args,
            )
            .await
        }
        Command::Attachments(command) => {
            attachments::run(&config, select_account(&config, cli.account.as_deref())?, command).await
        }
        Command::ControlMaster(args) => {
            let account = select_account(&config, cli.account.as_deref())?;
            control::control_master(&config, account, cli.target.as_deref(), args).await
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line already holds:
/// our messages often quote their source (`cannot read X: Is a directory`), and printing the chain
/// as well said it twice.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn exit_code_of(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ConfigError>().is_some()
        || err.downcast_ref::<CliError>().is_some()
        || err.downcast_ref::<ResolveError>().is_some()
        // A one-shot command meets the same resolution errors (an ssh_config that `ssh -G` rejects)
        // inside the error of opening the account.
        || matches!(err.downcast_ref::<OpenError>(), Some(OpenError::Resolve(_)))
        || err.downcast_ref::<FleetError>().is_some_and(FleetError::is_usage)
    {
        2
    } else {
        1
    }
}

/// The account a one-shot command acts on: `--account`, else the default account.
fn select_account<'a>(config: &'a Config, wanted: Option<&str>) -> Result<&'a Account, CliError> {
    let id = wanted.unwrap_or(&config.default_account);
    config.account(id).ok_or_else(|| {
        let known: Vec<&str> = config.accounts.iter().map(|a| a.id.as_str()).collect();
        CliError::Usage(format!(
            "no account {id:?} in the config (accounts: {})",
            known.join(", ")
        ))
    })
}

/// Resolve what `run` and the one-shot commands need from an account (decides its transport).
fn runtime_of(config: &Config, account: &Account) -> Result<AccountRuntime, ResolveError> {
    crate::gateway::fleet::account_runtime(config, account)
}

fn init_logging(cli: &Cli) {
    // The demo's story is its timeline on stdout, and the drop-in's stderr is imsg's: their logs stay
    // at warnings unless asked for.
    let quiet_command = matches!(cli.command, Command::Demo(_) | Command::Imsg(_));
    let quiet = cli.quiet || (quiet_command && cli.verbose == 0);
    let level = match (quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // Our own crate at the chosen level; dependencies (the SSH library, …) one notch quieter unless RUST_LOG says otherwise.
    let filter = EnvFilter::try_from_default_env()
        // async-nats logs each failed reconnect as an error; the nats sink reports them itself, once
        // per distinct error and with the remedy (docs/scale-out.md).
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,async_nats=off,imsg_bridge={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal; journald, files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match cli.log_format {
        // Text lines escape control characters in every value, so a guid or text with CR/LF cannot
        // forge a line (docs/security.md); JSON lines are escaped by the JSON encoding itself.
        LogFormat::Text => builder.fmt_fields(EscapingFields).init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_quotes_its_cause_says_it_once() {
        let io = std::io::Error::from(std::io::ErrorKind::IsADirectory);
        let quoted = anyhow::Error::new(ConfigError::Read {
            path: "/tmp".into(),
            source: io,
        });
        let line = one_line(&quoted);
        assert_eq!(line.matches("directory").count(), 1, "{line}");
        let wrapped = anyhow::anyhow!("outer").context("while starting");
        assert_eq!(one_line(&wrapped), "while starting: outer");
    }
}

//! `imsg-bridge [--target T] imsg ARGS…`: be `imsg ARGS…` on the account's Mac (docs/guides/openclaw.md).
//! Picks the SSH target (`--target`, else the account's), refuses a cliPath that leads back into
//! imsg-bridge, hands SIGINT/SIGTERM to the proxy, and exits with imsg's status, or 255 when the Mac
//! could not be reached (as `ssh` does).

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::{Account, Config};
use crate::dropin::command::{Mode, leads_back, mode};
use crate::dropin::passthrough::{self, CommandSettings};
use crate::dropin::{self, Finish, LinkSource, ProxySettings};
use crate::media::roots::OutboundRoots;
use crate::transport::link::LinkOptions;
use crate::transport::resolve::{self, Plan};
use crate::transport::ssh::SshTarget;

/// Exit status when the Mac could not be reached, as `ssh` uses.
const UNREACHABLE: u8 = 255;

/// `imsg ARGS…`: everything after `imsg` goes to imsg untouched, `--help` included.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct ImsgArgs {
    /// The arguments of imsg
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

impl ImsgArgs {
    /// The arguments of imsg, taken from the command line as they were (see [`split_argv`]).
    pub fn set(&mut self, args: Vec<String>) {
        self.args = args;
    }
}

/// Global options of ours that take a value (`--config P` as well as `--config=P`).
const VALUED_GLOBALS: [&str; 4] = ["--config", "--account", "--target", "--log-format"];

/// Split the command line at the `imsg` command: what comes before is ours (clap parses it), what
/// comes after is imsg's, untouched even where it looks like an option of ours (`imsg -v`,
/// `imsg --account x`). None when the command is not `imsg` (or an argument is not UTF-8: clap
/// then reports it).
pub fn split_argv(argv: Vec<std::ffi::OsString>) -> (Vec<std::ffi::OsString>, Option<Vec<String>>) {
    let mut index = 1;
    while let Some(arg) = argv.get(index).and_then(|a| a.to_str()) {
        if VALUED_GLOBALS.contains(&arg) {
            index += 2;
        } else if arg.starts_with('-') {
            index += 1;
        } else {
            break;
        }
    }
    if argv.get(index).and_then(|a| a.to_str()) != Some("imsg") {
        return (argv, None);
    }
    let tail: Option<Vec<String>> = argv[index + 1..]
        .iter()
        .map(|a| a.to_str().map(str::to_string))
        .collect();
    match tail {
        Some(tail) => (argv[..=index].to_vec(), Some(tail)),
        None => (argv, None),
    }
}

/// What the global options said, for a spawned connection-sharing master to say again.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    pub config: Option<std::path::PathBuf>,
    pub account: Option<String>,
    pub target: Option<String>,
}

impl Globals {
    fn master_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(config) = &self.config {
            args.extend([OsString::from("--config"), config.clone().into_os_string()]);
        }
        if let Some(account) = &self.account {
            args.extend([OsString::from("--account"), OsString::from(account)]);
        }
        if let Some(target) = &self.target {
            args.extend([OsString::from("--target"), OsString::from(target)]);
        }
        args
    }
}

pub async fn imsg(
    config: &Config,
    account: &Account,
    globals: &Globals,
    args: &ImsgArgs,
) -> anyhow::Result<ExitCode> {
    let (target, remote_cli) = target_of(account, globals.target.as_deref()).await?;
    let options = LinkOptions {
        state_dir: config.bridge.state_dir.clone(),
        // An account without an ssh block (`--target`, remoteHost) shares with the default too.
        persist: Duration::from_millis(account.ssh.clone().unwrap_or_default().control_persist_ms),
        master_args: globals.master_args(),
    };
    let mut source = LinkSource::new(target, options);
    let media = crate::gateway::fleet::media_runtime(config, account);
    let upload_max_bytes = account.media_max_mb.saturating_mul(1024 * 1024);
    let result = match mode(&args.args) {
        Mode::Command => {
            let settings = CommandSettings {
                remote_cli,
                upload_max_bytes,
                sftp_timeout: media.sftp_timeout,
                outbound: OutboundRoots::for_operator(config),
            };
            passthrough::run(&mut source, args.args.clone(), &settings).await
        }
        Mode::Rpc => {
            let settings = ProxySettings {
                command: dropin::command::remote_line(remote_cli.as_deref(), &args.args),
                media_dir: media.inbound.join(&account.id),
                roots: media.remote_roots.clone(),
                media_max_bytes: media.max_bytes,
                media_retries: media.retries,
                sftp_timeout: media.sftp_timeout,
                upload_max_bytes,
                outbound: OutboundRoots::for_operator(config),
                grace: Duration::from_millis(config.bridge.media.outbound_grace_ms),
                cache_max_bytes: media.cache_max_bytes,
                cache_max_age: media.cache_max_age,
            };
            proxy(source, settings).await
        }
    };
    match result {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))),
        Err(err) => {
            eprintln!("imsg-bridge: {err}");
            Ok(ExitCode::from(UNREACHABLE))
        }
    }
}

/// The proxy, stopped by SIGINT or SIGTERM (then it exits as a killed imsg would).
async fn proxy(source: LinkSource, settings: ProxySettings) -> Result<i32, dropin::DropinError> {
    let cancel = CancellationToken::new();
    let signal = stop_signal();
    let run = dropin::proxy::run(
        tokio::io::stdin(),
        tokio::io::stdout(),
        source,
        settings,
        cancel.clone(),
    );
    tokio::pin!(run);
    let finish = tokio::select! {
        finish = &mut run => finish?,
        number = signal => {
            cancel.cancel();
            run.await?;
            return Ok(128 + number);
        }
    };
    Ok(match finish {
        Finish::Exited(code) => code,
        Finish::Stopped => 0,
        Finish::Lost => i32::from(UNREACHABLE),
    })
}

/// The number of the first SIGTERM or SIGINT; never, when the handlers cannot be installed.
async fn stop_signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => 15,
        _ = int.recv() => 2,
    }
}

/// The SSH target and the remote imsg: `--target` (through ~/.ssh/config), else the account's.
async fn target_of(account: &Account, target: Option<&str>) -> anyhow::Result<(SshTarget, Option<String>)> {
    let configured_cli = account.ssh.as_ref().and_then(|s| s.remote_cli_path.clone());
    if let Some(target) = target {
        let resolved = resolve::target_from_cli(target, account).await?;
        return Ok((resolved, configured_cli));
    }
    match resolve::plan(account)? {
        Plan::Ssh(plan) => {
            let resolved = resolve::resolve_target(&plan, &account.id).await?;
            Ok((resolved, plan.remote_cli.clone().or(configured_cli)))
        }
        Plan::Process { program, .. } => process_target(account, &program).await,
    }
}

/// An account whose cliPath is a local program: refused when it leads back into imsg-bridge;
/// its `remoteHost` is the Mac otherwise, if it has one.
async fn process_target(account: &Account, program: &Path) -> anyhow::Result<(SshTarget, Option<String>)> {
    let own = std::env::current_exe().ok();
    if leads_back(program, own.as_deref()) {
        return Err(CliError::Usage(format!(
            "{}: cliPath {} leads back into imsg-bridge, which would start itself again: give the Mac with --target [user@]host[:port], or set channels.imessage.ssh.host in the bridge's own config (--config)",
            account.id,
            program.display()
        ))
        .into());
    }
    let Some(remote_host) = account.remote_host.as_deref() else {
        return Err(CliError::Usage(format!(
            "{}: imsg is reached through the local program {}, not over SSH: give the Mac with --target [user@]host[:port], or set channels.imessage.ssh.host (or remoteHost)",
            account.id,
            program.display()
        ))
        .into());
    };
    let resolved = resolve::target_from_cli(remote_host, account)
        .await
        .with_context(|| format!("{}: remoteHost {remote_host}", account.id))?;
    Ok((
        resolved,
        account.ssh.as_ref().and_then(|s| s.remote_cli_path.clone()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(words: &[&str]) -> (Vec<String>, Option<Vec<String>>) {
        let argv = words.iter().map(std::ffi::OsString::from).collect();
        let (head, tail) = split_argv(argv);
        (
            head.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            tail,
        )
    }

    #[test]
    fn everything_after_imsg_is_imsgs_even_what_looks_like_our_options() {
        let (head, tail) = split(&[
            "imsg-bridge",
            "--target",
            "bot@mac",
            "-q",
            "imsg",
            "-v",
            "--account",
            "x",
            "status",
        ]);
        assert_eq!(head, ["imsg-bridge", "--target", "bot@mac", "-q", "imsg"]);
        assert_eq!(tail.unwrap(), ["-v", "--account", "x", "status"]);
        let (head, tail) = split(&["imsg-bridge", "--config=/c", "imsg"]);
        assert_eq!((head.len(), tail), (3, Some(Vec::new())));
        let (head, tail) = split(&["imsg-bridge", "--account", "imsg", "run"]);
        assert_eq!(
            (head.len(), tail),
            (4, None),
            "imsg as an account id is not the command"
        );
        assert_eq!(split(&["imsg-bridge", "run"]).1, None);
    }

    #[test]
    fn a_spawned_master_hears_the_same_global_options() {
        let globals = Globals {
            config: Some("/etc/b.json5".into()),
            account: None,
            target: Some("bot@mac:2222".into()),
        };
        let args: Vec<String> = globals
            .master_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["--config", "/etc/b.json5", "--target", "bot@mac:2222"]);
    }
}

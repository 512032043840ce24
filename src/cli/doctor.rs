//! `imsg-bridge doctor [--json] [--send-test TARGET]`: every check in order, never stopping at the
//! first failure, each with what it found and what to do. Exit 0 when no check failed.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::config::{Account, Config};
use crate::imsg::ImsgClient;
use crate::media::{Files, Method, RemoteFiles};
use crate::rpc::{ClientOptions, RpcError};
use crate::transport::resolve::{self, Plan};
use crate::transport::ssh::{self, SshConnection, SshError};
use crate::transport::wrapper;

mod openclaw;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Also send one test message to TARGET (doctor sends nothing otherwise)
    #[arg(long, value_name = "TARGET")]
    send_test: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    pub remedy: Option<String>,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, id: &'static str, status: Status, detail: impl Into<String>, remedy: Option<&str>) {
        self.checks.push(Check {
            id,
            status,
            detail: detail.into(),
            remedy: remedy.map(str::to_string),
        });
    }
    fn ok(&mut self, id: &'static str, detail: impl Into<String>) {
        self.add(id, Status::Ok, detail, None);
    }
    fn skip(&mut self, id: &'static str, detail: impl Into<String>) {
        self.add(id, Status::Skip, detail, None);
    }
}

const FDA_REMOTE: &str = "on the Mac: System Settings → General → Sharing → Remote Login (i) → turn on \"Allow full disk access for remote users\", then run doctor again";
const FDA_LOCAL: &str = "give the process that runs imsg (the terminal, or the launchd agent's program) Full Disk Access in System Settings → Privacy & Security → Full Disk Access; it does not propagate to LaunchAgents started elsewhere";

pub async fn doctor(config: &Config, account: &Account, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report = run_checks(config, account, args).await;
    agent_check(&mut report, config).await;
    let failed = report.checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        let out = serde_json::json!({
            "account": account.id,
            "ok": !failed,
            "checks": report.checks,
        });
        println!("{out}");
    } else {
        print_table(&report.checks);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_checks(config: &Config, account: &Account, args: &DoctorArgs) -> Report {
    let mut r = Report::default();
    if config.warnings.is_empty() {
        r.ok(
            "config",
            format!(
                "{} loaded, account {:?}",
                config
                    .path
                    .as_ref()
                    .map_or("defaults".into(), |p| p.display().to_string()),
                account.id
            ),
        );
    } else {
        r.add(
            "config",
            Status::Warn,
            config.warnings.join("; "),
            Some("see docs/configuration.md"),
        );
    }

    openclaw_check(&mut r, config, account);

    // Wrapper analysis.
    let plan = match resolve::plan(account) {
        Ok(plan) => plan,
        Err(err) => {
            r.add(
                "wrapper",
                Status::Fail,
                err.to_string(),
                Some("set channels.imessage.ssh.host, or fix cliPath"),
            );
            return r;
        }
    };
    match (&plan, std::fs::metadata(&account.cli_path).is_ok_and(|m| m.is_file())) {
        (Plan::Ssh(ssh), _) if ssh.source.starts_with("wrapper") => {
            r.ok("wrapper", format!("{} is transparent: transport auto uses a native SSH connection to {} instead", account.cli_path.display(), ssh.host))
        }
        (Plan::Ssh(ssh), _) => r.skip("wrapper", format!("native SSH target from the {}", ssh.source)),
        (Plan::Process { .. }, true) => match wrapper::analyze_file(&account.cli_path) {
            Ok(a) if a.host.is_some() || !a.warnings.iter().any(|w| w.contains("no command in the script runs ssh")) && a.remote_command.is_some() => r.add(
                "wrapper",
                Status::Warn,
                format!("{} runs ssh but is not transparent: {}", account.cli_path.display(), a.warnings.join("; ")),
                Some("move its target into channels.imessage.ssh (see `imsg-bridge detect`), or keep transport \"process\""),
            ),
            _ => r.skip("wrapper", format!("{} is not an SSH wrapper", account.cli_path.display())),
        },
        (Plan::Process { .. }, false) => r.skip("wrapper", "cliPath is not a file here (a command on PATH)"),
    }

    let connection = match &plan {
        Plan::Ssh(ssh_plan) => ssh_checks(&mut r, ssh_plan, &account.id).await,
        Plan::Process { program, .. } => {
            r.skip("ssh.config", "local process transport");
            r.skip("reach", "local process transport");
            r.skip("ssh.handshake", "local process transport");
            r.skip("ssh.host_key", "local process transport");
            r.skip("ssh.auth", "local process transport");
            let found = which(program);
            match found {
                Some(path) => r.ok("imsg.path", path),
                None => {
                    r.add("imsg.path", Status::Fail, format!("{} not found or not executable", program.display()), Some("install imsg (`brew install steipete/tap/imsg`) or fix channels.imessage.cliPath"));
                    return finish_without_rpc(r, config, &plan);
                }
            }
            None
        }
    };
    if let (Plan::Ssh(ssh_plan), Some(conn)) = (&plan, &connection) {
        match &ssh_plan.remote_cli {
            Some(cli) => {
                let probe = format!("[ -x {} ] && echo ok", ssh::quote::quote_keep_tilde(cli));
                match ssh::exec::exec_capture(conn, &probe, Duration::from_secs(20)).await {
                    Ok(c) if c.stdout.trim() == "ok" => r.ok("imsg.path", format!("{cli} on the Mac")),
                    _ => r.add("imsg.path", Status::Fail, format!("{cli} is not an executable on the Mac"), Some("fix channels.imessage.ssh.remoteCliPath, or unset it to look imsg up with the login shell")),
                }
            }
            None => match crate::transport::find_remote_imsg(conn, ssh_plan).await {
                Ok(found) => r.ok("imsg.path", format!("{found} (found with the Mac's login shell)")),
                Err(err) => r.add("imsg.path", Status::Fail, err.to_string(), Some("`brew install steipete/tap/imsg` on the Mac, or set channels.imessage.ssh.remoteCliPath")),
            },
        }
    } else if matches!(plan, Plan::Ssh(_)) {
        r.skip("imsg.path", "no SSH connection");
    }
    if matches!(plan, Plan::Ssh(_)) && connection.is_none() {
        return finish_without_rpc(r, config, &plan);
    }

    // RPC and the database, through the same path `run` uses.
    let options = ClientOptions {
        request_timeout: Duration::from_millis(account.probe_timeout_ms),
        ..ClientOptions::default()
    };
    let opened = crate::transport::open(&plan, &account.id, options, &mut None).await;
    let (rpc, peer) = match opened {
        Ok(pair) => pair,
        Err(err) => {
            r.add(
                "imsg.rpc",
                Status::Fail,
                err.to_string(),
                Some("see the imsg.path check"),
            );
            return finish_without_rpc(r, config, &plan);
        }
    };
    let timeout = Duration::from_millis(account.probe_timeout_ms);
    match ImsgClient::initialize(rpc.clone(), timeout).await {
        Ok(imsg) => {
            r.ok(
                "imsg.rpc",
                match imsg.protocol() {
                    crate::imsg::Protocol::V1 { version } => format!(
                        "imsg rpc answers (protocol v1, imsg {})",
                        version.as_deref().unwrap_or("?")
                    ),
                    crate::imsg::Protocol::Baseline => {
                        "imsg rpc answers (baseline server, no initialize)".to_string()
                    }
                },
            );
            database_check(&mut r, &imsg, &plan).await;
            let files = Files::for_peer(&peer, Duration::from_secs(60));
            files_checks(&mut r, &imsg, &files, account, config).await;
            send_check(&mut r, &imsg, args.send_test.as_deref(), account).await;
        }
        Err(err) => {
            let remedy = if matches!(err, RpcError::Timeout { .. }) {
                "a wrapper that buffers stdio until EOF makes imsg look dead: use the native SSH transport (an ssh block, or transport \"auto\" with a transparent wrapper)"
            } else if [
                "unrecognized subcommand",
                "unknown command",
                "Unknown subcommand",
                "invalid choice",
            ]
            .iter()
            .any(|needle| err.to_string().contains(needle))
            {
                "this imsg has no `rpc` subcommand: upgrade imsg (`brew upgrade imsg`)"
            } else {
                "run the imsg command by hand on the Mac to see its error"
            };
            r.add("imsg.rpc", Status::Fail, err.to_string(), Some(remedy));
            for id in [
                "imsg.database",
                "sftp",
                "attachments.root",
                "attachments.pull",
                "send.capability",
            ] {
                r.skip(id, "imsg rpc did not answer");
            }
        }
    }
    peer.stop(&rpc).await;
    local_checks(&mut r, config, &plan);
    r
}

/// Whether OpenClaw's openclaw.json would drop the attachments the drop-in pulls (warn, never fail:
/// the bridge itself works either way).
fn openclaw_check(r: &mut Report, config: &Config, account: &Account) {
    let home = crate::util::home_dir();
    let Some(file) = openclaw::locate(config.path.as_deref(), home.as_deref()) else {
        r.skip(
            "openclaw",
            "no openclaw.json (the config given is none, and ~/.openclaw/openclaw.json does not exist)",
        );
        return;
    };
    let state_dir =
        std::path::absolute(&config.bridge.state_dir).unwrap_or_else(|_| config.bridge.state_dir.clone());
    let bridge = openclaw::Bridge {
        state_dir: &state_dir,
        account: &account.id,
    };
    match openclaw::check_file(&file, &bridge) {
        openclaw::Verdict::Skip(detail) => r.skip("openclaw", detail),
        openclaw::Verdict::Ok(detail) => r.ok("openclaw", detail),
        openclaw::Verdict::Warn { detail, remedy } => r.add("openclaw", Status::Warn, detail, Some(&remedy)),
    }
}

async fn ssh_checks(r: &mut Report, plan: &resolve::SshPlan, account: &str) -> Option<SshConnection> {
    let target = resolved_target(r, plan, account).await?;
    let addr = format!("{}:{}", target.host, target.port);
    let first_hop = target.jumps.first().unwrap_or(&target);
    let started = Instant::now();
    let reach = tokio::time::timeout(
        target.connect_timeout,
        tokio::net::TcpStream::connect((first_hop.host.as_str(), first_hop.port)),
    )
    .await;
    match reach {
        Ok(Ok(stream)) => r.ok(
            "reach",
            format!(
                "{}:{} answers ({}, {} ms)",
                first_hop.host,
                first_hop.port,
                stream.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
                started.elapsed().as_millis()
            ),
        ),
        Ok(Err(err)) => {
            r.add(
                "reach",
                Status::Fail,
                format!("{}:{}: {err}", first_hop.host, first_hop.port),
                Some("check the host name (DNS, MagicDNS), that Remote Login is on, and the port"),
            );
            for id in ["ssh.handshake", "ssh.host_key", "ssh.auth"] {
                r.skip(id, "the host is not reachable");
            }
            return None;
        }
        Err(_) => {
            r.add(
                "reach",
                Status::Fail,
                format!("{addr}: no answer within {} s", target.connect_timeout.as_secs()),
                Some("a firewall or a sleeping Mac; check the network path (Tailscale: `tailscale ping`)"),
            );
            for id in ["ssh.handshake", "ssh.host_key", "ssh.auth"] {
                r.skip(id, "the host is not reachable");
            }
            return None;
        }
    }
    match ssh::connect(&target).await {
        Ok(conn) => {
            r.ok(
                "ssh.handshake",
                format!("SSH with {} (host key {})", target.display(), conn.info.algorithm),
            );
            host_key_row(r, &target, &conn.info);
            let banner = conn
                .info
                .banner
                .as_deref()
                .map(|b| format!("; server banner: {b}"))
                .unwrap_or_default();
            r.ok("ssh.auth", format!("{}{banner}", conn.info.auth_method));
            Some(conn)
        }
        Err(err) => {
            let text = err.to_string();
            match err {
                SshError::HostKeyUnknown { .. }
                | SshError::HostKeyChanged { .. }
                | SshError::HostKeyRevoked { .. }
                | SshError::HostKeyRecord { .. } => {
                    r.ok("ssh.handshake", "the server speaks SSH");
                    r.add("ssh.host_key", Status::Fail, text, Some("verify the fingerprint on the Mac (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then follow the instruction in the detail"));
                    r.skip("ssh.auth", "nothing is sent to an unverified host");
                }
                SshError::Auth {
                    ref host_key_unverified,
                    ..
                } => {
                    r.ok("ssh.handshake", "the server speaks SSH");
                    match host_key_unverified {
                        Some(unverified) => unverified_row(r, &target, unverified),
                        None => r.ok("ssh.host_key", "trusted"),
                    }
                    r.add("ssh.auth", Status::Fail, text, Some("add the key's .pub to ~/.ssh/authorized_keys of the Mac user, or set ssh.identityFile / identityPassphraseEnv"));
                }
                _ => {
                    r.add(
                        "ssh.handshake",
                        Status::Fail,
                        text,
                        Some("is it an SSH server? (try `ssh -v` to the same address)"),
                    );
                    r.skip("ssh.host_key", "no handshake");
                    r.skip("ssh.auth", "no handshake");
                }
            }
            None
        }
    }
}

/// The `ssh.config` row: the plan resolved through `ssh -G` (or our parser) into one target. On a
/// failure the SSH rows after it are skipped: `ssh` would not connect, so neither does doctor.
async fn resolved_target(r: &mut Report, plan: &resolve::SshPlan, account: &str) -> Option<ssh::SshTarget> {
    match resolve::resolve_target(plan, account).await {
        Ok(target) => {
            let jumps: Vec<String> = target.jumps.iter().map(ssh::SshTarget::display).collect();
            let via = if jumps.is_empty() {
                String::new()
            } else {
                format!(" via {}", jumps.join(", "))
            };
            r.ok(
                "ssh.config",
                format!("{} ({}) is {}{via}", plan.host, plan.source, target.display()),
            );
            Some(target)
        }
        Err(err) => {
            let remedy = match &err {
                resolve::ResolveError::SshConfig { source, .. } => source.remedy(),
                resolve::ResolveError::NoUser { .. } => "set channels.imessage.ssh.user".to_string(),
                _ => "fix the SSH target (channels.imessage.ssh, the wrapper or ~/.ssh/config)".to_string(),
            };
            r.add("ssh.config", Status::Fail, err.to_string(), Some(&remedy));
            for id in ["reach", "ssh.handshake", "ssh.host_key", "ssh.auth"] {
                r.skip(id, "the SSH target could not be resolved");
            }
            None
        }
    }
}

/// The host-key row of a connection that succeeded: trusted, or a warning when only
/// StrictHostKeyChecking no let the key through (the same whichever source said "no").
fn host_key_row(r: &mut Report, target: &ssh::SshTarget, info: &ssh::ConnectionInfo) {
    match &info.host_key_unverified {
        None => {
            let learned = if info.host_key_learned {
                ", recorded now (accept-new)"
            } else {
                ""
            };
            r.ok("ssh.host_key", format!("{} trusted{learned}", info.fingerprint));
        }
        Some(unverified) => unverified_row(r, target, unverified),
    }
}

/// `warn ssh.host_key` for a key StrictHostKeyChecking no let through: a contradicted key shows the
/// recorded and the presented fingerprint.
fn unverified_row(r: &mut Report, target: &ssh::SshTarget, unverified: &ssh::HostKeyUnverified) {
    let name = ssh::known_hosts::lookup_name(&target.host, target.port);
    let verify = "verify the fingerprint on the Mac (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`)";
    let (detail, remedy) = match unverified {
        ssh::HostKeyUnverified::Changed {
            known,
            presented,
            file,
            line,
        } => (
            format!(
                "host key CHANGED: {file} line {line} has {known}, the server presented {presented}; connected only because StrictHostKeyChecking is no"
            ),
            format!(
                "{verify}; if it is the Mac's new key, remove the old line with `ssh-keygen -R '{name}' -f {file}` and record the new one (StrictHostKeyChecking accept-new); then stop using StrictHostKeyChecking no"
            ),
        ),
        ssh::HostKeyUnverified::Unknown { presented } => (
            format!(
                "{presented} not verified: no known_hosts line names {name}; connected only because StrictHostKeyChecking is no"
            ),
            format!(
                "{verify}, then add it with `ssh-keyscan -p {} {} >> ~/.ssh/known_hosts` (or use StrictHostKeyChecking accept-new) and stop using StrictHostKeyChecking no",
                target.port, target.host
            ),
        ),
    };
    r.add("ssh.host_key", Status::Warn, detail, Some(&remedy));
}

async fn database_check(r: &mut Report, imsg: &ImsgClient, plan: &Plan) {
    let remedy = if matches!(plan, Plan::Ssh(_)) {
        FDA_REMOTE
    } else {
        FDA_LOCAL
    };
    match imsg.chats_list(5).await {
        Ok(chats) => r.ok(
            "imsg.database",
            format!("chat.db readable ({} recent chats)", chats.len()),
        ),
        Err(err) => {
            let text = err.to_string();
            let permission = err.code() == Some(-32002)
                || text.contains("Full Disk Access")
                || text.contains("authorization denied")
                || text.contains("Permission Error");
            r.add(
                "imsg.database",
                Status::Fail,
                text,
                Some(if permission {
                    remedy
                } else {
                    "check channels.imessage.dbPath"
                }),
            );
        }
    }
}

async fn files_checks(r: &mut Report, imsg: &ImsgClient, files: &Files, account: &Account, config: &Config) {
    let remote = matches!(files, Files::Remote(_));
    match files.method().await {
        Method::Sftp => r.ok("sftp", "the sftp subsystem is available on the open connection"),
        Method::ExecCat => r.add(
            "sftp",
            Status::Warn,
            "the server refused the sftp subsystem; attachments are read with cat over exec",
            Some("enable `Subsystem sftp` in the Mac's sshd_config for faster, pipelined pulls"),
        ),
        Method::Local => r.skip("sftp", "local process transport: files are read in place"),
    }
    // The attachments folder: each configured root without wildcards, else ~/Library/Messages/Attachments.
    let roots: Vec<String> = if remote {
        account.remote_attachment_roots.clone()
    } else {
        account.attachment_roots.clone()
    };
    let mut candidates: Vec<String> = roots.iter().filter(|r| !r.contains('*')).cloned().collect();
    if let Files::Remote(remote_files) = files
        && let Some(home) = home_of(remote_files).await
    {
        candidates.push(format!("{home}/Library/Messages/Attachments"));
    } else if !remote && let Some(home) = crate::util::home_dir() {
        candidates.push(home.join("Library/Messages/Attachments").display().to_string());
    }
    let mut denied = None;
    let mut readable = None;
    for path in &candidates {
        match list_dir(files, path).await {
            Ok(n) => {
                readable = Some(format!("{path} readable ({n} entries)"));
                break;
            }
            Err(crate::media::FileError::Denied(_)) => denied = Some(path.clone()),
            Err(_) => {}
        }
    }
    match (readable, denied) {
        (Some(detail), _) => r.ok("attachments.root", detail),
        (None, Some(path)) => r.add(
            "attachments.root",
            Status::Fail,
            format!("{path}: permission denied"),
            Some(if remote { FDA_REMOTE } else { FDA_LOCAL }),
        ),
        (None, None) => r.add(
            "attachments.root",
            Status::Warn,
            format!("no attachments folder found ({})", candidates.join(", ")),
            Some(if remote {
                "no attachments yet, or set channels.imessage.remoteAttachmentRoots"
            } else {
                "no attachments yet, or set channels.imessage.attachmentRoots"
            }),
        ),
    }
    // One recent attachment, pulled as `run` would.
    let recent = super::attachments::recent_with_attachments(imsg, 1)
        .await
        .unwrap_or_default();
    let Some(message) = recent.first() else {
        r.skip("attachments.pull", "no recent message with attachments");
        return;
    };
    let runtime = match super::runtime_of(config, account) {
        Ok(runtime) => runtime,
        Err(err) => {
            r.skip("attachments.pull", err.to_string());
            return;
        }
    };
    let mut stager = runtime.media.stager(&account.id, files.clone());
    stager.dir = config
        .bridge
        .state_dir
        .join("media")
        .join(format!("doctor-{}", std::process::id()));
    stager.retries = 0;
    let started = Instant::now();
    let media = stager.stage(message).await;
    let _ = std::fs::remove_dir_all(&stager.dir);
    let method = files.method().await;
    match media
        .iter()
        .find(|m| m.status != crate::envelope::MediaStatus::Ok)
    {
        None => r.ok(
            "attachments.pull",
            format!(
                "rowid {}: {} file(s), {} bytes in {} ms",
                message.id,
                media.len(),
                media.iter().filter_map(|m| m.size).sum::<u64>(),
                started.elapsed().as_millis()
            ),
        ),
        Some(bad) => r.add(
            "attachments.pull",
            if bad.status == crate::envelope::MediaStatus::Denied {
                Status::Fail
            } else {
                Status::Warn
            },
            format!(
                "rowid {}: {} {} ({})",
                message.id,
                bad.status.as_str(),
                bad.remote_path,
                bad.reason.as_deref().unwrap_or("")
            ),
            Some(super::attachments::remedy(bad.status, method)),
        ),
    }
}

async fn home_of(remote: &Arc<RemoteFiles>) -> Option<String> {
    remote.home().await
}

async fn list_dir(files: &Files, path: &str) -> Result<usize, crate::media::FileError> {
    use crate::media::FileError;
    match files {
        Files::Local => std::fs::read_dir(path)
            .map(|d| d.count())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => FileError::Denied(String::new()),
                std::io::ErrorKind::NotFound => FileError::NotFound,
                _ => FileError::Other(e.to_string()),
            }),
        Files::Remote(remote) => remote.count_entries(path).await,
    }
}

async fn send_check(r: &mut Report, imsg: &ImsgClient, target: Option<&str>, account: &Account) {
    let Some(target) = target else {
        r.skip("send.capability", "not tested (doctor sends nothing unless --send-test TARGET); a -1743 error on send means Automation is not allowed for the process running imsg");
        return;
    };
    let parsed = match crate::outbound::parse(target) {
        Ok(t) => t,
        Err(err) => {
            r.add(
                "send.capability",
                Status::Fail,
                err.0,
                Some("pass a handle or chat_id:N to --send-test"),
            );
            return;
        }
    };
    let params = crate::outbound::send_params(
        &parsed,
        "imsg-bridge doctor: send test",
        &[],
        account.service,
        &account.region,
    );
    let Some(params) = params.ok().and_then(|mut p| (!p.is_empty()).then(|| p.remove(0))) else {
        return;
    };
    match imsg.send(&params, Duration::from_secs(30)).await {
        Ok(_) => r.ok("send.capability", format!("a test message was sent to {target}")),
        Err(err) => {
            let text = err.to_string();
            let remedy = if text.contains("-1743") || text.contains("Not authorized to send Apple events") {
                "Automation is denied for the process that runs imsg (over SSH macOS attributes it to sshd-keygen-wrapper, with no usable toggle): run imsg in the logged-in user's context (a LaunchAgent, see deploy/launchd) or use the imsg bridge"
            } else {
                "check that Messages is signed in on the Mac and the target is reachable"
            };
            r.add("send.capability", Status::Fail, text, Some(remedy));
        }
    }
}

fn local_checks(r: &mut Report, config: &Config, plan: &Plan) {
    let dir = &config.bridge.state_dir;
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let writable = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
    let _ = std::fs::remove_file(&probe);
    match writable {
        Ok(()) => r.ok("state_dir", format!("{} writable", dir.display())),
        Err(err) => r.add(
            "state_dir",
            Status::Fail,
            format!("{}: {err}", dir.display()),
            Some("create it and give the service user write access, or set bridge.stateDir"),
        ),
    }
    match plan {
        Plan::Ssh(_) => r.add(
            "keepalive",
            Status::Ok,
            "the bridge sends keepalives (ssh.keepaliveIntervalMs × keepaliveMax) and reconnects on its own",
            Some("also set ClientAliveInterval 30 / ClientAliveCountMax 3 on the Mac (deploy/sshd/imsg-bridge.conf) so a dead link's imsg rpc exits there too"),
        ),
        Plan::Process { .. } => r.skip("keepalive", "local process transport"),
    }
}

/// The nats sink: login, JetStream, the streams and the duplicate window (docs/scale-out.md). Other
/// sinks have nothing to reach before `run`.
async fn agent_check(r: &mut Report, config: &Config) {
    let crate::config::AgentSink::Nats(nats) = &config.bridge.agent else {
        return;
    };
    let max_age = Duration::from_secs(config.bridge.replay.max_age_minutes.saturating_mul(60));
    match crate::sink::nats::probe::probe(nats, max_age).await {
        Ok(probe) => {
            let streams: Vec<String> = probe
                .streams
                .iter()
                .map(|s| match &s.found {
                    Some(f) => format!(
                        "{} {} messages, window {} s",
                        s.name,
                        f.messages,
                        f.duplicate_window.as_secs()
                    ),
                    None => format!("{} not created yet (run creates it)", s.name),
                })
                .collect();
            let detail = format!(
                "{} (nats-server {}): {}",
                probe.servers,
                probe.server_version,
                streams.join("; ")
            );
            let remedy = probe.window_advice.map(|advice| {
                format!("{advice}; raise bridge.agent.duplicateWindowSeconds to {} if two bridges serve one account", max_age.as_secs())
            });
            r.add("agent.nats", Status::Ok, detail, remedy.as_deref());
        }
        Err(err) => r.add(
            "agent.nats",
            Status::Fail,
            err.to_string(),
            Some("envelopes would wait (nothing is lost); see docs/troubleshooting.md, \"The nats sink\""),
        ),
    }
}

/// Skip what depends on imsg, but still run the checks that do not (the list never stops early).
fn finish_without_rpc(mut r: Report, config: &Config, plan: &Plan) -> Report {
    for id in [
        "imsg.rpc",
        "imsg.database",
        "sftp",
        "attachments.root",
        "attachments.pull",
        "send.capability",
    ] {
        if !r.checks.iter().any(|c| c.id == id) {
            r.skip(id, "an earlier check failed");
        }
    }
    local_checks(&mut r, config, plan);
    r
}

/// `program` when it is an executable path, else the first executable named so on PATH.
fn which(program: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program).then(|| program.display().to_string());
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| executable(p))
        .map(|p| p.display().to_string())
}

fn print_table(checks: &[Check]) {
    let color = std::io::stdout().is_terminal();
    for check in checks {
        let (label, code) = match check.status {
            Status::Ok => ("ok", "32"),
            Status::Warn => ("warn", "33"),
            Status::Fail => ("FAIL", "31"),
            Status::Skip => ("skip", "90"),
        };
        let label = if color {
            format!("\x1b[{code}m{label:<4}\x1b[0m")
        } else {
            format!("{label:<4}")
        };
        println!("{label}  {:<18} {}", check.id, check.detail);
        if let Some(remedy) = &check.remedy
            && matches!(check.status, Status::Fail | Status::Warn)
        {
            println!("      {:<18} → {remedy}", "");
        }
    }
}

//! Any imsg command but `rpc`: run on the Mac with our stdin, stdout and stderr, and exit as it
//! exited. Local files named by `--file` of the CLI sends are uploaded first and the argument
//! points at the Mac's copy (left for the next start's sweep: the command may still be sending).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::task::TaskTracker;

use super::command::{file_args, remote_line, replace_file_arg};
use super::{DropinError, LinkSource};
use crate::media::RemoteFiles;
use crate::media::roots::{Caller, OutboundRoots};
use crate::media::upload;
use crate::transport::link::Link;
use crate::transport::ssh::{ExecEvent, ExecInput};

/// What a plain command needs.
#[derive(Debug, Clone)]
pub struct CommandSettings {
    pub remote_cli: Option<String>,
    pub upload_max_bytes: u64,
    pub sftp_timeout: Duration,
    /// The places never sent from, whoever runs the command.
    pub outbound: OutboundRoots,
}

/// Run `imsg ARGS…` on the Mac; its exit status (128 + signal when killed).
pub async fn run(
    source: &mut LinkSource,
    mut args: Vec<String>,
    settings: &CommandSettings,
) -> Result<i32, DropinError> {
    let link = source.link().await?;
    upload_file_args(&link, &mut args, settings).await?;
    let line = remote_line(settings.remote_cli.as_deref(), &args);
    let (mut output, input) = link.exec(&line).await?.split();
    // The input stays open until the output ends: over a shared connection, a closed input is
    // the client going away, which closes the channel.
    let input = Arc::new(input);
    let tasks = TaskTracker::new();
    tasks.spawn(forward_stdin(input.clone()));
    tasks.close();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut status = None;
    while let Some(event) = output.next().await {
        match event {
            ExecEvent::Stdout(data) => {
                stdout.write_all(&data).await.map_err(DropinError::Client)?;
                stdout.flush().await.map_err(DropinError::Client)?;
            }
            ExecEvent::Stderr(data) => {
                let _ = stderr.write_all(&data).await;
                let _ = stderr.flush().await;
            }
            ExecEvent::Exited(code) => status = Some(code),
            ExecEvent::Killed { number, .. } => status = Some(128 + number),
            ExecEvent::Eof => {}
        }
    }
    drop(input);
    status.ok_or(DropinError::Lost)
}

async fn upload_file_args(
    link: &Link,
    args: &mut [String],
    settings: &CommandSettings,
) -> Result<(), DropinError> {
    let local: Vec<_> = file_args(args)
        .into_iter()
        .filter(|a| Path::new(&a.path).is_file())
        .collect();
    if local.is_empty() {
        return Ok(());
    }
    // Every file is checked before the first upload; the real path is what is uploaded.
    let mut real = Vec::with_capacity(local.len());
    for arg in &local {
        real.push(settings.outbound.check(Path::new(&arg.path), Caller::Operator)?);
    }
    let files = RemoteFiles::new(link.clone(), settings.sftp_timeout);
    for (arg, real) in local.into_iter().zip(real) {
        let uploaded = upload::upload(&files, &real, settings.upload_max_bytes)
            .await
            .map_err(|source| DropinError::Upload {
                path: arg.path.clone(),
                source,
            })?;
        replace_file_arg(args, &arg, &uploaded.remote_path);
    }
    Ok(())
}

/// Our stdin to the command's, as `ssh -T` does; EOF follows ours.
async fn forward_stdin(input: Arc<ExecInput>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if input.send(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = input.eof().await;
}

//! `imsg-bridge detect WRAPPER [--json]`: read a wrapper script (never run it) and say which SSH
//! target it reaches and whether `transport: "auto"` would replace it with the native connection.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::transport::wrapper::{self, WrapperAnalysis};
use crate::util::expand_tilde;

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// The wrapper script (usually channels.imessage.cliPath)
    wrapper: PathBuf,
    /// One JSON object (the fields in docs/ssh.md) instead of the table
    #[arg(long)]
    json: bool,
}

/// Exit 0 when the wrapper is transparent, 1 when it is not, 2 when the file cannot be read.
pub fn detect(args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let path = expand_tilde(&args.wrapper.to_string_lossy());
    let analysis = wrapper::analyze_file(&path).map_err(|err| {
        super::CliError::Usage(format!("cannot read the wrapper {}: {err}", path.display()))
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&analysis)?);
    } else {
        print!("{}", table(&path.display().to_string(), &analysis));
    }
    Ok(if analysis.transparent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn table(path: &str, a: &WrapperAnalysis) -> String {
    let dash = || "-".to_string();
    let options: Vec<String> = a.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let rows = [
        ("wrapper", path.to_string()),
        (
            "transparent",
            if a.transparent { "yes" } else { "no" }.to_string(),
        ),
        ("host", a.host.clone().unwrap_or_else(dash)),
        ("user", a.user.clone().unwrap_or_else(dash)),
        ("port", a.port.map(|p| p.to_string()).unwrap_or_else(dash)),
        ("identity files", join_or_dash(&a.identity_files)),
        ("proxy jump", a.proxy_jump.clone().unwrap_or_else(dash)),
        ("config file", a.config_file.clone().unwrap_or_else(dash)),
        ("options", join_or_dash(&options)),
        ("remote imsg", a.remote_command.clone().unwrap_or_else(dash)),
        ("remoteHost", a.remote_host.clone().unwrap_or_else(dash)),
    ];
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(&format!("{name:<15} {value}\n"));
    }
    for warning in &a.warnings {
        out.push_str(&format!("warning         {warning}\n"));
    }
    let verdict = match (&a.remote_host, a.transparent) {
        (Some(remote), true) => {
            format!("transport \"auto\" replaces this wrapper with a native SSH connection to {remote}")
        }
        (Some(remote), false) => format!(
            "not replaced: transport \"auto\" runs the script as a process; to go native, set channels.imessage.ssh.host (target read here: {remote})"
        ),
        (None, _) => "not replaced: no SSH target could be read; set channels.imessage.ssh.host".to_string(),
    };
    out.push_str(&format!("verdict         {verdict}\n"));
    out
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_target_and_the_verdict() {
        let a = wrapper::analyze(
            "#!/bin/sh\nexec ssh -T -p 2222 -o BatchMode=yes bot@mac.local /opt/homebrew/bin/imsg \"$@\"\n",
        );
        let text = table("/w", &a);
        assert!(text.contains("transparent     yes\n"), "{text}");
        assert!(text.contains("port            2222\n"), "{text}");
        assert!(text.contains("options         BatchMode=yes\n"), "{text}");
        assert!(text.contains("native SSH connection to bot@mac.local"), "{text}");
        let opaque = wrapper::analyze("ssh mac imsg \"$@\" | grep x\n");
        let text = table("/w", &opaque);
        assert!(
            text.contains("transparent     no\n") && text.contains("warning         "),
            "{text}"
        );
        assert!(text.contains("runs the script as a process"), "{text}");
    }
}

//! The drop-in's command line, as pure functions: is it `imsg rpc` (proxied) or any other imsg
//! command (run as it is), the remote shell line that runs it on the Mac, which arguments name
//! local files to upload, and whether a `cliPath` would lead back into imsg-bridge.

use std::path::Path;

use crate::transport::ssh::quote::{quote, quote_keep_tilde};

/// Homebrew's two prefixes: macOS runs `ssh host cmd` in a non-login shell whose PATH lacks them.
const HOMEBREW_PATH: &str = "/opt/homebrew/bin:/usr/local/bin";

/// The CLI sends whose `--file` names a file to send (docs/guides/openclaw.md).
const FILE_COMMANDS: [&str; 3] = ["send", "send-attachment", "send-rich"];

/// What `imsg ARGS…` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `imsg rpc …`: the JSON-RPC stream, proxied line by line.
    Rpc,
    /// Any other command (help included): run on the Mac, output passed through.
    Command,
}

/// `rpc` with anything but a help flag is the proxy; `rpc --help` is a plain command.
pub fn mode(args: &[String]) -> Mode {
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    match args.first().map(String::as_str) {
        Some("rpc") if !help => Mode::Rpc,
        _ => Mode::Command,
    }
}

/// The remote shell line for `imsg ARGS…`. With no configured imsg path, `imsg` is looked up on
/// the non-login PATH plus Homebrew's prefixes, in one exec (no extra round trip to find it).
/// Every argument is single-quoted; the value of `--db` keeps a leading `~/` for the Mac's shell,
/// as the ssh wrapper did (docs/ssh.md).
pub fn remote_line(remote_cli: Option<&str>, args: &[String]) -> String {
    let mut line = match remote_cli.map(str::trim).filter(|c| !c.is_empty()) {
        Some(cli) => format!("exec {}", quote_keep_tilde(cli)),
        None => format!("PATH=\"$PATH:{HOMEBREW_PATH}\"; export PATH; exec imsg"),
    };
    let mut after_db = false;
    for arg in args {
        line.push(' ');
        if after_db {
            line.push_str(&quote_keep_tilde(arg));
        } else if let Some(db) = arg.strip_prefix("--db=") {
            line.push_str("--db=");
            line.push_str(&quote_keep_tilde(db));
        } else {
            line.push_str(&quote(arg));
        }
        after_db = arg == "--db";
    }
    line
}

/// One `--file` argument of a CLI send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileArg {
    /// Index of the argument that holds the path.
    pub index: usize,
    /// `--file=PATH` (the path follows the `=`) rather than `--file PATH`.
    pub glued: bool,
    pub path: String,
}

/// The `--file` arguments of `send`, `send-attachment` and `send-rich`; none for other commands.
pub fn file_args(args: &[String]) -> Vec<FileArg> {
    let Some(command) = args.first() else {
        return Vec::new();
    };
    if !FILE_COMMANDS.contains(&command.as_str()) {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut iter = args.iter().enumerate().skip(1);
    while let Some((index, arg)) = iter.next() {
        if arg == "--" {
            break;
        }
        if let Some(path) = arg.strip_prefix("--file=") {
            found.push(FileArg {
                index,
                glued: true,
                path: path.to_string(),
            });
        } else if arg == "--file"
            && let Some((next, path)) = iter.next()
        {
            found.push(FileArg {
                index: next,
                glued: false,
                path: path.clone(),
            });
        }
    }
    found
}

/// Put the Mac's path in place of a local one.
pub fn replace_file_arg(args: &mut [String], arg: &FileArg, remote: &str) {
    if let Some(slot) = args.get_mut(arg.index) {
        *slot = if arg.glued {
            format!("--file={remote}")
        } else {
            remote.to_string()
        };
    }
}

/// Whether running `program` would start imsg-bridge again: our own binary, a file named like it,
/// or a small script that mentions it (a wrapper around the drop-in). Following it would loop.
pub fn leads_back(program: &Path, own_exe: Option<&Path>) -> bool {
    let canonical = std::fs::canonicalize(program).ok();
    let own = own_exe.and_then(|p| std::fs::canonicalize(p).ok());
    if canonical.is_some() && canonical == own {
        return true;
    }
    let named_like_us = program
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("imsg-bridge"));
    if named_like_us {
        return true;
    }
    const SCRIPT_MAX: u64 = 64 * 1024;
    let small = std::fs::metadata(program).is_ok_and(|m| m.is_file() && m.len() <= SCRIPT_MAX);
    small && std::fs::read(program).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains("imsg-bridge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn only_rpc_without_help_is_proxied() {
        let table: [(&[&str], Mode); 6] = [
            (&["rpc"], Mode::Rpc),
            (&["rpc", "--json", "--db", "/x"], Mode::Rpc),
            (&["rpc", "--help"], Mode::Command),
            (&["rpc", "-h"], Mode::Command),
            (&["status", "--json"], Mode::Command),
            (&[], Mode::Command),
        ];
        for (words, expected) in table {
            assert_eq!(mode(&args(words)), expected, "{words:?}");
        }
    }

    #[test]
    fn quotes_every_argument_for_the_remote_shell() {
        let line = remote_line(
            Some("/opt/homebrew/bin/imsg"),
            &args(&["send", "--text", "it's $HOME; rm -rf /", "--to", "+1 555"]),
        );
        assert_eq!(
            line,
            r#"exec /opt/homebrew/bin/imsg send --text 'it'\''s $HOME; rm -rf /' --to '+1 555'"#
        );
    }

    #[test]
    fn leaves_the_tilde_of_the_database_path_to_the_mac() {
        let line = remote_line(None, &args(&["rpc", "--db", "~/Library/Messages/chat.db"]));
        assert!(
            line.starts_with("PATH=\"$PATH:/opt/homebrew/bin:/usr/local/bin\"; export PATH; exec imsg rpc")
        );
        assert!(line.ends_with(" --db ~/Library/Messages/chat.db"), "{line}");
        let glued = remote_line(Some("imsg"), &args(&["rpc", "--db=~/my db"]));
        assert_eq!(glued, "exec imsg rpc --db=~/'my db'");
        let text = remote_line(Some("imsg"), &args(&["send", "--text", "~/not a path"]));
        assert_eq!(text, "exec imsg send --text '~/not a path'");
    }

    #[test]
    fn finds_the_files_of_the_three_cli_sends_only() {
        let found = file_args(&args(&[
            "send",
            "--to",
            "a",
            "--file",
            "/tmp/a.jpg",
            "--file=/tmp/b.png",
        ]));
        assert_eq!(
            found,
            vec![
                FileArg {
                    index: 4,
                    glued: false,
                    path: "/tmp/a.jpg".into()
                },
                FileArg {
                    index: 5,
                    glued: true,
                    path: "/tmp/b.png".into()
                },
            ]
        );
        assert_eq!(file_args(&args(&["send-rich", "--file", "x"])).len(), 1);
        assert_eq!(file_args(&args(&["send-attachment", "--file", "x"])).len(), 1);
        assert!(file_args(&args(&["history", "--file", "x"])).is_empty());
        assert!(file_args(&args(&["send", "--", "--file", "x"])).is_empty());
        assert!(file_args(&args(&["send", "--file"])).is_empty());
    }

    #[test]
    fn replaces_a_file_argument_in_either_form() {
        let mut words = args(&["send", "--file", "/l/a", "--file=/l/b"]);
        for arg in file_args(&words.clone()) {
            replace_file_arg(&mut words, &arg, &format!("/mac{}", arg.path));
        }
        assert_eq!(words, args(&["send", "--file", "/mac/l/a", "--file=/mac/l/b"]));
    }

    #[test]
    fn a_wrapper_around_the_drop_in_leads_back() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("imsg");
        std::fs::write(&wrapper, "#!/bin/sh\nexec imsg-bridge imsg \"$@\"\n").unwrap();
        assert!(leads_back(&wrapper, None));
        let ssh = dir.path().join("imsg-ssh");
        std::fs::write(&ssh, "#!/bin/sh\nexec ssh -T bot@mac imsg \"$@\"\n").unwrap();
        assert!(!leads_back(&ssh, None));
        assert!(leads_back(Path::new("/usr/local/bin/imsg-bridge"), None));
        assert!(leads_back(&ssh, Some(&ssh)), "our own binary, by canonical path");
    }
}

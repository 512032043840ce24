//! Wrapper-script detection: read a `cliPath` script such as `exec ssh -T bot@mac imsg "$@"` — never
//! run it — and find the SSH target the native connection should use instead (docs/ssh.md).
//!
//! The rule that shapes everything here is "never a wrong host": upstream's regex picked the jump host
//! or an email address in a comment. So the script is read as shell words, ssh's argv is walked the way
//! OpenSSH's getopt loop walks it, and whatever we cannot evaluate makes the host unknown rather than a
//! guess. A wrapper is *transparent* when the native connection can replace it without changing
//! behaviour; otherwise `warnings` says why, and the fields still hold what could be read.

mod argv;
mod shell;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use argv::{Target, read_ssh};
use shell::{Arg, Command, Part, Sep, Vars, Word};

/// What a wrapper script tells about its SSH target. Serialised as `imsg-bridge detect --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WrapperAnalysis {
    pub transparent: bool,
    pub host: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub config_file: Option<String>,
    /// Other `-o` options, keys as written (e.g. `BatchMode`).
    pub options: BTreeMap<String, String>,
    /// The imsg path the remote command names, e.g. `/usr/local/bin/imsg`.
    pub remote_command: Option<String>,
    /// `user@host` or `host` (an IPv6 host in brackets): what `remoteHost` would be.
    pub remote_host: Option<String>,
    pub warnings: Vec<String>,
}

/// At most this many warnings are kept, then one saying more were omitted.
const MAX_WARNINGS: usize = 12;

/// A wrapper is a few lines; anything larger is not one, and we do not read it all.
const MAX_SCRIPT_BYTES: u64 = 1 << 20;

/// Analyses a wrapper script. Total: any text gives an analysis, never a panic.
pub fn analyze(script: &str) -> WrapperAnalysis {
    let mut report = Report::default();
    if script.contains('\0') {
        report.fail("the file is not a text script (it contains NUL bytes)");
        return report.finish(Target::default());
    }
    if script.contains("\r\n") {
        // The shell keeps the CR as part of each word (`imsg\r`), so such a wrapper never worked.
        report.fail("the script has Windows line endings (CR LF), which the shell does not accept");
    }
    let parsed = shell::parse(script);
    // After control flow we cannot tell which assignments ran, so none of them is trusted.
    let mut uncertain = !parsed.problems.is_empty();
    for problem in &parsed.problems {
        report.fail(format!("the script {problem}"));
    }
    let mut vars = Vars::default();
    let mut ssh_runs: Vec<Vec<Arg>> = Vec::new();
    for command in &parsed.commands {
        let kind = visit(command, &mut vars, &mut uncertain, &mut report);
        let after_ssh = !ssh_runs.is_empty() && !matches!(kind, Kind::Skip);
        if after_ssh {
            report.fail(format!(
                "the script runs `{}` after ssh",
                shown(&command_text(command))
            ));
        }
        match kind {
            Kind::Ssh(args) => {
                check_joints(command, &mut report);
                check_redirects(command, "ssh", &mut report);
                ssh_runs.push(args);
            }
            Kind::Other(name) if !after_ssh => report.fail(format!(
                "the script runs `{}`, which the native connection would not run",
                shown(&name)
            )),
            Kind::Other(_) | Kind::Quiet | Kind::Skip => {}
        }
    }
    let mut target = Target::default();
    match ssh_runs.as_slice() {
        [] => report.fail("no command in the script runs ssh"),
        [args] => read_ssh(args, &mut target, &mut report),
        runs => report.fail(format!(
            "the script runs ssh {} times, so the target is ambiguous",
            runs.len()
        )),
    }
    report.finish(target)
}

/// Reads and analyses the script at `path` (already `~`-expanded). Invalid UTF-8 is replaced, not fatal.
pub fn analyze_file(path: &Path) -> std::io::Result<WrapperAnalysis> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        let mut report = Report::default();
        report.fail("the file is larger than 1 MiB, too large for a wrapper script");
        return Ok(report.finish(Target::default()));
    }
    Ok(analyze(&String::from_utf8_lossy(&bytes)))
}

/// What a command does, as far as wrapper detection cares.
enum Kind {
    /// Runs ssh with these arguments.
    Ssh(Vec<Arg>),
    /// Harmless before ssh (`set -e`, an assignment, `umask 077`).
    Quiet,
    /// A control-flow keyword line (`fi`, `done`), already reported.
    Skip,
    /// Runs something else, named as written.
    Other(String),
}

const KEYWORDS: [&str; 17] = [
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac", "select",
    "function", "{", "}", "!",
];
/// Keywords after which the rest of the line is still a simple command (`then exec ssh …`).
const LEADING_KEYWORDS: [&str; 8] = ["if", "then", "else", "elif", "do", "while", "until", "!"];

fn visit(command: &Command, vars: &mut Vars, uncertain: &mut bool, report: &mut Report) -> Kind {
    let mut words = command.words.as_slice();
    while let Some((first, rest)) = words.split_first()
        && let Some(keyword) = KEYWORDS.iter().find(|k| is_plain(first, k))
    {
        *uncertain = true;
        report.fail(
            "the script uses control flow (`if`, `while`, `case`, …), so whether ssh runs depends on it",
        );
        if !LEADING_KEYWORDS.contains(keyword) {
            return Kind::Skip;
        }
        words = rest;
    }
    // An assignment in a pipeline, behind `&&`/`||` or in the background may not take effect.
    let conditional = *uncertain
        || matches!(command.before, Sep::And | Sep::Or | Sep::Pipe)
        || matches!(command.after, Sep::Pipe | Sep::Background);
    let prefix = words.iter().take_while(|w| assignment(w).is_some()).count();
    let (assignments, words) = words.split_at(prefix);
    if words.is_empty() {
        for (name, value) in assignments.iter().filter_map(assignment) {
            vars.set(&name, if conditional { None } else { vars.value(&value) });
        }
        return Kind::Quiet;
    }
    // `NAME=value cmd` sets NAME for cmd only (or, before special builtins, for good): unknown after.
    for (name, _) in assignments.iter().filter_map(assignment) {
        vars.set(&name, None);
    }
    if let Some((first, rest)) = words.split_first()
        && ["export", "readonly", "declare", "typeset", "local"]
            .iter()
            .any(|k| is_plain(first, k))
    {
        for (name, value) in rest.iter().filter_map(assignment) {
            vars.set(&name, if conditional { None } else { vars.value(&value) });
        }
        return Kind::Quiet;
    }
    let args: Vec<Arg> = words.iter().flat_map(|w| vars.expand(w)).collect();
    classify(&args, command, vars, conditional, report)
}

/// Looks through `exec`, `command` and `env` to the program, and sorts it.
fn classify(
    args: &[Arg],
    command: &Command,
    vars: &mut Vars,
    conditional: bool,
    report: &mut Report,
) -> Kind {
    let mut rest = args;
    let mut via_exec = false;
    while let Some((Arg::Lit(first), tail)) = rest.split_first() {
        rest = match first.as_str() {
            "exec" => {
                via_exec = true;
                skip_options(tail, &["-c", "-l"], &["-a"])
            }
            "command" => {
                if let Some(Arg::Lit(flag)) = tail.first()
                    && (flag == "-v" || flag == "-V")
                {
                    return Kind::Quiet; // `command -v ssh` looks ssh up; it does not run it.
                }
                skip_options(tail, &["-p"], &[])
            }
            _ if basename(first) == "env" => {
                let tail = skip_options(tail, &["-i", "-", "--ignore-environment"], &["-u"]);
                let assigns = tail
                    .iter()
                    .take_while(|a| matches!(a, Arg::Lit(s) if is_env_assignment(s)));
                &tail[assigns.count()..]
            }
            _ => break,
        };
    }
    let Some((program, params)) = rest.split_first() else {
        if via_exec {
            // `exec 2>log` redirects the wrapper itself.
            check_redirects(command, "the wrapper", report);
            return Kind::Quiet;
        }
        return Kind::Other(command_text(command));
    };
    let Arg::Lit(name) = program else {
        return Kind::Other(program.shown().to_string());
    };
    if basename(name) == "ssh" {
        return Kind::Ssh(params.to_vec());
    }
    let quiet = match name.as_str() {
        ":" | "true" | "false" | "[" | "[[" | "test" | "exit" | "umask" | "shopt" => true,
        "set" => set_is_harmless(params),
        "unset" => {
            for param in params {
                if let Arg::Lit(var) = param {
                    vars.set(var, if conditional { None } else { Some(String::new()) });
                }
            }
            true
        }
        // Logging to stderr cannot disturb the JSON-RPC stream on stdout.
        "echo" | "printf" => command
            .redirects
            .iter()
            .any(|r| r.fd == 1 && r.op == ">&" && r.target == "2"),
        _ => false,
    };
    if quiet {
        Kind::Quiet
    } else {
        Kind::Other(command_text(command))
    }
}

/// Skips `flags` and `with_value` options (and their values) and a `--`.
fn skip_options<'a>(mut args: &'a [Arg], flags: &[&str], with_value: &[&str]) -> &'a [Arg] {
    while let Some((Arg::Lit(word), tail)) = args.split_first() {
        if word == "--" {
            return tail;
        } else if flags.contains(&word.as_str()) {
            args = tail;
        } else if with_value.contains(&word.as_str()) {
            args = tail.get(1..).unwrap_or_default();
        } else if word.starts_with("--unset=") {
            args = tail; // env's long form of -u
        } else {
            break;
        }
    }
    args
}

/// `set -e`, `set -euo pipefail`, `set +x` are harmless; `set -- a b` replaces `"$@"`.
fn set_is_harmless(params: &[Arg]) -> bool {
    let mut option_name_next = false;
    for param in params {
        let Arg::Lit(word) = param else { return false };
        if option_name_next {
            option_name_next = false;
        } else if word == "--" || word == "-" || !(word.starts_with('-') || word.starts_with('+')) {
            return false;
        } else {
            option_name_next = word.ends_with('o');
        }
    }
    true
}

/// A joint that makes ssh conditional, or hands its output to someone else, defeats transparency.
fn check_joints(command: &Command, report: &mut Report) {
    match command.before {
        Sep::And | Sep::Or => report.fail("ssh runs only if the command before it succeeds or fails"),
        Sep::Pipe => report.fail("another command's output is piped into ssh"),
        Sep::Seq | Sep::Background => {}
    }
    match command.after {
        Sep::Pipe => report.fail("ssh's output is piped into another command"),
        Sep::And | Sep::Or => report.fail("the script runs more commands after ssh (`&&` or `||`)"),
        Sep::Background => report.fail("the script runs ssh in the background (`&`)"),
        Sep::Seq => {}
    }
}

/// stdin and stdout carry the JSON-RPC stream; only stderr may go elsewhere.
fn check_redirects(command: &Command, who: &str, report: &mut Report) {
    for r in &command.redirects {
        let harmless = r.fd >= 3 || (r.fd == 2 && matches!(r.op.as_str(), ">" | ">>" | ">|"));
        if !harmless {
            let fd = if r.op.starts_with('&') {
                String::new()
            } else {
                r.fd.to_string()
            };
            report.fail(format!(
                "{who} redirects its standard streams (`{fd}{}{}`)",
                r.op,
                shown(&r.target)
            ));
        }
    }
}

/// `NAME=value`: the name and the parts of the value.
fn assignment(word: &Word) -> Option<(String, Vec<Part>)> {
    let (Part::Lit { text, quoted: false }, rest) = word.parts.split_first()? else {
        return None;
    };
    let (name, value) = text.split_once('=')?;
    if !shell::is_name(name) {
        return None;
    }
    let mut parts = Vec::with_capacity(word.parts.len());
    if !value.is_empty() {
        parts.push(Part::Lit {
            text: value.to_string(),
            quoted: false,
        });
    }
    parts.extend(rest.iter().cloned());
    Some((name.to_string(), parts))
}

fn is_env_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| shell::is_name(name))
}

/// Whether `word` is exactly `text`, unquoted (a quoted `"if"` is not a keyword).
fn is_plain(word: &Word, text: &str) -> bool {
    matches!(word.parts.as_slice(), [Part::Lit { text: t, quoted: false }] if t == text)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn command_text(command: &Command) -> String {
    command
        .words
        .iter()
        .map(|w| w.raw.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word for a message: at most 60 characters, control characters escaped.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(60) {
        match c {
            shell::HOME => out.push_str("$HOME"),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    if text.chars().nth(60).is_some() {
        out.push('…');
    }
    out
}

/// Collects warnings; `fail` also marks the wrapper as not transparent.
#[derive(Debug, Default)]
struct Report {
    warnings: Vec<String>,
    blocked: bool,
}

impl Report {
    fn fail(&mut self, message: impl Into<String>) {
        self.blocked = true;
        self.note(message);
    }

    fn note(&mut self, message: impl Into<String>) {
        let message = message.into();
        // A person reads these; past a dozen more add nothing, and an unbounded list (one per line
        // of a huge file) would make the de-duplication quadratic.
        if self.warnings.len() == MAX_WARNINGS {
            self.warnings.push("(further warnings omitted)".to_string());
        } else if self.warnings.len() < MAX_WARNINGS && !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    fn finish(mut self, t: Target) -> WrapperAnalysis {
        let host = match (t.host_unknown, t.host_name) {
            (true, _) => None,
            (false, Some(host_name)) => host_name,
            (false, None) => t.destination,
        };
        let user_unreadable = matches!(t.user, Some(None));
        let user = t.user.flatten();
        let remote_host = host.as_ref().filter(|_| !user_unreadable).map(|host| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            user.as_ref()
                .map_or_else(|| host.clone(), |user| format!("{user}@{host}"))
        });
        if host.is_none() && !self.blocked {
            self.fail("the wrapper names no host");
        }
        WrapperAnalysis {
            transparent: !self.blocked,
            host,
            user,
            port: t.port.flatten(),
            identity_files: t.identity_files,
            proxy_jump: t.proxy_jump.flatten(),
            config_file: t.config_file,
            options: t.options,
            remote_command: t.remote_command,
            remote_host,
            warnings: self.warnings,
        }
    }
}

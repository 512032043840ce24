//! ssh's own command line, walked the way OpenSSH's getopt loop walks it: options, the destination,
//! more options (OpenSSH restarts getopt after the destination), then the remote command.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use super::shell::{self, Arg};
use super::{Report, basename, shown};

/// OpenSSH's flags without an argument (`ssh.c` getopt string, OpenSSH 9.x).
const FLAGS: &str = "246AaCfGgKkMNnqsTtVvXxYy";
/// OpenSSH's options that take an argument, glued (`-p2222`) or as the next word. `-P` is neither: it
/// takes a tag in newer releases and nothing in older ones (9.2), so it is refused as ambiguous.
const WITH_ARGUMENT: &str = "bBcDEeFIiJLlmOopQRSWw";

/// What ssh's argv says. Single-valued settings keep OpenSSH's rule: the first value obtained, in argv
/// order, wins — for the user that spans `-l`, `-o User=` and `user@` in the destination alike (checked
/// with `ssh -G` on OpenSSH 9.2: `-l alice bob@h` gives alice, `bob@h -l alice` gives bob). An inner
/// `None` records a value we could not read or accept, which still blocks later ones.
#[derive(Debug, Default)]
pub(super) struct Target {
    pub(super) destination: Option<String>,
    pub(super) host_name: Option<Option<String>>,
    pub(super) user: Option<Option<String>>,
    pub(super) port: Option<Option<u16>>,
    pub(super) proxy_jump: Option<Option<String>>,
    pub(super) identity_files: Vec<String>,
    pub(super) config_file: Option<String>,
    pub(super) options: BTreeMap<String, String>,
    pub(super) remote_command: Option<String>,
    /// Something we could not read may set the host, so we name none.
    pub(super) host_unknown: bool,
}

/// Walks ssh's argv; the remote command starts at the first non-option word after the destination.
pub(super) fn read_ssh(args: &[Arg], t: &mut Target, report: &mut Report) {
    let mut i = 0;
    let mut options_done = false;
    let mut have_destination = false;
    while let Some(arg) = args.get(i) {
        let word = match arg {
            Arg::Lit(word) => word,
            _ if options_done && have_destination => break,
            // The caller's own arguments right after the destination are the remote command: OpenSSH
            // would read options there too, but imsg's first argument (`rpc`, `status`, …) is never
            // one. Another unreadable word there may be an option that moves the host.
            Arg::AllArgs if have_destination => break,
            _ => {
                report.fail(format!(
                    "ssh's argument `{}` cannot be read (an unset variable or a substitution), so the \
                     host is unknown",
                    shown(arg.shown())
                ));
                unknown_target(t);
                return;
            }
        };
        if !options_done && word == "--" {
            options_done = true;
            i += 1;
        } else if !options_done && word.len() > 1 && word.starts_with('-') {
            match read_cluster(args, i, t, report) {
                Some(next) => i = next,
                None => return,
            }
        } else if !have_destination {
            read_destination(word, t, report);
            have_destination = true;
            i += 1;
        } else {
            break;
        }
    }
    if !have_destination {
        report.fail("ssh is given no destination");
        return;
    }
    read_remote_command(&args[i..], t, report);
}

/// Reads one option word (`-T`, `-Tq`, `-p2222`, `-p 2222`); returns the index after it, or `None`
/// when ssh would refuse the command line and reading stops.
fn read_cluster(args: &[Arg], i: usize, t: &mut Target, report: &mut Report) -> Option<usize> {
    let letters: Vec<char> = args
        .get(i)
        .map(Arg::shown)
        .unwrap_or_default()
        .chars()
        .skip(1)
        .collect();
    for (k, &letter) in letters.iter().enumerate() {
        if FLAGS.contains(letter) {
            read_flag(letter, report);
        } else if WITH_ARGUMENT.contains(letter) {
            let glued: String = letters[k + 1..].iter().collect();
            let (value, next) = if !glued.is_empty() {
                (Arg::Lit(glued), i + 1)
            } else if let Some(value) = args.get(i + 1) {
                (value.clone(), i + 2)
            } else {
                report.fail(format!("ssh option -{letter} is missing its argument"));
                unknown_target(t);
                return None;
            };
            read_option(letter, &value, t, report);
            return Some(next);
        } else if letter == 'P' {
            report.fail(
                "ssh -P takes an argument only in newer OpenSSH releases, so the command line is ambiguous",
            );
            unknown_target(t);
            return None;
        } else {
            report.fail(format!(
                "ssh has no option -{}, so its command line cannot be read",
                letter.escape_debug()
            ));
            unknown_target(t);
            return None;
        }
    }
    Some(i + 1)
}

fn read_flag(letter: char, report: &mut Report) {
    let reason = match letter {
        'n' => "ssh -n reads stdin from /dev/null, so imsg would receive no requests",
        'N' => "ssh -N runs no remote command",
        'f' => "ssh -f goes to the background",
        's' => "ssh -s requests a subsystem, not a command",
        'G' => "ssh -G only prints its configuration",
        'V' => "ssh -V only prints its version",
        // The rest (-T, -q, -4, -A, …) only tune the connection the native transport replaces.
        _ => return,
    };
    report.fail(reason);
}

fn read_option(letter: char, value: &Arg, t: &mut Target, report: &mut Report) {
    let Arg::Lit(value) = value else {
        report.fail(format!(
            "the value of ssh option -{letter} (`{}`) cannot be read",
            shown(value.shown())
        ));
        match letter {
            'p' => first(&mut t.port, None),
            'l' => first(&mut t.user, None),
            'J' => first(&mut t.proxy_jump, None),
            // An unreadable -o could set HostName, User, Port or ProxyJump.
            'o' => {
                unknown_target(t);
                first(&mut t.port, None);
                first(&mut t.proxy_jump, None);
            }
            _ => {}
        }
        return;
    };
    match letter {
        'p' => set_port(value, t, report),
        'l' => set_user(value, t, report),
        'i' => t.identity_files.push(local_path(value)),
        'F' => t.config_file = Some(local_path(value)), // OpenSSH keeps the last -F
        'J' if t.proxy_jump.is_some() => report.fail("OpenSSH refuses a second jump host (-J)"),
        'J' => set_jump(value, t),
        'o' => read_o(value, t, report),
        'O' => report.fail(format!(
            "ssh -O {} sends a control command instead of running one",
            shown(value)
        )),
        'Q' => report.fail("ssh -Q only lists supported algorithms"),
        'W' => report.fail("ssh -W forwards stdio to another host instead of running a command"),
        // -e and -E only concern the local client's escape character and log.
        'e' | 'E' => {}
        _ => report.note(format!(
            "ssh option -{letter} {} is not carried over to the native connection",
            shown(value)
        )),
    }
}

/// `-o Key=Value` or `-o "Key Value"`; keys are case-insensitive as in OpenSSH.
fn read_o(text: &str, t: &mut Target, report: &mut Report) {
    let text = text.trim();
    let (key, value) = match text.find(|c: char| c == '=' || c.is_whitespace()) {
        Some(at) => {
            let value = text[at..].trim_start();
            let value = value.strip_prefix('=').unwrap_or(value).trim();
            (
                &text[..at],
                value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value),
            )
        }
        None => (text, ""),
    };
    if key.is_empty() || value.is_empty() {
        report.fail(format!("ssh option -o {} has no value", shown(text)));
        return;
    }
    let yes = value.eq_ignore_ascii_case("yes");
    match key.to_ascii_lowercase().as_str() {
        "user" => return set_user(value, t, report),
        "port" => return set_port(value, t, report),
        "hostname" => {
            if t.host_name.is_none() {
                let host = valid_host(value);
                if host.is_none() {
                    report.fail(format!(
                        "HostName `{}` is not a plain host name or address",
                        shown(value)
                    ));
                }
                t.host_name = Some(host);
            }
            return;
        }
        "proxyjump" => return set_jump(value, t),
        "identityfile" => {
            t.identity_files.push(local_path(value));
            return;
        }
        "remotecommand" if !value.eq_ignore_ascii_case("none") => {
            report.fail("ssh -o RemoteCommand replaces the remote command");
        }
        "sessiontype" if !value.eq_ignore_ascii_case("default") => {
            report.fail(format!(
                "ssh -o SessionType={} runs no plain command",
                shown(value)
            ));
        }
        "stdinnull" if yes => report.fail("ssh -o StdinNull=yes gives imsg no requests"),
        "forkafterauthentication" if yes => report.fail("ssh goes to the background"),
        _ => {}
    }
    if !t.options.keys().any(|k| k.eq_ignore_ascii_case(key)) {
        t.options.insert(key.to_string(), local_path(value));
    }
}

/// `host`, `user@host`, `user@[::1]`, `user@::1` or `ssh://user@host:port`.
fn read_destination(word: &str, t: &mut Target, report: &mut Report) {
    let bad = |report: &mut Report| {
        report.fail(format!(
            "the destination `{}` is not a host we can use",
            shown(word)
        ));
    };
    let uri = word
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("ssh://"))
        .map(|_| &word[6..]);
    let (user, host, port) = match uri {
        Some(rest) => {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (user, host_port) = split_user(rest);
            match host_port.strip_prefix('[').and_then(|h| h.split_once(']')) {
                Some((host, after)) => (user, host, Some(after.strip_prefix(':').unwrap_or(after))),
                None => match host_port.rsplit_once(':') {
                    Some((host, port)) => (user, host, Some(port)),
                    None => (user, host_port, None),
                },
            }
        }
        // OpenSSH splits at the last `@`; it keeps `[::1]` brackets (and then cannot resolve them) —
        // we take the evident intent and strip them in `valid_host`.
        None => {
            let (user, host) = split_user(word);
            (user, host, None)
        }
    };
    // User and port come only from a destination we accept.
    let Some(host) = valid_host(host) else {
        return bad(report);
    };
    if let Some(user) = user {
        set_user(user, t, report);
    }
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        set_port(port, t, report);
    }
    t.destination = Some(host);
}

fn split_user(text: &str) -> (Option<&str>, &str) {
    match text.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, text),
    }
}

/// Transparent only for `imsg "$@"`: one word naming imsg, then the wrapper's own arguments.
fn read_remote_command(words: &[Arg], t: &mut Target, report: &mut Report) {
    let Some((first, rest)) = words.split_first() else {
        return report.fail("ssh is given no remote command, so it would open a login shell");
    };
    let Arg::Lit(program) = first else {
        return report.fail(format!(
            "the remote command `{}` cannot be read",
            shown(first.shown())
        ));
    };
    // The remote shell parses the command again, so only a plain path counts as naming imsg.
    let plain = program
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-~+@%:,=".contains(c));
    if !plain {
        let message = format!(
            "the remote command `{}` is not a plain path to imsg",
            shown(program)
        );
        return report.fail(message);
    }
    if basename(program) != "imsg" {
        return report.fail(format!("the remote command `{}` is not imsg", shown(program)));
    }
    t.remote_command = Some(program.clone());
    match rest {
        [Arg::AllArgs] => {}
        [] => report.fail("the remote command does not pass the wrapper's arguments (\"$@\")"),
        _ => report.fail("the remote command passes fixed arguments, not just the wrapper's \"$@\""),
    }
}

fn set_user(value: &str, t: &mut Target, report: &mut Report) {
    if t.user.is_some() {
        return;
    }
    let valid = !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        report.fail(format!("the user `{}` is not a plain user name", shown(value)));
    }
    t.user = Some(valid.then(|| value.to_string()));
}

fn set_port(value: &str, t: &mut Target, report: &mut Report) {
    if t.port.is_some() {
        return;
    }
    let port = value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse::<u16>().ok())
        .flatten();
    let port = port.filter(|&p| p != 0);
    if port.is_none() {
        report.fail(format!("the port `{}` is not a port number", shown(value)));
    }
    t.port = Some(port);
}

fn set_jump(value: &str, t: &mut Target) {
    // `none` is OpenSSH's way of saying "no jump host"; it still counts as the first value.
    let jump = (!value.eq_ignore_ascii_case("none")).then(|| value.to_string());
    first(&mut t.proxy_jump, jump);
}

/// `$HOME/.ssh/key` as `~/.ssh/key`: the same file for a process of the same user on this host.
fn local_path(value: &str) -> String {
    value.replace(shell::HOME, "~")
}

fn first<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

fn unknown_target(t: &mut Target) {
    t.host_unknown = true;
    first(&mut t.user, None);
}

/// Accepts a host token as openclaw's `scp-host` does (docs/ssh.md), plus bare IPv6 literals, which
/// OpenSSH accepts. Returns the host without brackets.
fn valid_host(host: &str) -> Option<String> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let literal = bare.unwrap_or(host);
    let (address, zone) = literal.split_once('%').unwrap_or((literal, "a"));
    let zone_ok = !zone.is_empty()
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if address.parse::<Ipv6Addr>().is_ok() && zone_ok {
        return Some(literal.to_string());
    }
    // 253 is the longest DNS name; a longer token is not a host (and not worth echoing back).
    let plain = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    plain.then(|| host.to_string())
}

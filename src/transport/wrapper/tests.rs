//! Table tests for wrapper detection: each row is a wrapper and what must (and must not) be read from it.

use super::*;

/// (what the row shows, script, host, user, port)
type Row = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<u16>,
);

const TS: Option<&str> = Some("mac-mini.tailnet-1234.ts.net");
const MAC: Option<&str> = Some("mac");

#[rustfmt::skip]
const TRANSPARENT: &[Row] = &[
    ("the documented one-liner", "#!/usr/bin/env bash\nexec ssh -T gateway-host imsg \"$@\"\n", Some("gateway-host"), None, None),
    ("a user at a host", "exec ssh -T bot@mac-mini.tailnet-1234.ts.net imsg \"$@\"", TS, Some("bot"), None),
    ("a user given with -l", "exec ssh -l bob mac imsg \"$@\"", MAC, Some("bob"), None),
    ("a user glued to -l", "exec ssh -lbob mac imsg \"$@\"", MAC, Some("bob"), None),
    ("a user given with -o User=", "exec ssh -o User=bob mac imsg \"$@\"", MAC, Some("bob"), None),
    ("a port given with -p", "exec ssh -p 2222 mac imsg \"$@\"", MAC, None, Some(2222)),
    ("a port glued to -p", "exec ssh -p2222 mac imsg \"$@\"", MAC, None, Some(2222)),
    ("a port given with -o Port=", "exec ssh -o Port=2222 mac imsg \"$@\"", MAC, None, Some(2222)),
    ("an -o key in lower case", "exec ssh -o port=2222 mac imsg \"$@\"", MAC, None, Some(2222)),
    ("an -o value after a space", "exec ssh -o 'Port 2222' mac imsg \"$@\"", MAC, None, Some(2222)),
    ("an identity file", "exec ssh -i ~/.ssh/id_ed25519 mac /opt/homebrew/bin/imsg \"$@\"", MAC, None, None),
    ("a jump host is not the target", "exec ssh -J jump@bastion mac imsg \"$@\"", MAC, None, None),
    ("a ProxyJump option is not the target", "exec ssh -o ProxyJump=jump@bastion mac imsg \"$@\"", MAC, None, None),
    ("an absolute ssh path", "exec /usr/bin/ssh -T mac imsg \"$@\"", MAC, None, None),
    ("ssh through env", "/usr/bin/env ssh -T mac imsg \"$@\"", MAC, None, None),
    ("exec through env", "exec /usr/bin/env ssh -T mac imsg \"$@\"", MAC, None, None),
    ("ssh through command", "command ssh -T mac imsg \"$@\"", MAC, None, None),
    ("ssh without exec", "ssh -T mac imsg \"$@\"", MAC, None, None),
    ("backslash continuations", "exec /usr/bin/ssh -o BatchMode=yes -o ConnectTimeout=5 -T bob@localhost \\\n  \"/usr/local/bin/imsg\" \"$@\"", Some("localhost"), Some("bob"), None),
    ("a continuation before imsg", "exec ssh -T mac \\\n  imsg \"$@\"", MAC, None, None),
    ("a double-quoted destination", "exec ssh -T \"bob@mac\" imsg \"$@\"", MAC, Some("bob"), None),
    ("single-quoted words", "exec ssh -T 'mac' 'imsg' \"$@\"", MAC, None, None),
    ("a host variable on the same line", "HOST=mac; exec ssh -T \"$HOST\" imsg \"$@\"", MAC, None, None),
    ("variables on separate lines", "#!/bin/sh\nTARGET=\"bob@mac\"\nPORT=2222\nexec ssh -p \"${PORT}\" -T $TARGET imsg \"$@\"\n", MAC, Some("bob"), Some(2222)),
    ("an exported variable", "export HOST=mac\nexec ssh -T ${HOST} imsg \"$@\"", MAC, None, None),
    ("a variable holding options", "OPTS='-p 2222 -T'\nexec ssh $OPTS mac imsg \"$@\"", MAC, None, Some(2222)),
    ("an IPv4 host", "exec ssh -T 192.168.1.5 imsg \"$@\"", Some("192.168.1.5"), None, None),
    ("a user at an IPv4 host", "exec ssh -T bob@192.168.1.5 imsg \"$@\"", Some("192.168.1.5"), Some("bob"), None),
    ("a bare IPv6 host", "exec ssh -T ::1 imsg \"$@\"", Some("::1"), None, None),
    ("a user at an IPv6 host", "exec ssh -T bob@fe80::1%en0 imsg \"$@\"", Some("fe80::1%en0"), Some("bob"), None),
    ("a bracketed IPv6 host", "exec ssh -T 'bob@[::1]' imsg \"$@\"", Some("::1"), Some("bob"), None),
    ("an ssh:// URL", "exec ssh -T ssh://bob@mac:2222 imsg \"$@\"", MAC, Some("bob"), Some(2222)),
    ("an ssh:// URL with IPv6", "exec ssh -T ssh://[::1]:22 imsg \"$@\"", Some("::1"), None, Some(22)),
    ("an email address in a comment", "#!/bin/sh\n# imsg-ssh wrapper, contact admin@example.com\nexec ssh -T mac imsg \"$@\" # ssh me@else\n", MAC, None, None),
    ("set -euo pipefail before", "#!/usr/bin/env bash\nset -euo pipefail\nexec ssh -T mac imsg \"$@\"", MAC, None, None),
    ("harmless lines before", "umask 077\nexport LC_ALL=C\n: \"$x\"\necho starting >&2\nexec ssh mac imsg \"$@\"", MAC, None, None),
    ("a flag cluster", "exec ssh -Tq4 mac imsg \"$@\"", MAC, None, None),
    ("options after the destination", "exec ssh mac -T -l bob imsg \"$@\"", MAC, Some("bob"), None),
    ("a -- before the remote command", "exec ssh -T mac -- imsg \"$@\"", MAC, None, None),
    ("a -- before the destination", "exec ssh -T -- mac imsg \"$@\"", MAC, None, None),
    ("unquoted $@", "exec ssh mac imsg $@", MAC, None, None),
    ("quoted $*", "exec ssh mac imsg \"$*\"", MAC, None, None),
    ("stderr sent to a file", "exec 2>>/tmp/imsg.log\nexec ssh mac imsg \"$@\" 2>/dev/null", MAC, None, None),
    ("env with an assignment", "exec env LC_ALL=C ssh mac imsg \"$@\"", MAC, None, None),
];

#[test]
fn reads_the_target_of_transparent_wrappers() {
    let mut failures = Vec::new();
    for &(what, script, host, user, port) in TRANSPARENT {
        let a = analyze(script);
        let got = (a.transparent, a.host.as_deref(), a.user.as_deref(), a.port);
        if got != (true, host, user, port) || !a.warnings.is_empty() {
            failures.push(format!(
                "{what}:\n  script {script:?}\n  got {got:?}\n  warnings {:?}",
                a.warnings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (what the row shows, script, host still read, a fragment of the expected warning)
type Refusal = (&'static str, &'static str, Option<&'static str>, &'static str);

#[rustfmt::skip]
const REFUSED: &[Refusal] = &[
    ("a pipe after ssh", "exec ssh mac imsg \"$@\" | grep x", MAC, "piped into another command"),
    ("a command after ssh", "ssh mac imsg \"$@\"; echo done", MAC, "runs `echo done` after ssh"),
    ("a command on the next line", "ssh mac imsg \"$@\"\necho done", MAC, "after ssh"),
    ("&& after ssh", "ssh mac imsg \"$@\" && echo ok", MAC, "after ssh"),
    ("ssh in the background", "ssh mac imsg \"$@\" &", MAC, "background"),
    ("a compound remote command", "exec ssh mac 'cd /x && imsg \"$@\"'", MAC, "not a plain path"),
    ("another remote tool", "exec ssh mac other-tool \"$@\"", MAC, "`other-tool` is not imsg"),
    ("fixed arguments", "exec ssh mac imsg rpc", MAC, "fixed arguments"),
    ("no arguments", "exec ssh mac imsg", MAC, "does not pass"),
    ("no remote command", "exec ssh mac", MAC, "login shell"),
    ("the arguments straight to ssh", "exec ssh -T mac \"$@\"", MAC, "remote command `\"$@\"`"),
    ("two ssh commands", "ssh a imsg \"$@\"\nssh b imsg \"$@\"", None, "runs ssh 2 times"),
    ("no ssh at all", "#!/bin/sh\nexec imsg \"$@\"", None, "no command in the script runs ssh"),
    ("an empty script", "", None, "no command"),
    ("an unknown host variable", "exec ssh -T \"$IMSG_HOST\" imsg \"$@\"", None, "`\"$IMSG_HOST\"` cannot be read"),
    ("a defaulted variable", "HOST=${IMSG_HOST:-mac}\nexec ssh \"$HOST\" imsg \"$@\"", None, "cannot be read"),
    ("a substituted variable", "HOST=$(cat /etc/host)\nexec ssh \"$HOST\" imsg \"$@\"", None, "cannot be read"),
    ("unknown options before the host", "exec ssh $SSH_OPTS mac imsg \"$@\"", None, "cannot be read"),
    ("unknown options after the host", "exec ssh mac $SSH_OPTS imsg \"$@\"", None, "cannot be read"),
    ("an unreadable -o", "exec ssh -o \"$EXTRA\" mac imsg \"$@\"", None, "-o"),
    ("the wrapper's arguments as ssh options", "exec ssh \"$@\"", None, "cannot be read"),
    ("a subsystem", "exec ssh -s mac imsg \"$@\"", MAC, "subsystem"),
    ("stdin from /dev/null", "exec ssh -Tqn mac imsg \"$@\"", MAC, "/dev/null"),
    ("no remote command by -N", "exec ssh -N mac imsg \"$@\"", MAC, "-N"),
    ("an option ssh does not have", "exec ssh -Z mac imsg \"$@\"", None, "no option -Z"),
    ("a version-dependent -P", "exec ssh -P tag mac imsg \"$@\"", None, "-P takes an argument only"),
    ("a missing option argument", "exec ssh mac -p", None, "missing its argument"),
    ("a host with a port", "exec ssh mac:22 imsg \"$@\"", None, "not a host"),
    ("an option as the destination", "exec ssh -- -oProxyCommand=x imsg \"$@\"", None, "not a host"),
    ("an ssh:// URL with a path", "exec ssh ssh://bob@mac/x imsg \"$@\"", None, "not a host"),
    ("a bad port", "exec ssh -p http mac imsg \"$@\"", MAC, "not a port"),
    ("two -J options", "exec ssh -J a -J b mac imsg \"$@\"", MAC, "second jump host"),
    ("ssh inside if", "if [ -n \"$X\" ]; then\n  exec ssh mac imsg \"$@\"\nfi", MAC, "control flow"),
    ("ssh in two branches", "if x; then ssh a imsg \"$@\"; else ssh b imsg \"$@\"; fi", None, "2 times"),
    ("a here-document", "cat <<EOF\nexec ssh evil imsg \"$@\"\nEOF\n", None, "here-document"),
    ("a subshell", "( exec ssh mac imsg \"$@\" )", MAC, "subshell"),
    ("cd before ssh", "cd /tmp\nexec ssh mac imsg \"$@\"", MAC, "runs `cd /tmp`"),
    ("set -- before ssh", "set -- rpc\nexec ssh mac imsg \"$@\"", MAC, "runs `set -- rpc`"),
    ("stderr into stdout", "exec ssh mac imsg \"$@\" 2>&1", MAC, "redirects"),
    ("stdout away", "exec ssh mac imsg \"$@\" >/dev/null", MAC, "redirects"),
    ("the wrapper's stdout away", "exec >/tmp/log\nexec ssh mac imsg \"$@\"", MAC, "redirects"),
    ("ssh under sudo", "exec sudo -u bot ssh mac imsg \"$@\"", None, "runs `exec sudo"),
    ("a RemoteCommand option", "exec ssh -o RemoteCommand=imsg mac imsg \"$@\"", MAC, "RemoteCommand"),
    ("ssh after a test", "[ -x /usr/bin/ssh ] && exec ssh mac imsg \"$@\"", MAC, "only if"),
    ("one quoted remote string", "exec ssh mac 'imsg \"$@\"'", MAC, "not a plain path"),
    ("an unterminated quote", "exec ssh mac imsg \"$@", MAC, "unterminated double quote"),
    ("Windows line endings", "#!/bin/sh\r\nexec ssh -T mac imsg \"$@\"\r\n", MAC, "CR LF"),
    ("a user without a host", "exec ssh -T mac@ imsg \"$@\"", None, "not a host"),
    ("a binary file", "\u{7f}ELF\0\0ssh mac imsg", None, "NUL"),
];

#[test]
fn refuses_wrappers_that_do_more_than_run_imsg() {
    let mut failures = Vec::new();
    for &(what, script, host, warning) in REFUSED {
        let a = analyze(script);
        let warned = a.warnings.iter().any(|w| w.contains(warning));
        if a.transparent || a.host.as_deref() != host || !warned {
            failures.push(format!(
                "{what}:\n  script {script:?}\n  got transparent={} host={:?}\n  warnings {:?}",
                a.transparent, a.host, a.warnings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn records_the_jump_host_apart_from_the_target() {
    let a = analyze("exec ssh -T -J jump@bastion bot@mac imsg \"$@\"");
    assert_eq!(a.proxy_jump.as_deref(), Some("jump@bastion"));
    assert_eq!(a.remote_host.as_deref(), Some("bot@mac"));
    // OpenSSH keeps the first jump host; `none` counts as one and means "no jump".
    assert_eq!(
        analyze("ssh -J a -o ProxyJump=b mac imsg \"$@\"")
            .proxy_jump
            .as_deref(),
        Some("a")
    );
    let none = analyze("ssh -o ProxyJump=none -J a mac imsg \"$@\"");
    assert_eq!((none.proxy_jump, none.transparent), (None, false));
}

#[test]
fn takes_the_first_user_and_port_like_openssh() {
    let user = |script: &str| analyze(script).user;
    assert_eq!(user("ssh -l alice bob@mac imsg \"$@\"").as_deref(), Some("alice"));
    assert_eq!(user("ssh bob@mac -l alice imsg \"$@\"").as_deref(), Some("bob"));
    assert_eq!(
        user("ssh -o User=carol -l alice bob@mac imsg \"$@\"").as_deref(),
        Some("carol")
    );
    let port = |script: &str| analyze(script).port;
    assert_eq!(port("ssh -p 2222 ssh://mac:3333 imsg \"$@\""), Some(2222));
    assert_eq!(port("ssh -o Port=2200 -p 2222 mac imsg \"$@\""), Some(2200));
}

#[test]
fn lets_hostname_override_the_destination() {
    let a = analyze("exec ssh -o HostName=mac.example.com -l bob mac imsg \"$@\"");
    assert!(a.transparent, "{:?}", a.warnings);
    assert_eq!(a.host.as_deref(), Some("mac.example.com"));
    assert_eq!(a.remote_host.as_deref(), Some("bob@mac.example.com"));
}

#[test]
fn collects_identity_files_config_file_and_other_options() {
    let a = analyze(
        "exec ssh -F ~/.ssh/imsg_config -i ~/.ssh/k1 -i\"$HOME/.ssh/k2\" -o IdentityFile=~/.ssh/k3 \
         -oBatchMode=yes -o 'ServerAliveInterval 15' -o batchmode=no mac imsg \"$@\"",
    );
    assert!(a.transparent, "{:?}", a.warnings);
    assert_eq!(a.identity_files, ["~/.ssh/k1", "~/.ssh/k2", "~/.ssh/k3"]);
    assert_eq!(a.config_file.as_deref(), Some("~/.ssh/imsg_config"));
    let options: Vec<(&str, &str)> = a.options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(options, [("BatchMode", "yes"), ("ServerAliveInterval", "15")]);
}

#[test]
fn notes_options_the_native_connection_drops_without_refusing() {
    let a = analyze("exec ssh -L 8080:localhost:80 mac imsg \"$@\"");
    assert!(a.transparent);
    assert_eq!(
        a.warnings,
        ["ssh option -L 8080:localhost:80 is not carried over to the native connection"]
    );
}

#[test]
fn brackets_an_ipv6_host_in_remote_host_only() {
    let a = analyze("exec ssh bob@::1 imsg \"$@\"");
    assert_eq!(a.host.as_deref(), Some("::1"));
    assert_eq!(a.remote_host.as_deref(), Some("bob@[::1]"));
}

#[test]
fn names_no_remote_host_when_the_user_cannot_be_read() {
    let a = analyze("exec ssh -l \"$WHO\" mac imsg \"$@\"");
    assert_eq!(
        (a.transparent, a.host.as_deref(), a.user, a.remote_host),
        (false, Some("mac"), None, None)
    );
    let bad = analyze("exec ssh -l 'b o b' mac imsg \"$@\"");
    assert_eq!((bad.transparent, bad.remote_host), (false, None));
}

#[test]
fn serialises_like_the_design_example() {
    let a =
        analyze("exec ssh -T -o BatchMode=yes bot@mac-mini.tailnet-1234.ts.net /usr/local/bin/imsg \"$@\"");
    let json = serde_json::to_string(&a).unwrap();
    let design = concat!(
        r#"{"transparent":true,"host":"mac-mini.tailnet-1234.ts.net","user":"bot","port":null,"#,
        r#""identity_files":[],"proxy_jump":null,"config_file":null,"options":{"BatchMode":"yes"},"#,
        r#""remote_command":"/usr/local/bin/imsg","remote_host":"bot@mac-mini.tailnet-1234.ts.net","warnings":[]}"#
    );
    assert_eq!(json, design);
}

#[test]
fn reads_the_example_wrappers_as_transparent() {
    let tailscale = analyze(include_str!("../../../wrappers/imsg-tailscale-mac"));
    assert!(tailscale.transparent, "{:?}", tailscale.warnings);
    assert_eq!(
        tailscale.remote_host.as_deref(),
        Some("bot@mac-mini.tailnet-1234.ts.net")
    );
    assert_eq!(
        tailscale.options.get("BatchMode").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        tailscale.remote_command.as_deref(),
        Some("/opt/homebrew/bin/imsg")
    );

    let local = analyze(include_str!("../../../wrappers/imsg-bot-localhost"));
    assert!(local.transparent, "{:?}", local.warnings);
    assert_eq!(
        (local.host.as_deref(), local.user.as_deref()),
        (Some("localhost"), Some("bot"))
    );
    assert_eq!(local.identity_files, ["~/.ssh/imsg_bot"]);
    assert_eq!(local.remote_command.as_deref(), Some("/opt/homebrew/bin/imsg"));
}

#[test]
fn survives_nasty_input_without_calling_it_transparent() {
    let huge_line = format!("exec ssh {} imsg \"$@\"", "a".repeat(1 << 20));
    let deep = format!("exec ssh $({}", "(".repeat(10_000));
    let nasty = [
        "exec ssh 'mac imsg \"$@\"",
        "exec ssh \"mac imsg $@",
        "\\",
        "exec ssh mac imsg \\",
        "${",
        "$'",
        "`",
        "exec ssh -",
        "exec ssh -o",
        "exec ssh ssh://",
        "exec ssh @",
        "exec ssh [",
        "exec ssh ''",
        "ssh mac 2>",
        ";;&&||| |&&>>><<<&",
        "é@ü ssh \u{202e}mac imsg \"$@\"",
        &huge_line,
        &deep,
    ];
    for script in nasty {
        let a = analyze(script);
        let start: String = script.chars().take(80).collect();
        assert!(!a.transparent, "{start:?}… read as transparent: {:?}", a.warnings);
    }
}

#[test]
fn never_panics_on_random_shell_soup() {
    let alphabet: Vec<char> = "ssh imsg -pToJlF=@:[]/\\'\"$@*{}()#;&|<>\n \tbmac0129é"
        .chars()
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..5_000 {
        let len = rng.usize(0..60);
        let script: String = (0..len).map(|_| alphabet[rng.usize(0..alphabet.len())]).collect();
        let a = analyze(&script);
        // A transparent answer always names a host and imsg.
        assert!(
            !a.transparent || (a.host.is_some() && a.remote_command.is_some()),
            "{script:?}: {a:?}"
        );
    }
}

#[test]
fn reads_files_and_refuses_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("imsg");
    std::fs::write(&script, "#!/bin/sh\nexec ssh -T mac imsg \"$@\"\n").unwrap();
    assert!(analyze_file(&script).unwrap().transparent);

    std::fs::write(&script, [0xcf, 0xfa, 0xed, 0xfe, 0, 0, 0xff]).unwrap();
    let binary = analyze_file(&script).unwrap();
    assert!(!binary.transparent && binary.host.is_none());

    std::fs::write(&script, vec![b'#'; (MAX_SCRIPT_BYTES + 1) as usize]).unwrap();
    assert!(analyze_file(&script).unwrap().warnings[0].contains("too large"));

    assert!(analyze_file(&dir.path().join("missing")).is_err());
}

#[test]
fn reads_home_as_a_tilde_in_local_paths_only() {
    let a = analyze("exec ssh -o UserKnownHostsFile=\"$HOME/.ssh/kh\" -i \"$HOME\"/.ssh/k mac imsg \"$@\"");
    assert!(a.transparent, "{:?}", a.warnings);
    assert_eq!(a.identity_files, ["~/.ssh/k"]);
    assert_eq!(
        a.options.get("UserKnownHostsFile").map(String::as_str),
        Some("~/.ssh/kh")
    );
    // On the remote side `$HOME` was already expanded here, so `~` would name another directory.
    let remote = analyze("exec ssh mac \"$HOME/bin/imsg\" \"$@\"");
    assert!(!remote.transparent && remote.remote_command.is_none());
    assert_eq!(
        remote.warnings,
        ["the remote command `$HOME/bin/imsg` is not a plain path to imsg"]
    );
}

#[test]
fn keeps_a_short_list_of_warnings_for_a_long_script() {
    let script: String = (0..100_000).map(|i| format!("cmd{i}\n")).collect();
    let a = analyze(&script);
    assert!(!a.transparent);
    assert_eq!(a.warnings.len(), MAX_WARNINGS + 1);
    assert_eq!(
        a.warnings.last().map(String::as_str),
        Some("(further warnings omitted)")
    );
}

//! ssh_config parsing tables.

use super::*;

#[test]
fn reads_the_first_value_per_key_for_the_matching_host() {
    let text = "
User everyone-default-is-later
Host mac
  HostName mac-mini.tailnet-1234.ts.net
  User bot
  Port 2222
  IdentityFile ~/.ssh/imsg
  IdentityFile ~/.ssh/second
  ProxyJump me@bastion
  UserKnownHostsFile ~/.ssh/kh1 ~/.ssh/kh2
  StrictHostKeyChecking accept-new
Host *
  User fallback
  Port 22
";
    let got = parse_text(text, Path::new("/tmp"), "mac").unwrap();
    assert_eq!(got.hostname.as_deref(), Some("mac-mini.tailnet-1234.ts.net"));
    assert_eq!(
        got.user.as_deref(),
        Some("everyone-default-is-later"),
        "global options before Host apply first"
    );
    assert_eq!(got.port, Some(2222));
    assert_eq!(got.identity_files, vec!["~/.ssh/imsg", "~/.ssh/second"]);
    assert_eq!(got.proxy_jump.as_deref(), Some("me@bastion"));
    assert_eq!(got.user_known_hosts_files, vec!["~/.ssh/kh1", "~/.ssh/kh2"]);
    assert_eq!(got.strict_host_key_checking.as_deref(), Some("accept-new"));
}

#[test]
fn honours_negation_equals_syntax_and_quotes() {
    let text = "
Host *.ts.net !excluded.ts.net
  HostName=\"%h\"
  Port=2200
Host other
  User other
";
    let got = parse_text(text, Path::new("/tmp"), "mac.ts.net").unwrap();
    assert_eq!(got.hostname.as_deref(), Some("mac.ts.net"));
    assert_eq!(got.port, Some(2200));
    assert_eq!(got.user, None);
    assert_eq!(
        parse_text(text, Path::new("/tmp"), "excluded.ts.net").unwrap(),
        HostSettings::default()
    );
}

/// Skipping a Match block could connect where `ssh` would not (its `Port`, `HostName`, … may apply),
/// so our parser refuses it, naming the line.
#[test]
fn refuses_a_match_block_it_cannot_evaluate() {
    let text = "Host mac\n  HostName 10.0.0.5\nMatch user root\n  Port 2222\n";
    let err = parse_text(text, Path::new("/tmp"), "mac").unwrap_err();
    assert!(matches!(err, SshConfigError::Match { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("`Match user root`"), "{err}");
}

#[test]
fn refuses_a_match_block_in_an_included_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("extra"), "Match all\n  User x\n").unwrap();
    std::fs::write(dir.path().join("config"), "Include extra\nHost mac\n  User bot\n").unwrap();
    let err = parse_file(&dir.path().join("config"), "mac").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{} line 1", dir.path().join("extra").display())),
        "{text}"
    );
}

/// `ssh -G`'s complaint is quoted line by line, escaped, and bounded.
#[test]
fn quotes_the_first_lines_of_ssh_s_complaint() {
    use std::os::unix::process::ExitStatusExt;
    let status = std::process::ExitStatus::from_raw(255 << 8);
    let stderr = "/tmp/c: line 3: Bad configuration option: bogusoption\n/tmp/c: terminating, 1 bad configuration options\n\x1b[31m\nmore\nand more\n";
    assert_eq!(
        complaint(stderr, status),
        "/tmp/c: line 3: Bad configuration option: bogusoption; /tmp/c: terminating, 1 bad configuration options; \\u{1b}[31m"
    );
    assert!(complaint("", status).contains("said nothing"));
}

#[test]
fn follows_includes_relative_to_the_config_directory_with_globs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-mac.conf"),
        "Host mac\n  User from-include\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("conf.d/20-mac.conf"), "Host mac\n  Port 2022\n").unwrap();
    std::fs::write(
        dir.path().join("config"),
        "Include conf.d/*.conf\nHost mac\n  User too-late\n",
    )
    .unwrap();
    let got = parse_file(&dir.path().join("config"), "mac").unwrap();
    assert_eq!(got.user.as_deref(), Some("from-include"));
    assert_eq!(got.port, Some(2022));
}

#[test]
fn a_self_including_file_stops_at_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config"), "Include config\nHost *\n  User loop\n").unwrap();
    assert_eq!(
        parse_file(&dir.path().join("config"), "x")
            .unwrap()
            .user
            .as_deref(),
        Some("loop")
    );
}

#[test]
fn parses_ssh_g_output() {
    let out = "host mac\nhostname 10.0.0.5\nuser bot\nport 2222\nidentityfile ~/.ssh/id_rsa\nidentityfile ~/.ssh/id_ed25519\nproxyjump none\nuserknownhostsfile ~/.ssh/known_hosts ~/.ssh/known_hosts2\nstricthostkeychecking ask\n";
    let got = parse_ssh_g(out);
    assert_eq!(got.hostname.as_deref(), Some("10.0.0.5"));
    assert_eq!(got.port, Some(2222));
    assert_eq!(got.identity_files.len(), 2);
    assert_eq!(got.proxy_jump, None);
    assert_eq!(got.user_known_hosts_files.len(), 2);
    assert_eq!(got.strict_host_key_checking.as_deref(), Some("ask"));
}

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
    let got = parse_text(text, Path::new("/tmp"), "mac");
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
fn honours_negation_equals_syntax_quotes_and_skips_match_blocks() {
    let text = "
Host *.ts.net !excluded.ts.net
  HostName=\"%h\"
  Port=2200
Match user root
  User leaked
Host other
  User other
";
    let got = parse_text(text, Path::new("/tmp"), "mac.ts.net");
    assert_eq!(got.hostname.as_deref(), Some("mac.ts.net"));
    assert_eq!(got.port, Some(2200));
    assert_eq!(got.user, None, "Match blocks never leak");
    assert_eq!(
        parse_text(text, Path::new("/tmp"), "excluded.ts.net"),
        HostSettings::default()
    );
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
    let got = parse_file(&dir.path().join("config"), "mac");
    assert_eq!(got.user.as_deref(), Some("from-include"));
    assert_eq!(got.port, Some(2022));
}

#[test]
fn a_self_including_file_stops_at_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config"), "Include config\nHost *\n  User loop\n").unwrap();
    assert_eq!(
        parse_file(&dir.path().join("config"), "x").user.as_deref(),
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

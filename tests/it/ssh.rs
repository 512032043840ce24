//! The native SSH transport against a real OpenSSH sshd on loopback: host-key policies, auth,
//! ProxyJump, and `imsg rpc` (imsg-sim) over an exec channel.

use std::time::Duration;

use imsg_bridge::imsg::ImsgClient;
use imsg_bridge::rpc::ClientOptions;
use imsg_bridge::transport::ssh::{self, SshError, StrictHostKeyChecking, exec, quote};

use crate::sshd::{Sshd, keygen};
use crate::support::{SimMac, imsg_bridge_bin, imsg_sim_bin};

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_imsg_rpc_over_an_exec_channel() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    mac.inject("+14155551212", "over ssh");
    let connection = ssh::connect(&sshd.target())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(connection.info.fingerprint.starts_with("SHA256:"));
    let command = quote::rpc_command(
        &imsg_sim_bin().display().to_string(),
        Some(&mac.db.display().to_string()),
    );
    let (rpc, handle) = exec::exec_rpc(&connection, &command, ClientOptions::default())
        .await
        .unwrap();
    let imsg = ImsgClient::initialize(rpc.clone(), TIMEOUT).await.unwrap();
    let chats = imsg.chats_list(5).await.unwrap();
    assert_eq!(chats[0].identifier, "+14155551212");
    let history = imsg.history(chats[0].id, 5, false).await.unwrap();
    assert_eq!(history[0].text, "over ssh");
    let exit = handle.stop(&rpc).await;
    assert_eq!(
        exit,
        Some(imsg_bridge::rpc::ExitInfo::Code(0)),
        "imsg-sim exits 0 on stdin EOF"
    );
    connection.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_exit_status_and_stderr_of_a_failing_remote_command() {
    let sshd = Sshd::start();
    let connection = ssh::connect(&sshd.target()).await.unwrap();
    let captured = exec::exec_capture(&connection, "echo oops >&2; exit 7", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(captured.status, Some(7));
    assert_eq!(captured.stderr.trim(), "oops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_unknown_host_under_yes_with_the_fingerprint_and_a_remedy() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let err = ssh::connect(&sshd.target()).await.unwrap_err();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("SHA256:"), "{text}");
    assert!(text.contains("ssh-keyscan -p"), "{text}");
    assert!(text.contains("accept-new"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_the_key_and_trusts_it_next_time() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.known_hosts, "# my hosts\n").unwrap();
    let mut target = sshd.target();
    target.strict_host_key_checking = StrictHostKeyChecking::AcceptNew;
    let first = ssh::connect(&target).await.unwrap();
    assert!(first.info.host_key_learned);
    let text = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    assert!(
        text.starts_with("# my hosts\n"),
        "existing lines are kept: {text}"
    );
    assert!(
        text.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{text}"
    );
    target.strict_host_key_checking = StrictHostKeyChecking::Yes;
    let second = ssh::connect(&target).await.unwrap();
    assert!(!second.info.host_key_learned);
}

/// OpenSSH appends to known_hosts in place: a symlinked file (dotfiles managed elsewhere) gets the
/// line in its real target and stays a link, and the file keeps its mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_appends_through_a_symlink_and_keeps_the_files_mode() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = Sshd::start();
    let real = sshd.dir.path().join("dotfiles_known_hosts");
    // No trailing newline: the new entry must still start on its own line.
    std::fs::write(&real, "# managed elsewhere").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::remove_file(&sshd.known_hosts).unwrap();
    std::os::unix::fs::symlink(&real, &sshd.known_hosts).unwrap();
    let mut target = sshd.target();
    target.strict_host_key_checking = StrictHostKeyChecking::AcceptNew;
    let first = ssh::connect(&target).await.unwrap();
    assert!(first.info.host_key_learned);
    let link = std::fs::symlink_metadata(&sshd.known_hosts).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced by a file");
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(
        text.starts_with(&format!(
            "# managed elsewhere\n[127.0.0.1]:{} ssh-ed25519 ",
            sshd.port
        )),
        "{text:?}"
    );
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "mode {mode:o}");
    target.strict_host_key_checking = StrictHostKeyChecking::Yes;
    ssh::connect(&target).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_changed_key_even_under_accept_new() {
    let sshd = Sshd::start();
    let other = sshd.dir.path().join("other_host_key");
    keygen(&other, "ed25519", "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        &sshd.known_hosts,
        format!("# header\n[127.0.0.1]:{} {}", sshd.port, other_pub),
    )
    .unwrap();
    let mut target = sshd.target();
    target.strict_host_key_checking = StrictHostKeyChecking::AcceptNew;
    let err = ssh::connect(&target).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SshError::HostKeyChanged { line: 2, .. }), "{text}");
    assert!(text.contains("HOST KEY CHANGED for 127.0.0.1"), "{text}");
    assert!(text.contains(&sshd.known_hosts.display().to_string()), "{text}");
    assert!(
        !std::fs::read_to_string(&sshd.known_hosts)
            .unwrap()
            .contains(&sshd.host_key_pub)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusts_a_key_recorded_without_the_port_as_openssh_does() {
    let sshd = Sshd::start();
    assert_ne!(sshd.port, 22);
    std::fs::write(&sshd.known_hosts, format!("127.0.0.1 {}\n", sshd.host_key_pub)).unwrap();
    ssh::connect(&sshd.target()).await.unwrap();
    // OpenSSH agrees: its own client connects with the same file under StrictHostKeyChecking=yes.
    let out = std::process::Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o"])
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
        .arg("-i")
        .arg(&sshd.client_key)
        .args(["-p", &sshd.port.to_string()])
        .arg(format!("{}@127.0.0.1", sshd.user))
        .arg("true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_a_hashed_known_hosts_entry() {
    let sshd = Sshd::start();
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&sshd.known_hosts)
        .output()
        .unwrap();
    assert!(status.status.success());
    let text = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    assert!(text.starts_with("|1|"), "hashed: {text}");
    ssh::connect(&sshd.target()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_with_the_methods_tried() {
    let sshd = Sshd::start();
    let wrong = sshd.dir.path().join("wrong_key");
    keygen(&wrong, "ed25519", "");
    let mut target = sshd.target();
    target.identity_files = vec![wrong.clone()];
    let err = ssh::connect(&target).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SshError::Auth { .. }), "{text}");
    assert!(text.contains("none"), "{text}");
    assert!(
        text.contains(&format!("publickey ({})", wrong.display())),
        "{text}"
    );
    assert!(text.contains("the server allows publickey"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_without_its_passphrase_variable_is_explained() {
    let sshd = Sshd::start_with(crate::sshd::SshdOptions {
        passphrase: Some("s3cret pass".into()),
        ..Default::default()
    });
    let mut target = sshd.target();
    target.identity_passphrase_env = Some("IMSG_TEST_PASSPHRASE_THAT_IS_NOT_SET".into());
    let err = ssh::connect(&target).await.unwrap_err().to_string();
    assert!(
        err.contains("encrypted; $IMSG_TEST_PASSPHRASE_THAT_IS_NOT_SET is not set"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "never print secrets: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_through_a_proxy_jump() {
    let target_sshd = Sshd::start();
    let jump_sshd = Sshd::start();
    let mut target = target_sshd.target();
    target.jumps = vec![jump_sshd.target()];
    let connection = ssh::connect(&target)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", jump_sshd.log()));
    let captured = exec::exec_capture(&connection, "echo through", TIMEOUT)
        .await
        .unwrap();
    assert_eq!(captured.stdout.trim(), "through");
    assert!(
        jump_sshd.log().contains("direct-tcpip") || jump_sshd.log().contains("Accepted"),
        "{}",
        jump_sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_servers_auth_banner() {
    let banner_dir = tempfile::tempdir().unwrap();
    let banner = banner_dir.path().join("banner");
    std::fs::write(
        &banner,
        "Tailscale SSH: visit https://login.example/check to approve\n",
    )
    .unwrap();
    let sshd = Sshd::start_with(crate::sshd::SshdOptions {
        extra_config: vec![format!("Banner {}", banner.display())],
        ..Default::default()
    });
    let connection = ssh::connect(&sshd.target()).await.unwrap();
    let kept = connection.info.banner.clone().unwrap_or_default();
    assert!(kept.contains("https://login.example/check"), "{kept:?}");
}

/// One-shot commands refuse an ssh_config that OpenSSH rejects as doctor does: an error quoting
/// `ssh -G`, and no connection although our own parser would have found the host.
#[test]
fn a_one_shot_command_refuses_an_ssh_config_that_openssh_rejects() {
    let sshd = Sshd::start();
    let mac = SimMac::new();
    let ssh_config = crate::doctor::mac_ssh_config(&sshd, &mac, "  BogusOption yes\n");
    let config = crate::doctor::wrapper_config(&mac, &format!("ssh -F {} -T mac", ssh_config.display()));
    let out = std::process::Command::new(imsg_bridge_bin())
        .arg("--config")
        .arg(&config)
        .args(["chats", "--limit", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(sshd.client_connections(), 0, "connected:\n{}", sshd.log());
    assert_eq!(out.status.code(), Some(2), "a config problem exits 2: {stderr}");
    assert!(
        stderr.contains("Bad configuration option: bogusoption"),
        "{stderr}"
    );
}

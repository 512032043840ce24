//! One crypto stack: the lockfile builds ring only, and every cipher, MAC, key exchange, host key and
//! client key type the bridge offers (russh's defaults) that this OpenSSH also speaks still connects to
//! a real sshd, each forced one at a time, moving a megabyte each way so the cipher and MAC see more
//! than the handshake.

use std::time::Duration;

use imsg_bridge::transport::ssh::{self, exec};

use crate::sshd::{Sshd, SshdOptions, keygen};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn the_lockfile_builds_one_crypto_stack() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let has = |name: &str| lock.contains(&format!("name = \"{name}\"\n"));
    assert!(has("ring"), "rustls and russh share ring");
    for second in ["aws-lc-sys", "aws-lc-rs", "openssl-sys", "boring-sys"] {
        assert!(!has(second), "{second} is a second crypto stack in Cargo.lock");
    }
}

/// Connect to an sshd with `extra` sshd_config lines and move 1 MiB each way; the host key's type.
async fn moves_a_megabyte(extra: &[String], prepare: impl FnOnce(&Sshd, &mut ssh::SshTarget)) -> String {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: extra.to_vec(),
        ..SshdOptions::default()
    });
    let mut target = sshd.target();
    prepare(&sshd, &mut target);
    let connection = ssh::connect(&target)
        .await
        .unwrap_or_else(|e| panic!("{extra:?}: {e}\n{}", sshd.log()));
    // The megabyte goes up the channel (encrypted by us, decrypted by sshd); its hash comes back.
    let channel = connection.exec("sha256sum").await.unwrap();
    channel.send(&vec![0u8; 1 << 20][..]).await.unwrap();
    channel.eof().await.unwrap();
    let out = tokio::time::timeout(TIMEOUT, exec::collect(channel))
        .await
        .unwrap();
    assert_eq!(out.status, Some(0), "{extra:?}: {}", out.stderr);
    assert!(
        out.stdout
            .starts_with("30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"),
        "{extra:?}: {}",
        out.stdout
    );
    // And one down: every packet must decrypt and pass its MAC for the exit status to arrive after it.
    let down = exec::exec_capture(&connection, "head -c 1048576 /dev/zero; echo sent >&2", TIMEOUT)
        .await
        .unwrap();
    assert_eq!((down.status, down.stderr.trim()), (Some(0), "sent"), "{extra:?}");
    assert!(
        down.stdout.len() >= 64 * 1024,
        "{extra:?}: the capture keeps the first 64 KiB or more"
    );
    connection.disconnect().await;
    connection.info.algorithm.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cipher_the_bridge_offers_connects() {
    for cipher in [
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes256-ctr",
        "aes192-ctr",
        "aes128-ctr",
    ] {
        moves_a_megabyte(&[format!("Ciphers {cipher}")], |_, _| {}).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mac_and_key_exchange_the_bridge_offers_connects() {
    for mac in [
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256",
        "hmac-sha2-512",
    ] {
        moves_a_megabyte(&["Ciphers aes128-ctr".into(), format!("MACs {mac}")], |_, _| {}).await;
    }
    for kex in [
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group14-sha256",
    ] {
        moves_a_megabyte(&[format!("KexAlgorithms {kex}")], |_, _| {}).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_and_rsa_host_keys_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, algorithms) in [("ecdsa", "ecdsa-sha2-nistp256"), ("rsa", "rsa-sha2-512")] {
        let key = dir.path().join(format!("host_{kind}"));
        keygen(&key, kind, "");
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let extra = [
            format!("HostKey {}", key.display()),
            format!("HostKeyAlgorithms {algorithms}"),
        ];
        let known = dir.path().join(format!("known_{kind}"));
        let algorithm = moves_a_megabyte(&extra, |sshd, target| {
            std::fs::write(&known, format!("[127.0.0.1]:{} {public}", sshd.port)).unwrap();
            target.known_hosts_files = vec![known.clone()];
        })
        .await;
        // The key's type as known_hosts names it; the signature was rsa-sha2-512 (the only one offered).
        let expected = if kind == "rsa" { "ssh-rsa" } else { algorithms };
        assert_eq!(algorithm, expected, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_and_rsa_client_keys_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["ecdsa", "rsa"] {
        let key = dir.path().join(format!("id_{kind}"));
        keygen(&key, kind, "");
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        moves_a_megabyte(&[], |sshd, target| {
            std::fs::write(sshd.client_key.with_file_name("authorized_keys"), &public).unwrap();
            target.identity_files = vec![key.clone()];
        })
        .await;
    }
}

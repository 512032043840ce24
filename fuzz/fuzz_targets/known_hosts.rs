//! Fuzz target: the known_hosts matcher (`check_key`, `known_algorithms`, `lookup_name`) on arbitrary
//! file text, host name and port with a fixed ed25519 key; must never panic, and a key the files
//! revoke or trust must be reported against a line that exists.
#![no_main]

use std::sync::OnceLock;

use imsg_bridge::transport::ssh::known_hosts::{
    HostKeyStatus, KnownHostsText, check_key, known_algorithms, lookup_name,
};
use libfuzzer_sys::fuzz_target;
use russh::keys::PublicKey;

/// A real ed25519 public key (the one the matcher's unit tests use), parsed once.
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcLndxRBdVaerW7GiBnSbMn+aLWQE5ohX2SpJ3IyC9j";

fn key() -> &'static PublicKey {
    static PARSED: OnceLock<PublicKey> = OnceLock::new();
    PARSED.get_or_init(|| PublicKey::from_openssh(KEY).expect("a valid constant key"))
}

fuzz_target!(|data: &[u8]| {
    // Two bytes of port, then the host name up to the first newline, then the files separated by NUL.
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let port = u16::from_be_bytes([*hi, *lo]);
    let text = String::from_utf8_lossy(rest);
    let (host, body) = text.split_once('\n').unwrap_or((&text, ""));
    let files: Vec<KnownHostsText> = body
        .split('\0')
        .map(|text| KnownHostsText {
            text: text.to_string(),
        })
        .collect();
    let name = lookup_name(host, port);
    assert!(name.contains(host));
    let _ = known_algorithms(&files, host, port);
    match check_key(&files, host, port, key()) {
        HostKeyStatus::Trusted { file, line }
        | HostKeyStatus::Revoked { file, line }
        | HostKeyStatus::Changed { file, line } => {
            assert!(file < files.len(), "file {file} of {}", files.len());
            let lines = files[file].text.lines().count();
            assert!(line >= 1 && line <= lines, "line {line} of {lines}");
        }
        HostKeyStatus::Unknown => {}
    }
});

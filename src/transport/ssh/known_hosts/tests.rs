//! Table tests of the known_hosts matcher with real keys (public halves only).

use super::*;

const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcLndxRBdVaerW7GiBnSbMn+aLWQE5ohX2SpJ3IyC9j";
const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGN1fi/JG+YMZsXNDBKFVlBa1Mn8cBCUNfk0K9oKtNil";
const K3: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBKPjOZCdb/rcnjsfhEsGG0bQi7QJfHZuUKPhL591O7Ht0PrCwTZUezqXoBGFzg8qBvNX7goAZTzNKglh+MEzeA=";
/// `mac.local` hashed by `ssh-keygen -H` with K1.
const HASHED_K1: &str = "|1|aqs5hGDZfTDqA/ke9uvvlZ9M56E=|tclihpKiLlYSbpImUBg9UfdQ0Qc= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcLndxRBdVaerW7GiBnSbMn+aLWQE5ohX2SpJ3IyC9j";

fn key(text: &str) -> PublicKey {
    PublicKey::from_openssh(text).unwrap()
}

fn check(text: &str, host: &str, port: u16) -> HostKeyStatus {
    check_key(
        &[KnownHostsText {
            text: text.to_string(),
        }],
        host,
        port,
        &key(K1),
    )
}

#[test]
fn trusts_plain_bracketed_hashed_wildcard_and_tab_separated_entries() {
    let cases = [
        (format!("mac.local {K1}"), "mac.local", 22),
        (format!("[mac.local]:2222 {K1}"), "mac.local", 2222),
        (HASHED_K1.to_string(), "mac.local", 22),
        (format!("other,*.ts.net {K1}"), "mac-mini.tailnet-1234.ts.net", 22),
        (format!("[127.0.0.?]:2222 {K1}"), "127.0.0.1", 2222),
        (format!("mac.local\t{}", K1.replace(' ', "\t")), "mac.local", 22),
        (format!("MAC.LOCAL {K1}"), "mac.local", 22),
        // Nothing names [mac.local]:2222: OpenSSH checks "without port identifier".
        (format!("mac.local {K1}"), "mac.local", 2222),
    ];
    for (text, host, port) in cases {
        assert!(
            matches!(check(&text, host, port), HostKeyStatus::Trusted { .. }),
            "{text}"
        );
    }
}

#[test]
fn reports_unknown_for_other_hosts_ports_and_negated_patterns() {
    let cases = [
        (String::new(), "mac.local", 22),
        (format!("[mac.local]:2222 {K1}"), "mac.local", 22),
        // Without the port only a line that trusts this very key counts.
        (format!("mac.local {K2}"), "mac.local", 2222),
        (format!("*.local,!mac.local {K1}"), "mac.local", 22),
        (format!("# mac.local {K1}"), "mac.local", 22),
        (HASHED_K1.to_string(), "other.local", 22),
        (format!("mac.local {K3}"), "mac.local", 22),
    ];
    for (text, host, port) in cases {
        assert_eq!(check(&text, host, port), HostKeyStatus::Unknown, "{text}");
    }
}

#[test]
fn a_port_qualified_line_decides_before_the_bare_name_is_tried() {
    let text = format!("mac.local {K1}\n[mac.local]:2222 {K2}");
    assert!(matches!(
        check(&text, "mac.local", 2222),
        HostKeyStatus::Changed { .. }
    ));
    let revoked = format!("@revoked mac.local {K1}");
    assert!(matches!(
        check(&revoked, "mac.local", 2222),
        HostKeyStatus::Revoked { .. }
    ));
}

#[test]
fn reports_a_changed_key_with_its_line_number() {
    let text = format!("# comment\nother {K1}\nmac.local {K2}\n");
    assert_eq!(
        check(&text, "mac.local", 22),
        HostKeyStatus::Changed { file: 0, line: 3 }
    );
}

#[test]
fn accepts_a_stale_line_before_the_right_one() {
    let text = format!("mac.local {K2}\nmac.local {K1}\n");
    assert_eq!(
        check(&text, "mac.local", 22),
        HostKeyStatus::Trusted { file: 0, line: 2 }
    );
}

#[test]
fn refuses_a_revoked_key_even_when_another_line_trusts_it() {
    let text = format!("mac.local {K1}\n@revoked * {K1}\n");
    assert_eq!(
        check(&text, "mac.local", 22),
        HostKeyStatus::Revoked { file: 0, line: 2 }
    );
}

#[test]
fn ignores_cert_authority_lines_for_plain_keys_and_skips_garbage_lines() {
    let text = format!("@cert-authority * {K1}\nmac.local ssh-ed25519 not-base64!\n");
    assert_eq!(check(&text, "mac.local", 22), HostKeyStatus::Unknown);
}

#[test]
fn consults_every_file_and_prefers_trust_over_change() {
    let files = [
        KnownHostsText {
            text: format!("mac.local {K2}\n"),
        },
        KnownHostsText {
            text: format!("mac.local {K1}\n"),
        },
    ];
    assert_eq!(
        check_key(&files, "mac.local", 22, &key(K1)),
        HostKeyStatus::Trusted { file: 1, line: 1 }
    );
}

#[test]
fn writes_new_entries_in_the_form_it_reads() {
    let line = new_entry_line("127.0.0.1", 2222, &key(K1)).unwrap();
    assert_eq!(line, format!("[127.0.0.1]:2222 {K1}\n"));
    assert!(matches!(
        check(&line, "127.0.0.1", 2222),
        HostKeyStatus::Trusted { .. }
    ));
}

#[test]
fn names_the_fingerprint_recorded_on_a_line() {
    let files = [KnownHostsText {
        text: format!("# header\nmac.local {K2}\n"),
    }];
    let expected = key(K2).fingerprint(russh::keys::HashAlg::Sha256).to_string();
    assert_eq!(fingerprint_at(&files, 0, 2), Some(expected));
    assert_eq!(fingerprint_at(&files, 0, 1), None, "a comment holds no key");
    assert_eq!(fingerprint_at(&files, 1, 2), None);
}

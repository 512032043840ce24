//! Our own OpenSSH known_hosts matcher: plain and `[host]:port` names, `|1|` hashed names, `*`/`?`
//! wildcards and `!` negation, `@revoked`, `@cert-authority`, tab-separated fields, and stale lines
//! before the right one (OpenSSH accepts those; russh's helper reports "changed"). Pure: the caller
//! reads the files.

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::ssh_key::{Certificate, PublicKey};
use sha1::Sha1;

use super::pattern;

/// What the known_hosts files say about a server key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A line names this host with exactly this key.
    Trusted { file: usize, line: usize },
    /// The key is listed as `@revoked`: refuse whatever else the files say.
    Revoked { file: usize, line: usize },
    /// The host is known with a different key of the same algorithm and no line trusts this one.
    Changed { file: usize, line: usize },
    /// Nothing matches this host.
    Unknown,
}

/// One known_hosts file's text, in the order they are consulted.
#[derive(Debug, Clone)]
pub struct KnownHostsText {
    pub text: String,
}

/// The names OpenSSH looks a host up under: `host` for port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Check a plain server key against every file. A revocation anywhere wins; then a trusting line
/// anywhere; then the first "changed" line. On a port other than 22 a host nothing names as
/// `[host]:port` is looked up once more under its bare name, as OpenSSH does ("checking without
/// port identifier"): only a line that trusts (or revokes) this very key counts there.
pub fn check_key(files: &[KnownHostsText], host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
    let status = check_key_as(files, &lookup_name(host, port), key);
    if status != HostKeyStatus::Unknown || port == 22 {
        return status;
    }
    match check_key_as(files, host, key) {
        found @ (HostKeyStatus::Trusted { .. } | HostKeyStatus::Revoked { .. }) => found,
        HostKeyStatus::Changed { .. } | HostKeyStatus::Unknown => HostKeyStatus::Unknown,
    }
}

/// [`check_key`] under one lookup name.
fn check_key_as(files: &[KnownHostsText], name: &str, key: &PublicKey) -> HostKeyStatus {
    let mut changed = None;
    let mut trusted = None;
    for (file_index, file) in files.iter().enumerate() {
        for (line_index, entry) in entries(&file.text) {
            if !host_matches(entry.host_patterns(), name) {
                continue;
            }
            let at = (file_index, line_index);
            let same = entry.public_key().key_data() == key.key_data();
            match entry.marker() {
                Some(Marker::Revoked) if same => {
                    return HostKeyStatus::Revoked {
                        file: at.0,
                        line: at.1,
                    };
                }
                // CA lines vouch for certificates only; a plain key never matches them.
                Some(_) => {}
                None if same => trusted = trusted.or(Some(at)),
                None if entry.public_key().algorithm() == key.algorithm() => changed = changed.or(Some(at)),
                None => {}
            }
        }
    }
    match (trusted, changed) {
        (Some((file, line)), _) => HostKeyStatus::Trusted { file, line },
        (None, Some((file, line))) => HostKeyStatus::Changed { file, line },
        (None, None) => HostKeyStatus::Unknown,
    }
}

/// Check a host certificate: its signing CA must be an `@cert-authority` line for this host, the
/// certificate a valid host certificate for `host` at `now` (Unix seconds), and neither the CA nor
/// the certified key revoked.
pub fn check_certificate(
    files: &[KnownHostsText],
    host: &str,
    port: u16,
    cert: &Certificate,
    now: u64,
) -> HostKeyStatus {
    let name = lookup_name(host, port);
    let certified = PublicKey::from(cert.public_key().clone());
    let mut vouching = None;
    for (file_index, file) in files.iter().enumerate() {
        for (line_index, entry) in entries(&file.text) {
            if !host_matches(entry.host_patterns(), &name) {
                continue;
            }
            let data = entry.public_key().key_data();
            match entry.marker() {
                Some(Marker::Revoked) if data == certified.key_data() || data == cert.signature_key() => {
                    return HostKeyStatus::Revoked {
                        file: file_index,
                        line: line_index,
                    };
                }
                Some(Marker::CertAuthority) if data == cert.signature_key() => {
                    vouching = vouching.or(Some((file_index, line_index, entry.public_key().clone())));
                }
                _ => {}
            }
        }
    }
    let Some((file, line, ca)) = vouching else {
        return HostKeyStatus::Unknown;
    };
    let fingerprint = ca.fingerprint(russh::keys::HashAlg::Sha256);
    let valid = cert.cert_type().is_host()
        && cert.valid_principals().iter().any(|p| p == host)
        && cert.validate_at(now, [&fingerprint]).is_ok();
    if valid {
        HostKeyStatus::Trusted { file, line }
    } else {
        HostKeyStatus::Changed { file, line }
    }
}

/// Key algorithms of the plain entries that name this host (to prefer them in the key exchange).
pub fn known_algorithms(files: &[KnownHostsText], host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
    let name = lookup_name(host, port);
    let mut found = Vec::new();
    for file in files {
        for (_, entry) in entries(&file.text) {
            if entry.marker().is_none() && host_matches(entry.host_patterns(), &name) {
                let algorithm = entry.public_key().algorithm();
                if !found.contains(&algorithm) {
                    found.push(algorithm);
                }
            }
        }
    }
    found
}

/// The text to append for `accept-new` (plain name, as `ssh` writes without HashKnownHosts).
pub fn new_entry_line(host: &str, port: u16, key: &PublicKey) -> Result<String, russh::keys::ssh_key::Error> {
    let mut key = key.clone();
    key.set_comment("");
    Ok(format!(
        "{} {}\n",
        lookup_name(host, port),
        key.to_openssh()?.trim_end()
    ))
}

/// The `SHA256:…` fingerprint of the key on `line` (1-based) of file `file`, to show next to the
/// server's when a recorded key is contradicted.
pub fn fingerprint_at(files: &[KnownHostsText], file: usize, line: usize) -> Option<String> {
    let text = &files.get(file)?.text;
    entries(text)
        .find(|(number, _)| *number == line)
        .map(|(_, entry)| {
            entry
                .public_key()
                .fingerprint(russh::keys::HashAlg::Sha256)
                .to_string()
        })
}

/// Parsed entries with 1-based line numbers. Whitespace is normalised first (ssh-key rejects tabs)
/// and unparsable lines are skipped one by one, as OpenSSH does, instead of failing the file.
fn entries(text: &str) -> impl Iterator<Item = (usize, Entry)> + '_ {
    text.lines().enumerate().filter_map(|(index, raw)| {
        let normalized = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalized.is_empty() || normalized.starts_with('#') {
            return None;
        }
        normalized.parse::<Entry>().ok().map(|entry| (index + 1, entry))
    })
}

fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => pattern::list_matches(list.iter().map(String::as_str), name),
    }
}

#[cfg(test)]
mod tests;

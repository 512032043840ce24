//! Dead letters: an envelope the sink can never accept (a request that cannot be built, a permanent
//! rejection) is written to `stateDir/dead-letter/<account>/<id>.json` instead of stalling the account,
//! so an operator can read it, fix the agent and hand it over by hand.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::envelope::Envelope;
use crate::util::atomic_write;

/// Longest file stem, in bytes.
const MAX_STEM: usize = 200;

/// What is kept of one dead envelope.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    version: u32,
    /// Why the sink refused it, as the sink said it.
    reason: &'a str,
    /// When it was written (RFC 3339, UTC).
    at: String,
    envelope: &'a Envelope,
}

/// The folder of one account's dead letters.
pub fn dir(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join("dead-letter").join(file_stem(account))
}

/// Write `envelope` with `reason` atomically (fsynced) and return the file's path.
pub fn write(state_dir: &Path, account: &str, envelope: &Envelope, reason: &str) -> std::io::Result<PathBuf> {
    let letter = DeadLetter {
        version: 1,
        reason,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        envelope,
    };
    let mut bytes = serde_json::to_vec_pretty(&letter).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let path = dir(state_dir, account).join(format!("{}.json", file_stem(&envelope.id)));
    atomic_write(&path, &bytes)?;
    Ok(path)
}

/// A file name made from an id or account: path separators, control characters, a leading dot and
/// `%` become `%XX`, so a hostile guid can neither leave the folder nor hide the file.
fn file_stem(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, c) in raw.chars().enumerate() {
        let unsafe_char = c == '/' || c == '\\' || c == '%' || c.is_control() || (i == 0 && c == '.');
        if unsafe_char {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    if out.len() > MAX_STEM {
        shorten(&mut out, raw);
    }
    out
}

/// Cut `stem` below common file name limits (255 bytes, with room for `.json` and a temp prefix). It
/// ends in a digest of the whole id, so two long ids that share a prefix keep two files.
fn shorten(stem: &mut String, raw: &str) {
    let digest = Sha256::digest(raw.as_bytes());
    let mut cut = MAX_STEM - 17;
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    stem.truncate(cut);
    stem.push('~');
    for byte in &digest[..8] {
        stem.push_str(&format!("{byte:02x}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_stay_inside_the_account_folder() {
        assert_eq!(file_stem("imessage:default:ABC-1"), "imessage:default:ABC-1");
        assert_eq!(file_stem("../x/y"), "%2E.%2Fx%2Fy");
        assert_eq!(file_stem("a\r\nb"), "a%0D%0Ab");
        assert_eq!(file_stem(""), "%00");
        assert!(file_stem(&"é".repeat(300)).len() <= MAX_STEM);
    }

    #[test]
    fn long_ids_that_share_a_prefix_keep_separate_files() {
        let long = "A".repeat(300);
        let (one, two) = (file_stem(&format!("{long}1")), file_stem(&format!("{long}2")));
        assert_ne!(one, two);
        assert!(one.len() <= MAX_STEM && two.len() <= MAX_STEM, "{one}");
        assert_eq!(
            file_stem(&format!("{long}1")),
            one,
            "the same id gives the same name"
        );
    }

    #[test]
    fn writes_the_envelope_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let context = crate::envelope::EnvelopeContext {
            account: "default".into(),
            agent_id: "main".into(),
            dm_scope: crate::config::DmScope::Main,
            main_key: "main".into(),
        };
        let message = crate::imsg::Message {
            id: 7,
            guid: "G/1".into(),
            sender: "+14155551212".into(),
            ..crate::imsg::Message::default()
        };
        let mut envelope = crate::envelope::normalize(&message, &context);
        envelope.id = "imessage:default:G/1".into();
        let path = write(dir.path(), "default", &envelope, "422 Unprocessable").unwrap();
        assert_eq!(
            path,
            dir.path().join("dead-letter/default/imessage:default:G%2F1.json")
        );
        let letter: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(letter["reason"], "422 Unprocessable");
        assert_eq!(letter["envelope"]["id"], "imessage:default:G/1");
    }
}

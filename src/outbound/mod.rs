//! Outbound: the target grammar and the imsg `send` requests a send turns into (docs/channel.md,
//! "Sending"; docs/differences.md C2 and C3: the config's `service` applies to bare handles, a
//! media-only send carries no placeholder text), the pure pieces of reply delivery (chunking, the
//! response prefix, the outbound sanitiser), and the one [`sender::Sender`] every send goes
//! through. What the inbound side shares with it (the echo cache, the reflection guard) is
//! `crate::echo`.

pub mod chunk;
pub mod error;
pub mod leftovers;
pub mod prefix;
pub mod sanitize;
pub mod sender;
pub mod target;

use crate::config::{Account, ChunkMode, Service};
use crate::imsg::SendParams;
pub use error::SendError;
pub use sender::{Link, Request, Sender, Shape};
pub use target::{Target, TargetError, parse};

/// The `send` params for `text` and `files` (paths imsg can read) to `target`: the first request
/// carries the text with the first file (as a caption), later files go alone. Blank text and no file
/// is an error.
pub fn send_params(
    target: &Target,
    text: &str,
    files: &[String],
    service: Service,
    region: &str,
) -> Result<Vec<SendParams>, SendError> {
    let text = text.trim();
    if text.is_empty() && files.is_empty() {
        return Err(SendError::Empty);
    }
    let region = match region.trim() {
        "" => "US",
        region => region,
    };
    let base = |text: &str, file: Option<&String>| SendParams {
        recipient: target.recipient(),
        text: (!text.is_empty()).then(|| text.to_string()),
        file: file.cloned(),
        service: target.service(service),
        region: region.to_string(),
        reply_to: None,
    };
    if files.is_empty() {
        return Ok(vec![base(text, None)]);
    }
    Ok(files
        .iter()
        .enumerate()
        .map(|(i, file)| base(if i == 0 { text } else { "" }, Some(file)))
        .collect())
}

/// How an account shapes outgoing text.
#[derive(Debug, Clone)]
pub struct Shaping {
    pub service: Service,
    pub region: String,
    pub chunk_limit: usize,
    pub chunk_mode: ChunkMode,
}

impl Shaping {
    /// The account's `service`, `region`, `textChunkLimit` and `chunkMode`.
    pub fn of(account: &Account) -> Self {
        Self {
            service: account.service,
            region: account.region.clone(),
            chunk_limit: account.text_chunk_limit,
            chunk_mode: account.chunk_mode,
        }
    }
}

/// The requests of a send: text alone is chunked (one request per chunk, in order); with files the
/// whole text is the first file's caption (docs/channel.md).
pub fn chunked_params(
    target: &Target,
    text: &str,
    files: &[String],
    shaping: &Shaping,
) -> Result<Vec<SendParams>, SendError> {
    if !files.is_empty() || text.trim().is_empty() {
        return send_params(target, text, files, shaping.service, &shaping.region);
    }
    let mut requests = Vec::new();
    for piece in chunk::chunk(text, shaping.chunk_limit, shaping.chunk_mode) {
        requests.extend(send_params(
            target,
            &piece,
            &[],
            shaping.service,
            &shaping.region,
        )?);
    }
    Ok(requests)
}

/// An agent's reply: assistant scaffolding removed, the response prefix applied,
/// then as [`chunked_params`].
pub fn reply_params(
    target: &Target,
    text: &str,
    files: &[String],
    shaping: &Shaping,
    prefix: Option<&str>,
) -> Result<Vec<SendParams>, SendError> {
    let clean = sanitize::sanitize_outbound(text);
    let text = prefix::apply_prefix(prefix, &clean);
    chunked_params(target, &text, files, shaping)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn json_of(params: &[SendParams]) -> Vec<Value> {
        params.iter().map(|p| serde_json::to_value(p).unwrap()).collect()
    }

    #[test]
    fn builds_send_params_with_the_caption_on_the_first_file_and_no_placeholder() {
        let to = parse("+14155551212").unwrap();
        let got = json_of(&send_params(&to, " hi ", &[], Service::Sms, "").unwrap());
        assert_eq!(
            got,
            vec![json!({"text": "hi", "service": "sms", "region": "US", "to": "+14155551212"})]
        );
        let files = vec!["/a.jpg".to_string(), "/b.pdf".to_string()];
        let got = json_of(
            &send_params(&parse("imessage:+1").unwrap(), "look", &files, Service::Sms, "DE").unwrap(),
        );
        assert_eq!(
            got[0],
            json!({"text": "look", "service": "imessage", "region": "DE", "file": "/a.jpg", "to": "+1"})
        );
        assert_eq!(
            got[1],
            json!({"service": "imessage", "region": "DE", "file": "/b.pdf", "to": "+1"})
        );
        let got = json_of(
            &send_params(&parse("chat_id:5").unwrap(), "", &files[..1], Service::Auto, "US").unwrap(),
        );
        assert_eq!(
            got,
            vec![json!({"service": "auto", "region": "US", "file": "/a.jpg", "chat_id": 5})]
        );
        let err = send_params(&to, "  ", &[], Service::Auto, "US").unwrap_err();
        assert_eq!(err.to_string(), "iMessage send requires text or media");
    }

    fn shaping(limit: usize) -> Shaping {
        Shaping {
            service: Service::Auto,
            region: "US".into(),
            chunk_limit: limit,
            chunk_mode: ChunkMode::Length,
        }
    }

    #[test]
    fn chunks_text_alone_but_keeps_a_caption_whole() {
        let to = parse("chat_id:3").unwrap();
        let got = chunked_params(&to, "hello world", &[], &shaping(5)).unwrap();
        let texts: Vec<&str> = got.iter().map(|p| p.text.as_deref().unwrap()).collect();
        assert_eq!(texts, vec!["hello", "world"]);
        assert!(
            got.iter()
                .all(|p| p.recipient == crate::imsg::Recipient::ChatId(3))
        );
        let got = chunked_params(&to, "hello world", &["/f.jpg".into()], &shaping(5)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text.as_deref(), Some("hello world"));
    }

    #[test]
    fn replies_are_sanitised_and_prefixed_before_chunking() {
        let to = parse("+1555").unwrap();
        let got = reply_params(
            &to,
            "<thinking>plan</thinking>Sure.\n\n\n\nDone.\nassistant:",
            &[],
            &shaping(4000),
            Some("[Ada]"),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text.as_deref(), Some("[Ada] Sure.\n\nDone."));
    }
}

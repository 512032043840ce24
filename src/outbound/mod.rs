//! Outbound: the target grammar and the imsg `send` requests a send turns into (reference §7.1–§7.3,
//! with DESIGN §7 fixes 2 and 3: config `service` applies to bare handles, media-only sends carry no
//! placeholder text), plus the pure pieces of reply delivery: chunking (§7.5), the response prefix
//! (§7.7) and the outbound sanitiser (§5.8). What the inbound side shares with it (the echo cache,
//! the reflection guard) is `crate::echo`.

pub mod chunk;
pub mod prefix;
pub mod sanitize;
pub mod target;

use serde_json::{Map, Value, json};

use crate::config::{ChunkMode, Service};
pub use target::{Target, TargetError, parse};

/// The `send` params for `text` and `files` (remote paths) to `target`: the first request carries the
/// text with the first file (as a caption), later files go alone. Blank text and no file is an error.
pub fn send_params(
    target: &Target,
    text: &str,
    files: &[String],
    service: Service,
    region: &str,
) -> Result<Vec<Value>, TargetError> {
    let text = text.trim();
    if text.is_empty() && files.is_empty() {
        return Err(TargetError("iMessage send requires text or media".into()));
    }
    let base = |text: &str, file: Option<&String>| {
        let mut params = Map::new();
        if !text.is_empty() {
            params.insert("text".into(), json!(text));
        }
        let service = match target {
            Target::Handle { service: Some(s), .. } => s.clone(),
            _ => service.as_str().to_string(),
        };
        params.insert("service".into(), json!(service));
        params.insert(
            "region".into(),
            json!(if region.trim().is_empty() {
                "US"
            } else {
                region.trim()
            }),
        );
        if let Some(file) = file {
            params.insert("file".into(), json!(file));
        }
        match target {
            Target::Handle { to, .. } => params.insert("to".into(), json!(to)),
            Target::ChatId(id) => params.insert("chat_id".into(), json!(id)),
            Target::ChatGuid(guid) => params.insert("chat_guid".into(), json!(guid)),
            Target::ChatIdentifier(ident) => params.insert("chat_identifier".into(), json!(ident)),
        };
        Value::Object(params)
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

/// The requests of a send: text alone is chunked (one request per chunk, in order); with files the
/// whole text is the first file's caption (reference §7.4).
pub fn chunked_params(
    target: &Target,
    text: &str,
    files: &[String],
    shaping: &Shaping,
) -> Result<Vec<Value>, TargetError> {
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

/// An agent's reply: assistant scaffolding removed (§5.8), the response prefix applied (§7.7),
/// then as [`chunked_params`].
pub fn reply_params(
    target: &Target,
    text: &str,
    files: &[String],
    shaping: &Shaping,
    prefix: Option<&str>,
) -> Result<Vec<Value>, TargetError> {
    let clean = sanitize::sanitize_outbound(text);
    let text = prefix::apply_prefix(prefix, &clean);
    chunked_params(target, &text, files, shaping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_send_params_with_the_caption_on_the_first_file_and_no_placeholder() {
        let to = parse("+14155551212").unwrap();
        let got = send_params(&to, " hi ", &[], Service::Sms, "").unwrap();
        assert_eq!(
            got,
            vec![json!({"text": "hi", "service": "sms", "region": "US", "to": "+14155551212"})]
        );
        let files = vec!["/a.jpg".to_string(), "/b.pdf".to_string()];
        let got = send_params(&parse("imessage:+1").unwrap(), "look", &files, Service::Sms, "DE").unwrap();
        assert_eq!(
            got[0],
            json!({"text": "look", "service": "imessage", "region": "DE", "file": "/a.jpg", "to": "+1"})
        );
        assert_eq!(
            got[1],
            json!({"service": "imessage", "region": "DE", "file": "/b.pdf", "to": "+1"})
        );
        let got = send_params(&parse("chat_id:5").unwrap(), "", &files[..1], Service::Auto, "US").unwrap();
        assert_eq!(
            got,
            vec![json!({"service": "auto", "region": "US", "file": "/a.jpg", "chat_id": 5})]
        );
        let err = send_params(&to, "  ", &[], Service::Auto, "US").unwrap_err();
        assert_eq!(err.0, "iMessage send requires text or media");
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
        let texts: Vec<&str> = got.iter().map(|p| p["text"].as_str().unwrap()).collect();
        assert_eq!(texts, vec!["hello", "world"]);
        assert!(got.iter().all(|p| p["chat_id"] == 3));
        let got = chunked_params(&to, "hello world", &["/f.jpg".into()], &shaping(5)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["text"], "hello world");
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
        assert_eq!(got[0]["text"], "[Ada] Sure.\n\nDone.");
    }
}

//! Outbound: the target grammar and the imsg `send` requests a send turns into (reference §7.1–§7.3,
//! with DESIGN §7 fixes 2 and 3: config `service` applies to bare handles, media-only sends carry no
//! placeholder text), plus the pure pieces of reply delivery: chunking (§7.5), the response prefix
//! (§7.7), the reflection guard and outbound sanitiser (§5.8) and the sent-message echo cache (§5.7).

pub mod chunk;
pub mod echo;
pub mod prefix;
pub mod sanitize;
pub mod target;

use serde_json::{Map, Value, json};

use crate::config::Service;
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
}

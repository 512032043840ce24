//! `bridge.agent` of kind "nats": defaults and validation of the server URLs, stream names, subject
//! prefix, duplicate window and credentials (docs/scale-out.md, "Configuration").

use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::raw::{RawAgentSink, RawNatsTls};
use super::types::{NatsConfig, NatsTls};
use super::validate::{self, positive, trimmed};
use crate::util::expand_tilde;

const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
const DEFAULT_STREAM: &str = "IMSG";
const DEFAULT_REPLY_STREAM: &str = "IMSG_REPLIES";
const DEFAULT_PREFIX: &str = "imsg";
const DEFAULT_DUPLICATE_WINDOW_SECONDS: u64 = 600;

pub(super) fn validate(raw: &RawAgentSink) -> Result<NatsConfig, ConfigError> {
    let url = trimmed(raw.url.as_deref()).unwrap_or_else(|| DEFAULT_URL.to_owned());
    check_urls(&url)?;
    let stream = name(raw.stream.as_deref(), "bridge.agent.stream", DEFAULT_STREAM)?;
    let reply_stream = name(
        raw.reply_stream.as_deref(),
        "bridge.agent.replyStream",
        DEFAULT_REPLY_STREAM,
    )?;
    if stream == reply_stream {
        return Err(ConfigError::invalid(
            "bridge.agent.replyStream",
            format!("{reply_stream:?} is also bridge.agent.stream; the two streams need different names"),
        ));
    }
    let subject_prefix = prefix(raw.subject_prefix.as_deref())?;
    let window = positive(
        raw.duplicate_window_seconds,
        "bridge.agent.duplicateWindowSeconds",
    )?
    .unwrap_or(DEFAULT_DUPLICATE_WINDOW_SECONDS);
    let token_env = validate::env_name(raw.token_env.as_deref(), "bridge.agent.tokenEnv")?;
    let credentials_file = trimmed(raw.credentials_file.as_deref()).map(|p| expand_tilde(&p));
    if token_env.is_some() && credentials_file.is_some() {
        return Err(ConfigError::invalid(
            "bridge.agent.credentialsFile",
            "and bridge.agent.tokenEnv are two ways to log in; keep one",
        ));
    }
    Ok(NatsConfig {
        url,
        stream,
        reply_stream,
        subject_prefix,
        duplicate_window: Duration::from_secs(window),
        token_env,
        credentials_file,
        tls: raw.tls.as_ref().map(tls).transpose()?,
    })
}

/// Each of the comma-separated URLs: `nats://` or `tls://`, or a bare `host:port`.
fn check_urls(urls: &str) -> Result<(), ConfigError> {
    for url in urls.split(',').map(str::trim) {
        let rest = url
            .strip_prefix("nats://")
            .or_else(|| url.strip_prefix("tls://"))
            .unwrap_or(url);
        let host_ok = !rest.is_empty() && !rest.starts_with(['/', ':']) && !rest.contains("://");
        if !host_ok || url.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "bridge.agent.url",
                format!(
                    "{url:?} is not a NATS server URL; expected nats://host:4222 or tls://host:4222 (several: comma-separated)"
                ),
            ));
        }
    }
    Ok(())
}

/// A stream name: JetStream refuses whitespace, `.`, `*`, `>` and path separators in it.
fn name(raw: Option<&str>, path: &str, default: &str) -> Result<String, ConfigError> {
    let name = trimmed(raw).unwrap_or_else(|| default.to_owned());
    let bad = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
    if name.chars().any(bad) {
        return Err(ConfigError::invalid(
            path,
            format!(
                "{name:?} is not a stream name; use letters, digits, '-' and '_' (no '.', '*', '>', '/' or spaces)"
            ),
        ));
    }
    Ok(name)
}

/// The subject prefix: one or more literal tokens (`imsg`, `acme.imsg`).
fn prefix(raw: Option<&str>) -> Result<String, ConfigError> {
    let prefix = trimmed(raw).unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    let token_ok = |t: &str| {
        !t.is_empty() && t != "*" && t != ">" && !t.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if !prefix.split('.').all(token_ok) {
        return Err(ConfigError::invalid(
            "bridge.agent.subjectPrefix",
            format!(
                "{prefix:?} is not a subject prefix; expected dot-separated tokens without spaces or wildcards, e.g. \"imsg\""
            ),
        ));
    }
    Ok(prefix)
}

fn tls(raw: &RawNatsTls) -> Result<NatsTls, ConfigError> {
    let file = |value: &Option<String>| trimmed(value.as_deref()).map(|p| expand_tilde(&p));
    let tls = NatsTls {
        ca_file: file(&raw.ca_file),
        cert_file: file(&raw.cert_file),
        key_file: file(&raw.key_file),
    };
    let pair: [&Option<PathBuf>; 2] = [&tls.cert_file, &tls.key_file];
    if pair.iter().filter(|f| f.is_some()).count() == 1 {
        return Err(ConfigError::invalid(
            "bridge.agent.tls",
            "certFile and keyFile go together (a client certificate and its key); set both or neither",
        ));
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawAgentSink {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_empty_nats_section_takes_the_documented_defaults() {
        let nats = validate(&raw(r#"{"kind":"nats"}"#)).unwrap();
        assert_eq!(
            (
                nats.url.as_str(),
                nats.stream.as_str(),
                nats.reply_stream.as_str()
            ),
            ("nats://127.0.0.1:4222", "IMSG", "IMSG_REPLIES")
        );
        assert_eq!(nats.subject_prefix, "imsg");
        assert_eq!(nats.duplicate_window, Duration::from_secs(600));
        assert_eq!(
            (nats.token_env, nats.credentials_file, nats.tls),
            (None, None, None)
        );
    }

    #[test]
    fn refuses_what_nats_would_refuse_with_the_key_and_a_remedy() {
        let cases = [
            (r#"{"url":"http://x:4222"}"#, "bridge.agent.url"),
            (r#"{"url":"nats://a:4222, nats://"}"#, "bridge.agent.url"),
            (r#"{"stream":"IM.SG"}"#, "bridge.agent.stream"),
            (r#"{"replyStream":"a b"}"#, "bridge.agent.replyStream"),
            (r#"{"replyStream":"IMSG"}"#, "bridge.agent.replyStream"),
            (r#"{"subjectPrefix":"imsg.>"}"#, "bridge.agent.subjectPrefix"),
            (r#"{"subjectPrefix":"a..b"}"#, "bridge.agent.subjectPrefix"),
            (
                r#"{"duplicateWindowSeconds":0}"#,
                "bridge.agent.duplicateWindowSeconds",
            ),
            (r#"{"tokenEnv":"NATS-TOKEN"}"#, "bridge.agent.tokenEnv"),
            (
                r#"{"tokenEnv":"T","credentialsFile":"/c.creds"}"#,
                "bridge.agent.credentialsFile",
            ),
            (r#"{"tls":{"certFile":"/c.pem"}}"#, "bridge.agent.tls"),
        ];
        for (json, key) in cases {
            let err = validate(&raw(json)).unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn accepts_server_lists_prefix_paths_and_tls_files() {
        let nats = validate(&raw(
            r#"{"url":"nats://a:4222,tls://b:4222","subjectPrefix":"acme.imsg","duplicateWindowSeconds":3600,
                "tokenEnv":"NATS_TOKEN","tls":{"caFile":"/ca.pem","certFile":"/c.pem","keyFile":"/k.pem"}}"#,
        ))
        .unwrap();
        assert_eq!(nats.subject_prefix, "acme.imsg");
        assert_eq!(nats.duplicate_window, Duration::from_secs(3600));
        assert_eq!(nats.token_env.as_deref(), Some("NATS_TOKEN"));
        let tls = nats.tls.unwrap();
        assert_eq!(tls.key_file, Some(PathBuf::from("/k.pem")));
    }
}

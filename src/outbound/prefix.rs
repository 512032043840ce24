//! The reply prefix (`responsePrefix`, docs/channel.md): `"auto"` becomes `[<identity name>]`, template
//! variables are filled from the reply's model context, and the result goes in front of reply text.

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// The heartbeat acknowledgement; it is a protocol token, not a reply, so it never gets a prefix.
pub const HEARTBEAT_TOKEN: &str = "HEARTBEAT_OK";

/// A `{name}` template variable: a letter, then letters, digits and dots. `None` only if the literal
/// pattern failed to compile, which a test rules out.
static TEMPLATE_VAR: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\{([A-Za-z][A-Za-z0-9.]*)\}").ok());

/// What the template variables of a prefix resolve to for one reply; `None` leaves the variable as
/// written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixContext {
    pub identity_name: Option<String>,
    /// The model id without its provider, e.g. `claude-opus-4`.
    pub model: Option<String>,
    /// The model with its provider, e.g. `anthropic/claude-opus-4`.
    pub model_full: Option<String>,
    pub provider: Option<String>,
    pub thinking_level: Option<String>,
}

/// The prefix to put in front of replies, from the configured value (account → channel →
/// `messages.responsePrefix`, already resolved by the config). `"auto"` is `[<identity name>]`, or no
/// prefix when the agent has no name; anything else is a template. A blank value means no prefix.
pub fn resolve_prefix(configured: Option<&str>, ctx: &PrefixContext) -> Option<String> {
    let configured = configured?;
    if configured == "auto" {
        let name = ctx
            .identity_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())?;
        return Some(format!("[{name}]"));
    }
    if configured.trim().is_empty() {
        return None;
    }
    let Some(pattern) = TEMPLATE_VAR.as_ref() else {
        return Some(configured.to_string());
    };
    let filled = pattern.replace_all(configured, |caps: &Captures| {
        let value = match caps[1].to_ascii_lowercase().as_str() {
            "model" => ctx.model.as_deref(),
            "modelfull" => ctx.model_full.as_deref(),
            "provider" => ctx.provider.as_deref(),
            "thinkinglevel" | "think" => ctx.thinking_level.as_deref(),
            "identity.name" | "identityname" => ctx.identity_name.as_deref(),
            _ => None,
        };
        // Unknown or unset variables stay literal, so a typo is visible rather than silently dropped.
        value.unwrap_or(&caps[0]).to_string()
    });
    Some(filled.into_owned())
}

/// `text` with `prefix` in front (`<prefix> <text>`). Blank text, the heartbeat token, and text that
/// already starts with the prefix (the agent wrote it itself) are returned unchanged.
pub fn apply_prefix(prefix: Option<&str>, text: &str) -> String {
    match prefix {
        Some(prefix)
            if !prefix.is_empty()
                && !text.trim().is_empty()
                && text.trim() != HEARTBEAT_TOKEN
                && !text.starts_with(prefix) =>
        {
            format!("{prefix} {text}")
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_context() -> PrefixContext {
        PrefixContext {
            identity_name: Some("Clawd".into()),
            model: Some("claude-opus-4".into()),
            model_full: Some("anthropic/claude-opus-4".into()),
            provider: Some("anthropic".into()),
            thinking_level: Some("high".into()),
        }
    }

    #[test]
    fn the_template_pattern_compiles() {
        assert!(TEMPLATE_VAR.is_some());
    }

    #[test]
    fn auto_is_the_bracketed_identity_name_or_nothing() {
        let ctx = full_context();
        assert_eq!(resolve_prefix(Some("auto"), &ctx).as_deref(), Some("[Clawd]"));
        let padded = PrefixContext {
            identity_name: Some("  Clawd  ".into()),
            ..PrefixContext::default()
        };
        assert_eq!(resolve_prefix(Some("auto"), &padded).as_deref(), Some("[Clawd]"));
        assert_eq!(resolve_prefix(Some("auto"), &PrefixContext::default()), None);
        let blank = PrefixContext {
            identity_name: Some(" ".into()),
            ..PrefixContext::default()
        };
        assert_eq!(resolve_prefix(Some("auto"), &blank), None);
    }

    #[test]
    fn no_or_blank_configuration_means_no_prefix() {
        assert_eq!(resolve_prefix(None, &full_context()), None);
        assert_eq!(resolve_prefix(Some(""), &full_context()), None);
        assert_eq!(resolve_prefix(Some("   "), &full_context()), None);
    }

    #[test]
    fn template_variables_are_filled_case_insensitively() {
        let ctx = full_context();
        let cases = [
            ("[bot]", "[bot]"),
            ("[{model}]", "[claude-opus-4]"),
            ("[{MODEL}]", "[claude-opus-4]"),
            ("{modelFull}", "anthropic/claude-opus-4"),
            ("{modelfull}", "anthropic/claude-opus-4"),
            ("{provider}", "anthropic"),
            ("{thinkingLevel}", "high"),
            ("{think}", "high"),
            ("{Identity.Name}", "Clawd"),
            ("{identityName}", "Clawd"),
            (
                "{identityName} ({provider}/{model}, {think})",
                "Clawd (anthropic/claude-opus-4, high)",
            ),
            // `auto` only means auto on its own.
            ("auto {model}", "auto claude-opus-4"),
        ];
        for (template, want) in cases {
            assert_eq!(
                resolve_prefix(Some(template), &ctx).as_deref(),
                Some(want),
                "{template}"
            );
        }
    }

    #[test]
    fn unknown_and_unset_variables_stay_literal() {
        let cases = [
            ("{nope}", "{nope}"),
            ("{model} {nope}", "claude-opus-4 {nope}"),
            ("{ model }", "{ model }"),
            ("{1model}", "{1model}"),
            ("{}", "{}"),
        ];
        for (template, want) in cases {
            assert_eq!(
                resolve_prefix(Some(template), &full_context()).as_deref(),
                Some(want),
                "{template}"
            );
        }
        let empty = PrefixContext::default();
        assert_eq!(
            resolve_prefix(Some("[{model}|{think}]"), &empty).as_deref(),
            Some("[{model}|{think}]")
        );
    }

    #[test]
    fn the_prefix_goes_in_front_of_reply_text_with_a_space() {
        let cases = [
            (Some("[Clawd]"), "hello", "[Clawd] hello"),
            (Some("[Clawd]"), "hello\nworld", "[Clawd] hello\nworld"),
            (None, "hello", "hello"),
            (Some(""), "hello", "hello"),
            // Already prefixed by the agent: not doubled.
            (Some("[Clawd]"), "[Clawd] hello", "[Clawd] hello"),
            (Some("[Clawd]"), "[Clawd]", "[Clawd]"),
            // A different prefix is not mistaken for ours.
            (Some("[Clawd]"), "[Other] hi", "[Clawd] [Other] hi"),
            // Empty text and the heartbeat token get no prefix.
            (Some("[Clawd]"), "", ""),
            (Some("[Clawd]"), "   ", "   "),
            (Some("[Clawd]"), "HEARTBEAT_OK", "HEARTBEAT_OK"),
            (Some("[Clawd]"), " HEARTBEAT_OK\n", " HEARTBEAT_OK\n"),
        ];
        for (prefix, text, want) in cases {
            assert_eq!(apply_prefix(prefix, text), want, "{prefix:?} {text:?}");
        }
    }
}

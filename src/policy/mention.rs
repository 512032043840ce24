//! Mention patterns (docs/channel.md): the agent's `groupChat.mentionPatterns`, else
//! `messages.groupChat.mentionPatterns`, else derived from the agent's identity name; compiled
//! case-insensitive, tested against the text lowercased with zero-width and bidi marks removed.

use regex::{Regex, RegexBuilder};
use tracing::warn;

/// Longest pattern we accept; longer ones are almost certainly pasted by mistake.
const MAX_PATTERN_CHARS: usize = 500;

/// Which patterns apply: the first source that has the key wins, even when it is empty.
pub fn resolve(
    agent: Option<&Vec<String>>,
    messages: Option<&Vec<String>>,
    identity_name: Option<&str>,
) -> Vec<String> {
    if let Some(patterns) = agent.or(messages) {
        return patterns.clone();
    }
    let Some(name) = identity_name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Vec::new();
    };
    let words: Vec<String> = name.split_whitespace().map(regex::escape).collect();
    if name.chars().any(|c| c.is_alphanumeric()) {
        vec![format!(r"\b@?{}\b", words.join(r"\s+"))]
    } else {
        // An emoji name: the literal.
        vec![regex::escape(name)]
    }
}

/// Compile the usable patterns; an unusable one is logged and skipped.
pub fn compile(patterns: &[String]) -> Vec<Regex> {
    patterns
        .iter()
        .filter_map(|p| {
            if p.chars().count() > MAX_PATTERN_CHARS {
                warn!(
                    "Ignoring unsupported group mention pattern (longer than {MAX_PATTERN_CHARS} characters)"
                );
                return None;
            }
            match RegexBuilder::new(p)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
            {
                Ok(re) => Some(re),
                Err(err) => {
                    warn!(pattern = %p, "Ignoring unsupported group mention pattern: {err}");
                    None
                }
            }
        })
        .collect()
}

/// The routed (default) agent's patterns for `config`, compiled.
pub fn for_config(config: &crate::config::Config) -> Vec<Regex> {
    let agent = config.default_agent();
    compile(&resolve(
        agent.and_then(|a| a.mention_patterns.as_ref()),
        config.messages.mention_patterns.as_ref(),
        agent.and_then(|a| a.identity_name.as_deref()),
    ))
}

/// Zero-width and bidi marks a client may slip between letters.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}')
}

pub fn is_mentioned(text: &str, patterns: &[Regex]) -> bool {
    let cleaned: String = text
        .chars()
        .filter(|c| !is_invisible(*c))
        .collect::<String>()
        .to_lowercase();
    patterns.iter().any(|re| re.is_match(&cleaned))
}

/// A slash command such as `/new`, `/reset`, `/config show`.
pub fn is_control_command(text: &str) -> bool {
    let Some(rest) = text.trim_start().strip_prefix('/') else {
        return false;
    };
    let name: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_source_with_the_key_wins_and_names_derive_a_pattern() {
        let agent = vec!["hey bot".to_string()];
        let empty: Vec<String> = vec![];
        assert_eq!(resolve(Some(&agent), Some(&vec!["x".into()]), Some("Ada")), agent);
        assert_eq!(
            resolve(Some(&empty), Some(&vec!["x".into()]), Some("Ada")),
            empty,
            "present but empty wins"
        );
        assert_eq!(resolve(None, Some(&vec!["x".into()]), Some("Ada")), vec!["x"]);
        assert_eq!(resolve(None, None, Some("Open Claw")), vec![r"\b@?Open\s+Claw\b"]);
        assert_eq!(resolve(None, None, Some("🦞")), vec!["🦞"]);
        assert!(resolve(None, None, None).is_empty());
    }

    #[test]
    fn detects_mentions_case_insensitively_through_invisible_marks() {
        let patterns = compile(&resolve(None, None, Some("Open Claw")));
        assert!(is_mentioned("hey @openclaw?", &compile(&["@?openclaw".into()])));
        assert!(is_mentioned("Hi OPEN   claw, help", &patterns));
        assert!(is_mentioned("hi op\u{200B}en claw", &patterns));
        assert!(!is_mentioned("reopen clawback", &patterns));
        assert!(
            compile(&["(unclosed".into()]).is_empty(),
            "an invalid pattern is skipped"
        );
        assert!(!is_mentioned("anything", &[]));
    }

    #[test]
    fn recognises_control_commands() {
        for (text, expected) in [
            ("/new", true),
            ("  /config show", true),
            ("/reset now", true),
            ("/", false),
            ("/ x", false),
            ("a /new", false),
            ("/1abc", false),
            ("//x", false),
        ] {
            assert_eq!(is_control_command(text), expected, "{text:?}");
        }
    }
}

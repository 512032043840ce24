//! The reflection guard: an inbound text that carries assistant scaffolding outside
//! code (`<thinking>`, `#+#+`, `assistant to=…`, `<final>`, `<relevant-memories>`) is our own output
//! reflected back, and is dropped as `reflected assistant content` (docs/channel.md, step 8).

use std::sync::LazyLock;

use regex::Regex;

use super::code::{code_spans, outside};

// Every pattern is a literal; `None` only if one failed to compile, which a test rules out. A pattern
// that is `None` matches nothing, so a broken pattern degrades the guard instead of crashing the bridge.

/// Tool-call separators that leak from some models' raw output: `#+#+`, `#+#+#+#`, …
static SEPARATOR: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?:#\+){2,}#?").ok());
/// A channel-routing header such as `assistant to=final` or `assistant to=functions.exec`.
static ASSISTANT_TO: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)\bassistant\s+to\s*=\s*\w+").ok());
/// An opening or closing reasoning tag. The `>` is required and no attributes are allowed, so a user
/// writing `<think` or `<thought experiment>` is not mistaken for reasoning output.
static THINKING_TAG: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)<\s*/?\s*(?:think|thinking|thought|antthinking)\s*>").ok());
/// The memory-injection wrapper; the reference requires no closing `>` for it, unlike the others.
static MEMORIES_TAG: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)<\s*/?\s*relevant[-_]memories\b").ok());
/// A `<final>` tag, possibly with more words (`<final answer>`); the `>` is required.
static FINAL_TAG: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"(?i)<\s*/?\s*final\b[^<>]*>").ok());

/// A kind of assistant scaffolding found in a message, for the drop log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    Separator,
    AssistantRole,
    ThinkingTag,
    RelevantMemoriesTag,
    FinalTag,
}

impl Reflection {
    pub fn label(self) -> &'static str {
        match self {
            Self::Separator => "internal-separator",
            Self::AssistantRole => "assistant-role-marker",
            Self::ThinkingTag => "thinking-tag",
            Self::RelevantMemoriesTag => "relevant-memories-tag",
            Self::FinalTag => "final-tag",
        }
    }
}

/// Whether an inbound message carries assistant scaffolding outside code, i.e. is our own output
/// reflected back (and must be dropped as `reflected assistant content`).
pub fn is_reflected(text: &str) -> bool {
    !reflection_markers(text).is_empty()
}

/// Every kind of scaffolding found outside inline and fenced code, in a fixed order. Code is exempt
/// because users legitimately paste and discuss these markers there.
pub fn reflection_markers(text: &str) -> Vec<Reflection> {
    let checks: [(&LazyLock<Option<Regex>>, Reflection); 5] = [
        (&SEPARATOR, Reflection::Separator),
        (&ASSISTANT_TO, Reflection::AssistantRole),
        (&THINKING_TAG, Reflection::ThinkingTag),
        (&MEMORIES_TAG, Reflection::RelevantMemoriesTag),
        (&FINAL_TAG, Reflection::FinalTag),
    ];
    let prose = outside(&code_spans(text), text.len());
    checks
        .into_iter()
        .filter(|(pattern, _)| {
            pattern
                .as_ref()
                .is_some_and(|re| prose.iter().any(|range| re.is_match(&text[range.clone()])))
        })
        .map(|(_, kind)| kind)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        let patterns = [
            &SEPARATOR,
            &ASSISTANT_TO,
            &THINKING_TAG,
            &MEMORIES_TAG,
            &FINAL_TAG,
        ];
        for pattern in patterns {
            assert!(pattern.is_some());
        }
    }

    #[test]
    fn the_reflection_guard_flags_scaffolding_and_passes_ordinary_text() {
        let cases = [
            // Empty and normal text.
            ("", false),
            ("Hello, how are you?", false),
            ("Use C# + F# for this", false),
            ("I bought 3 #+ tickets", false),
            // Separators.
            ("#+#+", true),
            ("Done #+#+#+# next", true),
            // Role headers.
            ("assistant to=final", true),
            ("ok ASSISTANT  to = functions.exec", true),
            ("the assistant told me", false),
            // Reasoning tags, opening and closing.
            ("<think>planning</think>", true),
            ("</think> the rest", true),
            ("<thinking>", true),
            ("</thinking>", true),
            ("<thought>", true),
            ("</thought>", true),
            ("<antthinking>x", true),
            ("< THINK >", true),
            // Memory wrappers.
            ("<relevant_memories>likes tea</relevant_memories>", true),
            ("<relevant-memories>", true),
            ("</relevant-memories>", true),
            // Final tags.
            ("<final>Answer</final>", true),
            ("</final>", true),
            ("<final answer>", true),
            // Partial tags and lookalikes are not scaffolding.
            ("<think", false),
            ("<thinking about it", false),
            ("</thought", false),
            ("<final", false),
            ("<thought experiment>", false),
            ("<finally>", false),
            ("<thinker>", false),
        ];
        for (text, want) in cases {
            assert_eq!(is_reflected(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_reflection_guard_reports_every_kind_found() {
        let text = "<think>x</think> #+#+ assistant to=final <final>y</final> <relevant_memories>";
        assert_eq!(
            reflection_markers(text),
            vec![
                Reflection::Separator,
                Reflection::AssistantRole,
                Reflection::ThinkingTag,
                Reflection::RelevantMemoriesTag,
                Reflection::FinalTag,
            ]
        );
        assert_eq!(reflection_markers("<final>"), vec![Reflection::FinalTag]);
        assert_eq!(Reflection::ThinkingTag.label(), "thinking-tag");
    }

    #[test]
    fn the_reflection_guard_ignores_markers_inside_code() {
        let cases = [
            ("Use `<think>` tags", false),
            ("run ``assistant to=final`` here", false),
            ("``a ` <final> b``", false),
            ("```\n<thinking>\n#+#+\nassistant to=final\n```", false),
            ("~~~xml\n<relevant_memories>\n~~~", false),
            // An unclosed fence runs to the end of the message.
            ("look:\n```\n<think>", false),
            // Outside the code it still counts.
            ("`code` then <think>", true),
            ("```\nx\n```\n<final>", true),
            ("<thought> and `<thought>`", true),
            // A backtick without a partner on its line hides nothing.
            ("it`s <think> time", true),
            ("`\n<think>\n`", true),
        ];
        for (text, want) in cases {
            assert_eq!(is_reflected(text), want, "{text:?}");
        }
    }
}

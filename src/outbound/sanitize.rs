//! Keeping assistant scaffolding out of the conversation (docs/channel.md): the outbound sanitiser
//! that strips our internal markup from replies before they are sent. Its inbound counterpart, the
//! reflection guard, is `crate::echo::reflection`.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use crate::echo::code::code_spans;

// Every pattern is a literal; `None` only if one failed to compile, which a test rules out. A pattern
// that is `None` matches nothing, so a broken pattern degrades the guard instead of crashing the bridge.

/// Every scaffolding tag the sanitiser removes, as one pattern: group 1 is the closing slash, groups
/// 2–4 tell thinking, memory and final tags apart.
static SCAFFOLD_TAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)<\s*(/?)\s*(?:(think|thinking|thought|antthinking)\s*",
        r"|(relevant[-_]memories)\b[^<>]*|(final)\b[^<>]*)>",
    ))
    .ok()
});
/// A separator with the spaces before it, so `a #+#+ b` becomes `a b`.
static SEPARATOR_STRIP: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"[ \t]*(?:#\+){2,}#?").ok());
/// An `assistant to=` marker with the spaces before it; it never spans lines.
static ASSISTANT_TO_STRIP: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)[ \t]*\bassistant[ \t]+to[ \t]*=[ \t]*\w+").ok());
static BLANK_RUN: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\n{3,}").ok());

/// A reply with assistant scaffolding removed: thinking and memory blocks (with their content), `<final>`
/// tags (keeping their content), separators, `assistant to=` markers and role-marker lines at the end;
/// then runs of 3+ newlines collapse to a blank line and the result is trimmed. Code is left verbatim.
pub fn sanitize_outbound(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    let text = strip_scaffold_tags(text);
    let text = map_outside_code(&text, |prose| {
        let prose = replace_all(&SEPARATOR_STRIP, prose, "");
        replace_all(&ASSISTANT_TO_STRIP, &prose, "")
    });
    let text = strip_trailing_role_markers(&text);
    let text = map_outside_code(text, |prose| replace_all(&BLANK_RUN, prose, "\n\n"));
    text.trim().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    Thinking,
    Memories,
    Final,
}

struct Tag {
    range: Range<usize>,
    kind: TagKind,
    closing: bool,
}

/// Removes thinking and memory blocks from their opening tag to the next closing tag of the same kind,
/// and every other scaffolding tag on its own. An unclosed block loses only its opening tag: the text
/// after it may well be the answer, and sending it beats sending nothing.
fn strip_scaffold_tags(text: &str) -> String {
    let Some(pattern) = SCAFFOLD_TAG.as_ref() else {
        return text.to_string();
    };
    let code = code_spans(text);
    let tags: Vec<Tag> = pattern
        .captures_iter(text)
        .filter_map(|caps| {
            let whole = caps.get(0)?;
            if code.iter().any(|span| span.contains(&whole.start())) {
                return None;
            }
            let kind = if caps.get(2).is_some() {
                TagKind::Thinking
            } else if caps.get(3).is_some() {
                TagKind::Memories
            } else {
                TagKind::Final
            };
            let closing = caps.get(1).is_some_and(|slash| !slash.is_empty());
            Some(Tag {
                range: whole.range(),
                kind,
                closing,
            })
        })
        .collect();

    let mut cuts: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while i < tags.len() {
        let tag = &tags[i];
        let mut end = tag.range.end;
        let mut next = i + 1;
        if !tag.closing && tag.kind != TagKind::Final {
            let close = tags[i + 1..].iter().position(|t| t.closing && t.kind == tag.kind);
            if let Some(offset) = close {
                end = tags[i + 1 + offset].range.end;
                next = i + 2 + offset;
            }
        }
        let mut start = tag.range.start;
        // A removed block takes the spaces before it along, so `a <think>…</think> b` reads `a b`. A
        // `<final>` tag keeps them: its content stays and must stay separated from the text before.
        if tag.kind != TagKind::Final {
            let floor = cuts.last().map_or(0, |cut| cut.end);
            start = floor + text[floor..start].trim_end_matches([' ', '\t']).len();
        }
        cuts.push(start..end);
        i = next;
    }

    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for cut in cuts {
        out.push_str(&text[pos..cut.start]);
        pos = cut.end;
    }
    out.push_str(&text[pos..]);
    out
}

/// `text` without the lines at its end that are only a role marker (`user:`, `system:`,
/// `assistant:`): a model continuing the transcript past its own turn.
fn strip_trailing_role_markers(text: &str) -> &str {
    let mut text = text.trim_end();
    loop {
        let (head, last) = match text.rfind('\n') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => ("", text),
        };
        let is_marker = last
            .trim()
            .strip_suffix(':')
            .map(str::trim_end)
            .is_some_and(|role| {
                ["user", "system", "assistant"]
                    .iter()
                    .any(|r| role.eq_ignore_ascii_case(r))
            });
        if !is_marker {
            return text;
        }
        text = head.trim_end();
    }
}

fn replace_all(pattern: &LazyLock<Option<Regex>>, text: &str, with: &str) -> String {
    match pattern.as_ref() {
        Some(re) => re.replace_all(text, with).into_owned(),
        None => text.to_string(),
    }
}

/// `text` with `f` applied to each stretch outside code; code is copied verbatim.
fn map_outside_code(text: &str, f: impl Fn(&str) -> String) -> String {
    let code = code_spans(text);
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for span in &code {
        out.push_str(&f(&text[pos..span.start]));
        out.push_str(&text[span.clone()]);
        pos = span.end;
    }
    out.push_str(&f(&text[pos..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        let patterns = [&SCAFFOLD_TAG, &SEPARATOR_STRIP, &ASSISTANT_TO_STRIP, &BLANK_RUN];
        for pattern in patterns {
            assert!(pattern.is_some());
        }
    }

    #[test]
    fn the_sanitiser_strips_scaffolding_and_keeps_the_reply() {
        let cases = [
            // Empty and normal text are unchanged.
            ("", ""),
            ("Hello world.\nSecond line.", "Hello world.\nSecond line."),
            (
                "Hello world.\n\nSecond paragraph.",
                "Hello world.\n\nSecond paragraph.",
            ),
            // Thinking blocks go with their content, whichever reasoning tag name they use.
            ("<think>plan the reply</think>Answer", "Answer"),
            ("<thinking>\nstep 1\nstep 2\n</thinking>\n\nAnswer", "Answer"),
            ("<thought>hmm</thought> Answer", "Answer"),
            ("<antthinking>x</antthinking>Answer", "Answer"),
            ("Before <think>x</think> after", "Before after"),
            ("<THINK>x</Thinking>Answer", "Answer"),
            // An unclosed block loses its tag only; a stray closing tag is removed.
            ("<think>Answer", "Answer"),
            ("Answer</think>", "Answer"),
            // Memory blocks go with their content.
            ("<relevant_memories>\nlikes tea\n</relevant_memories>\nHi!", "Hi!"),
            ("<relevant-memories source=\"x\">m</relevant-memories>Hi!", "Hi!"),
            // Final tags go, their content stays.
            ("<final>The answer is 4.</final>", "The answer is 4."),
            ("Result: <final answer>4</final>", "Result: 4"),
            // Separators and role headers.
            ("Part one #+#+#+ part two", "Part one part two"),
            ("Hello #+#+\nWorld", "Hello\nWorld"),
            ("#+#+#+#", ""),
            ("assistant to=final\nHello", "Hello"),
            ("Hello assistant to=final", "Hello"),
            // Role-marker lines at the end, several of them, any case.
            ("Here you go.\nuser:", "Here you go."),
            ("Here you go.\n\nUser:\n  assistant :\n\n", "Here you go."),
            ("Here you go.\nsystem:", "Here you go."),
            // Role markers elsewhere, or with content, are the reply's own text.
            ("user:\nHello", "user:\nHello"),
            ("Thanks!\nuser: tell me more", "Thanks!\nuser: tell me more"),
            // Runs of blank lines collapse to one.
            ("a\n\n\n\nb", "a\n\nb"),
            ("a\n\n\nb\n\n\n\n\nc", "a\n\nb\n\nc"),
            // Trimmed.
            ("  hi  \n", "hi"),
        ];
        for (text, want) in cases {
            assert_eq!(sanitize_outbound(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_sanitiser_handles_combined_markers() {
        let text = "<thinking>reason</thinking>\n\n\nHello #+#+#+ world\nassistant to=final\n\n\n\n\
                    <final>Bye</final>\n<relevant_memories>m</relevant_memories>\nuser:\n";
        assert_eq!(sanitize_outbound(text), "Hello world\n\nBye");
    }

    #[test]
    fn the_sanitiser_leaves_code_verbatim() {
        let cases = [
            "Wrap it in `<think>` tags.",
            "```\n<think>\nkeep\n</think>\n#+#+\n\n\n\nassistant to=final\n```",
            "Use ``#+#+`` as a separator.",
        ];
        for text in cases {
            assert_eq!(sanitize_outbound(text), text, "{text:?}");
        }
        // Code inside a removed block goes with the block.
        assert_eq!(
            sanitize_outbound("<think>\n```\nx\n```\n</think>\nAnswer"),
            "Answer"
        );
    }
}

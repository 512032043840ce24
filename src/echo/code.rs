//! Where code is in a message: fenced blocks and inline spans. The reflection guard looks for
//! assistant scaffolding only outside code, the outbound sanitiser leaves code verbatim, and the
//! `newline` chunker never splits inside a fence (docs/channel.md, "Sending"): all three see the
//! same spans.

use std::ops::Range;

/// Byte ranges of code, sorted and disjoint: fenced blocks (as the chunker sees them) and, between
/// them, inline code spans.
pub fn code_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut pos = 0;
    for fence in fence_spans(text) {
        inline_code_spans(text, pos..fence.start, &mut spans);
        pos = fence.end;
        spans.push(fence);
    }
    inline_code_spans(text, pos..text.len(), &mut spans);
    spans
}

/// Inline code spans within `range`: a run of N backticks closed by the next run of exactly N on the
/// same line. An unclosed run is literal text. Confining spans to one line keeps a stray backtick from
/// hiding a whole message from the guard.
fn inline_code_spans(text: &str, range: Range<usize>, spans: &mut Vec<Range<usize>>) {
    let bytes = text.as_bytes();
    let run_len = |from: usize| bytes[from..range.end].iter().take_while(|b| **b == b'`').count();
    let mut i = range.start;
    while i < range.end {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let open = run_len(i);
        let mut j = i + open;
        let mut close_end = None;
        while j < range.end && bytes[j] != b'\n' {
            if bytes[j] == b'`' {
                let run = run_len(j);
                if run == open {
                    close_end = Some(j + run);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close_end {
            Some(end) => {
                spans.push(i..end);
                i = end;
            }
            None => i += open,
        }
    }
}

/// The complement of the sorted, disjoint `spans` within `0..len`.
pub fn outside(spans: &[Range<usize>], len: usize) -> Vec<Range<usize>> {
    let mut gaps = Vec::new();
    let mut pos = 0;
    for span in spans {
        if span.start > pos {
            gaps.push(pos..span.start);
        }
        pos = span.end;
    }
    if pos < len {
        gaps.push(pos..len);
    }
    gaps
}

/// Byte ranges of fenced code blocks, each from the start of its opening fence line to the end of its
/// closing fence line (before the newline). A fence is a line of 3+ backticks or tildes indented by at
/// most 3 spaces; it is closed by a fence of the same char at least as long, and an unclosed block runs
/// to the end of the text (as markdown renders it).
pub fn fence_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut open: Option<(usize, char, usize)> = None;
    let mut offset = 0;
    for line in text.split('\n') {
        let line_start = offset;
        let line_end = offset + line.len();
        offset = line_end + 1;
        let Some((marker, len)) = fence_marker(line) else {
            continue;
        };
        match open {
            None => open = Some((line_start, marker, len)),
            Some((start, open_marker, open_len)) if marker == open_marker && len >= open_len => {
                spans.push(start..line_end);
                open = None;
            }
            Some(_) => {}
        }
    }
    if let Some((start, _, _)) = open {
        spans.push(start..text.len());
    }
    spans
}

/// The fence char and run length if `line` is a fence line.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let body = line.trim_start_matches(' ');
    if line.len() - body.len() > 3 {
        return None;
    }
    let marker = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = body.chars().take_while(|c| *c == marker).count();
    (len >= 3).then_some((marker, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_spans_cover_opening_to_closing_line() {
        let text = "x\n```\ncode\n```\ny\n  ~~~\nz";
        let spans = fence_spans(text);
        assert_eq!(spans.len(), 2);
        assert_eq!(&text[spans[0].clone()], "```\ncode\n```");
        assert_eq!(&text[spans[1].clone()], "  ~~~\nz");
    }

    #[test]
    fn code_spans_are_fences_and_inline_runs_and_outside_is_the_rest() {
        let cases: &[(&str, &[&str])] = &[
            ("plain", &[]),
            ("a `b` c", &["`b`"]),
            ("``x ` y`` z", &["``x ` y``"]),
            ("it`s", &[]),
            ("`\n`", &[]),
            ("x\n```\ncode\n```\n`y`", &["```\ncode\n```", "`y`"]),
        ];
        for (text, want) in cases {
            let spans = code_spans(text);
            let got: Vec<&str> = spans.iter().map(|r| &text[r.clone()]).collect();
            assert_eq!(got, *want, "{text:?}");
            let gaps = outside(&spans, text.len());
            let covered: usize = spans.iter().chain(&gaps).map(|r| r.len()).sum();
            assert_eq!(covered, text.len(), "{text:?}");
        }
    }
}

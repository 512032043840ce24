//! Log-safe text: control characters in logged values (message text, guids, lines from imsg, error
//! strings) are escaped, so a hostile value can neither forge a log line nor reorder what a terminal
//! shows (docs/security.md, "What is logged"). Both binaries' text logs use [`EscapingFields`].

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// `s` with every control character escaped: `\r`, `\n` and `\t` as such, other C0 and C1 controls,
/// DEL, the Unicode line and paragraph separators and the bidi embedding, override and isolate
/// controls as `\u{…}`. Everything else, backslashes included, is left as it is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || reorders_text(c)
}

/// U+2028/U+2029 end a line in some viewers; U+202A–U+202E, U+2066–U+2069, the marks U+200E/U+200F
/// and U+061C reorder the text that follows them (the "Trojan Source" characters): a file named
/// `photo\u{202E}gpj.exe` shows as `photoexe.jpg`.
pub fn reorders_text(c: char) -> bool {
    matches!(c, '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        // Writing into a String cannot fail.
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// A field formatter for `tracing_subscriber::fmt` that writes events like the default one
/// (`message name=value …`) with every value passed through [`escape_controls`]. The field names
/// keep the default styling on a terminal; only the values are escaped, never our colour codes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapingFields;

impl<'w> FormatFields<'w> for EscapingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write_field(&mut self, field: &Field, value: &str) -> fmt::Result {
        let name = field.name();
        // tracing-log's metadata fields; the default formatter leaves them out too.
        if name.starts_with("log.") {
            return Ok(());
        }
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        let value = escape_controls(value);
        if name == "message" {
            return self.writer.write_str(&value);
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if self.writer.has_ansi_escapes() {
            // Italic name and dimmed `=`, as the default formatter styles them.
            write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m{value}")
        } else {
            write!(self.writer, "{name}={value}")
        }
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            // Like the default formatter: a message as is, other strings quoted.
            self.result = if field.name() == "message" {
                self.write_field(field, value)
            } else {
                self.write_field(field, &format!("{value:?}"))
            };
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.write_field(field, &format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn escapes_every_control_and_bidi_character_and_nothing_else() {
        let cases = [
            (
                "8DF1B3D7-2A4C-4E0B-9D3F-1C2B3A4D5E6F",
                "8DF1B3D7-2A4C-4E0B-9D3F-1C2B3A4D5E6F",
            ),
            ("AB\r\nX-Injected: 1", "AB\\r\\nX-Injected: 1"),
            ("a\tb", "a\\tb"),
            ("nul\0bell\x07esc\x1b[31m", "nul\\u{0}bell\\u{7}esc\\u{1b}[31m"),
            ("del\x7f", "del\\u{7f}"),
            ("next line\u{85}csi\u{9b}", "next line\\u{85}csi\\u{9b}"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}",
            ),
            (
                "\u{2066}\u{2067}\u{2068}\u{2069}",
                "\\u{2066}\\u{2067}\\u{2068}\\u{2069}",
            ),
            ("héllo 👋 \\n stays", "héllo 👋 \\n stays"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(escape_controls(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn leaves_clean_text_borrowed() {
        assert!(matches!(
            escape_controls("imessage:default:p:0/ABC"),
            Cow::Borrowed(_)
        ));
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one event with a hostile message, a Display field and a str field logs.
    fn log_hostile_event(ansi: bool) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let buffer = buffer.clone();
                move || buffer.clone()
            })
            .with_ansi(ansi)
            .without_time()
            .with_target(false)
            .fmt_fields(EscapingFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let guid = "AB\r\nX-Injected: 1";
            let text: &str = "line\nforged";
            tracing::warn!(id = %guid, text, "failed: {}", "reason\r\nX-Forged: 2");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn an_event_with_crlf_everywhere_stays_one_line() {
        let line = log_hostile_event(false);
        assert_eq!(
            line,
            " WARN failed: reason\\r\\nX-Forged: 2 id=AB\\r\\nX-Injected: 1 text=\"line\\nforged\"\n"
        );
    }

    #[test]
    fn colours_on_a_terminal_survive_while_values_are_escaped() {
        let line = log_hostile_event(true);
        assert_eq!(line.lines().count(), 1, "{line:?}");
        assert!(
            line.contains("\x1b[3mid\x1b[0m\x1b[2m=\x1b[0mAB\\r\\nX-Injected: 1"),
            "{line:?}"
        );
    }
}

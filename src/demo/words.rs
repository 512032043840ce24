//! The exec command line of the demo server: POSIX shell-word splitting (single quotes, double
//! quotes, backslashes, a leading `~`) and recognising `<imsg> rpc [--db PATH]`, the only command the
//! bridge needs once `remoteCliPath` is set. There is no shell behind it, so anything that would need
//! one (`;`, pipes, redirections, `$` expansions) is refused rather than half-interpreted. Only imsg
//! itself is recognised as a program (docs/security.md, "The demo's SSH server").

use std::path::{Path, PathBuf};

/// Why a command line cannot be split without a real shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("unterminated quote")]
    Unterminated,
    #[error("`{0}` needs a shell, and the demo server has none")]
    NeedsShell(char),
}

/// What the drop-in puts before `exec imsg …` when no `remoteCliPath` is set (src/dropin/command.rs):
/// it needs a shell, so it is recognised word for word instead (a test keeps the two in step).
const DROPIN_PATH_PREFIX: &str = "PATH=\"$PATH:/opt/homebrew/bin:/usr/local/bin\"; export PATH; ";
/// The program names served: imsg, and the simulator under its own name.
const PROGRAMS: [&str; 2] = ["imsg", "imsg-sim"];

/// What an exec request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `[exec] <imsg> rpc [--db PATH]`: serve `imsg rpc` in process.
    Rpc { db: Option<PathBuf> },
    /// Anything else: answered with exit status 127.
    Other,
}

/// Split `line` into words as `sh` would, expanding an unquoted leading `~` to `home` (the demo "Mac"
/// has its home in the demo folder, so `~/Library/Messages/chat.db` lands inside it).
pub fn split(line: &str, home: &Path) -> Result<Vec<String>, WordsError> {
    let home = home.to_string_lossy();
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| is_blank(*c)).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        if first == '#' {
            // A comment runs to the end of the line (wrappers sometimes end with one).
            break;
        }
        let mut word = String::new();
        if first == '~' {
            chars.next();
            // Only `~` alone or `~/…` is the home; `~bob` would need the password database.
            match chars.peek() {
                None | Some('/') => word.push_str(&home),
                Some(c) if is_blank(*c) => word.push_str(&home),
                Some(_) => word.push('~'),
            }
        }
        while let Some(c) = chars.next() {
            match c {
                c if is_blank(c) => break,
                '\'' => loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(WordsError::Unterminated),
                    }
                },
                '"' => loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash escapes only these; otherwise it stays.
                        Some('\\') => match chars.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(WordsError::Unterminated),
                        },
                        Some(c @ ('$' | '`')) => return Err(WordsError::NeedsShell(c)),
                        Some(c) => word.push(c),
                        None => return Err(WordsError::Unterminated),
                    }
                },
                '\\' => match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(WordsError::Unterminated),
                },
                ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' => return Err(WordsError::NeedsShell(c)),
                c => word.push(c),
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// `imsg`, or any path whose last component is `imsg` (`imsg-sim` likewise).
fn is_imsg(program: &str) -> bool {
    PROGRAMS.contains(&program.rsplit('/').next().unwrap_or(program))
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n')
}

/// Recognise `[exec] <imsg> rpc [--db PATH | --db=PATH]`, where `<imsg>` is `imsg` or a path ending
/// in `/imsg` (or the simulator's `imsg-sim`), as the bridge and the drop-in send it; a relative PATH
/// is relative to `home`, the working directory a login shell would have.
pub fn parse(line: &str, home: &Path) -> Result<Command, WordsError> {
    let line = line.strip_prefix(DROPIN_PATH_PREFIX).unwrap_or(line);
    let words = split(line, home)?;
    let mut words = words.iter().map(String::as_str).peekable();
    words.next_if_eq(&"exec");
    if !words.next().is_some_and(is_imsg) {
        return Ok(Command::Other);
    }
    let args: Vec<&str> = words.collect();
    let db = match args.as_slice() {
        ["rpc"] => None,
        ["rpc", "--db", path] => Some(*path),
        ["rpc", flag] => match flag.strip_prefix("--db=") {
            Some(path) => Some(path),
            None => return Ok(Command::Other),
        },
        _ => return Ok(Command::Other),
    };
    Ok(Command::Rpc {
        db: db.map(|path| home.join(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ssh::quote;

    const HOME: &str = "/tmp/demo mac";

    fn words(line: &str) -> Vec<String> {
        split(line, Path::new(HOME)).unwrap()
    }

    #[test]
    fn splits_words_the_way_a_posix_shell_does() {
        let cases: [(&str, &[&str]); 9] = [
            ("imsg rpc", &["imsg", "rpc"]),
            ("  imsg \t rpc  ", &["imsg", "rpc"]),
            ("'a b' c", &["a b", "c"]),
            (r"'it'\''s'", &["it's"]),
            (r#""say \"hi\" \n""#, &[r#"say "hi" \n"#]),
            (r"a\ b", &["a b"]),
            ("x''y", &["xy"]),
            ("''", &[""]),
            ("imsg rpc # a comment", &["imsg", "rpc"]),
        ];
        for (line, want) in cases {
            assert_eq!(words(line), want, "{line:?}");
        }
    }

    #[test]
    fn expands_only_an_unquoted_leading_tilde_to_the_demo_home() {
        assert_eq!(words("~/x"), [format!("{HOME}/x")]);
        assert_eq!(words("~"), [HOME]);
        assert_eq!(words("'~/x'"), ["~/x"]);
        assert_eq!(words("~bob/x"), ["~bob/x"]);
        assert_eq!(words("a~/x"), ["a~/x"]);
    }

    #[test]
    fn refuses_what_only_a_real_shell_could_run() {
        let home = Path::new(HOME);
        assert_eq!(split("'open", home), Err(WordsError::Unterminated));
        assert_eq!(split("\"open", home), Err(WordsError::Unterminated));
        assert_eq!(split("trailing\\", home), Err(WordsError::Unterminated));
        assert_eq!(split("a; b", home), Err(WordsError::NeedsShell(';')));
        assert_eq!(split("echo $HOME", home), Err(WordsError::NeedsShell('$')));
        assert_eq!(split("\"$(id)\"", home), Err(WordsError::NeedsShell('$')));
        assert_eq!(
            split("for p in imsg; do command -v $p; done", home),
            Err(WordsError::NeedsShell(';'))
        );
    }

    #[test]
    fn reads_back_every_rpc_command_the_bridge_quotes() {
        let home = Path::new(HOME);
        let cases = [
            (quote::rpc_command("/usr/local/bin/imsg", None), None),
            (
                quote::rpc_command("/usr/local/bin/imsg", Some("/tmp/a b/chat.db")),
                Some(PathBuf::from("/tmp/a b/chat.db")),
            ),
            (
                quote::rpc_command("~/bin/imsg", Some("~/Library/Messages/chat.db")),
                Some(PathBuf::from(format!("{HOME}/Library/Messages/chat.db"))),
            ),
            (
                quote::rpc_command("imsg", Some("~/It's here/chat.db")),
                Some(PathBuf::from(format!("{HOME}/It's here/chat.db"))),
            ),
            (
                quote::rpc_command("imsg", Some("chat.db")),
                Some(PathBuf::from(format!("{HOME}/chat.db"))),
            ),
        ];
        for (line, db) in cases {
            assert_eq!(parse(&line, home), Ok(Command::Rpc { db }), "{line}");
        }
        let dropin = crate::dropin::command::remote_line(None, &["rpc".to_string()]);
        let exec = crate::dropin::command::remote_line(Some("/opt/homebrew/bin/imsg"), &["rpc".to_string()]);
        for line in [dropin, exec, "imsg-sim rpc".to_string()] {
            assert_eq!(parse(&line, home), Ok(Command::Rpc { db: None }), "{line}");
        }
        assert_eq!(
            parse("imsg rpc --db=/x/chat.db", home),
            Ok(Command::Rpc {
                db: Some(PathBuf::from("/x/chat.db"))
            })
        );
    }

    #[test]
    fn treats_anything_but_rpc_as_another_command() {
        let home = Path::new(HOME);
        for line in [
            "imsg",
            "imsg chats",
            "imsg rpc --db",
            "imsg rpc --verbose",
            "/bin/cat -- /x",
            "anything rpc",
            "/usr/bin/imsgx rpc",
            "exec exec imsg rpc",
            "sh -c 'imsg rpc'",
            "",
        ] {
            assert_eq!(parse(line, home), Ok(Command::Other), "{line:?}");
        }
    }
}

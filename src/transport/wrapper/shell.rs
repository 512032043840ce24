//! A small reader for POSIX shell scripts: words, quotes, parameter expansions, redirections and command
//! separators — just enough to find the command that runs ssh without ever running the script.
//!
//! It is deliberately not a shell: what it cannot evaluate (command substitution, `${X:-y}`, `$'…'`, an
//! unterminated quote) becomes [`Part::Opaque`], and the caller treats a word holding one as unknown. A
//! here-document stops reading, because its body is data we would otherwise mistake for commands.

use std::collections::HashMap;

/// One piece of a word, kept apart so expansion knows what was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// Literal text; quoted text is never field-split.
    Lit { text: String, quoted: bool },
    /// `$NAME`, `${NAME}` or a special parameter such as `$@` (`name` is then `@`).
    Param { name: String, quoted: bool },
    /// Something we do not evaluate.
    Opaque,
}

/// A shell word: its parts and its source text (for messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Word {
    pub parts: Vec<Part>,
    pub raw: String,
}

/// How a command is joined to its neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sep {
    /// `;`, a newline, the start or the end of the script.
    Seq,
    And,
    Or,
    Pipe,
    Background,
}

/// A redirection: the file descriptor it applies to, the operator and the target as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redirect {
    pub fd: u32,
    pub op: String,
    pub target: String,
}

/// A simple command with the separators on either side of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Command {
    pub words: Vec<Word>,
    pub redirects: Vec<Redirect>,
    pub before: Sep,
    pub after: Sep,
}

/// The commands of a script in order, plus what made reading it uncertain.
#[derive(Debug, Default)]
pub(super) struct Script {
    pub commands: Vec<Command>,
    pub problems: Vec<String>,
}

/// Reads `script` into commands. Total: any input gives a result.
pub(super) fn parse(script: &str) -> Script {
    let mut lexer = Lexer {
        chars: script.chars().collect(),
        pos: 0,
        problems: Vec::new(),
    };
    let tokens = lexer.tokens();
    let mut problems = lexer.problems;
    let commands = group(tokens, &mut problems);
    Script { commands, problems }
}

/// Whether `name` is a shell variable name.
pub(super) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug)]
enum Token {
    Word(Word),
    Sep(Sep),
    Newline,
    Redir { fd: Option<u32>, op: String },
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    problems: Vec<String>,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn problem(&mut self, text: &str) {
        if !self.problems.iter().any(|p| p == text) {
            self.problems.push(text.to_string());
        }
    }

    fn tokens(&mut self) -> Vec<Token> {
        let mut out = Vec::new();
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\\' if self.peek(1) == Some('\n') => self.pos += 2,
                '\n' => {
                    self.pos += 1;
                    out.push(Token::Newline);
                }
                // A comment runs to the end of the line; the shebang is one too.
                '#' => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                ';' => {
                    self.pos += 1;
                    if self.peek(0) == Some(';') {
                        // `;;` only ends a `case` branch; the `case` word itself is reported.
                        self.pos += 1;
                    }
                    out.push(Token::Sep(Sep::Seq));
                }
                '&' => out.push(match self.peek(1) {
                    Some('&') => {
                        self.pos += 2;
                        Token::Sep(Sep::And)
                    }
                    Some('>') => {
                        self.pos += 2;
                        let op = if self.eat('>') { "&>>" } else { "&>" };
                        Token::Redir {
                            fd: None,
                            op: op.to_string(),
                        }
                    }
                    _ => {
                        self.pos += 1;
                        Token::Sep(Sep::Background)
                    }
                }),
                '|' => {
                    self.pos += 1;
                    if self.eat('|') {
                        out.push(Token::Sep(Sep::Or));
                    } else {
                        self.eat('&');
                        out.push(Token::Sep(Sep::Pipe));
                    }
                }
                '(' | ')' => {
                    self.pos += 1;
                    self.problem("uses a subshell or a function, so what runs depends on control flow");
                    out.push(Token::Sep(Sep::Seq));
                }
                '<' | '>' => match self.redirect(None) {
                    Some(token) => out.push(token),
                    None => break,
                },
                _ => {
                    let start = self.pos;
                    let word = self.word();
                    if self.pos == start {
                        // Cannot happen (the first character is not a separator), but never loop forever.
                        self.pos += 1;
                    }
                    let io_number = !word.raw.is_empty() && word.raw.chars().all(|c| c.is_ascii_digit());
                    if io_number && matches!(self.peek(0), Some('<' | '>')) {
                        // `2>file`: digits glued to a redirection name the descriptor.
                        let fd = word.raw.parse().unwrap_or(u32::MAX);
                        match self.redirect(Some(fd)) {
                            Some(token) => out.push(token),
                            None => break,
                        }
                    } else {
                        out.push(Token::Word(word));
                    }
                }
            }
        }
        out
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek(0) == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    /// Reads a redirection operator; `None` for a here-document, where reading stops.
    fn redirect(&mut self, fd: Option<u32>) -> Option<Token> {
        let first = self.peek(0)?;
        self.pos += 1;
        let mut op = first.to_string();
        if first == '<' {
            if self.eat('<') {
                if !self.eat('<') {
                    self.problem("uses a here-document, so the rest of it was not read");
                    return None;
                }
                op.push_str("<<");
            } else if let Some(c @ ('&' | '>')) = self.peek(0) {
                self.pos += 1;
                op.push(c);
            }
        } else if let Some(c @ ('>' | '&' | '|')) = self.peek(0) {
            self.pos += 1;
            op.push(c);
        }
        Some(Token::Redir { fd, op })
    }

    fn word(&mut self) -> Word {
        let start = self.pos;
        let mut w = Builder::default();
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => break,
                '\\' => match self.peek(1) {
                    Some('\n') => self.pos += 2,
                    Some(next) => {
                        w.lit(next, true);
                        self.pos += 2;
                    }
                    None => {
                        w.lit('\\', false);
                        self.pos += 1;
                    }
                },
                '\'' => self.single_quoted(&mut w),
                '"' => self.double_quoted(&mut w),
                '$' => self.dollar(&mut w, false),
                '`' => self.backtick(&mut w),
                _ => {
                    w.lit(c, false);
                    self.pos += 1;
                }
            }
        }
        Word {
            parts: w.parts,
            raw: self.chars[start..self.pos].iter().collect(),
        }
    }

    fn single_quoted(&mut self, w: &mut Builder) {
        self.pos += 1;
        let before = w.parts.len();
        loop {
            match self.peek(0) {
                None => {
                    self.problem("has an unterminated single quote");
                    w.parts.push(Part::Opaque);
                    return;
                }
                Some('\'') => break,
                Some(c) => w.lit(c, true),
            }
            self.pos += 1;
        }
        self.pos += 1;
        w.quoted_empty_since(before);
    }

    fn double_quoted(&mut self, w: &mut Builder) {
        self.pos += 1;
        let before = w.parts.len();
        loop {
            match self.peek(0) {
                None => {
                    self.problem("has an unterminated double quote");
                    w.parts.push(Part::Opaque);
                    return;
                }
                Some('"') => break,
                Some('\\') => match self.peek(1) {
                    Some('\n') => self.pos += 2,
                    Some(c @ ('$' | '`' | '"' | '\\')) => {
                        w.lit(c, true);
                        self.pos += 2;
                    }
                    _ => {
                        w.lit('\\', true);
                        self.pos += 1;
                    }
                },
                Some('$') => self.dollar(w, true),
                Some('`') => self.backtick(w),
                Some(c) => {
                    w.lit(c, true);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        w.quoted_empty_since(before);
    }

    /// Reads an expansion starting at `$`.
    fn dollar(&mut self, w: &mut Builder, quoted: bool) {
        match self.peek(1) {
            Some('{') => {
                let open = self.pos + 2;
                match self.chars[open.min(self.chars.len())..]
                    .iter()
                    .position(|&c| c == '}')
                {
                    Some(len) => {
                        let inner: String = self.chars[open..open + len].iter().collect();
                        self.pos = open + len + 1;
                        if is_name(&inner) || is_special(&inner) {
                            w.parts.push(Part::Param { name: inner, quoted });
                        } else {
                            w.parts.push(Part::Opaque);
                        }
                    }
                    None => {
                        self.problem("has an unterminated ${…}");
                        self.pos = self.chars.len();
                        w.parts.push(Part::Opaque);
                    }
                }
            }
            Some('(') => {
                self.pos += 1;
                self.skip_parens();
                w.parts.push(Part::Opaque);
            }
            Some('\'') if !quoted => {
                // Bash's $'…' escapes: skipped, not decoded.
                self.pos += 2;
                loop {
                    match self.peek(0) {
                        None => {
                            self.problem("has an unterminated $'…'");
                            break;
                        }
                        Some('\\') => self.pos += 2,
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(_) => self.pos += 1,
                    }
                }
                self.pos = self.pos.min(self.chars.len());
                w.parts.push(Part::Opaque);
            }
            Some('"') if !quoted => {
                // Bash's $"…" (a translated string) reads like a double-quoted one.
                self.pos += 1;
                self.double_quoted(w);
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos + 1;
                let mut end = start;
                while self
                    .chars
                    .get(end)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    end += 1;
                }
                let name = self.chars[start..end].iter().collect();
                self.pos = end;
                w.parts.push(Part::Param { name, quoted });
            }
            Some(c) if c.is_ascii_digit() || "@*#?-$!".contains(c) => {
                self.pos += 2;
                w.parts.push(Part::Param {
                    name: c.to_string(),
                    quoted,
                });
            }
            _ => {
                w.lit('$', quoted);
                self.pos += 1;
            }
        }
    }

    /// Skips a balanced `( … )` starting at `(`, roughly honouring quotes inside.
    fn skip_parens(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            self.pos += 1;
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                '\\' => self.pos += 1,
                '\'' | '"' => {
                    while self.peek(0).is_some_and(|q| q != c) {
                        self.pos += if self.peek(0) == Some('\\') && c == '"' {
                            2
                        } else {
                            1
                        };
                    }
                    self.pos += 1;
                }
                _ => {}
            }
        }
        self.pos = self.pos.min(self.chars.len());
        self.problem("has an unterminated $( … )");
    }

    fn backtick(&mut self, w: &mut Builder) {
        self.pos += 1;
        loop {
            match self.peek(0) {
                None => {
                    self.problem("has an unterminated backquote");
                    break;
                }
                Some('\\') => self.pos += 2,
                Some('`') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.pos += 1,
            }
        }
        self.pos = self.pos.min(self.chars.len());
        w.parts.push(Part::Opaque);
    }
}

fn is_special(name: &str) -> bool {
    (name.len() == 1 && "@*#?-$!".contains(name))
        || (!name.is_empty() && name.chars().all(|c| c.is_ascii_digit()))
}

/// Accumulates the parts of a word, merging neighbouring literals of the same quoting.
#[derive(Default)]
struct Builder {
    parts: Vec<Part>,
}

impl Builder {
    fn lit(&mut self, c: char, quoted: bool) {
        if let Some(Part::Lit { text, quoted: q }) = self.parts.last_mut()
            && *q == quoted
        {
            text.push(c);
            return;
        }
        self.parts.push(Part::Lit {
            text: c.to_string(),
            quoted,
        });
    }

    /// `""` or `''` still makes a word (an empty argument), so it needs a part of its own.
    fn quoted_empty_since(&mut self, before: usize) {
        if self.parts.len() == before {
            self.parts.push(Part::Lit {
                text: String::new(),
                quoted: true,
            });
        }
    }
}

fn group(tokens: Vec<Token>, problems: &mut Vec<String>) -> Vec<Command> {
    let mut commands = Vec::new();
    let mut current = Command {
        words: Vec::new(),
        redirects: Vec::new(),
        before: Sep::Seq,
        after: Sep::Seq,
    };
    let mut pending: Option<(u32, String)> = None;
    let mut dangling = false;
    for token in tokens {
        match token {
            Token::Word(word) => match pending.take() {
                Some((fd, op)) => current.redirects.push(Redirect {
                    fd,
                    op,
                    target: word.raw,
                }),
                None => current.words.push(word),
            },
            Token::Redir { fd, op } => {
                dangling |= pending.is_some();
                // Input operators default to descriptor 0, output ones (and `&>`) to 1.
                let fd = fd.unwrap_or(if op.starts_with('<') { 0 } else { 1 });
                pending = Some((fd, op));
            }
            Token::Newline | Token::Sep(_) => {
                dangling |= pending.take().is_some();
                let sep = match token {
                    Token::Sep(sep) => sep,
                    _ => Sep::Seq,
                };
                if current.words.is_empty() && current.redirects.is_empty() {
                    // A newline may follow `&&`, `||` or `|`; the pending joint still applies.
                    if sep != Sep::Seq {
                        current.before = sep;
                    }
                    continue;
                }
                current.after = sep;
                let next = Command {
                    words: Vec::new(),
                    redirects: Vec::new(),
                    before: sep,
                    after: Sep::Seq,
                };
                commands.push(std::mem::replace(&mut current, next));
            }
        }
    }
    dangling |= pending.is_some();
    if dangling {
        problems.push("has a redirection without a target".to_string());
    }
    if !current.words.is_empty() || !current.redirects.is_empty() {
        commands.push(current);
    }
    commands
}

/// Stands for the value of an unset `$HOME`: the gateway user's home, unknown here. Where a local path
/// starts with it, it means `~/`, which callers expand on this host; anywhere else (a host, a remote
/// command) it makes the word unusable, as it should.
pub(super) const HOME: char = '\u{E000}';

/// A word after expansion, as the command receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Arg {
    Lit(String),
    /// `"$@"`, `$@`, `"$*"` or `$*` on its own: the wrapper's own arguments.
    AllArgs,
    /// A word we cannot evaluate; holds its source text.
    Unknown(String),
}

impl Arg {
    /// The word as a message shows it.
    pub(super) fn shown(&self) -> &str {
        match self {
            Arg::Lit(text) | Arg::Unknown(text) => text,
            Arg::AllArgs => "\"$@\"",
        }
    }
}

/// Variables the script assigns: `Some(value)` when known, `None` when assigned something we cannot
/// evaluate (or assigned conditionally). A name not in the map may come from the environment.
#[derive(Debug, Default)]
pub(super) struct Vars {
    known: HashMap<String, Option<String>>,
}

impl Vars {
    pub(super) fn set(&mut self, name: &str, value: Option<String>) {
        self.known.insert(name.to_string(), value);
    }

    /// Expands a word into the fields the command receives (an unquoted expansion splits on blanks).
    pub(super) fn expand(&self, word: &Word) -> Vec<Arg> {
        if let [Part::Param { name, .. }] = word.parts.as_slice()
            && (name == "@" || name == "*")
        {
            return vec![Arg::AllArgs];
        }
        let unknown = || vec![Arg::Unknown(word.raw.clone())];
        let mut fields = Vec::new();
        let mut current = String::new();
        let mut started = false;
        for part in &word.parts {
            match part {
                Part::Lit { text, quoted } => {
                    current.push_str(text);
                    started |= *quoted || !text.is_empty();
                }
                Part::Param { name, quoted } => {
                    let Some(value) = self.lookup(name) else {
                        return unknown();
                    };
                    if *quoted {
                        current.push_str(&value);
                        started = true;
                        continue;
                    }
                    for c in value.chars() {
                        if matches!(c, ' ' | '\t' | '\n') {
                            if started {
                                fields.push(std::mem::take(&mut current));
                                started = false;
                            }
                        } else {
                            current.push(c);
                            started = true;
                        }
                    }
                }
                Part::Opaque => return unknown(),
            }
        }
        if started {
            fields.push(current);
        }
        fields.into_iter().map(Arg::Lit).collect()
    }

    /// The value of an assignment's right-hand side (assignments do not split fields).
    pub(super) fn value(&self, parts: &[Part]) -> Option<String> {
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Lit { text, .. } => out.push_str(text),
                Part::Param { name, .. } => out.push_str(&self.lookup(name)?),
                Part::Opaque => return None,
            }
        }
        Some(out)
    }

    fn lookup(&self, name: &str) -> Option<String> {
        match self.known.get(name) {
            Some(value) => value.clone(),
            None if name == "HOME" => Some(HOME.to_string()),
            None => None,
        }
    }
}

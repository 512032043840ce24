//! Quoting for the remote command line. The exec string goes through the Mac user's login shell
//! (`zsh -c`), so every argument is single-quoted unless it is plainly safe, and a leading `~/` is
//! left outside the quotes so the remote shell expands it (docs/ssh.md: `dbPath` belongs to the Mac).

/// POSIX single-quote `word` unless it consists only of safe characters.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:=@%".contains(&b));
    if safe {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Like [`quote`], but a leading `~/` stays unquoted so the remote shell expands it.
pub fn quote_keep_tilde(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some("") => "~/".to_string(),
        Some(rest) => format!("~/{}", quote(rest)),
        None => quote(path),
    }
}

/// `<imsg> rpc [--db <path>]`, quoted for the remote shell.
pub fn rpc_command(remote_cli: &str, db_path: Option<&str>) -> String {
    let mut command = format!("{} rpc", quote_keep_tilde(remote_cli));
    if let Some(db) = db_path.map(str::trim).filter(|d| !d.is_empty()) {
        command.push_str(" --db ");
        command.push_str(&quote_keep_tilde(db));
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_quoting() {
        let cases = [
            ("/opt/homebrew/bin/imsg", "/opt/homebrew/bin/imsg"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
            ("", "''"),
            ("x;y", "'x;y'"),
        ];
        for (input, want) in cases {
            assert_eq!(quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn leaves_a_leading_tilde_for_the_remote_shell() {
        assert_eq!(
            quote_keep_tilde("~/Library/Messages/chat.db"),
            "~/Library/Messages/chat.db"
        );
        assert_eq!(quote_keep_tilde("~/My Files/chat.db"), "~/'My Files/chat.db'");
        assert_eq!(quote_keep_tilde("~bob/x"), "'~bob/x'");
    }

    #[test]
    fn builds_the_rpc_command() {
        assert_eq!(
            rpc_command("/opt/homebrew/bin/imsg", None),
            "/opt/homebrew/bin/imsg rpc"
        );
        assert_eq!(
            rpc_command("/usr/local/bin/imsg", Some("~/Library/Messages/chat.db")),
            "/usr/local/bin/imsg rpc --db ~/Library/Messages/chat.db"
        );
        assert_eq!(
            rpc_command("imsg", Some("/tmp/a b/chat.db")),
            "imsg rpc --db '/tmp/a b/chat.db'"
        );
    }
}

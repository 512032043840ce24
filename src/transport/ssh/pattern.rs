//! OpenSSH's host pattern language, shared by known_hosts and ssh_config: `*` any run, `?` one
//! character, ASCII case-insensitive, lists where a matching `!pattern` excludes the host.

/// Whether `text` matches `pattern`. Iterative with backtracking to the last star, so hostile
/// patterns cannot blow the stack or the time.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
            }
            Some(c) if c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// A pattern list matches when some positive pattern matches and no negated one does.
pub fn list_matches<'a>(patterns: impl IntoIterator<Item = &'a str>, name: &str) -> bool {
    let mut hit = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            hit = true;
        }
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_handles_stars_and_question_marks_without_blowup() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("?ac", "MAC"));
        let hostile = "*a".repeat(50);
        assert!(!glob(&hostile, &"a".repeat(40)));
    }

    #[test]
    fn a_matching_negation_excludes_the_host() {
        assert!(list_matches(["*.local"], "mac.local"));
        assert!(!list_matches(["*.local", "!mac.local"], "mac.local"));
        assert!(
            !list_matches(["!other"], "mac.local"),
            "negations alone match nothing"
        );
    }
}

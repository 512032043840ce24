//! Doctor's `openclaw` check: would OpenClaw's openclaw.json drop the attachments the drop-in
//! (`imsg-bridge imsg rpc`) already pulled into the bridge's media cache? See docs/guides/openclaw.md.
//!
//! OpenClaw keeps an inbound attachment only when its path lies under the account's attachment roots,
//! and with `remoteHost` set it takes the path for one on the Mac and copies it with scp. The drop-in
//! hands it local files under `<stateDir>/media/inbound/<account>/<guid>/<name>`, so both a leftover
//! `remoteHost` and roots that miss that folder make the agent see a placeholder instead of the file.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

/// OpenClaw always adds this root to the configured ones; it cannot be removed.
const DEFAULT_ROOT: &str = "/Users/*/Library/Messages/Attachments";

/// A wrapper is a few lines; a larger file is not one (the same bound as src/transport/wrapper.rs).
const MAX_WRAPPER_BYTES: u64 = 1 << 20;

/// What the check found, ready for one doctor row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Skip(String),
    Ok(String),
    Warn { detail: String, remedy: String },
}

/// What is known about the bridge side.
#[derive(Debug, Clone)]
pub struct Bridge<'a> {
    /// `bridge.stateDir`, absolute.
    pub state_dir: &'a Path,
    /// The account a drop-in started without `--account` uses (the selected account of its config).
    pub account: &'a str,
}

/// Finds the openclaw.json to look at: the config file given when it is one, else
/// `~/.openclaw/openclaw.json` when it exists.
pub fn locate(config_path: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = config_path.filter(|p| p.file_name().is_some_and(|n| n == "openclaw.json")) {
        return Some(path.to_path_buf());
    }
    home.map(|h| h.join(".openclaw/openclaw.json"))
        .filter(|p| p.is_file())
}

/// Reads, parses and assesses `file`. The cliPath scripts it names are read from disk.
pub fn check_file(file: &Path, bridge: &Bridge<'_>) -> Verdict {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => return Verdict::Skip(format!("{}: {err}", file.display())),
    };
    let doc = match json5::from_str::<Value>(&text) {
        Ok(doc) => doc,
        Err(err) => {
            return Verdict::Skip(format!("{}: not valid json5 ({err})", file.display()));
        }
    };
    let verdict = assess(&doc, bridge, &read_script);
    match verdict {
        Verdict::Skip(detail) => Verdict::Skip(format!("{}: {detail}", file.display())),
        Verdict::Ok(detail) => Verdict::Ok(format!("{}: {detail}", file.display())),
        Verdict::Warn { detail, remedy } => Verdict::Warn {
            detail: format!("{}: {detail}", file.display()),
            remedy,
        },
    }
}

/// The text of the script at `cli_path` (tilde-expanded, as OpenClaw's own probes do), when it is a
/// small regular file.
fn read_script(cli_path: &str) -> Option<String> {
    use std::io::Read;
    let path = crate::util::expand_tilde(cli_path);
    let file = std::fs::File::open(&path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_WRAPPER_BYTES).read_to_end(&mut bytes).ok()?;
    (!bytes.contains(&0)).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// How an OpenClaw account reaches imsg, as far as this check cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// cliPath is imsg-bridge itself (or a link to it).
    Direct,
    /// cliPath is a script that execs imsg-bridge; `account` is its `--account`, if any.
    Wrapper {
        account: Option<String>,
    },
    Other,
}

/// The pure decision: one finding per enabled OpenClaw account whose cliPath runs imsg-bridge.
/// `read` returns the text of a cliPath script (or `None`: not a readable script).
pub fn assess(doc: &Value, bridge: &Bridge<'_>, read: &dyn Fn(&str) -> Option<String>) -> Verdict {
    let Some(root) = doc
        .get("channels")
        .and_then(|c| c.get("imessage"))
        .and_then(Value::as_object)
    else {
        return Verdict::Skip("no channels.imessage".to_string());
    };
    let mut problems = Vec::new();
    let mut remedies = Vec::new();
    let mut fine = Vec::new();
    for (id, entry) in accounts(root) {
        let merged = merge(root, entry);
        let enabled = |m: &Map<String, Value>| m.get("enabled") != Some(&Value::Bool(false));
        if !enabled(root) || !enabled(&merged) {
            continue;
        }
        let cli_path = merged
            .get("cliPath")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("imsg");
        let route = route(cli_path, read);
        let cache_account = match &route {
            Route::Other => continue,
            Route::Wrapper {
                account: Some(account),
            } => account.clone(),
            Route::Direct | Route::Wrapper { account: None } => bridge.account.to_string(),
        };
        // The key path a fix goes to: the account's entry when the value is set there.
        let key = |name: &str| match (id, entry) {
            (Some(id), Some(entry)) if entry.contains_key(name) => {
                format!("channels.imessage.accounts.{id}.{name}")
            }
            _ => format!("channels.imessage.{name}"),
        };
        let before = problems.len();
        if let Some(host) = merged
            .get("remoteHost")
            .and_then(Value::as_str)
            .filter(|h| !h.trim().is_empty())
        {
            problems.push(format!(
                "{} is still set ({host:?}) although cliPath {cli_path} runs imsg-bridge: OpenClaw then takes the bridge's local attachment paths for paths on the Mac and copies them with scp",
                key("remoteHost")
            ));
            remedies.push(format!(
                "remove {} (and {})",
                key("remoteHost"),
                key("remoteAttachmentRoots")
            ));
        } else if let Route::Wrapper { .. } = route
            && let Some(host) = read(cli_path).as_deref().and_then(detected_remote_host)
        {
            problems.push(format!(
                "the wrapper {cli_path} still mentions `ssh … {host}` (a comment?): OpenClaw's remoteHost auto-detection may read it and copy the bridge's local attachment paths with scp"
            ));
            remedies.push(format!("delete that line from {cli_path}"));
        }
        let cache = bridge.state_dir.join("media/inbound").join(&cache_account);
        let roots = roots(root, entry);
        if !roots.iter().any(|r| covers(r, &cache)) {
            let inbound = bridge.state_dir.join("media/inbound");
            problems.push(format!(
                "{} ({}) does not cover the bridge's media cache {}: OpenClaw drops every attachment outside its roots",
                key("attachmentRoots"),
                roots.join(", "),
                cache.display()
            ));
            remedies.push(format!(
                "add \"{}\" to {}",
                inbound.display(),
                key("attachmentRoots")
            ));
        }
        if problems.len() == before {
            fine.push(format!(
                "{}cliPath {cli_path} runs imsg-bridge, no remoteHost, attachmentRoots cover {}",
                id.map(|id| format!("account {id}: ")).unwrap_or_default(),
                cache.display()
            ));
        }
    }
    if !problems.is_empty() {
        return Verdict::Warn {
            detail: problems.join("; "),
            remedy: format!("{} (docs/guides/openclaw.md)", remedies.join("; ")),
        };
    }
    if fine.is_empty() {
        return Verdict::Skip("no enabled account's cliPath runs imsg-bridge".to_string());
    }
    Verdict::Ok(fine.join("; "))
}

/// A JSON object: `channels.imessage` or an account's entry.
type Object = Map<String, Value>;

/// `(id, entry)` per listed account, or the flat config's one implicit account.
fn accounts(root: &Object) -> Vec<(Option<&str>, Option<&Object>)> {
    let listed: Vec<_> = root
        .get("accounts")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(id, entry)| Some((Some(id.as_str()), Some(entry.as_object()?))))
        .collect();
    if listed.is_empty() {
        vec![(None, None)]
    } else {
        listed
    }
}

/// OpenClaw's shallow merge: the root without `accounts`, overlaid by the account's keys.
fn merge(root: &Map<String, Value>, entry: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut merged: Map<String, Value> = root
        .iter()
        .filter(|(k, _)| *k != "accounts")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(entry) = entry {
        merged.extend(entry.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    merged
}

/// OpenClaw's local roots: the account's `attachmentRoots`, the root's, and the default.
fn roots(root: &Map<String, Value>, entry: Option<&Map<String, Value>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for map in entry.into_iter().chain([root]) {
        for item in map
            .get("attachmentRoots")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !out.iter().any(|r| r == item) {
                out.push(item.to_string());
            }
        }
    }
    if !out.iter().any(|r| r == DEFAULT_ROOT) {
        out.push(DEFAULT_ROOT.to_string());
    }
    out
}

fn route(cli_path: &str, read: &dyn Fn(&str) -> Option<String>) -> Route {
    let is_bridge = |p: &Path| p.file_name().is_some_and(|n| n == "imsg-bridge");
    if is_bridge(Path::new(cli_path))
        || std::fs::canonicalize(crate::util::expand_tilde(cli_path)).is_ok_and(|p| is_bridge(&p))
    {
        return Route::Direct;
    }
    match read(cli_path).as_deref().and_then(execs_bridge) {
        Some(account) => Route::Wrapper { account },
        None => Route::Other,
    }
}

/// A script line that runs imsg-bridge with `imsg` (comments aside): `Some(--account value)`.
fn execs_bridge(script: &str) -> Option<Option<String>> {
    script.lines().find_map(|line| {
        let code = line.split_once('#').map_or(line, |(code, _)| code);
        let words: Vec<&str> = code
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
            .collect();
        let at = words
            .iter()
            .position(|w| Path::new(w).file_name().is_some_and(|n| n == "imsg-bridge"))?;
        let rest = &words[at + 1..];
        rest.contains(&"imsg").then(|| {
            rest.iter()
                .enumerate()
                .find_map(|(i, w)| match w.strip_prefix("--account") {
                    Some("") => rest.get(i + 1).map(|v| v.to_string()),
                    Some(glued) => glued.strip_prefix('=').map(str::to_string),
                    None => None,
                })
        })
    })
}

/// OpenClaw's remoteHost auto-detection, first rule: the word `ssh`, then on the same line a
/// `user@host` token (docs/guides/openclaw.md). Only the rule that can fire on a drop-in wrapper's
/// leftover comment is modelled.
fn detected_remote_host(script: &str) -> Option<String> {
    let token_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    script.lines().find_map(|line| {
        let mut from = 0;
        while let Some(at) = line[from..].find("ssh").map(|i| i + from) {
            from = at + 3;
            let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let before_ok = !line[..at].ends_with(word_char);
            let after_ok = !line[at + 3..].starts_with(word_char);
            if !(before_ok && after_ok) {
                continue;
            }
            let rest = &line[at + 3..];
            let found = rest
                .split_whitespace()
                .skip(usize::from(!rest.starts_with(char::is_whitespace)))
                .find_map(|word| {
                    let end = word
                        .find(|c: char| !(token_char(c) || c == '@'))
                        .unwrap_or(word.len());
                    let (user, host) = word[..end].split_once('@')?;
                    let ok = !user.is_empty() && !host.is_empty() && !host.contains('@');
                    ok.then(|| format!("{user}@{host}"))
                });
            if found.is_some() {
                return found;
            }
        }
        None
    })
}

/// Whether the root pattern covers every file `<dir>/<guid>/<name>`: OpenClaw compares segment by
/// segment, the candidate at least as long as the root, a root segment `*` matching any one segment.
/// The two unknown segments are matched only by `*`.
fn covers(root: &str, dir: &Path) -> bool {
    let Some(pattern) = normalise(root) else {
        return false;
    };
    let Some(dir) = normalise(&dir.to_string_lossy()) else {
        return false;
    };
    if pattern.len() > dir.len() + 2 {
        return false;
    }
    pattern
        .iter()
        .enumerate()
        .all(|(i, segment)| segment == "*" || dir.get(i).is_some_and(|d| d == segment))
}

/// OpenClaw's pattern normalisation: backslashes as `/`, absolute, `.`/`..` resolved, each segment
/// either exactly `*` or free of `*`; `None` for what it would reject.
fn normalise(path: &str) -> Option<Vec<String>> {
    let path = path.trim().replace('\\', "/");
    if !path.starts_with('/') {
        return None;
    }
    let mut segments: Vec<String> = Vec::new();
    for component in Path::new(&path).components() {
        match component {
            Component::Normal(s) => segments.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                segments.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let valid = !segments.is_empty() && segments.iter().all(|s| s == "*" || !s.contains('*'));
    valid.then_some(segments)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const STATE: &str = "/home/me/.imsg-bridge";
    const WRAPPER: &str = "#!/bin/sh\nexec imsg-bridge --target bot@mac imsg \"$@\"\n";

    fn run(doc: Value, scripts: &[(&str, &str)]) -> Verdict {
        let bridge = Bridge {
            state_dir: Path::new(STATE),
            account: "default",
        };
        let scripts: Vec<(String, String)> = scripts
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        let read = move |path: &str| scripts.iter().find(|(p, _)| p == path).map(|(_, t)| t.clone());
        assess(&doc, &bridge, &read)
    }

    fn imessage(channel: Value) -> Value {
        json!({ "channels": { "imessage": channel } })
    }

    fn warn_text(verdict: &Verdict) -> Option<String> {
        match verdict {
            Verdict::Warn { detail, remedy } => Some(format!("{detail} => {remedy}")),
            _ => None,
        }
    }

    #[test]
    fn a_gateway_set_up_for_the_drop_in_passes() {
        let covered = [
            "/home/me/.imsg-bridge/media/inbound",
            "/home/me/.imsg-bridge/media/inbound/",
            "/home/me/.imsg-bridge",
            "/home/*/.imsg-bridge/media",
            "/home/me/.imsg-bridge/media/inbound/*",
            "/home/me/.imsg-bridge/media/inbound/default/*/*",
            "/home/me/./x/../.imsg-bridge/media/inbound",
        ];
        for root in covered {
            for cli_path in ["/opt/w/imsg-mac", "/usr/local/bin/imsg-bridge"] {
                let doc = imessage(json!({ "cliPath": cli_path, "attachmentRoots": [root] }));
                let verdict = run(doc, &[("/opt/w/imsg-mac", WRAPPER)]);
                assert!(
                    matches!(&verdict, Verdict::Ok(d) if d.contains("/home/me/.imsg-bridge/media/inbound/default")),
                    "{root} {cli_path}: {verdict:?}"
                );
            }
        }
    }

    #[test]
    fn roots_that_miss_the_media_cache_warn_with_the_entry_to_add() {
        let missed = [
            None,
            Some("/home/me/.imsg-bridge/media/inbound/other"),
            Some("/home/me/.imsg-bridge/media/inbound/default/*/*/*"),
            Some("/home/me/.imsg-bridge/media/inbound/default/x*"),
            Some("/home/other/.imsg-bridge"),
            Some("home/me/.imsg-bridge"),
        ];
        for root in missed {
            let mut channel = json!({ "cliPath": "/opt/w/imsg-mac" });
            if let Some(root) = root {
                channel["attachmentRoots"] = json!([root]);
            }
            let verdict = run(imessage(channel), &[("/opt/w/imsg-mac", WRAPPER)]);
            let text = warn_text(&verdict).unwrap_or_default();
            assert!(
                text.contains("channels.imessage.attachmentRoots (")
                    && text.contains("/Users/*/Library/Messages/Attachments")
                    && text.contains(
                        "=> add \"/home/me/.imsg-bridge/media/inbound\" to channels.imessage.attachmentRoots"
                    ),
                "{root:?}: {verdict:?}"
            );
            assert!(!text.contains("remoteHost"), "{text}");
        }
    }

    #[test]
    fn a_leftover_remote_host_warns_and_names_its_key() {
        let doc = imessage(json!({
            "cliPath": "/opt/w/imsg-mac",
            "remoteHost": "bot@mac",
            "attachmentRoots": ["/home/me/.imsg-bridge/media/inbound"],
        }));
        let text = warn_text(&run(doc, &[("/opt/w/imsg-mac", WRAPPER)])).unwrap_or_default();
        assert!(
            text.contains("channels.imessage.remoteHost is still set (\"bot@mac\")"),
            "{text}"
        );
        assert!(
            text.contains(
                "=> remove channels.imessage.remoteHost (and channels.imessage.remoteAttachmentRoots)"
            ),
            "{text}"
        );
        assert!(!text.contains("does not cover"), "{text}");
        // Set in an account's entry: the fix names that entry.
        let doc = imessage(json!({
            "attachmentRoots": ["/home/me/.imsg-bridge/media/inbound"],
            "accounts": { "bot": { "cliPath": "/usr/bin/imsg-bridge", "remoteHost": "mac" } },
        }));
        let text = warn_text(&run(doc, &[])).unwrap_or_default();
        assert!(
            text.contains("remove channels.imessage.accounts.bot.remoteHost"),
            "{text}"
        );
    }

    #[test]
    fn accounts_are_merged_and_only_bridge_accounts_count() {
        // A disabled account and one still on plain ssh are not the bridge's business.
        let doc = imessage(json!({
            "accounts": {
                "old": { "cliPath": "/opt/w/ssh-wrapper", "remoteHost": "bot@mac" },
                "off": { "cliPath": "/usr/bin/imsg-bridge", "enabled": false, "remoteHost": "mac" },
            },
        }));
        let scripts = [("/opt/w/ssh-wrapper", "exec ssh -T bot@mac imsg \"$@\"\n")];
        assert!(matches!(run(doc, &scripts), Verdict::Skip(_)));
        assert!(matches!(run(json!({}), &[]), Verdict::Skip(_)));
        assert!(matches!(run(imessage(json!({})), &[]), Verdict::Skip(_)));
        // The wrapper's --account picks the cache folder; the root's roots count for every account.
        let with_account = "exec /usr/local/bin/imsg-bridge --account bot imsg \"$@\"\n";
        for (root, ok) in [
            ("/home/me/.imsg-bridge/media/inbound/default", false),
            ("/home/me/.imsg-bridge/media/inbound/bot", true),
        ] {
            let doc = imessage(json!({
                "attachmentRoots": [root],
                "accounts": { "bot": { "cliPath": "/opt/w/bot" } },
            }));
            let verdict = run(doc, &[("/opt/w/bot", with_account)]);
            assert_eq!(matches!(verdict, Verdict::Ok(_)), ok, "{root}: {verdict:?}");
        }
    }

    #[test]
    fn an_old_ssh_line_left_in_the_wrapper_warns_about_auto_detection() {
        let script = "#!/bin/sh\n# was: exec ssh -T bot@mac imsg \"$@\"\nexec imsg-bridge --target bot@mac imsg \"$@\"\n";
        let doc = imessage(json!({
            "cliPath": "/opt/w/imsg-mac",
            "attachmentRoots": ["/home/me/.imsg-bridge/media/inbound"],
        }));
        let text = warn_text(&run(doc.clone(), &[("/opt/w/imsg-mac", script)])).unwrap_or_default();
        assert!(
            text.contains("`ssh … bot@mac`") && text.contains("=> delete that line"),
            "{text}"
        );
        assert!(matches!(
            run(doc, &[("/opt/w/imsg-mac", WRAPPER)]),
            Verdict::Ok(_)
        ));
    }

    #[test]
    fn the_openclaw_file_is_the_config_given_or_the_one_in_home() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let given = dir.path().join("x/openclaw.json");
        assert_eq!(locate(Some(&given), Some(dir.path())), Some(given));
        let own = dir.path().join("config.json5");
        assert_eq!(locate(Some(&own), Some(dir.path())), None);
        let home_file = dir.path().join(".openclaw/openclaw.json");
        std::fs::create_dir_all(dir.path().join(".openclaw")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&home_file, "{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(locate(Some(&own), Some(dir.path())), Some(home_file));
    }
}

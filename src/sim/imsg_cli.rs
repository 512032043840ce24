//! What `imsg-sim` prints where it plays the `imsg` command line itself: imsg-style `--help` for the
//! commands a client probes (`rpc`, `status`, `send`, `send-attachment`, `send-rich`, `poll`, `group`),
//! the unknown-subcommand error, `status`, and the answers of the private-API commands on a Mac
//! without the IMCore bridge. Pure: the caller in [`crate::sim::cli`] prints and exits.
//!
//! The texts follow imsg's command specs and help printer; docs/simulator.md names the files.

use serde_json::{Value, json};

use crate::sim::methods::{EMULATED_IMSG_VERSION, STRICT_METHODS};

/// imsg's root command name, used in help and errors (the simulator plays `imsg`).
const ROOT: &str = "imsg";

/// The `--db` option every imsg database command has.
const DB_OPTION: (&str, &str) = (
    "--db <value>",
    "Path to chat.db (defaults to ~/Library/Messages/chat.db)",
);

/// The runtime flags imsg adds to every command (its `withRuntimeFlags`).
const RUNTIME_FLAGS: &[(&str, &str)] = &[
    ("-v, --verbose", "Enable verbose logging"),
    (
        "--log-level <value>",
        "Set log level (trace|debug|info|warn|error)",
    ),
    ("-j, --json, --json-output", "Emit machine-readable JSON output"),
    (
        "--read-only",
        "Refuse any write or mutation; only read operations are permitted",
    ),
];

/// One command as imsg's help printer sees it.
struct Spec {
    name: &'static str,
    summary: &'static str,
    discussion: Option<&'static str>,
    arguments: &'static [(&'static str, &'static str)],
    options: &'static [(&'static str, &'static str)],
    flags: &'static [(&'static str, &'static str)],
    examples: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        name: "rpc",
        summary: "Run JSON-RPC over stdin/stdout",
        discussion: None,
        arguments: &[],
        options: &[DB_OPTION],
        flags: &[
            ("--baseline", "imsg-sim: imitate the 0.9-era server"),
            (
                "--request-log <value>",
                "imsg-sim: append every request line to this file",
            ),
            ("--fault-* …", "imsg-sim: fault knobs, see docs/simulator.md"),
        ],
        examples: &["imsg rpc", "imsg rpc --db ~/Library/Messages/chat.db"],
    },
    Spec {
        name: "status",
        summary: "Check availability of imsg advanced features",
        discussion: Some(
            "Display the current status of imsg features and permissions.\n\
             Shows which advanced features (typing indicators, read receipts) are\n\
             available and provides setup instructions if needed.",
        ),
        arguments: &[],
        options: &[],
        flags: &[],
        examples: &["imsg status", "imsg status --json"],
    },
    Spec {
        name: "send",
        summary: "Send a message (text and/or attachment)",
        discussion: None,
        arguments: &[],
        options: &[
            DB_OPTION,
            ("--to <value>", "phone number or email"),
            ("--chat-id <value>", "chat rowid"),
            (
                "--chat-identifier <value>",
                "chat identifier (e.g. iMessage;+;chat...)",
            ),
            ("--chat-guid <value>", "chat guid"),
            ("--text <value>", "message body"),
            ("--file <value>", "path to attachment"),
            ("--service <value>", "service to use: imessage|sms|auto"),
            ("--region <value>", "default region for phone normalization"),
        ],
        flags: &[(
            "--no-sms-fallback",
            "disable automatic iMessage->SMS fallback for text-only auto phone sends",
        )],
        examples: &[
            "imsg send --to +14155551212 --text \"hi\"",
            "imsg send --to +14155551212 --text \"hi\" --file ~/Desktop/pic.jpg --service imessage",
            "imsg send --chat-id 1 --text \"hi\"",
        ],
    },
    Spec {
        name: "group",
        summary: "Show chat identity and participants for a chat id",
        discussion: Some(
            "Prints chat identifier, guid, display name, service, group flag, and participants for a \
             given chat rowid. Works for direct chats too.",
        ),
        arguments: &[],
        options: &[DB_OPTION, ("--chat-id <value>", "chat rowid from 'imsg chats'")],
        flags: &[],
        examples: &["imsg group --chat-id 1", "imsg group --chat-id 1 --json"],
    },
    Spec {
        name: "send-attachment",
        summary: "Send a file attachment via the IMCore bridge",
        discussion: None,
        arguments: &[],
        options: &[
            DB_OPTION,
            ("--chat <value>", "chat guid"),
            ("--file <value>", "absolute path to file"),
            ("--reply-to <value>", "guid of message to reply to"),
            ("--transport <value>", "transport to use: auto|dylib|applescript"),
        ],
        flags: &[("--audio", "send as audio message")],
        examples: &["imsg send-attachment --chat 'iMessage;-;+15551234567' --file ~/Pictures/me.jpg"],
    },
    Spec {
        name: "send-rich",
        summary: "Send a message via the IMCore bridge (effects, replies, subjects)",
        discussion: Some(
            "Requires `imsg launch` (SIP-disabled, dylib injected). Unlike `imsg send`\n\
             which uses AppleScript, this routes through Messages' private API for\n\
             richer features: expressive-send effects, reply targets, subject lines.",
        ),
        arguments: &[],
        options: &[
            DB_OPTION,
            ("--chat <value>", "chat guid (e.g. iMessage;-;+15551234567)"),
            ("--text <value>", "message body"),
            ("--file <value>", "path to attachment"),
            ("--url <value>", "URL to send as a rich link preview"),
            (
                "--effect <value>",
                "expressive send id (impact, loud, gentle, invisibleink, confetti, …)",
            ),
            ("--subject <value>", "subject line"),
            ("--reply-to <value>", "guid of message to reply to"),
            ("--part <value>", "part index (default 0)"),
            (
                "--format <value>",
                "JSON array of {start,length,styles:[...]} ranges (macOS 15+)",
            ),
            (
                "--format-file <value>",
                "path to JSON file containing the format ranges array",
            ),
        ],
        flags: &[("--no-dd-scan", "disable data-detector scan deferral")],
        examples: &[
            "imsg send-rich --chat 'iMessage;-;+15551234567' --text 'hi'",
            "imsg send-rich --chat 'iMessage;-;+15551234567' --reply-to ABCD --file ~/Desktop/pic.jpg",
            "imsg send-rich --chat 'iMessage;-;+15551234567' --text 'BOOM' --effect impact",
        ],
    },
    Spec {
        name: "poll",
        summary: "Send a native Apple Messages poll",
        discussion: Some(
            "Requires `imsg launch` (SIP-disabled, dylib injected). Use the `send`\n\
             action to create a native Messages Polls extension balloon, `vote`/`unvote`\n\
             to select or remove a selection. `send` sends `--question` as a plain caption\n\
             message right after the poll; `--comment` overrides the caption text. Use\n\
             `--no-comment` when the caller renders its own visible context before the poll.",
        ),
        arguments: &[("action", "send|vote|unvote")],
        options: &[
            DB_OPTION,
            ("--chat <value>", "chat guid or rowid"),
            ("--chat-id <value>", "chat rowid"),
            (
                "--question <value>",
                "poll question, also sent as a plain caption after the poll",
            ),
            (
                "--comment <value>",
                "optional override for the caption text; defaults to --question",
            ),
            ("--reply-to <value>", "guid of message to reply to"),
            ("--option <value>", "poll option text; pass at least twice"),
            (
                "--poll <value>",
                "vote/unvote: guid of the poll message to update",
            ),
            ("--option-id <value>", "vote/unvote: UUID of the option to select"),
            (
                "--option-index <value>",
                "vote/unvote: 1-based option number to select",
            ),
        ],
        flags: &[(
            "--no-comment",
            "do not echo the question as a caption after the poll",
        )],
        examples: &[
            "imsg poll send --chat 'iMessage;-;+15551234567' --question 'Dinner?' --option 'Pizza' --option 'Sushi'",
            "imsg poll vote --chat 'iMessage;-;+15551234567' --poll ABCD --option-id 1B2C-...",
        ],
    },
];

/// True when `name` is one of the commands whose help the simulator prints in imsg's format.
pub fn has_imsg_help(name: &str) -> bool {
    SPECS.iter().any(|s| s.name == name)
}

/// imsg's `<command> --help` text (its help printer: name, summary, usage, arguments, options,
/// examples), or `None` for a command it does not describe.
pub fn help(name: &str) -> Option<String> {
    let spec = SPECS.iter().find(|s| s.name == name)?;
    let mut lines = vec![format!("{ROOT} {}", spec.name), spec.summary.to_string()];
    if let Some(discussion) = spec.discussion {
        lines.push(format!("\n{discussion}"));
    }
    let mut usage: Vec<String> = spec.arguments.iter().map(|(a, _)| format!("<{a}>")).collect();
    usage.push("[options]".into());
    lines.push(String::new());
    lines.push("Usage:".into());
    lines.push(format!("  {ROOT} {} {}", spec.name, usage.join(" ")));
    lines.push(String::new());
    if !spec.arguments.is_empty() {
        lines.push("Arguments:".into());
        lines.extend(spec.arguments.iter().map(|(a, h)| format!("  {a}\t{h}")));
        lines.push(String::new());
    }
    lines.push("Options:".into());
    let all = spec.options.iter().chain(spec.flags).chain(RUNTIME_FLAGS);
    lines.extend(all.map(|(n, h)| format!("  {n}\t{h}")));
    lines.push(String::new());
    if !spec.examples.is_empty() {
        lines.push("Examples:".into());
        lines.extend(spec.examples.iter().map(|e| format!("  {e}")));
    }
    Some(lines.join("\n") + "\n")
}

/// imsg's error for a first word that is no command (Commander's `unknownSubcommand`).
pub fn unknown_subcommand(name: &str) -> String {
    format!("Unknown subcommand '{name}' for command '{ROOT}'")
}

/// imsg's `missingOption` error text.
pub fn missing_option(name: &str) -> String {
    format!("Missing required option: --{name}")
}

/// imsg's `invalidOption` error text.
pub fn invalid_option(name: &str) -> String {
    format!("Invalid value for option: --{name}")
}

/// Why a private-API command fails on the simulated Mac: SIP is on, so imsg refuses to inject its
/// bridge into Messages (the launcher's `sipEnabled` error).
pub const BRIDGE_REFUSED: &str = "System Integrity Protection (SIP) is enabled. Refusing to inject into \
                                  Messages.app. Disable SIP in Recovery mode before using `imsg launch`.";

/// `status`'s explanation when the bridge is unavailable because SIP is on.
const SIP_MESSAGE: &str = "System Integrity Protection (SIP) is enabled.\n\
                           Advanced IMCore features are intentionally disabled.\n\n\
                           To enable advanced features:\n\
                           1. Disable SIP in Recovery mode (`csrutil disable`)\n\
                           2. Run `imsg launch`\n\n\
                           Source installs also need `make build-dylib` before launching.";

/// How a bridge command reports a failure: `{"success":false,"error":…}` or `error: …` (imsg's
/// `BridgeOutput.emitError`), on stdout.
pub fn bridge_error(message: &str, json: bool) -> String {
    if json {
        json!({"success": false, "error": message}).to_string()
    } else {
        format!("error: {message}")
    }
}

/// `status --json`: imsg's keys, with the values of a Mac whose SIP is on (no bridge, no selectors).
/// `rpc_methods` lists what the simulator's `rpc` answers, not imsg's full surface.
pub fn status_json() -> Value {
    json!({
        "version": EMULATED_IMSG_VERSION,
        "basic_features": true,
        "advanced_features": false,
        "typing_indicators": false,
        "read_receipts": false,
        "sip": "enabled",
        "message": SIP_MESSAGE,
        "bridge_version": 0,
        "v2_ready": false,
        "selectors": {},
        "rpc_methods": STRICT_METHODS,
        "capabilities": {
            "engine": {"version": EMULATED_IMSG_VERSION, "commit": "imsg-sim", "built_at": ""},
            "features": {},
        },
    })
}

/// Plain `status`: imsg's report for a Mac without the advanced features.
pub fn status_text() -> String {
    let lines = [
        "imsg Status Report",
        "==================",
        "",
        "Version:",
        &format!("  {EMULATED_IMSG_VERSION}"),
        "",
        "Basic features (send, receive, history):",
        "  Available",
        "",
        "System Integrity Protection (SIP):",
        "  enabled",
        "",
        "Advanced features (typing, read receipts):",
        "  Not available",
        "",
        "To enable advanced features:",
        "  1. Disable System Integrity Protection (SIP)",
        "     - Restart Mac holding Cmd+R",
        "     - Open Terminal from Utilities menu",
        "     - Run: csrutil disable",
        "     - Restart normally",
        "",
        "  2. Grant Full Disk Access",
        "     - System Settings > Privacy & Security > Full Disk Access",
        "     - Add Terminal or your terminal app",
        "",
        "  3. Build and launch:",
        "     make build-dylib",
        "     imsg launch",
        "",
        "Note: Basic messaging features work without these steps.",
    ];
    lines.join("\n") + "\n"
}

/// The one line imsg prints for a failed AppleScript send whose JSON-RPC error carries delivery
/// data (its `DeliveryFailure` description); `None` when `data` has no disposition.
pub fn delivery_failure_text(data: &Value) -> Option<String> {
    let disposition = data.get("disposition")?.as_str()?;
    let guidance = if data.get("retry_safe").and_then(Value::as_bool) == Some(true) {
        "The operation did not start; retry is safe."
    } else {
        "The operation may execute or may already have executed; retry is not safe."
    };
    let field = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(format!(
        "{} {} failed ({disposition}): {} {guidance}",
        field("transport"),
        field("operation"),
        field("detail")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_probed_flags_in_help() {
        let rich = help("send-rich").unwrap_or_default();
        assert!(rich.starts_with("imsg send-rich\n"), "{rich}");
        assert!(rich.contains("  --file <value>\tpath to attachment"), "{rich}");
        let poll = help("poll").unwrap_or_default();
        assert!(poll.contains("--no-comment\t"), "{poll}");
        assert!(poll.contains("Usage:\n  imsg poll <action> [options]"), "{poll}");
        let rpc = help("rpc").unwrap_or_default();
        assert!(rpc.contains("--db <value>"), "{rpc}");
        assert!(help("launch").is_none());
    }

    #[test]
    fn words_the_unknown_subcommand_error_like_commander() {
        assert_eq!(
            unknown_subcommand("frob"),
            "Unknown subcommand 'frob' for command 'imsg'"
        );
    }

    #[test]
    fn reports_no_bridge_in_status() {
        let s = status_json();
        assert_eq!(s["advanced_features"], false);
        assert_eq!(s["v2_ready"], false);
        assert!(s["selectors"].as_object().is_some_and(|m| m.is_empty()));
        assert!(
            s["rpc_methods"]
                .as_array()
                .is_some_and(|m| m.contains(&json!("send")))
        );
        assert!(s["message"].as_str().is_some_and(|m| m.contains("SIP")));
        assert!(status_text().contains("Advanced features (typing, read receipts):\n  Not available"));
    }

    #[test]
    fn formats_delivery_failures_like_imsg() {
        let data = json!({"retry_safe": true, "disposition": "not_started", "transport": "applescript",
                          "operation": "send", "detail": "Messages automation failed with AppleScript error -1743."});
        assert_eq!(
            delivery_failure_text(&data).as_deref(),
            Some(
                "applescript send failed (not_started): Messages automation failed with AppleScript error \
                 -1743. The operation did not start; retry is safe."
            )
        );
        assert_eq!(delivery_failure_text(&json!("plain")), None);
        let line: Value = serde_json::from_str(&bridge_error("x", true)).unwrap_or_default();
        assert_eq!(line, json!({"success": false, "error": "x"}));
        assert_eq!(bridge_error("x", false), "error: x");
    }
}

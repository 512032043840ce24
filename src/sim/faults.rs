//! Fault-injection knobs of `imsg-sim rpc`: each one reproduces a failure real `imsg` users hit.
//!
//! Every knob is a flag of `imsg-sim rpc` and an environment variable (the flag wins when both are
//! given; boolean variables accept `1`/`true`/`yes`/`on`):
//!
//! | flag | variable | effect |
//! |---|---|---|
//! | `--fault-db-unavailable` | `IMSG_SIM_FAULT_DB_UNAVAILABLE=1` | chat.db cannot be opened, as without Full Disk Access. Strict: database calls fail with `-32002 Database unavailable` (`data: {path, detail, retryable: true}`) and `status.database.ready` is false. Baseline: every request fails with `-32603` and the permission banner (`Permission Error … Full Disk Access`) as `data`. |
//! | `--fault-echo-race` | `IMSG_SIM_FAULT_ECHO_RACE=1` | `send` first writes its rows with `is_from_me = 0` and flips them to 1 about 200 ms later, like Messages does (imsg issues #72/#80): a watch with a short debounce reports your own message as inbound. |
//! | `--fault-watch-death-after N` | `IMSG_SIM_FAULT_WATCH_DEATH_AFTER=N` | each subscription emits an `error` notification after N `message` notifications and stops, like a watch whose SQLite reads fail. |
//! | `--fault-max-buffer-limit N` | `IMSG_SIM_FAULT_MAX_BUFFER_LIMIT=N` | strict watches accept a `buffer_limit` of at most N (more is `-32602`) and default to at most N, like a server with a smaller buffer: a consumer that falls behind gets `watch.overflow` soon. |
//! | `--fault-send-fails` | `IMSG_SIM_FAULT_SEND_FAILS=1` | `send` fails as with Automation permission denied (AppleScript error -1743), before anything reached Messages; nothing is written. Strict: `-32603 Delivery failed before dispatch`, `data: {retry_safe: true, disposition: "not_started", transport: "applescript", operation: "send", detail}`. Baseline: `-32603` with data `AppleScript failed: Not authorized to send Apple events to Messages. (-1743)`. |
//! | `--fault-send-unknown` | `IMSG_SIM_FAULT_SEND_UNKNOWN=1` | `send` writes its rows (the message did go out) and then fails as if osascript timed out. Strict: `-32001 Delivery outcome unknown`, `data: {retry_safe: false, disposition: "may_have_completed", …}`. Baseline: `-32603` with the timeout text. |
//!
//! To add a knob: add a field here (flag, variable, doc line), add a row to the table above and to
//! `docs/simulator.md`, and read the field where the failure belongs.

use std::time::Duration;

use clap::builder::BoolishValueParser;

/// The fault knobs; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Fault injection (flag or environment variable)")]
pub struct Faults {
    /// Fail every database access as if Full Disk Access were missing.
    #[arg(long = "fault-db-unavailable", env = "IMSG_SIM_FAULT_DB_UNAVAILABLE", value_parser = BoolishValueParser::new())]
    pub db_unavailable: bool,

    /// Write sent rows as inbound (is_from_me=0) first and flip them to outgoing ~200 ms later.
    #[arg(long = "fault-echo-race", env = "IMSG_SIM_FAULT_ECHO_RACE", value_parser = BoolishValueParser::new())]
    pub echo_race: bool,

    /// End every subscription with an `error` notification after N message notifications.
    #[arg(
        long = "fault-watch-death-after",
        env = "IMSG_SIM_FAULT_WATCH_DEATH_AFTER",
        value_name = "N"
    )]
    pub watch_death_after: Option<u64>,

    /// Strict watches: accept a `buffer_limit` of at most N (default at most N), so they overflow soon.
    #[arg(
        long = "fault-max-buffer-limit",
        env = "IMSG_SIM_FAULT_MAX_BUFFER_LIMIT",
        value_name = "N",
        value_parser = clap::value_parser!(i64).range(1..=4096)
    )]
    pub max_buffer_limit: Option<i64>,

    /// Fail every send like a denied Automation permission (AppleScript error -1743).
    #[arg(long = "fault-send-fails", env = "IMSG_SIM_FAULT_SEND_FAILS", value_parser = BoolishValueParser::new())]
    pub send_fails: bool,

    /// Write a send's rows, then fail it as if osascript timed out (strict: -32001, outcome unknown).
    #[arg(long = "fault-send-unknown", env = "IMSG_SIM_FAULT_SEND_UNKNOWN", value_parser = BoolishValueParser::new())]
    pub send_unknown: bool,
}

/// How long the echo-race fault leaves a sent row marked as inbound (the real race is ~100–400 ms).
pub const ECHO_RACE_FLIP_DELAY: Duration = Duration::from_millis(200);

/// The AppleScript error `send` reports under `--fault-send-fails`.
pub const SEND_FAILS_DETAIL: &str =
    "AppleScript failed: Not authorized to send Apple events to Messages. (-1743)";

/// The AppleScript error number of a denied Automation permission.
pub const NOT_AUTHORIZED_ERROR: i64 = -1743;

/// imsg's detail when osascript outlives its bound (150 s, the send response timeout).
pub const SEND_TIMEOUT_DETAIL: &str = "osascript timed out after 150 seconds.";

/// The human banner the baseline server puts in `data` when chat.db cannot be opened.
pub fn permission_banner(path: &std::path::Path) -> String {
    format!(
        "Permission Error: imsg cannot read the Messages database at {}.\n\
         The process that runs imsg needs Full Disk Access.\n\
         Open System Settings > Privacy & Security > Full Disk Access, add the app that launches imsg \
         (your terminal, or the gateway's runtime), then restart it and try again.",
        path.display()
    )
}

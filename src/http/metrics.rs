//! The bridge's metrics registry: counters and gauges labelled by account, rendered in the Prometheus
//! text exposition format (version 0.0.4) for `GET /metrics` and as JSON for `GET /v1/status`.
//!
//! One `Mutex` around a small map is enough: updates happen a few times per message, never in a tight
//! loop, and a plain map keeps the label sets (accounts, drop reasons, pull outcomes) open-ended.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Every metric name starts with this, so the bridge's series never collide with an exporter's.
pub const PREFIX: &str = "imsg_bridge_";

/// Counter or gauge, as written on the `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// The metric families the bridge exports. The order here is the order of `render`, so the output
/// is stable and diffable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    MessagesIn,
    MessagesDispatched,
    MessagesDropped,
    Sends,
    SendFailures,
    OutboundMediaRefused,
    Reconnects,
    SftpBytes,
    SftpPulls,
    SinkRejected,
    DeadLetters,
    WatchOverflows,
    ReplaySkipped,
    CursorRowid,
    Connected,
    NatsConnected,
    NatsPublished,
    NatsPublishDuplicates,
    NatsPublishAckMicros,
    NatsPendingAcks,
    NatsReplies,
}

const FAMILIES: [Family; 21] = [
    Family::MessagesIn,
    Family::MessagesDispatched,
    Family::MessagesDropped,
    Family::Sends,
    Family::SendFailures,
    Family::OutboundMediaRefused,
    Family::Reconnects,
    Family::SftpBytes,
    Family::SftpPulls,
    Family::SinkRejected,
    Family::DeadLetters,
    Family::WatchOverflows,
    Family::ReplaySkipped,
    Family::CursorRowid,
    Family::Connected,
    Family::NatsConnected,
    Family::NatsPublished,
    Family::NatsPublishDuplicates,
    Family::NatsPublishAckMicros,
    Family::NatsPendingAcks,
    Family::NatsReplies,
];

/// Name (without the prefix), help text, type and label names of one family.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

impl Family {
    fn spec(self) -> Spec {
        let (name, help, kind, labels): (_, _, _, &'static [&'static str]) = match self {
            Family::MessagesIn => (
                "messages_in_total",
                "Messages read from imsg (watch and replay).",
                Kind::Counter,
                &["account"],
            ),
            Family::MessagesDispatched => (
                "messages_dispatched_total",
                "Envelopes the agent sink accepted.",
                Kind::Counter,
                &["account"],
            ),
            Family::MessagesDropped => (
                "messages_dropped_total",
                "Inbound messages not handed to the agent, by reason.",
                Kind::Counter,
                &["account", "reason"],
            ),
            Family::Sends => (
                "sends_total",
                "imsg send calls that succeeded.",
                Kind::Counter,
                &["account"],
            ),
            Family::SendFailures => (
                "send_failures_total",
                "imsg send calls that failed.",
                Kind::Counter,
                &["account"],
            ),
            Family::OutboundMediaRefused => (
                "outbound_media_refused_total",
                "Sends refused because a file lies outside bridge.outboundMediaRoots or in a place never sent from, by caller and reason.",
                Kind::Counter,
                &["account", "caller", "reason"],
            ),
            Family::Reconnects => (
                "reconnects_total",
                "Reconnections to imsg rpc after a failure.",
                Kind::Counter,
                &["account"],
            ),
            Family::SftpBytes => (
                "sftp_bytes_total",
                "Attachment bytes pulled from the Mac.",
                Kind::Counter,
                &["account"],
            ),
            Family::SftpPulls => (
                "sftp_pulls_total",
                "Attachment pulls from the Mac, by outcome.",
                Kind::Counter,
                &["account", "status"],
            ),
            Family::SinkRejected => (
                "sink_rejected_total",
                "Envelopes the agent sink rejected permanently.",
                Kind::Counter,
                &["account"],
            ),
            Family::DeadLetters => (
                "dead_letters_total",
                "Envelopes the sink can never accept, written to stateDir/dead-letter instead.",
                Kind::Counter,
                &["account"],
            ),
            Family::WatchOverflows => (
                "watch_overflows_total",
                "Watch buffers that overflowed (imsg's or ours); each resubscribes from the cursor at once.",
                Kind::Counter,
                &["account"],
            ),
            Family::ReplaySkipped => (
                "replay_skipped_total",
                "Rows missed while away that bridge.replay skipped (beyond maxRows or older than maxAgeMinutes).",
                Kind::Counter,
                &["account"],
            ),
            Family::CursorRowid => (
                "cursor_rowid",
                "Last message rowid handed off (the persisted cursor).",
                Kind::Gauge,
                &["account"],
            ),
            Family::Connected => (
                "connected",
                "1 while the account's imsg rpc session is up, else 0.",
                Kind::Gauge,
                &["account"],
            ),
            Family::NatsConnected => (
                "nats_connected",
                "1 while the nats sink is connected to a server and its streams are ready, else 0.",
                Kind::Gauge,
                &["stream"],
            ),
            Family::NatsPublished => (
                "nats_published_total",
                "Envelopes JetStream acknowledged (PubAck), duplicates included.",
                Kind::Counter,
                &["account"],
            ),
            Family::NatsPublishDuplicates => (
                "nats_publish_duplicates_total",
                "Envelopes JetStream already held (same Nats-Msg-Id within the duplicate window).",
                Kind::Counter,
                &["account"],
            ),
            Family::NatsPublishAckMicros => (
                "nats_publish_ack_microseconds_total",
                "Time from publish to PubAck, summed; divide by nats_published_total for the mean latency.",
                Kind::Counter,
                &["account"],
            ),
            Family::NatsPendingAcks => (
                "nats_pending_acks",
                "Envelopes published and waiting for their PubAck, plus replies pulled and not yet acked.",
                Kind::Gauge,
                &["account"],
            ),
            Family::NatsReplies => (
                "nats_replies_total",
                "Replies pulled from the reply stream, by outcome (sent, retried, skipped_claimed, lost_claim, refused).",
                Kind::Counter,
                &["account", "outcome"],
            ),
        };
        Spec {
            name,
            help,
            kind,
            labels,
        }
    }
}

/// Label values in the order of the family's label names.
type Labels = Vec<String>;

/// Shared registry of the bridge's counters and gauges; wrap it in an `Arc` and hand clones around.
#[derive(Debug, Default)]
pub struct Metrics {
    // Counters and gauges share one map: a gauge is stored as its i64 value, a counter as a
    // non-negative i64 (u64 would only matter past 9.2e18, which a byte counter never reaches).
    series: Mutex<BTreeMap<Family, BTreeMap<Labels, i64>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Create the per-account series at zero so dashboards see the account before its first event
    /// (Prometheus cannot tell "never happened" from "not exported" otherwise).
    pub fn register_account(&self, account: &str) {
        let mut series = self.lock();
        for family in FAMILIES {
            // The nats sink's series appear with its first event: other sinks never have them.
            if family.spec().labels == ["account"] && !family.spec().name.starts_with("nats_") {
                series
                    .entry(family)
                    .or_default()
                    .entry(vec![account.to_owned()])
                    .or_insert(0);
            }
        }
    }

    /// One message read from imsg.
    pub fn inc_messages_in(&self, account: &str) {
        self.add(Family::MessagesIn, &[account], 1);
    }

    /// One envelope accepted by the sink.
    pub fn inc_dispatched(&self, account: &str) {
        self.add(Family::MessagesDispatched, &[account], 1);
    }

    /// One inbound message dropped; `reason` is a short stable word (`own`, `pairing`, `mention`, …).
    pub fn inc_dropped(&self, account: &str, reason: &str) {
        self.add(Family::MessagesDropped, &[account, reason], 1);
    }

    /// One successful `imsg send` call.
    pub fn inc_sends(&self, account: &str) {
        self.add(Family::Sends, &[account], 1);
    }

    /// One failed `imsg send` call.
    pub fn inc_send_failures(&self, account: &str) {
        self.add(Family::SendFailures, &[account], 1);
    }

    /// One send refused for its files; `caller` is `agent`, `api` or `operator`, `reason`
    /// `outside_roots` or `forbidden`.
    pub fn inc_media_refused(&self, account: &str, caller: &str, reason: &str) {
        self.add(Family::OutboundMediaRefused, &[account, caller, reason], 1);
    }

    /// One reconnection after a lost or failed session.
    pub fn inc_reconnects(&self, account: &str) {
        self.add(Family::Reconnects, &[account], 1);
    }

    /// `bytes` more attachment bytes pulled from the Mac.
    pub fn add_sftp_bytes(&self, account: &str, bytes: u64) {
        self.add(Family::SftpBytes, &[account], bytes);
    }

    /// One attachment pull finished with `status` (`ok`, `missing`, `too_large`, `error`, …).
    pub fn inc_sftp_pulls(&self, account: &str, status: &str) {
        self.add(Family::SftpPulls, &[account, status], 1);
    }

    /// One envelope permanently rejected by the sink (webhook 4xx).
    pub fn inc_sink_rejected(&self, account: &str) {
        self.add(Family::SinkRejected, &[account], 1);
    }

    /// One envelope written to the dead-letter folder instead of the sink.
    pub fn inc_dead_letters(&self, account: &str) {
        self.add(Family::DeadLetters, &[account], 1);
    }

    /// One watch overflow (imsg's `watch.overflow` or our own subscription queue).
    pub fn inc_watch_overflows(&self, account: &str) {
        self.add(Family::WatchOverflows, &[account], 1);
    }

    /// `rows` more backlog rows skipped by `bridge.replay`.
    pub fn add_replay_skipped(&self, account: &str, rows: u64) {
        self.add(Family::ReplaySkipped, &[account], rows);
    }

    /// The account's cursor now stands at `rowid`.
    pub fn set_cursor(&self, account: &str, rowid: i64) {
        self.set(Family::CursorRowid, &[account], rowid);
    }

    /// The account's session went up or down.
    pub fn set_connected(&self, account: &str, connected: bool) {
        self.set(Family::Connected, &[account], i64::from(connected));
    }

    /// The current values of one account as JSON for `/v1/status`: single-label families map their
    /// name (without prefix) to a number; two-label families map to an object keyed by the second
    /// label (`{"messages_dropped_total": {"pairing": 2}}`).
    pub fn account_json(&self, account: &str) -> serde_json::Value {
        let series = self.lock();
        let mut out = serde_json::Map::new();
        for (family, values) in series.iter() {
            let spec = family.spec();
            for (labels, value) in values {
                match labels.as_slice() {
                    [a] if a == account => {
                        out.insert(spec.name.to_owned(), (*value).into());
                    }
                    [a, sub] if a == account => {
                        let entry = out
                            .entry(spec.name.to_owned())
                            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                        if let Some(map) = entry.as_object_mut() {
                            map.insert(sub.clone(), (*value).into());
                        }
                    }
                    _ => {}
                }
            }
        }
        serde_json::Value::Object(out)
    }

    pub fn set_nats_connected(&self, stream: &str, connected: bool) {
        self.set(Family::NatsConnected, &[stream], i64::from(connected));
    }

    /// One PubAck: its latency, and whether JetStream already held the message.
    pub fn nats_acked(&self, account: &str, latency: std::time::Duration, duplicate: bool) {
        self.add(Family::NatsPublished, &[account], 1);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.add(Family::NatsPublishAckMicros, &[account], micros);
        if duplicate {
            self.add(Family::NatsPublishDuplicates, &[account], 1);
        }
    }

    pub fn set_nats_pending(&self, account: &str, pending: i64) {
        self.set(Family::NatsPendingAcks, &[account], pending);
    }

    pub fn inc_nats_replies(&self, account: &str, outcome: &str) {
        self.add(Family::NatsReplies, &[account, outcome], 1);
    }

    /// Everything in the Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` for
    /// every family (also those without samples yet), then one line per label set.
    pub fn render(&self) -> String {
        let series = self.lock();
        let mut out = String::new();
        for family in FAMILIES {
            let spec = family.spec();
            // Writing into a String cannot fail, hence the ignored fmt::Result.
            let _ = writeln!(out, "# HELP {PREFIX}{} {}", spec.name, escape_help(spec.help));
            let _ = writeln!(out, "# TYPE {PREFIX}{} {}", spec.name, spec.kind.as_str());
            for (labels, value) in series.get(&family).into_iter().flatten() {
                let _ = write!(out, "{PREFIX}{}{{", spec.name);
                for (i, (name, value)) in spec.labels.iter().zip(labels).enumerate() {
                    let comma = if i == 0 { "" } else { "," };
                    let _ = write!(out, "{comma}{name}=\"{}\"", escape_label_value(value));
                }
                let _ = writeln!(out, "}} {value}");
            }
        }
        out
    }

    fn add(&self, family: Family, labels: &[&str], n: u64) {
        debug_assert_eq!(labels.len(), family.spec().labels.len());
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut series = self.lock();
        let slot = series
            .entry(family)
            .or_default()
            .entry(owned(labels))
            .or_insert(0);
        // Saturate rather than wrap: a counter that goes backwards looks like a restart to Prometheus.
        *slot = slot.saturating_add(n);
    }

    fn set(&self, family: Family, labels: &[&str], value: i64) {
        debug_assert_eq!(labels.len(), family.spec().labels.len());
        self.lock()
            .entry(family)
            .or_default()
            .insert(owned(labels), value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Family, BTreeMap<Labels, i64>>> {
        // A panic while holding the lock leaves at worst one counter short; metrics must keep working.
        crate::util::lock(&self.series)
    }
}

fn owned(labels: &[&str]) -> Labels {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

/// Label values escape backslash, double quote and line feed (exposition format 0.0.4).
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text escapes backslash and line feed only.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed sample line.
    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A strict parser for the subset of the text format we emit: it checks that every sample's
    /// family was announced by `# HELP` and `# TYPE` before it, that names are valid, that label
    /// values are quoted with only the three legal escapes, and that values are numbers.
    fn parse(text: &str) -> Result<Vec<Sample>, String> {
        let mut helped: Vec<String> = Vec::new();
        let mut typed: Vec<(String, String)> = Vec::new();
        let mut samples = Vec::new();
        if !text.ends_with('\n') {
            return Err("output must end with a newline".into());
        }
        for (n, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').ok_or_else(|| err("HELP without text"))?;
                check_name(name).map_err(|e| err(&e))?;
                if helped.iter().any(|h| h == name) {
                    return Err(err("second HELP"));
                }
                helped.push(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| err("TYPE without type"))?;
                check_name(name).map_err(|e| err(&e))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(err("unknown type"));
                }
                if typed.iter().any(|(t, _)| t == name) {
                    return Err(err("second TYPE"));
                }
                typed.push((name.to_owned(), kind.to_owned()));
            } else if line.starts_with('#') || line.is_empty() {
                return Err(err("unexpected comment or blank line"));
            } else {
                let sample = parse_sample(line).map_err(|e| err(&e))?;
                // Samples of a family must follow its TYPE line directly (no interleaving).
                match typed.last() {
                    Some((t, kind)) if *t == sample.name => {
                        if kind == "counter" && !sample.name.ends_with("_total") {
                            return Err(err("counter without _total"));
                        }
                    }
                    _ => return Err(err("sample outside its family")),
                }
                if !helped.contains(&sample.name) {
                    return Err(err("sample without HELP"));
                }
                samples.push(sample);
            }
        }
        Ok(samples)
    }

    fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            Ok(())
        } else {
            Err(format!("invalid name {name:?}"))
        }
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        check_name(name)?;
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (label, after_eq) = inner.split_once('=').ok_or("label without =")?;
                check_name(label)?;
                let quoted = after_eq.strip_prefix('"').ok_or("label value not quoted")?;
                let mut chars = quoted.char_indices();
                let mut value = String::new();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some((i, '"')) => break i + 1,
                        Some((_, '\n')) | None => return Err("unterminated label value".into()),
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((label.to_owned(), value));
                let after_value = &quoted[end..];
                inner = match after_value.strip_prefix(',') {
                    Some(next) => next,
                    None if after_value.starts_with('}') => after_value,
                    None => return Err(format!("expected , or }} after a label value: {after_value:?}")),
                };
            }
        }
        let value = rest.strip_prefix(' ').ok_or("no space before value")?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value {value:?} is not a number"))?;
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }

    #[test]
    fn an_empty_registry_still_announces_every_family() {
        let text = Metrics::new().render();
        assert!(parse(&text).expect("parses").is_empty());
        for family in FAMILIES {
            let name = family.spec().name;
            assert!(
                text.contains(&format!("# TYPE imsg_bridge_{name} ")),
                "{name} missing"
            );
        }
        assert!(text.contains("# TYPE imsg_bridge_connected gauge\n"));
        assert!(text.contains("# TYPE imsg_bridge_sends_total counter\n"));
    }

    #[test]
    fn every_update_shows_up_as_a_parsable_sample() {
        let m = Metrics::new();
        m.inc_messages_in("default");
        m.inc_messages_in("default");
        m.inc_dispatched("default");
        m.inc_dropped("default", "pairing");
        m.inc_dropped("default", "pairing");
        m.inc_dropped("default", "mention");
        m.inc_sends("work");
        m.inc_send_failures("work");
        m.inc_media_refused("work", "agent", "forbidden");
        m.inc_reconnects("work");
        m.add_sftp_bytes("default", 532_118);
        m.add_sftp_bytes("default", 10);
        m.inc_sftp_pulls("default", "ok");
        m.inc_sink_rejected("default");
        m.set_cursor("default", 1979);
        m.set_cursor("default", 1980);
        m.set_connected("default", true);
        m.set_connected("work", false);

        let samples = parse(&m.render()).expect("parses");
        let expected = [
            sample("imsg_bridge_messages_in_total", &[("account", "default")], 2.0),
            sample(
                "imsg_bridge_messages_dispatched_total",
                &[("account", "default")],
                1.0,
            ),
            sample(
                "imsg_bridge_messages_dropped_total",
                &[("account", "default"), ("reason", "mention")],
                1.0,
            ),
            sample(
                "imsg_bridge_messages_dropped_total",
                &[("account", "default"), ("reason", "pairing")],
                2.0,
            ),
            sample("imsg_bridge_sends_total", &[("account", "work")], 1.0),
            sample("imsg_bridge_send_failures_total", &[("account", "work")], 1.0),
            sample(
                "imsg_bridge_outbound_media_refused_total",
                &[("account", "work"), ("caller", "agent"), ("reason", "forbidden")],
                1.0,
            ),
            sample("imsg_bridge_reconnects_total", &[("account", "work")], 1.0),
            sample(
                "imsg_bridge_sftp_bytes_total",
                &[("account", "default")],
                532_128.0,
            ),
            sample(
                "imsg_bridge_sftp_pulls_total",
                &[("account", "default"), ("status", "ok")],
                1.0,
            ),
            sample("imsg_bridge_sink_rejected_total", &[("account", "default")], 1.0),
            sample("imsg_bridge_cursor_rowid", &[("account", "default")], 1980.0),
            sample("imsg_bridge_connected", &[("account", "default")], 1.0),
            sample("imsg_bridge_connected", &[("account", "work")], 0.0),
        ];
        assert_eq!(samples, expected);
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let m = Metrics::new();
        m.inc_dropped("we\"ird\\acc\nount", "x");
        let text = m.render();
        assert!(
            text.contains(
                "imsg_bridge_messages_dropped_total{account=\"we\\\"ird\\\\acc\\nount\",reason=\"x\"} 1\n"
            ),
            "{text}"
        );
        let samples = parse(&text).expect("parses");
        assert_eq!(
            samples,
            [sample(
                "imsg_bridge_messages_dropped_total",
                &[("account", "we\"ird\\acc\nount"), ("reason", "x")],
                1.0
            )]
        );
    }

    #[test]
    fn a_registered_account_exports_zeroes_before_its_first_event() {
        let m = Metrics::new();
        m.register_account("default");
        let samples = parse(&m.render()).expect("parses");
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"imsg_bridge_messages_in_total"));
        assert!(names.contains(&"imsg_bridge_connected"));
        // Two-label families have no natural zero series: the reason is not known in advance.
        assert!(!names.contains(&"imsg_bridge_messages_dropped_total"));
        assert!(samples.iter().all(|s| s.value == 0.0));
        // Registering again keeps the values.
        m.inc_sends("default");
        m.register_account("default");
        assert!(
            m.render()
                .contains("imsg_bridge_sends_total{account=\"default\"} 1\n")
        );
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        let m = Metrics::new();
        m.add_sftp_bytes("a", u64::MAX);
        m.add_sftp_bytes("a", 5);
        assert!(m.render().contains(&format!(
            "imsg_bridge_sftp_bytes_total{{account=\"a\"}} {}\n",
            i64::MAX
        )));
    }

    #[test]
    fn account_json_gathers_one_accounts_values() {
        let m = Metrics::new();
        m.inc_messages_in("default");
        m.inc_dropped("default", "pairing");
        m.set_cursor("default", 42);
        m.inc_messages_in("other");
        assert_eq!(
            m.account_json("default"),
            serde_json::json!({
                "messages_in_total": 1,
                "messages_dropped_total": {"pairing": 1},
                "cursor_rowid": 42,
            })
        );
    }

    #[test]
    fn the_parser_rejects_malformed_exposition_text() {
        // Guard against a parser that accepts anything, which would make the tests above vacuous.
        assert!(parse("imsg_bridge_x_total 1\n").is_err());
        assert!(parse("# HELP a_total h\n# TYPE a_total counter\na_total{l=\"v} 1\n").is_err());
        assert!(parse("# HELP a_total h\n# TYPE a_total counter\na_total{l=\"\\t\"} 1\n").is_err());
        assert!(parse("# HELP a_total h\n# TYPE a_total counter\na_total one\n").is_err());
        assert!(parse("# HELP a h\n# TYPE a counter\na 1\n").is_err());
        assert!(parse("# HELP a_total h\n# TYPE a_total counter\na_total{l=\"v\"} 1\n").is_ok());
    }
}

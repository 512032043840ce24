//! In-process pipeline throughput: a message notification line parsed, normalised, decided by the
//! policy and serialised as an envelope — what one core does per inbound message, no I/O.

use std::time::{Duration, Instant};

use imsg_bridge::config::{ContextVisibility, DmPolicy, GroupPolicy};
use imsg_bridge::envelope::{DmScope, EnvelopeContext, normalize};
use imsg_bridge::imsg::Message;
use imsg_bridge::policy::{Allowlist, Decision, Inbound, Policy, Settings, mention};

use crate::report::{Comparison, Samples};

pub fn run() -> Comparison {
    let messages = if crate::rounds(2) == 1 { 2_000 } else { 200_000 };
    let lines: Vec<String> = (0..messages)
        .map(|i| {
            let group = i % 3 == 0;
            serde_json::json!({"jsonrpc":"2.0","method":"message","params":{"subscription":1,"message":{
                "id": i + 1, "guid": format!("G-{i}"), "chat_id": if group { 42 } else { 7 },
                "sender": "+14155551212", "is_from_me": false, "text": format!("@bot message number {i} with some words"),
                "created_at": "2026-11-24T12:00:00.000Z", "attachments": [], "chat_identifier": if group { "chat42" } else { "+14155551212" },
                "chat_guid": if group { "iMessage;+;chat42" } else { "iMessage;-;+14155551212" }, "chat_name": if group { "Crew" } else { "" },
                "participants": ["+14155551212"], "is_group": group, "destination_caller_id": "+15550000000"}}})
            .to_string()
        })
        .collect();
    let settings = Settings {
        account: "default".into(),
        dm_policy: DmPolicy::Allowlist,
        allow_from: Allowlist::parse(["+14155551212"]),
        group_policy: GroupPolicy::Open,
        group_allow_from: None,
        groups: Default::default(),
        context_visibility: ContextVisibility::All,
        mention: mention::compile(&["@?bot\\b".to_string()]),
        group_history_limit: 50,
        shared_sends: false,
    };
    let ctx = EnvelopeContext {
        account: "default".into(),
        agent_id: "main".into(),
        dm_scope: DmScope::default(),
        main_key: "main".into(),
    };
    let mut ours = Samples::new("parse+normalise+decide+json");
    // Not a competitor: the floor of merely parsing the lines, to show what the pipeline adds.
    let mut baseline = Samples::new("(floor) JSON parse only");
    for _ in 0..crate::rounds(5) {
        let mut policy = Policy::new(settings.clone());
        let started = Instant::now();
        let mut bytes = 0usize;
        for (i, line) in lines.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let message: Message = serde_json::from_value(value["params"]["message"].clone()).unwrap();
            let inbound = Inbound {
                message: &message,
                text: &message.text,
                body_text: &message.text,
                created_ms: Some(0),
                paired: &[],
            };
            if let Decision::Dispatch(_) = policy.decide(&inbound, i as u64) {
                bytes += serde_json::to_vec(&normalize(&message, &ctx)).unwrap().len();
            }
        }
        assert!(bytes > 0);
        ours.durations.push(per_message(started.elapsed(), messages));
        let started = Instant::now();
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            std::hint::black_box(value);
        }
        baseline.durations.push(per_message(started.elapsed(), messages));
    }
    let per_sec = 1000.0 / (ours.quantile_ms(0.5) / 1000.0);
    println!("pipeline: {per_sec:.0} messages/s on one core (median of rounds)");
    Comparison::new("pipeline, 1000 messages", ours, baseline)
}

/// The time of 1000 messages, so the table's ms columns stay readable.
fn per_message(total: Duration, messages: usize) -> Duration {
    total * 1000 / u32::try_from(messages).unwrap_or(u32::MAX)
}

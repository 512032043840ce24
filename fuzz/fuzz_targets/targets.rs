//! Fuzz target: the send-target grammar, allowlist parsing and matching, and handle normalisation on
//! arbitrary text; none may panic, and normalising a phone number or email twice changes nothing.
#![no_main]

use imsg_bridge::envelope::normalize_handle;
use imsg_bridge::outbound::parse;
use imsg_bridge::policy::{Allowlist, Who};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Lines become separate allowlist entries and the first line doubles as the sender, so one
    // input exercises a list and a lookup at once.
    let entries: Vec<&str> = text.lines().collect();
    let _ = parse(&text);
    for entry in &entries {
        let _ = parse(entry);
    }
    let normalized = normalize_handle(&text);
    let sender = normalize_handle(entries.first().copied().unwrap_or(""));
    let list = Allowlist::parse(&entries);
    let who = Who {
        sender_normalized: &sender,
        chat_id: text.len().try_into().ok(),
        chat_guid: entries.get(1).copied().unwrap_or(""),
        chat_identifier: entries.get(2).copied().unwrap_or(""),
    };
    let _ = list.matches(&who);
    let _ = list.single_handle();
    let _ = list.with(entries.iter().rev());
    // A plain handle (a phone number or an email) normalises to a fixed point.
    if normalized.starts_with('+') || (normalized.contains('@') && !normalized.starts_with("chat_")) {
        assert_eq!(
            normalize_handle(&normalized),
            normalized,
            "not idempotent for {text:?}"
        );
    }
});

//! Table tests of the decision pipeline, after the rules of docs/channel.md (gating, inbound
//! processing, self-chat dedupe, rate limiting).

use super::*;

fn settings() -> Settings {
    Settings {
        account: "default".into(),
        dm_policy: DmPolicy::Pairing,
        allow_from: Allowlist::parse(["+15550001111"]),
        group_policy: GroupPolicy::Open,
        group_allow_from: None,
        groups: BTreeMap::new(),
        context_visibility: ContextVisibility::All,
        mention: mention::compile(&["@?bot\\b".to_string()]),
        group_history_limit: 50,
        shared_sends: false,
    }
}

fn dm(sender: &str, text: &str) -> Message {
    Message {
        id: 100,
        guid: "G-100".into(),
        chat_id: 7,
        sender: sender.into(),
        text: text.into(),
        chat_identifier: sender.into(),
        chat_guid: format!("iMessage;-;{sender}"),
        created_at: "2026-11-24T12:00:00.000Z".into(),
        destination_caller_id: Some("+15559990000".into()),
        ..Message::default()
    }
}

fn group(sender: &str, text: &str, chat_id: i64) -> Message {
    Message {
        is_group: true,
        chat_id,
        chat_identifier: format!("chat{chat_id}"),
        chat_guid: format!("iMessage;+;chat{chat_id}"),
        ..dm(sender, text)
    }
}

fn decide_with(policy: &mut Policy, m: &Message, paired: &[String], now: u64) -> Decision {
    let inbound = Inbound {
        message: m,
        text: &m.text,
        body_text: &m.text,
        created_ms: Some(1_000),
        paired,
    };
    policy.decide(&inbound, now)
}

fn decide(s: Settings, m: &Message) -> Decision {
    decide_with(&mut Policy::new(s), m, &[], 0)
}

fn dropped(d: &Decision) -> Option<DropReason> {
    match d {
        Decision::Drop(r) => Some(*r),
        _ => None,
    }
}

fn dispatched(d: &Decision) -> &Dispatch {
    match d {
        Decision::Dispatch(x) => x,
        other => panic!("expected dispatch, got {other:?}"),
    }
}

#[test]
fn applies_the_dm_policies() {
    let stranger = dm("+15552223333", "hi");
    let owner = dm("+1 (555) 000-1111", "hi");
    assert!(
        matches!(decide(settings(), &stranger), Decision::Pairing { ref sender_id, ref reply_to }
        if sender_id == "+15552223333" && reply_to == "chat_id:7")
    );
    assert!(matches!(decide(settings(), &owner), Decision::Dispatch(_)));
    let paired = vec!["+15552223333".to_string()];
    assert!(matches!(
        decide_with(&mut Policy::new(settings()), &stranger, &paired, 0),
        Decision::Dispatch(_)
    ));
    let allowlist = Settings {
        dm_policy: DmPolicy::Allowlist,
        ..settings()
    };
    assert_eq!(
        dropped(&decide_with(&mut Policy::new(allowlist), &stranger, &paired, 0)),
        Some(DropReason::DmPolicyBlocked),
        "the store is ignored under allowlist"
    );
    let open = Settings {
        dm_policy: DmPolicy::Open,
        allow_from: Allowlist::parse(["*"]),
        ..settings()
    };
    let d = decide(open, &stranger);
    assert!(
        !dispatched(&d).command_authorized,
        "open mode authorises no commands by itself"
    );
    let disabled = Settings {
        dm_policy: DmPolicy::Disabled,
        ..settings()
    };
    assert_eq!(
        dropped(&decide(disabled, &owner)),
        Some(DropReason::DmPolicyDisabled)
    );
    let d = decide_with(
        &mut Policy::new(settings()),
        &dm("+15552223333", "/new"),
        &paired,
        0,
    );
    assert!(
        dispatched(&d).command_authorized,
        "a pairing-store sender is authorised"
    );
    assert_eq!(
        dropped(&decide(settings(), &dm("  ", "hi"))),
        Some(DropReason::MissingSender)
    );
}

#[test]
fn gates_groups_by_policy_registry_and_sender_lists() {
    let msg = group("+15550001111", "@bot hi", 42);
    let cases: Vec<(&str, Settings, Option<DropReason>)> = vec![
        ("open, no registry", settings(), None),
        (
            "disabled",
            Settings {
                group_policy: GroupPolicy::Disabled,
                ..settings()
            },
            Some(DropReason::GroupPolicyDisabled),
        ),
        (
            "allowlist with an empty groupAllowFrom",
            Settings {
                group_policy: GroupPolicy::Allowlist,
                group_allow_from: Some(Allowlist::default()),
                ..settings()
            },
            Some(DropReason::GroupAllowlistEmpty),
        ),
        (
            "allowlist, sender not listed",
            Settings {
                group_policy: GroupPolicy::Allowlist,
                group_allow_from: Some(Allowlist::parse(["+19999"])),
                ..settings()
            },
            Some(DropReason::NotInGroupAllowFrom),
        ),
        (
            "fix 4: allowlist with groupAllowFrom and no groups map",
            Settings {
                group_policy: GroupPolicy::Allowlist,
                group_allow_from: Some(Allowlist::parse(["+15550001111"])),
                ..settings()
            },
            None,
        ),
        (
            "allowlist falling back to allowFrom needs the registry",
            Settings {
                group_policy: GroupPolicy::Allowlist,
                ..settings()
            },
            Some(DropReason::GroupNotInAllowlist),
        ),
        (
            "groups without * block other chats",
            Settings {
                groups: [("41".to_string(), GroupConfig::default())].into(),
                ..settings()
            },
            Some(DropReason::GroupNotInAllowlist),
        ),
        (
            "groups with *",
            Settings {
                groups: [("*".to_string(), GroupConfig::default())].into(),
                ..settings()
            },
            None,
        ),
        (
            "chat_id in groupAllowFrom admits the chat",
            Settings {
                group_policy: GroupPolicy::Allowlist,
                group_allow_from: Some(Allowlist::parse(["chat_id:42"])),
                groups: [("*".to_string(), GroupConfig::default())].into(),
                ..settings()
            },
            None,
        ),
    ];
    for (what, s, expected) in cases {
        assert_eq!(dropped(&decide(s, &msg)), expected, "{what}");
    }
    // The pairing store never admits group senders.
    let s = Settings {
        group_policy: GroupPolicy::Allowlist,
        group_allow_from: Some(Allowlist::parse(["+19999"])),
        ..settings()
    };
    let paired = vec!["+15550001111".to_string()];
    assert_eq!(
        dropped(&decide_with(&mut Policy::new(s), &msg, &paired, 0)),
        Some(DropReason::NotInGroupAllowFrom)
    );
}

#[test]
fn a_configured_chat_counts_as_a_group_even_when_imsg_says_direct() {
    let s = Settings {
        groups: [(
            "7".to_string(),
            GroupConfig {
                require_mention: Some(false),
                ..GroupConfig::default()
            },
        )]
        .into(),
        ..settings()
    };
    let d = decide(s, &dm("+15550001111", "hello"));
    assert!(dispatched(&d).is_group);
}

#[test]
fn holds_unmentioned_group_messages_and_hands_them_over_with_the_next_mention() {
    let mut policy = Policy::new(settings());
    let first = group("+15550002222", "dinner?", 42);
    assert_eq!(
        dropped(&decide_with(&mut policy, &first, &[], 0)),
        Some(DropReason::NoMention)
    );
    let second = Message {
        id: 101,
        guid: "G-101".into(),
        ..group("+15550003333", "hey @Bot what time", 42)
    };
    let d = decide_with(&mut policy, &second, &[], 0);
    let x = dispatched(&d);
    assert!(x.was_mentioned && x.is_group);
    assert_eq!(x.history.len(), 1);
    assert_eq!(x.history[0].body, "dinner?");
    assert_eq!(x.history[0].sender, "+15550002222");
    let third = Message {
        id: 102,
        ..group("+15550003333", "@bot again", 42)
    };
    assert!(
        dispatched(&decide_with(&mut policy, &third, &[], 0))
            .history
            .is_empty(),
        "cleared after dispatch"
    );
    // No usable patterns: nothing can be gated.
    let s = Settings {
        mention: vec![],
        ..settings()
    };
    assert!(matches!(decide(s, &first), Decision::Dispatch(_)));
    // requireMention false for the chat.
    let s = Settings {
        groups: [(
            "*".to_string(),
            GroupConfig {
                require_mention: Some(false),
                ..GroupConfig::default()
            },
        )]
        .into(),
        ..settings()
    };
    assert!(matches!(decide(s, &first), Decision::Dispatch(_)));
}

#[test]
fn gates_control_commands_in_groups() {
    let stranger = group("+15550002222", "/reset", 42);
    assert_eq!(
        dropped(&decide(settings(), &stranger)),
        Some(DropReason::ControlCommandUnauthorized)
    );
    let owner = group("+15550001111", "/reset", 42);
    let d = decide(settings(), &owner);
    assert!(
        dispatched(&d).command_authorized && dispatched(&d).was_mentioned,
        "an authorised command bypasses mention gating"
    );
}

#[test]
fn keeps_or_drops_the_quote_by_context_visibility() {
    let quoted = |from: &str| Message {
        reply_to_text: Some("earlier".into()),
        reply_to_sender: Some(from.into()),
        ..group("+15550001111", "@bot yes", 42)
    };
    let listed = Settings {
        group_allow_from: Some(Allowlist::parse(["+15550001111"])),
        ..settings()
    };
    let cases = [
        (ContextVisibility::All, "+19998887777", true),
        (ContextVisibility::Allowlist, "+19998887777", false),
        (ContextVisibility::Allowlist, "+15550001111", true),
        (ContextVisibility::AllowlistQuote, "+19998887777", true),
    ];
    for (mode, from, keep) in cases {
        let s = Settings {
            context_visibility: mode,
            ..listed.clone()
        };
        assert_eq!(
            dispatched(&decide(s, &quoted(from))).keep_reply,
            keep,
            "{mode:?} {from}"
        );
    }
    let s = Settings {
        context_visibility: ContextVisibility::Allowlist,
        ..settings()
    };
    assert!(
        !dispatched(&decide(s, &dm("+15550001111", "x"))).keep_reply,
        "no quote, nothing to keep"
    );
}

#[test]
fn drops_our_own_rows_and_their_echoes() {
    let mut policy = Policy::new(settings());
    let scope = policy.echo_scope("imessage:+15550001111");
    policy
        .echo
        .remember(&scope, Some("sent by the agent"), Some("G-500"), 0);
    let echo_by_id = Message {
        guid: "G-500".into(),
        ..dm("+15550001111", "other text")
    };
    assert_eq!(
        dropped(&decide_with(&mut policy, &echo_by_id, &[], 1_000)),
        Some(DropReason::Echo)
    );
    let mut policy = Policy::new(settings());
    policy.echo.remember(&scope, Some("sent by the agent"), None, 0);
    let echo_by_text = Message {
        guid: String::new(),
        ..dm("+15550001111", "sent by the agent")
    };
    assert_eq!(
        dropped(&decide_with(&mut policy, &echo_by_text, &[], 1_000)),
        Some(DropReason::Echo)
    );
    assert!(
        matches!(
            decide_with(&mut policy, &echo_by_text, &[], 10_000),
            Decision::Dispatch(_)
        ),
        "text echoes expire after 4 s"
    );

    let mine = Message {
        is_from_me: true,
        ..dm("+15550001111", "hello")
    };
    assert_eq!(dropped(&decide(settings(), &mine)), Some(DropReason::FromMe));
    let reflected = dm("+15550001111", "ok <thinking>plan</thinking>");
    assert_eq!(
        dropped(&decide(settings(), &reflected)),
        Some(DropReason::Reflected)
    );
    assert!(matches!(
        decide(settings(), &dm("+15550001111", "use `<thinking>` tags")),
        Decision::Dispatch(_)
    ));
}

#[test]
fn handles_self_chat_rows() {
    let me = "+15559990000";
    let self_row = |from_me: bool, text: &str, dest: Option<&str>| Message {
        is_from_me: from_me,
        destination_caller_id: dest.map(str::to_string),
        ..dm(me, text)
    };
    let s = Settings {
        allow_from: Allowlist::parse([me]),
        ..settings()
    };
    // The user writing to themselves is processed.
    let mut policy = Policy::new(s.clone());
    assert!(matches!(
        decide_with(&mut policy, &self_row(true, "note to self", Some(me)), &[], 0),
        Decision::Dispatch(_)
    ));
    // The agent's reply appearing in the self-chat is dropped by the echo cache.
    let scope = policy.echo_scope(&format!("imessage:{me}"));
    policy.echo.remember(&scope, Some("agent reply"), Some("G-9"), 0);
    let echoed = Message {
        guid: "G-9".into(),
        ..self_row(true, "agent reply", Some(me))
    };
    assert_eq!(
        dropped(&decide_with(&mut policy, &echoed, &[], 500)),
        Some(DropReason::AgentEchoInSelfChat)
    );
    // An ambiguous from-me row is dropped, and its reflected copy too.
    let mut policy = Policy::new(s);
    assert_eq!(
        dropped(&decide_with(&mut policy, &self_row(true, "mirror", None), &[], 0)),
        Some(DropReason::FromMe)
    );
    assert_eq!(
        dropped(&decide_with(
            &mut policy,
            &self_row(false, "mirror", None),
            &[],
            100
        )),
        Some(DropReason::SelfChatEcho)
    );
    assert!(matches!(
        decide_with(&mut policy, &self_row(false, "different", None), &[], 100),
        Decision::Dispatch(_)
    ));
    // A normal DM row of ours stays dropped (destination differs from the sender).
    let mine = Message {
        is_from_me: true,
        chat_identifier: "+15550001111".into(),
        ..dm(me, "x")
    };
    assert_eq!(dropped(&decide(settings(), &mine)), Some(DropReason::FromMe));
}

#[test]
fn rate_limits_a_conversation_in_an_echo_loop() {
    let mut policy = Policy::new(settings());
    let mine = Message {
        is_from_me: true,
        ..dm("+15550001111", "loop")
    };
    for t in 0..5 {
        decide_with(&mut policy, &mine, &[], t * 100);
    }
    let normal = dm("+15550001111", "a real message");
    assert_eq!(
        dropped(&decide_with(&mut policy, &normal, &[], 1_000)),
        Some(DropReason::RateLimited)
    );
    assert!(
        matches!(
            decide_with(&mut policy, &normal, &[], 70_000),
            Decision::Dispatch(_)
        ),
        "the window passes"
    );
    let stranger = dm("+15552223333", "hi");
    for t in 0..6 {
        decide_with(
            &mut policy,
            &Message {
                is_from_me: true,
                ..stranger.clone()
            },
            &[],
            t,
        );
    }
    assert!(
        matches!(
            decide_with(&mut policy, &stranger, &[], 10),
            Decision::Pairing { .. }
        ),
        "pairing is never rate-limited"
    );
}

/// How imsg lets the echo cache recognise a send reported back: by the guid its `send` answered
/// with, or only by the text when an old imsg answered `{ok: true}`.
#[derive(Debug, Clone, Copy)]
enum Recognised {
    ByGuid,
    ByTextOnly,
}

#[test]
fn the_bots_own_recognised_replies_among_thirty_messages_never_trip_the_limiter() {
    let (friend, me) = ("+15550001111", "+15559990000");
    let conversations = [
        ("direct", "imessage:+15550001111", None),
        ("group", "chat_id:42", Some(42)),
    ];
    for (kind, to, group_id) in conversations {
        for how in [Recognised::ByGuid, Recognised::ByTextOnly] {
            let mut policy = Policy::new(settings());
            let scope = policy.echo_scope(to);
            let row = |from: &str, text: &str| match group_id {
                Some(id) => group(from, text, id),
                None => dm(from, text),
            };
            for n in 0..30_i64 {
                let t = u64::try_from(n).unwrap_or_default() * 2_000;
                let inbound = Message {
                    id: 1_000 + 2 * n,
                    guid: format!("IN-{n}"),
                    ..row(friend, &format!("@bot message {n}"))
                };
                let d = decide_with(&mut policy, &inbound, &[], t);
                assert!(matches!(d, Decision::Dispatch(_)), "{kind} {how:?} #{n}: {d:?}");
                let reply = format!("echo: message {n}");
                let sent_id = match how {
                    Recognised::ByGuid => format!("OUT-{n}"),
                    Recognised::ByTextOnly => "ok".to_string(),
                };
                policy
                    .echo
                    .remember(&scope, Some(&reply), Some(&sent_id), t + 300);
                let ours = Message {
                    is_from_me: true,
                    id: 1_001 + 2 * n,
                    guid: format!("OUT-{n}"),
                    ..row(if group_id.is_some() { me } else { friend }, &reply)
                };
                assert_eq!(
                    dropped(&decide_with(&mut policy, &ours, &[], t + 600)),
                    Some(DropReason::OwnSend),
                    "{kind} {how:?} #{n}"
                );
            }
        }
    }
}

/// One kind of row repeated five times in a conversation, and whether that silences it.
struct LoopCase {
    what: &'static str,
    /// What the bridge sent just before each row (text, id), if anything.
    sent: Option<(&'static str, Option<&'static str>)>,
    row: Message,
    /// How long after the send the row comes back.
    lag_ms: u64,
    reason: DropReason,
    trips: bool,
}

#[test]
fn loop_evidence_is_reflections_and_from_me_rows_we_did_not_send() {
    let friend = "+15550001111";
    let from_me = |text: &str, guid: &str| Message {
        is_from_me: true,
        guid: guid.into(),
        ..dm(friend, text)
    };
    let inbound = |text: &str, guid: &str| Message {
        guid: guid.into(),
        ..dm(friend, text)
    };
    let cases = [
        LoopCase {
            what: "a from-me row we did not send",
            sent: None,
            row: from_me("typed on the phone", "PHONE-1"),
            lag_ms: 500,
            reason: DropReason::FromMe,
            trips: true,
        },
        LoopCase {
            what: "a from-me row with our words but another guid",
            sent: Some(("echo: hi", Some("OUT-1"))),
            row: from_me("echo: hi", "PHONE-1"),
            lag_ms: 500,
            reason: DropReason::FromMe,
            trips: true,
        },
        LoopCase {
            what: "a from-me row matching only a text the echo cache forgot (4 s)",
            sent: Some(("echo: hi", None)),
            row: from_me("echo: hi", "ROW-1"),
            lag_ms: 4_500,
            reason: DropReason::FromMe,
            trips: true,
        },
        LoopCase {
            what: "our send reflected back as inbound, by guid",
            sent: Some(("echo: hi", Some("OUT-1"))),
            row: inbound("echo: hi", "OUT-1"),
            lag_ms: 500,
            reason: DropReason::Echo,
            trips: true,
        },
        LoopCase {
            what: "our send reflected back as inbound, by text",
            sent: Some(("echo: hi", None)),
            row: inbound("echo: hi", ""),
            lag_ms: 500,
            reason: DropReason::Echo,
            trips: true,
        },
        LoopCase {
            what: "assistant scaffolding reflected back",
            sent: None,
            row: inbound("ok <thinking>plan</thinking>", "IN-1"),
            lag_ms: 500,
            reason: DropReason::Reflected,
            trips: true,
        },
        LoopCase {
            what: "our own send reported back as a from-me row",
            sent: Some(("echo: hi", Some("OUT-1"))),
            row: from_me("echo: hi", "OUT-1"),
            lag_ms: 500,
            reason: DropReason::OwnSend,
            trips: false,
        },
        LoopCase {
            what: "our own send in a thread imsg gives no destination",
            sent: Some(("echo: hi", Some("OUT-1"))),
            row: Message {
                destination_caller_id: None,
                ..from_me("echo: hi", "OUT-1")
            },
            lag_ms: 500,
            reason: DropReason::OwnSend,
            trips: false,
        },
    ];
    for case in cases {
        let mut policy = Policy::new(settings());
        let scope = policy.echo_scope(&format!("imessage:{friend}"));
        let mut t = 0;
        for _ in 0..5 {
            if let Some((text, id)) = case.sent {
                policy.echo.remember(&scope, Some(text), id, t);
            }
            t += case.lag_ms;
            let d = decide_with(&mut policy, &case.row, &[], t);
            assert_eq!(dropped(&d), Some(case.reason), "{}", case.what);
            t += 100;
        }
        let next = decide_with(&mut policy, &dm(friend, "a real message"), &[], t);
        let limited = dropped(&next) == Some(DropReason::RateLimited);
        assert_eq!(limited, case.trips, "{}: {next:?}", case.what);
    }
}

#[test]
fn with_shared_sends_another_bridges_replies_are_no_loop_evidence_but_reflections_still_are() {
    // Two bridges on one account (the nats sink): each sees the other's replies as from-me rows it did
    // not send. Counting them would silence every busy conversation on both bridges.
    let friend = "+15550001111";
    let shared = Settings {
        shared_sends: true,
        ..settings()
    };
    let mut policy = Policy::new(shared.clone());
    for n in 0..10_u64 {
        let other_bridges_reply = Message {
            is_from_me: true,
            guid: format!("OTHER-{n}"),
            ..dm(friend, &format!("echo: message {n}"))
        };
        let d = decide_with(&mut policy, &other_bridges_reply, &[], n * 100);
        assert_eq!(
            dropped(&d),
            Some(DropReason::FromMe),
            "#{n}: still never dispatched"
        );
    }
    let next = decide_with(&mut policy, &dm(friend, "a real message"), &[], 2_000);
    assert!(matches!(next, Decision::Dispatch(_)), "{next:?}");
    let mut policy = Policy::new(shared);
    for n in 0..5_u64 {
        let reflected = dm(friend, "ok <thinking>plan</thinking>");
        assert_eq!(
            dropped(&decide_with(&mut policy, &reflected, &[], n * 100)),
            Some(DropReason::Reflected)
        );
    }
    let next = decide_with(&mut policy, &dm(friend, "a real message"), &[], 1_000);
    assert_eq!(
        dropped(&next),
        Some(DropReason::RateLimited),
        "reflections still trip it"
    );
}

#[test]
fn a_send_addressed_to_a_direct_chat_by_its_chat_id_is_recognised_as_ours() {
    // Pairing codes and API requests go to `chat_id:<id>` even in a direct chat.
    let mut policy = Policy::new(settings());
    let scope = policy.echo_scope("chat_id:7");
    policy
        .echo
        .remember(&scope, Some("sent through the API"), Some("OUT-1"), 0);
    let ours = Message {
        is_from_me: true,
        guid: "OUT-1".into(),
        ..dm("+15550001111", "sent through the API")
    };
    assert_eq!(
        dropped(&decide_with(&mut policy, &ours, &[], 500)),
        Some(DropReason::OwnSend)
    );
    let reflected = Message {
        is_from_me: false,
        ..ours.clone()
    };
    assert_eq!(
        dropped(&decide_with(&mut policy, &reflected, &[], 600)),
        Some(DropReason::Echo)
    );
    let other_chat = Message { chat_id: 8, ..ours };
    assert_eq!(
        dropped(&decide_with(&mut policy, &other_chat, &[], 700)),
        Some(DropReason::FromMe),
        "another chat's row is not ours"
    );
}

//! Normalisation table tests.

use super::*;

fn ctx(scope: DmScope) -> EnvelopeContext {
    EnvelopeContext {
        account: "default".into(),
        agent_id: "main".into(),
        dm_scope: scope,
        main_key: "main".into(),
    }
}

fn group_message() -> Message {
    Message {
        id: 1979,
        chat_id: 42,
        guid: "8DF1B3D7".into(),
        sender: "+14155551212".into(),
        text: "@bot see attached".into(),
        created_at: "2026-05-16T15:24:36.123Z".into(),
        chat_identifier: "chat1234".into(),
        chat_guid: "iMessage;+;chat1234".into(),
        chat_name: "Family".into(),
        participants: vec!["+14155551212".into()],
        is_group: true,
        ..Message::default()
    }
}

#[test]
fn normalises_a_group_message_like_the_design_example() {
    let env = normalize(&group_message(), &ctx(DmScope::Main));
    assert_eq!(env.id, "imessage:default:8DF1B3D7");
    assert_eq!(env.session_key, "agent:main:imessage:group:42");
    assert_eq!(env.chat_type, ChatType::Group);
    assert_eq!(env.to, "chat_id:42");
    assert_eq!(
        env.body,
        "[iMessage Family id:42 Sat 2026-05-16 15:24 UTC] +14155551212: @bot see attached"
    );
    assert_eq!(env.timestamp, "2026-05-16T15:24:36.123Z");
    assert_eq!(env.rowid, 1979);
}

#[test]
fn labels_a_direct_message_by_its_normalised_sender() {
    let msg = Message {
        is_group: false,
        chat_name: String::new(),
        sender: "Jane@Example.com".into(),
        text: "hi".into(),
        ..group_message()
    };
    let env = normalize(&msg, &ctx(DmScope::PerChannelPeer));
    assert_eq!(env.to, "imessage:Jane@Example.com");
    assert_eq!(env.sender.normalized, "jane@example.com");
    assert_eq!(env.session_key, "agent:main:imessage:direct:jane@example.com");
    assert_eq!(
        env.body,
        "[iMessage jane@example.com id:Jane@Example.com Sat 2026-05-16 15:24 UTC] hi"
    );
}

#[test]
fn builds_session_keys_for_every_dm_scope() {
    let cases = [
        (DmScope::Main, "agent:main:main"),
        (DmScope::PerPeer, "agent:main:direct:+1555"),
        (DmScope::PerChannelPeer, "agent:main:imessage:direct:+1555"),
        (
            DmScope::PerAccountChannelPeer,
            "agent:main:imessage:default:direct:+1555",
        ),
    ];
    for (scope, want) in cases {
        assert_eq!(session_key(&ctx(scope), ChatType::Direct, 7, "+1555"), want);
    }
}

#[test]
fn strips_a_length_prefix_from_text_and_quoted_text() {
    let msg = Message {
        text: "\n\u{2}hi".into(),
        reply_to_text: Some("\n\u{3}old".into()),
        reply_to_guid: Some("P".into()),
        ..group_message()
    };
    let env = normalize(&msg, &ctx(DmScope::Main));
    assert_eq!(env.text, "hi");
    assert_eq!(env.reply_to.unwrap().body.as_deref(), Some("old"));
}

#[test]
fn sanitises_the_group_name_in_the_header_and_falls_back_to_group() {
    let mut chat = ChatInfo {
        chat_id: 3,
        guid: String::new(),
        identifier: String::new(),
        name: "A [b]\nc".into(),
        participants: vec![],
    };
    let sender = Sender {
        handle: "+1".into(),
        normalized: "+1".into(),
    };
    assert_eq!(
        format_body(ChatType::Group, &chat, &sender, None, "x"),
        "[iMessage A (b) c id:3] +1: x"
    );
    chat.name = String::new();
    assert_eq!(
        format_body(ChatType::Group, &chat, &sender, None, "x"),
        "[iMessage Group id:3] +1: x"
    );
}

#[test]
fn uses_the_rowid_when_a_message_has_no_guid() {
    let msg = Message {
        guid: String::new(),
        ..group_message()
    };
    assert_eq!(envelope_id("bot", &msg), "imessage:bot:rowid:1979");
}

#[test]
fn ids_are_header_safe_and_ordinary_guids_are_unchanged() {
    let cases = [
        (
            "8DF1B3D7-2A4C-4E0B-9D3F-1C2B3A4D5E6F",
            "imessage:default:8DF1B3D7-2A4C-4E0B-9D3F-1C2B3A4D5E6F",
        ),
        (
            "p:0/8DF1B3D7-2A4C-4E0B-9D3F-1C2B3A4D5E6F",
            "imessage:default:p:0/8DF1B3D7-2A4C-4E0B-9D3F-1C2B3A4D5E6F",
        ),
        (
            "a!~\"#&'()*+,;=?@[]^_`{|}",
            "imessage:default:a!~\"#&'()*+,;=?@[]^_`{|}",
        ),
        ("AB\r\nX-Injected: 1", "imessage:default:AB%0D%0AX-Injected:%201"),
        ("tab\there", "imessage:default:tab%09here"),
        ("nul\0del\x7f", "imessage:default:nul%00del%7F"),
        ("100%", "imessage:default:100%25"),
        ("%0D", "imessage:default:%250D"),
        ("é", "imessage:default:%C3%A9"),
        ("\u{202e}evil", "imessage:default:%E2%80%AEevil"),
        ("\u{85}", "imessage:default:%C2%85"),
    ];
    for (guid, want) in cases {
        let msg = Message {
            guid: guid.into(),
            ..group_message()
        };
        let id = envelope_id("default", &msg);
        assert_eq!(id, want, "{guid:?}");
        assert!(
            reqwest::header::HeaderValue::from_str(&id).is_ok(),
            "{id:?} is a valid header value"
        );
    }
}

#[test]
fn distinct_guids_keep_distinct_ids() {
    // `%` is encoded too, so a guid that looks like an escape cannot collide with the one it spells.
    let id = |guid: &str| {
        let msg = Message {
            guid: guid.into(),
            ..group_message()
        };
        envelope_id("default", &msg)
    };
    assert_ne!(id("A\nB"), id("A%0AB"));
    assert_ne!(id("A B"), id("A%20B"));
}

//! Unit tests of the pairing store, its lock and its texts: every rule of docs/channel.md with a fixed
//! clock and scripted randomness.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use super::lock::{FileLock, lock_path};
use super::*;

fn t(minutes: i64) -> DateTime<Utc> {
    let base = DateTime::parse_from_rfc3339("2026-05-16T15:00:00.000Z")
        .unwrap()
        .with_timezone(&Utc);
    base + TimeDelta::minutes(minutes)
}

/// Randomness that spells out `codes` one after another, then repeats them.
fn spelling(codes: &[&str]) -> impl FnMut() -> u32 + Send + 'static {
    let indices: Vec<u32> = codes
        .iter()
        .flat_map(|code| code.bytes())
        .map(|b| CODE_ALPHABET.iter().position(|a| *a == b).unwrap() as u32)
        .collect();
    let mut next = 0;
    move || {
        let value = indices[next % indices.len()];
        next += 1;
        value
    }
}

fn store_in(dir: &Path, codes: &[&str]) -> PairingStore {
    PairingStore::with_random(dir, spelling(codes))
}

fn meta(sender: &str) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("sender".into(), json!(sender));
    meta
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn a_new_sender_gets_a_fresh_code_and_a_reply() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    let got = store
        .upsert_request("default", "+15551230001", meta("+15551230001"), t(0))
        .unwrap();
    assert_eq!(
        got,
        Upsert {
            code: "ABCD2345".into(),
            created: true
        }
    );
}

#[test]
fn codes_from_the_system_random_source_are_eight_characters_of_the_alphabet() {
    let dir = tempfile::tempdir().unwrap();
    let store = PairingStore::new(dir.path());
    for (i, account) in ["a", "b", "c", "d"].iter().enumerate() {
        for n in 0..3 {
            let code = store
                .upsert_request(account, &format!("+1555000{i}{n}"), Map::new(), t(0))
                .unwrap()
                .code;
            assert_eq!(code.len(), CODE_LENGTH, "{code}");
            assert!(code.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{code}");
            assert!(!code.contains(['0', 'O', '1', 'I']), "{code}");
        }
    }
    let codes: std::collections::HashSet<_> = store
        .list(None, t(0))
        .unwrap()
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes.len(), 12);
}

#[test]
fn the_same_sender_within_the_hour_keeps_its_code_and_gets_no_second_reply() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345", "ZZZZ9999"]);
    store
        .upsert_request("default", "+15551230001", meta("a"), t(0))
        .unwrap();
    let again = store
        .upsert_request("default", "+15551230001", meta("b"), t(30))
        .unwrap();
    assert_eq!(
        again,
        Upsert {
            code: "ABCD2345".into(),
            created: false
        }
    );
    let requests = store.list(None, t(30)).unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].created_at, t(0));
    assert_eq!(requests[0].last_seen_at, t(30));
    assert_eq!(requests[0].meta["sender"], json!("b"));
}

#[test]
fn a_request_expires_an_hour_after_creation_even_when_seen_since() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345", "WXYZ6789"]);
    store
        .upsert_request("default", "+15551230001", Map::new(), t(0))
        .unwrap();
    store
        .upsert_request("default", "+15551230001", Map::new(), t(59))
        .unwrap();
    assert_eq!(
        store.list(None, t(60)).unwrap().len(),
        1,
        "exactly one hour is not yet expired"
    );
    assert!(store.list(None, t(61)).unwrap().is_empty());
    let requests = read(&store.pairing_path());
    assert_eq!(requests["requests"], json!([]), "list persists the prune");
    let fresh = store
        .upsert_request("default", "+15551230001", Map::new(), t(62))
        .unwrap();
    assert_eq!(
        fresh,
        Upsert {
            code: "WXYZ6789".into(),
            created: true
        }
    );
}

#[test]
fn unparsable_requests_are_pruned_and_the_prune_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    let live = json!({"id": "+1555", "code": "KEEPME22", "createdAt": "2026-05-16T15:00:00.000Z",
        "lastSeenAt": "2026-05-16T15:00:00.000Z", "meta": {"accountId": "default"}});
    write(
        &store.pairing_path(),
        &json!({"version": 1, "requests": [
            {"id": "+1666", "code": "BADTIME2", "createdAt": "yesterday", "lastSeenAt": "yesterday"},
            {"id": "+1777", "code": "NOTIME22"},
            "not an object",
            live,
        ]}),
    );
    let requests = store.list(None, t(1)).unwrap();
    assert_eq!(
        requests.iter().map(|r| r.code.as_str()).collect::<Vec<_>>(),
        ["KEEPME22"]
    );
    assert_eq!(read(&store.pairing_path())["requests"], json!([live]));
}

#[test]
fn a_fourth_stranger_gets_no_code_and_no_reply_while_three_are_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["AAAA2222", "BBBB3333", "CCCC4444", "DDDD5555"]);
    for n in 1..=3 {
        let got = store
            .upsert_request("default", &format!("+1555000000{n}"), Map::new(), t(n))
            .unwrap();
        assert!(got.created);
    }
    let fourth = store
        .upsert_request("default", "+15550000004", Map::new(), t(5))
        .unwrap();
    assert_eq!(
        fourth,
        Upsert {
            code: String::new(),
            created: false
        }
    );
    assert_eq!(store.list(Some("default"), t(5)).unwrap().len(), 3);
    // The limit is per account: another account still pairs.
    let other = store
        .upsert_request("work", "+15550000004", Map::new(), t(5))
        .unwrap();
    assert_eq!(
        other,
        Upsert {
            code: "DDDD5555".into(),
            created: true
        }
    );
    // A pending sender writing again is still recognised at the limit.
    let again = store
        .upsert_request("default", "+15550000002", Map::new(), t(6))
        .unwrap();
    assert_eq!(again.code, "BBBB3333");
}

#[test]
fn excess_requests_are_evicted_least_recently_seen_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ZZZZ9999"]);
    let request = |id: &str, code: &str, seen: i64| {
        json!({"id": id, "code": code, "createdAt": "2026-05-16T15:00:00.000Z",
            "lastSeenAt": format!("2026-05-16T15:{seen:02}:00.000Z"), "meta": {"accountId": "default"}})
    };
    write(
        &store.pairing_path(),
        &json!({"version": 1, "requests": [
            request("+1", "AAAA2222", 5), request("+2", "BBBB3333", 1), request("+3", "CCCC4444", 9),
            request("+4", "DDDD5555", 2), request("+5", "EEEE6666", 7),
        ]}),
    );
    let mut kept: Vec<String> = store
        .list(None, t(10))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    kept.sort();
    assert_eq!(kept, ["+1", "+3", "+5"]);
    assert_eq!(
        read(&store.pairing_path())["requests"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn a_new_code_never_repeats_a_pending_one() {
    let dir = tempfile::tempdir().unwrap();
    // The second draw collides with the first sender's code and is drawn again.
    let store = store_in(dir.path(), &["ABCD2345", "ABCD2345", "EFGH6789"]);
    store.upsert_request("default", "+1", Map::new(), t(0)).unwrap();
    let second = store.upsert_request("default", "+2", Map::new(), t(0)).unwrap();
    assert_eq!(second.code, "EFGH6789");
}

#[test]
fn code_generation_gives_up_after_five_hundred_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    store.upsert_request("default", "+1", Map::new(), t(0)).unwrap();
    let err = store
        .upsert_request("default", "+2", Map::new(), t(0))
        .unwrap_err();
    assert!(matches!(err, PairingError::NoUniqueCode), "{err}");
}

#[test]
fn approve_matches_the_code_in_any_case_and_admits_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    store
        .upsert_request("default", "+15551230001", Map::new(), t(0))
        .unwrap();
    let approved = store.approve(" abcd2345 ", None, t(1)).unwrap();
    assert_eq!(
        approved,
        Approved {
            id: "+15551230001".into(),
            account: "default".into()
        }
    );
    assert!(store.list(None, t(1)).unwrap().is_empty());
    assert_eq!(store.allowed("default"), ["+15551230001"]);
    assert_eq!(
        read(&store.allow_path("default")),
        json!({"version": 1, "allowFrom": ["+15551230001"]})
    );
}

#[test]
fn approving_a_sender_already_admitted_adds_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345", "EFGH6789"]);
    store.upsert_request("default", "+1", Map::new(), t(0)).unwrap();
    store.approve("ABCD2345", None, t(0)).unwrap();
    store.upsert_request("default", "+1", Map::new(), t(1)).unwrap();
    store.approve("EFGH6789", None, t(1)).unwrap();
    assert_eq!(read(&store.allow_path("default"))["allowFrom"], json!(["+1"]));
}

#[test]
fn an_unknown_code_fails_with_the_reference_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    let err = store.approve("NOPE2345", None, t(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "No pending pairing request found for code: NOPE2345"
    );
    store.upsert_request("default", "+1", Map::new(), t(0)).unwrap();
    let err = store.approve("nope2345", None, t(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "No pending pairing request found for code: nope2345"
    );
    // An expired code is unknown too.
    let err = store.approve("ABCD2345", None, t(61)).unwrap_err();
    assert!(matches!(err, PairingError::UnknownCode(_)), "{err}");
}

#[test]
fn approve_with_an_account_only_matches_that_accounts_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    store.upsert_request("Work", "+1", Map::new(), t(0)).unwrap();
    let err = store.approve("ABCD2345", Some("default"), t(0)).unwrap_err();
    assert!(matches!(err, PairingError::UnknownCode(_)), "{err}");
    let approved = store.approve("ABCD2345", Some("WORK"), t(0)).unwrap();
    assert_eq!(approved.account, "work");
    assert_eq!(store.allowed("work"), ["+1"]);
    assert!(store.allowed("default").is_empty());
    assert!(
        dir.path()
            .join("credentials/imessage-work-allowFrom.json")
            .exists()
    );
}

#[test]
fn approve_without_an_account_admits_to_the_requests_own_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    store.upsert_request("work", "+1", Map::new(), t(0)).unwrap();
    assert_eq!(store.approve("ABCD2345", None, t(0)).unwrap().account, "work");
    assert_eq!(store.allowed("work"), ["+1"]);
}

#[test]
fn the_default_account_also_reads_the_legacy_allow_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    write(
        &store.legacy_allow_path(),
        &json!({"version": 1, "allowFrom": ["+1legacy", " +1scoped ", "", "*", 15551234567_u64]}),
    );
    write(
        &store.allow_path("default"),
        &json!({"version": 1, "allowFrom": ["+1scoped"]}),
    );
    assert_eq!(store.allowed("default"), ["+1scoped", "+1legacy", "15551234567"]);
    assert!(
        store.allowed("work").is_empty(),
        "other accounts stay isolated from the legacy file"
    );
}

#[test]
fn a_wildcard_in_an_allow_from_file_admits_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    write(
        &store.allow_path("work"),
        &json!({"version": 1, "allowFrom": ["*"]}),
    );
    assert!(store.allowed("work").is_empty());
}

#[test]
fn approvals_by_another_process_count_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = store_in(dir.path(), &["ABCD2345"]);
    let cli = store_in(dir.path(), &["ZZZZ9999"]);
    running.upsert_request("default", "+1", Map::new(), t(0)).unwrap();
    assert!(running.allowed("default").is_empty());
    cli.approve("ABCD2345", None, t(1)).unwrap();
    assert_eq!(running.allowed("default"), ["+1"]);
}

#[test]
fn a_corrupt_allow_from_file_is_reported_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    let path = store.allow_path("default");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"version\":1,\"allowFrom\":[\"+1\"").unwrap();
    store.upsert_request("default", "+2", Map::new(), t(0)).unwrap();
    let err = store.approve("ABCD2345", None, t(0)).unwrap_err();
    assert!(
        err.to_string()
            .contains("imessage-default-allowFrom.json is corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{\"version\":1,\"allowFrom\":[\"+1\""
    );
    assert_eq!(
        store.list(None, t(0)).unwrap().len(),
        1,
        "the request stays for a later approval"
    );
    assert!(store.allowed("default").is_empty());
    assert!(store.try_allowed("default").is_err());
}

#[test]
fn a_store_file_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    write(&store.pairing_path(), &json!({"version": 2, "requests": []}));
    let err = store
        .upsert_request("default", "+1", Map::new(), t(0))
        .unwrap_err();
    assert!(err.to_string().contains("unsupported version 2"), "{err}");
}

#[test]
fn the_files_have_openclaws_version_one_shape() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345", "EFGH6789"]);
    let mut sender = meta(" +15551230001 ");
    sender.insert("chatId".into(), json!(42));
    sender.insert("empty".into(), json!("  "));
    sender.insert("gone".into(), Value::Null);
    store
        .upsert_request("default", "+15551230001", sender, t(0))
        .unwrap();
    store
        .upsert_request("work", "jane@example.com", Map::new(), t(1))
        .unwrap();
    let text = std::fs::read_to_string(store.pairing_path()).unwrap();
    // Pretty-printed with two spaces and a final newline, as JSON.stringify(v, null, 2) + "\n";
    // fields in OpenClaw's order (meta keys sorted).
    let expected = r#"{
  "version": 1,
  "requests": [
    {
      "id": "+15551230001",
      "code": "ABCD2345",
      "createdAt": "2026-05-16T15:00:00.000Z",
      "lastSeenAt": "2026-05-16T15:00:00.000Z",
      "meta": {
        "accountId": "default",
        "chatId": "42",
        "sender": "+15551230001"
      }
    },
    {
      "id": "jane@example.com",
      "code": "EFGH6789",
      "createdAt": "2026-05-16T15:01:00.000Z",
      "lastSeenAt": "2026-05-16T15:01:00.000Z",
      "meta": {
        "accountId": "work"
      }
    }
  ]
}
"#;
    assert_eq!(text, expected);
    store.approve("EFGH6789", None, t(2)).unwrap();
    let allow = std::fs::read_to_string(store.allow_path("work")).unwrap();
    assert_eq!(
        allow,
        "{\n  \"version\": 1,\n  \"allowFrom\": [\n    \"jane@example.com\"\n  ]\n}\n"
    );
    for path in [store.pairing_path(), store.allow_path("work")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let mode = std::fs::metadata(dir.path().join("credentials"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn requests_written_by_openclaw_are_read_and_their_unknown_fields_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ZZZZ9999"]);
    let created_ms = t(0).timestamp_millis();
    write(
        &store.pairing_path(),
        &json!({"version": 1, "requests": [
            {"id": "+1", "code": "abcd2345", "createdAt": "2026-05-16T17:00:00+02:00",
             "lastSeenAt": "2026-05-16T15:00:00Z", "meta": {"accountId": "default"}, "note": "kept"},
            {"id": "+2", "code": "EFGH6789", "createdAt": created_ms, "lastSeenAt": created_ms}
        ]}),
    );
    let requests = store.list(None, t(1)).unwrap();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.created_at == t(0)));
    assert_eq!(
        requests[1].account(),
        "default",
        "no accountId means the default account"
    );
    store.upsert_request("default", "+1", Map::new(), t(2)).unwrap();
    let file = read(&store.pairing_path());
    assert_eq!(file["requests"][0]["note"], json!("kept"));
    assert_eq!(
        file["requests"][0]["createdAt"],
        json!("2026-05-16T15:00:00.000Z")
    );
    assert_eq!(
        file["requests"][0]["lastSeenAt"],
        json!("2026-05-16T15:02:00.000Z")
    );
    assert_eq!(store.approve("ABCD2345", None, t(2)).unwrap().id, "+1");
}

#[test]
fn list_sorts_by_creation_and_filters_by_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["AAAA2222", "BBBB3333", "CCCC4444"]);
    write(
        &store.pairing_path(),
        &json!({"version": 1, "requests": [
            {"id": "+3", "code": "CCCC4444", "createdAt": "2026-05-16T15:03:00.000Z",
             "lastSeenAt": "2026-05-16T15:03:00.000Z", "meta": {"accountId": "default"}},
            {"id": "+1", "code": "AAAA2222", "createdAt": "2026-05-16T15:01:00.000Z",
             "lastSeenAt": "2026-05-16T15:09:00.000Z", "meta": {"accountId": "default"}},
            {"id": "+2", "code": "BBBB3333", "createdAt": "2026-05-16T15:02:00.000Z",
             "lastSeenAt": "2026-05-16T15:02:00.000Z", "meta": {"accountId": "work"}},
        ]}),
    );
    let ids = |account| -> Vec<String> {
        store
            .list(account, t(10))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(ids(None), ["+1", "+2", "+3"]);
    assert_eq!(ids(Some("default")), ["+1", "+3"]);
    assert_eq!(ids(Some("work")), ["+2"]);
    assert!(ids(Some("other")).is_empty());
}

#[test]
fn listing_without_a_store_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    assert!(store.list(None, t(0)).unwrap().is_empty());
    assert!(!dir.path().join("credentials").exists());
}

#[test]
fn account_ids_are_lowercased_and_cannot_leave_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    let credentials = dir.path().join("credentials");
    assert_eq!(
        store.allow_path("Work"),
        credentials.join("imessage-work-allowFrom.json")
    );
    assert_eq!(
        store.allow_path("../x/y"),
        credentials.join("imessage-__x_y-allowFrom.json")
    );
    assert_eq!(
        store.allow_path("  "),
        credentials.join("imessage-default-allowFrom.json")
    );
}

#[test]
fn a_blank_sender_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), &["ABCD2345"]);
    let err = store
        .upsert_request("default", "  ", Map::new(), t(0))
        .unwrap_err();
    assert!(matches!(err, PairingError::EmptySender), "{err}");
}

#[test]
fn a_held_lock_makes_another_taker_wait_and_then_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("imessage-pairing.json");
    let held = FileLock::acquire(&target).unwrap();
    let started = std::time::Instant::now();
    let err = FileLock::acquire_within(&target, Duration::from_millis(200)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(err, PairingError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("imessage-pairing.json.lock"), "{err}");
    drop(held);
    assert!(!lock_path(&target).exists(), "released on drop");
    FileLock::acquire_within(&target, Duration::from_millis(200)).unwrap();
}

#[test]
fn the_lock_file_carries_the_pid_payload_openclaw_checks() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("imessage-pairing.json");
    let _held = FileLock::acquire(&target).unwrap();
    let payload = read(&lock_path(&target));
    assert_eq!(payload["pid"], json!(std::process::id()));
    assert!(payload["createdAt"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn two_threads_under_the_lock_never_lose_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("counter.json");
    std::fs::write(&target, b"0").unwrap();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..25 {
                    let _lock = FileLock::acquire(&target).unwrap();
                    let n: u32 = std::fs::read_to_string(&target).unwrap().parse().unwrap();
                    // Widen the race window: without the lock the other thread would read `n` too.
                    std::thread::sleep(Duration::from_millis(1));
                    crate::util::atomic_write(&target, (n + 1).to_string().as_bytes()).unwrap();
                }
            });
        }
    });
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "50");
    assert!(!lock_path(&target).exists());
}

#[test]
fn two_threads_pairing_at_once_keep_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = PairingStore::new(dir.path());
    std::thread::scope(|scope| {
        for account in ["a", "b"] {
            let store = &store;
            scope.spawn(move || {
                for n in 0..3 {
                    let got = store
                        .upsert_request(account, &format!("+1555{n}"), Map::new(), t(n))
                        .unwrap();
                    assert!(got.created);
                }
            });
        }
    });
    assert_eq!(store.list(Some("a"), t(5)).unwrap().len(), 3);
    assert_eq!(store.list(Some("b"), t(5)).unwrap().len(), 3);
}

#[test]
fn a_lock_older_than_thirty_seconds_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("imessage-pairing.json");
    let lock = lock_path(&target);
    std::fs::write(
        &lock,
        b"{\"pid\": 999999, \"createdAt\": \"2026-01-01T00:00:00.000Z\"}",
    )
    .unwrap();
    age(&lock, Duration::from_secs(20));
    let err = FileLock::acquire_within(&target, Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(err, PairingError::Locked { .. }),
        "a young lock is respected: {err}"
    );
    age(&lock, Duration::from_secs(31));
    let held = FileLock::acquire_within(&target, Duration::from_millis(50)).unwrap();
    assert_eq!(read(&lock)["pid"], json!(std::process::id()));
    drop(held);
    assert!(!lock.exists());
}

#[test]
fn a_stale_lock_directory_of_older_openclaw_versions_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("imessage-pairing.json");
    let lock = lock_path(&target);
    std::fs::create_dir(&lock).unwrap();
    age(&lock, Duration::from_secs(60));
    FileLock::acquire_within(&target, Duration::from_millis(50)).unwrap();
}

#[test]
fn the_reply_text_mirrors_the_reference_layout() {
    let text = reply_text("+15551230001", "ABCD2345");
    let expected = "imsg-bridge: access not configured.\n\
        \n\
        Your iMessage sender id: +15551230001\n\
        Pairing code:\n\
        ```\n\
        ABCD2345\n\
        ```\n\
        \n\
        Ask the bot owner to approve with:\n\
        imsg-bridge pairing approve ABCD2345\n\
        ```\n\
        imsg-bridge pairing approve ABCD2345\n\
        ```";
    assert_eq!(text, expected);
    assert_eq!(
        approved_text(),
        "✅ imsg-bridge access approved. Send a message to start chatting."
    );
}

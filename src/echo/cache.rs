//! The sent-message echo cache (docs/channel.md): what the bridge just sent, by text and by message id,
//! so the copy of it that `imsg` reports back as a new message is dropped instead of dispatched.

use std::collections::HashMap;
use std::hash::Hash;

/// How long a sent text is recognised. The echo was measured to arrive after ~2.2 s; a longer window
/// would start dropping a user's message that happens to repeat what the bot just said.
pub const TEXT_TTL_MS: u64 = 4_000;
/// How long a sent message id is recognised. Ids are exact, so a long window costs no false drops.
pub const ID_TTL_MS: u64 = 60_000;
/// Entries per cache (texts, ids) beyond which the oldest are evicted, to bound memory under a burst.
pub const MAX_ENTRIES: usize = 4096;
/// Expired entries are swept at most this often; lookups check the TTL themselves.
const CLEANUP_INTERVAL_MS: u64 = 1_000;

/// When an entry was remembered. `seq` orders entries remembered in the same millisecond, so eviction
/// is first-in first-out even under a coarse clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp {
    at_ms: u64,
    seq: u64,
}

/// A remembered text.
#[derive(Debug, Clone, Copy)]
struct TextEntry {
    stamp: Stamp,
    /// The latest remember of this text came without a usable id, so an inbound message that has an
    /// id (which will not match) may still be recognised by its text.
    text_only: bool,
}

/// Sent texts and message ids per scope (`<accountId>:<target>`, e.g. `default:chat_id:42` or
/// `default:imessage:+15555550123`). Time comes in as epoch or monotonic milliseconds; the cache never
/// reads a clock.
#[derive(Debug, Default)]
pub struct EchoCache {
    texts: HashMap<(String, String), TextEntry>,
    ids: HashMap<(String, String), Stamp>,
    next_seq: u64,
    last_cleanup_ms: Option<u64>,
}

impl EchoCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one successfully sent chunk or media message. A text remembered together with a real
    /// id is "id-backed": its echo will carry that id, so the text alone is not needed to match it.
    pub fn remember(&mut self, scope: &str, text: Option<&str>, message_id: Option<&str>, now_ms: u64) {
        self.cleanup(now_ms);
        let stamp = Stamp {
            at_ms: now_ms,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let id = message_id.and_then(id_key);
        if let Some(text) = text.and_then(text_key) {
            let entry = TextEntry {
                stamp,
                text_only: id.is_none(),
            };
            self.texts.insert((scope.to_string(), text), entry);
            evict_oldest(&mut self.texts, |entry| entry.stamp);
        }
        if let Some(id) = id {
            self.ids.insert((scope.to_string(), id.to_string()), stamp);
            evict_oldest(&mut self.ids, |stamp| *stamp);
        }
    }

    /// Whether an inbound message in `scope` is the echo of something we sent. `ids` are the inbound
    /// message's ids (its guid and its rowid; blank, `ok` and `unknown` are ignored).
    ///
    /// A fresh id hit is an echo. An inbound message with an id that misses is *not* an echo even if its
    /// text matches, because a user may type exactly what the bot just sent (common in self-chat) and
    /// the real echo would have carried the remembered id. That short circuit is skipped when
    /// `skip_id_short_circuit` is set, or when the text was last sent without a usable id (old `imsg`
    /// answering `ok`): then only the text can match. Otherwise a fresh text hit is an echo.
    pub fn has(
        &self,
        scope: &str,
        text: Option<&str>,
        ids: &[&str],
        skip_id_short_circuit: bool,
        now_ms: u64,
    ) -> bool {
        let ids: Vec<&str> = ids.iter().filter_map(|id| id_key(id)).collect();
        let text = text.and_then(text_key);
        let text_entry = text.and_then(|text| self.texts.get(&(scope.to_string(), text)));
        if !ids.is_empty() {
            let id_hit = ids.iter().any(|id| {
                self.ids
                    .get(&(scope.to_string(), (*id).to_string()))
                    .is_some_and(|stamp| fresh(stamp.at_ms, now_ms, ID_TTL_MS))
            });
            if id_hit {
                return true;
            }
            if !skip_id_short_circuit && !text_entry.is_some_and(|entry| entry.text_only) {
                return false;
            }
        }
        text_entry.is_some_and(|entry| fresh(entry.stamp.at_ms, now_ms, TEXT_TTL_MS))
    }

    /// Drops expired entries, at most once per [`CLEANUP_INTERVAL_MS`].
    fn cleanup(&mut self, now_ms: u64) {
        if self
            .last_cleanup_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < CLEANUP_INTERVAL_MS)
        {
            return;
        }
        self.last_cleanup_ms = Some(now_ms);
        self.texts
            .retain(|_, entry| fresh(entry.stamp.at_ms, now_ms, TEXT_TTL_MS));
        self.ids.retain(|_, stamp| fresh(stamp.at_ms, now_ms, ID_TTL_MS));
    }
}

/// Younger than `ttl_ms`. A timestamp from the future (clock stepped back) counts as fresh.
fn fresh(at_ms: u64, now_ms: u64, ttl_ms: u64) -> bool {
    now_ms.saturating_sub(at_ms) < ttl_ms
}

/// Removes the oldest entries while `map` is over [`MAX_ENTRIES`]. A linear scan is fine: the map only
/// overflows when thousands of messages were sent within one TTL, which a chat bridge never does.
fn evict_oldest<K: Eq + Hash + Clone, V>(map: &mut HashMap<K, V>, stamp: impl Fn(&V) -> Stamp) {
    while map.len() > MAX_ENTRIES {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| stamp(v)).map(|(k, _)| k.clone()) else {
            return;
        };
        map.remove(&oldest);
    }
}

/// The text key: CRLF as LF, trimmed; blank text has none.
fn text_key(text: &str) -> Option<String> {
    let text = text.replace("\r\n", "\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The id key: trimmed; blank ids and the `ok`/`unknown` placeholders of
/// [`crate::imsg::SendResult::message_id`] have none,
/// since every send without a real id would share them.
fn id_key(id: &str) -> Option<&str> {
    let id = id.trim();
    (!id.is_empty() && id != "ok" && id != "unknown").then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DM: &str = "default:imessage:+15555550123";
    const GROUP: &str = "default:chat_id:42";

    #[test]
    fn a_sent_text_matches_its_echo_in_the_same_scope_only() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("Hello there"), None, 1_000);
        assert!(cache.has(DM, Some("Hello there"), &[], false, 2_000));
        // CRLF and surrounding whitespace do not matter.
        assert!(cache.has(DM, Some("  Hello there\r\n"), &[], false, 2_000));
        assert!(!cache.has(DM, Some("Hello"), &[], false, 2_000));
        assert!(!cache.has(GROUP, Some("Hello there"), &[], false, 2_000));
        assert!(!cache.has(DM, None, &[], false, 2_000));
        assert!(!cache.has(DM, Some("  "), &[], false, 2_000));
    }

    #[test]
    fn a_sent_id_matches_and_the_ok_and_unknown_placeholders_are_ignored() {
        let mut cache = EchoCache::new();
        cache.remember(DM, None, Some("ok"), 0);
        cache.remember(DM, None, Some("unknown"), 0);
        cache.remember(DM, None, Some("  "), 0);
        assert!(cache.ids.is_empty());
        assert!(!cache.has(DM, None, &["ok"], false, 10));
        assert!(!cache.has(DM, None, &["unknown"], false, 10));

        cache.remember(DM, Some("hi"), Some(" p:0/GUID-1 "), 0);
        assert!(cache.has(DM, None, &["p:0/GUID-1"], false, 10));
        assert!(cache.has(DM, Some("anything"), &["p:0/GUID-1"], false, 10));
        assert!(!cache.has(GROUP, None, &["p:0/GUID-1"], false, 10));
    }

    #[test]
    fn an_id_outlives_its_text() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("hi"), Some("GUID-1"), 0);
        assert!(!cache.has(DM, Some("hi"), &[], false, 10_000));
        assert!(cache.has(DM, Some("hi"), &["GUID-1"], false, 10_000));
        assert!(cache.has(DM, None, &["GUID-1"], false, 59_999));
        assert!(!cache.has(DM, None, &["GUID-1"], false, 60_000));
    }

    #[test]
    fn a_text_only_entry_lives_four_seconds() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("hi"), None, 10_000);
        assert!(cache.has(DM, Some("hi"), &[], false, 13_999));
        // TTL expiry means a late echo is delivered twice: the safe failure.
        assert!(!cache.has(DM, Some("hi"), &[], false, 14_000));
    }

    #[test]
    fn a_real_inbound_id_that_misses_short_circuits_an_id_backed_text() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("sounds good"), Some("GUID-AGENT"), 0);
        // The user types the same words in self-chat: another guid, not an echo.
        assert!(!cache.has(DM, Some("sounds good"), &["GUID-USER", "1234"], false, 500));
        // The genuine echo carries our guid.
        assert!(cache.has(DM, Some("sounds good"), &["GUID-AGENT", "1233"], false, 500));
        // The caller may ask for the text fallback anyway.
        assert!(cache.has(DM, Some("sounds good"), &["GUID-USER"], true, 500));
        // An inbound message without an id is still matched by text.
        assert!(cache.has(DM, Some("sounds good"), &[], false, 500));
        assert!(cache.has(DM, Some("sounds good"), &["ok", " "], false, 500));
    }

    #[test]
    fn a_chunk_of_a_sent_reply_typed_by_the_user_is_not_dropped() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("part one"), Some("GUID-1"), 0);
        cache.remember(DM, Some("part two"), Some("GUID-2"), 10);
        assert!(!cache.has(DM, Some("part two"), &["GUID-9"], false, 100));
        assert!(cache.has(DM, Some("part two"), &["GUID-2"], false, 100));
        assert!(!cache.has(DM, Some("different"), &["GUID-9"], false, 100));
    }

    #[test]
    fn a_guid_and_a_rowid_never_collide() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("hello"), Some("8F3A-GUID"), 0);
        // A rowid (number as text) never equals a remembered guid.
        assert!(!cache.has(DM, Some("hello"), &["101"], false, 100));
        // Old imsg answered with the numeric rowid: the inbound echo's rowid matches it.
        cache.remember(DM, Some("hi"), Some("123"), 0);
        assert!(cache.has(DM, Some("hi"), &["123", "NEW-GUID"], false, 100));
        assert!(!cache.has(DM, Some("hi"), &["124", "OTHER-GUID"], false, 100));
    }

    #[test]
    fn a_junk_id_falls_back_to_the_text() {
        let mut cache = EchoCache::new();
        // Old imsg answered `{ok: true}`: the text is all we have.
        cache.remember(DM, Some("hi"), Some("ok"), 0);
        assert!(cache.has(DM, Some("hi"), &["GUID-ECHO", "77"], false, 2_200));
        assert!(!cache.has(DM, Some("hi"), &["GUID-ECHO"], false, 4_000));
    }

    #[test]
    fn the_latest_remember_of_a_text_decides_whether_it_is_id_backed() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("hi"), Some("GUID-1"), 0);
        cache.remember(DM, Some("hi"), None, 10);
        assert!(cache.has(DM, Some("hi"), &["GUID-2"], false, 100));
        cache.remember(DM, Some("hi"), Some("GUID-3"), 20);
        assert!(!cache.has(DM, Some("hi"), &["GUID-2"], false, 100));
    }

    #[test]
    fn scopes_with_guids_and_text_only_scopes_do_not_mix() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("same words"), Some("GUID-DM"), 0);
        cache.remember(GROUP, Some("same words"), None, 0);
        // The group entry is text-only: an inbound guid there falls back to the text.
        assert!(cache.has(GROUP, Some("same words"), &["GUID-X"], false, 100));
        // The DM entry is id-backed: a foreign guid is not an echo.
        assert!(!cache.has(DM, Some("same words"), &["GUID-X"], false, 100));
        assert!(cache.has(DM, Some("same words"), &["GUID-DM"], false, 100));
        // A DM guid does not match in the group.
        assert!(!cache.has(GROUP, None, &["GUID-DM"], false, 100));
    }

    #[test]
    fn expired_entries_are_swept_and_the_size_is_bounded() {
        let mut cache = EchoCache::new();
        cache.remember(DM, Some("old"), Some("GUID-OLD"), 0);
        cache.remember(DM, Some("new"), Some("GUID-NEW"), 60_500);
        assert_eq!(cache.texts.len(), 1);
        assert_eq!(cache.ids.len(), 1);
        assert!(cache.has(DM, None, &["GUID-NEW"], false, 60_600));

        let mut cache = EchoCache::new();
        for i in 0..=MAX_ENTRIES as u64 {
            cache.remember(
                GROUP,
                Some(&format!("text {i}")),
                Some(&format!("id {i}")),
                i / 10,
            );
        }
        assert_eq!(cache.texts.len(), MAX_ENTRIES);
        assert_eq!(cache.ids.len(), MAX_ENTRIES);
        assert!(!cache.has(GROUP, Some("text 0"), &[], false, 500));
        assert!(!cache.has(GROUP, None, &["id 0"], false, 500));
        let last = MAX_ENTRIES.to_string();
        assert!(cache.has(GROUP, Some(&format!("text {last}")), &[], false, 500));
        assert!(cache.has(GROUP, None, &[&format!("id {last}")], false, 500));
    }
}

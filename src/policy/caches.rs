//! The in-memory state of the inbound pipeline, all clock-injected (ms): the self-chat cache
//! (docs/channel.md), the echo-loop rate limiter and pending group history.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

/// Self-chat reflected copies: scope + created_at + sha256(text), 10 s, at most 512.
#[derive(Debug, Default)]
pub struct SelfChatCache {
    entries: VecDeque<(String, u64)>,
}

const SELF_CHAT_TTL_MS: u64 = 10_000;
const SELF_CHAT_MAX: usize = 512;

fn self_chat_key(scope: &str, created_ms: i64, text: &str) -> Option<String> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{scope}|{created_ms}|{hex}"))
}

impl SelfChatCache {
    pub fn remember(&mut self, scope: &str, created_ms: Option<i64>, text: &str, now_ms: u64) {
        let Some(key) = created_ms.and_then(|t| self_chat_key(scope, t, text)) else {
            return;
        };
        self.expire(now_ms);
        self.entries.push_back((key, now_ms));
        while self.entries.len() > SELF_CHAT_MAX {
            self.entries.pop_front();
        }
    }

    pub fn has(&mut self, scope: &str, created_ms: Option<i64>, text: &str, now_ms: u64) -> bool {
        self.expire(now_ms);
        let Some(key) = created_ms.and_then(|t| self_chat_key(scope, t, text)) else {
            return false;
        };
        self.entries.iter().any(|(k, _)| *k == key)
    }

    fn expire(&mut self, now_ms: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(_, at)| now_ms.saturating_sub(*at) > SELF_CHAT_TTL_MS)
        {
            self.entries.pop_front();
        }
    }
}

/// Echo-loop detector: a conversation with 5 pieces of loop evidence within 60 s stops dispatching.
/// What counts as evidence is the policy's decision (`DropReason::is_loop_hit`); this only counts.
#[derive(Debug, Default)]
pub struct LoopRateLimiter {
    hits: HashMap<String, VecDeque<u64>>,
    last_cleanup: u64,
}

const LOOP_WINDOW_MS: u64 = 60_000;
const LOOP_THRESHOLD: usize = 5;
const LOOP_CLEANUP_MS: u64 = 120_000;

impl LoopRateLimiter {
    pub fn hit(&mut self, key: &str, now_ms: u64) {
        self.cleanup(now_ms);
        self.hits.entry(key.to_string()).or_default().push_back(now_ms);
    }

    pub fn is_limited(&mut self, key: &str, now_ms: u64) -> bool {
        self.cleanup(now_ms);
        let Some(hits) = self.hits.get_mut(key) else {
            return false;
        };
        while hits
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > LOOP_WINDOW_MS)
        {
            hits.pop_front();
        }
        hits.len() >= LOOP_THRESHOLD
    }

    fn cleanup(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_cleanup) < LOOP_CLEANUP_MS {
            return;
        }
        self.last_cleanup = now_ms;
        self.hits.retain(|_, hits| {
            hits.retain(|t| now_ms.saturating_sub(*t) <= LOOP_WINDOW_MS);
            !hits.is_empty()
        });
    }
}

/// A group message held back for want of a mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub sender: String,
    pub body: String,
    pub timestamp: String,
    pub message_id: String,
}

/// Per-group ring buffers of unmentioned messages, injected into the next dispatched message.
#[derive(Debug, Default)]
pub struct PendingHistory {
    groups: HashMap<String, VecDeque<PendingEntry>>,
    order: VecDeque<String>,
}

const MAX_HISTORY_KEYS: usize = 1000;

impl PendingHistory {
    pub fn record(&mut self, key: &str, entry: PendingEntry, limit: usize) {
        if limit == 0 {
            return;
        }
        if !self.groups.contains_key(key) {
            self.order.push_back(key.to_string());
            while self.order.len() > MAX_HISTORY_KEYS {
                if let Some(oldest) = self.order.pop_front() {
                    self.groups.remove(&oldest);
                }
            }
        }
        let ring = self.groups.entry(key.to_string()).or_default();
        ring.push_back(entry);
        while ring.len() > limit {
            ring.pop_front();
        }
    }

    /// The held entries of a group, cleared (they travel with the message being dispatched).
    pub fn take(&mut self, key: &str) -> Vec<PendingEntry> {
        self.order.retain(|k| k != key);
        self.groups.remove(key).map(Vec::from).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_chat_cache_matches_scope_time_and_text_within_ten_seconds() {
        let mut cache = SelfChatCache::default();
        cache.remember("a:imessage:+1", Some(1000), "hello\r\n", 0);
        assert!(cache.has("a:imessage:+1", Some(1000), "hello", 5_000));
        assert!(
            !cache.has("a:imessage:+1", Some(1001), "hello", 5_000),
            "another created_at"
        );
        assert!(
            !cache.has("a:imessage:+2", Some(1000), "hello", 5_000),
            "another scope"
        );
        assert!(
            !cache.has("a:imessage:+1", Some(1000), "hello", 10_001),
            "expired"
        );
        let long_a = format!("{}a{}", "x".repeat(500), "y".repeat(500));
        let long_b = format!("{}b{}", "x".repeat(500), "y".repeat(500));
        cache.remember("s", Some(1), &long_a, 20_000);
        assert!(
            !cache.has("s", Some(1), &long_b, 20_000),
            "texts differing in the middle differ"
        );
        for i in 0..600 {
            cache.remember("s", Some(i), "t", 30_000);
        }
        assert!(!cache.has("s", Some(0), "t", 30_000), "evicted beyond 512");
        assert!(cache.has("s", Some(599), "t", 30_000));
        cache.remember("s", None, "no time", 30_000);
        assert!(!cache.has("s", None, "no time", 30_000));
    }

    #[test]
    fn rate_limiter_trips_at_five_hits_per_conversation_within_a_minute() {
        let mut limiter = LoopRateLimiter::default();
        for t in 0..4 {
            limiter.hit("a:group:1", t * 1000);
        }
        assert!(!limiter.is_limited("a:group:1", 5_000));
        limiter.hit("a:group:1", 5_000);
        assert!(limiter.is_limited("a:group:1", 5_000));
        assert!(
            !limiter.is_limited("a:group:2", 5_000),
            "other conversations are not affected"
        );
        assert!(
            !limiter.is_limited("a:group:1", 62_000),
            "the window slid past the early hits"
        );
        assert!(!limiter.is_limited("unknown", 0));
    }

    #[test]
    fn pending_history_keeps_the_newest_entries_and_clears_on_take() {
        let mut history = PendingHistory::default();
        let entry = |n: usize| PendingEntry {
            sender: "+1".into(),
            body: format!("m{n}"),
            timestamp: String::new(),
            message_id: n.to_string(),
        };
        for n in 0..5 {
            history.record("42", entry(n), 3);
        }
        history.record("7", entry(9), 0);
        let taken: Vec<String> = history.take("42").into_iter().map(|e| e.body).collect();
        assert_eq!(taken, vec!["m2", "m3", "m4"]);
        assert!(history.take("42").is_empty());
        assert!(history.take("7").is_empty(), "limit 0 records nothing");
    }
}

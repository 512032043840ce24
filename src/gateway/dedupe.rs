//! Recently delivered message guids, so a row seen twice (a message joined to two chats, a replay
//! overlapping a live batch after a reconnect) is delivered once.

use std::collections::{HashSet, VecDeque};

/// Bounded: the cursor already excludes old rows; this only has to cover the overlap window.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub struct RecentGuids {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentGuids {
    /// Forget `guid` (its delivery did not happen after all).
    pub fn remove(&mut self, guid: &str) {
        if self.set.remove(guid) {
            self.order.retain(|g| g != guid);
        }
    }

    /// Record `guid`; false when it was already there.
    pub fn insert(&mut self, guid: &str) -> bool {
        if guid.is_empty() {
            return true;
        }
        if !self.set.insert(guid.to_string()) {
            return false;
        }
        self.order.push_back(guid.to_string());
        if self.order.len() > CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_guids_within_its_bound() {
        let mut recent = RecentGuids::default();
        assert!(recent.insert("a"));
        assert!(!recent.insert("a"));
        assert!(recent.insert(""), "rows without a guid are never deduplicated");
        assert!(recent.insert(""));
        for i in 0..CAPACITY {
            recent.insert(&i.to_string());
        }
        assert!(recent.insert("a"), "the oldest entry was evicted");
        recent.remove("a");
        assert!(recent.insert("a"), "a removed guid can be delivered again");
    }
}

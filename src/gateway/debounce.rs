//! Inbound debounce (docs/channel.md): quick successive texts from one sender in one conversation
//! become one message, its text the texts joined by newlines. Held rows are not yet handled, so
//! the cursor stays below them until they are (a crash replays them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::envelope::strip_length_prefix;
use crate::imsg::Message;
use crate::policy::mention::is_control_command;

/// Most conversations held at once; beyond it a message is handled alone.
const MAX_KEYS: usize = 2048;

#[derive(Debug)]
struct Batch {
    messages: Vec<Message>,
    deadline: Instant,
}

#[derive(Debug)]
pub struct Debouncer {
    account: String,
    window: Duration,
    batches: BTreeMap<String, Batch>,
}

impl Debouncer {
    pub fn new(account: &str, window: Duration) -> Self {
        Self {
            account: account.to_string(),
            window,
            batches: BTreeMap::new(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.window.is_zero()
    }

    /// `imessage:<account>:<conversation>:<sender>`; None without a sender.
    fn key(&self, m: &Message) -> Option<String> {
        let sender = m.sender.trim();
        if sender.is_empty() {
            return None;
        }
        let conversation = if m.chat_id > 0 {
            format!("chat:{}", m.chat_id)
        } else if !m.chat_guid.is_empty() {
            m.chat_guid.clone()
        } else if !m.chat_identifier.is_empty() {
            m.chat_identifier.clone()
        } else {
            "unknown".to_string()
        };
        Some(format!("imessage:{}:{conversation}:{sender}", self.account))
    }

    fn eligible(m: &Message) -> bool {
        let text = strip_length_prefix(&m.text).unwrap_or_else(|| m.text.clone());
        !m.is_from_me && !text.trim().is_empty() && m.attachments.is_empty() && !is_control_command(&text)
    }

    /// Take `m` in. Returns what must be handled now, in order: a batch of the same conversation
    /// that `m` cannot join (flushed first), then `m` itself unless it was held.
    pub fn push(&mut self, m: Message, now: Instant) -> Vec<Message> {
        if !self.is_enabled() {
            return vec![m];
        }
        let Some(key) = self.key(&m) else {
            return vec![m];
        };
        if !Self::eligible(&m) {
            let mut out: Vec<Message> = self.batches.remove(&key).map(combine).into_iter().collect();
            out.push(m);
            return out;
        }
        if !self.batches.contains_key(&key) && self.batches.len() >= MAX_KEYS {
            return vec![m];
        }
        let batch = self.batches.entry(key).or_insert_with(|| Batch {
            messages: Vec::new(),
            deadline: now,
        });
        batch.messages.push(m);
        batch.deadline = now + self.window;
        Vec::new()
    }

    /// When the next batch falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.batches.values().map(|b| b.deadline).min()
    }

    /// The batches due at `now`, combined, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Message> {
        let keys: Vec<String> = self
            .batches
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Message> = keys
            .into_iter()
            .filter_map(|k| self.batches.remove(&k))
            .map(combine)
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }

    /// The lowest ROWID held: the cursor must stay below it.
    pub fn lowest_held(&self) -> Option<i64> {
        self.batches
            .values()
            .filter_map(|b| b.messages.first().map(|m| m.id))
            .min()
    }
}

/// One message: the last one's fields, the texts joined by newlines, no attachments.
fn combine(batch: Batch) -> Message {
    let mut messages = batch.messages;
    let texts: Vec<String> = messages
        .iter()
        .map(|m| strip_length_prefix(&m.text).unwrap_or_else(|| m.text.clone()))
        .filter(|t| !t.trim().is_empty())
        .collect();
    let mut last = messages.pop().unwrap_or_default();
    if !messages.is_empty() {
        last.text = texts.join("\n");
        last.attachments.clear();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: i64, sender: &str, text: &str) -> Message {
        Message {
            id,
            chat_id: 1,
            sender: sender.into(),
            text: text.into(),
            ..Message::default()
        }
    }

    #[test]
    fn joins_quick_texts_of_one_sender_and_keeps_others_apart() {
        let t0 = Instant::now();
        let mut d = Debouncer::new("default", Duration::from_millis(500));
        assert!(d.push(msg(1, "+1", "hello"), t0).is_empty());
        assert!(d.push(msg(2, "+2", "other sender"), t0).is_empty());
        assert!(
            d.push(msg(3, "+1", "are you there?"), t0 + Duration::from_millis(300))
                .is_empty()
        );
        assert_eq!(d.lowest_held(), Some(1));
        assert!(
            d.due(t0 + Duration::from_millis(600))
                .iter()
                .map(|m| m.id)
                .eq([2])
        );
        let due = d.due(t0 + Duration::from_millis(900));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].id, due[0].text.as_str()), (3, "hello\nare you there?"));
        assert_eq!(d.lowest_held(), None);
    }

    #[test]
    fn a_command_or_media_flushes_the_batch_first_and_goes_alone() {
        let t0 = Instant::now();
        let mut d = Debouncer::new("default", Duration::from_millis(500));
        d.push(msg(1, "+1", "one"), t0);
        let out = d.push(msg(2, "+1", "/reset"), t0);
        assert_eq!(out.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2]);
        let off = &mut Debouncer::new("default", Duration::ZERO);
        assert_eq!(
            off.push(msg(5, "+1", "x"), t0).len(),
            1,
            "a zero window holds nothing"
        );
        let nobody = msg(6, "  ", "x");
        assert_eq!(d.push(nobody, t0).len(), 1, "no sender, no key");
    }
}

//! Names the nats sink derives from account ids and reply ids: subject tokens, durable consumer
//! names and claim keys. An account id may hold characters NATS gives meaning to (`.` separates
//! tokens, `*` and `>` are wildcards, whitespace ends a subject), so every byte outside
//! `[A-Za-z0-9_-]` is written as `=XX` (lowercase hex of the UTF-8 byte): `work` stays `work`,
//! `a.b` becomes `a=2eb`, `=` itself becomes `=3d` so the mapping is one-to-one
//! (docs/scale-out.md, "Subjects").

use std::fmt::Write as _;

/// `raw` as one token that is valid in a subject, a consumer name and a key-value key.
pub fn token(raw: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            // Writing into a String cannot fail.
            let _ = write!(out, "={byte:02x}");
        }
    }
    if out.is_empty() {
        // An empty token would make an empty subject token; `=` alone never comes out of a byte.
        out.push('=');
    }
    out
}

/// The subjects and names of one deployment (`subjectPrefix`, the two streams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    /// Where `account`'s envelopes are published.
    pub fn inbound(&self, account: &str) -> String {
        format!("{}.in.{}", self.prefix, token(account))
    }

    /// What the inbound stream holds.
    pub fn inbound_all(&self) -> String {
        format!("{}.in.>", self.prefix)
    }

    /// Where workers publish `account`'s replies.
    pub fn outbound(&self, account: &str) -> String {
        format!("{}.out.{}", self.prefix, token(account))
    }

    /// What the reply stream holds.
    pub fn outbound_all(&self) -> String {
        format!("{}.out.>", self.prefix)
    }

    /// The durable consumer every bridge serving `account` shares: the work queue hands each reply to
    /// one of them.
    pub fn durable(&self, account: &str) -> String {
        format!("imsg-bridge-{}", token(account))
    }
}

/// Which reply a claim is for: the worker's own `Nats-Msg-Id`, else the reply stream's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyId {
    MsgId(String),
    Sequence(u64),
}

impl ReplyId {
    /// The claim's key in the shared bucket: per account, then by kind, so a worker's id `5` and
    /// sequence 5 never meet.
    pub fn claim_key(&self, account: &str) -> String {
        match self {
            Self::MsgId(id) => format!("{}.id.{}", token(account), token(id)),
            Self::Sequence(seq) => format!("{}.seq.{seq}", token(account)),
        }
    }
}

impl std::fmt::Display for ReplyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MsgId(id) => write!(f, "{}", crate::util::escape::escape_controls(id)),
            Self::Sequence(seq) => write!(f, "sequence {seq}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_escape_what_nats_gives_meaning_to_and_nothing_else() {
        let cases = [
            ("default", "default"),
            ("work_2-b", "work_2-b"),
            ("a.b", "a=2eb"),
            ("*", "=2a"),
            (">", "=3e"),
            ("a b\tc", "a=20b=09c"),
            ("=", "=3d"),
            ("é", "=c3=a9"),
            ("", "="),
        ];
        for (raw, want) in cases {
            assert_eq!(token(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn distinct_accounts_never_share_a_token() {
        let accounts = ["a.b", "a=2eb", "a_2eb", "a-2eb", "a b", "a=20b"];
        let mut tokens: Vec<String> = accounts.iter().map(|a| token(a)).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), accounts.len(), "{tokens:?}");
    }

    #[test]
    fn subjects_names_and_claim_keys_follow_the_documented_layout() {
        let names = Names {
            prefix: "imsg".into(),
        };
        assert_eq!(names.inbound("work.mac"), "imsg.in.work=2emac");
        assert_eq!(names.outbound("work.mac"), "imsg.out.work=2emac");
        assert_eq!(
            (names.inbound_all(), names.outbound_all()),
            ("imsg.in.>".into(), "imsg.out.>".into())
        );
        assert_eq!(names.durable("default"), "imsg-bridge-default");
        assert_eq!(
            ReplyId::MsgId("reply:imessage:default:G1".into()).claim_key("default"),
            "default.id.reply=3aimessage=3adefault=3aG1"
        );
        assert_eq!(ReplyId::Sequence(42).claim_key("a b"), "a=20b.seq.42");
    }
}

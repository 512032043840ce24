//! Recognising our own output when it comes back as a message. The outbound side writes here (every
//! sent chunk is remembered in the [`EchoCache`]); the inbound policy reads here (the echo cache and
//! the reflection guard drop the copies), so neither side depends on the other (docs/channel.md,
//! "The inbound decision", step 8).

pub mod cache;
pub mod code;
pub mod reflection;

pub use cache::EchoCache;
pub use reflection::{Reflection, is_reflected, reflection_markers};

/// The echo-cache scope of a send from `account` to `to` (a target as `outbound::Target` prints
/// it: `chat_id:42`, `imessage:+15555550123`); the inbound side looks rows up under the same.
pub fn scope(account: &str, to: &str) -> String {
    format!("{account}:{to}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_is_the_account_and_the_target() {
        let cases = [
            ("default", "chat_id:42", "default:chat_id:42"),
            ("work", "imessage:+15555550123", "work:imessage:+15555550123"),
        ];
        for (account, to, want) in cases {
            assert_eq!(scope(account, to), want);
        }
    }
}

//! Recognising our own output when it comes back as a message. The outbound side writes here (every
//! sent chunk is remembered in the [`EchoCache`]); the inbound policy reads here (the echo cache and
//! the reflection guard drop the copies), so neither side depends on the other (docs/channel.md,
//! "The inbound decision", step 8).

pub mod cache;
pub mod code;
pub mod reflection;

pub use cache::EchoCache;
pub use reflection::{Reflection, is_reflected, reflection_markers};

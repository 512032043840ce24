//! NDJSON JSON-RPC 2.0 client over any `AsyncRead + AsyncWrite`: the framing and correlation layer
//! under the typed `imsg` methods.

mod client;
mod error;
mod lines;
mod stderr;

pub use client::{ClientOptions, Notification, PeerInfo, RpcClient, Subscription, SubscriptionEvent};
pub use error::{ExitInfo, RpcError};
pub use stderr::{StderrRing, truncate_chars};

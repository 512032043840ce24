//! NDJSON JSON-RPC 2.0 client over any `AsyncRead + AsyncWrite`: the framing and correlation layer
//! under the typed `imsg` methods.

mod client;
mod error;
mod lines;
pub mod mux;
mod stderr;

/// Thin access to the client's private reader path for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub use client::fuzzing;
pub use client::{ClientOptions, Notification, PeerInfo, RpcClient, Subscription, SubscriptionEvent};
pub use error::{ExitInfo, RpcError};
pub use lines::{MAX_LINE_BYTES, Splitter};
pub use stderr::{StderrRing, truncate_chars};

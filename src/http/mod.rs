//! The optional HTTP control API (`bridge.http`): send through an account, read the bridge's status and
//! scrape its metrics.

pub mod metrics;

pub use metrics::Metrics;

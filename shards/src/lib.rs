//! Gregor's thread-per-core runtime: one glommio executor per core drives the
//! deterministic `engine` with real sockets and files (DESIGN.md §1–3).
//!
//! The only crate that knows glommio and io_uring exist.

mod admin_handlers;
mod broker;
mod config;
mod connection;
mod controller;
mod direct_appender;
mod group_commit;
mod group_handlers;
mod groups;
mod handlers;
mod log_cleaner;
mod mesh;
mod metrics;
mod partition;
mod partition_files;
mod shard;
mod shutdown;
mod splice;

pub use broker::{run, BrokerError};
pub use config::BrokerConfig;
pub use direct_appender::SegmentWriteMode;

/// Milliseconds since the Unix epoch: Kafka's clock for timestamps.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

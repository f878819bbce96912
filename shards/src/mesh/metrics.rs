//! Metrics scrapes and log-dir sizes, gathered from every shard.

use super::subsystem;
use crate::metrics::MetricsSnapshot;

subsystem!(Metrics, MetricsRequest, MetricsReply {
    TakeSnapshot => Option<Box<MetricsSnapshot>>,
    LogDirSizes => Vec<PartitionSize>,
});

/// The target shard's metrics snapshot (a scrape).
#[derive(Debug)]
pub struct TakeSnapshot;

impl TakeSnapshot {
    fn undelivered_reply(&self) -> Option<Box<MetricsSnapshot>> {
        None
    }
}

/// Sizes of the target shard's partitions (DescribeLogDirs).
#[derive(Debug)]
pub struct LogDirSizes;

impl LogDirSizes {
    fn undelivered_reply(&self) -> Vec<PartitionSize> {
        Vec::new()
    }
}

#[derive(Debug, Clone)]
pub struct PartitionSize {
    pub topic: String,
    pub partition: i32,
    pub size_bytes: u64,
}

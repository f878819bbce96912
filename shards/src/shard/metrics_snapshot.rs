//! This shard's metrics snapshot, taken for a scrape.

use std::collections::BTreeMap;

use super::Shard;
use crate::metrics::{Histogram, MetricsSnapshot, PartitionGauges, TopicCounters};

impl Shard {
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        let budget = self.config.shard_request_bytes_max as u64;
        let partitions = self.backend.owned_partitions();
        let mut topics: BTreeMap<String, TopicCounters> = BTreeMap::new();
        let mut segment_write = Histogram::default();
        for p in &partitions {
            segment_write.merge(&p.write_latency());
            let c = p.counters();
            let t = topics.entry(p.topic.clone()).or_default();
            t.produce_bytes += c.produce_bytes;
            t.produce_records += c.produce_records;
            t.fetch_bytes += c.fetch_bytes;
            t.fetch_records += c.fetch_records;
        }
        let files = &self.backend.file_budget;
        let file_counters = files.counters();
        MetricsSnapshot {
            shard: self.id,
            segment_files_open: files.open_files() as u64,
            offline_partitions: self.backend.offline_partition_count() as u64,
            segment_files_budget: files.limit() as u64,
            segment_slices_in_flight: files.slices().in_use() as u64,
            segment_file_reopens: file_counters.reopens,
            segment_file_evictions: file_counters.evictions,
            segment_file_idle_closes: file_counters.idle_closes,
            segment_file_over_budget_opens: file_counters.over_budget_opens,
            topics,
            requests: self.metrics.requests.borrow().clone(),
            fsync: self.backend.fsync_latency.borrow().clone(),
            segment_write,
            connections: self.metrics.connections.get(),
            mesh_hops: self.mesh.hops.get(),
            request_memory_bytes: budget.saturating_sub(self.request_memory.available()),
            groups: self.groups.group_count() as u64,
            partitions: partitions
                .iter()
                .map(|p| PartitionGauges {
                    topic: p.topic.clone(),
                    partition: p.index,
                    log_start_offset: p.log_start_offset(),
                    log_end_offset: p.high_watermark_offset(),
                    size_bytes: p.size_bytes(),
                })
                .collect(),
        }
    }
}

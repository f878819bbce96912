//! Log maintenance on a shard: time-based rolls, compaction and retention
//! of the partitions it owns, in a low-priority task queue.

use std::rc::Rc;
use std::time::Duration;

use engine::metadata::TopicConfig;
use tracing::error;

use super::Shard;
use crate::clock::now_ms;

impl Shard {
    /// Log maintenance until the shard stops: time-based rolls and
    /// compaction every `log.cleaner.backoff.ms`, retention every
    /// `log.retention.check.interval.ms`. Runs in a low-priority task queue
    /// and yields between partitions, so produce and fetch come first.
    pub async fn run_maintenance(self: Rc<Self>) {
        let tick_ms = self
            .config
            .cleaner_backoff_ms
            .min(self.config.retention_check_interval_ms)
            .max(10);
        let mut since_retention_ms = 0u64;
        while !self.stop.is_raised() {
            glommio::timer::sleep(Duration::from_millis(tick_ms)).await;
            since_retention_ms += tick_ms;
            let retention_due = since_retention_ms >= self.config.retention_check_interval_ms;
            if retention_due {
                since_retention_ms = 0;
            }
            // Partitions come grouped by topic: one effective config per
            // topic, not per partition (100k partitions per tick).
            let mut topic_config: Option<(String, TopicConfig)> = None;
            for partition in self.backend.owned_partitions() {
                let config = match &mut topic_config {
                    Some((topic, config)) if *topic == partition.topic => &*config,
                    slot => {
                        let config = self.backend.topic_config(&partition.topic);
                        &slot.insert((partition.topic.clone(), config)).1
                    }
                };
                let now = now_ms();
                if let Err(e) = partition.roll_if_idle_expired(now).await {
                    error!(topic = %partition.topic, partition = partition.index, error = %e, "roll failed");
                }
                partition.expire_producers(now, self.config.producer_id_expiration_ms);
                if config.cleanup_compact {
                    if let Err(e) = partition.clean(config, now).await {
                        error!(topic = %partition.topic, partition = partition.index, error = %e, "compaction failed");
                    }
                }
                if retention_due && config.cleanup_delete {
                    if let Err(e) = partition
                        .apply_retention(now, config.retention_ms, config.retention_bytes)
                        .await
                    {
                        error!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed");
                    }
                }
                glommio::executor().yield_if_needed().await;
            }
            self.backend.retry_unopened().await;
            // Idle partitions give their descriptors back.
            let idle_ms = self.config.segment_file_idle_ms;
            self.backend
                .file_budget
                .close_idle(
                    crate::clock::steady_ms(),
                    i64::try_from(idle_ms).unwrap_or(i64::MAX),
                )
                .await;
        }
    }
}

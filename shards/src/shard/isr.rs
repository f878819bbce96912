//! The leader's side of ISR membership on a shard: every
//! `ISR_CHECK_INTERVAL_MS`, each partition this shard leads asks the
//! controller (AlterPartition, through shard 0) to drop followers that lag
//! more than `replica.lag.time.max.ms` and to add those that caught up.
//! The controller's answer arrives as a `PartitionChange` like any other.

use std::rc::Rc;
use std::time::Duration;

use tracing::debug;

use super::Shard;
use crate::clock::steady_ms;
use crate::mesh::admin::AlterPartition;

/// Kafka checks ISR membership every half `replica.lag.time.max.ms`; this
/// bounds how late a caught-up follower rejoins.
const ISR_CHECK_INTERVAL_MS: u64 = 250;

/// The controller is on shard 0.
const CONTROLLER_SHARD: usize = 0;

impl Shard {
    pub async fn run_isr_checks(self: Rc<Self>) {
        let lag_max_ms = self.config.replica_lag_time_max_ms as i64;
        while !self.stop.is_raised() {
            glommio::timer::sleep(Duration::from_millis(ISR_CHECK_INTERVAL_MS)).await;
            // Only replicated partitions: a single node's 100k partitions
            // are not walked four times a second.
            for partition in self.backend.replicated_partitions() {
                let Some((leader_epoch, isr)) = partition.isr_change_due(steady_ms(), lag_max_ms)
                else {
                    continue;
                };
                let Some(current) = self
                    .backend
                    .partition_image(&partition.topic, partition.index)
                else {
                    continue;
                };
                let op = AlterPartition {
                    topic: partition.topic.clone(),
                    partition: partition.index as u32,
                    leader: self.config.node_id,
                    leader_epoch,
                    partition_epoch: current.partition_epoch,
                    isr: isr.clone(),
                };
                let shard = self.clone();
                glommio::spawn_local(async move {
                    if let Err(code) = shard.call(CONTROLLER_SHARD, op).await {
                        debug!(topic = %partition.topic, partition = partition.index, ?isr, code, "ISR change refused");
                        let committed = shard
                            .backend
                            .partition_image(&partition.topic, partition.index)
                            .map_or_else(Vec::new, |p| p.isr);
                        if committed.contains(&shard.config.node_id) {
                            partition.isr_change_refused(leader_epoch, &committed);
                        }
                    }
                })
                .detach();
            }
        }
    }
}

//! Which partitions of this broker do not serve (their files could not be
//! created or were damaged), gathered from every shard: what Metadata and
//! CreateTopics tell clients about them.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use super::Shard;
use crate::mesh::metadata::OfflineHere;

/// How long a shard waits for a new topic's partitions to be created or
/// fail before it answers anyway (a shard that applies metadata this late
/// is stuck on something else; the creation is then reported as unknown).
const SETTLE_WAIT_MS: u64 = 10_000;
/// How often it looks meanwhile.
const SETTLE_POLL_MS: u64 = 5;

/// This broker's offline partitions: (topic, partition) -> why.
pub type OfflinePartitions = BTreeMap<(String, i32), String>;

impl Shard {
    /// Waits until every partition of `topics` placed on this shard was
    /// created or failed. False if that took longer than SETTLE_WAIT_MS.
    pub(super) async fn wait_settled(&self, topics: &[String]) -> bool {
        let polls = SETTLE_WAIT_MS / SETTLE_POLL_MS;
        for _ in 0..polls {
            if self.backend.topics_settled(topics) {
                return true;
            }
            glommio::timer::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
        }
        self.backend.topics_settled(topics)
    }

    /// The partitions of `topics` (None: all) that do not serve on this
    /// broker, from every shard. With `settle`, each shard first waits until
    /// it has created (or failed to create) its partitions of `topics`;
    /// Err(()) if one did not settle in time.
    pub async fn offline_partitions(
        self: &Rc<Self>,
        topics: Option<Vec<String>>,
        settle: bool,
    ) -> Result<OfflinePartitions, ()> {
        let mut pending = Vec::with_capacity(self.backend.shard_count);
        for target in 0..self.backend.shard_count {
            let op = OfflineHere {
                topics: topics.clone(),
                settle,
            };
            pending.push(self.dispatch(target, op).await);
        }
        let mut offline = OfflinePartitions::new();
        let mut settled = true;
        for report in futures::future::join_all(pending).await {
            settled &= report.settled;
            for p in report.partitions {
                offline.insert((p.topic, p.partition), p.reason);
            }
        }
        if settled {
            Ok(offline)
        } else {
            Err(())
        }
    }
}

//! The controller's backend on every shard: this core's copy of the cluster
//! image and the partition replicas it owns. Committed metadata records
//! change both only through `apply` (create, delete, reconfigure replicas);
//! everything else reads them (routing, configs, partition lookups).

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use engine::group::OFFSETS_TOPIC;
use engine::log::LogConfig;
use engine::metadata::{ClusterImage, MetadataRecord, TopicConfig, TopicImage};
use engine::protocol::{self as codes, ErrorCode};
use engine::txn::TRANSACTION_STATE_TOPIC;
use futures::channel::oneshot;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::cluster::replica_fetcher::ReplicaFetchers;
use crate::config::BrokerConfig;
use crate::disk::producer_snapshots::{recover_producer_states, RecoveredFiles};
use crate::disk::recovery::open_partition;
use crate::disk::segment_files::{create_partition, partition_dir};
use crate::mesh::data::PartitionRead;
use crate::mesh::metadata::OfflinePartition;
use crate::mesh::routing::{owner_shard, route_in};
use crate::metrics::Histogram;
use crate::partition::{FileBudget, OpenedLog, OwnedPartitions, Partition};
use engine::txn::{PartitionTxns, ProducerStates};

pub struct Backend {
    pub shard_id: usize,
    pub shard_count: usize,
    pub config: Rc<BrokerConfig>,
    image: RefCell<ClusterImage>,
    partitions: RefCell<OwnedPartitions>,
    /// fdatasync latencies of every partition of the shard.
    pub fsync_latency: Rc<RefCell<Histogram>>,
    /// This shard's budget of open segment files.
    pub file_budget: Rc<FileBudget>,
    /// Partitions placed here whose files could not be created (out of
    /// descriptors or disk): offline, retried each maintenance tick.
    /// Bounded by the image's partitions. (topic, index) -> why.
    unopened: RefCell<BTreeMap<(String, i32), String>>,
    /// The topics with a partition of more than one replica, as of the last
    /// metadata applied (None: to be computed again).
    replicated_topics: RefCell<Option<Vec<String>>>,
    /// This shard's fetch sessions for the partitions it follows.
    fetchers: ReplicaFetchers,
    /// Roles of `__consumer_offsets` partitions, for the group host.
    offsets_roles: RoleChanges,
    /// Roles of `__transaction_state` partitions, for the transaction host.
    txn_state_roles: RoleChanges,
}

/// Partitions of an internal topic whose role was set since its host last
/// looked: index -> leads (bounded by the partition count), and the host's
/// wake-up.
#[derive(Default)]
struct RoleChanges {
    changes: RefCell<BTreeMap<i32, bool>>,
    waiter: RefCell<Option<oneshot::Sender<()>>>,
}

impl RoleChanges {
    fn note(&self, index: i32, leads: bool) {
        self.changes.borrow_mut().insert(index, leads);
        if let Some(waiter) = self.waiter.borrow_mut().take() {
            let _ = waiter.send(());
        }
    }

    async fn take(&self) -> BTreeMap<i32, bool> {
        loop {
            let changes = std::mem::take(&mut *self.changes.borrow_mut());
            if !changes.is_empty() {
                return changes;
            }
            let (sender, receiver) = oneshot::channel();
            *self.waiter.borrow_mut() = Some(sender);
            if receiver.await.is_err() {
                return BTreeMap::new();
            }
        }
    }
}

/// How many partitions in a row may fail to open in one retry round before
/// the round stops (the resource is still short).
const RETRY_FAILURES_IN_A_ROW_MAX: usize = 8;

impl Backend {
    pub fn new(shard_id: usize, config: Rc<BrokerConfig>, image: ClusterImage) -> Backend {
        let node_id = config.node_id;
        // A connection's share has a second descriptor for the segment a
        // response splices: together, the bound on this shard's slices.
        let file_budget = FileBudget::new(
            config.descriptors.segment_files_per_shard,
            config.descriptors.connections_per_shard,
        );
        Backend {
            shard_id,
            shard_count: config.shard_count,
            config,
            image: RefCell::new(image),
            partitions: RefCell::new(OwnedPartitions::default()),
            fsync_latency: Rc::new(RefCell::new(Histogram::default())),
            file_budget,
            unopened: RefCell::new(BTreeMap::new()),
            replicated_topics: RefCell::new(None),
            fetchers: ReplicaFetchers::new(node_id),
            offsets_roles: RoleChanges::default(),
            txn_state_roles: RoleChanges::default(),
        }
    }

    pub fn image(&self) -> Ref<'_, ClusterImage> {
        self.image.borrow()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(topic, partition).cloned()
    }

    pub fn owned_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// The owned partitions with more than one replica. Topics are looked
    /// at in the image first (a contiguous walk), so a node of unreplicated
    /// partitions touches none of them.
    pub fn replicated_partitions(&self) -> Vec<Rc<Partition>> {
        let mut cached = self.replicated_topics.borrow_mut();
        let topics = cached.get_or_insert_with(|| {
            self.image
                .borrow()
                .topics()
                .filter(|t| t.partitions.iter().any(|p| p.replicas.len() > 1))
                .map(|t| t.name.clone())
                .collect()
        });
        let owned = self.partitions.borrow();
        let mut replicated = Vec::new();
        for name in topics.iter() {
            let Some(slots) = owned.topic(name) else {
                continue;
            };
            replicated.extend(
                slots
                    .iter()
                    .flatten()
                    .filter(|p| p.is_replicated())
                    .cloned(),
            );
        }
        replicated
    }

    pub fn owned_partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// The shard that owns a partition, or the error a client should see.
    pub fn route(&self, topic: &str, partition: i32) -> Result<usize, ErrorCode> {
        route_in(
            self.image.borrow().topic(topic),
            partition,
            self.shard_count,
            self.config.node_id,
        )
    }

    /// Where to send an inter-broker request for a partition another
    /// broker leads: its leader and the replication listener of the
    /// leader's shard that owns it. LEADER_NOT_AVAILABLE while it has no
    /// leader (or its leader is not registered).
    pub fn leader_address(&self, topic: &str, partition: i32) -> Result<(i32, String), ErrorCode> {
        let image = self.image.borrow();
        let found = u32::try_from(partition)
            .ok()
            .and_then(|p| image.topic(topic)?.partition(p))
            .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
        let leader = found.serving_leader(self.config.node_id);
        image
            .broker(leader)
            .and_then(|b| b.replication_address(found.slot))
            .map(|(_, address)| (leader, address))
            .ok_or(codes::LEADER_NOT_AVAILABLE)
    }

    /// The partition's leader epoch in this shard's image (0 for a
    /// partition of the single legacy node, or one that does not exist).
    pub fn leader_epoch(&self, topic: &str, partition: i32) -> i32 {
        let image = self.image.borrow();
        u32::try_from(partition)
            .ok()
            .and_then(|p| image.topic(topic)?.partition(p))
            .map_or(0, |p| p.leader_epoch.max(0))
    }

    /// The partition as this shard's image has it.
    pub fn partition_image(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<engine::metadata::PartitionImage> {
        let image = self.image.borrow();
        u32::try_from(partition)
            .ok()
            .and_then(|p| image.topic(topic)?.partition(p))
            .cloned()
    }

    /// Whether the partition exists (anywhere in the cluster).
    pub fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        let image = self.image.borrow();
        let topic = image.topic(topic);
        u32::try_from(partition)
            .ok()
            .and_then(|p| topic?.partition(p))
            .is_some()
    }

    /// `route` for many partitions of one topic, looking the topic up once.
    pub fn route_all(
        &self,
        topic: &str,
        partitions: impl Iterator<Item = i32>,
    ) -> Vec<Result<usize, ErrorCode>> {
        let image = self.image.borrow();
        let topic = image.topic(topic);
        partitions
            .map(|partition| route_in(topic, partition, self.shard_count, self.config.node_id))
            .collect()
    }

    /// The owned partition of every read (None where this shard owns none).
    /// A fetch lists its partitions topic by topic, so each run of reads of
    /// one topic looks the topic up once.
    pub fn partitions_of(&self, reads: &[PartitionRead]) -> Vec<Option<Rc<Partition>>> {
        let owned = self.partitions.borrow();
        let mut current: Option<(&str, Option<&crate::partition::TopicSlots>)> = None;
        reads
            .iter()
            .map(|read| {
                let slots = match current {
                    Some((name, slots)) if name == &*read.topic => slots,
                    _ => {
                        let slots = owned.topic(&read.topic);
                        current = Some((&read.topic, slots));
                        slots
                    }
                };
                slots?.get(usize::try_from(read.partition).ok()?)?.clone()
            })
            .collect()
    }

    /// Makes an opened or created partition directory a replica this shard
    /// owns.
    fn install(
        &self,
        topic: &str,
        index: i32,
        dir: std::path::PathBuf,
        opened: OpenedLog,
    ) -> Rc<Partition> {
        let partition = Partition::new(
            topic.to_string(),
            index,
            dir,
            opened,
            self.config.segment_write_mode,
            self.fsync_latency.clone(),
            self.file_budget.clone(),
        );
        self.partitions.borrow_mut().insert(partition.clone());
        partition
    }

    /// Gives an owned replica the role the image says: leader (with its
    /// epoch and ISR), or follower of the leader's shard that owns it.
    async fn settle_role(&self, partition: &Rc<Partition>) {
        let found = {
            let image = self.image.borrow();
            u32::try_from(partition.index)
                .ok()
                .and_then(|p| image.topic(&partition.topic)?.partition(p))
                .cloned()
                .map(|p| {
                    let target = image
                        .broker(p.leader)
                        .and_then(|b| b.replication_address(p.slot));
                    (p, target)
                })
        };
        let Some((image_partition, target)) = found else {
            return;
        };
        if image_partition.replicas.is_empty() {
            // The single legacy node's partition: it always leads.
            self.note_internal_role(partition, true);
            return;
        }
        let node_id = self.config.node_id;
        let epoch = image_partition.leader_epoch;
        if image_partition.leader == node_id {
            self.fetchers.unfollow(&partition.topic, partition.index);
            let min_isr = self.topic_config(&partition.topic).min_insync_replicas;
            partition
                .become_leader(
                    node_id,
                    epoch,
                    &image_partition.replicas,
                    &image_partition.isr,
                    min_isr,
                    crate::clock::steady_ms(),
                )
                .await;
            self.note_internal_role(partition, true);
            return;
        }
        partition.become_follower(image_partition.leader, epoch);
        self.note_internal_role(partition, false);
        match target {
            Some((shard, address)) if !image_partition.replicas.is_empty() => self.fetchers.follow(
                partition.clone(),
                image_partition.leader,
                shard,
                address,
                epoch,
            ),
            _ => self.fetchers.unfollow(&partition.topic, partition.index),
        }
    }

    /// Tells the group host that a `__consumer_offsets` partition here
    /// leads (load its groups) or follows (unload them), and the
    /// transaction host the same of a `__transaction_state` partition.
    fn note_internal_role(&self, partition: &Partition, leads: bool) {
        if partition.topic == OFFSETS_TOPIC {
            self.offsets_roles.note(partition.index, leads);
        } else if partition.topic == TRANSACTION_STATE_TOPIC {
            self.txn_state_roles.note(partition.index, leads);
        }
    }

    /// Waits until an offsets partition's role was set, then takes what
    /// was set (index -> leads).
    pub async fn offsets_role_changes(&self) -> BTreeMap<i32, bool> {
        self.offsets_roles.take().await
    }

    /// The same for `__transaction_state` partitions.
    pub async fn txn_state_role_changes(&self) -> BTreeMap<i32, bool> {
        self.txn_state_roles.take().await
    }

    async fn settle_roles_of(&self, partitions: Vec<Rc<Partition>>) {
        for partition in partitions {
            self.settle_role(&partition).await;
        }
    }

    /// The effective config of a topic (topic values over broker defaults).
    pub fn topic_config(&self, topic: &str) -> TopicConfig {
        let image = self.image.borrow();
        let empty = Default::default();
        let configs = image.topic(topic).map(|t| &t.configs).unwrap_or(&empty);
        TopicConfig::effective(configs, &self.config.topic_defaults)
    }

    fn log_config(&self, topic: &str) -> LogConfig {
        let mut config = self.topic_config(topic).log_config();
        // Keep the engine's bound on index spacing sane for tiny values.
        config.index_interval_bytes = config.index_interval_bytes.max(1);
        config
    }

    /// Whether this broker keeps a replica of the partition.
    fn has_replica_here(&self, topic: &str, partition: i32) -> bool {
        let image = self.image.borrow();
        u32::try_from(partition)
            .ok()
            .and_then(|p| image.topic(topic)?.partition(p))
            .is_some_and(|p| p.has_replica_on(self.config.node_id))
    }

    /// Creates the partitions of `topic` placed on this shard among
    /// `first_index..`.
    async fn create_owned_partitions(
        &self,
        topic: &str,
        first_index: usize,
        partition_shards: &[u32],
    ) {
        for (offset, &placed) in partition_shards.iter().enumerate() {
            if placed as usize % self.shard_count != self.shard_id {
                continue;
            }
            let index = (first_index + offset) as i32;
            if !self.has_replica_here(topic, index) {
                continue;
            }
            self.serve_partition_here(topic, index, false).await;
        }
    }

    /// Serves one placed partition: opens (and recovers) its directory if
    /// there is one, else creates its files. If that fails (out of
    /// descriptors or disk, a damaged directory), the partition is offline
    /// here (KAFKA_STORAGE_ERROR) until a retry succeeds; its files are left
    /// as they are. True if it serves. `clean`: the last stop was clean
    /// (checkpoints can be trusted).
    async fn serve_partition_here(&self, topic: &str, index: i32, clean: bool) -> bool {
        match self.open_or_create(topic, index, clean).await {
            Ok(()) => {
                if self
                    .unopened
                    .borrow_mut()
                    .remove(&(topic.to_string(), index))
                    .is_some()
                {
                    info!(topic = %topic, partition = index, "partition opened on retry; it serves again");
                }
                true
            }
            Err(e) => {
                let known = self
                    .unopened
                    .borrow_mut()
                    .insert((topic.to_string(), index), e.to_string())
                    .is_some();
                if !known {
                    error!(topic = %topic, partition = index, error = %e, "cannot open or create partition: it is offline (produce and fetch get KAFKA_STORAGE_ERROR) and is retried every maintenance tick");
                }
                false
            }
        }
    }

    async fn open_or_create(&self, topic: &str, index: i32, clean: bool) -> std::io::Result<()> {
        let dir = partition_dir(&self.config.data_dir, topic, index);
        // Room for its active segment; recovery may open more, and the
        // budget closes the oldest again once it is installed.
        let room = self.file_budget.make_room().await;
        let (opened, report) = if std::fs::symlink_metadata(&dir).is_ok() {
            let (log, files, report) = open_partition(&dir, self.log_config(topic), clean).await?;
            let (producers, txns) = if report.offline_reason.is_some() {
                // Not served: its log is not read.
                (ProducerStates::default(), PartitionTxns::new())
            } else {
                let source = RecoveredFiles {
                    dir: &dir,
                    files: &files,
                };
                recover_producer_states(&dir, &log, &source, now_ms()).await?
            };
            let opened = OpenedLog {
                log,
                files,
                producers,
                txns,
            };
            (opened, report)
        } else {
            let (log, files) = create_partition(&dir, self.log_config(topic)).await?;
            let opened = OpenedLog {
                log,
                files,
                producers: ProducerStates::default(),
                txns: Default::default(),
            };
            (opened, Default::default())
        };
        let partition = self.install(topic, index, dir, opened);
        drop(room);
        if report.checkpoint_used {
            partition.set_checkpoint_current();
        }
        let replicated = {
            let image = self.image.borrow();
            u32::try_from(index)
                .ok()
                .and_then(|p| image.topic(topic)?.partition(p))
                .is_some_and(|p| p.replicas.len() > 1)
        };
        if let Some(reason) = &report.offline_reason {
            partition.set_offline(reason);
        } else if replicated {
            partition.load_epochs().await;
            partition.hold_back_high_watermark();
        }
        self.settle_role(&partition).await;
        Ok(())
    }

    /// Retries the partitions whose creation failed (maintenance tick).
    pub async fn retry_unopened(&self) {
        let pending: Vec<(String, i32)> = self.unopened.borrow().keys().cloned().collect();
        let mut failures_in_a_row = 0;
        for (topic, index) in pending {
            if !self.has_replica_here(&topic, index) || self.partition(&topic, index).is_some() {
                self.unopened.borrow_mut().remove(&(topic, index));
                continue;
            }
            if self.serve_partition_here(&topic, index, false).await {
                failures_in_a_row = 0;
            } else {
                // Many in a row: still short of the resource, the rest would
                // fail too. A few: one broken directory, which must not keep
                // the others offline.
                failures_in_a_row += 1;
                if failures_in_a_row == RETRY_FAILURES_IN_A_ROW_MAX {
                    return;
                }
            }
        }
    }

    /// What a request for a partition this shard does not serve gets:
    /// KAFKA_STORAGE_ERROR if it is placed here but its files could not be
    /// created, else NOT_LEADER_OR_FOLLOWER (not here, or not yet).
    pub fn absent_partition_error(&self, topic: &str, partition: i32) -> ErrorCode {
        if self
            .unopened
            .borrow()
            .contains_key(&(topic.to_string(), partition))
        {
            codes::KAFKA_STORAGE_ERROR
        } else {
            codes::NOT_LEADER_OR_FOLLOWER
        }
    }

    /// Partitions placed here that do not serve (files not created, or found
    /// damaged at open), among `topics` (None: all).
    pub fn offline_here(&self, topics: Option<&[String]>) -> Vec<OfflinePartition> {
        let wanted = |topic: &str| topics.is_none_or(|names| names.iter().any(|n| n == topic));
        let mut offline: Vec<OfflinePartition> = self
            .unopened
            .borrow()
            .iter()
            .filter(|((topic, _), _)| wanted(topic))
            .map(|((topic, partition), reason)| OfflinePartition {
                topic: topic.clone(),
                partition: *partition,
                reason: reason.clone(),
            })
            .collect();
        offline.extend(
            self.partitions
                .borrow()
                .values()
                .filter(|p| p.is_offline() && wanted(&p.topic))
                .map(|p| OfflinePartition {
                    topic: p.topic.clone(),
                    partition: p.index,
                    reason: "damaged at open (see the log)".to_string(),
                }),
        );
        offline
    }

    /// Whether every partition of `topics` placed on this shard was created
    /// (it serves) or failed (it is offline); false for a topic this shard
    /// has not applied yet.
    pub fn topics_settled(&self, topics: &[String]) -> bool {
        let image = self.image.borrow();
        topics.iter().all(|name| {
            let Some(topic) = image.topic(name) else {
                return false;
            };
            (0..topic.partition_count() as i32).all(|index| {
                owner_shard(topic, index, self.shard_count) != Some(self.shard_id)
                    || !topic
                        .partition(index as u32)
                        .is_some_and(|p| p.has_replica_on(self.config.node_id))
                    || self.partition(name, index).is_some()
                    || self.unopened.borrow().contains_key(&(name.clone(), index))
            })
        })
    }

    /// Partitions placed here that do not serve: files not created, or
    /// found damaged at open.
    pub fn offline_partition_count(&self) -> usize {
        let damaged = self
            .partitions
            .borrow()
            .values()
            .filter(|p| p.is_offline())
            .count();
        self.unopened.borrow().len() + damaged
    }

    pub async fn apply(&self, record: &MetadataRecord) {
        if let Err(e) = self.image.borrow_mut().apply(record) {
            warn!(shard = self.shard_id, error = %e, "metadata record does not apply");
            return;
        }
        self.replicated_topics.borrow_mut().take();
        match record {
            MetadataRecord::CreateTopic {
                name,
                partition_shards,
                ..
            } => {
                self.create_owned_partitions(name, 0, partition_shards)
                    .await;
                info!(shard = self.shard_id, topic = %name, partitions = partition_shards.len(), "topic created");
            }
            MetadataRecord::AddPartitions {
                name,
                partition_shards,
            } => {
                let total = self
                    .image
                    .borrow()
                    .topic(name)
                    .map_or(0, |t| t.partition_count());
                let first = total - partition_shards.len();
                self.create_owned_partitions(name, first, partition_shards)
                    .await;
                info!(shard = self.shard_id, topic = %name, partitions = total, "partitions added");
            }
            MetadataRecord::SetTopicConfigs { name, .. } => {
                let config = self.log_config(name);
                for partition in self.owned_partitions().iter().filter(|p| &p.topic == name) {
                    partition.set_config(config);
                }
                info!(shard = self.shard_id, topic = %name, "topic configs changed");
            }
            // The controller's own bookkeeping: nothing to apply on a shard.
            MetadataRecord::ReserveProducerIds { .. } => {}
            // Topics with replicas: until shards know their node id, every
            // broker hosts every partition, by slot, as for `CreateTopic`.
            MetadataRecord::CreateReplicatedTopic { name, .. }
            | MetadataRecord::RestoreTopic { name, .. } => {
                let slots: Vec<u32> = self.image.borrow().topic(name).map_or(Vec::new(), |t| {
                    t.partitions.iter().map(|p| p.slot).collect()
                });
                self.create_owned_partitions(name, 0, &slots).await;
                info!(shard = self.shard_id, topic = %name, partitions = slots.len(), "topic created");
            }
            MetadataRecord::AddReplicatedPartitions { name, partitions } => {
                let total = self
                    .image
                    .borrow()
                    .topic(name)
                    .map_or(0, |t| t.partition_count());
                let slots: Vec<u32> = partitions.iter().map(|p| p.slot).collect();
                self.create_owned_partitions(name, total - slots.len(), &slots)
                    .await;
                info!(shard = self.shard_id, topic = %name, partitions = total, "partitions added");
            }
            // A new leader, epoch or ISR: the replica here takes its role.
            MetadataRecord::PartitionChange {
                topic, partition, ..
            } => {
                let owned = i32::try_from(*partition)
                    .ok()
                    .and_then(|p| self.partition(topic, p));
                if let Some(owned) = owned {
                    self.settle_role(&owned).await;
                }
            }
            // A broker registered again (perhaps on other ports): the
            // partitions followed from it reconnect.
            MetadataRecord::RegisterBroker { .. } => {
                self.settle_roles_of(self.owned_partitions()).await;
            }
            // Liveness alone: leadership moves by `PartitionChange`.
            MetadataRecord::FenceBroker { .. }
            | MetadataRecord::UnfenceBroker { .. }
            | MetadataRecord::UnregisterBroker { .. }
            | MetadataRecord::BrokerEpochSeen { .. } => {}
            MetadataRecord::DeleteTopic { name } => {
                self.unopened
                    .borrow_mut()
                    .retain(|(topic, _), _| topic != name);
                let owned = self.partitions.borrow_mut().remove_topic(name);
                for partition in owned {
                    self.fetchers.unfollow(name, partition.index);
                    if let Err(e) = partition.delete().await {
                        error!(topic = %name, partition = partition.index, error = %e, "cannot delete partition files");
                    }
                }
            }
        }
    }

    /// Opens (and if needed recovers) every partition placed on this shard.
    /// One that cannot be opened is offline (and retried), not a reason to
    /// refuse to start: the others serve.
    pub async fn open_partitions(&self, clean: bool) {
        let topics: Vec<TopicImage> = self.image.borrow().topics().cloned().collect();
        for topic in topics {
            for index in 0..topic.partition_count() as i32 {
                if owner_shard(&topic, index, self.shard_count) != Some(self.shard_id)
                    || !self.has_replica_here(&topic.name, index)
                {
                    continue;
                }
                self.serve_partition_here(&topic.name, index, clean).await;
            }
        }
    }

    pub async fn close_partitions(&self) -> bool {
        let partitions: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        let mut clean = true;
        for partition in partitions {
            if let Err(e) = partition.close().await {
                error!(topic = %partition.topic, partition = partition.index, error = %e, "unclean partition close");
                clean = false;
            }
        }
        clean
    }
}

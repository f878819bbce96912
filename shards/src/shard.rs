//! One shard: a glommio executor pinned to a core that owns a set of
//! partitions, accepts connections on its own SO_REUSEPORT listener, and talks
//! to the other shards only through the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use engine::log::LogConfig;
use engine::metadata::{validate_topic_config, TopicConfig};
use engine::metadata::{ClusterImage, MetadataRecord, TopicImage};
use engine::protocol::{self as codes, ErrorCode};
use futures::channel::oneshot;
use futures::future::{select, Either, LocalBoxFuture};
use futures::FutureExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use tracing::{error, info, warn};

use crate::config::BrokerConfig;
use crate::controller::MetadataLog;
use crate::group_commit::GroupCommit;
use crate::groups::GroupHost;
use crate::mesh::{
    ConfigChange, FetchWait, MeshMessage, PartitionRead, ReadOutcome, ShardOp, ShardReply,
    TopicResult, TopicSpec,
};
use crate::metrics::ShardMetrics;
use crate::partition::{DataSignal, Partition};
use crate::partition_files::{create_partition, open_partition, partition_dir};
use crate::shutdown::StopFlag;
use crate::splice::SpliceRing;

/// Bound on read-and-park rounds of one fetch long-poll (each round follows
/// a write to one of its partitions).
const FETCH_WAIT_ROUNDS_MAX: usize = 1000;

/// Record bytes found by a set of reads.
pub fn read_bytes(outcomes: &[Result<ReadOutcome, ErrorCode>]) -> usize {
    outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok()?.records.as_ref())
        .map(|slice| slice.len as usize)
        .sum()
}

/// What ended one park of a fetch's reads (see `Shard::park`).
enum Woken {
    /// A partition has new data: read again.
    Data,
    /// The fetch's shard has enough from others: read again and answer.
    Ended,
    /// Time is up, or nothing is left to wait on: answer with the reads.
    Stop,
}

/// One topic's partitions on a shard, by index (None: not owned here).
type TopicSlots = [Option<Rc<Partition>>];

/// The partitions one shard owns, by topic then index, so that a lookup by
/// `&str` allocates nothing (it runs for every partition of every request).
#[derive(Default)]
pub struct OwnedPartitions {
    by_topic: HashMap<String, Vec<Option<Rc<Partition>>>>,
}

impl OwnedPartitions {
    pub fn get(&self, topic: &str, index: i32) -> Option<&Rc<Partition>> {
        let slots = self.by_topic.get(topic)?;
        slots.get(usize::try_from(index).ok()?)?.as_ref()
    }

    /// Every slot of `topic`, by index.
    pub fn topic(&self, topic: &str) -> Option<&TopicSlots> {
        self.by_topic.get(topic).map(Vec::as_slice)
    }

    pub fn insert(&mut self, partition: Rc<Partition>) {
        let index = usize::try_from(partition.index).expect("partition indexes are >= 0");
        let slots = self.by_topic.entry(partition.topic.clone()).or_default();
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        slots[index] = Some(partition);
    }

    /// Takes every partition of `topic` out of the map.
    pub fn remove_topic(&mut self, topic: &str) -> Vec<Rc<Partition>> {
        let slots = self.by_topic.remove(topic).unwrap_or_default();
        slots.into_iter().flatten().collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &Rc<Partition>> {
        self.by_topic.values().flatten().flatten()
    }

    pub fn len(&self) -> usize {
        self.values().count()
    }
}

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: BrokerConfig,
    image: RefCell<ClusterImage>,
    partitions: RefCell<OwnedPartitions>,
    senders: Senders<MeshMessage>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
    next_request_id: Cell<u64>,
    /// Fetch long-polls parked on this shard, by (origin shard, fetch id):
    /// the sender ends the wait early (see `ShardOp::EndWait`).
    parked_fetches: RefCell<HashMap<(usize, u64), oneshot::Sender<()>>>,
    next_fetch_id: Cell<u64>,
    pub group_commit: Rc<GroupCommit>,
    /// Shard 0 only: the metadata log, serialised by the RefCell being taken
    /// for the whole of one controller operation.
    metadata_log: RefCell<Option<MetadataLog>>,
    controller_busy: glommio::sync::Semaphore,
    /// Bytes of requests in flight on this shard (see `shard_request_bytes_max`).
    pub request_memory: Rc<glommio::sync::Semaphore>,
    pub groups: GroupHost,
    pub stop: StopFlag,
    pub metrics: ShardMetrics,
    /// Zero-copy sends of fetched record sets (see `splice`).
    pub splice: Rc<SpliceRing>,
}

/// The shard that owns a partition, from its placement.
pub fn owner_shard(topic: &TopicImage, partition: i32, shard_count: usize) -> Option<usize> {
    let placed = *topic
        .partition_shards
        .get(usize::try_from(partition).ok()?)?;
    Some(placed as usize % shard_count)
}

fn route_in(
    topic: Option<&TopicImage>,
    partition: i32,
    shard_count: usize,
) -> Result<usize, ErrorCode> {
    topic
        .and_then(|t| owner_shard(t, partition, shard_count))
        .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)
}

impl Shard {
    pub fn image(&self) -> std::cell::Ref<'_, ClusterImage> {
        self.image.borrow()
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(topic, partition).cloned()
    }

    /// The owner of a partition, or the error a client should see.
    pub fn owned_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    pub fn route(&self, topic: &str, partition: i32) -> Result<usize, ErrorCode> {
        route_in(self.image.borrow().topic(topic), partition, self.count)
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
            .map(|partition| route_in(topic, partition, self.count))
            .collect()
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

    /// Creates the partitions of `topic` placed on this shard among
    /// `first_index..`.
    async fn create_owned_partitions(
        &self,
        topic: &str,
        first_index: usize,
        partition_shards: &[u32],
    ) {
        for (offset, &placed) in partition_shards.iter().enumerate() {
            if placed as usize % self.count != self.id {
                continue;
            }
            let index = (first_index + offset) as i32;
            let dir = partition_dir(&self.config.data_dir, topic, index);
            match create_partition(&dir, self.log_config(topic)).await {
                Ok((log, files)) => {
                    let partition = Partition::new(
                        topic.to_string(),
                        index,
                        dir,
                        log,
                        files,
                        self.config.segment_write_mode,
                    );
                    self.partitions.borrow_mut().insert(partition);
                }
                Err(e) => {
                    error!(topic = %topic, partition = index, error = %e, "cannot create partition")
                }
            }
        }
    }

    /// Runs `op` on shard `target`: inline when it is this shard, otherwise
    /// as a mesh request. The send happens before this returns (so callers
    /// that await it in order keep their order); the returned future waits
    /// for the answer.
    pub async fn dispatch(
        self: &Rc<Self>,
        target: usize,
        op: ShardOp,
    ) -> LocalBoxFuture<'static, ShardReply> {
        if target == self.id {
            return self.clone().start_op(op);
        }
        self.metrics.mesh_hops.set(self.metrics.mesh_hops.get() + 1);
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (sender, receiver) = oneshot::channel();
        self.pending.borrow_mut().insert(id, sender);
        if self
            .senders
            .send_to(target, MeshMessage::Request { id, op })
            .await
            .is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return async { ShardReply::Append(Err(codes::UNKNOWN_SERVER_ERROR)) }.boxed_local();
        }
        async move {
            receiver
                .await
                .unwrap_or(ShardReply::Append(Err(codes::UNKNOWN_SERVER_ERROR)))
        }
        .boxed_local()
    }

    pub async fn call(self: &Rc<Self>, target: usize, op: ShardOp) -> ShardReply {
        self.dispatch(target, op).await.await
    }

    /// Starts an op on this shard. Appends enqueue synchronously, here, so
    /// that they keep the order in which they arrived.
    fn start_op(self: Rc<Self>, op: ShardOp) -> LocalBoxFuture<'static, ShardReply> {
        match op {
            ShardOp::Append {
                topic,
                partition,
                records,
                acks,
            } => {
                let Some(owned) = self.partition(&topic, partition) else {
                    return async { ShardReply::Append(Err(codes::NOT_LEADER_OR_FOLLOWER)) }
                        .boxed_local();
                };
                let written = owned.enqueue(records);
                let group_commit = self.group_commit.clone();
                async move {
                    let outcome = written.await.unwrap_or(Err(codes::UNKNOWN_SERVER_ERROR));
                    if acks == -1 && outcome.is_ok() && !group_commit.sync(&owned).await {
                        return ShardReply::Append(Err(codes::KAFKA_STORAGE_ERROR));
                    }
                    ShardReply::Append(outcome)
                }
                .boxed_local()
            }
            ShardOp::Read { reads, wait } => {
                // Registered before anything awaits, so an EndWait sent after
                // this Read (mesh queues keep order) always finds it.
                let wait = wait.map(|w| {
                    let (sender, receiver) = oneshot::channel();
                    self.parked_fetches
                        .borrow_mut()
                        .insert((w.origin, w.id), sender);
                    (w, receiver)
                });
                async move { ShardReply::Read(self.read_partitions(&reads, wait).await) }
                    .boxed_local()
            }
            ShardOp::EndWait { origin, id } => {
                if let Some(end) = self.parked_fetches.borrow_mut().remove(&(origin, id)) {
                    let _ = end.send(());
                }
                async { ShardReply::Applied }.boxed_local()
            }
            other => async move { self.run_op(other).await }.boxed_local(),
        }
    }

    async fn run_op(self: Rc<Self>, op: ShardOp) -> ShardReply {
        match op {
            ShardOp::Append { .. } => unreachable!("appends start in start_op"),
            ShardOp::Read { .. } | ShardOp::EndWait { .. } => {
                unreachable!("reads start in start_op")
            }
            ShardOp::DeleteRecords {
                topic,
                partition,
                offset,
            } => match self.partition(&topic, partition) {
                Some(p) => {
                    ShardReply::ListOffset(p.delete_records(offset).await.map(|start| (start, -1)))
                }
                None => ShardReply::ListOffset(Err(codes::NOT_LEADER_OR_FOLLOWER)),
            },
            ShardOp::Metrics => ShardReply::Metrics(Box::new(self.metrics_snapshot())),
            ShardOp::LogDirSizes => ShardReply::Sizes(
                self.owned_partitions()
                    .iter()
                    .map(|p| (p.topic.clone(), p.index, p.size_bytes()))
                    .collect(),
            ),
            ShardOp::ListOffset {
                topic,
                partition,
                timestamp_ms,
            } => match self.partition(&topic, partition) {
                Some(p) => ShardReply::ListOffset(p.list_offset(timestamp_ms).await),
                None => ShardReply::ListOffset(Err(codes::NOT_LEADER_OR_FOLLOWER)),
            },
            ShardOp::CreateTopics { topics } => {
                ShardReply::Topics(self.create_topics(topics).await)
            }
            ShardOp::DeleteTopics { names } => ShardReply::Topics(self.delete_topics(names).await),
            ShardOp::AlterTopicConfigs { changes } => {
                ShardReply::Topics(self.alter_topic_configs(changes).await)
            }
            ShardOp::AddPartitions { topics } => {
                ShardReply::Topics(self.add_partitions(topics).await)
            }
            ShardOp::ApplyMetadata { record } => {
                self.apply_metadata(&record).await;
                ShardReply::Applied
            }
            ShardOp::Group(op) => ShardReply::Group(self.run_group_op(op).await),
        }
    }

    /// A new id for a fetch started on this shard (see [`FetchWait`]).
    pub fn next_fetch_id(&self) -> u64 {
        let id = self.next_fetch_id.get();
        self.next_fetch_id.set(id + 1);
        id
    }

    /// The owned partition of every read (None where this shard owns none).
    /// A fetch lists its partitions topic by topic, so each run of reads of
    /// one topic looks the topic up once.
    fn partitions_of(&self, reads: &[PartitionRead]) -> Vec<Option<Rc<Partition>>> {
        let owned = self.partitions.borrow();
        let mut current: Option<(&str, Option<&TopicSlots>)> = None;
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

    /// Reads every partition once. Caught-up partitions (most of a long
    /// poll's) answer from memory; only those with batches to plan await.
    async fn read_once(&self, reads: &[PartitionRead]) -> Vec<Result<ReadOutcome, ErrorCode>> {
        let mut outcomes = Vec::with_capacity(reads.len());
        let mut planned = Vec::new();
        let owned = self.partitions_of(reads);
        for (i, (read, owner)) in reads.iter().zip(owned).enumerate() {
            let outcome = match owner {
                None => Some(Err(codes::NOT_LEADER_OR_FOLLOWER)),
                Some(p) => {
                    let outcome = p.read_without_io(read.offset);
                    if outcome.is_none() {
                        planned.push((i, p, read));
                    }
                    outcome
                }
            };
            outcomes.push(outcome);
        }
        let done = futures::future::join_all(
            planned
                .iter()
                .map(|(_, p, read)| p.read(read.offset, read.max_bytes)),
        )
        .await;
        for ((i, _, _), outcome) in planned.iter().zip(done) {
            outcomes[*i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every read has an outcome"))
            .collect()
    }

    /// Reads every partition. With `wait`, a read that finds fewer than
    /// `min_bytes` parks until a partition gets data past what was read,
    /// the fetch's shard ends the wait (the receiver), or time runs out, and
    /// reads again. No polling: partitions wake their waiters on write.
    async fn read_partitions(
        &self,
        reads: &[PartitionRead],
        wait: Option<(FetchWait, oneshot::Receiver<()>)>,
    ) -> Vec<Result<ReadOutcome, ErrorCode>> {
        let started = std::time::Instant::now();
        let mut outcomes = self.read_once(reads).await;
        let Some((wait, mut ended)) = wait else {
            return outcomes;
        };
        for _round in 0..FETCH_WAIT_ROUNDS_MAX {
            let enough = outcomes.iter().any(|o| o.is_err())
                || read_bytes(&outcomes) >= wait.min_bytes.max(1);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            if enough || elapsed_ms >= wait.timeout_ms {
                break;
            }
            let remaining_ms = wait.timeout_ms - elapsed_ms;
            match self.park(reads, &outcomes, remaining_ms, &mut ended).await {
                Woken::Data => outcomes = self.read_once(reads).await,
                Woken::Ended => {
                    outcomes = self.read_once(reads).await;
                    break;
                }
                Woken::Stop => break,
            }
        }
        self.parked_fetches
            .borrow_mut()
            .remove(&(wait.origin, wait.id));
        outcomes
    }

    /// Parks a fetch's reads until a partition has data past the high
    /// watermark its read saw, `ended` fires, or `timeout_ms` passes.
    async fn park(
        &self,
        reads: &[PartitionRead],
        outcomes: &[Result<ReadOutcome, ErrorCode>],
        timeout_ms: u64,
        ended: &mut oneshot::Receiver<()>,
    ) -> Woken {
        let signal = Rc::new(DataSignal::default());
        let mut watching = false;
        let owned = self.partitions_of(reads);
        for ((read, outcome), owner) in reads.iter().zip(outcomes).zip(owned) {
            let seen = outcome.as_ref().map_or(read.offset, |o| o.high_watermark);
            let Some(p) = owner else {
                continue;
            };
            if !p.watch_beyond(seen.max(read.offset), &signal) {
                // A write landed while the reads ran.
                return Woken::Data;
            }
            watching = true;
        }
        if !watching {
            // Nothing here to wait on (moved or deleted): the reads stand.
            return Woken::Stop;
        }
        let timer = glommio::timer::sleep(Duration::from_millis(timeout_ms));
        futures::pin_mut!(timer);
        let fired = signal.fired();
        futures::pin_mut!(fired);
        let woken = select(fired, select(timer, ended)).await;
        match woken {
            Either::Left(_) => Woken::Data,
            // Time is up: nothing new arrived, the reads stand.
            Either::Right((Either::Left(_), _)) => Woken::Stop,
            Either::Right((Either::Right(_), _)) => Woken::Ended,
        }
    }

    async fn broadcast(self: &Rc<Self>, record: &MetadataRecord) {
        let calls = (0..self.count).map(|target| {
            let op = ShardOp::ApplyMetadata {
                record: record.clone(),
            };
            let shard = self.clone();
            async move { shard.call(target, op).await }
        });
        futures::future::join_all(calls).await;
    }

    async fn create_topics(self: &Rc<Self>, specs: Vec<TopicSpec>) -> Vec<TopicResult> {
        assert_eq!(self.id, 0, "shard 0 is the controller");
        let _permit = self.controller_busy.acquire_permit(1).await;
        let mut results = Vec::with_capacity(specs.len());
        let mut planned = self.image.borrow().clone();
        let mut records = Vec::new();
        for spec in specs {
            let partitions = if spec.partitions == -1 {
                self.config.default_partitions as i32
            } else {
                spec.partitions
            };
            let mut result = TopicResult {
                name: spec.name.clone(),
                error: codes::NONE,
                message: None,
                partitions,
            };
            if spec.replication_factor != -1 && spec.replication_factor != 1 {
                result.error = codes::INVALID_REPLICATION_FACTOR;
                result.message = Some("a single-node cluster has replication factor 1".into());
                results.push(result);
                continue;
            }
            if let Some(e) = spec
                .configs
                .iter()
                .find_map(|(k, v)| validate_topic_config(k, v).err())
            {
                result.error = codes::INVALID_CONFIG;
                result.message = Some(e);
                results.push(result);
                continue;
            }
            if partitions < 1 {
                result.error = codes::INVALID_PARTITIONS;
                result.message = Some(format!("partition count {partitions} must be at least 1"));
                results.push(result);
                continue;
            }
            let record = MetadataRecord::CreateTopic {
                name: spec.name.clone(),
                topic_id: *uuid::Uuid::new_v4().as_bytes(),
                partition_shards: planned.place_partitions(partitions as usize, self.count),
                configs: spec.configs.clone(),
            };
            if let Err(e) = planned.apply(&record) {
                result.error = match e {
                    engine::metadata::MetadataError::TopicExists(_) => codes::TOPIC_ALREADY_EXISTS,
                    engine::metadata::MetadataError::InvalidTopicName(..) => {
                        codes::INVALID_TOPIC_EXCEPTION
                    }
                    engine::metadata::MetadataError::InvalidPartitions(_) => {
                        codes::INVALID_PARTITIONS
                    }
                    engine::metadata::MetadataError::UnknownTopic(_) => {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    }
                };
                result.message = Some(e.to_string());
            } else if !spec.validate_only {
                records.push(record);
            }
            results.push(result);
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    async fn alter_topic_configs(self: &Rc<Self>, changes: Vec<ConfigChange>) -> Vec<TopicResult> {
        assert_eq!(self.id, 0, "shard 0 is the controller");
        let _permit = self.controller_busy.acquire_permit(1).await;
        let mut planned = self.image.borrow().clone();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for change in changes {
            let mut result = TopicResult {
                name: change.topic.clone(),
                error: codes::NONE,
                message: None,
                partitions: -1,
            };
            let Some(current) = planned.topic(&change.topic) else {
                result.error = codes::UNKNOWN_TOPIC_OR_PARTITION;
                results.push(result);
                continue;
            };
            let mut configs = if change.incremental {
                current.configs.clone()
            } else {
                Default::default()
            };
            for (key, value) in &change.set {
                configs.insert(key.clone(), value.clone());
            }
            for key in &change.delete {
                configs.remove(key);
            }
            if let Some(e) = configs
                .iter()
                .find_map(|(k, v)| validate_topic_config(k, v).err())
            {
                result.error = codes::INVALID_CONFIG;
                result.message = Some(e);
                results.push(result);
                continue;
            }
            let record = MetadataRecord::SetTopicConfigs {
                name: change.topic.clone(),
                configs: configs.into_iter().collect(),
            };
            if !change.validate_only {
                planned.apply(&record).expect("checked: topic exists");
                records.push(record);
            }
            results.push(result);
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    async fn add_partitions(self: &Rc<Self>, topics: Vec<(String, i32, bool)>) -> Vec<TopicResult> {
        assert_eq!(self.id, 0, "shard 0 is the controller");
        let _permit = self.controller_busy.acquire_permit(1).await;
        let mut planned = self.image.borrow().clone();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (name, count, validate_only) in topics {
            let mut result = TopicResult {
                name: name.clone(),
                error: codes::NONE,
                message: None,
                partitions: count,
            };
            let Some(current) = planned.topic(&name).map(|t| t.partition_count() as i32) else {
                result.error = codes::UNKNOWN_TOPIC_OR_PARTITION;
                results.push(result);
                continue;
            };
            if count <= current {
                result.error = codes::INVALID_PARTITIONS;
                result.message = Some(format!(
                    "topic has {current} partitions; the new count {count} must be larger"
                ));
                results.push(result);
                continue;
            }
            let record = MetadataRecord::AddPartitions {
                name: name.clone(),
                partition_shards: planned.place_partitions((count - current) as usize, self.count),
            };
            match planned.apply(&record) {
                Ok(()) if !validate_only => records.push(record),
                Ok(()) => {}
                Err(e) => {
                    result.error = codes::INVALID_PARTITIONS;
                    result.message = Some(e.to_string());
                }
            }
            results.push(result);
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    async fn delete_topics(self: &Rc<Self>, names: Vec<String>) -> Vec<TopicResult> {
        assert_eq!(self.id, 0, "shard 0 is the controller");
        let _permit = self.controller_busy.acquire_permit(1).await;
        let mut planned = self.image.borrow().clone();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for name in names {
            let record = MetadataRecord::DeleteTopic { name: name.clone() };
            let error = match planned.apply(&record) {
                Ok(()) => {
                    records.push(record);
                    codes::NONE
                }
                Err(_) => codes::UNKNOWN_TOPIC_OR_PARTITION,
            };
            results.push(TopicResult {
                name,
                error,
                message: None,
                partitions: -1,
            });
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    /// Commits the planned records; if the metadata log write fails, every
    /// result that had succeeded becomes KAFKA_STORAGE_ERROR.
    async fn commit_and_report(
        self: &Rc<Self>,
        records: &[MetadataRecord],
        results: &mut [TopicResult],
    ) {
        if !self.commit_metadata(records).await {
            for result in results.iter_mut().filter(|r| r.error == codes::NONE) {
                result.error = codes::KAFKA_STORAGE_ERROR;
            }
        }
    }

    /// Makes records durable in the metadata log, then has every shard apply
    /// them. Returns false if the log write failed (nothing was applied).
    async fn commit_metadata(self: &Rc<Self>, records: &[MetadataRecord]) -> bool {
        if records.is_empty() {
            return true;
        }
        let mut log = self
            .metadata_log
            .borrow_mut()
            .take()
            .expect("controller holds the log");
        let appended = log.append(records).await;
        *self.metadata_log.borrow_mut() = Some(log);
        if let Err(e) = appended {
            error!(error = %e, "metadata log append failed");
            return false;
        }
        for record in records {
            self.broadcast(record).await;
        }
        true
    }

    async fn apply_metadata(self: &Rc<Self>, record: &MetadataRecord) {
        if let Err(e) = self.image.borrow_mut().apply(record) {
            warn!(shard = self.id, error = %e, "metadata record does not apply");
            return;
        }
        match record {
            MetadataRecord::CreateTopic {
                name,
                partition_shards,
                ..
            } => {
                self.create_owned_partitions(name, 0, partition_shards)
                    .await;
                info!(shard = self.id, topic = %name, partitions = partition_shards.len(), "topic created");
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
                info!(shard = self.id, topic = %name, partitions = total, "partitions added");
            }
            MetadataRecord::SetTopicConfigs { name, .. } => {
                let config = self.log_config(name);
                for partition in self.owned_partitions().iter().filter(|p| &p.topic == name) {
                    partition.set_config(config);
                }
                info!(shard = self.id, topic = %name, "topic configs changed");
            }
            MetadataRecord::DeleteTopic { name } => {
                let owned = self.partitions.borrow_mut().remove_topic(name);
                for partition in owned {
                    if let Err(e) = partition.delete().await {
                        error!(topic = %name, partition = partition.index, error = %e, "cannot delete partition files");
                    }
                }
            }
        }
    }

    /// Log maintenance until the shard stops: time-based rolls and
    /// compaction every `log.cleaner.backoff.ms`, retention every
    /// `log.retention.check.interval.ms`. Runs in a low-priority task queue
    /// and yields between partitions, so produce and fetch come first.
    async fn maintenance_loop(self: Rc<Self>) {
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
            for partition in self.owned_partitions() {
                let config = self.topic_config(&partition.topic);
                let now = crate::now_ms();
                if let Err(e) = partition.roll_if_idle_expired(now).await {
                    error!(topic = %partition.topic, partition = partition.index, error = %e, "roll failed");
                }
                if config.cleanup_compact {
                    if let Err(e) = partition.clean(&config, now).await {
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
        }
    }

    /// Opens (and if needed recovers) every partition placed on this shard.
    async fn open_partitions(&self, clean: bool) -> std::io::Result<()> {
        let topics: Vec<TopicImage> = self.image.borrow().topics().cloned().collect();
        for topic in topics {
            for index in 0..topic.partition_count() as i32 {
                if owner_shard(&topic, index, self.count) != Some(self.id) {
                    continue;
                }
                let dir = partition_dir(&self.config.data_dir, &topic.name, index);
                let (log, files, report) = if dir.exists() {
                    open_partition(&dir, self.log_config(&topic.name), clean).await?
                } else {
                    let (log, files) = create_partition(&dir, self.log_config(&topic.name)).await?;
                    (log, files, Default::default())
                };
                let partition = Partition::new(
                    topic.name.clone(),
                    index,
                    dir,
                    log,
                    files,
                    self.config.segment_write_mode,
                );
                if let Some(reason) = &report.offline_reason {
                    partition.set_offline(reason);
                }
                self.partitions.borrow_mut().insert(partition);
            }
        }
        Ok(())
    }

    async fn close_partitions(&self) -> bool {
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

    fn handle_mesh_message(self: &Rc<Self>, peer: usize, message: MeshMessage) {
        match message {
            MeshMessage::Request { id, op } => {
                let reply = self.clone().start_op(op);
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let reply = reply.await;
                    if shard
                        .senders
                        .send_to(peer, MeshMessage::Response { id, reply })
                        .await
                        .is_err()
                    {
                        warn!(shard = shard.id, peer, "mesh peer gone; reply dropped");
                    }
                })
                .detach();
            }
            MeshMessage::Response { id, reply } => {
                if let Some(waiter) = self.pending.borrow_mut().remove(&id) {
                    let _ = waiter.send(reply);
                }
            }
        }
    }
}

/// Listen backlog per shard listener.
const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket with SO_REUSEPORT (one per shard, the kernel spreads
/// connections) and SO_REUSEADDR (so a restart after a crash binds at once
/// although the old connections sit in TIME_WAIT, as Kafka does), handed to
/// glommio.
pub fn bind_listener(
    addr: std::net::SocketAddr,
    reuse_port: bool,
) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns; on
    // every error path it is closed before returning.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fail = |fd: i32| {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            Err(e)
        };
        let one: libc::c_int = 1;
        let options: &[libc::c_int] = if reuse_port {
            &[libc::SO_REUSEADDR, libc::SO_REUSEPORT]
        } else {
            &[libc::SO_REUSEADDR]
        };
        for &option in options {
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if set != 0 {
                return fail(fd);
            }
        }
        let bound = match addr {
            std::net::SocketAddr::V4(v4) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = v4.port().to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            std::net::SocketAddr::V6(v6) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = v6.port().to_be();
                sa.sin6_addr.s6_addr = v6.ip().octets();
                sa.sin6_scope_id = v6.scope_id();
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if bound != 0 || libc::listen(fd, LISTEN_BACKLOG) != 0 {
            return fail(fd);
        }
        Ok(glommio::net::TcpListener::from_raw_fd(fd))
    }
}

/// What a shard thread reports to the main thread once it is serving.
pub type Ready = std::sync::mpsc::Sender<Result<usize, String>>;

/// The body of one shard thread.
pub async fn run_shard(
    id: usize,
    config: BrokerConfig,
    image: ClusterImage,
    clean: bool,
    mesh: MeshBuilder<MeshMessage, Full>,
    stop: StopFlag,
    ready: Ready,
) -> bool {
    let count = config.shard_count;
    let (senders, mut receivers) = match mesh.join().await {
        Ok(joined) => joined,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id}: cannot join the shard mesh: {e}")));
            return false;
        }
    };
    let metadata_log = if id == 0 {
        match MetadataLog::open(&config.data_dir).await {
            Ok(log) => Some(log),
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "shard {id}: cannot open the metadata log: {e}"
                )));
                stop.raise();
                return false;
            }
        }
    } else {
        None
    };
    let listener = match bind_listener(config.listen, true) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "shard {id}: cannot listen on {}: {e}",
                config.listen
            )));
            stop.raise();
            return false;
        }
    };
    let splice = match SpliceRing::new() {
        Ok(ring) => ring,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "shard {id}: cannot set up the io_uring splice ring: {e}"
            )));
            stop.raise();
            return false;
        }
    };
    let config_request_bytes_max = config.shard_request_bytes_max;
    let group_config = config.groups;
    let shard = Rc::new(Shard {
        id,
        count,
        config,
        image: RefCell::new(image),
        partitions: RefCell::new(OwnedPartitions::default()),
        senders,
        pending: RefCell::new(HashMap::new()),
        next_request_id: Cell::new(0),
        parked_fetches: RefCell::new(HashMap::new()),
        next_fetch_id: Cell::new(0),
        group_commit: Rc::new(GroupCommit::default()),
        metadata_log: RefCell::new(metadata_log),
        controller_busy: glommio::sync::Semaphore::new(1),
        request_memory: Rc::new(glommio::sync::Semaphore::new(
            config_request_bytes_max as u64,
        )),
        groups: GroupHost::new(group_config),
        stop: stop.clone(),
        metrics: ShardMetrics::default(),
        splice,
    });
    for (peer, receiver) in receivers.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                shard.handle_mesh_message(peer, message);
            }
        })
        .detach();
    }
    if let Err(e) = shard.open_partitions(clean).await {
        let _ = ready.send(Err(format!("shard {id}: cannot open partitions: {e}")));
        stop.raise();
        return false;
    }
    shard.load_groups().await;
    let maintenance_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(10),
        glommio::Latency::NotImportant,
        "log-maintenance",
    );
    match glommio::spawn_local_into(shard.clone().maintenance_loop(), maintenance_queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => {
            warn!(shard = id, error = %e, "no low-priority queue; maintenance runs in the default one");
            glommio::spawn_local(shard.clone().maintenance_loop()).detach();
        }
    }
    glommio::spawn_local(shard.clone().group_ticker()).detach();
    let partitions = shard.partitions.borrow().len();
    let _ = ready.send(Ok(partitions));
    let accept = glommio::spawn_local(crate::connection::accept_loop(shard.clone(), listener));
    let metrics_http = match (id, shard.config.metrics_listen) {
        (0, Some(addr)) => crate::metrics::bind_metrics(addr).map(|listener| {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            glommio::spawn_local(crate::metrics::serve_http(shard.clone(), listener))
        }),
        _ => None,
    };
    stop.wait().await;
    drop(accept.cancel());
    if let Some(task) = metrics_http {
        drop(task.cancel());
    }
    let clean = shard.close_partitions().await;
    // Peers may still be closing; let in-flight mesh replies drain.
    glommio::timer::sleep(Duration::from_millis(50)).await;
    shard.senders.close();
    clean
}

/// Waits for `inner` or until `timeout_ms`, whichever is first.
pub async fn with_timeout<T>(
    timeout_ms: u64,
    inner: impl std::future::Future<Output = T>,
) -> Option<T> {
    let timer = glommio::timer::sleep(Duration::from_millis(timeout_ms));
    futures::pin_mut!(timer);
    futures::pin_mut!(inner);
    match select(inner, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

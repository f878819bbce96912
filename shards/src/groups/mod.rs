//! L2: the host of the group coordinator on a shard. Every shard
//! coordinates the groups whose `__consumer_offsets` partition it owns. It
//! loads them from those partitions at start, parks JoinGroup/SyncGroup
//! requests until the state machine completes them, ticks the timers, and
//! appends group records (offset commits durably, before they are
//! acknowledged). The classic protocol's state machine is engine's
//! `group::Coordinator`; the KIP-848 and share-group hosts will sit beside
//! this one.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::group::{
    offsets_partition_for, Completion, Coordinator, Effects, Group, GroupConfig, GroupDescription,
    GroupLogRecord, JoinResult, RequestToken, SyncResult, OFFSETS_TOPIC,
};
use engine::protocol::kafka_protocol::messages::ConsumerProtocolSubscription;
use engine::protocol::kafka_protocol::protocol::Decodable;
use engine::protocol::{self as codes, ErrorCode};
use engine::record::{
    build_batch, build_transactional_batch, decode_records, read_marker, BatchCompression,
    NewRecord,
};
use futures::channel::oneshot;
use tracing::{info, warn};

use crate::clock::steady_ms;
use crate::controller::Backend;
use crate::mesh::groups::{
    join_error, sync_error, CommitOffsets, CommitTxnOffsets, CommittedOffset, DeleteGroup,
    DeleteOffsets, DescribeGroup, FetchOffsets, FetchedOffset, GroupRequest, Heartbeat, JoinGroup,
    LeaveGroup, ListGroups, ListedGroup, PartitionErrors, SyncGroup,
};
use crate::mesh::{Call, Reply};
use crate::partition::Partition;
use crate::stop::StopFlag;

/// Shortest time between two runs of the group timers (sessions, rebalance
/// deadlines, retention): how often they run while a rebalance is in flight.
const GROUP_TICK_MS: i64 = 100;
/// Longest time between two runs while the shard coordinates groups, even
/// when no deadline is due sooner (a second line behind the deadlines).
const GROUP_TICK_MS_MAX: i64 = 1_000;
/// Bound on group operations that bring the next run forward while the
/// ticker waits; past it the ticker just runs.
const TICKER_WAKES_MAX: usize = 100_000;
/// How long an offset commit waits for its record to reach the ISR
/// (Kafka's `offsets.commit.timeout.ms`).
const OFFSET_COMMIT_TIMEOUT_MS: u64 = 5_000;

pub struct GroupHost {
    coordinator: RefCell<Coordinator>,
    parked: RefCell<HashMap<RequestToken, oneshot::Sender<Completion>>>,
    next_token: Cell<RequestToken>,
    loading: Cell<bool>,
    /// Offsets partitions whose groups are loading after this shard became
    /// their leader: group ops wait (COORDINATOR_LOAD_IN_PROGRESS).
    partitions_loading: Cell<usize>,
    /// The offsets partitions this shard leads and has loaded.
    loaded_partitions: RefCell<BTreeSet<i32>>,
    /// Set while the ticker sleeps: the next group operation wakes it, to
    /// start ticking (a shard with no groups takes no timer) or to bring
    /// the next run forward.
    ticker_parked: RefCell<Option<oneshot::Sender<()>>>,
    backend: Rc<Backend>,
    stop: StopFlag,
}

impl GroupHost {
    pub fn new(config: GroupConfig, backend: Rc<Backend>, stop: StopFlag) -> GroupHost {
        GroupHost {
            backend,
            stop,
            coordinator: RefCell::new(Coordinator::new(config)),
            parked: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            ticker_parked: RefCell::new(None),
            loading: Cell::new(true),
            partitions_loading: Cell::new(0),
            loaded_partitions: RefCell::new(BTreeSet::new()),
        }
    }

    fn park(&self) -> (RequestToken, oneshot::Receiver<Completion>) {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (sender, receiver) = oneshot::channel();
        self.parked.borrow_mut().insert(token, sender);
        (token, receiver)
    }
}

/// The `__consumer_offsets` records of a group's committed offsets.
fn offset_records(group_id: &str, offsets: Vec<CommittedOffset>) -> Vec<GroupLogRecord> {
    offsets
        .into_iter()
        .map(|offset| GroupLogRecord::Offset {
            group_id: group_id.to_string(),
            topic: offset.topic,
            partition: offset.partition,
            value: Some(offset.value),
        })
        .collect()
}

/// Whether the group's members subscribe to `topic` (consumer protocol).
fn subscribed(group: &Group, topic: &str) -> bool {
    if group.protocol_type.as_deref() != Some("consumer") {
        return false;
    }
    group.member_metadata().iter().any(|metadata| {
        let mut buf = metadata.clone();
        if buf.len() < 2 {
            return false;
        }
        let version = i16::from_be_bytes([buf[0], buf[1]]);
        let _ = bytes::Buf::get_i16(&mut buf);
        ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
            .map(|s| s.topics.iter().any(|t| t.as_str() == topic))
            .unwrap_or(true)
    })
}

/// The `__consumer_offsets` partition of a group and the shard that owns
/// it (its coordinator).
pub fn coordinator_route(backend: &Backend, group_id: &str) -> Result<(i32, usize), ErrorCode> {
    let partitions = backend
        .image()
        .topic(OFFSETS_TOPIC)
        .map(|t| t.partition_count() as u32)
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
    let partition = offsets_partition_for(group_id, partitions);
    // The coordinator is the leader of the group's offsets partition: a
    // broker that does not lead it sends the client to find it again.
    let owner = backend
        .route(OFFSETS_TOPIC, partition)
        .map_err(|code| match code {
            codes::NOT_LEADER_OR_FOLLOWER => codes::NOT_COORDINATOR,
            _ => codes::COORDINATOR_NOT_AVAILABLE,
        })?;
    Ok((partition, owner))
}

/// The `__consumer_offsets` partition that holds `group_id`'s records.
pub fn coordinator_partition(backend: &Backend, group_id: &str) -> Option<i32> {
    let image = backend.image();
    let topic = image.topic(OFFSETS_TOPIC)?;
    Some(offsets_partition_for(
        group_id,
        topic.partition_count() as u32,
    ))
}

/// The broker that coordinates `group_id`: the leader of its
/// `__consumer_offsets` partition (None while there is none, or no such
/// topic yet).
pub fn coordinator_node(backend: &Backend, group_id: &str) -> Option<i32> {
    let image = backend.image();
    let topic = image.topic(OFFSETS_TOPIC)?;
    let partition = offsets_partition_for(group_id, topic.partition_count() as u32);
    let leader = topic
        .partition(partition as u32)?
        .serving_leader(backend.config.node_id);
    (leader != engine::metadata::NO_LEADER).then_some(leader)
}

impl GroupHost {
    pub fn group_count(&self) -> usize {
        self.coordinator.borrow().groups().count()
    }

    fn complete(&self, effects: &mut Effects) {
        let mut parked = self.parked.borrow_mut();
        for (token, completion) in effects.completions.drain(..) {
            if let Some(waiter) = parked.remove(&token) {
                let _ = waiter.send(completion);
            }
        }
    }

    /// Appends group records to their `__consumer_offsets` partitions; with
    /// `durable`, waits for the group commit.
    async fn persist(
        self: &Rc<Self>,
        records: Vec<GroupLogRecord>,
        durable: bool,
    ) -> Result<(), ErrorCode> {
        if records.is_empty() {
            return Ok(());
        }
        let mut by_partition: BTreeMap<i32, Vec<NewRecord>> = BTreeMap::new();
        for record in &records {
            let (partition, owner) = coordinator_route(&self.backend, record.group_id())?;
            if owner != self.backend.shard_id {
                return Err(codes::NOT_COORDINATOR);
            }
            by_partition.entry(partition).or_default().push({
                let (key, value) = record.encode();
                NewRecord::keyed(key, value)
            });
        }
        let now = steady_ms();
        let mut waits = Vec::new();
        for (index, kvs) in by_partition {
            let partition = self
                .backend
                .partition(OFFSETS_TOPIC, index)
                .ok_or(codes::NOT_COORDINATOR)?;
            let batch = build_batch(&kvs, now, BatchCompression::None)
                .map_err(|_| codes::UNKNOWN_SERVER_ERROR)?;
            let written = partition.enqueue(Bytes::from(batch));
            waits.push((partition, written));
        }
        for (partition, written) in waits {
            let appended = written.await.unwrap_or(Err(codes::UNKNOWN_SERVER_ERROR))?;
            if durable {
                partition
                    .wait_acks_all(appended.base_offset, OFFSET_COMMIT_TIMEOUT_MS)
                    .await?;
            }
        }
        Ok(())
    }

    /// Completes parked requests now and writes records in the background
    /// (membership records need not delay answers).
    fn apply_effects(self: &Rc<Self>, mut effects: Effects) {
        self.complete(&mut effects);
        if !effects.persist.is_empty() {
            let shard = self.clone();
            let records = std::mem::take(&mut effects.persist);
            glommio::spawn_local(async move {
                if let Err(code) = shard.persist(records, false).await {
                    warn!(
                        shard = shard.backend.shard_id,
                        code, "cannot persist group records"
                    );
                }
            })
            .detach();
        }
    }

    /// Serves one group op sent to this shard's coordinator.
    pub async fn serve(self: &Rc<Self>, request: GroupRequest) -> Reply {
        match request {
            GroupRequest::JoinGroup(op) => JoinGroup::wrap_reply(self.join(op).await),
            GroupRequest::SyncGroup(op) => SyncGroup::wrap_reply(self.sync(op).await),
            GroupRequest::Heartbeat(op) => Heartbeat::wrap_reply(self.heartbeat(op)),
            GroupRequest::LeaveGroup(op) => LeaveGroup::wrap_reply(self.leave(op)),
            GroupRequest::CommitOffsets(op) => CommitOffsets::wrap_reply(self.commit(op).await),
            GroupRequest::CommitTxnOffsets(op) => {
                CommitTxnOffsets::wrap_reply(self.commit_txn(op).await)
            }

            GroupRequest::FetchOffsets(op) => FetchOffsets::wrap_reply(self.fetch_offsets(op)),
            GroupRequest::DescribeGroup(op) => DescribeGroup::wrap_reply(self.describe(op)),
            GroupRequest::ListGroups(_) => ListGroups::wrap_reply(self.list()),
            GroupRequest::DeleteGroup(op) => DeleteGroup::wrap_reply(self.delete(op)),
            GroupRequest::DeleteOffsets(op) => DeleteOffsets::wrap_reply(self.delete_offsets(op)),
        }
    }

    /// Before any operation: refuses while loading, and wakes the ticker to
    /// look at the deadlines again.
    fn begin_op(&self) -> Result<(), ErrorCode> {
        if self.loading.get() || self.partitions_loading.get() > 0 {
            return Err(codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if let Some(ticker) = self.ticker_parked.borrow_mut().take() {
            let _ = ticker.send(());
        }
        Ok(())
    }

    async fn join(self: &Rc<Self>, JoinGroup(request): JoinGroup) -> JoinResult {
        if let Err(code) = self.begin_op() {
            return join_error(code);
        }
        let (token, receiver) = self.park();
        let fresh = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
        let effects = self
            .coordinator
            .borrow_mut()
            .join(token, request, fresh, steady_ms());
        self.apply_effects(effects);
        match receiver.await {
            Ok(Completion::Join(result)) => result,
            _ => join_error(codes::UNKNOWN_SERVER_ERROR),
        }
    }

    async fn sync(self: &Rc<Self>, SyncGroup(request): SyncGroup) -> SyncResult {
        if let Err(code) = self.begin_op() {
            return sync_error(code);
        }
        let (token, receiver) = self.park();
        let effects = self
            .coordinator
            .borrow_mut()
            .sync(token, request, steady_ms());
        self.apply_effects(effects);
        match receiver.await {
            Ok(Completion::Sync(result)) => result,
            _ => sync_error(codes::UNKNOWN_SERVER_ERROR),
        }
    }

    fn heartbeat(&self, op: Heartbeat) -> ErrorCode {
        if let Err(code) = self.begin_op() {
            return code;
        }
        self.coordinator.borrow_mut().heartbeat(
            &op.group_id,
            op.generation_id,
            &op.member_id,
            op.group_instance_id.as_deref(),
            steady_ms(),
        )
    }

    fn leave(self: &Rc<Self>, op: LeaveGroup) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.begin_op()?;
        let members: Vec<(String, Option<String>)> = op
            .members
            .into_iter()
            .map(|m| (m.member_id, m.group_instance_id))
            .collect();
        let (errors, effects) =
            self.coordinator
                .borrow_mut()
                .leave(&op.group_id, &members, steady_ms());
        self.apply_effects(effects);
        Ok(errors)
    }

    async fn commit(self: &Rc<Self>, op: CommitOffsets) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.begin_op()?;
        let check = self.coordinator.borrow().check_commit(
            &op.group_id,
            op.generation_id,
            &op.member_id,
            op.group_instance_id.as_deref(),
        );
        if check != codes::NONE {
            return Err(check);
        }
        let records = offset_records(&op.group_id, op.offsets);
        let count = records.len();
        // Deletions that land while the commit is being made durable win
        // over it, as they follow it in the log.
        let commit = self.coordinator.borrow_mut().begin_commit();
        match self.persist(records.clone(), true).await {
            Ok(()) => {
                self.coordinator
                    .borrow_mut()
                    .finish_commit(commit, &records, steady_ms());
                Ok(vec![codes::NONE; count])
            }
            Err(code) => {
                self.coordinator.borrow_mut().abort_commit(commit);
                Err(code)
            }
        }
    }

    fn fetch_offsets(&self, op: FetchOffsets) -> Result<Vec<FetchedOffset>, ErrorCode> {
        self.begin_op()?;
        let partitions: Option<Vec<(String, Vec<i32>)>> = op
            .partitions
            .map(|list| list.into_iter().map(|t| (t.topic, t.partitions)).collect());
        let coordinator = self.coordinator.borrow();
        Ok(coordinator
            .fetch_offsets(&op.group_id, partitions.as_deref())
            .into_iter()
            .map(|(topic, partition, value)| {
                let unstable = op.require_stable
                    && coordinator.has_pending_txn_offset(&op.group_id, &topic, partition);
                if unstable {
                    FetchedOffset {
                        topic,
                        partition,
                        value: None,
                        error: codes::UNSTABLE_OFFSET_COMMIT,
                    }
                } else {
                    FetchedOffset {
                        topic,
                        partition,
                        value,
                        error: codes::NONE,
                    }
                }
            })
            .collect())
    }

    /// TxnOffsetCommit: the offsets are appended in the producer's
    /// transaction and wait, pending, for its marker.
    async fn commit_txn(
        self: &Rc<Self>,
        op: CommitTxnOffsets,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.begin_op()?;
        if op.generation_id >= 0 || !op.member_id.is_empty() {
            // v3+ (KIP-447): the producer names its consumer's generation.
            let check = self.coordinator.borrow().check_commit(
                &op.group_id,
                op.generation_id,
                &op.member_id,
                op.group_instance_id.as_deref(),
            );
            if check != codes::NONE {
                return Err(check);
            }
        }
        let records = offset_records(&op.group_id, op.offsets);
        let count = records.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let (index, owner) = coordinator_route(&self.backend, &op.group_id)?;
        if owner != self.backend.shard_id {
            return Err(codes::NOT_COORDINATOR);
        }
        let partition = self
            .backend
            .partition(OFFSETS_TOPIC, index)
            .ok_or(codes::NOT_COORDINATOR)?;
        let kvs: Vec<NewRecord> = records
            .iter()
            .map(|record| {
                let (key, value) = record.encode();
                NewRecord::keyed(key, value)
            })
            .collect();
        let batch = build_transactional_batch(
            &kvs,
            crate::clock::now_ms(),
            op.producer_id,
            op.producer_epoch,
        )
        .map_err(|_| codes::UNKNOWN_SERVER_ERROR)?;
        partition
            .append_acks_all(Bytes::from(batch), OFFSET_COMMIT_TIMEOUT_MS)
            .await?;
        self.coordinator
            .borrow_mut()
            .add_txn_offsets(op.producer_id, &records);
        Ok(vec![codes::NONE; count])
    }

    /// A transaction marker was written to offsets partition `partition`,
    /// which this shard owns: the producer's pending offsets commit or
    /// vanish.
    pub fn txn_marker_written(&self, partition: i32, producer_id: i64, commit: bool) {
        let settled =
            self.coordinator
                .borrow_mut()
                .complete_txn_offsets(producer_id, commit, steady_ms());
        if settled > 0 {
            tracing::debug!(
                partition,
                producer_id,
                commit,
                settled,
                "transactional offsets settled"
            );
        }
    }

    fn describe(&self, op: DescribeGroup) -> Result<Option<GroupDescription>, ErrorCode> {
        self.begin_op()?;
        Ok(self.coordinator.borrow().describe(&op.group_id))
    }

    fn list(&self) -> Result<Vec<ListedGroup>, ErrorCode> {
        self.begin_op()?;
        Ok(self
            .coordinator
            .borrow()
            .groups()
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
            })
            .collect())
    }

    fn delete(self: &Rc<Self>, op: DeleteGroup) -> ErrorCode {
        if let Err(code) = self.begin_op() {
            return code;
        }
        let (error, effects) = self.coordinator.borrow_mut().delete_group(&op.group_id);
        self.apply_effects(effects);
        error
    }

    fn delete_offsets(self: &Rc<Self>, op: DeleteOffsets) -> Result<PartitionErrors, ErrorCode> {
        self.begin_op()?;
        let partitions: Vec<(String, i32)> = op
            .partitions
            .into_iter()
            .map(|p| (p.topic, p.partition))
            .collect();
        let (error, errors, effects) =
            self.coordinator
                .borrow_mut()
                .delete_offsets(&op.group_id, &partitions, subscribed);
        self.apply_effects(effects);
        Ok(PartitionErrors {
            error,
            partitions: errors,
        })
    }

    /// Replays the `__consumer_offsets` partitions this shard leads into
    /// the coordinator (at start).
    pub async fn load(self: &Rc<Self>) {
        let owned: Vec<_> = self
            .backend
            .owned_partitions()
            .into_iter()
            .filter(|p| p.topic == OFFSETS_TOPIC && p.is_leader())
            .collect();
        let mut records = 0usize;
        for partition in owned {
            records += self.load_partition(&partition).await;
            // Its role was noted when it opened: the leadership follower
            // must not load it twice.
            self.loaded_partitions.borrow_mut().insert(partition.index);
        }
        self.loading.set(false);
        let groups = self.coordinator.borrow().groups().count();
        if groups > 0 {
            info!(
                shard = self.backend.shard_id,
                groups, records, "loaded consumer groups"
            );
        }
    }

    /// Replays one offsets partition, to its log end (a new leader's high
    /// watermark may still be catching up with what its ISR acknowledged).
    /// Returns the records applied.
    async fn load_partition(&self, partition: &Partition) -> usize {
        let now = steady_ms();
        let mut records = 0usize;
        let loaded = partition
            .for_each_batch(|header, batch| {
                let mut coordinator = self.coordinator.borrow_mut();
                if header.is_control() {
                    // A transaction's marker settles its pending offsets.
                    if let Ok(Some(marker)) = read_marker(batch) {
                        coordinator.complete_txn_offsets(header.producer_id, marker.commit, now);
                    }
                    return;
                }
                let Ok(batch_records) = decode_records(batch) else {
                    return;
                };
                let decoded: Vec<GroupLogRecord> = batch_records
                    .iter()
                    .filter_map(|record| {
                        GroupLogRecord::decode(record.key.as_deref()?, record.value.as_deref())
                    })
                    .collect();
                records += decoded.len();
                if header.is_transactional() {
                    // TxnOffsetCommit's: pending until the marker.
                    coordinator.add_txn_offsets(header.producer_id, &decoded);
                } else {
                    for record in &decoded {
                        coordinator.apply(record, now);
                    }
                }
            })
            .await;
        if let Err(code) = loaded {
            warn!(
                partition = partition.index,
                code, "cannot load group records"
            );
        }
        records
    }

    /// Follows leadership of the replicated offsets partitions: a shard
    /// that becomes a partition's leader loads its groups (and coordinates
    /// them); one that stops leading it forgets them, answering their
    /// waiting requests NOT_COORDINATOR so clients find the new leader.
    pub async fn follow_offsets_leadership(self: Rc<Self>) {
        while !self.stop.is_raised() {
            let changes = self.backend.offsets_role_changes().await;
            for (index, leads) in changes {
                let loaded = self.loaded_partitions.borrow().contains(&index);
                if leads && !loaded {
                    let Some(partition) = self.backend.partition(OFFSETS_TOPIC, index) else {
                        continue;
                    };
                    self.partitions_loading
                        .set(self.partitions_loading.get() + 1);
                    let records = self.load_partition(&partition).await;
                    self.partitions_loading
                        .set(self.partitions_loading.get() - 1);
                    self.loaded_partitions.borrow_mut().insert(index);
                    info!(
                        shard = self.backend.shard_id,
                        partition = index,
                        records,
                        "leading an offsets partition: its groups loaded"
                    );
                } else if !leads && loaded {
                    self.loaded_partitions.borrow_mut().remove(&index);
                    let backend = &self.backend;
                    let (groups, mut effects) = self
                        .coordinator
                        .borrow_mut()
                        .unload(|group_id| coordinator_partition(backend, group_id) == Some(index));
                    self.complete(&mut effects);
                    info!(
                        shard = self.backend.shard_id,
                        partition = index,
                        groups,
                        "an offsets partition moved to another leader: its groups unloaded"
                    );
                }
            }
        }
    }

    /// When the group timers should run next: at the coordinator's next
    /// deadline, within [GROUP_TICK_MS, GROUP_TICK_MS_MAX] from now. None
    /// without groups.
    fn tick_due_ms(&self) -> Option<i64> {
        let next = self.coordinator.borrow().next_deadline_ms()?;
        let now = steady_ms();
        Some(next.clamp(now + GROUP_TICK_MS, now + GROUP_TICK_MS_MAX))
    }

    /// Runs the coordinator's timers until the shard stops. It sleeps until
    /// the next deadline (a stable group with 45 s sessions ticks once a
    /// second, not ten times), and a group operation wakes it to look again.
    pub async fn run_ticker(self: Rc<Self>) {
        while !self.stop.is_raised() {
            let Some(mut due_ms) = self.tick_due_ms() else {
                let (wake, woken) = oneshot::channel();
                *self.ticker_parked.borrow_mut() = Some(wake);
                let _ = woken.await;
                continue;
            };
            for _wake in 0..TICKER_WAKES_MAX {
                // Bounded by the longest tick too: a deadline far ahead
                // (a long session) is looked at again within a second.
                let wait_ms = (due_ms - steady_ms()).min(GROUP_TICK_MS_MAX);
                if wait_ms <= 0 {
                    break;
                }
                let (wake, woken) = oneshot::channel();
                *self.ticker_parked.borrow_mut() = Some(wake);
                let timer = glommio::timer::sleep(Duration::from_millis(wait_ms as u64));
                futures::pin_mut!(timer);
                let timed_out = matches!(
                    futures::future::select(timer, woken).await,
                    futures::future::Either::Left(_)
                );
                self.ticker_parked.borrow_mut().take();
                if timed_out || self.stop.is_raised() {
                    break;
                }
                // Only ever earlier: operations that keep coming cannot
                // starve the timers.
                if let Some(due) = self.tick_due_ms() {
                    due_ms = due_ms.min(due);
                }
            }
            let effects = self.coordinator.borrow_mut().tick(steady_ms());
            if !effects.completions.is_empty() || !effects.persist.is_empty() {
                self.apply_effects(effects);
            }
        }
    }
}

//! The shard side of the group coordinator: every shard coordinates the
//! groups whose `__consumer_offsets` partition it owns. It loads them from
//! those partitions at start, parks JoinGroup/SyncGroup requests until the
//! state machine completes them, ticks the timers, and appends group records
//! (offset commits durably, before they are acknowledged).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::group::{
    offsets_partition_for, Completion, Coordinator, Effects, Group, GroupConfig, GroupLogRecord,
    JoinResult, RequestToken, SyncResult, OFFSETS_TOPIC,
};
use engine::protocol::kafka_protocol::messages::ConsumerProtocolSubscription;
use engine::protocol::kafka_protocol::protocol::Decodable;
use engine::protocol::{self as codes, ErrorCode};
use engine::record::{build_batch, decode_records, BatchCompression, BatchHeader, NewRecord};
use futures::channel::oneshot;
use tracing::{info, warn};

use crate::mesh::{GroupOp, GroupReply};
use crate::shard::Shard;

/// Shortest time between two runs of the group timers (sessions, rebalance
/// deadlines, retention): how often they run while a rebalance is in flight.
const GROUP_TICK_MS: i64 = 100;
/// Longest time between two runs while the shard coordinates groups, even
/// when no deadline is due sooner (a second line behind the deadlines).
const GROUP_TICK_MS_MAX: i64 = 1_000;
/// Bound on group operations that bring the next run forward while the
/// ticker waits; past it the ticker just runs.
const TICKER_WAKES_MAX: usize = 100_000;
/// Read size while loading a `__consumer_offsets` partition.
const LOAD_READ_BYTES: usize = 1 << 20;

pub struct GroupHost {
    coordinator: RefCell<Coordinator>,
    parked: RefCell<HashMap<RequestToken, oneshot::Sender<Completion>>>,
    next_token: Cell<RequestToken>,
    loading: Cell<bool>,
    /// Set while the ticker sleeps: the next group operation wakes it, to
    /// start ticking (a shard with no groups takes no timer) or to bring
    /// the next run forward.
    ticker_parked: RefCell<Option<oneshot::Sender<()>>>,
}

impl GroupHost {
    pub fn new(config: GroupConfig) -> GroupHost {
        GroupHost {
            coordinator: RefCell::new(Coordinator::new(config)),
            parked: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            ticker_parked: RefCell::new(None),
            loading: Cell::new(true),
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

impl Shard {
    pub fn group_count(&self) -> usize {
        self.groups.coordinator.borrow().groups().count()
    }

    /// The `__consumer_offsets` partition and owning shard of a group.
    pub fn group_route(&self, group_id: &str) -> Result<(i32, usize), ErrorCode> {
        let partitions = self
            .image()
            .topic(OFFSETS_TOPIC)
            .map(|t| t.partition_count() as u32)
            .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
        let partition = offsets_partition_for(group_id, partitions);
        let owner = self
            .route(OFFSETS_TOPIC, partition)
            .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
        Ok((partition, owner))
    }

    fn complete(&self, effects: &mut Effects) {
        let mut parked = self.groups.parked.borrow_mut();
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
            let (partition, owner) = self.group_route(record.group_id())?;
            if owner != self.id {
                return Err(codes::NOT_COORDINATOR);
            }
            by_partition.entry(partition).or_default().push({
                let (key, value) = record.encode();
                NewRecord::keyed(key, value)
            });
        }
        let now = crate::now_ms();
        let mut waits = Vec::new();
        for (index, kvs) in by_partition {
            let partition = self
                .partition(OFFSETS_TOPIC, index)
                .ok_or(codes::NOT_COORDINATOR)?;
            let batch = build_batch(&kvs, now, BatchCompression::None)
                .map_err(|_| codes::UNKNOWN_SERVER_ERROR)?;
            let written = partition.enqueue(Bytes::from(batch));
            waits.push((partition, written));
        }
        for (partition, written) in waits {
            written.await.unwrap_or(Err(codes::UNKNOWN_SERVER_ERROR))?;
            if durable && !self.group_commit.sync(&partition).await {
                return Err(codes::KAFKA_STORAGE_ERROR);
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
                    warn!(shard = shard.id, code, "cannot persist group records");
                }
            })
            .detach();
        }
    }

    pub async fn run_group_op(self: &Rc<Self>, op: GroupOp) -> GroupReply {
        if self.groups.loading.get() {
            return GroupReply::Error(codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if let Some(ticker) = self.groups.ticker_parked.borrow_mut().take() {
            let _ = ticker.send(());
        }
        let now = crate::now_ms();
        match op {
            GroupOp::Join(request) => {
                let (token, receiver) = self.groups.park();
                let fresh = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
                let effects = self
                    .groups
                    .coordinator
                    .borrow_mut()
                    .join(token, request, fresh, now);
                self.apply_effects(effects);
                match receiver.await {
                    Ok(Completion::Join(result)) => GroupReply::Join(result),
                    _ => GroupReply::Join(JoinResult {
                        error: codes::UNKNOWN_SERVER_ERROR,
                        generation_id: -1,
                        protocol_type: None,
                        protocol_name: None,
                        leader: String::new(),
                        member_id: String::new(),
                        members: Vec::new(),
                    }),
                }
            }
            GroupOp::Sync(request) => {
                let (token, receiver) = self.groups.park();
                let effects = self
                    .groups
                    .coordinator
                    .borrow_mut()
                    .sync(token, request, now);
                self.apply_effects(effects);
                match receiver.await {
                    Ok(Completion::Sync(result)) => GroupReply::Sync(result),
                    _ => GroupReply::Sync(SyncResult {
                        error: codes::UNKNOWN_SERVER_ERROR,
                        protocol_type: None,
                        protocol_name: None,
                        assignment: Bytes::new(),
                    }),
                }
            }
            GroupOp::Heartbeat {
                group_id,
                generation_id,
                member_id,
                group_instance_id,
            } => GroupReply::Error(self.groups.coordinator.borrow_mut().heartbeat(
                &group_id,
                generation_id,
                &member_id,
                group_instance_id.as_deref(),
                now,
            )),
            GroupOp::Leave { group_id, members } => {
                let (errors, effects) = self
                    .groups
                    .coordinator
                    .borrow_mut()
                    .leave(&group_id, &members, now);
                self.apply_effects(effects);
                GroupReply::Errors(codes::NONE, errors)
            }
            GroupOp::Commit {
                group_id,
                generation_id,
                member_id,
                group_instance_id,
                offsets,
            } => {
                let check = self.groups.coordinator.borrow().check_commit(
                    &group_id,
                    generation_id,
                    &member_id,
                    group_instance_id.as_deref(),
                );
                if check != codes::NONE {
                    return GroupReply::Errors(check, vec![check; offsets.len()]);
                }
                let records: Vec<GroupLogRecord> = offsets
                    .into_iter()
                    .map(|(topic, partition, value)| GroupLogRecord::Offset {
                        group_id: group_id.clone(),
                        topic,
                        partition,
                        value: Some(value),
                    })
                    .collect();
                let count = records.len();
                // Deletions that land while the commit is being made durable
                // win over it, as they follow it in the log.
                let commit = self.groups.coordinator.borrow_mut().begin_commit();
                match self.persist(records.clone(), true).await {
                    Ok(()) => {
                        self.groups
                            .coordinator
                            .borrow_mut()
                            .finish_commit(commit, &records, now);
                        GroupReply::Errors(codes::NONE, vec![codes::NONE; count])
                    }
                    Err(code) => {
                        self.groups.coordinator.borrow_mut().abort_commit(commit);
                        GroupReply::Errors(code, vec![code; count])
                    }
                }
            }
            GroupOp::FetchOffsets {
                group_id,
                partitions,
            } => GroupReply::Offsets(
                codes::NONE,
                self.groups
                    .coordinator
                    .borrow()
                    .fetch_offsets(&group_id, partitions.as_deref()),
            ),
            GroupOp::Describe { group_id } => GroupReply::Described(
                codes::NONE,
                self.groups.coordinator.borrow().describe(&group_id),
            ),
            GroupOp::List => GroupReply::Listed(
                self.groups
                    .coordinator
                    .borrow()
                    .groups()
                    .map(|g| {
                        (
                            g.group_id.clone(),
                            g.protocol_type.clone().unwrap_or_default(),
                            g.state.name(),
                        )
                    })
                    .collect(),
            ),
            GroupOp::Delete { group_id } => {
                let (error, effects) = self.groups.coordinator.borrow_mut().delete_group(&group_id);
                self.apply_effects(effects);
                GroupReply::Error(error)
            }
            GroupOp::DeleteOffsets {
                group_id,
                partitions,
            } => {
                let (error, errors, effects) = self.groups.coordinator.borrow_mut().delete_offsets(
                    &group_id,
                    &partitions,
                    subscribed,
                );
                self.apply_effects(effects);
                GroupReply::Errors(error, errors)
            }
        }
    }

    /// Replays the owned `__consumer_offsets` partitions into the coordinator.
    pub async fn load_groups(self: &Rc<Self>) {
        let owned: Vec<_> = self
            .owned_partitions()
            .into_iter()
            .filter(|p| p.topic == OFFSETS_TOPIC)
            .collect();
        let now = crate::now_ms();
        let mut records = 0usize;
        for partition in owned {
            let mut offset = partition.log_start_offset();
            // Each round advances past at least one batch or stops.
            for _round in 0..10_000_000u64 {
                if offset >= partition.high_watermark_offset() {
                    break;
                }
                let batches = match partition.read_bytes(offset, LOAD_READ_BYTES).await {
                    Ok(batches) if !batches.is_empty() => batches,
                    Ok(_) => break,
                    Err(code) => {
                        warn!(
                            partition = partition.index,
                            code, "cannot load group records"
                        );
                        break;
                    }
                };
                let mut position = 0usize;
                while position < batches.len() {
                    let Ok(header) = BatchHeader::parse(&batches[position..]) else {
                        break;
                    };
                    let end = position + header.total_bytes();
                    if end > batches.len() {
                        break;
                    }
                    if let Ok(batch_records) = decode_records(&batches[position..end]) {
                        let mut coordinator = self.groups.coordinator.borrow_mut();
                        for record in batch_records {
                            let Some(key) = record.key else { continue };
                            if let Some(decoded) =
                                GroupLogRecord::decode(&key, record.value.as_deref())
                            {
                                coordinator.apply(&decoded, now);
                                records += 1;
                            }
                        }
                    }
                    offset = header.next_offset();
                    position = end;
                }
            }
        }
        self.groups.loading.set(false);
        let groups = self.groups.coordinator.borrow().groups().count();
        if groups > 0 {
            info!(shard = self.id, groups, records, "loaded consumer groups");
        }
    }

    /// When the group timers should run next: at the coordinator's next
    /// deadline, within [GROUP_TICK_MS, GROUP_TICK_MS_MAX] from now. None
    /// without groups.
    fn tick_due_ms(&self) -> Option<i64> {
        let next = self.groups.coordinator.borrow().next_deadline_ms()?;
        let now = crate::now_ms();
        Some(next.clamp(now + GROUP_TICK_MS, now + GROUP_TICK_MS_MAX))
    }

    /// Runs the coordinator's timers until the shard stops. It sleeps until
    /// the next deadline (a stable group with 45 s sessions ticks once a
    /// second, not ten times), and a group operation wakes it to look again.
    pub async fn group_ticker(self: Rc<Self>) {
        while !self.stop.is_raised() {
            let Some(mut due_ms) = self.tick_due_ms() else {
                let (wake, woken) = oneshot::channel();
                *self.groups.ticker_parked.borrow_mut() = Some(wake);
                let _ = woken.await;
                continue;
            };
            for _wake in 0..TICKER_WAKES_MAX {
                // Bounded by the longest tick too: now_ms is wall-clock time,
                // which can jump back.
                let wait_ms = (due_ms - crate::now_ms()).min(GROUP_TICK_MS_MAX);
                if wait_ms <= 0 {
                    break;
                }
                let (wake, woken) = oneshot::channel();
                *self.groups.ticker_parked.borrow_mut() = Some(wake);
                let timer = glommio::timer::sleep(Duration::from_millis(wait_ms as u64));
                futures::pin_mut!(timer);
                let timed_out = matches!(
                    futures::future::select(timer, woken).await,
                    futures::future::Either::Left(_)
                );
                self.groups.ticker_parked.borrow_mut().take();
                if timed_out || self.stop.is_raised() {
                    break;
                }
                // Only ever earlier: operations that keep coming cannot
                // starve the timers.
                if let Some(due) = self.tick_due_ms() {
                    due_ms = due_ms.min(due);
                }
            }
            let effects = self.groups.coordinator.borrow_mut().tick(crate::now_ms());
            if !effects.completions.is_empty() || !effects.persist.is_empty() {
                self.apply_effects(effects);
            }
        }
    }
}

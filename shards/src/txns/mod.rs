//! L2: the host of the transaction coordinator on a shard. Every shard
//! coordinates the transactional ids whose `__transaction_state` partition
//! it leads. It loads them when it becomes a partition's leader, runs
//! engine's `TxnCoordinator` (the decisions), appends each state change to
//! the partition and answers only once it is in the ISR, writes the commit
//! or abort markers to the transaction's partitions (and completes the
//! transaction once they are all written), and aborts transactions that
//! outlive their timeout.
//!
//! What it needs of other shards (a new producer id, a marker written to a
//! partition another shard leads) it asks through [`TxnServices`], which
//! the shard (L3) implements over the mesh.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use engine::protocol::{self as codes, ErrorCode};
use engine::record::{build_batch, decode_records, BatchCompression, NewRecord, TxnMarker};
use engine::txn::{
    transaction_state_partition_for, AfterWrite, Decision, ProducerIdEpoch, TxnCoordinator,
    TxnLogRecord, TxnMarkers, TxnPartition, TxnRecord, TxnWrite, TRANSACTION_STATE_TOPIC,
};
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::controller::Backend;
use crate::mesh::txns::{
    AddTxnPartitions, DescribeTxn, EndTxn, InitTxnProducer, ListTxns, TxnListing, TxnRequest,
};
use crate::mesh::{Call, Reply};
use crate::partition::Partition;
use crate::stop::StopFlag;

/// How often open transactions are checked against their timeout while
/// any is open (Kafka checks every 10 s; the issue asks for an abort
/// within ~10 s of the deadline).
const TIMEOUT_CHECK_MS: u64 = 1_000;
/// How long a coordinator record waits for the ISR before the request is
/// answered with an error (Kafka's `transaction.state.log` append timeout).
const STATE_WRITE_TIMEOUT_MS: u64 = 5_000;
/// How long one marker write waits for its partition's ISR.
pub const MARKER_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Pause between rounds of marker writes that failed (the partition is
/// moving, its ISR is short): first, and at most.
const MARKER_RETRY_MS_MIN: u64 = 50;
const MARKER_RETRY_MS_MAX: u64 = 1_000;

/// What the coordinator host needs of the rest of the broker.
pub trait TxnServices {
    /// A producer id never handed out before.
    fn allocate_producer_id(self: Rc<Self>) -> LocalBoxFuture<'static, Result<i64, ErrorCode>>;
    /// Writes `marker` to each partition at its leader (this broker's
    /// shards, or another broker's), after every append queued there
    /// before it; each result is Ok once its marker is in the ISR. One
    /// result per partition, in order.
    fn write_markers(
        self: Rc<Self>,
        partitions: Vec<TxnPartition>,
        marker: TxnMarker,
        timeout_ms: u64,
    ) -> LocalBoxFuture<'static, Vec<Result<(), ErrorCode>>>;
}

pub struct TxnHost {
    coordinator: RefCell<TxnCoordinator>,
    /// The `__transaction_state` partitions this shard leads and has loaded.
    loaded_partitions: RefCell<BTreeSet<i32>>,
    /// Partitions being loaded: their ids answer COORDINATOR_LOAD_IN_PROGRESS.
    loading_partitions: RefCell<BTreeSet<i32>>,
    /// Set while the timeout checker sleeps with no transaction open: the
    /// next operation wakes it.
    checker_parked: RefCell<Option<oneshot::Sender<()>>>,
    services: OnceCell<Weak<dyn TxnServices>>,
    backend: Rc<Backend>,
    stop: StopFlag,
}

/// The `__transaction_state` partition of a transactional id
/// (COORDINATOR_NOT_AVAILABLE before the topic exists).
fn state_partition(backend: &Backend, transactional_id: &str) -> Result<i32, ErrorCode> {
    let partitions = backend
        .image()
        .topic(TRANSACTION_STATE_TOPIC)
        .map(|t| t.partition_count() as u32)
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
    Ok(transaction_state_partition_for(
        transactional_id,
        partitions,
    ))
}

/// The `__transaction_state` partition of a transactional id and the shard
/// that leads it here (its coordinator); NOT_COORDINATOR when another
/// broker leads it.
pub fn coordinator_route(
    backend: &Backend,
    transactional_id: &str,
) -> Result<(i32, usize), ErrorCode> {
    let partition = state_partition(backend, transactional_id)?;
    let owner = backend
        .route(TRANSACTION_STATE_TOPIC, partition)
        .map_err(|code| match code {
            codes::NOT_LEADER_OR_FOLLOWER => codes::NOT_COORDINATOR,
            _ => codes::COORDINATOR_NOT_AVAILABLE,
        })?;
    Ok((partition, owner))
}

/// Where another broker coordinates `transactional_id`: the replication
/// listener of its shard that leads the id's partition.
pub fn coordinator_address(backend: &Backend, transactional_id: &str) -> Result<String, ErrorCode> {
    let partition = state_partition(backend, transactional_id)?;
    backend
        .leader_address(TRANSACTION_STATE_TOPIC, partition)
        .map(|(_, address)| address)
        .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)
}

/// The broker that coordinates `transactional_id`: the leader of its
/// `__transaction_state` partition (None while there is none, or no such
/// topic yet).
pub fn coordinator_node(backend: &Backend, transactional_id: &str) -> Option<i32> {
    let image = backend.image();
    let topic = image.topic(TRANSACTION_STATE_TOPIC)?;
    let partition =
        transaction_state_partition_for(transactional_id, topic.partition_count() as u32);
    let leader = topic
        .partition(partition as u32)?
        .serving_leader(backend.config.node_id);
    (leader != engine::metadata::NO_LEADER).then_some(leader)
}

impl TxnHost {
    pub fn new(backend: Rc<Backend>, stop: StopFlag) -> TxnHost {
        TxnHost {
            coordinator: RefCell::new(TxnCoordinator::new(
                backend.config.transaction_max_timeout_ms,
            )),
            loaded_partitions: RefCell::new(BTreeSet::new()),
            loading_partitions: RefCell::new(BTreeSet::new()),
            checker_parked: RefCell::new(None),
            services: OnceCell::new(),
            backend,
            stop,
        }
    }

    /// Connects the host to the shard's services (once, at start).
    pub fn set_services(&self, services: Weak<dyn TxnServices>) {
        if self.services.set(services).is_err() {
            warn!("transaction host services set twice; keeping the first");
        }
    }

    fn services(&self) -> Result<Rc<dyn TxnServices>, ErrorCode> {
        self.services
            .get()
            .and_then(Weak::upgrade)
            .ok_or(codes::COORDINATOR_NOT_AVAILABLE)
    }

    /// Serves one transaction op sent to this shard's coordinator.
    pub async fn serve(self: &Rc<Self>, request: TxnRequest) -> Reply {
        match request {
            TxnRequest::InitTxnProducer(op) => {
                InitTxnProducer::wrap_reply(self.init_producer_id(op).await)
            }
            TxnRequest::AddTxnPartitions(op) => {
                AddTxnPartitions::wrap_reply(self.add_partitions(op).await)
            }
            TxnRequest::EndTxn(op) => EndTxn::wrap_reply(self.end_txn(op).await),
            TxnRequest::DescribeTxn(op) => DescribeTxn::wrap_reply(self.describe(&op)),
            TxnRequest::ListTxns(op) => ListTxns::wrap_reply(self.list(&op)),
        }
    }

    /// DescribeTransactions: the id's durable state.
    fn describe(&self, op: &DescribeTxn) -> Result<TxnRecord, ErrorCode> {
        self.begin_op(&op.transactional_id)?;
        self.coordinator
            .borrow()
            .record(&op.transactional_id)
            .cloned()
            .ok_or(codes::TRANSACTIONAL_ID_NOT_FOUND)
    }

    /// ListTransactions: the ids this shard coordinates, filtered.
    fn list(&self, op: &ListTxns) -> Result<Vec<TxnListing>, ErrorCode> {
        if !self.loading_partitions.borrow().is_empty() {
            return Err(codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        let now = now_ms();
        let coordinator = self.coordinator.borrow();
        let listed = coordinator
            .records()
            .filter(|(_, r)| op.states.is_empty() || op.states.contains(&r.state))
            .filter(|(_, r)| op.producer_ids.is_empty() || op.producer_ids.contains(&r.producer_id))
            .filter(|(_, r)| {
                op.running_longer_than_ms < 0
                    || (r.start_ms >= 0 && now - r.start_ms > op.running_longer_than_ms)
            })
            .map(|(id, r)| TxnListing {
                transactional_id: id.to_string(),
                producer_id: r.producer_id,
                state: r.state,
            })
            .collect();
        Ok(listed)
    }

    /// Before any operation on `transactional_id`: this shard must lead
    /// its partition and have loaded it. Wakes the timeout checker.
    fn begin_op(&self, transactional_id: &str) -> Result<(), ErrorCode> {
        let (partition, owner) = coordinator_route(&self.backend, transactional_id)?;
        if owner != self.backend.shard_id {
            return Err(codes::NOT_COORDINATOR);
        }
        if self.loading_partitions.borrow().contains(&partition) {
            return Err(codes::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if !self.loaded_partitions.borrow().contains(&partition) {
            return Err(codes::NOT_COORDINATOR);
        }
        self.wake_checker();
        Ok(())
    }

    /// Wakes the timeout checker if it sleeps (a transaction may be open).
    fn wake_checker(&self) {
        if let Some(checker) = self.checker_parked.borrow_mut().take() {
            let _ = checker.send(());
        }
    }

    async fn init_producer_id(
        self: &Rc<Self>,
        op: InitTxnProducer,
    ) -> Result<ProducerIdEpoch, ErrorCode> {
        self.begin_op(&op.transactional_id)?;
        let mut spare = self.spare_producer_id(&op.transactional_id, true).await?;
        let decision = self.coordinator.borrow_mut().init_producer_id(
            &op.transactional_id,
            op.timeout_ms,
            op.expected,
            now_ms(),
            &mut || spare.take().ok_or(codes::COORDINATOR_LOAD_IN_PROGRESS),
        );
        self.settle(decision, |record| ProducerIdEpoch {
            producer_id: record.producer_id,
            producer_epoch: record.producer_epoch,
        })
        .await
    }

    /// A decision's answer: given now, or made from the record once its
    /// write is durable.
    async fn settle<T>(
        self: &Rc<Self>,
        decision: Decision<T>,
        answer: impl FnOnce(&TxnRecord) -> T,
    ) -> Result<T, ErrorCode> {
        match decision {
            Decision::Answer(answer) => answer,
            Decision::Write(write) => Ok(answer(&self.run_write(write).await?)),
        }
    }

    /// A new producer id for a decision that may need one: a new
    /// transactional id (`for_new_id`) or one at its last epochs. It is
    /// fetched before the decision (an async call) and unused otherwise.
    async fn spare_producer_id(
        &self,
        transactional_id: &str,
        for_new_id: bool,
    ) -> Result<Option<i64>, ErrorCode> {
        let needs_id = match self.coordinator.borrow().record(transactional_id) {
            None => for_new_id,
            Some(record) => record.producer_epoch >= i16::MAX - 2,
        };
        if !needs_id {
            return Ok(None);
        }
        Ok(Some(self.services()?.allocate_producer_id().await?))
    }

    async fn add_partitions(self: &Rc<Self>, op: AddTxnPartitions) -> Result<(), ErrorCode> {
        self.begin_op(&op.transactional_id)?;
        let decision = self.coordinator.borrow_mut().add_partitions(
            &op.transactional_id,
            op.producer,
            &op.partitions,
            op.verify_only,
            now_ms(),
        );
        self.settle(decision, |_| ()).await
    }

    async fn end_txn(self: &Rc<Self>, op: EndTxn) -> Result<ProducerIdEpoch, ErrorCode> {
        self.begin_op(&op.transactional_id)?;
        let mut spare = self.spare_producer_id(&op.transactional_id, false).await?;
        let decision = self.coordinator.borrow_mut().end_txn(
            &op.transactional_id,
            op.producer,
            op.commit,
            op.version,
            now_ms(),
            &mut || spare.take().ok_or(codes::COORDINATOR_LOAD_IN_PROGRESS),
        );
        self.settle(decision, TxnRecord::producer_for_next_transaction)
            .await
    }

    /// Makes a coordinator write durable and does what follows it: the
    /// record now in force is returned (the answer is made from it); the
    /// markers of a transaction it prepared are written in the background.
    /// A fenced transaction's InitProducerId gets CONCURRENT_TRANSACTIONS
    /// (the client retries once the abort is complete).
    async fn run_write(self: &Rc<Self>, write: TxnWrite) -> Result<TxnRecord, ErrorCode> {
        if let Err(code) = self.persist(&write).await {
            warn!(transactional_id = %write.transactional_id, code, "transaction state record not written");
            if let Some(markers) = self.coordinator.borrow_mut().write_failed(&write) {
                self.spawn_markers(markers);
            }
            return Err(match code {
                codes::NOT_COORDINATOR | codes::NOT_LEADER_OR_FOLLOWER => codes::NOT_COORDINATOR,
                _ => codes::COORDINATOR_NOT_AVAILABLE,
            });
        }
        if !self.coordinator.borrow_mut().written(&write) {
            // The partition moved (unloaded) while the record was written.
            return Err(codes::NOT_COORDINATOR);
        }
        let record = write.record.clone().ok_or(codes::UNKNOWN_SERVER_ERROR)?;
        match write.then {
            AfterWrite::InitProducerId | AfterWrite::Added | AfterWrite::Completed => Ok(record),
            AfterWrite::Ended(markers) => {
                self.spawn_markers(markers);
                Ok(record)
            }
            AfterWrite::TimedOut(markers) => {
                self.spawn_markers(markers);
                Ok(record)
            }
            AfterWrite::Fenced(markers) => {
                self.spawn_markers(markers);
                Err(codes::CONCURRENT_TRANSACTIONS)
            }
        }
    }

    /// Appends a write's record to its `__transaction_state` partition and
    /// waits until it is in the ISR (fsynced on one replica).
    async fn persist(&self, write: &TxnWrite) -> Result<(), ErrorCode> {
        let (index, owner) = coordinator_route(&self.backend, &write.transactional_id)?;
        if owner != self.backend.shard_id {
            return Err(codes::NOT_COORDINATOR);
        }
        let partition = self
            .backend
            .partition(TRANSACTION_STATE_TOPIC, index)
            .ok_or(codes::NOT_COORDINATOR)?;
        let record = TxnLogRecord {
            transactional_id: write.transactional_id.clone(),
            value: write.record.clone(),
        };
        let (key, value) = record.encode();
        let batch = build_batch(
            &[NewRecord::keyed(key, value)],
            now_ms(),
            BatchCompression::None,
        )
        .map_err(|_| codes::UNKNOWN_SERVER_ERROR)?;
        partition.enough_replicas()?;
        partition
            .append_acks_all(Bytes::from(batch), STATE_WRITE_TIMEOUT_MS)
            .await
            .map(|_| ())
    }

    fn spawn_markers(self: &Rc<Self>, markers: TxnMarkers) {
        let host = self.clone();
        glommio::spawn_local(async move { host.write_markers(markers).await }).detach();
    }

    /// Writes a prepared transaction's markers to all its partitions, then
    /// completes it. Retries until every marker is written, unless this
    /// shard stops coordinating the id (the next coordinator resumes the
    /// markers when it loads the partition) or the broker stops.
    async fn write_markers(self: &Rc<Self>, mut markers: TxnMarkers) {
        let mut pause_ms = MARKER_RETRY_MS_MIN;
        let mut remaining = markers.partitions.clone();
        loop {
            // Only a move of the id's partition to another coordinator (which
            // resumes the markers when it loads it) or the broker's stop
            // ends this; a partition that is not routable yet (this broker
            // restarting, still fenced) is waited for.
            let Some(index) = self.partition_of(&markers.transactional_id) else {
                return;
            };
            let coordinating = self.loaded_partitions.borrow().contains(&index)
                || self.loading_partitions.borrow().contains(&index);
            if self.stop.is_raised() || !coordinating {
                return;
            }
            let Ok(services) = self.services() else {
                return;
            };
            let coordinator_epoch = self
                .backend
                .partition(TRANSACTION_STATE_TOPIC, index)
                .map_or(0, |p| p.leader_epoch());
            let marker = TxnMarker {
                producer_id: markers.producer_id,
                producer_epoch: markers.producer_epoch,
                commit: markers.commit,
                coordinator_epoch,
            };
            let results = services
                .write_markers(
                    remaining.iter().cloned().collect(),
                    marker,
                    MARKER_WRITE_TIMEOUT_MS,
                )
                .await;
            debug_assert_eq!(results.len(), remaining.len());
            let mut failed = BTreeSet::new();
            for ((topic, partition), result) in remaining.iter().zip(results) {
                match result {
                    Ok(()) => {}
                    // A newer epoch is already there: this transaction's
                    // data at that partition is fenced; nothing to end.
                    Err(codes::INVALID_PRODUCER_EPOCH) => {}
                    Err(codes::UNKNOWN_TOPIC_OR_PARTITION)
                        if self.backend.image().topic(topic).is_none() =>
                    {
                        // The topic was deleted: no marker is needed.
                    }
                    Err(code) => {
                        warn!(transactional_id = %markers.transactional_id, topic = %topic, partition, code, "transaction marker not written; retrying");
                        failed.insert((topic.clone(), *partition));
                    }
                }
            }
            remaining = failed;
            if !remaining.is_empty() {
                glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
                pause_ms = (pause_ms * 2).min(MARKER_RETRY_MS_MAX);
                continue;
            }
            let completion = self
                .coordinator
                .borrow_mut()
                .markers_written(&markers, now_ms());
            let Some(write) = completion else {
                return;
            };
            match self.persist(&write).await {
                Ok(()) => {
                    self.coordinator.borrow_mut().written(&write);
                    return;
                }
                Err(code) => {
                    warn!(transactional_id = %markers.transactional_id, code, "transaction completion not written; writing the markers again");
                    match self.coordinator.borrow_mut().write_failed(&write) {
                        Some(again) => {
                            markers = again;
                            remaining = markers.partitions.clone();
                        }
                        None => return,
                    }
                    glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
                    pause_ms = (pause_ms * 2).min(MARKER_RETRY_MS_MAX);
                }
            }
        }
    }

    /// The `__transaction_state` partition of a transactional id (None
    /// before the topic exists).
    fn partition_of(&self, transactional_id: &str) -> Option<i32> {
        let count = self
            .backend
            .image()
            .topic(TRANSACTION_STATE_TOPIC)?
            .partition_count() as u32;
        Some(transaction_state_partition_for(transactional_id, count))
    }

    /// Reads one `__transaction_state` partition into the coordinator and
    /// resumes the markers of its prepared transactions.
    async fn load_partition(self: &Rc<Self>, partition: &Partition) -> usize {
        let mut records = Vec::new();
        let loaded = partition
            .for_each_batch(|header, batch| {
                if header.is_control() {
                    return;
                }
                let Ok(batch_records) = decode_records(batch) else {
                    return;
                };
                for record in batch_records {
                    let Some(key) = record.key else { continue };
                    if let Some(decoded) = TxnLogRecord::decode(&key, record.value.as_deref()) {
                        records.push((decoded.transactional_id, decoded.value));
                    }
                }
            })
            .await;
        if let Err(code) = loaded {
            warn!(
                partition = partition.index,
                code, "cannot load transaction state records"
            );
        }
        let count = records.len();
        let resume = self.coordinator.borrow_mut().load_records(records);
        for markers in resume {
            self.spawn_markers(markers);
        }
        // Loaded transactions may be open: their timeouts run from now on.
        self.wake_checker();
        count
    }

    /// Follows leadership of the `__transaction_state` partitions: a shard
    /// that becomes a partition's leader loads its ids (and coordinates
    /// them); one that stops leading it forgets them.
    pub async fn follow_leadership(self: Rc<Self>) {
        while !self.stop.is_raised() {
            let changes = self.backend.txn_state_role_changes().await;
            for (index, leads) in changes {
                let loaded = self.loaded_partitions.borrow().contains(&index);
                if leads && !loaded {
                    let Some(partition) = self.backend.partition(TRANSACTION_STATE_TOPIC, index)
                    else {
                        continue;
                    };
                    self.loading_partitions.borrow_mut().insert(index);
                    let records = self.load_partition(&partition).await;
                    self.loading_partitions.borrow_mut().remove(&index);
                    self.loaded_partitions.borrow_mut().insert(index);
                    if records > 0 {
                        info!(
                            shard = self.backend.shard_id,
                            partition = index,
                            records,
                            "leading a transaction state partition: its ids loaded"
                        );
                    }
                } else if !leads && loaded {
                    self.loaded_partitions.borrow_mut().remove(&index);
                    let ids = self
                        .coordinator
                        .borrow_mut()
                        .unload(|id| self.partition_of(id) == Some(index));
                    info!(
                        shard = self.backend.shard_id,
                        partition = index,
                        ids,
                        "a transaction state partition moved to another leader: its ids unloaded"
                    );
                }
            }
        }
    }

    /// Aborts transactions that outlive their timeout, checking once a
    /// second while any transaction is open and sleeping otherwise until
    /// an operation wakes it.
    pub async fn run_timeout_checker(self: Rc<Self>) {
        while !self.stop.is_raised() {
            if !self.coordinator.borrow().has_open_transactions() {
                let (wake, woken) = oneshot::channel();
                *self.checker_parked.borrow_mut() = Some(wake);
                if woken.await.is_err() {
                    return;
                }
                continue;
            }
            glommio::timer::sleep(Duration::from_millis(TIMEOUT_CHECK_MS)).await;
            let expired = self.coordinator.borrow_mut().abort_expired(now_ms());
            for write in expired {
                info!(transactional_id = %write.transactional_id, "transaction timed out: aborting it");
                let host = self.clone();
                glommio::spawn_local(async move {
                    let _ = host.run_write(write).await;
                })
                .detach();
            }
        }
    }
}

//! A partition replica owned by this shard: its `PartitionLog` plus segment
//! files. Its state is changed only by the files of this module: the
//! writer (queue, coalescing, rolls), group commit, the reader (fetch plans,
//! offset lookups), the watch (long-poll wake-ups), retention and compaction.

mod compaction;
mod file_budget;
mod group_commit;
mod reader;
mod replica;
mod replicas;
mod retention;
mod transactions;
mod truncation;
mod watch;
mod writer;

pub use replicas::{OwnedPartitions, TopicSlots};

pub use replica::FollowerFetch;
pub use watch::DataSignal;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use engine::log::PartitionLog;
use engine::txn::{PartitionTxns, ProducerStates};
use futures::channel::oneshot;
use tracing::error;

use crate::disk::direct_appender::{DirectAppender, SegmentWriteMode};
use crate::disk::durable::off_shard;
use crate::disk::producer_snapshots::write_producer_snapshot;
use crate::disk::segment_files::{sync_dir, write_clean_checkpoint, SegmentFiles};
use crate::metrics::{Histogram, TopicCounters};
use compaction::CompactionFence;
pub use file_budget::FileBudget;
use file_budget::OpenSegment;
use group_commit::GroupCommit;
use replica::Replication;
use writer::QueuedAppend;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    dir: PathBuf,
    log: RefCell<PartitionLog>,
    /// The segment files open now (a subset of the log's segments; see
    /// `file_budget.rs`), by segment base offset.
    files: RefCell<BTreeMap<i64, OpenSegment>>,
    /// The shard's budget of open segment files.
    file_budget: Rc<FileBudget>,
    /// This partition, for the budget's entries.
    me: Weak<Partition>,
    queue: RefCell<VecDeque<QueuedAppend>>,
    queued_bytes: Cell<usize>,
    writer_running: Cell<bool>,
    writer_idle: RefCell<Vec<oneshot::Sender<()>>>,
    /// Offset below which records are visible to consumers: written (one
    /// replica), or on the disks of the leader and its ISR (`replica.rs`).
    high_watermark: Cell<i64>,
    /// Offset after the last batch written to the segment files.
    written_end: Cell<i64>,
    /// The leader epoch this replica stamps on batches when it leads.
    leader_epoch: Cell<i32>,
    /// Role, visible bytes, acks=all waiters, epoch cache (`replica.rs`).
    replication: RefCell<Replication>,
    /// Bytes of the active segment that are written.
    written_position: Cell<u64>,
    /// Parked fetches watching for data past the high watermark.
    data_waiters: RefCell<Vec<Weak<DataSignal>>>,
    /// Set after an I/O error that leaves the files in doubt (a failed
    /// fdatasync, a failed truncate after a failed write): the partition
    /// refuses appends until restart. A failed write alone does not set it.
    failed: Cell<bool>,
    /// Set at open when recovery found damage it must not truncate: the
    /// partition refuses produce and fetch with KAFKA_STORAGE_ERROR and its
    /// files are never written.
    offline: Cell<bool>,
    closed: Cell<bool>,
    /// Writers waiting for the next fdatasync (see `group_commit`).
    group_commit: GroupCommit,
    /// Produce/fetch totals for metrics.
    counters: Cell<TopicCounters>,
    /// How long each coalesced segment write took, for metrics.
    write_latency: RefCell<Histogram>,
    write_mode: SegmentWriteMode,
    /// The active segment's O_DIRECT appender (`SegmentWriteMode::Direct`).
    direct: RefCell<Option<Rc<DirectAppender>>>,
    /// Idempotent producers' epochs and last batches (see `writer.rs`).
    producers: RefCell<ProducerStates>,
    /// Transactions open here, the aborted ones, the last stable offset
    /// (`transactions.rs`).
    txns: RefCell<PartitionTxns>,
    /// Keeps cleaning passes and truncations apart (`compaction.rs`).
    compaction_fence: CompactionFence,
    /// The active segment's checkpoint file (and indexes) on disk still
    /// describe it: set at open when recovery used them, cleared by any
    /// write, roll or truncation. A clean close then has nothing to write,
    /// which keeps the stop of 100k idle partitions quick.
    checkpoint_current: Cell<bool>,
}

/// A partition's log as opened (or created) from its directory.
pub struct OpenedLog {
    pub log: PartitionLog,
    pub files: SegmentFiles,
    pub producers: ProducerStates,
    pub txns: PartitionTxns,
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        dir: PathBuf,
        opened: OpenedLog,
        write_mode: SegmentWriteMode,
        fsync_latency: Rc<RefCell<Histogram>>,
        file_budget: Rc<FileBudget>,
    ) -> Rc<Partition> {
        let OpenedLog {
            log,
            files,
            producers,
            txns,
        } = opened;
        let high_watermark = log.next_offset();
        let written_position = log.active().size_bytes;
        let partition = Rc::new_cyclic(|me| Partition {
            topic,
            index,
            dir,
            log: RefCell::new(log),
            files: RefCell::new(BTreeMap::new()),
            file_budget: file_budget.clone(),
            me: me.clone(),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            writer_running: Cell::new(false),
            writer_idle: RefCell::new(Vec::new()),
            high_watermark: Cell::new(high_watermark),
            written_end: Cell::new(high_watermark),
            leader_epoch: Cell::new(0),
            replication: RefCell::new(Replication::solo(high_watermark)),
            written_position: Cell::new(written_position),
            data_waiters: RefCell::new(Vec::new()),
            failed: Cell::new(false),
            offline: Cell::new(false),
            closed: Cell::new(false),
            group_commit: GroupCommit::new(fsync_latency),
            counters: Cell::new(Default::default()),
            write_latency: RefCell::new(Default::default()),
            write_mode,
            direct: RefCell::new(None),
            producers: RefCell::new(producers),
            txns: RefCell::new(txns),
            compaction_fence: CompactionFence::default(),
            checkpoint_current: Cell::new(false),
        });
        // What recovery or creation opened counts against the budget like
        // any other open file, and the oldest go if it is over.
        for (base, file) in files {
            partition.register_file(base, file);
        }
        file_budget.trim();
        partition
    }

    /// Takes the partition offline for good (until a restart finds it
    /// repaired): every produce, fetch and offset lookup gets
    /// KAFKA_STORAGE_ERROR, and maintenance leaves its files alone.
    /// Recovery restored the active segment from its clean-stop checkpoint.
    pub fn set_checkpoint_current(&self) {
        self.checkpoint_current.set(true);
    }

    /// Whether `set_offline` took it offline.
    pub fn is_offline(&self) -> bool {
        self.offline.get()
    }

    pub fn set_offline(&self, reason: &str) {
        error!(topic = %self.topic, partition = self.index, %reason, "partition offline: produce and fetch get KAFKA_STORAGE_ERROR");
        self.offline.set(true);
        self.failed.set(true);
        // Closed: no maintenance (roll, retention, compaction) touches it.
        self.closed.set(true);
    }

    pub fn set_config(&self, config: engine::log::LogConfig) {
        self.log.borrow_mut().set_config(config);
    }

    pub fn high_watermark_offset(&self) -> i64 {
        self.high_watermark.get()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.borrow().log_start_offset()
    }

    fn fail(&self, what: &str, e: &io::Error) {
        error!(topic = %self.topic, partition = self.index, error = %e, "{what} failed; partition goes offline until restart");
        self.failed.set(true);
    }

    async fn active_file(&self) -> io::Result<Rc<glommio::io::BufferedFile>> {
        let base = self.log.borrow().active().base_offset;
        self.segment_file(base).await
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.borrow().size_bytes()
    }

    /// Waits for the writer to finish what is queued and refuses new appends.
    async fn quiesce(&self) {
        self.closed.set(true);
        if self.writer_running.get() {
            let (sender, receiver) = oneshot::channel();
            self.writer_idle.borrow_mut().push(sender);
            let _ = receiver.await;
        }
        self.wake_data_waiters();
    }

    /// Clean shutdown: drain, sync, write the active segment's checkpoint.
    pub async fn close(&self) -> io::Result<()> {
        self.quiesce().await;
        if self.offline.get() {
            // Nothing was written; the next start finds the damage again.
            return Ok(());
        }
        if self.failed.get() {
            return Err(io::Error::other("partition failed earlier"));
        }
        let untouched = {
            let log = self.log.borrow();
            let empty = log.active().size_bytes == 0 && log.segments().count() == 1;
            self.checkpoint_current.get()
                || (empty && self.producers.borrow().is_empty() && self.txns.borrow().is_empty())
        };
        if untouched {
            // Nothing written since the checkpoint on disk (or nothing at
            // all): what the next start reads is already there.
            return Ok(());
        }
        self.finish_direct().await?;
        self.sync().await?;
        let active = self.log.borrow().active().clone();
        let snapshot = self
            .producers
            .borrow()
            .encode_snapshot(active.next_offset, &self.txns.borrow());
        write_producer_snapshot(&self.dir, active.next_offset, snapshot).await?;
        write_clean_checkpoint(&self.dir, &active).await
    }

    /// Drops idempotent producers idle for `expiration_ms`
    /// (`producer.id.expiration.ms`); between writes only.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        if self.writer_running.get() {
            // A write in flight may roll back; expire at the next tick.
            return 0;
        }
        self.producers.borrow_mut().expire(now_ms, expiration_ms)
    }

    /// Topic deletion: drain and remove the directory.
    pub async fn delete(&self) -> io::Result<()> {
        self.quiesce().await;
        self.forget_files();
        let dir = self.dir.clone();
        off_shard(move || std::fs::remove_dir_all(dir)).await?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent).await?;
        }
        Ok(())
    }

    /// Produce and fetch totals, for metrics.
    pub fn counters(&self) -> TopicCounters {
        self.counters.get()
    }

    /// Segment write latencies, for metrics.
    pub fn write_latency(&self) -> std::cell::Ref<'_, Histogram> {
        self.write_latency.borrow()
    }
}

#[cfg(test)]
mod tests;

//! The writer: appends queue in arrival order and one writer task per
//! partition turns them into large sequential io_uring writes (many producer
//! batches -> one write); the high watermark moves only after the bytes are
//! written. A failed write is cut back from the file and rolled back in the
//! log.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use engine::log::{AppendError, SegmentEnd};
use engine::protocol::{self as codes, ErrorCode};
use futures::channel::oneshot;
use tracing::{error, warn};

use super::Partition;
use crate::disk::direct_appender::{DirectAppender, SegmentWriteMode};
use crate::disk::producer_snapshots::write_producer_snapshot;
use crate::disk::segment_files::{
    open_segment_file, sync_dir, write_all_at, write_segment_indexes,
};
use crate::mesh::data::AppendOutcome;
use engine::record::{read_marker, BatchHeader, TxnMarker};
use engine::txn::{BatchIdentity, SequenceVerdict};

/// Most bytes one coalesced write carries.
const WRITE_COALESCE_BYTES_MAX: usize = 8 << 20;

pub(super) struct QueuedAppend {
    records: Bytes,
    /// Copied from the partition leader by this follower's fetcher: its
    /// offsets and epochs stay.
    from_leader: bool,
    /// A commit or abort marker this leader writes (its control batch is
    /// `records`).
    marker: Option<TxnMarker>,
    reply: oneshot::Sender<Result<AppendOutcome, ErrorCode>>,
}

fn append_error_code(e: &AppendError) -> ErrorCode {
    match e {
        AppendError::Corrupt(_) => codes::CORRUPT_MESSAGE,
        AppendError::TooLarge { .. } => codes::MESSAGE_TOO_LARGE,
    }
}

impl Partition {
    /// Queues a record set; the returned receiver resolves when it is written
    /// (not yet synced). Runs synchronously so appends keep arrival order.
    pub fn enqueue(
        self: &Rc<Self>,
        records: Bytes,
    ) -> oneshot::Receiver<Result<AppendOutcome, ErrorCode>> {
        self.enqueue_as(records, false, None)
    }

    /// Queues a record set this follower copied from its leader.
    pub fn enqueue_from_leader(
        self: &Rc<Self>,
        records: Bytes,
    ) -> oneshot::Receiver<Result<AppendOutcome, ErrorCode>> {
        self.enqueue_as(records, true, None)
    }

    /// Queues a transaction marker (this replica leads): it is written
    /// after every append queued before it. Refused with
    /// INVALID_PRODUCER_EPOCH if the producer has a newer epoch here.
    pub fn enqueue_marker(
        self: &Rc<Self>,
        marker: TxnMarker,
    ) -> oneshot::Receiver<Result<AppendOutcome, ErrorCode>> {
        let batch = engine::record::build_marker_batch(&marker, crate::clock::now_ms());
        self.enqueue_as(Bytes::from(batch), false, Some(marker))
    }

    fn enqueue_as(
        self: &Rc<Self>,
        records: Bytes,
        from_leader: bool,
        marker: Option<TxnMarker>,
    ) -> oneshot::Receiver<Result<AppendOutcome, ErrorCode>> {
        let (reply, receiver) = oneshot::channel();
        let refusal = if self.failed.get() {
            Some(codes::KAFKA_STORAGE_ERROR)
        } else if self.closed.get() || self.is_leader() == from_leader {
            // A producer's append reached a follower (leadership moved
            // after routing), or a fetcher's a leader.
            Some(codes::NOT_LEADER_OR_FOLLOWER)
        } else {
            None
        };
        if let Some(code) = refusal {
            let _ = reply.send(Err(code));
            return receiver;
        }
        self.queued_bytes
            .set(self.queued_bytes.get() + records.len());
        self.queue.borrow_mut().push_back(QueuedAppend {
            records,
            from_leader,
            marker,
            reply,
        });
        if !self.writer_running.replace(true) {
            glommio::spawn_local(self.clone().run_writer()).detach();
        }
        receiver
    }

    fn take_coalesced(&self) -> Vec<QueuedAppend> {
        let mut queue = self.queue.borrow_mut();
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        while let Some(front) = queue.front() {
            if !taken.is_empty() && bytes + front.records.len() > WRITE_COALESCE_BYTES_MAX {
                break;
            }
            bytes += front.records.len();
            taken.push(queue.pop_front().expect("front exists"));
        }
        self.queued_bytes.set(self.queued_bytes.get() - bytes);
        taken
    }

    /// Gives back the writer role taken for out-of-band work (a time-based
    /// roll), starting the writer if appends queued meanwhile.
    pub(super) fn release_writer(self: &Rc<Self>) {
        if self.queue.borrow().is_empty() {
            self.writer_running.set(false);
            for waiter in self.writer_idle.borrow_mut().drain(..) {
                let _ = waiter.send(());
            }
        } else {
            glommio::spawn_local(self.clone().run_writer()).detach();
        }
    }

    async fn run_writer(self: Rc<Self>) {
        loop {
            let appends = self.take_coalesced();
            if appends.is_empty() {
                break;
            }
            self.write_appends(appends).await;
        }
        self.writer_running.set(false);
        for waiter in self.writer_idle.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Plans and writes `appends` as one coalesced write (or two, around a
    /// roll). Each record set is copied once, into the write buffer, and its
    /// offsets are patched there.
    async fn write_appends(self: &Rc<Self>, appends: Vec<QueuedAppend>) {
        let capacity = appends.iter().map(|a| a.records.len()).sum();
        let mut pending = PendingWrite {
            bytes: Vec::with_capacity(capacity),
            ..Default::default()
        };
        for append in appends {
            if self.failed.get() {
                let _ = append.reply.send(Err(codes::KAFKA_STORAGE_ERROR));
                continue;
            }
            let mut start = pending.bytes.len();
            pending.bytes.extend_from_slice(&append.records);
            let now = crate::clock::now_ms();
            let planned = self.plan(&mut pending.bytes[start..], append.from_leader, now);
            // An idempotent batch is checked against its producer's state
            // before anything is committed: a retry is answered with the
            // original offsets (once this write is done, so never before the
            // original is written), a gap or a stale epoch is refused.
            let identity = match planned.as_ref().map(|plan| plan.batches()) {
                // A leader's copy: its batches were checked there, and are
                // recorded one by one below.
                Ok(_) if append.from_leader => None,
                Ok([batch]) => BatchIdentity::of(batch),
                Ok(batches) if batches.iter().any(|b| BatchIdentity::of(b).is_some()) => {
                    // One sequence range per append: Produce refuses such
                    // sets before they get here (INVALID_RECORD).
                    pending.bytes.truncate(start);
                    let _ = append.reply.send(Err(codes::INVALID_RECORD));
                    continue;
                }
                _ => None,
            };
            if let Some(marker) = &append.marker {
                let checked = self
                    .producers
                    .borrow()
                    .check_marker(marker.producer_id, marker.producer_epoch);
                if let Err(code) = checked {
                    pending.bytes.truncate(start);
                    warn!(topic = %self.topic, partition = self.index, producer_id = marker.producer_id, epoch = marker.producer_epoch, code, "refused a transaction marker");
                    let _ = append.reply.send(Err(code));
                    continue;
                }
            }
            if let Some(identity) = &identity {
                match self.producers.borrow().check(identity) {
                    SequenceVerdict::Append => {}
                    SequenceVerdict::Duplicate { base_offset } => {
                        pending.bytes.truncate(start);
                        pending.replies.push((append.reply, base_offset));
                        continue;
                    }
                    SequenceVerdict::Reject(code) => {
                        pending.bytes.truncate(start);
                        warn!(topic = %self.topic, partition = self.index, producer_id = identity.producer_id, epoch = identity.producer_epoch, sequence = identity.first_sequence, code, "rejected an idempotent batch");
                        let _ = append.reply.send(Err(code));
                        continue;
                    }
                }
            }
            let plan = match planned {
                Err(e) => {
                    pending.bytes.truncate(start);
                    warn!(topic = %self.topic, partition = self.index, error = %e, "rejected record set");
                    let _ = append.reply.send(Err(append_error_code(&e)));
                    continue;
                }
                Ok(plan) if plan.roll_first => {
                    // This set opens a new segment: what precedes it goes
                    // to the old one first.
                    let set = pending.bytes.split_off(start);
                    self.flush(&mut pending).await;
                    if let Err(e) = self.roll().await {
                        // Nothing of the log changed; the next append retries.
                        error!(topic = %self.topic, partition = self.index, error = %e, "segment roll failed; append refused with KAFKA_STORAGE_ERROR");
                        let _ = append.reply.send(Err(codes::KAFKA_STORAGE_ERROR));
                        continue;
                    }
                    assert!(pending.bytes.is_empty(), "the flush took the buffer");
                    pending.bytes = set;
                    start = 0;
                    let replanned = self.plan(&mut pending.bytes, append.from_leader, now);
                    match replanned {
                        Ok(plan) => {
                            assert!(!plan.roll_first, "a fresh segment takes any valid set");
                            plan
                        }
                        Err(e) => {
                            pending.bytes.clear();
                            let _ = append.reply.send(Err(append_error_code(&e)));
                            continue;
                        }
                    }
                }
                Ok(plan) => plan,
            };
            if start == 0 {
                pending.position = plan.position;
                pending.mark = Some(self.log.borrow().append_mark());
                self.producers.borrow_mut().mark();
            }
            assert_eq!(pending.position + start as u64, plan.position);
            if append.from_leader {
                self.note_replica_epochs(plan.batches());
            }
            self.log.borrow_mut().commit_append(&plan, now);
            if let Some(identity) = &identity {
                self.producers.borrow_mut().record(
                    identity,
                    plan.base_offset,
                    plan.last_offset,
                    now,
                );
            }
            if let Some(marker) = &append.marker {
                self.producers.borrow_mut().record_marker(
                    marker.producer_id,
                    marker.producer_epoch,
                    now,
                );
                pending.txn_events.push(TxnEvent::Marker {
                    producer_id: marker.producer_id,
                    offset: plan.base_offset,
                    commit: marker.commit,
                });
            } else if append.from_leader {
                // The producers' state follows the log, so a follower that
                // becomes leader answers their retries as its leader would.
                let mut producers = self.producers.borrow_mut();
                for batch in plan.batches() {
                    producers.record_replicated(batch, now);
                }
                drop(producers);
                txn_events_of(&pending.bytes[start..], &mut pending.txn_events);
            } else if let [batch] = plan.batches() {
                if batch.is_transactional() && !batch.is_control() && batch.producer_id >= 0 {
                    pending.txn_events.push(TxnEvent::Data {
                        producer_id: batch.producer_id,
                        offset: plan.base_offset,
                    });
                }
            }
            pending.replies.push((append.reply, plan.base_offset));
        }
        self.flush(&mut pending).await;
    }

    /// Plans one record set: a producer's gets offsets and this leader's
    /// epoch; a leader's copy keeps its own.
    fn plan(
        &self,
        bytes: &mut [u8],
        from_leader: bool,
        now_ms: i64,
    ) -> Result<engine::log::AppendPlan, AppendError> {
        let log = self.log.borrow();
        if from_leader {
            log.plan_replica_append(bytes, now_ms)
        } else {
            log.plan_append(bytes, self.leader_epoch.get(), now_ms)
        }
    }

    /// Writes the coalesced bytes, then publishes them: high watermark,
    /// fetch waiters, producer replies.
    async fn flush(self: &Rc<Self>, pending: &mut PendingWrite) {
        if pending.bytes.is_empty() {
            // Only retries of batches already written: answer them.
            let log_start_offset = self.log.borrow().log_start_offset();
            for (reply, base_offset) in pending.replies.drain(..) {
                let _ = reply.send(Ok(AppendOutcome {
                    base_offset,
                    log_start_offset,
                }));
            }
            return;
        }
        let file = match self.active_file().await {
            Ok(file) => file,
            Err(e) => {
                // Nothing reached the file: hand the planned offsets out
                // again, as after a failed write, and refuse these appends.
                let mark = pending.mark.take().expect("a pending write has a mark");
                self.producers.borrow_mut().roll_back();
                self.log.borrow_mut().roll_back_to(mark);
                pending.bytes.clear();
                error!(topic = %self.topic, partition = self.index, error = %e, "cannot open the active segment file; appends refused with KAFKA_STORAGE_ERROR until it opens");
                for (reply, _) in pending.replies.drain(..) {
                    let _ = reply.send(Err(codes::KAFKA_STORAGE_ERROR));
                }
                return;
            }
        };
        let bytes = std::mem::take(&mut pending.bytes);
        let length = bytes.len() as u64;
        self.checkpoint_current.set(false);
        let started = std::time::Instant::now();
        let result = match self.write_mode {
            SegmentWriteMode::Buffered => write_all_at(&file, bytes, pending.position).await,
            SegmentWriteMode::Direct => self.direct_append(&bytes, pending.position).await,
        };
        self.write_latency
            .borrow_mut()
            .observe(started.elapsed().as_secs_f64());
        let replies = std::mem::take(&mut pending.replies);
        match result {
            Ok(()) => {
                assert_eq!(self.written_position.get(), pending.position);
                self.written_position.set(pending.position + length);
                let log = self.log.borrow();
                let mut counters = self.counters.get();
                counters.produce_bytes += length;
                counters.produce_records +=
                    (log.next_offset() - self.written_end.get()).max(0) as u64;
                self.counters.set(counters);
                let (next_offset, log_start_offset) = (log.next_offset(), log.log_start_offset());
                drop(log);
                self.apply_txn_events(std::mem::take(&mut pending.txn_events));
                self.on_written(next_offset, pending.position + length);
                self.wake_data_waiters();
                for (reply, base_offset) in replies {
                    let _ = reply.send(Ok(AppendOutcome {
                        base_offset,
                        log_start_offset,
                    }));
                }
            }
            Err(e) => {
                let mark = pending.mark.take().expect("a pending write has a mark");
                self.producers.borrow_mut().roll_back();
                self.undo_failed_write(&file, pending.position, mark, &e)
                    .await;
                for (reply, _) in replies {
                    let _ = reply.send(Err(codes::KAFKA_STORAGE_ERROR));
                }
            }
        }
    }

    async fn direct_append(&self, bytes: &[u8], position: u64) -> io::Result<()> {
        let base = self.log.borrow().active().base_offset;
        let current = self
            .direct
            .borrow()
            .clone()
            .filter(|a| a.base_offset == base);
        let appender = match current {
            Some(appender) => appender,
            None => {
                let file = self.active_file().await?;
                let opened = DirectAppender::open(&self.dir, base, &file, position).await?;
                let appender = Rc::new(opened);
                *self.direct.borrow_mut() = Some(appender.clone());
                appender
            }
        };
        appender.append(bytes, position).await
    }

    /// Cuts the direct appender's zero padding (before a roll or a clean
    /// close) so the segment file ends at its last batch.
    pub(super) async fn finish_direct(&self) -> io::Result<()> {
        let appender = self.direct.borrow_mut().take();
        match appender {
            Some(appender) => appender.finish().await,
            None => Ok(()),
        }
    }

    /// After a failed write (disk full, I/O error): cuts whatever part of it
    /// reached the file and rolls the log back, so the offsets it took are
    /// handed out again and the log stays dense. Only if the cut fails too
    /// does the partition go offline until restart.
    async fn undo_failed_write(
        &self,
        file: &glommio::io::BufferedFile,
        position: u64,
        mark: SegmentEnd,
        e: &io::Error,
    ) {
        assert_eq!(self.written_position.get(), position);
        // A direct appender's carried tail block no longer matches the file.
        self.direct.borrow_mut().take();
        assert_eq!(mark.size_bytes, position);
        let failed_offset = mark.next_offset;
        let failed_records = self.log.borrow().next_offset() - failed_offset;
        self.log.borrow_mut().roll_back_to(mark);
        assert_eq!(self.log.borrow().next_offset(), self.written_end.get());
        match file.truncate(position).await {
            Ok(()) => {
                error!(topic = %self.topic, partition = self.index, error = %e, offset = failed_offset, records = failed_records, position, "write failed; appends refused with KAFKA_STORAGE_ERROR and the log rolled back (it takes writes again)");
            }
            Err(te) => {
                self.fail(
                    "truncate after a failed write",
                    &io::Error::other(format!("{te} (write error: {e})")),
                );
            }
        }
    }

    /// Closes the active segment durably (data, then indexes) and starts a new
    /// one. Called by the writer with nothing in flight.
    pub(super) async fn roll(&self) -> io::Result<()> {
        self.checkpoint_current.set(false);
        self.finish_direct().await?;
        let old = self.active_file().await?;
        if let Err(e) = old.fdatasync().await {
            // After a failed sync the page cache no longer says what is on
            // disk: stop writing rather than guess.
            let e = io::Error::other(e.to_string());
            self.fail("fdatasync before a roll", &e);
            return Err(e);
        }
        let closed = self.log.borrow().active().clone();
        write_segment_indexes(&self.dir, &closed).await?;
        let base = self.log.borrow().next_offset();
        // Producer state as of the new segment's base: a restart replays
        // only the segment after it.
        let snapshot = self
            .producers
            .borrow()
            .encode_snapshot(base, &self.txns.borrow());
        write_producer_snapshot(&self.dir, base, snapshot).await?;
        let room = self.file_budget.make_room().await;
        let file = open_segment_file(&self.dir, base).await?;
        sync_dir(&self.dir).await?;
        self.register_file(base, Rc::new(file));
        drop(room);
        let rolled = self.log.borrow_mut().roll();
        assert_eq!(rolled, base);
        self.written_position.set(0);
        Ok(())
    }

    /// fdatasync of the active segment: covers every write made before it.
    pub async fn sync(&self) -> io::Result<()> {
        let file = self.active_file().await?;
        file.fdatasync()
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

#[derive(Default)]
struct PendingWrite {
    position: u64,
    /// The log's end before the first append of this write, to roll back to
    /// if the write fails.
    mark: Option<SegmentEnd>,
    bytes: Vec<u8>,
    replies: Vec<(oneshot::Sender<Result<AppendOutcome, ErrorCode>>, i64)>,
    /// What the write's batches do to the partition's transactions, applied
    /// once it is written (dropped with it if it fails).
    txn_events: Vec<TxnEvent>,
}

/// A transactional batch or a marker, in log order.
pub(super) enum TxnEvent {
    Data {
        producer_id: i64,
        offset: i64,
    },
    Marker {
        producer_id: i64,
        offset: i64,
        commit: bool,
    },
}

/// The transaction events of a record set copied from the leader (its
/// offsets already final).
fn txn_events_of(set: &[u8], events: &mut Vec<TxnEvent>) {
    let mut at = 0;
    while let Ok(header) = BatchHeader::parse(&set[at..]) {
        let end = (at + header.total_bytes()).min(set.len());
        if header.is_transactional() && header.producer_id >= 0 {
            if header.is_control() {
                // The leader validated it; a marker that does not read is
                // no transaction's end (Kafka's other control records).
                if let Ok(Some(marker)) = read_marker(&set[at..end]) {
                    events.push(TxnEvent::Marker {
                        producer_id: header.producer_id,
                        offset: header.base_offset,
                        commit: marker.commit,
                    });
                }
            } else {
                events.push(TxnEvent::Data {
                    producer_id: header.producer_id,
                    offset: header.base_offset,
                });
            }
        }
        if end <= at || end >= set.len() {
            break;
        }
        at = end;
    }
}

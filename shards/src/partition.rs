//! A partition replica owned by this shard: its `PartitionLog` plus segment
//! files. Appends queue in arrival order and one writer task per partition
//! turns them into large sequential io_uring writes (many producer batches →
//! one write); the high watermark moves only after the bytes are written.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use engine::log::{
    select_batches, AppendError, BatchSelection, PartitionLog, ReadEnd, ReadError, SegmentEnd,
};
use engine::protocol::{self as codes, ErrorCode};
use engine::record::{first_record_at_or_after, BatchHeader, BATCH_HEADER_BYTES};
use futures::channel::oneshot;
use tracing::{error, info, warn};

use crate::direct_appender::{DirectAppender, SegmentWriteMode};
use crate::mesh::{AppendOutcome, ReadOutcome};
use crate::partition_files::{
    open_segment_file, remove_segment_files, sync_dir, write_all_at, write_clean_checkpoint,
    write_log_start_offset, write_segment_indexes, SegmentFiles,
};
use crate::splice::{dup_fd, FileSlice};

/// Single-node leader epoch until replication exists.
pub const LEADER_EPOCH: i32 = 0;
/// Most bytes one coalesced write carries.
const WRITE_COALESCE_BYTES_MAX: usize = 8 << 20;
/// Bytes read from an index entry to find the first wanted batch's header:
/// entries are ~index.interval.bytes (4 KiB) apart, so one window usually
/// holds it; larger batches are skipped by their headers.
const HEADER_SCAN_WINDOW_BYTES: usize = 16 << 10;

/// A planned zero-copy read: whole batches at `position..position + len`.
struct PlannedRead {
    file: Rc<glommio::io::BufferedFile>,
    position: u64,
    len: u64,
    /// Offsets covered (records, counting compacted-away gaps).
    records: u64,
}
/// Bound on read rounds for one fetch (each round advances or returns).
const READ_ROUNDS_MAX: usize = 4096;
/// Bound on fresh starts of one fetch plan whose segment was replaced.
const PLAN_ATTEMPTS_MAX: usize = 16;

/// Why a fetch plan stopped: an answer for the client, or a segment that
/// compaction or retention replaced meanwhile (plan again).
enum PlanError {
    Code(ErrorCode),
    SegmentReplaced,
}

impl From<ErrorCode> for PlanError {
    fn from(code: ErrorCode) -> PlanError {
        PlanError::Code(code)
    }
}

struct QueuedAppend {
    records: Bytes,
    reply: oneshot::Sender<Result<AppendOutcome, ErrorCode>>,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub(crate) dir: PathBuf,
    pub(crate) log: RefCell<PartitionLog>,
    pub(crate) files: RefCell<SegmentFiles>,
    queue: RefCell<VecDeque<QueuedAppend>>,
    queued_bytes: Cell<usize>,
    pub(crate) writer_running: Cell<bool>,
    writer_idle: RefCell<Vec<oneshot::Sender<()>>>,
    /// Offset below which records are written and visible to consumers.
    high_watermark: Cell<i64>,
    /// Bytes of the active segment that are written.
    pub(crate) written_position: Cell<u64>,
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
    pub(crate) closed: Cell<bool>,
    /// Group commit (see `group_commit`): writers waiting for the next
    /// fdatasync, and whether this partition's sync loop runs.
    pub(crate) sync_waiters: RefCell<Vec<oneshot::Sender<bool>>>,
    pub(crate) syncing: Cell<bool>,
    /// Produce/fetch totals for metrics.
    pub counters: Cell<crate::metrics::TopicCounters>,
    /// How long each coalesced segment write took, for metrics.
    pub write_latency: RefCell<crate::metrics::Histogram>,
    write_mode: SegmentWriteMode,
    /// The active segment's O_DIRECT appender (`SegmentWriteMode::Direct`).
    direct: RefCell<Option<Rc<DirectAppender>>>,
}

/// Wakes one parked fetch when any partition it watches gets data: one
/// signal per park, however many partitions it watches. Partitions hold it
/// weakly, so a fetch that ended leaves only a dead entry behind.
#[derive(Default)]
pub struct DataSignal {
    fired: Cell<bool>,
    waker: RefCell<Option<std::task::Waker>>,
}

impl DataSignal {
    fn fire(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once a watched partition got data.
    pub async fn fired(&self) {
        std::future::poll_fn(|cx| {
            if self.fired.get() {
                return std::task::Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

fn append_error_code(e: &AppendError) -> ErrorCode {
    match e {
        AppendError::Corrupt(_) => codes::CORRUPT_MESSAGE,
        AppendError::TooLarge { .. } => codes::MESSAGE_TOO_LARGE,
    }
}

impl Partition {
    pub fn new(
        topic: String,
        index: i32,
        dir: PathBuf,
        log: PartitionLog,
        files: SegmentFiles,
        write_mode: SegmentWriteMode,
    ) -> Rc<Partition> {
        let high_watermark = log.next_offset();
        let written_position = log.active().size_bytes;
        assert!(files.contains_key(&log.active().base_offset));
        Rc::new(Partition {
            topic,
            index,
            dir,
            log: RefCell::new(log),
            files: RefCell::new(files),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            writer_running: Cell::new(false),
            writer_idle: RefCell::new(Vec::new()),
            high_watermark: Cell::new(high_watermark),
            written_position: Cell::new(written_position),
            data_waiters: RefCell::new(Vec::new()),
            failed: Cell::new(false),
            offline: Cell::new(false),
            closed: Cell::new(false),
            sync_waiters: RefCell::new(Vec::new()),
            syncing: Cell::new(false),
            counters: Cell::new(Default::default()),
            write_latency: RefCell::new(Default::default()),
            write_mode,
            direct: RefCell::new(None),
        })
    }

    /// Takes the partition offline for good (until a restart finds it
    /// repaired): every produce, fetch and offset lookup gets
    /// KAFKA_STORAGE_ERROR, and maintenance leaves its files alone.
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

    /// Queues a record set; the returned receiver resolves when it is written
    /// (not yet synced). Runs synchronously so appends keep arrival order.
    pub fn enqueue(
        self: &Rc<Self>,
        records: Bytes,
    ) -> oneshot::Receiver<Result<AppendOutcome, ErrorCode>> {
        let (reply, receiver) = oneshot::channel();
        if self.failed.get() || self.closed.get() {
            let _ = reply.send(Err(if self.failed.get() {
                codes::KAFKA_STORAGE_ERROR
            } else {
                codes::NOT_LEADER_OR_FOLLOWER
            }));
            return receiver;
        }
        self.queued_bytes
            .set(self.queued_bytes.get() + records.len());
        self.queue
            .borrow_mut()
            .push_back(QueuedAppend { records, reply });
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
    pub(crate) fn release_writer(self: &Rc<Self>) {
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
    async fn write_appends(&self, appends: Vec<QueuedAppend>) {
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
            let now = crate::now_ms();
            let planned =
                self.log
                    .borrow()
                    .plan_append(&mut pending.bytes[start..], LEADER_EPOCH, now);
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
                    let replanned =
                        self.log
                            .borrow()
                            .plan_append(&mut pending.bytes, LEADER_EPOCH, now);
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
            }
            assert_eq!(pending.position + start as u64, plan.position);
            self.log.borrow_mut().commit_append(&plan, now);
            pending.replies.push((append.reply, plan.base_offset));
        }
        self.flush(&mut pending).await;
    }

    /// Writes the coalesced bytes, then publishes them: high watermark,
    /// fetch waiters, producer replies.
    async fn flush(&self, pending: &mut PendingWrite) {
        if pending.bytes.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut pending.bytes);
        let length = bytes.len() as u64;
        let file = self.active_file();
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
                    (log.next_offset() - self.high_watermark.get()).max(0) as u64;
                self.counters.set(counters);
                self.high_watermark.set(log.next_offset());
                let log_start_offset = log.log_start_offset();
                drop(log);
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
                let file = self.active_file();
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
    async fn finish_direct(&self) -> io::Result<()> {
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
        assert_eq!(self.log.borrow().next_offset(), self.high_watermark.get());
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

    pub(crate) fn fail(&self, what: &str, e: &io::Error) {
        error!(topic = %self.topic, partition = self.index, error = %e, "{what} failed; partition goes offline until restart");
        self.failed.set(true);
    }

    fn active_file(&self) -> Rc<glommio::io::BufferedFile> {
        let base = self.log.borrow().active().base_offset;
        self.files
            .borrow()
            .get(&base)
            .expect("active segment has a file")
            .clone()
    }

    /// Closes the active segment durably (data, then indexes) and starts a new
    /// one. Called by the writer with nothing in flight.
    pub(crate) async fn roll(&self) -> io::Result<()> {
        self.finish_direct().await?;
        let old = self.active_file();
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
        let file = open_segment_file(&self.dir, base).await?;
        sync_dir(&self.dir).await?;
        self.files.borrow_mut().insert(base, Rc::new(file));
        let rolled = self.log.borrow_mut().roll();
        assert_eq!(rolled, base);
        self.written_position.set(0);
        Ok(())
    }

    /// fdatasync of the active segment: covers every write made before it.
    pub async fn sync(&self) -> io::Result<()> {
        let file = self.active_file();
        file.fdatasync()
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Makes `signal` fire once the high watermark passes `offset`. False,
    /// and nothing registered, if it already has or the partition closed.
    pub fn watch_beyond(&self, offset: i64, signal: &Rc<DataSignal>) -> bool {
        if self.high_watermark.get() > offset || self.closed.get() {
            return false;
        }
        let mut waiters = self.data_waiters.borrow_mut();
        // Drop watchers whose fetch already ended, so the list stays bounded.
        waiters.retain(|w| w.strong_count() > 0);
        waiters.push(Rc::downgrade(signal));
        true
    }

    fn wake_data_waiters(&self) {
        for waiter in self.data_waiters.borrow_mut().drain(..) {
            if let Some(signal) = waiter.upgrade() {
                signal.fire();
            }
        }
    }

    fn readable_limit(&self, segment_base_offset: i64, segment_bytes: u64) -> u64 {
        if segment_base_offset == self.log.borrow().active().base_offset {
            self.written_position.get()
        } else {
            segment_bytes
        }
    }

    fn count_fetch(&self, planned: &PlannedRead) {
        let mut counters = self.counters.get();
        counters.fetch_bytes += planned.len;
        counters.fetch_records += planned.records;
        self.counters.set(counters);
    }

    /// Whole batches from `offset` for a Fetch, about `max_bytes` of them
    /// (at least one), as a file range: the connection's shard sends them
    /// from the page cache without copying.
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, ErrorCode> {
        if let Some(outcome) = self.read_without_io(offset) {
            return outcome;
        }
        let (high_watermark, log_start_offset) =
            (self.high_watermark.get(), self.log_start_offset());
        let planned = self.plan_fetch(offset, max_bytes).await?;
        let records = match planned {
            None => None,
            Some(planned) => {
                self.count_fetch(&planned);
                let fd = dup_fd(planned.file.as_raw_fd()).map_err(|e| {
                    error!(topic = %self.topic, partition = self.index, error = %e, "cannot duplicate segment descriptor");
                    codes::KAFKA_STORAGE_ERROR
                })?;
                Some(FileSlice {
                    fd,
                    position: planned.position,
                    len: planned.len,
                })
            }
        };
        Ok(ReadOutcome {
            records,
            high_watermark,
            log_start_offset,
        })
    }

    /// The outcome of [`Partition::read`] when it needs no I/O: nothing to
    /// read at `offset` (a caught-up consumer), or an error found from
    /// memory. None when there are batches to plan.
    pub fn read_without_io(&self, offset: i64) -> Option<Result<ReadOutcome, ErrorCode>> {
        if self.offline.get() {
            return Some(Err(codes::KAFKA_STORAGE_ERROR));
        }
        let high_watermark = self.high_watermark.get();
        if offset < high_watermark {
            return None;
        }
        let log = self.log.borrow();
        // Caught up (the common case of a long poll): no index lookup.
        let caught_up = offset == high_watermark && offset >= log.log_start_offset();
        if !caught_up && log.plan_read(offset).is_err() {
            return Some(Err(codes::OFFSET_OUT_OF_RANGE));
        }
        Some(Ok(ReadOutcome {
            records: None,
            high_watermark,
            log_start_offset: log.log_start_offset(),
        }))
    }

    /// The same batches as [`Partition::read`], copied into memory, for the
    /// broker's own readers (group state loading).
    pub async fn read_bytes(&self, offset: i64, max_bytes: usize) -> Result<Bytes, ErrorCode> {
        let Some(planned) = self.plan_fetch(offset, max_bytes).await? else {
            return Ok(Bytes::new());
        };
        let bytes = planned
            .file
            .read_at(planned.position, planned.len as usize)
            .await
            .map_err(|e| self.storage_error("segment read failed", &e))?;
        if bytes.len() as u64 != planned.len {
            return Err(codes::KAFKA_STORAGE_ERROR);
        }
        Ok(Bytes::copy_from_slice(&bytes))
    }

    fn storage_error(&self, what: &str, e: &dyn std::fmt::Display) -> ErrorCode {
        error!(topic = %self.topic, partition = self.index, error = %e, "{what}");
        codes::KAFKA_STORAGE_ERROR
    }

    /// Finds the file range of whole batches to return for `offset`: scans
    /// batch headers from the index entry to the first wanted batch (a few
    /// KiB at most), then ends on the furthest batch boundary the index
    /// knows within `max_bytes`, so the record bytes themselves are never
    /// read here.
    async fn plan_fetch(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<PlannedRead>, ErrorCode> {
        // Compaction and retention replace or delete segments while a plan
        // awaits its header read: the plan then starts over from the index.
        for _attempt in 0..PLAN_ATTEMPTS_MAX {
            match self.plan_fetch_once(offset, max_bytes).await {
                Ok(planned) => return Ok(planned),
                Err(PlanError::Code(code)) => return Err(code),
                Err(PlanError::SegmentReplaced) => continue,
            }
        }
        warn!(topic = %self.topic, partition = self.index, offset, "segments kept changing under a fetch; answering UNKNOWN_SERVER_ERROR");
        Err(codes::UNKNOWN_SERVER_ERROR)
    }

    async fn plan_fetch_once(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<PlannedRead>, PlanError> {
        if self.offline.get() {
            return Err(codes::KAFKA_STORAGE_ERROR.into());
        }
        let high_watermark = self.high_watermark.get();
        let start = match self.log.borrow().plan_read(offset) {
            Err(ReadError::OffsetOutOfRange { .. }) => {
                return Err(codes::OFFSET_OUT_OF_RANGE.into())
            }
            Ok(None) => None,
            Ok(Some(start)) => Some(start),
        };
        let Some(mut start) = start.filter(|_| offset < high_watermark) else {
            return Ok(None);
        };
        let mut position = start.position;
        for _round in 0..READ_ROUNDS_MAX {
            let limit = self.readable_limit(start.segment_base_offset, start.segment_bytes);
            if position >= limit {
                let next = self
                    .log
                    .borrow()
                    .segment_after(start.segment_base_offset)
                    .map(|s| (s.base_offset, s.size_bytes));
                match next {
                    Some((base, bytes)) => {
                        start.segment_base_offset = base;
                        start.segment_bytes = bytes;
                        position = 0;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let file = self
                .files
                .borrow()
                .get(&start.segment_base_offset)
                .cloned()
                .ok_or(PlanError::SegmentReplaced)?;
            let window_bytes = ((limit - position) as usize).min(HEADER_SCAN_WINDOW_BYTES);
            let window = file
                .read_at(position, window_bytes)
                .await
                .map_err(|e| self.storage_error("segment read failed", &e))?;
            let same_file = self
                .files
                .borrow()
                .get(&start.segment_base_offset)
                .is_some_and(|current| Rc::ptr_eq(current, &file));
            if !same_file {
                return Err(PlanError::SegmentReplaced);
            }
            let first = match select_batches(&window, offset, 0) {
                BatchSelection::Found { start, .. } | BatchSelection::NeedBytes { start, .. } => {
                    start
                }
                BatchSelection::Before { scanned } if scanned > 0 => {
                    position += scanned as u64;
                    continue;
                }
                BatchSelection::Before { .. } => {
                    // One batch that ends before the target is larger than the
                    // window: skip it by its header.
                    let header = BatchHeader::parse(&window).map_err(|_| codes::CORRUPT_MESSAGE)?;
                    position += header.total_bytes() as u64;
                    continue;
                }
                BatchSelection::Corrupt { position: bad } => {
                    error!(topic = %self.topic, partition = self.index, segment = start.segment_base_offset, position = position + bad as u64, "invalid stored batch header; refusing to read past it");
                    return Err(codes::KAFKA_STORAGE_ERROR.into());
                }
            };
            let header =
                BatchHeader::parse(&window[first..]).map_err(|_| codes::CORRUPT_MESSAGE)?;
            let first_position = position + first as u64;
            let log = self.log.borrow();
            let segment = log
                .segment(start.segment_base_offset)
                .ok_or(PlanError::SegmentReplaced)?;
            let end = segment
                .read_end_within(first_position, limit, max_bytes as u64)
                .unwrap_or(ReadEnd::Indexed {
                    // KIP-74: the first batch goes whole even past max_bytes.
                    position: first_position + header.total_bytes() as u64,
                    next_offset: header.last_offset() + 1,
                });
            assert!(end.position() <= limit);
            let end_offset = match end {
                ReadEnd::Indexed { next_offset, .. } => next_offset,
                ReadEnd::Limit { .. } if segment.base_offset == log.active().base_offset => {
                    high_watermark
                }
                ReadEnd::Limit { .. } => segment.next_offset,
            };
            return Ok(Some(PlannedRead {
                file,
                position: first_position,
                len: end.position() - first_position,
                records: (end_offset - header.base_offset).max(0) as u64,
            }));
        }
        Err(PlanError::Code(codes::UNKNOWN_SERVER_ERROR))
    }

    /// ListOffsets: -1 latest, -2 earliest, -3 max timestamp, else the first
    /// record at or after a timestamp. Returns (offset, timestamp).
    pub async fn list_offset(&self, timestamp_ms: i64) -> Result<(i64, i64), ErrorCode> {
        if self.offline.get() {
            return Err(codes::KAFKA_STORAGE_ERROR);
        }
        match timestamp_ms {
            -1 => return Ok((self.high_watermark.get(), -1)),
            -2 => return Ok((self.log_start_offset(), -1)),
            _ => {}
        }
        let target = if timestamp_ms == -3 {
            // The record with the largest timestamp: the first one that reaches it.
            let max = self
                .log
                .borrow()
                .segments()
                .map(|s| s.max_timestamp_ms)
                .max()
                .unwrap_or(-1);
            if max < 0 {
                return Ok((-1, -1));
            }
            max
        } else if timestamp_ms < 0 {
            return Err(codes::INVALID_REQUEST);
        } else {
            timestamp_ms
        };
        let Some(start) = self.log.borrow().plan_timestamp_lookup(target) else {
            return Ok((-1, -1));
        };
        let file = self
            .files
            .borrow()
            .get(&start.segment_base_offset)
            .cloned()
            .ok_or(codes::UNKNOWN_SERVER_ERROR)?;
        let limit = self.readable_limit(start.segment_base_offset, start.segment_bytes);
        let mut position = start.position;
        // Walk batch headers; decode only the batch that reaches the target.
        for _round in 0..READ_ROUNDS_MAX * 64 {
            if position + BATCH_HEADER_BYTES as u64 > limit {
                break;
            }
            let head = file
                .read_at(position, BATCH_HEADER_BYTES)
                .await
                .map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
            let header = BatchHeader::parse(&head).map_err(|_| codes::CORRUPT_MESSAGE)?;
            if header.max_timestamp >= target && !header.is_control() {
                let batch = file
                    .read_at(position, header.total_bytes())
                    .await
                    .map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
                if let Some(found) =
                    first_record_at_or_after(&batch, target).map_err(|_| codes::CORRUPT_MESSAGE)?
                {
                    if found.0 < self.high_watermark.get() {
                        return Ok(found);
                    }
                    break;
                }
            }
            position += header.total_bytes() as u64;
        }
        Ok((-1, -1))
    }

    /// Deletes closed segments past retention; returns (segments, bytes).
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> io::Result<(usize, u64)> {
        if self.closed.get() {
            return Ok((0, 0));
        }
        let (removed, log_start_offset) = {
            let mut log = self.log.borrow_mut();
            let doomed = log.plan_retention(now_ms, retention_ms, retention_bytes);
            if doomed.is_empty() {
                return Ok((0, 0));
            }
            let removed = log.remove_segments(&doomed);
            (removed, log.log_start_offset())
        };
        let bytes: u64 = removed.iter().map(|s| s.size_bytes).sum();
        write_log_start_offset(&self.dir, log_start_offset).await?;
        for segment in &removed {
            self.files.borrow_mut().remove(&segment.base_offset);
            remove_segment_files(&self.dir, segment.base_offset).await?;
        }
        info!(topic = %self.topic, partition = self.index, segments = removed.len(), bytes, log_start_offset, "retention deleted segments");
        Ok((removed.len(), bytes))
    }

    /// DeleteRecords: records below `offset` (-1: the high watermark) go;
    /// returns the new log start offset (the low watermark).
    pub async fn delete_records(&self, offset: i64) -> Result<i64, ErrorCode> {
        if self.offline.get() {
            return Err(codes::KAFKA_STORAGE_ERROR);
        }
        let high_watermark = self.high_watermark.get();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset > high_watermark {
            return Err(codes::OFFSET_OUT_OF_RANGE);
        }
        let log_start_offset = self
            .log
            .borrow_mut()
            .advance_log_start_offset(offset)
            .map_err(|_| codes::OFFSET_OUT_OF_RANGE)?;
        write_log_start_offset(&self.dir, log_start_offset)
            .await
            .map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
        // Whole segments below the new start go now rather than at the next
        // retention pass.
        self.apply_retention(crate::now_ms(), -1, -1)
            .await
            .map_err(|_| codes::KAFKA_STORAGE_ERROR)?;
        Ok(log_start_offset)
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
        self.finish_direct().await?;
        self.sync().await?;
        let active = self.log.borrow().active().clone();
        write_clean_checkpoint(&self.dir, &active).await
    }

    /// Topic deletion: drain and remove the directory.
    pub async fn delete(&self) -> io::Result<()> {
        self.quiesce().await;
        let files: Vec<_> = std::mem::take(&mut *self.files.borrow_mut())
            .into_values()
            .collect();
        drop(files);
        std::fs::remove_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            sync_dir(parent).await?;
        }
        Ok(())
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
}

//! The reader: fetch plans (whole batches as a file range for a zero-copy
//! send), reads into memory, and offset lookups by time.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use bytes::Bytes;
use engine::log::{select_batches, BatchSelection, ReadEnd, ReadError};
use engine::protocol::{self as codes, ErrorCode};
use engine::record::{first_record_at_or_after, BatchHeader, BATCH_HEADER_BYTES};
use tracing::{error, warn};

use super::Partition;

/// ListOffsets' special timestamps (Kafka's ListOffsetsRequest).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// v8+ (KIP-405): the first offset in local storage.
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
/// v9+ (KIP-1005): the last offset in tiered storage.
const LATEST_TIERED_TIMESTAMP: i64 = -5;
use crate::mesh::data::{ReadBound, ReadOutcome};

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
/// Read size while a host loads an internal partition.
const LOAD_READ_BYTES: usize = 1 << 20;
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

impl Partition {
    /// The byte end a read may reach in a segment: what is written (a
    /// follower's fetch), or what is below the high watermark; for
    /// read_committed, `stable` (where the last stable offset's batch
    /// starts, when it is below the high watermark) bounds it too.
    fn readable_limit(
        &self,
        segment_base_offset: i64,
        segment_bytes: u64,
        bound: ReadBound,
        stable: Option<(i64, u64)>,
    ) -> u64 {
        let written = if segment_base_offset == self.log.borrow().active().base_offset {
            self.written_position.get()
        } else {
            segment_bytes
        };
        let visible = match bound {
            ReadBound::LogEnd => return written,
            ReadBound::HighWatermark | ReadBound::LastStable => {
                self.visible_limit(segment_base_offset, written)
            }
        };
        match stable {
            None => visible,
            Some((stable_segment, position)) => match segment_base_offset.cmp(&stable_segment) {
                std::cmp::Ordering::Less => visible,
                std::cmp::Ordering::Equal => visible.min(position),
                std::cmp::Ordering::Greater => 0,
            },
        }
    }

    /// The offset a read may reach: the written log end (a follower's
    /// fetch), the high watermark, or the last stable offset.
    pub(super) fn read_end_offset(&self, bound: ReadBound) -> i64 {
        match bound {
            ReadBound::LogEnd => self.written_end.get(),
            ReadBound::HighWatermark => self.high_watermark.get(),
            ReadBound::LastStable => self.last_stable_offset(),
        }
    }

    /// Where the batch that starts at `offset` (a batch boundary: the last
    /// stable offset is the first batch of a transaction, or the high
    /// watermark) lies: (segment base offset, byte position).
    async fn batch_position(&self, offset: i64) -> Result<(i64, u64), PlanError> {
        let start = match self.log.borrow().plan_read(offset) {
            Ok(Some(start)) => start,
            // At the log end: the end of the active segment.
            Ok(None) => {
                let log = self.log.borrow();
                return Ok((log.active().base_offset, self.written_position.get()));
            }
            Err(_) => return Err(codes::OFFSET_OUT_OF_RANGE.into()),
        };
        let file = match self.segment_file(start.segment_base_offset).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PlanError::SegmentReplaced)
            }
            Err(e) => return Err(self.storage_error("cannot open a segment file", &e).into()),
        };
        let mut position = start.position;
        for _round in 0..READ_ROUNDS_MAX {
            let window = file
                .read_at(position, HEADER_SCAN_WINDOW_BYTES)
                .await
                .map_err(|e| self.storage_error("segment read failed", &e))?;
            if window.is_empty() {
                return Ok((start.segment_base_offset, position));
            }
            match select_batches(&window, offset, 0) {
                BatchSelection::Found { start: at, .. }
                | BatchSelection::NeedBytes { start: at, .. } => {
                    return Ok((start.segment_base_offset, position + at as u64))
                }
                BatchSelection::Before { scanned } if scanned > 0 => position += scanned as u64,
                BatchSelection::Before { .. } => {
                    let header = BatchHeader::parse(&window).map_err(|_| codes::CORRUPT_MESSAGE)?;
                    position += header.total_bytes() as u64;
                }
                BatchSelection::Corrupt { .. } => return Err(codes::KAFKA_STORAGE_ERROR.into()),
            }
        }
        Err(PlanError::Code(codes::UNKNOWN_SERVER_ERROR))
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
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<ReadOutcome, ErrorCode> {
        if let Some(outcome) = self.read_without_io(offset, bound) {
            return outcome;
        }
        let (high_watermark, log_start_offset) =
            (self.high_watermark.get(), self.log_start_offset());
        let last_stable_offset = self.last_stable_offset();
        let planned = self.plan_fetch(offset, max_bytes, bound).await?;
        let records = match planned {
            None => None,
            Some(planned) => {
                let slice = self
                    .file_budget
                    .slices()
                    .slice(planned.file.as_raw_fd(), planned.position, planned.len)
                    .map_err(|e| {
                        error!(topic = %self.topic, partition = self.index, error = %e, "cannot duplicate segment descriptor");
                        codes::KAFKA_STORAGE_ERROR
                    })?;
                // None: the shard's responses in flight hold every slice
                // descriptor it may have; this partition sends nothing this
                // time, and the client fetches again.
                if slice.is_some() {
                    self.count_fetch(&planned);
                }
                slice
            }
        };
        let aborted = match (&records, bound) {
            (Some(_), ReadBound::LastStable) => {
                self.aborted_transactions(offset, last_stable_offset)
            }
            _ => Vec::new(),
        };
        Ok(ReadOutcome {
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            aborted,
            diverging_epoch: None,
        })
    }

    /// The outcome of [`Partition::read`] when it needs no I/O: nothing to
    /// read at `offset` (a caught-up consumer), or an error found from
    /// memory. None when there are batches to plan.
    pub fn read_without_io(
        &self,
        offset: i64,
        bound: ReadBound,
    ) -> Option<Result<ReadOutcome, ErrorCode>> {
        if self.offline.get() {
            return Some(Err(codes::KAFKA_STORAGE_ERROR));
        }
        let end = self.read_end_offset(bound);
        if offset < end {
            return None;
        }
        let log = self.log.borrow();
        // Caught up (the common case of a long poll): no index lookup.
        let caught_up = offset == end && offset >= log.log_start_offset();
        if !caught_up && (offset > self.written_end.get() || log.plan_read(offset).is_err()) {
            return Some(Err(codes::OFFSET_OUT_OF_RANGE));
        }
        Some(Ok(ReadOutcome {
            records: None,
            high_watermark: self.high_watermark.get(),
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: log.log_start_offset(),
            aborted: Vec::new(),
            diverging_epoch: None,
        }))
    }

    /// The same batches as [`Partition::read`], copied into memory, for the
    /// broker's own readers (group state loading).
    pub async fn read_bytes(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Bytes, ErrorCode> {
        let Some(planned) = self.plan_fetch(offset, max_bytes, bound).await? else {
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

    /// Hands every batch from the log start to the log end to `each`, in
    /// order: how the broker's own hosts (groups, transactions) load an
    /// internal partition they now lead. Stops at the first read error.
    pub async fn for_each_batch(
        &self,
        mut each: impl FnMut(&BatchHeader, &[u8]),
    ) -> Result<(), ErrorCode> {
        let mut offset = self.log_start_offset();
        // Each round advances past at least one batch or stops.
        for _round in 0..10_000_000u64 {
            if offset >= self.log_end_offset() {
                break;
            }
            let batches = self
                .read_bytes(offset, LOAD_READ_BYTES, ReadBound::LogEnd)
                .await?;
            if batches.is_empty() {
                break;
            }
            let mut position = 0usize;
            while position < batches.len() {
                let Ok(header) = BatchHeader::parse(&batches[position..]) else {
                    break;
                };
                let end = position + header.total_bytes();
                if end > batches.len() {
                    break;
                }
                each(&header, &batches[position..end]);
                offset = header.next_offset();
                position = end;
            }
            if position == 0 {
                break;
            }
        }
        Ok(())
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
        bound: ReadBound,
    ) -> Result<Option<PlannedRead>, ErrorCode> {
        // Compaction and retention replace or delete segments while a plan
        // awaits its header read: the plan then starts over from the index.
        for _attempt in 0..PLAN_ATTEMPTS_MAX {
            match self.plan_fetch_once(offset, max_bytes, bound).await {
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
        bound: ReadBound,
    ) -> Result<Option<PlannedRead>, PlanError> {
        if self.offline.get() {
            return Err(codes::KAFKA_STORAGE_ERROR.into());
        }
        let end_offset = self.read_end_offset(bound);
        // read_committed below an open transaction: the bytes end where
        // the transaction's first batch starts.
        let stable = if bound == ReadBound::LastStable
            && end_offset < self.high_watermark.get()
            && offset < end_offset
        {
            Some(self.batch_position(end_offset).await?)
        } else {
            None
        };
        let start = match self.log.borrow().plan_read(offset) {
            Err(ReadError::OffsetOutOfRange { .. }) => {
                return Err(codes::OFFSET_OUT_OF_RANGE.into())
            }
            Ok(None) => None,
            Ok(Some(start)) => Some(start),
        };
        let Some(mut start) = start.filter(|_| offset < end_offset) else {
            return Ok(None);
        };
        let mut position = start.position;
        for _round in 0..READ_ROUNDS_MAX {
            let limit = self.readable_limit(
                start.segment_base_offset,
                start.segment_bytes,
                bound,
                stable,
            );
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
            let file = match self.segment_file(start.segment_base_offset).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(PlanError::SegmentReplaced)
                }
                Err(e) => return Err(self.storage_error("cannot open a segment file", &e).into()),
            };
            let window_bytes = ((limit - position) as usize).min(HEADER_SCAN_WINDOW_BYTES);
            let window = file
                .read_at(position, window_bytes)
                .await
                .map_err(|e| self.storage_error("segment read failed", &e))?;
            let same_file = self
                .open_file(start.segment_base_offset)
                .is_some_and(|current| Rc::ptr_eq(&current, &file));
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
                    end_offset
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
    /// record at or after a timestamp. Returns (offset, timestamp). For
    /// read_committed, latest is the last stable offset and nothing at or
    /// past it is found by time.
    pub async fn list_offset(
        &self,
        timestamp_ms: i64,
        read_committed: bool,
    ) -> Result<(i64, i64), ErrorCode> {
        if self.offline.get() {
            return Err(codes::KAFKA_STORAGE_ERROR);
        }
        let bound = if read_committed {
            ReadBound::LastStable
        } else {
            ReadBound::HighWatermark
        };
        let end_offset = self.read_end_offset(bound);
        match timestamp_ms {
            LATEST_TIMESTAMP => return Ok((end_offset, -1)),
            // Every segment is local (no tiered storage): the earliest local
            // offset is the log start offset.
            EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => {
                return Ok((self.log_start_offset(), -1))
            }
            // Nothing is tiered: Kafka answers offset -1.
            LATEST_TIERED_TIMESTAMP => return Ok((-1, -1)),
            _ => {}
        }
        let target = if timestamp_ms == MAX_TIMESTAMP {
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
            .segment_file(start.segment_base_offset)
            .await
            .map_err(|e| self.storage_error("cannot open a segment file", &e))?;
        let limit = self.readable_limit(
            start.segment_base_offset,
            start.segment_bytes,
            ReadBound::HighWatermark,
            None,
        );
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
                    if found.0 < end_offset {
                        return Ok(found);
                    }
                    break;
                }
            }
            position += header.total_bytes() as u64;
        }
        Ok((-1, -1))
    }
}

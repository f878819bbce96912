//! The state of one partition's log and the plans the owning shard carries
//! out: where an append goes (and whether the log rolls first), where a read
//! starts, where a timestamp lookup starts.

use std::collections::BTreeMap;

use super::segment::Segment;
use crate::record::{patch_base_offset, patch_leader_epoch, validate_record_set, BatchError};

/// Per-partition limits, named after the Kafka topic configs they mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes_max: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest record set a producer may append.
    pub message_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            message_bytes_max: 1_048_588,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("corrupt record set: {0}")]
    Corrupt(#[from] BatchError),
    #[error("record set of {bytes} bytes is over max.message.bytes {max}")]
    TooLarge { bytes: usize, max: usize },
}

/// What the shard must do to append a validated, patched record set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendPlan {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest maxTimestamp among the batches.
    pub max_timestamp_ms: i64,
    /// Close the active segment and start a new one at `base_offset` first.
    pub roll_first: bool,
    /// Segment (by base offset) and position the bytes go to; when
    /// `roll_first`, the new segment at position 0.
    pub segment_base_offset: i64,
    pub position: u64,
    pub bytes: usize,
    headers: Vec<crate::record::BatchHeader>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
}

/// Where a read of the log starts: scan whole batches from `position` of the
/// segment at `segment_base_offset`, up to `segment_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStart {
    pub segment_base_offset: i64,
    pub position: u64,
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLog {
    config: LogConfig,
    /// By base offset; the last one is the active segment. Never empty.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
}

impl PartitionLog {
    /// A new, empty log starting at offset 0.
    pub fn new_empty(config: LogConfig) -> PartitionLog {
        PartitionLog::from_segments(config, vec![Segment::new(0)], 0)
    }

    /// A log rebuilt from recovered segments (sorted or not).
    pub fn from_segments(
        config: LogConfig,
        segments: Vec<Segment>,
        log_start_offset: i64,
    ) -> PartitionLog {
        assert!(!segments.is_empty(), "a log always has an active segment");
        let segments: BTreeMap<i64, Segment> =
            segments.into_iter().map(|s| (s.base_offset, s)).collect();
        let mut expected_next: Option<i64> = None;
        for segment in segments.values() {
            if let Some(next) = expected_next {
                assert!(segment.base_offset >= next, "segments overlap");
            }
            expected_next = Some(segment.next_offset);
        }
        let first_base = *segments.keys().next().expect("non-empty");
        PartitionLog {
            config,
            segments,
            log_start_offset: log_start_offset.max(first_base),
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The log end offset: the offset the next appended record gets.
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("never empty")
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.values()
    }

    pub fn segment(&self, base_offset: i64) -> Option<&Segment> {
        self.segments.get(&base_offset)
    }

    /// The segment after the one at `base_offset`.
    pub fn segment_after(&self, base_offset: i64) -> Option<&Segment> {
        self.segments
            .range(base_offset + 1..)
            .next()
            .map(|(_, segment)| segment)
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes).sum()
    }

    /// Validates a producer's record set, assigns offsets by patching every
    /// batch's baseOffset and leader epoch in place, and says where the bytes
    /// go. Nothing changes until `commit_append`.
    pub fn plan_append(
        &self,
        record_set: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendPlan, AppendError> {
        if record_set.len() > self.config.message_bytes_max {
            return Err(AppendError::TooLarge {
                bytes: record_set.len(),
                max: self.config.message_bytes_max,
            });
        }
        let spans = validate_record_set(record_set)?;
        let base_offset = self.next_offset();
        let mut next = base_offset;
        let mut headers = Vec::with_capacity(spans.len());
        let mut max_timestamp_ms = -1;
        for span in spans {
            let batch = &mut record_set[span.range.clone()];
            patch_base_offset(batch, next);
            patch_leader_epoch(batch, leader_epoch);
            let mut header = span.header;
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            next = header.next_offset();
            max_timestamp_ms = max_timestamp_ms.max(header.max_timestamp);
            headers.push(header);
        }
        let last_offset = next - 1;
        let active = self.active();
        let bytes = record_set.len();
        let roll_first = !active.is_empty()
            && (active.size_bytes + bytes as u64 > self.config.segment_bytes_max
                || active
                    .first_append_ms
                    .is_some_and(|first| now_ms - first >= self.config.segment_ms)
                || !active.can_hold_offset(last_offset)
                || active.size_bytes + bytes as u64 > u32::MAX as u64);
        let (segment_base_offset, position) = if roll_first {
            (base_offset, 0)
        } else {
            (active.base_offset, active.size_bytes)
        };
        Ok(AppendPlan {
            base_offset,
            last_offset,
            max_timestamp_ms,
            roll_first,
            segment_base_offset,
            position,
            bytes,
            headers,
        })
    }

    /// Starts a new, empty active segment at the log end offset.
    pub fn roll(&mut self) -> i64 {
        let base = self.next_offset();
        if self.active().is_empty() {
            // Nothing to close: an empty active segment already sits at `base`.
            return self.active().base_offset;
        }
        self.segments.insert(base, Segment::new(base));
        base
    }

    /// Records a planned append after its bytes were written.
    pub fn commit_append(&mut self, plan: &AppendPlan, now_ms: i64) {
        assert_eq!(plan.base_offset, self.next_offset(), "appends are serial");
        let interval = self.config.index_interval_bytes;
        let active = self.segments.values_mut().next_back().expect("never empty");
        assert_eq!(active.base_offset, plan.segment_base_offset);
        assert_eq!(active.size_bytes, plan.position);
        for header in &plan.headers {
            active.record_batch(header, interval, now_ms);
        }
        assert_eq!(active.next_offset, plan.last_offset + 1);
    }

    /// Where to start reading for `offset`. `None` when `offset` is the log
    /// end (nothing to read yet).
    pub fn plan_read(&self, offset: i64) -> Result<Option<ReadStart>, ReadError> {
        let log_end_offset = self.next_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset == log_end_offset {
            return Ok(None);
        }
        let (_, segment) = self
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset >= log start >= first segment base");
        if offset >= segment.next_offset {
            // In a gap after this segment: read from the next one.
            return Ok(self
                .segment_after(segment.base_offset)
                .map(|next| ReadStart {
                    segment_base_offset: next.base_offset,
                    position: 0,
                    segment_bytes: next.size_bytes,
                }));
        }
        let position = segment.offset_index.lookup(segment.relative_offset(offset)) as u64;
        Ok(Some(ReadStart {
            segment_base_offset: segment.base_offset,
            position,
            segment_bytes: segment.size_bytes,
        }))
    }

    /// Where to start scanning for the first record with a timestamp at or
    /// after `timestamp_ms`: the first segment whose max timestamp reaches it.
    /// `None` when no record is that new.
    pub fn plan_timestamp_lookup(&self, timestamp_ms: i64) -> Option<ReadStart> {
        let segment = self.segments.values().find(|s| {
            s.next_offset > self.log_start_offset && s.max_timestamp_ms >= timestamp_ms
        })?;
        let relative = segment.time_index.lookup(timestamp_ms);
        let offset = (segment.base_offset + relative as i64).max(self.log_start_offset);
        let position = segment.offset_index.lookup(segment.relative_offset(offset)) as u64;
        Some(ReadStart {
            segment_base_offset: segment.base_offset,
            position,
            segment_bytes: segment.size_bytes,
        })
    }
}

//! The state of one partition's log and the plans the owning shard carries
//! out: where an append goes (and whether the log rolls first), where a read
//! starts, where a timestamp lookup starts.

use std::collections::BTreeMap;

use super::segment::{Segment, SegmentEnd};
use crate::record::{
    patch_base_offset, patch_leader_epoch, validate_record_set, validate_replica_record_set,
    BatchError,
};

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

impl AppendPlan {
    /// The batches' headers, offsets patched.
    pub fn batches(&self) -> &[crate::record::BatchHeader] {
        &self.headers
    }
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
        let log_end_offset = segments
            .values()
            .next_back()
            .expect("non-empty")
            .next_offset;
        // DeleteRecords may have moved the start (durably) past records a
        // crash then lost (they were never synced): the start cannot be past
        // the end, or no offset would be readable or appendable in order.
        let log_start_offset = log_start_offset.max(first_base).min(log_end_offset);
        PartitionLog {
            config,
            segments,
            log_start_offset,
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
        for span in spans {
            let batch = &mut record_set[span.range.clone()];
            patch_base_offset(batch, next);
            patch_leader_epoch(batch, leader_epoch);
            let mut header = span.header;
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            next = header.next_offset();
            headers.push(header);
        }
        Ok(self.placed(headers, record_set.len(), now_ms))
    }

    /// Plans the append of a record set a follower copied from its leader:
    /// offsets and leader epochs stay as the leader assigned them (they must
    /// follow this log's end). Nothing changes until `commit_append`.
    pub fn plan_replica_append(
        &self,
        record_set: &[u8],
        now_ms: i64,
    ) -> Result<AppendPlan, AppendError> {
        let spans = validate_replica_record_set(record_set, self.next_offset())?;
        if spans.is_empty() {
            return Err(AppendError::Corrupt(BatchError::Truncated {
                available: 0,
                needed: crate::record::BATCH_HEADER_BYTES,
            }));
        }
        // Segments roll by this replica's own configs: a leader's may be
        // larger (another `segment.bytes`).
        let headers = spans.iter().map(|s| s.header).collect();
        Ok(self.placed(headers, record_set.len(), now_ms))
    }

    /// The segments a truncation to `offset` removes whole (they start at
    /// or after it; never the first), and the one it cuts (base offset):
    /// the segment holding `offset`, or the first one when `offset` is at
    /// or before its base. None to cut when `offset` is a segment boundary.
    pub fn plan_truncation(&self, offset: i64) -> (Vec<i64>, Option<i64>) {
        let first = self.first_base_offset();
        let removed: Vec<i64> = self
            .segments
            .range(offset.max(first + 1)..)
            .map(|(&base, _)| base)
            .collect();
        let cut = if offset <= first {
            Some(first).filter(|_| self.segments[&first].next_offset > first)
        } else {
            self.segments
                .range(..offset)
                .next_back()
                .filter(|(_, s)| s.next_offset > offset)
                .map(|(&base, _)| base)
        };
        (removed, cut)
    }

    fn first_base_offset(&self) -> i64 {
        *self.segments.keys().next().expect("never empty")
    }

    /// A follower's log loses everything from `offset` on (it diverged from
    /// its leader's): segments after it go, the one holding it ends at
    /// `position` (the batch boundary of `offset` in its file; 0 when the
    /// cut segment is the first and `offset` is at or before its base).
    /// Returns the segments removed, whose files the caller deletes.
    pub fn truncate_to(&mut self, offset: i64, position: u64) -> Vec<Segment> {
        let (removed_bases, cut) = self.plan_truncation(offset);
        let removed: Vec<Segment> = removed_bases
            .iter()
            .filter_map(|base| self.segments.remove(base))
            .collect();
        if let Some(base) = cut {
            let segment = self.segments.get_mut(&base).expect("cut segment exists");
            let next = offset.max(segment.base_offset);
            segment.truncate_at(position, next);
        }
        assert!(!self.segments.is_empty());
        assert!(self.next_offset() <= offset.max(self.first_base_offset()));
        self.log_start_offset = self.log_start_offset.min(self.next_offset());
        removed
    }

    /// The plan for `bytes` of batches (`headers`, at least one): whether the active segment rolls first (it is full, too old, or its
    /// 32-bit offsets or positions would overflow), and the segment base and
    /// position they land at.
    fn placed(
        &self,
        headers: Vec<crate::record::BatchHeader>,
        bytes: usize,
        now_ms: i64,
    ) -> AppendPlan {
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            unreachable!("a validated record set has a batch");
        };
        let (base_offset, last_offset) = (first.base_offset, last.last_offset());
        let max_timestamp_ms = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);
        let active = self.active();
        let roll_first = !active.is_empty()
            && (active.size_bytes + bytes as u64 > self.config.segment_bytes_max
                || active
                    .first_append_ms
                    .is_some_and(|first| now_ms - first >= self.config.segment_ms)
                || !active.can_hold_offset(last_offset)
                || active.size_bytes + bytes as u64 > u32::MAX as u64);
        let (segment_base_offset, position) = if roll_first {
            (self.next_offset(), 0)
        } else {
            (active.base_offset, active.size_bytes)
        };
        AppendPlan {
            base_offset,
            last_offset,
            max_timestamp_ms,
            roll_first,
            segment_base_offset,
            position,
            bytes,
            headers,
        }
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
        // Serial; a follower's copy may skip offsets compaction removed.
        assert!(plan.base_offset >= self.next_offset(), "appends are serial");
        let interval = self.config.index_interval_bytes;
        let active = self.segments.values_mut().next_back().expect("never empty");
        assert_eq!(active.base_offset, plan.segment_base_offset);
        assert_eq!(active.size_bytes, plan.position);
        for header in &plan.headers {
            active.record_batch(header, interval, now_ms);
        }
        assert_eq!(active.next_offset, plan.last_offset + 1);
    }

    /// The active segment's end now: `roll_back_to` it undoes the appends
    /// committed after this call (their write failed).
    pub fn append_mark(&self) -> SegmentEnd {
        self.active().end()
    }

    /// Undoes the appends committed since `mark`: the log end offset, the
    /// active segment's size and its indexes go back, so the offsets those
    /// appends took are handed out again and the log stays dense.
    pub fn roll_back_to(&mut self, mark: SegmentEnd) {
        let active = self.segments.values_mut().next_back().expect("never empty");
        assert_eq!(
            active.base_offset, mark.base_offset,
            "no roll between mark and roll back"
        );
        active.truncate_to_end(mark);
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

    /// Closed segments that retention removes, oldest first: whole segments
    /// past `retention_ms` (by their largest timestamp), then the oldest
    /// while the log is over `retention_bytes`, and any that lie wholly below
    /// the log start offset. The active segment always stays. -1 disables a
    /// bound.
    pub fn plan_retention(&self, now_ms: i64, retention_ms: i64, retention_bytes: i64) -> Vec<i64> {
        let active_base = self.active().base_offset;
        let mut remaining_bytes = self.size_bytes();
        let mut doomed = Vec::new();
        for segment in self.segments.values() {
            if segment.base_offset == active_base {
                break;
            }
            let below_start = segment.next_offset <= self.log_start_offset;
            let expired = retention_ms >= 0
                && segment.max_timestamp_ms >= 0
                && now_ms.saturating_sub(segment.max_timestamp_ms) > retention_ms;
            let oversize = retention_bytes >= 0
                && remaining_bytes.saturating_sub(segment.size_bytes) >= retention_bytes as u64;
            if !(below_start || expired || oversize) {
                // Retention removes a prefix of the log, never a hole.
                break;
            }
            remaining_bytes -= segment.size_bytes;
            doomed.push(segment.base_offset);
        }
        doomed
    }

    /// Drops the oldest segments (a plan from `plan_retention`) and moves the
    /// log start offset to the first remaining offset if it was below.
    pub fn remove_segments(&mut self, bases: &[i64]) -> Vec<Segment> {
        let mut removed = Vec::with_capacity(bases.len());
        for base in bases {
            assert_ne!(*base, self.active().base_offset, "the active segment stays");
            let first = *self.segments.keys().next().expect("never empty");
            assert_eq!(*base, first, "retention removes a prefix");
            removed.push(self.segments.remove(base).expect("first exists"));
        }
        let first_base = *self.segments.keys().next().expect("never empty");
        self.log_start_offset = self.log_start_offset.max(first_base);
        removed
    }

    /// Compaction's swap: the closed segments at `old_bases` (a contiguous
    /// run, the active segment excluded) are replaced by one segment holding
    /// what survived. Its base is the first old base; it may be empty.
    pub fn replace_segments(&mut self, old_bases: &[i64], replacement: Segment) {
        assert!(!old_bases.is_empty());
        assert_eq!(replacement.base_offset, old_bases[0]);
        let active_base = self.active().base_offset;
        let end = self
            .segment_after(*old_bases.last().expect("non-empty"))
            .map(|s| s.base_offset)
            .unwrap_or(i64::MAX);
        assert!(end <= active_base, "the active segment is never compacted");
        assert!(
            replacement.next_offset <= end,
            "compaction never adds offsets"
        );
        for base in old_bases {
            assert_ne!(*base, active_base);
            self.segments.remove(base).expect("old segment exists");
        }
        self.segments.insert(replacement.base_offset, replacement);
    }

    /// DeleteRecords: moves the log start offset forward (never back).
    /// `offset` must not pass the log end.
    pub fn advance_log_start_offset(&mut self, offset: i64) -> Result<i64, ReadError> {
        let log_end_offset = self.next_offset();
        if offset > log_end_offset || offset < 0 {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        self.log_start_offset = self.log_start_offset.max(offset);
        Ok(self.log_start_offset)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::SimLog;

    /// Found by the log simulation (seed 1073162): the start offset was
    /// written durably, the records below it were lost by a crash.
    #[test]
    fn recovered_log_start_is_never_past_the_end() {
        let mut segment = Segment::new(700);
        let mut batch = simple_batch(35, 1, 0);
        patch_base_offset(&mut batch, 700);
        segment.record_batch(&validate_batch(&batch).unwrap(), 4096, 0);
        assert_eq!(segment.next_offset, 735);
        let log = PartitionLog::from_segments(LogConfig::default(), vec![segment], 736);
        assert_eq!(log.log_start_offset(), 735);
        assert_eq!(log.plan_read(735), Ok(None));
        let log = PartitionLog::from_segments(LogConfig::default(), vec![Segment::new(5)], 0);
        assert_eq!(log.log_start_offset(), 5);
    }
    use crate::log::Segment;
    use crate::record::testing::{fix_crc, simple_batch};
    use crate::record::{patch_base_offset, validate_batch, validate_record_set, BatchHeader};
    use proptest::prelude::*;

    fn config(segment_bytes_max: u64, index_interval_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes_max,
            segment_ms: i64::MAX / 4,
            index_interval_bytes,
            message_bytes_max: 1 << 20,
        }
    }

    /// (record count, value bytes, base timestamp) per batch, 1..3 batches
    /// per record set.
    type Shape = Vec<Vec<(usize, usize, i64)>>;

    fn shapes() -> impl Strategy<Value = Shape> {
        prop::collection::vec(
            prop::collection::vec((1usize..6, 0usize..120, 0i64..5_000), 1..=3),
            1..40,
        )
    }

    fn record_set(batches: &[(usize, usize, i64)]) -> Vec<u8> {
        batches
            .iter()
            .map(|&(count, value_bytes, timestamp)| simple_batch(count, value_bytes, timestamp))
            .collect::<Vec<_>>()
            .concat()
    }

    fn build(shape: &Shape, segment_bytes_max: u64, index_interval_bytes: u64) -> SimLog {
        let mut sim = SimLog::new(PartitionLog::new_empty(config(
            segment_bytes_max,
            index_interval_bytes,
        )));
        for (i, batches) in shape.iter().enumerate() {
            let set = record_set(batches);
            let set_bytes = set.len();
            let before = sim.log.next_offset();
            let (plan, _) = sim.append(set, 3, i as i64).unwrap();
            let records: usize = batches.iter().map(|b| b.0).sum();
            assert_eq!(plan.base_offset, before);
            assert_eq!(plan.last_offset, before + records as i64 - 1);
            assert_eq!(plan.bytes, set_bytes);
            assert_eq!(
                plan.max_timestamp_ms,
                batches.iter().map(|b| b.2 + b.0 as i64 - 1).max().unwrap()
            );
        }
        sim
    }

    fn check_invariants(sim: &SimLog, segment_bytes_max: u64) {
        let log = &sim.log;
        let segments: Vec<&Segment> = log.segments().collect();
        assert_eq!(segments.len(), sim.files.len());
        for pair in segments.windows(2) {
            assert_eq!(pair[0].next_offset, pair[1].base_offset);
        }
        for segment in &segments {
            let file = &sim.files[&segment.base_offset];
            assert_eq!(file.len() as u64, segment.size_bytes);
            // Every byte of every segment is valid, patched batches.
            if !file.is_empty() {
                let spans = validate_record_set(file).unwrap();
                assert_eq!(spans[0].header.base_offset, segment.base_offset);
                for span in &spans {
                    assert_eq!(span.header.partition_leader_epoch, 3);
                }
                assert_eq!(
                    spans.last().unwrap().header.next_offset(),
                    segment.next_offset
                );
            }
            // Only a record set that alone overflows a segment makes it bigger.
            let appends = sim
                .batches
                .iter()
                .filter(|b| b.segment_base_offset == segment.base_offset)
                .count();
            assert!(segment.size_bytes <= segment_bytes_max || appends <= 3);
        }
        assert_eq!(
            log.size_bytes(),
            sim.files.values().map(|f| f.len() as u64).sum::<u64>()
        );
        let records = sim.batches.last().map_or(0, |b| b.last_offset + 1);
        assert_eq!(log.next_offset(), records);
        assert_eq!(log.log_start_offset(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// A follower copies a leader's batches with their offsets, truncates
        /// to any batch boundary, and copies the rest again: it ends where
        /// the leader does, with the same bytes.
        #[test]
        fn follower_copies_truncates_and_copies_again(
            shape in shapes(),
            segment_bytes_max in 200u64..3_000,
            cut in any::<prop::sample::Index>(),
        ) {
            let leader = build(&shape, segment_bytes_max, 100);
            let stored: Vec<u8> = leader.files.values().flatten().copied().collect();
            let spans = validate_record_set(&stored).unwrap();
            let mut follower = SimLog::new(PartitionLog::new_empty(config(segment_bytes_max, 100)));
            let copy = |follower: &mut SimLog, spans: &[crate::record::BatchSpan]| {
                for span in spans {
                    let bytes = &stored[span.range.clone()];
                    let plan = follower.log.plan_replica_append(bytes, 0).unwrap();
                    assert_eq!(plan.base_offset, span.header.base_offset);
                    if plan.roll_first {
                        follower.log.roll();
                        follower.files.insert(plan.base_offset, Vec::new());
                    }
                    let plan = follower.log.plan_replica_append(bytes, 0).unwrap();
                    follower.log.commit_append(&plan, 0);
                    follower.files.entry(plan.segment_base_offset).or_default().extend_from_slice(bytes);
                }
            };
            follower.files.insert(0, Vec::new());
            copy(&mut follower, &spans);
            prop_assert_eq!(follower.log.next_offset(), leader.log.next_offset());
            // Truncate at a batch boundary.
            let keep = cut.index(spans.len() + 1);
            let offset = spans.get(keep).map_or(leader.log.next_offset(), |s| s.header.base_offset);
            let (removed, cut_base) = follower.log.plan_truncation(offset);
            let position = cut_base.map_or(0, |base| {
                spans.iter().filter(|s| s.header.base_offset >= base && s.header.base_offset < offset)
                    .map(|s| s.header.total_bytes() as u64).sum()
            });
            let gone = follower.log.truncate_to(offset, position);
            prop_assert_eq!(gone.len(), removed.len());
            for base in removed {
                follower.files.remove(&base);
            }
            if let Some(base) = cut_base {
                follower.files.get_mut(&base).unwrap().truncate(position as usize);
            }
            prop_assert_eq!(follower.log.next_offset(), offset);
            copy(&mut follower, &spans[keep..]);
            prop_assert_eq!(follower.log.next_offset(), leader.log.next_offset());
            let copied: Vec<u8> = follower.files.values().flatten().copied().collect();
            prop_assert_eq!(copied, stored.clone());
            prop_assert_eq!(follower.log.size_bytes(), stored.len() as u64);
        }

        /// A failed write rolls the log back to its mark: the log is exactly
        /// as before, and the same appends then get the same offsets.
        #[test]
        fn roll_back_undoes_failed_appends(
            before in shapes(),
            failed in shapes(),
            index_interval_bytes in 0u64..600,
        ) {
            let mut log = PartitionLog::new_empty(config(u64::MAX / 4, index_interval_bytes));
            let commit = |log: &mut PartitionLog, batches: &[(usize, usize, i64)], now_ms: i64| {
                let mut set = record_set(batches);
                let plan = log.plan_append(&mut set, 0, now_ms).unwrap();
                assert!(!plan.roll_first);
                log.commit_append(&plan, now_ms);
                plan.base_offset
            };
            for (i, batches) in before.iter().enumerate() {
                commit(&mut log, batches, i as i64);
            }
            let snapshot = log.clone();
            let mark = log.append_mark();
            let first_try: Vec<i64> = failed
                .iter()
                .map(|batches| commit(&mut log, batches, 9_999))
                .collect();
            log.roll_back_to(mark);
            prop_assert_eq!(&log, &snapshot);
            let second_try: Vec<i64> = failed
                .iter()
                .map(|batches| commit(&mut log, batches, 9_999))
                .collect();
            prop_assert_eq!(first_try, second_try);
        }

        #[test]
        fn appended_batches_read_back(
            shape in shapes(),
            segment_bytes_max in 200u64..3_000,
            index_interval_bytes in 0u64..600,
            reads in prop::collection::vec(
                (any::<prop::sample::Index>(), 1usize..2_000, 1usize..2_500),
                1..30,
            ),
        ) {
            let sim = build(&shape, segment_bytes_max, index_interval_bytes);
            check_invariants(&sim, segment_bytes_max);
            let end = sim.log.next_offset();
            for (at, max_bytes, window_bytes) in reads {
                let offset = at.index(end as usize) as i64;
                let got = sim.fetch(offset, max_bytes, window_bytes).unwrap().expect("data");
                let spans = validate_record_set(&got).unwrap();
                let first = sim
                    .batches
                    .iter()
                    .position(|b| b.base_offset <= offset && offset <= b.last_offset)
                    .unwrap();
                // The batch holding the offset first, then its successors in
                // the same segment, byte for byte.
                let mut expected_next = sim.batches[first].base_offset;
                for (i, span) in spans.iter().enumerate() {
                    let stored = &sim.batches[first + i];
                    prop_assert_eq!(stored.segment_base_offset, sim.batches[first].segment_base_offset);
                    prop_assert_eq!(span.header.base_offset, expected_next);
                    prop_assert_eq!(span.header.last_offset(), stored.last_offset);
                    let file = &sim.files[&stored.segment_base_offset];
                    prop_assert_eq!(&got[span.range.clone()], &file[stored.position..stored.position + stored.bytes]);
                    expected_next = span.header.next_offset();
                }
                if spans.len() > 1 {
                    prop_assert!(got.len() <= max_bytes);
                }
                // With a window as large as the segment, the selection is as
                // long as max_bytes allows.
                let whole = sim.fetch(offset, max_bytes, usize::MAX).unwrap().expect("data");
                prop_assert!(whole.starts_with(&got));
                let taken = validate_record_set(&whole).unwrap().len();
                if let Some(next) = sim.batches.get(first + taken) {
                    if next.segment_base_offset == sim.batches[first].segment_base_offset {
                        prop_assert!(whole.len() + next.bytes > max_bytes);
                    }
                }
            }
            prop_assert_eq!(sim.fetch(end, 100, 100), Ok(None));
            prop_assert!(sim.fetch(end + 1, 100, 100).is_err());
            prop_assert!(sim.fetch(-1, 100, 100).is_err());
        }

        #[test]
        fn timestamp_lookup_starts_before_the_first_match(
            shape in shapes(),
            segment_bytes_max in 200u64..3_000,
            index_interval_bytes in 0u64..600,
            increasing in any::<bool>(),
            targets in prop::collection::vec(-10i64..12_000, 1..30),
        ) {
            let mut shape = shape;
            if increasing {
                let mut timestamp = 0;
                for set in &mut shape {
                    for batch in set.iter_mut() {
                        timestamp += batch.2 % 300;
                        batch.2 = timestamp;
                        timestamp += batch.0 as i64 - 1;
                    }
                }
            }
            let sim = build(&shape, segment_bytes_max, index_interval_bytes);
            for target in targets {
                let expected = sim.batches.iter().find(|b| b.max_timestamp >= target);
                let start = sim.log.plan_timestamp_lookup(target);
                let (Some(expected), Some(start)) = (expected, start) else {
                    prop_assert_eq!(expected.is_none(), start.is_none());
                    continue;
                };
                // The first matching batch lies in the planned segment, at or
                // after the planned position; scanning headers from there
                // finds it.
                prop_assert_eq!(start.segment_base_offset, expected.segment_base_offset);
                let file = &sim.files[&start.segment_base_offset];
                prop_assert_eq!(start.segment_bytes, file.len() as u64);
                let mut position = start.position as usize;
                let found = loop {
                    prop_assert!(position < file.len(), "scan ran off the segment");
                    let header = BatchHeader::parse(&file[position..]).unwrap();
                    if header.max_timestamp >= target {
                        break position;
                    }
                    position += header.total_bytes();
                };
                prop_assert_eq!(found, expected.position);
            }
        }
    }

    #[test]
    fn empty_log() {
        let log = PartitionLog::new_empty(LogConfig::default());
        assert_eq!(log.next_offset(), 0);
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
        assert_eq!(log.plan_read(0), Ok(None));
        assert_eq!(
            log.plan_read(1),
            Err(ReadError::OffsetOutOfRange {
                offset: 1,
                log_start_offset: 0,
                log_end_offset: 0
            })
        );
        assert_eq!(log.plan_timestamp_lookup(-1), None);
        assert_eq!(log.plan_timestamp_lookup(0), None);
        assert!(log.segment_after(0).is_none());
    }

    #[test]
    fn plan_append_assigns_offsets_without_changing_state() {
        let log = PartitionLog::new_empty(config(1 << 20, 4096));
        let mut set = [simple_batch(3, 10, 100), simple_batch(2, 10, 50)].concat();
        let original = set.clone();
        let plan = log.plan_append(&mut set, 9, 0).unwrap();
        assert_eq!((plan.base_offset, plan.last_offset), (0, 4));
        assert_eq!(plan.max_timestamp_ms, 102);
        assert!(!plan.roll_first);
        assert_eq!((plan.segment_base_offset, plan.position), (0, 0));
        assert_ne!(set, original);
        let spans = validate_record_set(&set).unwrap();
        assert_eq!(spans[0].header.base_offset, 0);
        assert_eq!(spans[1].header.base_offset, 3);
        assert!(spans.iter().all(|s| s.header.partition_leader_epoch == 9));
        // Nothing is committed yet.
        assert_eq!(log.next_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
    }

    #[test]
    fn too_large_and_corrupt_sets_are_refused() {
        let mut log = PartitionLog::new_empty(config(1 << 20, 4096));
        let mut cfg = *log.config();
        cfg.message_bytes_max = 200;
        log.set_config(cfg);
        let mut big = simple_batch(5, 100, 0);
        let len = big.len();
        assert_eq!(
            log.plan_append(&mut big, 0, 0),
            Err(AppendError::TooLarge {
                bytes: len,
                max: 200
            })
        );
        let mut corrupt = simple_batch(1, 10, 0);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(matches!(
            log.plan_append(&mut corrupt, 0, 0),
            Err(AppendError::Corrupt(BatchError::CrcMismatch { .. }))
        ));
        assert!(matches!(
            log.plan_append(&mut [], 0, 0),
            Err(AppendError::Corrupt(BatchError::Truncated { .. }))
        ));
        // A corrupt second batch leaves the first one untouched.
        let good = simple_batch(1, 10, 0);
        let mut set = [good.clone(), corrupt].concat();
        patch_base_offset(&mut set, 77);
        let before = set.clone();
        assert!(log.plan_append(&mut set, 0, 0).is_err());
        assert_eq!(set, before);
        assert_eq!(log.next_offset(), 0);
    }

    #[test]
    fn rolls_on_segment_bytes() {
        let batch = simple_batch(2, 50, 0);
        let per_batch = batch.len() as u64;
        let mut sim = SimLog::new(PartitionLog::new_empty(config(per_batch * 2, 4096)));
        assert!(!sim.append(batch.clone(), 0, 0).unwrap().1);
        assert!(!sim.append(batch.clone(), 0, 0).unwrap().1);
        let (plan, rolled) = sim.append(batch.clone(), 0, 0).unwrap();
        assert!(rolled);
        assert_eq!(plan.segment_base_offset, 4);
        assert_eq!(sim.log.active().base_offset, 4);
        assert_eq!(sim.log.segment(0).unwrap().size_bytes, per_batch * 2);
        assert_eq!(sim.log.segment_after(0).unwrap().base_offset, 4);
        // A record set larger than a segment still goes in, alone.
        let huge = simple_batch(30, 50, 0);
        assert!(sim.append(huge, 0, 0).unwrap().1);
        assert!(sim.append(batch, 0, 0).unwrap().1);
        assert_eq!(sim.log.segments().count(), 4);
    }

    #[test]
    fn rolls_on_segment_ms() {
        let mut cfg = config(1 << 20, 4096);
        cfg.segment_ms = 1_000;
        let mut sim = SimLog::new(PartitionLog::new_empty(cfg));
        let batch = simple_batch(1, 1, 0);
        assert!(!sim.append(batch.clone(), 0, 5_000).unwrap().1);
        assert!(!sim.append(batch.clone(), 0, 5_999).unwrap().1);
        assert!(sim.append(batch.clone(), 0, 6_000).unwrap().1);
        assert_eq!(sim.log.active().base_offset, 2);
        assert_eq!(sim.log.active().first_append_ms, Some(6_000));
        assert!(!sim.append(batch, 0, 6_999).unwrap().1);
    }

    #[test]
    fn rolls_before_relative_offsets_overflow() {
        let mut sim = SimLog::new(PartitionLog::new_empty(config(1 << 20, 4096)));
        sim.append(simple_batch(1, 1, 0), 0, 0).unwrap();
        // A batch claiming i32::MAX records (count and lastOffsetDelta agree;
        // the records themselves are not inspected on append).
        let mut wide = simple_batch(1, 1, 0);
        wide[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        wide[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        fix_crc(&mut wide);
        let (plan, rolled) = sim.append(wide, 0, 0).unwrap();
        assert!(!rolled);
        assert_eq!(plan.last_offset, i32::MAX as i64);
        let (plan, rolled) = sim.append(simple_batch(1, 1, 0), 0, 0).unwrap();
        assert!(rolled, "relative offset {} overflows", plan.last_offset);
        assert_eq!(sim.log.active().base_offset, i32::MAX as i64 + 1);
    }

    #[test]
    fn roll_of_an_empty_active_segment_is_a_no_op() {
        let mut log = PartitionLog::new_empty(LogConfig::default());
        assert_eq!(log.roll(), 0);
        assert_eq!(log.segments().count(), 1);
        let mut sim = SimLog::new(log);
        sim.append(simple_batch(3, 1, 0), 0, 0).unwrap();
        assert_eq!(sim.log.roll(), 3);
        assert_eq!(sim.log.roll(), 3);
        assert_eq!(sim.log.segments().count(), 2);
        assert_eq!(sim.log.plan_read(3), Ok(None));
        assert_eq!(
            sim.log.plan_read(2).unwrap().unwrap().segment_base_offset,
            0
        );
    }

    #[test]
    #[should_panic(expected = "appends are serial")]
    fn commit_refuses_a_stale_plan() {
        let mut log = PartitionLog::new_empty(LogConfig::default());
        let mut set = simple_batch(1, 1, 0);
        let plan = log.plan_append(&mut set, 0, 0).unwrap();
        log.commit_append(&plan, 0);
        log.commit_append(&plan, 0);
    }

    fn segment_with(base: i64, batches: &[(i64, usize)]) -> Segment {
        let mut segment = Segment::new(base);
        for &(offset, count) in batches {
            let mut batch = simple_batch(count, 10, offset * 10);
            patch_base_offset(&mut batch, offset);
            segment.record_batch(&validate_batch(&batch).unwrap(), 4096, 0);
        }
        segment
    }

    #[test]
    fn reads_respect_log_start_and_gaps() {
        // [10, 14) then a gap (compacted away), then [20, 22) and an empty
        // active segment.
        let segments = vec![
            segment_with(22, &[]),
            segment_with(20, &[(20, 2)]),
            segment_with(10, &[(10, 2), (12, 2)]),
        ];
        let log = PartitionLog::from_segments(LogConfig::default(), segments, 11);
        assert_eq!(log.log_start_offset(), 11);
        assert_eq!(log.next_offset(), 22);
        assert!(log.plan_read(10).is_err());
        assert_eq!(log.plan_read(11).unwrap().unwrap().segment_base_offset, 10);
        for gap in 14..20 {
            let start = log.plan_read(gap).unwrap().unwrap();
            assert_eq!((start.segment_base_offset, start.position), (20, 0));
        }
        assert_eq!(log.plan_read(21).unwrap().unwrap().segment_base_offset, 20);
        assert_eq!(log.plan_read(22), Ok(None));
        // The log start never precedes the first segment.
        let log = PartitionLog::from_segments(LogConfig::default(), vec![segment_with(5, &[])], 0);
        assert_eq!(log.log_start_offset(), 5);
        assert!(log.plan_read(4).is_err());
        assert_eq!(log.plan_read(5), Ok(None));
    }

    #[test]
    fn timestamp_lookup_skips_segments_below_log_start() {
        let segments = vec![
            segment_with(10, &[(10, 2)]), // timestamps 100, 101
            segment_with(12, &[(12, 1)]), // 120
            segment_with(13, &[(13, 1)]), // 130
        ];
        let log = PartitionLog::from_segments(LogConfig::default(), segments, 12);
        let start = log.plan_timestamp_lookup(0).unwrap();
        assert_eq!(start.segment_base_offset, 12);
        assert_eq!(
            log.plan_timestamp_lookup(121).unwrap().segment_base_offset,
            13
        );
        assert_eq!(log.plan_timestamp_lookup(131), None);
    }

    #[test]
    #[should_panic(expected = "segments overlap")]
    fn overlapping_segments_are_refused() {
        PartitionLog::from_segments(
            LogConfig::default(),
            vec![segment_with(0, &[(0, 5)]), segment_with(3, &[])],
            0,
        );
    }
}

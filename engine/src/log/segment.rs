//! One segment's bookkeeping: where its batches are, its offsets and
//! timestamps, and its sparse indexes. The bytes live in `%020d.log`.

use super::index::{OffsetIndex, OffsetIndexEntry, TimeIndex, TimeIndexEntry};
use crate::record::BatchHeader;

/// File name stem of a segment: the base offset, zero-padded like Kafka's.
pub fn segment_file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// Parses `00000000000000000042.log` style names back to the base offset.
pub fn parse_segment_file_name(name: &str, extension: &str) -> Option<i64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The end of a zero-copy read (see [`Segment::read_end_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// At the readable end of the segment.
    Limit { position: u64 },
    /// At an indexed batch that starts at `next_offset`.
    Indexed { position: u64, next_offset: i64 },
}

impl ReadEnd {
    pub fn position(&self) -> u64 {
        match self {
            ReadEnd::Limit { position } | ReadEnd::Indexed { position, .. } => *position,
        }
    }
}

/// A segment's end at one moment: enough to undo later appends whose bytes
/// never reached the file (a failed write), without copying the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentEnd {
    pub base_offset: i64,
    pub size_bytes: u64,
    pub next_offset: i64,
    max_timestamp_ms: i64,
    first_append_ms: Option<i64>,
    bytes_since_index_entry: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub base_offset: i64,
    /// Bytes of complete, valid batches.
    pub size_bytes: u64,
    /// Offset after the last batch; `base_offset` while empty.
    pub next_offset: i64,
    /// Largest batch maxTimestamp, -1 while empty.
    pub max_timestamp_ms: i64,
    /// When the first batch was appended (broker clock), for `segment.ms`.
    pub first_append_ms: Option<i64>,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index_entry: u64,
}

impl Segment {
    pub fn new(base_offset: i64) -> Segment {
        assert!(base_offset >= 0);
        Segment {
            base_offset,
            size_bytes: 0,
            next_offset: base_offset,
            max_timestamp_ms: -1,
            first_append_ms: None,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Offset relative to the segment base, as stored in the indexes.
    pub fn relative_offset(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!((0..=u32::MAX as i64).contains(&relative));
        relative as u32
    }

    /// Whether a batch ending at `last_offset` still fits the index's 32-bit
    /// relative offsets (Kafka rolls a segment before it overflows).
    pub fn can_hold_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i32::MAX as i64
    }

    /// Accounts one batch written at the end of the segment and adds index
    /// entries every `index_interval_bytes`.
    pub fn record_batch(&mut self, header: &BatchHeader, index_interval_bytes: u64, now_ms: i64) {
        assert!(
            header.base_offset >= self.next_offset,
            "offsets go backwards"
        );
        assert!(self.can_hold_offset(header.last_offset()));
        let position = self.size_bytes;
        let batch_bytes = header.total_bytes() as u64;
        assert!(
            position + batch_bytes <= u32::MAX as u64,
            "segment over 4 GiB"
        );
        // Index the first batch of a segment only implicitly (position 0); later
        // batches once enough bytes have passed since the last entry.
        if position > 0 && self.bytes_since_index_entry >= index_interval_bytes {
            self.offset_index.push(OffsetIndexEntry {
                relative_offset: self.relative_offset(header.base_offset),
                position: position as u32,
            });
            self.bytes_since_index_entry = 0;
        }
        if header.max_timestamp > self.max_timestamp_ms {
            self.max_timestamp_ms = header.max_timestamp;
            self.time_index.push_if_newer(TimeIndexEntry {
                timestamp_ms: header.max_timestamp,
                relative_offset: self.relative_offset(header.base_offset),
            });
        }
        self.bytes_since_index_entry += batch_bytes;
        self.size_bytes += batch_bytes;
        self.next_offset = header.next_offset();
        self.first_append_ms.get_or_insert(now_ms);
    }

    /// Where a zero-copy read that starts on the batch boundary `from` ends:
    /// the furthest batch boundary known without reading the file — an
    /// offset-index entry, or `limit` (the readable end, itself a boundary)
    /// — in `(from, min(limit, from + bytes_max)]`. Index entries are about
    /// `index.interval.bytes` apart, so a read falls short of `bytes_max` by
    /// at most one interval. `None` when no known boundary is in range (the
    /// first batch alone exceeds the budget or an index interval): the
    /// caller reads that batch's header and sends it whole (KIP-74).
    pub fn read_end_within(&self, from: u64, limit: u64, bytes_max: u64) -> Option<ReadEnd> {
        assert!(from <= limit && limit <= self.size_bytes);
        let cap = from.saturating_add(bytes_max);
        if limit <= cap {
            return (limit > from).then_some(ReadEnd::Limit { position: limit });
        }
        let entries = self.offset_index.entries();
        let count = entries.partition_point(|e| (e.position as u64) <= cap);
        let entry = entries[..count].last()?;
        (entry.position as u64 > from).then(|| ReadEnd::Indexed {
            position: entry.position as u64,
            next_offset: self.base_offset + entry.relative_offset as i64,
        })
    }

    pub fn end(&self) -> SegmentEnd {
        SegmentEnd {
            base_offset: self.base_offset,
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            max_timestamp_ms: self.max_timestamp_ms,
            first_append_ms: self.first_append_ms,
            bytes_since_index_entry: self.bytes_since_index_entry,
        }
    }

    /// Forgets every batch recorded after `end` was taken: the segment is
    /// again exactly as it was then, indexes included.
    pub fn truncate_to_end(&mut self, end: SegmentEnd) {
        assert_eq!(end.base_offset, self.base_offset, "another segment's end");
        assert!(
            end.size_bytes <= self.size_bytes,
            "truncation must not grow"
        );
        assert!(end.next_offset <= self.next_offset);
        // Entries added since `end` all sit at or past its position/offset.
        self.offset_index
            .truncate_to_position(end.size_bytes as u32);
        self.time_index
            .truncate_to_relative_offset(self.relative_offset(end.next_offset));
        self.size_bytes = end.size_bytes;
        self.next_offset = end.next_offset;
        self.max_timestamp_ms = end.max_timestamp_ms;
        self.first_append_ms = end.first_append_ms;
        self.bytes_since_index_entry = end.bytes_since_index_entry;
    }

    /// Cuts the segment at `position`, the batch boundary where
    /// `next_offset` starts (a follower's truncation): indexes lose the
    /// entries past it, the largest timestamp falls back to what the time
    /// index still holds.
    pub fn truncate_at(&mut self, position: u64, next_offset: i64) {
        assert!(position <= self.size_bytes, "truncation must not grow");
        assert!(next_offset >= self.base_offset && next_offset <= self.next_offset);
        // Cut to nothing, the segment ends at its base (its first batch may
        // have started later: compaction removed what was before it).
        let next_offset = if position == 0 {
            self.base_offset
        } else {
            next_offset
        };
        self.offset_index.truncate_to_position(position as u32);
        self.time_index
            .truncate_to_relative_offset(self.relative_offset(next_offset));
        self.size_bytes = position;
        self.next_offset = next_offset;
        self.max_timestamp_ms = self.time_index.last_timestamp_ms().unwrap_or(-1);
        if position == 0 {
            self.first_append_ms = None;
        }
        let last_entry = self
            .offset_index
            .entries()
            .last()
            .map_or(0, |e| e.position as u64);
        self.bytes_since_index_entry = position - last_entry;
    }

    /// A segment restored from its files without a scan: its indexes were
    /// read back and the rest comes from a checkpoint or its neighbours.
    pub fn restored(
        base_offset: i64,
        size_bytes: u64,
        next_offset: i64,
        max_timestamp_ms: i64,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
    ) -> Segment {
        assert!(next_offset >= base_offset);
        assert!(size_bytes > 0 || next_offset == base_offset);
        Segment {
            base_offset,
            size_bytes,
            next_offset,
            max_timestamp_ms,
            first_append_ms: None,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::testing::simple_batch;
    use crate::record::{patch_base_offset, validate_batch};
    use proptest::prelude::*;

    /// A segment of `batches` single-record batches of ~1 KiB, indexed every
    /// 4 KiB.
    fn segment_of(batches: usize) -> (Segment, Vec<u64>) {
        let mut segment = Segment::new(100);
        let mut boundaries = vec![0];
        for i in 0..batches {
            let mut batch = simple_batch(1, 1000, 1_000 + i as i64);
            patch_base_offset(&mut batch, 100 + i as i64);
            let header = validate_batch(&batch).unwrap();
            segment.record_batch(&header, 4096, 0);
            boundaries.push(segment.size_bytes);
        }
        (segment, boundaries)
    }

    #[test]
    fn read_end_stops_on_known_boundaries() {
        let (segment, boundaries) = segment_of(40);
        let size = segment.size_bytes;
        // Everything fits: the end is the readable limit.
        assert_eq!(
            segment.read_end_within(0, size, u64::MAX),
            Some(ReadEnd::Limit { position: size })
        );
        let limit = boundaries[30];
        assert_eq!(
            segment.read_end_within(boundaries[10], limit, limit),
            Some(ReadEnd::Limit { position: limit })
        );
        // Budget smaller than the rest: the furthest index entry within it.
        let from = boundaries[3];
        let end = segment.read_end_within(from, size, 10_000).unwrap();
        let ReadEnd::Indexed {
            position,
            next_offset,
        } = end
        else {
            panic!("expected an indexed end, got {end:?}");
        };
        assert!(position > from && position <= from + 10_000);
        assert!(
            from + 10_000 - position < 4096 + 1100,
            "short by at most one interval"
        );
        let batch = boundaries.iter().position(|b| *b == position).unwrap();
        assert_eq!(next_offset, 100 + batch as i64);
        // Nothing known in range: the caller reads the first batch's header.
        assert_eq!(segment.read_end_within(from, size, 500), None);
        assert_eq!(segment.read_end_within(size, size, 1 << 20), None);
    }

    proptest! {
        #[test]
        fn read_end_is_a_batch_boundary_within_budget(
            batches in 1usize..60,
            from_batch in 0usize..60,
            limit_batch in 0usize..60,
            bytes_max in 0u64..80_000,
        ) {
            let (segment, boundaries) = segment_of(batches);
            let limit_index = limit_batch.min(batches);
            let from_index = from_batch.min(limit_index);
            let (from, limit) = (boundaries[from_index], boundaries[limit_index]);
            let cap = (from + bytes_max).min(limit);
            // The furthest known boundary (index entry or the limit) in range.
            let expected = segment
                .offset_index
                .entries()
                .iter()
                .map(|e| e.position as u64)
                .chain(std::iter::once(limit))
                .filter(|p| *p > from && *p <= cap)
                .max();
            let end = segment.read_end_within(from, limit, bytes_max);
            prop_assert_eq!(end.map(|e| e.position()), expected);
            if let Some(end) = end {
                prop_assert!(boundaries.contains(&end.position()));
                if let ReadEnd::Indexed { position, next_offset } = end {
                    let batch = boundaries.iter().position(|b| *b == position).unwrap();
                    prop_assert_eq!(next_offset, 100 + batch as i64);
                }
            }
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(segment_file_stem(0), "00000000000000000000");
        assert_eq!(segment_file_stem(42), "00000000000000000042");
        assert_eq!(segment_file_stem(i64::MAX), "09223372036854775807");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log", "log"),
            Some(42)
        );
        assert_eq!(
            parse_segment_file_name("00000000000000000042.index", "index"),
            Some(42)
        );
        for bad in [
            "00000000000000000042.index",
            "0000000000000000042.log",
            "000000000000000000042.log",
            "0000000000000000004a.log",
            "-0000000000000000042.log",
            "+0000000000000000042.log",
            "00000000000000000042log",
            "00000000000000000042.log.tmp",
            "99999999999999999999.log",
            ".log",
            "",
        ] {
            assert_eq!(parse_segment_file_name(bad, "log"), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn file_name_round_trip(base in 0i64..=i64::MAX) {
            let name = format!("{}.log", segment_file_stem(base));
            prop_assert_eq!(parse_segment_file_name(&name, "log"), Some(base));
            prop_assert_eq!(parse_segment_file_name(&name, "index"), None);
        }

        /// An index entry is added for the first batch that starts at least
        /// `index_interval_bytes` after the previous entry (or the segment
        /// start), never for position 0.
        #[test]
        fn index_entries_follow_the_interval(
            shapes in prop::collection::vec((1usize..4, 0usize..300), 1..40),
            interval in 0u64..2000,
        ) {
            let mut segment = Segment::new(1000);
            let mut expected = Vec::new();
            let mut last_entry_position = 0u64;
            let mut offset = 1000i64;
            let mut expected_times = Vec::new();
            let mut max_timestamp = -1i64;
            for (i, (count, value_bytes)) in shapes.into_iter().enumerate() {
                let mut batch = simple_batch(count, value_bytes, i as i64);
                patch_base_offset(&mut batch, offset);
                let header = validate_batch(&batch).unwrap();
                let position = segment.size_bytes;
                if position > 0 && position - last_entry_position >= interval {
                    expected.push(OffsetIndexEntry {
                        relative_offset: (offset - 1000) as u32,
                        position: position as u32,
                    });
                    last_entry_position = position;
                }
                if header.max_timestamp > max_timestamp {
                    max_timestamp = header.max_timestamp;
                    expected_times.push(TimeIndexEntry {
                        timestamp_ms: max_timestamp,
                        relative_offset: (offset - 1000) as u32,
                    });
                }
                segment.record_batch(&header, interval, 77);
                offset = header.next_offset();
                prop_assert_eq!(segment.size_bytes, position + batch.len() as u64);
            }
            prop_assert_eq!(segment.offset_index.entries(), &expected[..]);
            prop_assert_eq!(segment.next_offset, offset);
            prop_assert_eq!(segment.first_append_ms, Some(77));
            prop_assert_eq!(segment.time_index.entries(), &expected_times[..]);
            prop_assert_eq!(segment.max_timestamp_ms, max_timestamp);
        }
    }

    #[test]
    fn record_batch_tracks_timestamps_and_offsets() {
        let mut segment = Segment::new(10);
        assert!(segment.is_empty());
        assert_eq!(segment.max_timestamp_ms, -1);
        for (offset, count, base_timestamp) in [(10, 2, 500), (12, 1, 400), (15, 3, 900)] {
            let mut batch = simple_batch(count, 1, base_timestamp);
            patch_base_offset(&mut batch, offset);
            segment.record_batch(&validate_batch(&batch).unwrap(), 4096, 1);
        }
        assert!(!segment.is_empty());
        assert_eq!(segment.next_offset, 18);
        assert_eq!(segment.max_timestamp_ms, 902);
        let times: Vec<(i64, u32)> = segment
            .time_index
            .entries()
            .iter()
            .map(|e| (e.timestamp_ms, e.relative_offset))
            .collect();
        assert_eq!(times, [(501, 0), (902, 5)]);
        assert_eq!(segment.relative_offset(17), 7);
        assert!(segment.can_hold_offset(10 + i32::MAX as i64));
        assert!(!segment.can_hold_offset(11 + i32::MAX as i64));
    }

    #[test]
    #[should_panic(expected = "offsets go backwards")]
    fn record_batch_refuses_offsets_going_back() {
        let mut segment = Segment::new(10);
        let mut batch = simple_batch(2, 1, 0);
        patch_base_offset(&mut batch, 10);
        let header = validate_batch(&batch).unwrap();
        segment.record_batch(&header, 0, 0);
        segment.record_batch(&header, 0, 0);
    }
}

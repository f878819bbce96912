//! Sparse per-segment indexes, Kafka's shape: an offset index of
//! {relative offset u32, file position u32} entries, one per
//! `index_interval_bytes` of log, and a time index of {max timestamp so far,
//! relative offset}. Both live in memory while a segment is open and are
//! written next to it as `.index` / `.timeindex` when it closes.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetIndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetIndexEntry>,
}

impl OffsetIndex {
    pub fn entries(&self) -> &[OffsetIndexEntry] {
        &self.entries
    }

    /// Entries must arrive in increasing offset and position order.
    pub fn push(&mut self, entry: OffsetIndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset,
                "offset index entries must increase in offset"
            );
            assert!(
                entry.position > last.position,
                "offset index entries must increase in position"
            );
        }
        self.entries.push(entry);
    }

    /// The position of the last indexed batch starting at or before
    /// `relative_offset`, or 0 when none is: a scan from there finds the batch
    /// that holds the offset.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let count = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if count == 0 {
            0
        } else {
            self.entries[count - 1].position
        }
    }

    /// Drops entries at or past `position` (used when a tail is truncated).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file. Returns None when the bytes cannot be a valid
    /// index (wrong size, not increasing, or pointing past `segment_bytes`):
    /// the caller then rebuilds it from the segment. Indexes are never trusted
    /// blindly.
    pub fn decode(bytes: &[u8], segment_bytes: u64) -> Option<OffsetIndex> {
        if !bytes.len().is_multiple_of(OFFSET_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let entry = OffsetIndexEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().ok()?),
                position: u32::from_be_bytes(chunk[4..8].try_into().ok()?),
            };
            if entry.position as u64 >= segment_bytes {
                return None;
            }
            if let Some(last) = index.entries.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeIndexEntry>,
}

impl TimeIndex {
    pub fn entries(&self) -> &[TimeIndexEntry] {
        &self.entries
    }

    pub fn last_timestamp_ms(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp_ms)
    }

    /// Adds an entry when the timestamp grows; timestamps in the index never
    /// go backwards, so lookups can binary-search.
    pub fn push_if_newer(&mut self, entry: TimeIndexEntry) {
        match self.entries.last() {
            Some(last) if entry.timestamp_ms <= last.timestamp_ms => {}
            Some(last) => {
                assert!(
                    entry.relative_offset >= last.relative_offset,
                    "time index entries must not go back in offset"
                );
                self.entries.push(entry)
            }
            None => self.entries.push(entry),
        }
    }

    /// The relative offset from which a scan finds the first record with a
    /// timestamp >= `timestamp_ms`: the offset of the last entry whose max
    /// timestamp is still below the target (every record before that entry
    /// is older), or 0.
    pub fn lookup(&self, timestamp_ms: i64) -> u32 {
        let count = self
            .entries
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        if count == 0 {
            0
        } else {
            self.entries[count - 1].relative_offset
        }
    }

    pub fn truncate_to_relative_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if !bytes.len().is_multiple_of(TIME_INDEX_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES) {
            let entry = TimeIndexEntry {
                timestamp_ms: i64::from_be_bytes(chunk[0..8].try_into().ok()?),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().ok()?),
            };
            if let Some(last) = index.entries.last() {
                if entry.timestamp_ms <= last.timestamp_ms
                    || entry.relative_offset < last.relative_offset
                {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offset_index(entries: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for &(relative_offset, position) in entries {
            index.push(OffsetIndexEntry {
                relative_offset,
                position,
            });
        }
        index
    }

    fn time_index(entries: &[(i64, u32)]) -> TimeIndex {
        let mut index = TimeIndex::default();
        for &(timestamp_ms, relative_offset) in entries {
            index.push_if_newer(TimeIndexEntry {
                timestamp_ms,
                relative_offset,
            });
        }
        index
    }

    #[test]
    fn offset_lookup_is_a_floor() {
        assert_eq!(OffsetIndex::default().lookup(0), 0);
        assert_eq!(OffsetIndex::default().lookup(u32::MAX), 0);
        let index = offset_index(&[(10, 4096), (25, 8200), (40, 12_500)]);
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(9), 0);
        assert_eq!(index.lookup(10), 4096);
        assert_eq!(index.lookup(24), 4096);
        assert_eq!(index.lookup(25), 8200);
        assert_eq!(index.lookup(39), 8200);
        assert_eq!(index.lookup(40), 12_500);
        assert_eq!(index.lookup(u32::MAX), 12_500);
    }

    #[test]
    #[should_panic(expected = "offset index entries must increase in offset")]
    fn offset_push_refuses_equal_offsets() {
        offset_index(&[(10, 100), (10, 200)]);
    }

    #[test]
    #[should_panic(expected = "offset index entries must increase in position")]
    fn offset_push_refuses_decreasing_positions() {
        offset_index(&[(10, 100), (11, 50)]);
    }

    #[test]
    fn offset_truncate_to_position() {
        let mut index = offset_index(&[(10, 100), (20, 200), (30, 300)]);
        index.truncate_to_position(201);
        assert_eq!(index, offset_index(&[(10, 100), (20, 200)]));
        index.truncate_to_position(200);
        assert_eq!(index, offset_index(&[(10, 100)]));
        index.truncate_to_position(0);
        assert!(index.entries().is_empty());
    }

    #[test]
    fn offset_encode_layout() {
        let index = offset_index(&[(1, 0x0102_0304), (2, 0x0a0b_0c0d)]);
        assert_eq!(
            index.encode(),
            [0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 2, 0x0a, 0x0b, 0x0c, 0x0d]
        );
        assert_eq!(OffsetIndex::default().encode(), Vec::<u8>::new());
        assert_eq!(OffsetIndex::decode(&[], 0), Some(OffsetIndex::default()));
    }

    #[test]
    fn offset_decode_rejects_corrupt_files() {
        let index = offset_index(&[(10, 100), (20, 200), (30, 300)]);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 301), Some(index.clone()));
        // Not a whole number of entries.
        for cut in 1..bytes.len() {
            if cut % OFFSET_INDEX_ENTRY_BYTES != 0 {
                assert_eq!(OffsetIndex::decode(&bytes[..cut], 1000), None);
            }
        }
        // Pointing at or past the end of the segment.
        assert_eq!(OffsetIndex::decode(&bytes, 300), None);
        assert_eq!(OffsetIndex::decode(&bytes, 0), None);
        // Not increasing.
        let swapped = [&bytes[8..16], &bytes[0..8], &bytes[16..]].concat();
        assert_eq!(OffsetIndex::decode(&swapped, 1000), None);
        let same_offset = offset_index(&[(10, 100)]).encode().repeat(2);
        assert_eq!(OffsetIndex::decode(&same_offset, 1000), None);
        let mut same_position = bytes.clone();
        same_position[12..16].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(OffsetIndex::decode(&same_position, 1000), None);
    }

    #[test]
    fn time_push_if_newer_keeps_timestamps_increasing() {
        let mut index = TimeIndex::default();
        assert_eq!(index.last_timestamp_ms(), None);
        for (timestamp_ms, relative_offset) in [(100, 0), (90, 3), (100, 4), (150, 5), (150, 9)] {
            index.push_if_newer(TimeIndexEntry {
                timestamp_ms,
                relative_offset,
            });
        }
        assert_eq!(index, time_index(&[(100, 0), (150, 5)]));
        assert_eq!(index.last_timestamp_ms(), Some(150));
    }

    #[test]
    #[should_panic(expected = "time index entries must not go back in offset")]
    fn time_push_refuses_offsets_going_back() {
        time_index(&[(100, 10), (200, 5)]);
    }

    #[test]
    fn time_lookup() {
        assert_eq!(TimeIndex::default().lookup(i64::MIN), 0);
        assert_eq!(TimeIndex::default().lookup(5), 0);
        let index = time_index(&[(100, 0), (200, 10), (300, 20)]);
        assert_eq!(index.lookup(-1), 0);
        assert_eq!(index.lookup(100), 0);
        // The last entry still below the target: everything before it is older.
        assert_eq!(index.lookup(101), 0);
        assert_eq!(index.lookup(200), 0);
        assert_eq!(index.lookup(201), 10);
        assert_eq!(index.lookup(300), 10);
        assert_eq!(index.lookup(301), 20);
        assert_eq!(index.lookup(i64::MAX), 20);
    }

    #[test]
    fn time_truncate() {
        let mut index = time_index(&[(100, 0), (200, 10), (300, 20)]);
        index.truncate_to_relative_offset(11);
        assert_eq!(index, time_index(&[(100, 0), (200, 10)]));
        index.truncate_to_relative_offset(10);
        assert_eq!(index, time_index(&[(100, 0)]));
    }

    #[test]
    fn time_encode_decode() {
        let index = time_index(&[(-5, 0), (0x0102_0304_0506_0708, 7)]);
        let bytes = index.encode();
        assert_eq!(bytes.len(), 2 * TIME_INDEX_ENTRY_BYTES);
        assert_eq!(&bytes[12..20], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[20..24], &[0, 0, 0, 7]);
        assert_eq!(TimeIndex::decode(&bytes), Some(index));
        assert_eq!(TimeIndex::decode(&[]), Some(TimeIndex::default()));
        assert_eq!(TimeIndex::decode(&bytes[..13]), None);
        let not_newer = time_index(&[(5, 0)]).encode().repeat(2);
        assert_eq!(TimeIndex::decode(&not_newer), None);
        let offsets_back = [
            time_index(&[(5, 9)]).encode(),
            time_index(&[(6, 8)]).encode(),
        ]
        .concat();
        assert_eq!(TimeIndex::decode(&offsets_back), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn offset_index_round_trip_and_floor(
            steps in prop::collection::vec((1u32..1000, 1u32..100_000), 0..50),
            probes in prop::collection::vec(any::<u32>(), 1..20),
        ) {
            let mut entries = Vec::new();
            let (mut offset, mut position) = (0u32, 0u32);
            for (d_offset, d_position) in steps {
                offset += d_offset;
                position += d_position;
                entries.push((offset, position));
            }
            let index = offset_index(&entries);
            let segment_bytes = position as u64 + 1;
            prop_assert_eq!(OffsetIndex::decode(&index.encode(), segment_bytes), Some(index.clone()));
            for probe in probes {
                let probe = if entries.is_empty() { probe } else { probe % (offset + 10) };
                let expected = entries
                    .iter()
                    .rev()
                    .find(|(o, _)| *o <= probe)
                    .map_or(0, |(_, p)| *p);
                prop_assert_eq!(index.lookup(probe), expected);
            }
        }

        #[test]
        fn time_index_round_trip_and_lookup(
            steps in prop::collection::vec((-50i64..1000, 0u32..100), 0..50),
            probes in prop::collection::vec(-100i64..60_000, 1..20),
        ) {
            let mut index = TimeIndex::default();
            let (mut timestamp, mut offset) = (0i64, 0u32);
            for (d_timestamp, d_offset) in steps {
                timestamp += d_timestamp;
                offset += d_offset;
                index.push_if_newer(TimeIndexEntry { timestamp_ms: timestamp, relative_offset: offset });
            }
            for pair in index.entries().windows(2) {
                prop_assert!(pair[0].timestamp_ms < pair[1].timestamp_ms);
            }
            prop_assert_eq!(TimeIndex::decode(&index.encode()), Some(index.clone()));
            for probe in probes {
                let expected = index
                    .entries()
                    .iter()
                    .rev()
                    .find(|e| e.timestamp_ms < probe)
                    .map_or(0, |e| e.relative_offset);
                prop_assert_eq!(index.lookup(probe), expected);
            }
        }
    }
}

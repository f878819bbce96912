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
            assert!(entry.relative_offset > last.relative_offset);
            assert!(entry.position > last.position);
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
        if bytes.len() % OFFSET_INDEX_ENTRY_BYTES != 0 {
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
                assert!(entry.relative_offset >= last.relative_offset);
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
        if bytes.len() % TIME_INDEX_ENTRY_BYTES != 0 {
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

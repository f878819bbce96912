//! Log compaction (`cleanup.policy=compact`, "latest value per key") as pure
//! decisions over batch bytes. The shard's cleaner reads the closed segments
//! of the cleanable range, builds an `OffsetMap` over all their batches, then
//! filters every batch with `compact_batch` (or a whole segment with
//! `compact_segment`) and writes the bytes it gets back.
//!
//! Rules, per record of a data batch that is not transactional:
//! - a keyed record survives iff it is the latest record of its key in the map
//!   (a record newer than the map is outside the cleanable range: kept);
//! - a tombstone (null value) that is the latest of its key is dropped once its
//!   timestamp is before the tombstone horizon (now - delete.retention.ms), so
//!   consumers get delete.retention.ms to see the delete;
//! - records without a key are kept.
//!
//! Control and transactional batches are kept whole until transactions are
//! implemented. Their keys are not offsets the map may trust (an aborted
//! transaction's value must not supersede a committed one), but a tombstone
//! must not be dropped while a batch kept whole still holds an older value of
//! its key, or that value would come back: such keys are "pinned".

use std::collections::{HashMap, HashSet};
use std::mem::size_of;

use bytes::Bytes;
use kafka_protocol::records::{
    Compression as KafkaCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_SEQUENCE,
};

use crate::record::{
    decode_records, decompress_records, patch_leader_epoch, patch_max_timestamp, read_varint,
    validate_batch, BatchError, BatchHeader, Compression, BATCH_HEADER_BYTES,
    DECOMPRESSED_RECORDS_BYTES_MAX,
};

/// Position of `attributes` in a batch (KAFKA_NOTES.md "RecordBatch v2").
const ATTRIBUTES_AT: usize = 21;
/// Attribute bit 3: every record's timestamp is the batch's maxTimestamp.
const ATTR_LOG_APPEND_TIME: i16 = 0x08;

/// Latest offset per key over the records of the cleanable range, built batch
/// by batch.
#[derive(Debug, Default)]
pub struct OffsetMap {
    /// Key → offset of its latest record in a data batch compaction filters.
    latest: HashMap<Bytes, i64>,
    /// Keys that occur in transactional batches, which compaction keeps whole:
    /// their tombstones are never dropped.
    pinned: HashSet<Bytes>,
    /// Heap bytes of the keys of both sets.
    key_bytes: usize,
}

impl OffsetMap {
    pub fn new() -> OffsetMap {
        OffsetMap::default()
    }

    /// Records every keyed record of one complete, stored (already validated)
    /// batch. Control batches are skipped; the keys of transactional batches
    /// are pinned rather than recorded. Returns the number of records seen
    /// (decoded): 0 for a control batch.
    ///
    /// Batches must come in offset order for `latest` to be the latest; an
    /// older offset never replaces a newer one.
    pub fn add_batch(&mut self, batch: &[u8]) -> Result<usize, BatchError> {
        let header = BatchHeader::parse(batch)?;
        if header.is_control() {
            return Ok(0);
        }
        let records = decode_records(batch)?;
        for record in &records {
            let Some(key) = &record.key else {
                continue;
            };
            if header.is_transactional() {
                if !self.pinned.contains(key.as_ref()) {
                    self.key_bytes += key.len();
                    // A copy: the decoded key shares the whole batch's buffer.
                    self.pinned.insert(Bytes::copy_from_slice(key));
                }
            } else if let Some(offset) = self.latest.get_mut(key.as_ref()) {
                *offset = (*offset).max(record.offset);
            } else {
                self.key_bytes += key.len();
                self.latest
                    .insert(Bytes::copy_from_slice(key), record.offset);
            }
        }
        Ok(records.len())
    }

    /// Keys with a recorded latest offset.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Approximate heap bytes used (keys + entries), so the cleaner can bound
    /// a pass. Counts the tables' capacity (one control byte per slot) and the
    /// key bytes, not the allocator's per-key overhead.
    pub fn memory_bytes(&self) -> usize {
        self.key_bytes
            + self.latest.capacity() * (size_of::<(Bytes, i64)>() + 1)
            + self.pinned.capacity() * (size_of::<Bytes>() + 1)
    }

    /// The offset of the latest record of `key` in the data batches seen.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    /// Whether `key` occurs in a transactional batch, whose records compaction
    /// keeps: a tombstone of such a key is kept too.
    pub fn is_pinned(&self, key: &[u8]) -> bool {
        self.pinned.contains(key)
    }
}

/// What compaction does to one stored batch.
#[derive(Debug, PartialEq, Eq)]
pub enum CompactedBatch {
    /// Every record survives: keep the stored bytes as they are.
    Unchanged,
    /// Some records survive: the new batch bytes (same compression codec, same
    /// producer id/epoch, offsets and timestamps of the kept records
    /// preserved, base offset = first kept record's offset, valid CRC).
    Rewritten(Vec<u8>),
    /// No record survives.
    Removed,
}

/// Filters one stored batch (the batch starts at `batch[0]`; bytes after it
/// are ignored). A keyed record survives iff its offset is the latest for its
/// key in `map` (a key not in the map, or a record newer than the map's
/// offset, is kept), AND it is not a tombstone whose timestamp is before
/// `tombstone_horizon_ms`. A tombstone of a pinned key survives. Records
/// with a null key survive. Control and transactional batches are Unchanged.
///
/// A tombstone's timestamp is the batch's maxTimestamp under LogAppendTime.
///
/// A rewritten batch keeps the codec, the timestamp type, the partition leader
/// epoch, the producer id and epoch, and every kept record's key, value,
/// headers, offset, timestamp and sequence number; its base offset is the
/// first kept record's offset and its baseSequence that record's sequence.
///
/// Errors: the batch is invalid or its records do not decode; or a kept
/// record repeats a header key (Kafka allows it, the decoder keeps one header
/// per key), which a rewrite would lose. Keeping such a batch whole instead
/// could bring back a value whose tombstone is dropped, so it is an error.
pub fn compact_batch(
    batch: &[u8],
    map: &OffsetMap,
    tombstone_horizon_ms: i64,
) -> Result<CompactedBatch, BatchError> {
    let header = validate_batch(batch)?;
    compact_validated(
        &batch[..header.total_bytes()],
        &header,
        map,
        tombstone_horizon_ms,
    )
}

/// Compacts a sequence of stored batches (a segment's bytes, whole batches
/// back to back) into the bytes of the new segment. Returns the new bytes and
/// (records_kept, records_removed); the records of control batches count as
/// kept.
pub fn compact_segment(
    segment_bytes: &[u8],
    map: &OffsetMap,
    tombstone_horizon_ms: i64,
) -> Result<(Vec<u8>, usize, usize), BatchError> {
    let mut out = Vec::with_capacity(segment_bytes.len());
    let mut kept = 0usize;
    let mut removed = 0usize;
    let mut position = 0usize;
    while position < segment_bytes.len() {
        let header = validate_batch(&segment_bytes[position..])?;
        let batch = &segment_bytes[position..position + header.total_bytes()];
        let count = header.records_count as usize;
        match compact_validated(batch, &header, map, tombstone_horizon_ms)? {
            CompactedBatch::Unchanged => {
                out.extend_from_slice(batch);
                kept += count;
            }
            CompactedBatch::Rewritten(bytes) => {
                let survivors = BatchHeader::parse(&bytes)?.records_count as usize;
                assert!(survivors > 0 && survivors < count, "a rewrite drops some");
                kept += survivors;
                removed += count - survivors;
                out.extend_from_slice(&bytes);
            }
            CompactedBatch::Removed => removed += count,
        }
        position += header.total_bytes();
    }
    Ok((out, kept, removed))
}

/// `compact_batch` on exactly one batch whose header and CRC were checked.
fn compact_validated(
    batch: &[u8],
    header: &BatchHeader,
    map: &OffsetMap,
    tombstone_horizon_ms: i64,
) -> Result<CompactedBatch, BatchError> {
    debug_assert_eq!(batch.len(), header.total_bytes());
    if header.is_control() || header.is_transactional() {
        return Ok(CompactedBatch::Unchanged);
    }
    let records = decode_records(batch)?;
    let total = records.len();
    let kept: Vec<(usize, Record)> = records
        .into_iter()
        .enumerate()
        .filter(|(_, record)| survives(record, header, map, tombstone_horizon_ms))
        .collect();
    if kept.len() == total {
        return Ok(CompactedBatch::Unchanged);
    }
    if kept.is_empty() {
        return Ok(CompactedBatch::Removed);
    }
    if !kept_headers_decoded_whole(batch, header, &kept)? {
        return Err(BatchError::InvalidHeader(
            "a kept record repeats a header key: the batch cannot be rewritten",
        ));
    }
    let records: Vec<Record> = kept.into_iter().map(|(_, record)| record).collect();
    rewrite(header, records).map(CompactedBatch::Rewritten)
}

fn survives(record: &Record, header: &BatchHeader, map: &OffsetMap, horizon_ms: i64) -> bool {
    let Some(key) = &record.key else {
        return true;
    };
    match map.latest(key) {
        Some(latest) if record.offset < latest => false,
        Some(latest) if record.offset == latest => {
            if record.value.is_some() || map.is_pinned(key) {
                return true;
            }
            let timestamp = if header.is_log_append_time() {
                header.max_timestamp
            } else {
                record.timestamp
            };
            timestamp >= horizon_ms
        }
        // Newer than the map, or a key the map never saw: outside the range
        // the map describes, so not this pass's to judge.
        _ => true,
    }
}

/// Encodes `kept` (at least one record, decoded from the batch `original`
/// describes) as one batch with the original's codec, timestamp type, leader
/// epoch, producer id/epoch and record sequence numbers.
fn rewrite(original: &BatchHeader, mut kept: Vec<Record>) -> Result<Vec<u8>, BatchError> {
    let base_offset = kept
        .iter()
        .map(|record| record.offset)
        .min()
        .expect("a rewrite keeps at least one record");
    // Idempotent producers: record i of the original batch has sequence
    // baseSequence + i (wrapping to 0 after i32::MAX, as Kafka does); the new
    // batch's baseSequence is its first record's.
    let base_sequence = if original.base_sequence >= 0 {
        let sequence = original.base_sequence as i64 + (base_offset - original.base_offset);
        sequence.rem_euclid(i32::MAX as i64 + 1) as i32
    } else {
        NO_SEQUENCE
    };
    for record in &mut kept {
        record.transactional = false;
        record.control = false;
        // Under the delete-horizon flag baseTimestamp would be the horizon;
        // the encoder writes the smallest record timestamp there.
        record.delete_horizon = false;
        record.partition_leader_epoch = original.partition_leader_epoch;
        record.producer_id = original.producer_id;
        record.producer_epoch = original.producer_epoch;
        record.timestamp_type = TimestampType::Creation;
        // The encoder starts a new batch whenever offset - sequence changes
        // (in i32 arithmetic) and writes baseSequence = the first record's
        // sequence, so sequences must follow offsets exactly.
        record.sequence =
            base_sequence.wrapping_add((record.offset as i32).wrapping_sub(base_offset as i32));
    }
    let mut out = Vec::new();
    RecordBatchEncoder::encode(
        &mut out,
        &kept,
        &RecordEncodeOptions {
            version: 2,
            compression: kafka_compression(original.compression()),
        },
    )
    .map_err(|_| BatchError::InvalidHeader("kept records do not encode"))?;
    let encoded = validate_batch(&out)?;
    if encoded.total_bytes() != out.len() {
        return Err(BatchError::InvalidHeader(
            "kept records encode as more than one batch",
        ));
    }
    // The encoder takes the epoch from the records; say it once more where it
    // matters (outside the CRC).
    patch_leader_epoch(&mut out, original.partition_leader_epoch);
    if original.is_log_append_time() {
        // The encoder always writes CreateTime and the largest record
        // timestamp; under LogAppendTime every record's timestamp is the
        // original maxTimestamp.
        let attributes = encoded.attributes | ATTR_LOG_APPEND_TIME;
        out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        patch_max_timestamp(&mut out, original.max_timestamp); // recomputes the CRC
    }
    debug_assert!(validate_batch(&out).is_ok());
    Ok(out)
}

fn kafka_compression(compression: Compression) -> KafkaCompression {
    match compression {
        Compression::None => KafkaCompression::None,
        Compression::Gzip => KafkaCompression::Gzip,
        Compression::Snappy => KafkaCompression::Snappy,
        Compression::Lz4 => KafkaCompression::Lz4,
        Compression::Zstd => KafkaCompression::Zstd,
    }
}

/// Whether every kept record decoded with all its headers. The decoder keeps
/// headers in a map by key, so a record that repeats a header key comes back
/// with fewer headers than it has. Decompresses the batch a second time, only
/// when a kept record has headers at all.
fn kept_headers_decoded_whole(
    batch: &[u8],
    header: &BatchHeader,
    kept: &[(usize, Record)],
) -> Result<bool, BatchError> {
    if kept.iter().all(|(_, record)| record.headers.is_empty()) {
        // A record with headers decodes with at least one.
        return Ok(true);
    }
    let records = decompress_records(
        header.compression(),
        &batch[BATCH_HEADER_BYTES..],
        DECOMPRESSED_RECORDS_BYTES_MAX,
    )?;
    let Some(counts) = header_counts(&records, header.records_count as usize) else {
        return Err(BatchError::InvalidHeader("records do not decode"));
    };
    Ok(kept
        .iter()
        .all(|(index, record)| counts.get(*index) == Some(&record.headers.len())))
}

/// The header count of each of the first `records_count` records of an
/// uncompressed records blob, or None if they do not parse.
fn header_counts(records: &[u8], records_count: usize) -> Option<Vec<usize>> {
    // At most one record per byte: do not trust recordsCount for the capacity.
    let mut counts = Vec::with_capacity(records_count.min(records.len()));
    let mut position = 0usize;
    for _ in 0..records_count {
        let length = usize::try_from(read_varint(records, &mut position, 5)?).ok()?;
        let record = records.get(position..position.checked_add(length)?)?;
        position += length;
        let mut at = 1usize; // attributes
        read_varint(record, &mut at, 10)?; // timestampDelta
        read_varint(record, &mut at, 5)?; // offsetDelta
        for _key_then_value in 0..2 {
            let length = read_varint(record, &mut at, 5)?;
            if length > 0 {
                at = at.checked_add(length as usize)?;
            }
        }
        counts.push(usize::try_from(read_varint(record, &mut at, 5)?).ok()?);
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::record::testing::{
        compression_attributes, encode_batch, encode_compressed_batch, fix_crc, BatchSpec,
        TestRecord, ALL_COMPRESSIONS,
    };

    const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

    /// A batch of keyed records at `base_offset`, record i stamped
    /// BASE_TIMESTAMP + i; a `None` value is a tombstone.
    fn keyed_batch(
        base_offset: i64,
        compression: Compression,
        records: &[(&str, Option<&str>)],
    ) -> Vec<u8> {
        encode_compressed_batch(&BatchSpec {
            base_offset,
            attributes: compression_attributes(compression),
            base_timestamp: BASE_TIMESTAMP,
            records: records
                .iter()
                .enumerate()
                .map(|(i, (key, value))| {
                    TestRecord::keyed(key.as_bytes(), value.map(str::as_bytes), i as i64)
                })
                .collect(),
            ..BatchSpec::default()
        })
    }

    /// One decoded record, as comparable values.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        offset: i64,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    }

    fn seen(batch: &[u8]) -> Vec<Seen> {
        decode_records(batch)
            .unwrap()
            .into_iter()
            .map(|r| Seen {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.to_vec())))
                    .collect(),
            })
            .collect()
    }

    fn map_over(batches: &[&[u8]]) -> OffsetMap {
        let mut map = OffsetMap::new();
        for batch in batches {
            map.add_batch(batch).unwrap();
        }
        map
    }

    fn rewritten(outcome: CompactedBatch) -> Vec<u8> {
        match outcome {
            CompactedBatch::Rewritten(bytes) => bytes,
            other => panic!("expected a rewrite, got {other:?}"),
        }
    }

    /// A rewritten batch is one valid batch whose header agrees with its records.
    fn check_rewrite(bytes: &[u8]) -> BatchHeader {
        let header = validate_batch(bytes).unwrap();
        assert_eq!(header.total_bytes(), bytes.len());
        let records = seen(bytes);
        assert_eq!(header.records_count as usize, records.len());
        assert_eq!(header.base_offset, records[0].offset);
        assert_eq!(header.last_offset(), records.last().unwrap().offset);
        if !header.is_log_append_time() {
            let timestamps = records.iter().map(|r| r.timestamp);
            assert_eq!(header.max_timestamp, timestamps.max().unwrap());
        }
        header
    }

    #[test]
    fn offset_map_records_the_latest_offset_per_key() {
        let mut map = OffsetMap::new();
        assert!(map.is_empty());
        let empty_bytes = map.memory_bytes();
        let first = keyed_batch(10, Compression::None, &[("a", Some("1")), ("b", Some("2"))]);
        assert_eq!(map.add_batch(&first), Ok(2));
        let second = keyed_batch(12, Compression::Lz4, &[("a", Some("3")), ("c", None)]);
        assert_eq!(map.add_batch(&second), Ok(2));
        assert_eq!(map.len(), 3);
        assert!(!map.is_empty());
        assert_eq!(map.latest(b"a"), Some(12));
        assert_eq!(map.latest(b"b"), Some(11));
        assert_eq!(map.latest(b"c"), Some(13));
        assert_eq!(map.latest(b"d"), None);
        assert!(map.memory_bytes() >= empty_bytes + 3);
        // An older batch seen late does not move a key back.
        map.add_batch(&keyed_batch(0, Compression::None, &[("a", Some("0"))]))
            .unwrap();
        assert_eq!(map.latest(b"a"), Some(12));
        // Records without a key are not in the map.
        let unkeyed = encode_batch(&BatchSpec {
            base_offset: 14,
            ..BatchSpec::default()
        });
        assert_eq!(map.add_batch(&unkeyed), Ok(1));
        assert_eq!(map.len(), 3);
        assert!(map.add_batch(&unkeyed[..30]).is_err());
    }

    #[test]
    fn offset_map_memory_grows_with_keys() {
        let mut map = OffsetMap::new();
        let key = "k".repeat(1000);
        let batch = keyed_batch(0, Compression::None, &[(key.as_str(), Some("v"))]);
        map.add_batch(&batch).unwrap();
        assert!(map.memory_bytes() >= 1000 + size_of::<(Bytes, i64)>());
    }

    #[test]
    fn offset_map_skips_control_batches_and_pins_transactional_keys() {
        let mut map = OffsetMap::new();
        let control = encode_batch(&BatchSpec {
            attributes: 0x30,
            records: vec![TestRecord::keyed(
                &[0, 0, 0, 1],
                Some(&[0, 0, 0, 0, 0, 0]),
                0,
            )],
            ..BatchSpec::default()
        });
        assert_eq!(map.add_batch(&control), Ok(0));
        let transactional = encode_batch(&BatchSpec {
            attributes: 0x10,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            records: vec![TestRecord::keyed(b"t", Some(b"v"), 0)],
            ..BatchSpec::default()
        });
        assert_eq!(map.add_batch(&transactional), Ok(1));
        assert!(map.is_empty());
        assert_eq!(map.latest(b"t"), None);
        assert!(map.is_pinned(b"t"));
        assert!(!map.is_pinned(b"u"));
    }

    #[test]
    fn the_latest_record_per_key_survives() {
        let batch = keyed_batch(
            100,
            Compression::None,
            &[("a", Some("1")), ("b", Some("2")), ("a", Some("3"))],
        );
        let map = map_over(&[&batch]);
        let bytes = rewritten(compact_batch(&batch, &map, 0).unwrap());
        let header = check_rewrite(&bytes);
        assert_eq!(header.base_offset, 101);
        assert_eq!(header.last_offset_delta, 1);
        let before = seen(&batch);
        assert_eq!(seen(&bytes), vec![before[1].clone(), before[2].clone()]);
    }

    #[test]
    fn a_gap_inside_the_kept_records_keeps_their_offsets() {
        let batch = keyed_batch(
            0,
            Compression::None,
            &[
                ("a", Some("1")),
                ("b", Some("2")),
                ("c", Some("3")),
                ("b", Some("4")),
            ],
        );
        let later = keyed_batch(4, Compression::None, &[("a", Some("5"))]);
        let map = map_over(&[&batch, &later]);
        let bytes = rewritten(compact_batch(&batch, &map, 0).unwrap());
        let header = check_rewrite(&bytes);
        assert_eq!((header.base_offset, header.last_offset()), (2, 3));
        let offsets: Vec<i64> = seen(&bytes).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![2, 3]);
        assert_eq!(
            compact_batch(&later, &map, 0).unwrap(),
            CompactedBatch::Unchanged
        );
    }

    #[test]
    fn a_batch_with_only_superseded_records_is_removed() {
        let old = keyed_batch(0, Compression::Gzip, &[("a", Some("1")), ("b", None)]);
        let new = keyed_batch(2, Compression::Gzip, &[("b", Some("2")), ("a", Some("3"))]);
        let map = map_over(&[&old, &new]);
        assert_eq!(
            compact_batch(&old, &map, 0).unwrap(),
            CompactedBatch::Removed
        );
        assert_eq!(
            compact_batch(&new, &map, 0).unwrap(),
            CompactedBatch::Unchanged
        );
    }

    #[test]
    fn a_tombstone_survives_until_the_horizon() {
        // "a" is deleted at offset 1, stamped BASE_TIMESTAMP + 1.
        let batch = keyed_batch(0, Compression::None, &[("a", Some("1")), ("a", None)]);
        let map = map_over(&[&batch]);
        let tombstone_ms = BASE_TIMESTAMP + 1;
        for horizon in [i64::MIN, 0, tombstone_ms - 1, tombstone_ms] {
            let bytes = rewritten(compact_batch(&batch, &map, horizon).unwrap());
            check_rewrite(&bytes);
            let records = seen(&bytes);
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].offset, 1);
            assert_eq!(records[0].value, None, "the tombstone is kept");
        }
        for horizon in [tombstone_ms + 1, i64::MAX] {
            assert_eq!(
                compact_batch(&batch, &map, horizon).unwrap(),
                CompactedBatch::Removed
            );
        }
    }

    #[test]
    fn a_superseded_tombstone_goes_whatever_the_horizon() {
        let batch = keyed_batch(0, Compression::None, &[("a", None), ("a", Some("2"))]);
        let map = map_over(&[&batch]);
        let bytes = rewritten(compact_batch(&batch, &map, i64::MIN).unwrap());
        assert_eq!(seen(&bytes)[0].value.as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn log_append_time_tombstones_use_the_batch_time() {
        let append_ms = BASE_TIMESTAMP + 10_000;
        let mut batch = encode_batch(&BatchSpec {
            attributes: 0x08,
            leader_epoch: 3,
            records: vec![
                TestRecord::keyed(b"a", Some(b"1"), 0),
                TestRecord::keyed(b"a", None, 1),
                TestRecord::keyed(b"b", Some(b"2"), 2),
            ],
            ..BatchSpec::default()
        });
        patch_max_timestamp(&mut batch, append_ms);
        let map = map_over(&[&batch]);
        // The create time of the tombstone is long before the horizon; the
        // time that counts is the append time.
        let bytes = rewritten(compact_batch(&batch, &map, append_ms).unwrap());
        let header = check_rewrite(&bytes);
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, append_ms);
        assert_eq!(header.partition_leader_epoch, 3);
        assert_eq!(header.compression(), Compression::None);
        let before = seen(&batch);
        assert_eq!(seen(&bytes), before[1..].to_vec());
        let bytes = rewritten(compact_batch(&batch, &map, append_ms + 1).unwrap());
        assert_eq!(seen(&bytes), before[2..].to_vec());
        assert!(BatchHeader::parse(&bytes).unwrap().is_log_append_time());
    }

    #[test]
    fn records_without_a_key_survive() {
        let batch = encode_batch(&BatchSpec {
            records: vec![
                TestRecord::value(b"x".to_vec()),
                TestRecord::keyed(b"a", Some(b"1"), 0),
                TestRecord {
                    value: None,
                    ..TestRecord::value(Vec::new())
                },
                TestRecord::keyed(b"a", Some(b"2"), 0),
            ],
            ..BatchSpec::default()
        });
        let map = map_over(&[&batch]);
        let bytes = rewritten(compact_batch(&batch, &map, i64::MAX).unwrap());
        check_rewrite(&bytes);
        let before = seen(&batch);
        let after = seen(&bytes);
        assert_eq!(
            after,
            vec![before[0].clone(), before[2].clone(), before[3].clone()]
        );
        // Only unkeyed records: nothing to do.
        let unkeyed = encode_batch(&BatchSpec::default());
        assert_eq!(
            compact_batch(&unkeyed, &map, i64::MAX).unwrap(),
            CompactedBatch::Unchanged
        );
    }

    #[test]
    fn records_newer_than_the_map_survive() {
        let old = keyed_batch(0, Compression::None, &[("a", Some("1"))]);
        let new = keyed_batch(1, Compression::None, &[("a", None), ("b", None)]);
        let map = map_over(&[&old]);
        assert_eq!(
            compact_batch(&new, &map, i64::MAX).unwrap(),
            CompactedBatch::Unchanged
        );
    }

    #[test]
    fn control_and_transactional_batches_are_unchanged() {
        let control = encode_batch(&BatchSpec {
            attributes: 0x30,
            base_offset: 5,
            producer_id: 7,
            producer_epoch: 0,
            records: vec![TestRecord::keyed(
                &[0, 0, 0, 1],
                Some(&[0, 0, 0, 0, 0, 0]),
                0,
            )],
            ..BatchSpec::default()
        });
        let transactional = encode_batch(&BatchSpec {
            attributes: 0x10,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            records: vec![
                TestRecord::keyed(b"a", Some(b"old"), 0),
                TestRecord::keyed(b"a", Some(b"new"), 0),
            ],
            ..BatchSpec::default()
        });
        // A later plain tombstone of "a" that the horizon would drop.
        let tombstone = keyed_batch(6, Compression::None, &[("a", None), ("z", None)]);
        let map = map_over(&[&transactional, &control, &tombstone]);
        assert_eq!(map.latest(b"a"), Some(6));
        for batch in [&control, &transactional] {
            assert_eq!(
                compact_batch(batch, &map, i64::MAX).unwrap(),
                CompactedBatch::Unchanged
            );
        }
        // Dropping the tombstone would bring the transactional value back.
        let bytes = rewritten(compact_batch(&tombstone, &map, i64::MAX).unwrap());
        let after = seen(&bytes);
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].offset, after[0].value.clone()), (6, None));
    }

    #[test]
    fn every_codec_rewrites_a_faithful_batch() {
        let headers = vec![
            (b"trace".to_vec(), Some(b"t-1".to_vec())),
            (b"empty".to_vec(), Some(Vec::new())),
            (b"null".to_vec(), None),
        ];
        let records: Vec<TestRecord> = (0..40)
            .map(|i| TestRecord {
                // Timestamps not in offset order, some before the base.
                timestamp_delta: [7, -3, 0, 12, 5][i % 5] + i as i64,
                key: Some(format!("key-{}", i % 9).into_bytes()),
                value: (i % 7 != 3).then(|| vec![b'a' + (i % 26) as u8; 50 + i]),
                headers: if i % 2 == 0 {
                    headers.clone()
                } else {
                    Vec::new()
                },
            })
            .collect();
        for compression in ALL_COMPRESSIONS {
            let spec = BatchSpec {
                base_offset: 1_000,
                leader_epoch: 12,
                attributes: compression_attributes(compression),
                base_timestamp: BASE_TIMESTAMP,
                producer_id: 4_242,
                producer_epoch: 3,
                base_sequence: 500,
                records: records.clone(),
            };
            let batch = encode_compressed_batch(&spec);
            assert_eq!(validate_batch(&batch).unwrap().compression(), compression);
            let map = map_over(&[&batch]);
            assert_eq!(map.len(), 9);
            let horizon = BASE_TIMESTAMP + 20;
            let bytes = rewritten(compact_batch(&batch, &map, horizon).unwrap());
            let header = check_rewrite(&bytes);
            assert_eq!(header.compression(), compression);
            assert_eq!(header.partition_leader_epoch, 12);
            assert_eq!(header.producer_id, 4_242);
            assert_eq!(header.producer_epoch, 3);
            assert!(!header.is_transactional() && !header.is_control());
            assert!(!header.is_log_append_time());
            assert_eq!(crate::record::compute_crc(&bytes), header.crc);

            let before = seen(&batch);
            let expected: Vec<Seen> = before
                .iter()
                .filter(|r| {
                    map.latest(r.key.as_deref().unwrap()) == Some(r.offset)
                        && (r.value.is_some() || r.timestamp >= horizon)
                })
                .cloned()
                .collect();
            assert!(expected.len() > 1 && expected.len() < before.len());
            let after = seen(&bytes);
            assert_eq!(after, expected, "{compression:?}");
            // Each kept record keeps its sequence number.
            assert_eq!(
                header.base_sequence as i64,
                500 + (header.base_offset - 1_000)
            );
            let sequences: Vec<i32> = decode_records(&bytes)
                .unwrap()
                .iter()
                .map(|r| r.sequence)
                .collect();
            let wanted: Vec<i32> = after
                .iter()
                .map(|r| 500 + (r.offset - 1_000) as i32)
                .collect();
            assert_eq!(sequences, wanted);
        }
    }

    #[test]
    fn a_batch_without_a_producer_keeps_no_sequence() {
        let batch = keyed_batch(
            50,
            Compression::Snappy,
            &[("a", Some("1")), ("a", Some("2"))],
        );
        assert_eq!(validate_batch(&batch).unwrap().base_sequence, -1);
        let map = map_over(&[&batch]);
        let bytes = rewritten(compact_batch(&batch, &map, 0).unwrap());
        let header = check_rewrite(&bytes);
        assert_eq!(header.base_sequence, -1);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.producer_epoch, -1);
        assert_eq!(header.base_offset, 51);
    }

    #[test]
    fn sequences_wrap_to_zero_as_kafka_does() {
        // Record i has sequence i32::MAX - 1 + i: MAX-1, MAX, 0, 1.
        let batch = encode_batch(&BatchSpec {
            base_offset: 0,
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: i32::MAX - 1,
            records: ["a", "b", "a", "c"]
                .iter()
                .map(|k| TestRecord::keyed(k.as_bytes(), Some(b"v"), 0))
                .collect(),
            ..BatchSpec::default()
        });
        let map = map_over(&[&batch]);
        let bytes = rewritten(compact_batch(&batch, &map, 0).unwrap());
        let header = check_rewrite(&bytes);
        assert_eq!(header.base_offset, 1);
        assert_eq!(header.base_sequence, i32::MAX);
        // Dropping "b" too: the first kept record is past the wrap.
        let later = keyed_batch(4, Compression::None, &[("b", Some("w"))]);
        let map = map_over(&[&batch, &later]);
        let bytes = rewritten(compact_batch(&batch, &map, 0).unwrap());
        let header = check_rewrite(&bytes);
        assert_eq!((header.base_offset, header.base_sequence), (2, 0));
    }

    #[test]
    fn repeated_header_keys_are_not_lost() {
        let record = |key: &[u8], value: &[u8]| TestRecord {
            headers: vec![
                (b"h".to_vec(), Some(b"1".to_vec())),
                (b"h".to_vec(), Some(b"2".to_vec())),
            ],
            ..TestRecord::keyed(key, Some(value), 0)
        };
        for compression in [Compression::None, Compression::Zstd] {
            let batch = encode_compressed_batch(&BatchSpec {
                attributes: compression_attributes(compression),
                records: vec![record(b"a", b"1"), record(b"a", b"2")],
                ..BatchSpec::default()
            });
            let map = map_over(&[&batch]);
            // A rewrite would keep one "h" of record 1: refuse.
            assert!(compact_batch(&batch, &map, 0).is_err(), "{compression:?}");
            // Nothing to rewrite: fine.
            let later = keyed_batch(2, Compression::None, &[("a", Some("3"))]);
            let map = map_over(&[&batch, &later]);
            assert_eq!(
                compact_batch(&batch, &map, 0).unwrap(),
                CompactedBatch::Removed
            );
        }
        // Distinct header keys rewrite fine next to a dropped record.
        let batch = encode_batch(&BatchSpec {
            records: vec![
                TestRecord::keyed(b"a", Some(b"1"), 0),
                TestRecord {
                    headers: vec![(b"x".to_vec(), None), (b"y".to_vec(), Some(b"2".to_vec()))],
                    ..TestRecord::keyed(b"a", Some(b"2"), 0)
                },
            ],
            ..BatchSpec::default()
        });
        let map = map_over(&[&batch]);
        let bytes = rewritten(compact_batch(&batch, &map, 0).unwrap());
        assert_eq!(seen(&bytes), seen(&batch)[1..].to_vec());
    }

    #[test]
    fn invalid_batches_are_errors() {
        let batch = keyed_batch(0, Compression::None, &[("a", Some("1")), ("a", Some("2"))]);
        let map = map_over(&[&batch]);
        let mut corrupt = batch.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(matches!(
            compact_batch(&corrupt, &map, 0),
            Err(BatchError::CrcMismatch { .. })
        ));
        assert!(compact_batch(&batch[..batch.len() - 1], &map, 0)
            .unwrap_err()
            .is_truncation());
        // A valid CRC over records that do not decode.
        let mut garbage = batch.clone();
        // The first record's length becomes -64.
        garbage[BATCH_HEADER_BYTES] = 0x7f;
        fix_crc(&mut garbage);
        assert!(compact_batch(&garbage, &map, 0).is_err());
        assert!(OffsetMap::new().add_batch(&garbage).is_err());
    }

    #[test]
    fn compact_segment_rewrites_each_batch_and_counts() {
        let batches = [
            keyed_batch(0, Compression::None, &[("a", Some("1")), ("b", Some("1"))]),
            keyed_batch(2, Compression::Lz4, &[("a", Some("2")), ("c", None)]),
            keyed_batch(4, Compression::Gzip, &[("a", Some("3")), ("b", Some("2"))]),
            keyed_batch(6, Compression::Zstd, &[("d", Some("1"))]),
        ];
        let segment: Vec<u8> = batches.concat();
        let map = map_over(&batches.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let (bytes, kept, removed) = compact_segment(&segment, &map, i64::MAX).unwrap();
        assert_eq!((kept, removed), (3, 4));
        let mut expected = Vec::new();
        for batch in &batches {
            match compact_batch(batch, &map, i64::MAX).unwrap() {
                CompactedBatch::Unchanged => expected.extend_from_slice(batch),
                CompactedBatch::Rewritten(b) => expected.extend_from_slice(&b),
                CompactedBatch::Removed => {}
            }
        }
        assert_eq!(bytes, expected);
        // Batch 2 is removed, batch 3 rewritten, batch 4 kept as it is.
        assert!(bytes.ends_with(&batches[3]));
        assert_eq!(compact_segment(&[], &map, 0).unwrap(), (Vec::new(), 0, 0));
        assert!(compact_segment(&segment[..segment.len() - 3], &map, 0)
            .unwrap_err()
            .is_truncation());
    }

    #[test]
    fn compacting_twice_changes_nothing() {
        let batches = [
            keyed_batch(
                0,
                Compression::Snappy,
                &[("a", Some("1")), ("b", Some("1")), ("c", None)],
            ),
            keyed_batch(
                3,
                Compression::Lz4,
                &[("a", None), ("d", Some("x")), ("b", Some("2"))],
            ),
            keyed_batch(
                6,
                Compression::None,
                &[("c", Some("3")), ("d", None), ("e", None)],
            ),
        ];
        let segment = batches.concat();
        let map = map_over(&batches.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for horizon in [i64::MIN, BASE_TIMESTAMP + 1, i64::MAX] {
            let (once, _, _) = compact_segment(&segment, &map, horizon).unwrap();
            let mut again_map = OffsetMap::new();
            let mut position = 0;
            let mut compacted = Vec::new();
            while position < once.len() {
                let total = validate_batch(&once[position..]).unwrap().total_bytes();
                compacted.push(&once[position..position + total]);
                position += total;
            }
            for batch in &compacted {
                again_map.add_batch(batch).unwrap();
            }
            for batch in &compacted {
                assert_eq!(
                    compact_batch(batch, &again_map, horizon).unwrap(),
                    CompactedBatch::Unchanged
                );
            }
            let (twice, kept, removed) = compact_segment(&once, &again_map, horizon).unwrap();
            assert_eq!(twice, once);
            assert_eq!(removed, 0);
            assert_eq!(kept, again_map.len(), "one record per key");
        }
    }

    /// One write of the property test: key index, value (None = tombstone),
    /// timestamp offset from BASE_TIMESTAMP.
    type Write = (u8, Option<Vec<u8>>, i64);

    /// The batches of a log holding `writes` from `base_offset` on, cut into
    /// batches of the sizes in `cuts` (cycled) with the codecs in `codecs`,
    /// each batch from an idempotent producer whose sequence follows the
    /// offsets from `first_sequence`, or from none.
    fn build_log(
        writes: &[Write],
        cuts: &[usize],
        codecs: &[Compression],
        base_offset: i64,
        first_sequence: Option<i32>,
    ) -> Vec<Vec<u8>> {
        let mut batches = Vec::new();
        let mut start = 0usize;
        while start < writes.len() {
            let n = batches.len();
            let end = (start + cuts[n % cuts.len()]).min(writes.len());
            let chunk = &writes[start..end];
            let first_timestamp = chunk[0].2;
            batches.push(encode_compressed_batch(&BatchSpec {
                base_offset: base_offset + start as i64,
                leader_epoch: n as i32 % 4,
                attributes: compression_attributes(codecs[n % codecs.len()]),
                base_timestamp: BASE_TIMESTAMP + first_timestamp,
                producer_id: if first_sequence.is_some() { 99 } else { -1 },
                producer_epoch: if first_sequence.is_some() { 2 } else { -1 },
                base_sequence: first_sequence.map_or(-1, |s| {
                    ((s as i64 + start as i64) % (i32::MAX as i64 + 1)) as i32
                }),
                records: chunk
                    .iter()
                    .map(|(key, value, timestamp)| TestRecord {
                        timestamp_delta: timestamp - first_timestamp,
                        key: Some(vec![b'k', *key]),
                        value: value.clone(),
                        headers: Vec::new(),
                    })
                    .collect(),
            }));
            start = end;
        }
        batches
    }

    /// A record of the property test's log: offset, key, value, timestamp.
    type LogEntry = (i64, Vec<u8>, Option<Vec<u8>>, i64);

    /// Splits a compacted log into its batches, checking each is valid.
    fn split(log: &[u8]) -> Vec<&[u8]> {
        let mut batches = Vec::new();
        let mut position = 0;
        while position < log.len() {
            let header = validate_batch(&log[position..]).expect("a valid batch");
            batches.push(&log[position..position + header.total_bytes()]);
            position += header.total_bytes();
        }
        batches
    }

    fn codec() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Gzip),
            Just(Compression::Lz4),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn compaction_keeps_the_latest_value_per_key(
            writes in prop::collection::vec(
                (
                    0u8..6,
                    prop::option::weighted(0.7, prop::collection::vec(any::<u8>(), 0..12)),
                    0i64..1_000,
                ),
                1..80,
            ),
            cuts in prop::collection::vec(1usize..9, 1..12),
            codecs in prop::collection::vec(codec(), 1..6),
            base_offset in 0i64..10_000,
            first_sequence in prop::option::of(prop_oneof![0i32..1_000, (i32::MAX - 40)..=i32::MAX]),
            // A horizon at some write's own timestamp: the boundary case.
            horizon_at in any::<prop::sample::Index>(),
        ) {
            let batches = build_log(&writes, &cuts, &codecs, base_offset, first_sequence);
            let mut map = OffsetMap::new();
            for batch in &batches {
                prop_assert_eq!(map.add_batch(batch).unwrap(), batch_len(batch));
            }
            // The model: each key's latest write.
            let mut latest: BTreeMap<u8, (i64, &Write)> = BTreeMap::new();
            for (i, write) in writes.iter().enumerate() {
                latest.insert(write.0, (base_offset + i as i64, write));
            }
            prop_assert_eq!(map.len(), latest.len());
            // Which input batch (base offset → its header) holds an offset.
            let headers: BTreeMap<i64, BatchHeader> = batches
                .iter()
                .map(|b| { let h = validate_batch(b).unwrap(); (h.base_offset, h) })
                .collect();

            let middle_horizon = BASE_TIMESTAMP + horizon_at.get(&writes).2;
            for horizon in [i64::MAX, i64::MIN, middle_horizon] {
                let mut log = Vec::new();
                let (mut kept, mut removed) = (0, 0);
                for batch in &batches {
                    let (bytes, k, r) = compact_segment(batch, &map, horizon).unwrap();
                    match compact_batch(batch, &map, horizon).unwrap() {
                        CompactedBatch::Unchanged => prop_assert_eq!(&bytes, batch),
                        CompactedBatch::Rewritten(b) => prop_assert_eq!(&bytes, &b),
                        CompactedBatch::Removed => prop_assert!(bytes.is_empty()),
                    }
                    log.extend_from_slice(&bytes);
                    kept += k;
                    removed += r;
                }
                // The whole log as one segment compacts the same.
                let whole = compact_segment(&batches.concat(), &map, horizon).unwrap();
                prop_assert_eq!(&whole, &(log.clone(), kept, removed));
                prop_assert_eq!(kept + removed, writes.len());

                let expected: Vec<LogEntry> = {
                    let mut e: Vec<_> = latest
                        .iter()
                        .filter(|(_, (_, (_, value, timestamp)))| {
                            value.is_some() || BASE_TIMESTAMP + timestamp >= horizon
                        })
                        .map(|(key, (offset, (_, value, timestamp)))| {
                            (*offset, vec![b'k', *key], value.clone(), BASE_TIMESTAMP + timestamp)
                        })
                        .collect();
                    e.sort();
                    e
                };
                let mut got: Vec<LogEntry> = Vec::new();
                let compacted = split(&log);
                for batch in &compacted {
                    let header = validate_batch(batch).unwrap();
                    let records = decode_records(batch).unwrap();
                    prop_assert_eq!(header.records_count as usize, records.len());
                    prop_assert_eq!(header.base_offset, records[0].offset);
                    prop_assert_eq!(header.last_offset(), records.last().unwrap().offset);
                    // The input batch this one came from.
                    let (_, original) = headers.range(..=header.base_offset).next_back().unwrap();
                    prop_assert!(header.last_offset() <= original.last_offset());
                    prop_assert_eq!(header.compression(), original.compression());
                    prop_assert_eq!(header.partition_leader_epoch, original.partition_leader_epoch);
                    prop_assert_eq!(header.producer_id, original.producer_id);
                    prop_assert_eq!(header.producer_epoch, original.producer_epoch);
                    let sequence = match first_sequence {
                        None => -1,
                        Some(s) => ((s as i64 + header.base_offset - base_offset)
                            % (i32::MAX as i64 + 1)) as i32,
                    };
                    prop_assert_eq!(header.base_sequence, sequence);
                    for record in records {
                        got.push((
                            record.offset,
                            record.key.unwrap().to_vec(),
                            record.value.map(|v| v.to_vec()),
                            record.timestamp,
                        ));
                    }
                }
                prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
                prop_assert_eq!(&got, &expected);
                if horizon == i64::MAX {
                    prop_assert!(got.iter().all(|r| r.2.is_some()), "no tombstone left");
                }

                // Compacting the compacted log changes nothing.
                let mut again = OffsetMap::new();
                for batch in &compacted {
                    again.add_batch(batch).unwrap();
                }
                for batch in &compacted {
                    prop_assert_eq!(
                        compact_batch(batch, &again, horizon).unwrap(),
                        CompactedBatch::Unchanged
                    );
                }
            }
        }
    }

    fn batch_len(batch: &[u8]) -> usize {
        validate_batch(batch).unwrap().records_count as usize
    }
}

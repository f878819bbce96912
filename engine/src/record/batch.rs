//! The fixed 61-byte RecordBatch v2 header and the checks the broker makes on
//! every batch it appends or recovers. Layout: KAFKA_NOTES.md "RecordBatch v2".

use std::ops::Range;

/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Size of the v2 header up to and including `recordsCount`.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The only message format the broker accepts.
pub const MAGIC_V2: i8 = 2;

const OFFSET_BASE_OFFSET: usize = 0;
pub(super) const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
pub(super) const OFFSET_CRC: usize = 17;
/// The CRC covers everything from `attributes` to the end of the batch.
const OFFSET_CRC_START: usize = 21;
pub(super) const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;

pub(super) const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: {available} bytes available, {needed} needed")]
    Truncated { available: usize, needed: usize },
    #[error("batch length {0} is smaller than the v2 header")]
    LengthTooSmall(i32),
    #[error("unsupported magic {0}")]
    BadMagic(i8),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
}

impl BatchError {
    /// A truncated batch at the end of a buffer may be completed by more bytes;
    /// every other error is corruption.
    pub fn is_truncation(&self) -> bool {
        matches!(self, BatchError::Truncated { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    // The values of the attributes' codec bits.
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & ATTR_COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A parsed copy of a batch header. Cheap to copy; the bytes stay where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}
fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}
fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}
fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC or
    /// that the whole batch is present. Needs `BATCH_HEADER_BYTES` bytes.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                available: buf.len(),
                needed: BATCH_HEADER_BYTES,
            });
        }
        let header = BatchHeader {
            base_offset: read_i64(buf, OFFSET_BASE_OFFSET),
            batch_length: read_i32(buf, OFFSET_BATCH_LENGTH),
            partition_leader_epoch: read_i32(buf, OFFSET_LEADER_EPOCH),
            magic: buf[OFFSET_MAGIC] as i8,
            crc: read_u32(buf, OFFSET_CRC),
            attributes: read_i16(buf, OFFSET_ATTRIBUTES),
            last_offset_delta: read_i32(buf, OFFSET_LAST_OFFSET_DELTA),
            base_timestamp: read_i64(buf, OFFSET_BASE_TIMESTAMP),
            max_timestamp: read_i64(buf, OFFSET_MAX_TIMESTAMP),
            producer_id: read_i64(buf, OFFSET_PRODUCER_ID),
            producer_epoch: read_i16(buf, OFFSET_PRODUCER_EPOCH),
            base_sequence: read_i32(buf, OFFSET_BASE_SEQUENCE),
            records_count: read_i32(buf, OFFSET_RECORDS_COUNT),
        };
        // Check the magic before the length: a v0/v1 message set has another layout.
        if header.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(header.magic));
        }
        if (header.batch_length as i64) < (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(BatchError::LengthTooSmall(header.batch_length));
        }
        if header.last_offset_delta < 0 {
            return Err(BatchError::InvalidHeader("negative lastOffsetDelta"));
        }
        if header.records_count < 0 {
            return Err(BatchError::InvalidHeader("negative recordsCount"));
        }
        if Compression::from_attributes(header.attributes).is_none() {
            return Err(BatchError::InvalidHeader("unknown compression codec"));
        }
        // baseOffset is outside the CRC: a flipped bit there, or a hostile
        // producer, must not make `last_offset`/`next_offset` overflow.
        if header
            .base_offset
            .checked_add(header.last_offset_delta as i64 + 1)
            .is_none()
        {
            return Err(BatchError::InvalidHeader("offset range overflows"));
        }
        Ok(header)
    }

    /// Bytes of the whole batch, header included.
    pub fn total_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD_BYTES
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The offset that follows this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).expect("checked in parse")
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// CRC-32C over the covered part of a complete batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[OFFSET_CRC_START..])
}

/// Validates one complete batch at the start of `buf`: header fields, that all
/// its bytes are present, and its CRC. Returns the header; the batch occupies
/// `buf[..header.total_bytes()]`.
pub fn validate_batch(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            available: buf.len(),
            needed: total,
        });
    }
    let computed = compute_crc(&buf[..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// One validated batch of a record set and where it lies in that set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpan {
    pub range: Range<usize>,
    pub header: BatchHeader,
}

/// Splits a producer's record set into its validated batches. The whole set
/// must be valid: a client that sends a torn or corrupt batch gets an error for
/// the partition, and nothing of it is appended.
pub fn validate_record_set(records: &[u8]) -> Result<Vec<BatchSpan>, BatchError> {
    let mut spans = Vec::new();
    let mut position = 0usize;
    while position < records.len() {
        let header = validate_batch(&records[position..])?;
        // Kafka's LogValidator: a client's v2 batch holds exactly
        // lastOffsetDelta + 1 records (at least one). Offsets are assigned
        // from lastOffsetDelta, so a header that disagrees with its count
        // would burn offsets or give records offsets the log never assigned.
        if header.records_count as i64 != header.last_offset_delta as i64 + 1 {
            return Err(BatchError::InvalidHeader(
                "recordsCount does not match lastOffsetDelta",
            ));
        }
        let end = position + header.total_bytes();
        spans.push(BatchSpan {
            range: position..end,
            header,
        });
        position = end;
    }
    if spans.is_empty() {
        return Err(BatchError::Truncated {
            available: 0,
            needed: BATCH_HEADER_BYTES,
        });
    }
    Ok(spans)
}

/// Splits a record set copied from a partition leader into its validated
/// batches: each batch's CRC and header are checked, but not the producer
/// rules of [`validate_record_set`] (a compacted batch holds fewer records
/// than its offset span). Offsets must rise from `first_offset` on, with
/// gaps only where compaction removed whole batches.
pub fn validate_replica_record_set(
    records: &[u8],
    first_offset: i64,
) -> Result<Vec<BatchSpan>, BatchError> {
    let mut spans: Vec<BatchSpan> = Vec::new();
    let mut position = 0usize;
    let mut next = first_offset;
    while position < records.len() {
        let header = validate_batch(&records[position..])?;
        if header.base_offset < next || header.last_offset_delta < 0 {
            return Err(BatchError::InvalidHeader(
                "a replicated batch's offsets do not follow the log end",
            ));
        }
        next = header.next_offset();
        let end = position + header.total_bytes();
        spans.push(BatchSpan {
            range: position..end,
            header,
        });
        position = end;
    }
    Ok(spans)
}

/// Overwrites baseOffset in place. baseOffset is outside the CRC, so the CRC
/// stays valid.
/// How many batches a record set holds, by their length fields alone (no
/// CRC or magic check: the owning shard validates). A malformed length ends
/// the count with the batch it starts.
pub fn count_batches(records: &[u8]) -> usize {
    let mut count = 0;
    let mut position = 0usize;
    while position < records.len() {
        count += 1;
        let Some(length) = records.get(position + 8..position + 12) else {
            break;
        };
        let length = i32::from_be_bytes(length.try_into().expect("4 bytes"));
        if length <= 0 {
            break;
        }
        position = position.saturating_add(LOG_OVERHEAD_BYTES + length as usize);
    }
    count
}

pub fn patch_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[OFFSET_BASE_OFFSET..OFFSET_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch in place (outside the CRC).
pub fn patch_leader_epoch(batch: &mut [u8], leader_epoch: i32) {
    batch[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Sets maxTimestamp for LogAppendTime batches and recomputes the CRC, which
/// covers the timestamp.
pub fn patch_max_timestamp(batch: &mut [u8], max_timestamp: i64) {
    batch[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = compute_crc(batch);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::testing::{encode_batch, fix_crc, simple_batch, BatchSpec, TestRecord};
    use proptest::prelude::*;

    fn spec_with_every_field() -> BatchSpec {
        BatchSpec {
            base_offset: 0x0102_0304_0506_0708,
            leader_epoch: 77,
            attributes: 0x10, // transactional, no compression, CreateTime
            base_timestamp: 1_600_000_000_123,
            producer_id: 4242,
            producer_epoch: 9,
            base_sequence: 31,
            records: (0..3)
                .map(|i| TestRecord {
                    timestamp_delta: [5, 2, 11][i],
                    key: None,
                    value: Some(vec![i as u8; 10]),
                    headers: vec![(b"h".to_vec(), None)],
                })
                .collect(),
        }
    }

    #[test]
    fn parse_reads_every_header_field() {
        let batch = encode_batch(&spec_with_every_field());
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.base_offset, 0x0102_0304_0506_0708);
        assert_eq!(h.batch_length as usize, batch.len() - LOG_OVERHEAD_BYTES);
        assert_eq!(h.partition_leader_epoch, 77);
        assert_eq!(h.magic, MAGIC_V2);
        assert_eq!(h.crc, crc32c::crc32c(&batch[21..]));
        assert_eq!(h.attributes, 0x10);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1_600_000_000_123);
        assert_eq!(h.max_timestamp, 1_600_000_000_123 + 11);
        assert_eq!(h.producer_id, 4242);
        assert_eq!(h.producer_epoch, 9);
        assert_eq!(h.base_sequence, 31);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.total_bytes(), batch.len());
        assert_eq!(h.last_offset(), 0x0102_0304_0506_0708 + 2);
        assert_eq!(h.next_offset(), 0x0102_0304_0506_0708 + 3);
        assert_eq!(h.compression(), Compression::None);
        assert!(h.is_transactional());
        assert!(!h.is_control());
        assert!(!h.is_log_append_time());
        assert_eq!(validate_batch(&batch), Ok(h));
    }

    #[test]
    fn parse_reads_attribute_bits() {
        for (attributes, compression) in [
            (0, Compression::None),
            (1, Compression::Gzip),
            (2, Compression::Snappy),
            (3, Compression::Lz4),
            (4, Compression::Zstd),
        ] {
            for flags in [0i16, 0x08, 0x10, 0x20, 0x38, 0x40] {
                let batch = encode_batch(&BatchSpec {
                    attributes: attributes | flags,
                    ..BatchSpec::default()
                });
                let h = BatchHeader::parse(&batch).unwrap();
                assert_eq!(h.compression(), compression);
                assert_eq!(h.is_log_append_time(), flags & 0x08 != 0);
                assert_eq!(h.is_transactional(), flags & 0x10 != 0);
                assert_eq!(h.is_control(), flags & 0x20 != 0);
            }
        }
        for codec in 5..8 {
            let batch = encode_batch(&BatchSpec {
                attributes: codec,
                ..BatchSpec::default()
            });
            assert_eq!(
                BatchHeader::parse(&batch),
                Err(BatchError::InvalidHeader("unknown compression codec"))
            );
        }
        assert_eq!(
            Compression::from_attributes(0x7fff & !0x07),
            Some(Compression::None)
        );
    }

    #[test]
    fn parse_needs_the_whole_header() {
        let batch = simple_batch(1, 1, 0);
        for len in 0..BATCH_HEADER_BYTES {
            assert_eq!(
                BatchHeader::parse(&batch[..len]),
                Err(BatchError::Truncated {
                    available: len,
                    needed: BATCH_HEADER_BYTES
                })
            );
            assert!(validate_batch(&batch[..len]).unwrap_err().is_truncation());
        }
        assert!(BatchHeader::parse(&batch[..BATCH_HEADER_BYTES]).is_ok());
    }

    #[test]
    fn validate_accepts_valid_batches() {
        for count in [0usize, 1, 2, 50] {
            let batch = simple_batch(count, 20, 1000);
            let h = validate_batch(&batch).unwrap();
            assert_eq!(h.records_count as usize, count);
            assert_eq!(h.total_bytes(), batch.len());
        }
        // Trailing bytes after the batch are not its business.
        let mut batch = simple_batch(3, 5, 0);
        let len = batch.len();
        batch.extend_from_slice(&[0xff; 7]);
        assert_eq!(validate_batch(&batch).unwrap().total_bytes(), len);
    }

    #[test]
    fn validate_rejects_bad_magic() {
        for magic in [0u8, 1, 3, 0xff] {
            let mut batch = simple_batch(2, 4, 0);
            batch[16] = magic;
            fix_crc(&mut batch); // magic is outside the CRC anyway
            assert_eq!(
                validate_batch(&batch),
                Err(BatchError::BadMagic(magic as i8))
            );
        }
    }

    #[test]
    fn validate_rejects_small_or_negative_length() {
        for length in [i32::MIN, -1, 0, 1, 48] {
            let mut batch = simple_batch(2, 4, 0);
            batch[8..12].copy_from_slice(&length.to_be_bytes());
            assert_eq!(
                validate_batch(&batch),
                Err(BatchError::LengthTooSmall(length))
            );
        }
        // 49 is exactly a header with no records: it parses, then the CRC
        // over the shorter range fails.
        let mut batch = simple_batch(2, 4, 0);
        batch[8..12].copy_from_slice(&49i32.to_be_bytes());
        assert!(matches!(
            validate_batch(&batch),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn validate_rejects_negative_counts_and_offset_overflow() {
        let mut batch = simple_batch(2, 4, 0);
        batch[23..27].copy_from_slice(&(-1i32).to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::InvalidHeader("negative lastOffsetDelta"))
        );
        let mut batch = simple_batch(2, 4, 0);
        batch[57..61].copy_from_slice(&(-5i32).to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::InvalidHeader("negative recordsCount"))
        );
        let mut batch = simple_batch(2, 4, 0);
        patch_base_offset(&mut batch, i64::MAX - 1);
        assert!(matches!(
            validate_batch(&batch),
            Err(BatchError::InvalidHeader(_))
        ));
        // The largest base offset whose next offset still fits.
        patch_base_offset(&mut batch, i64::MAX - 2);
        assert_eq!(validate_batch(&batch).unwrap().next_offset(), i64::MAX);
    }

    #[test]
    fn validate_reports_truncation_with_the_needed_size() {
        let batch = simple_batch(4, 30, 0);
        for cut in BATCH_HEADER_BYTES..batch.len() {
            assert_eq!(
                validate_batch(&batch[..cut]),
                Err(BatchError::Truncated {
                    available: cut,
                    needed: batch.len()
                })
            );
        }
    }

    #[test]
    fn crc_error_reports_both_values() {
        let mut batch = simple_batch(1, 8, 0);
        let stored = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        let last = batch.len() - 1;
        batch[last] ^= 1;
        assert_eq!(
            validate_batch(&batch),
            Err(BatchError::CrcMismatch {
                stored,
                computed: crc32c::crc32c(&batch[21..])
            })
        );
        assert!(!validate_batch(&batch).unwrap_err().is_truncation());
    }

    #[test]
    fn record_set_of_several_batches() {
        let batches = [
            simple_batch(1, 3, 0),
            simple_batch(5, 100, 10),
            simple_batch(2, 0, 20),
        ];
        let set: Vec<u8> = batches.concat();
        let spans = validate_record_set(&set).unwrap();
        assert_eq!(spans.len(), 3);
        let mut start = 0;
        for (span, batch) in spans.iter().zip(&batches) {
            assert_eq!(span.range, start..start + batch.len());
            assert_eq!(span.header, validate_batch(batch).unwrap());
            start += batch.len();
        }
        assert_eq!(start, set.len());
    }

    #[test]
    fn record_set_errors() {
        assert_eq!(
            validate_record_set(&[]),
            Err(BatchError::Truncated {
                available: 0,
                needed: BATCH_HEADER_BYTES
            })
        );
        let good = simple_batch(2, 10, 0);
        // A torn second batch fails the whole set.
        let mut set = good.clone();
        set.extend_from_slice(&good[..good.len() - 1]);
        assert!(validate_record_set(&set).unwrap_err().is_truncation());
        // A few stray bytes after a batch.
        let mut set = good.clone();
        set.extend_from_slice(&[0; 5]);
        assert!(validate_record_set(&set).unwrap_err().is_truncation());
        // A corrupt second batch.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x40;
        let set = [good.clone(), bad].concat();
        assert!(matches!(
            validate_record_set(&set),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn record_set_rejects_count_not_matching_last_offset_delta() {
        // recordsCount 0 (an empty batch) is refused like Kafka does.
        let empty = simple_batch(0, 0, 0);
        assert!(validate_batch(&empty).is_ok());
        assert!(matches!(
            validate_record_set(&empty),
            Err(BatchError::InvalidHeader(_))
        ));
        // A batch claiming 1000 offsets for 2 records.
        let mut batch = simple_batch(2, 3, 0);
        batch[23..27].copy_from_slice(&999i32.to_be_bytes());
        fix_crc(&mut batch);
        assert!(validate_batch(&batch).is_ok());
        assert!(matches!(
            validate_record_set(&batch),
            Err(BatchError::InvalidHeader(_))
        ));
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc() {
        let mut batch = simple_batch(3, 10, 5);
        let before = validate_batch(&batch).unwrap();
        patch_base_offset(&mut batch, 1234);
        patch_leader_epoch(&mut batch, 56);
        let after = validate_batch(&batch).unwrap();
        assert_eq!(after.base_offset, 1234);
        assert_eq!(after.partition_leader_epoch, 56);
        assert_eq!(after.crc, before.crc);
        assert_eq!(after.last_offset(), 1236);
        assert_eq!(
            BatchHeader {
                base_offset: before.base_offset,
                partition_leader_epoch: before.partition_leader_epoch,
                ..after
            },
            before
        );
    }

    #[test]
    fn patching_max_timestamp_recomputes_the_crc() {
        let mut batch = encode_batch(&BatchSpec {
            attributes: 0x08,
            ..BatchSpec::default()
        });
        let before = validate_batch(&batch).unwrap();
        patch_max_timestamp(&mut batch, 1_999_999_999_999);
        let after = validate_batch(&batch).unwrap();
        assert_eq!(after.max_timestamp, 1_999_999_999_999);
        assert_ne!(after.crc, before.crc);
        assert_eq!(after.crc, compute_crc(&batch));
        assert!(after.is_log_append_time());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Flipping any byte the CRC covers (or the magic, or the length) is
        /// always detected; only baseOffset and partitionLeaderEpoch, which
        /// the broker rewrites, may change freely.
        #[test]
        fn any_flipped_byte_is_detected(
            count in 1usize..6,
            value_bytes in 0usize..40,
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let mut batch = simple_batch(count, value_bytes, 100);
            let at = at.index(batch.len());
            batch[at] ^= mask;
            let result = validate_batch(&batch);
            if at < 8 || (12..16).contains(&at) {
                // Outside the CRC: still a valid batch.
                prop_assert!(result.is_ok(), "{at}: {result:?}");
            } else {
                prop_assert!(result.is_err(), "flip at {at} not detected");
                if at >= 21 {
                    let truncated = matches!(result, Err(BatchError::Truncated { .. }));
                    prop_assert!(!truncated, "{at}: {result:?}");
                }
            }
        }

        #[test]
        fn record_set_spans_cover_the_set(
            shapes in prop::collection::vec((1usize..5, 0usize..50), 1..6),
        ) {
            let batches: Vec<Vec<u8>> =
                shapes.iter().map(|&(c, v)| simple_batch(c, v, 0)).collect();
            let set = batches.concat();
            let spans = validate_record_set(&set).unwrap();
            prop_assert_eq!(spans.len(), batches.len());
            prop_assert_eq!(spans[0].range.start, 0);
            prop_assert_eq!(spans.last().unwrap().range.end, set.len());
            for pair in spans.windows(2) {
                prop_assert_eq!(pair[0].range.end, pair[1].range.start);
            }
        }
    }
}

#[cfg(test)]
mod count_tests {
    use super::count_batches;
    use crate::record::testing::simple_batch;

    #[test]
    fn counts_batches_by_length() {
        let one = simple_batch(3, 10, 0);
        assert_eq!(count_batches(&[]), 0);
        assert_eq!(count_batches(&one), 1);
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(count_batches(&two), 2);
        assert_eq!(
            count_batches(&two[..one.len() + 5]),
            2,
            "a torn second batch counts"
        );
        assert_eq!(count_batches(&[0u8; 5]), 1);
    }
}

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
const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
/// The CRC covers everything from `attributes` to the end of the batch.
const OFFSET_CRC_START: usize = 21;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
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
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
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

/// Overwrites baseOffset in place. baseOffset is outside the CRC, so the CRC
/// stays valid.
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

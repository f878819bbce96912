//! What Kafka's LogValidator checks of a produced batch that needs the
//! topic's config or the request's version, and the recompression a topic's
//! `compression.type` asks for: pure, before the records reach their shard.

use bytes::Bytes;

use super::error_code::{self, ErrorCode};
use crate::metadata::TopicConfig;
use crate::record::{decode_records, recompress_batch, BatchHeader, Compression};

/// Why a partition's records were refused before reaching their shard.
pub struct Refusal {
    pub code: ErrorCode,
    /// KIP-467: the indexes (within the batch) of the records that have no
    /// key, when a compacted topic refuses them.
    pub records_without_key: Vec<i32>,
}

impl Refusal {
    fn code(code: ErrorCode) -> Refusal {
        Refusal {
            code,
            records_without_key: Vec::new(),
        }
    }
}

/// The checks of Kafka's LogValidator that need the topic's config or the
/// request's version, and the recompression `compression.type` asks for.
/// The broker runs it on the connection's shard, before the records go to
/// their owner; the `request` fuzz target runs it on every Produce it decodes.
/// A batch whose header does not parse passes unchanged: the owning shard's
/// validation answers CORRUPT_MESSAGE for it.
pub fn admit_records(records: Bytes, config: &TopicConfig, version: i16) -> Result<Bytes, Refusal> {
    let Ok(header) = BatchHeader::parse(&records) else {
        return Ok(records);
    };
    if header.is_control() {
        // Only the broker writes commit and abort markers.
        return Err(Refusal::code(error_code::INVALID_RECORD));
    }
    if header.compression() == Compression::Zstd && version < 7 {
        return Err(Refusal::code(error_code::UNSUPPORTED_COMPRESSION_TYPE));
    }
    if config.cleanup_compact {
        // A compacted topic takes no record without a key; the whole batch
        // is refused, naming them. A set that does not decode is left to
        // the owning shard, which answers CORRUPT_MESSAGE after its CRC check.
        let without_key: Vec<i32> = match decode_records(&records) {
            Ok(decoded) => decoded
                .iter()
                .enumerate()
                .filter(|(_, r)| r.key.is_none())
                .map(|(i, _)| i as i32)
                .collect(),
            Err(_) => Vec::new(),
        };
        if !without_key.is_empty() {
            return Err(Refusal {
                code: error_code::INVALID_RECORD,
                records_without_key: without_key,
            });
        }
    }
    match config.compression {
        // The batch keeps its offsets, sequence and records; only the
        // codec of its records blob, its length and its CRC change.
        Some(codec) => match recompress_batch(&records, codec) {
            Ok(Some(recompressed)) => Ok(Bytes::from(recompressed)),
            Ok(None) => Ok(records),
            Err(_) => Err(Refusal::code(error_code::CORRUPT_MESSAGE)),
        },
        None => Ok(records),
    }
}

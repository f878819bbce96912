//! Record iteration inside a batch (decompressing when needed), for the
//! slower paths that look inside batches: timestamp lookups, compaction, tools.
//! The produce/fetch path never calls this.

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

pub use kafka_protocol::records::Record;

use super::{BatchError, BatchHeader};

/// Decodes every record of one complete, already validated batch.
pub fn decode_records(batch: &[u8]) -> Result<Vec<Record>, BatchError> {
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut buf)
        .map_err(|_| BatchError::InvalidHeader("records do not decode"))?;
    Ok(set.records)
}

/// The first record of `batch` whose timestamp is at or after `timestamp_ms`,
/// as (offset, timestamp). With LogAppendTime every record carries the batch's
/// maxTimestamp.
pub fn first_record_at_or_after(
    batch: &[u8],
    timestamp_ms: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if header.max_timestamp < timestamp_ms {
        return Ok(None);
    }
    if header.is_log_append_time() {
        return Ok(Some((header.base_offset, header.max_timestamp)));
    }
    for record in decode_records(batch)? {
        if record.timestamp >= timestamp_ms {
            return Ok(Some((record.offset, record.timestamp)));
        }
    }
    Ok(None)
}

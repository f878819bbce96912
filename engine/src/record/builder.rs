//! Building RecordBatch v2 bytes: the records the broker writes itself
//! (group metadata, committed offsets) and the CLI's producer batches.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
pub use kafka_protocol::records::Compression as BatchCompression;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use super::BatchError;

/// One record to put in a new batch. A None value is a tombstone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl NewRecord {
    pub fn keyed(key: Bytes, value: Option<Bytes>) -> NewRecord {
        NewRecord {
            key: Some(key),
            value,
            headers: Vec::new(),
        }
    }
}

/// One batch holding `records`, all stamped `timestamp_ms`, with no producer
/// id. Base offset 0: the log assigns the real one on append.
pub fn build_batch(
    records: &[NewRecord],
    timestamp_ms: i64,
    compression: BatchCompression,
) -> Result<Vec<u8>, BatchError> {
    assert!(!records.is_empty());
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence
            // changes; keep it constant so all records share one batch whose
            // baseSequence is -1 (no producer).
            sequence: i as i32 - 1,
            timestamp: timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|_| BatchError::InvalidHeader("records do not encode"))?;
    Ok(buf.to_vec())
}

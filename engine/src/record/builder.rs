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
    encode_records(records, timestamp_ms, compression, None)
}

/// One uncompressed batch of `records` in a producer's transaction (the
/// broker's own TxnOffsetCommit records): transactional, with the
/// producer's id and epoch and no sequence, so it is settled by the
/// transaction's marker like the producer's own batches.
pub fn build_transactional_batch(
    records: &[NewRecord],
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<Vec<u8>, BatchError> {
    encode_records(
        records,
        timestamp_ms,
        BatchCompression::None,
        Some((producer_id, producer_epoch)),
    )
}

fn encode_records(
    records: &[NewRecord],
    timestamp_ms: i64,
    compression: BatchCompression,
    transaction: Option<(i64, i16)>,
) -> Result<Vec<u8>, BatchError> {
    assert!(!records.is_empty());
    let (producer_id, producer_epoch) = transaction.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: transaction.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{decode_records, BatchHeader};

    #[test]
    fn a_transactional_batch_carries_its_producer_and_no_sequence() {
        let records = [
            NewRecord::keyed(Bytes::from_static(b"k1"), Some(Bytes::from_static(b"v1"))),
            NewRecord::keyed(Bytes::from_static(b"k2"), None),
        ];
        let batch = build_transactional_batch(&records, 1_000, 42, 3).unwrap();
        let header = BatchHeader::parse(&batch).unwrap();
        assert!(header.is_transactional() && !header.is_control());
        assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
        assert_eq!(header.base_sequence, -1);
        assert_eq!(decode_records(&batch).unwrap().len(), 2);
        let plain =
            BatchHeader::parse(&build_batch(&records, 1_000, BatchCompression::None).unwrap())
                .unwrap();
        assert!(!plain.is_transactional() && plain.producer_id == -1);
    }
}

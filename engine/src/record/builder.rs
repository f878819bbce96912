//! Building RecordBatch v2 bytes on the broker side, for the records the
//! broker writes itself (group metadata and committed offsets).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One uncompressed batch holding `records` (key, value; a None value is a
/// tombstone), all stamped `timestamp_ms`. Base offset 0: the log assigns
/// the real one on append.
pub fn build_batch(records: &[(Bytes, Option<Bytes>)], timestamp_ms: i64) -> Vec<u8> {
    assert!(!records.is_empty());
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch whenever offset - sequence
            // changes; keep it constant so all records share one batch whose
            // baseSequence is -1 (no producer).
            sequence: i as i32 - 1,
            timestamp: timestamp_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: KafkaCompression::None,
        },
    )
    .expect("encoding in-memory records without compression cannot fail");
    buf.to_vec()
}

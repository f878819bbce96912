//! Transaction markers: the control batches that end a transaction in each
//! of its partitions. One record, in Kafka's layout: key = version (int16,
//! 0) + type (int16: 0 abort, 1 commit); value = version (int16, 0) +
//! coordinator epoch (int32). The batch carries the producer's id and epoch
//! (the epoch may be newer than its data's: a fencing abort), no sequence,
//! and the transactional and control attribute bits.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{decode_records, BatchError, BatchHeader};

const MARKER_VERSION: i16 = 0;
const MARKER_TYPE_ABORT: i16 = 0;
const MARKER_TYPE_COMMIT: i16 = 1;

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The control batch for `marker`, stamped `timestamp_ms`. Base offset 0:
/// the log assigns the real one on append.
pub fn build_marker_batch(marker: &TxnMarker, timestamp_ms: i64) -> Vec<u8> {
    let mut key = BytesMut::with_capacity(4);
    key.extend_from_slice(&MARKER_VERSION.to_be_bytes());
    let kind = if marker.commit {
        MARKER_TYPE_COMMIT
    } else {
        MARKER_TYPE_ABORT
    };
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = BytesMut::with_capacity(6);
    value.extend_from_slice(&MARKER_VERSION.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: marker.producer_id,
        producer_epoch: marker.producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        // No sequence: the encoder writes baseSequence = sequence - offset.
        sequence: -1,
        timestamp: timestamp_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::slice::from_ref(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("one small uncompressed record always encodes");
    buf.to_vec()
}

/// The marker a validated control batch holds; None for a data batch, an
/// unknown control type (Kafka's leader-change and snapshot records share
/// the control bit) or a damaged key.
pub fn read_marker(batch: &[u8]) -> Result<Option<TxnMarker>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() {
        return Ok(None);
    }
    let records = decode_records(batch)?;
    let Some(record) = records.first() else {
        return Ok(None);
    };
    let key = record.key.as_ref().map(Bytes::as_ref).unwrap_or_default();
    // Newer key versions keep the type where version 0 has it.
    if key.len() < 4 || i16::from_be_bytes([key[0], key[1]]) < MARKER_VERSION {
        return Ok(None);
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        MARKER_TYPE_ABORT => false,
        MARKER_TYPE_COMMIT => true,
        _ => return Ok(None),
    };
    let coordinator_epoch = match record.value.as_deref() {
        Some(v) if v.len() >= 6 => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        _ => {
            return Err(BatchError::InvalidHeader(
                "a transaction marker without its value",
            ))
        }
    };
    Ok(Some(TxnMarker {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        commit,
        coordinator_epoch,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{build_batch, validate_batch, BatchCompression, NewRecord};

    #[test]
    fn a_marker_batch_is_a_valid_control_batch_and_reads_back() {
        for commit in [true, false] {
            let marker = TxnMarker {
                producer_id: 4_000,
                producer_epoch: 3,
                commit,
                coordinator_epoch: 9,
            };
            let batch = build_marker_batch(&marker, 1_700_000_000_000);
            let header = validate_batch(&batch).expect("CRC and layout are right");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (4_000, 3));
            assert_eq!(header.base_sequence, -1);
            assert_eq!(header.records_count, 1);
            assert_eq!(read_marker(&batch).unwrap(), Some(marker));
        }
    }

    #[test]
    fn a_data_batch_is_no_marker() {
        let batch = build_batch(
            &[NewRecord::keyed(Bytes::from_static(b"k"), None)],
            0,
            BatchCompression::None,
        )
        .unwrap();
        assert_eq!(read_marker(&batch).unwrap(), None);
    }
}

//! Record iteration inside a batch (decompressing when needed), for the
//! slower paths that look inside batches: timestamp lookups, compaction, tools.
//! The produce/fetch path never calls this.

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, None as Uncompressed, Snappy, Zstd};
use kafka_protocol::records::{Compression as KafkaCompression, RecordBatchDecoder};

pub use kafka_protocol::records::Record;

use super::{BatchError, BatchHeader};

/// The smallest encoded record: length, attributes, timestampDelta,
/// offsetDelta, key length, value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;

/// Decodes every record of one complete, already validated batch.
pub fn decode_records(batch: &[u8]) -> Result<Vec<Record>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let records_count = header.records_count as usize;
    // The decoder reserves room for recordsCount records before reading any.
    // recordsCount is whatever the producer wrote (the CRC only proves it was
    // not damaged), so check it against the bytes that are really there, or a
    // crafted batch asks for hundreds of GB and aborts the process.
    let mut buf = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(|records: &mut Bytes, compression: KafkaCompression| {
            let take = |d: &mut Bytes| Ok(std::mem::take(d));
            let records = match compression {
                KafkaCompression::None => Uncompressed::decompress(records, take)?,
                KafkaCompression::Gzip => Gzip::decompress(records, take)?,
                KafkaCompression::Snappy => Snappy::decompress(records, take)?,
                KafkaCompression::Lz4 => Lz4::decompress(records, take)?,
                KafkaCompression::Zstd => Zstd::decompress(records, take)?,
            };
            if records.len() / RECORD_BYTES_MIN < records_count {
                return Err(
                    BatchError::InvalidHeader("recordsCount exceeds the records' bytes").into(),
                );
            }
            Ok(records)
        }),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::testing::{
        encode_batch, encoded_batch, fix_crc, kafka_records, simple_batch, BatchSpec, TestRecord,
        ALL_COMPRESSIONS,
    };
    use crate::record::{patch_base_offset, patch_max_timestamp, validate_batch, Compression};

    #[test]
    fn decode_round_trip_for_every_codec() {
        for compression in ALL_COMPRESSIONS {
            let records = kafka_records(25, 40, 1_000);
            let mut batch = encoded_batch(&records, compression);
            let header = validate_batch(&batch).unwrap();
            assert_eq!(
                header.total_bytes(),
                batch.len(),
                "{compression:?}: one batch"
            );
            assert_eq!(header.compression(), compression);
            assert_eq!(header.records_count, 25);
            assert_eq!(header.last_offset_delta, 24);
            assert_eq!(header.max_timestamp, 1_024);
            patch_base_offset(&mut batch, 500);
            let decoded = decode_records(&batch).unwrap();
            assert_eq!(decoded.len(), records.len());
            for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, 500 + i as i64, "{compression:?}");
                assert_eq!(got.timestamp, want.timestamp);
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
            }
        }
    }

    #[test]
    fn decode_hand_built_batch() {
        let batch = encode_batch(&BatchSpec {
            base_offset: 10,
            base_timestamp: 50,
            records: vec![
                TestRecord {
                    timestamp_delta: 3,
                    key: None,
                    value: None,
                    headers: vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
                },
                TestRecord {
                    timestamp_delta: -2,
                    key: Some(b"key".to_vec()),
                    value: Some(vec![7; 300]),
                    headers: Vec::new(),
                },
            ],
            ..BatchSpec::default()
        });
        let records = decode_records(&batch).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].offset, records[0].timestamp), (10, 53));
        assert_eq!(records[0].key, None);
        assert_eq!(records[0].value, None);
        assert_eq!(records[0].headers.len(), 2);
        assert_eq!((records[1].offset, records[1].timestamp), (11, 48));
        assert_eq!(records[1].key.as_deref(), Some(&b"key"[..]));
        assert_eq!(records[1].value.as_deref(), Some(&[7u8; 300][..]));
    }

    #[test]
    fn decode_rejects_garbage_records() {
        let mut batch = simple_batch(3, 10, 0);
        let last = batch.len() - 1;
        batch.truncate(last - 5);
        let len = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&len.to_be_bytes());
        fix_crc(&mut batch);
        assert!(validate_batch(&batch).is_ok());
        assert!(decode_records(&batch).is_err());
        assert!(decode_records(&batch[..30]).is_err());
    }

    /// recordsCount is covered by the CRC but chosen by the producer: a huge
    /// count with a valid CRC must be an error, not a huge allocation.
    #[test]
    fn decode_rejects_record_count_larger_than_the_bytes() {
        for compression in ALL_COMPRESSIONS {
            for count in [i32::MAX, 1 << 28, 26] {
                let mut batch = encoded_batch(&kafka_records(25, 4, 0), compression);
                batch[57..61].copy_from_slice(&count.to_be_bytes());
                fix_crc(&mut batch);
                assert!(validate_batch(&batch).is_ok());
                assert!(decode_records(&batch).is_err(), "{compression:?} {count}");
            }
        }
        // The smallest possible records (7 bytes each) still decode.
        let batch = encode_batch(&BatchSpec {
            records: vec![
                TestRecord {
                    timestamp_delta: 0,
                    key: None,
                    value: None,
                    headers: Vec::new(),
                };
                9
            ],
            ..BatchSpec::default()
        });
        assert_eq!(batch.len(), 61 + 9 * 7);
        assert_eq!(decode_records(&batch).unwrap().len(), 9);
    }

    fn batch_with_timestamps(base_offset: i64, timestamps: &[i64], attributes: i16) -> Vec<u8> {
        encode_batch(&BatchSpec {
            base_offset,
            attributes,
            base_timestamp: timestamps[0],
            records: timestamps
                .iter()
                .map(|&t| TestRecord {
                    timestamp_delta: t - timestamps[0],
                    ..TestRecord::value(vec![1, 2, 3])
                })
                .collect(),
            ..BatchSpec::default()
        })
    }

    #[test]
    fn first_record_at_or_after_create_time() {
        let batch = batch_with_timestamps(100, &[10, 30, 20, 40], 0);
        assert_eq!(first_record_at_or_after(&batch, 0), Ok(Some((100, 10))));
        assert_eq!(first_record_at_or_after(&batch, 10), Ok(Some((100, 10))));
        assert_eq!(first_record_at_or_after(&batch, 11), Ok(Some((101, 30))));
        // In offset order, not the smallest timestamp >= target.
        assert_eq!(first_record_at_or_after(&batch, 20), Ok(Some((101, 30))));
        assert_eq!(first_record_at_or_after(&batch, 31), Ok(Some((103, 40))));
        assert_eq!(first_record_at_or_after(&batch, 40), Ok(Some((103, 40))));
        assert_eq!(first_record_at_or_after(&batch, 41), Ok(None));
        assert!(first_record_at_or_after(&batch[..20], 0).is_err());
    }

    #[test]
    fn first_record_at_or_after_log_append_time() {
        let mut batch = batch_with_timestamps(7, &[10, 30, 20], 0x08);
        patch_max_timestamp(&mut batch, 5_000);
        assert_eq!(first_record_at_or_after(&batch, 0), Ok(Some((7, 5_000))));
        assert_eq!(
            first_record_at_or_after(&batch, 5_000),
            Ok(Some((7, 5_000)))
        );
        assert_eq!(first_record_at_or_after(&batch, 5_001), Ok(None));
    }

    #[test]
    fn first_record_at_or_after_compressed() {
        for compression in [Compression::Gzip, Compression::Zstd, Compression::Lz4] {
            let mut batch = encoded_batch(&kafka_records(10, 8, 1_000), compression);
            patch_base_offset(&mut batch, 40);
            assert_eq!(
                first_record_at_or_after(&batch, 1_004),
                Ok(Some((44, 1_004)))
            );
            assert_eq!(first_record_at_or_after(&batch, 1_010), Ok(None));
        }
    }
}

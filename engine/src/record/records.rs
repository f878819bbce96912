//! Record iteration inside a batch (decompressing when needed), for the
//! slower paths that look inside batches: timestamp lookups, compaction, tools.
//! The produce/fetch path never calls this.

use bytes::Bytes;
use kafka_protocol::records::{Compression as KafkaCompression, RecordBatchDecoder};

pub use kafka_protocol::records::Record;

use super::{decompress_records, BatchError, BatchHeader, DECOMPRESSED_RECORDS_BYTES_MAX};

/// Reads a zig-zag varint of at most `max_bytes` bytes (5 for an int32, 10
/// for an int64).
pub(crate) fn read_varint(buf: &[u8], position: &mut usize, max_bytes: usize) -> Option<i64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let byte = *buf.get(*position)?;
        *position += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// Whether `records` (uncompressed) holds `records_count` length-framed
/// records, none of which claims more headers than its bytes can hold.
///
/// The decoder allocates for recordsCount records, and for each record's
/// header count, before reading them. Both numbers are whatever the producer
/// wrote (the CRC only proves they were not damaged), so a crafted batch could
/// ask for hundreds of GB and abort the process. This walk bounds both by the
/// bytes really present, without allocating.
fn records_fit_their_bytes(records: &[u8], records_count: usize) -> bool {
    let mut position = 0usize;
    for _ in 0..records_count {
        let Some(length) = read_varint(records, &mut position, 5) else {
            return false;
        };
        let Ok(length) = usize::try_from(length) else {
            return false;
        };
        let Some(record) = records.get(position..position.saturating_add(length)) else {
            return false;
        };
        position += length;
        // attributes, timestampDelta, offsetDelta, key, value, header count.
        let mut at = 1usize;
        if read_varint(record, &mut at, 10).is_none() || read_varint(record, &mut at, 5).is_none() {
            return false;
        }
        for _key_then_value in 0..2 {
            let Some(length) = read_varint(record, &mut at, 5) else {
                return false;
            };
            if length > 0 {
                at = at.saturating_add(length as usize);
            }
        }
        let Some(headers) = read_varint(record, &mut at, 5) else {
            return false;
        };
        // A header is at least two bytes: key length and value length.
        if headers < 0 || headers as usize > record.len().saturating_sub(at) / 2 {
            return false;
        }
    }
    true
}

/// Decodes every record of one complete, already validated batch.
pub fn decode_records(batch: &[u8]) -> Result<Vec<Record>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let records_count = header.records_count as usize;
    let mut buf = Bytes::copy_from_slice(batch);
    let compression = header.compression();
    let set = RecordBatchDecoder::decode_with_custom_compression(
        &mut buf,
        Some(|records: &mut Bytes, _: KafkaCompression| {
            let records = Bytes::from(decompress_records(
                compression,
                records,
                DECOMPRESSED_RECORDS_BYTES_MAX,
            )?);
            if !records_fit_their_bytes(&records, records_count) {
                return Err(BatchError::InvalidHeader("records do not fit their bytes").into());
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
        encode_batch, encoded_batch, fix_crc, kafka_records, put_varint, put_varlong, simple_batch,
        BatchSpec, TestRecord, ALL_COMPRESSIONS,
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

    /// A record's header count is also allocated for before it is read.
    #[test]
    fn decode_rejects_header_count_larger_than_the_bytes() {
        for (headers, ok) in [(i32::MAX, false), (1 << 20, false), (2, false), (1, true)] {
            let mut batch = encode_batch(&BatchSpec {
                records: vec![],
                ..BatchSpec::default()
            });
            batch[57..61].copy_from_slice(&1i32.to_be_bytes());
            // attributes, timestampDelta 0, offsetDelta 0, null key, null value,
            // the header count, then one header (key "", null value).
            let mut record = vec![0u8, 0, 0, 1, 1];
            put_varint(&mut record, headers);
            record.extend_from_slice(&[0, 1]);
            put_varint(&mut batch, record.len() as i32);
            batch.extend_from_slice(&record);
            let length = (batch.len() - 12) as i32;
            batch[8..12].copy_from_slice(&length.to_be_bytes());
            fix_crc(&mut batch);
            assert!(validate_batch(&batch).is_ok());
            assert_eq!(decode_records(&batch).is_ok(), ok, "{headers} headers");
        }
    }

    #[test]
    fn varints() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i32::MIN as i64,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value as i32);
            let mut position = 0;
            assert_eq!(read_varint(&buf, &mut position, 5), Some(value));
            assert_eq!(position, buf.len());
        }
        for value in [i64::MAX, i64::MIN, 1 << 40] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, value);
            let mut position = 0;
            assert_eq!(read_varint(&buf, &mut position, 10), Some(value));
        }
        assert_eq!(read_varint(&[0x80; 5], &mut 0, 5), None);
        assert_eq!(read_varint(&[0x80], &mut 0, 5), None);
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

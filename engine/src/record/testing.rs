//! Test-only builders for RecordBatch v2 bytes: a small hand-written encoder
//! (every header field under the test's control, records uncompressed or
//! compressed with `kafka_protocol`'s codecs) and a wrapper over
//! `kafka_protocol`'s batch encoder. Every test in the crate builds its
//! batches here.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{compute_crc, Compression};

/// One record of a hand-built batch. Its offset delta is its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub timestamp_delta: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl TestRecord {
    pub fn value(value: Vec<u8>) -> TestRecord {
        TestRecord {
            timestamp_delta: 0,
            key: None,
            value: Some(value),
            headers: Vec::new(),
        }
    }

    /// A keyed record; a `None` value is a tombstone.
    pub fn keyed(key: &[u8], value: Option<&[u8]>, timestamp_delta: i64) -> TestRecord {
        TestRecord {
            timestamp_delta,
            key: Some(key.to_vec()),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }
}

/// Every header field of a hand-built, uncompressed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpec {
    pub base_offset: i64,
    pub leader_epoch: i32,
    pub attributes: i16,
    pub base_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<TestRecord>,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            base_offset: 0,
            leader_epoch: -1,
            attributes: 0,
            base_timestamp: 1_700_000_000_000,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: vec![TestRecord::value(b"v".to_vec())],
        }
    }
}

pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned_varint(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &Option<Vec<u8>>) {
    match bytes {
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

fn encode_record(out: &mut Vec<u8>, record: &TestRecord, offset_delta: i32) {
    let mut body = vec![0u8]; // attributes
    put_varlong(&mut body, record.timestamp_delta);
    put_varint(&mut body, offset_delta);
    put_bytes(&mut body, &record.key);
    put_bytes(&mut body, &record.value);
    put_varint(&mut body, record.headers.len() as i32);
    for (key, value) in &record.headers {
        put_bytes(&mut body, &Some(key.clone()));
        put_bytes(&mut body, value);
    }
    put_varint(out, body.len() as i32);
    out.extend_from_slice(&body);
}

/// Encodes an uncompressed batch with a correct length, lastOffsetDelta,
/// maxTimestamp, recordsCount and CRC. The codec bits of `spec.attributes`
/// are written as they are, but the records stay uncompressed.
pub fn encode_batch(spec: &BatchSpec) -> Vec<u8> {
    encode_batch_as(spec, Compression::None)
}

/// Like `encode_batch`, but the records are compressed with the codec in
/// `spec.attributes` (bits 0-2), as a producer sends them: every header
/// field stays under the test's control, whatever the codec.
pub fn encode_compressed_batch(spec: &BatchSpec) -> Vec<u8> {
    let codec = Compression::from_attributes(spec.attributes).expect("a known codec");
    encode_batch_as(spec, codec)
}

fn compress(records: &[u8], codec: Compression) -> Vec<u8> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let write = |out: &mut BytesMut| {
        out.extend_from_slice(records);
        Ok(())
    };
    let mut out = BytesMut::new();
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => Gzip::compress(&mut out, write).expect("gzip"),
        Compression::Snappy => Snappy::compress(&mut out, write).expect("snappy"),
        Compression::Lz4 => Lz4::compress(&mut out, write).expect("lz4"),
        Compression::Zstd => Zstd::compress(&mut out, write).expect("zstd"),
    }
    out.to_vec()
}

fn encode_batch_as(spec: &BatchSpec, codec: Compression) -> Vec<u8> {
    let count = spec.records.len();
    let last_offset_delta = count.saturating_sub(1) as i32;
    let max_timestamp = spec.base_timestamp
        + spec
            .records
            .iter()
            .map(|r| r.timestamp_delta)
            .max()
            .unwrap_or(0);
    let mut out = Vec::new();
    out.extend_from_slice(&spec.base_offset.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // batchLength, filled below
    out.extend_from_slice(&spec.leader_epoch.to_be_bytes());
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    out.extend_from_slice(&spec.attributes.to_be_bytes());
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&spec.base_timestamp.to_be_bytes());
    out.extend_from_slice(&max_timestamp.to_be_bytes());
    out.extend_from_slice(&spec.producer_id.to_be_bytes());
    out.extend_from_slice(&spec.producer_epoch.to_be_bytes());
    out.extend_from_slice(&spec.base_sequence.to_be_bytes());
    out.extend_from_slice(&(count as i32).to_be_bytes());
    assert_eq!(out.len(), super::BATCH_HEADER_BYTES);
    let mut records = Vec::new();
    for (i, record) in spec.records.iter().enumerate() {
        encode_record(&mut records, record, i as i32);
    }
    out.extend_from_slice(&compress(&records, codec));
    let batch_length = (out.len() - super::LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    fix_crc(&mut out);
    out
}

/// Recomputes the CRC of a complete batch after a test edited covered bytes.
pub fn fix_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// An uncompressed batch of `count` records of `value_bytes` bytes each, with
/// timestamps `base_timestamp + i`.
pub fn simple_batch(count: usize, value_bytes: usize, base_timestamp: i64) -> Vec<u8> {
    encode_batch(&BatchSpec {
        base_timestamp,
        records: (0..count)
            .map(|i| TestRecord {
                timestamp_delta: i as i64,
                key: Some(format!("k{i}").into_bytes()),
                value: Some(vec![(i % 251) as u8; value_bytes]),
                headers: Vec::new(),
            })
            .collect(),
        ..BatchSpec::default()
    })
}

/// `kafka_protocol` records with offsets 0.. and timestamps `base_timestamp + i`.
pub fn kafka_records(count: usize, value_bytes: usize, base_timestamp: i64) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes.
            sequence: i as i32,
            timestamp: base_timestamp + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_bytes])),
            headers: Default::default(),
        })
        .collect()
}

/// One batch of `records` encoded (and compressed) by `kafka_protocol`.
pub fn encoded_batch(records: &[Record], compression: Compression) -> Vec<u8> {
    let compression = match compression {
        Compression::None => KafkaCompression::None,
        Compression::Gzip => KafkaCompression::Gzip,
        Compression::Snappy => KafkaCompression::Snappy,
        Compression::Lz4 => KafkaCompression::Lz4,
        Compression::Zstd => KafkaCompression::Zstd,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    buf.to_vec()
}

/// The attribute bits (0-2) that name `compression`.
pub fn compression_attributes(compression: Compression) -> i16 {
    match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

pub const ALL_COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

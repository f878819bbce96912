//! Client-side record batches: building a producer batch (with headers and
//! compression, through kafka-protocol's encoder) and walking the batches of
//! a fetched record set (through engine::record).

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use engine::protocol::kafka_protocol::protocol::StrBytes;
use engine::protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use engine::record::{decode_records, BatchHeader};

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

pub fn parse_compression(name: &str) -> anyhow::Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            anyhow::bail!("unknown compression '{other}' — use none, gzip, snappy, lz4 or zstd")
        }
    })
}

/// One RecordBatch v2 holding `records` (base offset 0, no producer id), all
/// stamped `timestamp_ms`.
pub fn build_producer_batch(
    records: &[OutRecord],
    timestamp_ms: i64,
    compression: Compression,
) -> anyhow::Result<Bytes> {
    assert!(!records.is_empty());
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut record = Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch whenever offset - sequence
                // changes: keep it constant so that the records share one
                // batch whose baseSequence is -1 (no idempotent producer).
                sequence: i as i32 - 1,
                timestamp: timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: Default::default(),
            };
            for (k, v) in &r.headers {
                record
                    .headers
                    .insert(StrBytes::from_string(k.clone()), v.clone());
            }
            record
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
    .context("cannot encode the record batch")?;
    Ok(buf.freeze())
}

/// The records of a fetched record set at or after `offset_min`. A partial
/// batch at the end (the broker cuts at max bytes) is ignored; control
/// records (transaction markers) are skipped. Also returns the offset after
/// the last whole batch.
pub fn fetched_records(
    record_set: &[u8],
    offset_min: i64,
) -> anyhow::Result<(Vec<Record>, Option<i64>)> {
    let mut out = Vec::new();
    let mut next = None;
    let mut at = 0usize;
    while record_set.len() - at >= 61 {
        let header = BatchHeader::parse(&record_set[at..]).context("corrupt record batch")?;
        let end = at + header.total_bytes();
        if end > record_set.len() {
            break;
        }
        next = Some(header.next_offset());
        if !header.is_control() {
            for record in decode_records(&record_set[at..end]).context("corrupt record batch")? {
                if record.offset >= offset_min {
                    out.push(record);
                }
            }
        }
        at = end;
    }
    Ok((out, next))
}

//! Client-side record batches: building a producer batch (with headers and
//! compression, through kafka-protocol's encoder) and walking the batches of
//! a fetched record set (through engine::record).

use anyhow::Context;
use bytes::Bytes;
use engine::protocol::kafka_protocol::records::{Compression, Record};
use engine::record::{build_batch, decode_records, BatchHeader, NewRecord};

/// One record to produce.
pub type OutRecord = NewRecord;

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
    let batch = build_batch(records, timestamp_ms, compression)
        .context("cannot encode the record batch")?;
    Ok(Bytes::from(batch))
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

//! The records blob of a batch through its codec: bounded decompression, and
//! recompression of a whole batch to another codec (topic-level
//! `compression.type`).
//!
//! A compressed blob is whatever the producer sent: its CRC proves only that
//! it was not damaged on the way. A few kilobytes of gzip or zstd can expand
//! to gigabytes, so every decompression here stops at a byte limit and fails
//! the batch instead of growing without bound.

use std::io::Read;

use bytes::{BufMut as _, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Snappy, Zstd};

use super::batch::{
    ATTR_COMPRESSION_MASK, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES, OFFSET_ATTRIBUTES,
    OFFSET_BATCH_LENGTH, OFFSET_CRC,
};
use super::{compute_crc, validate_batch, BatchError, Compression};

/// The most bytes the records of one batch may take once decompressed. Kafka
/// has no such bound; 64 MiB is 64 times the default `max.message.bytes`, far
/// above what a producer's batch holds, and bounds what one crafted batch can
/// make the broker allocate.
pub const DECOMPRESSED_RECORDS_BYTES_MAX: usize = 64 << 20;

/// The snappy-java ("xerial") stream header Kafka's Java producer writes
/// before its blocks: magic, version 1, compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

fn too_big() -> BatchError {
    BatchError::InvalidHeader("records decompress to more than the broker allows")
}

fn corrupt() -> BatchError {
    BatchError::InvalidHeader("records do not decompress")
}

/// Decompresses a batch's records blob, failing if it would exceed
/// `limit_bytes`.
pub fn decompress_records(
    compression: Compression,
    compressed: &[u8],
    limit_bytes: usize,
) -> Result<Vec<u8>, BatchError> {
    let read_bounded = |mut reader: Box<dyn Read + '_>| -> Result<Vec<u8>, BatchError> {
        let mut out = Vec::new();
        // One byte past the limit tells "exactly at the limit" from "over".
        reader
            .by_ref()
            .take(limit_bytes as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| corrupt())?;
        if out.len() > limit_bytes {
            return Err(too_big());
        }
        Ok(out)
    };
    match compression {
        Compression::None if compressed.len() > limit_bytes => Err(too_big()),
        Compression::None => Ok(compressed.to_vec()),
        // Java's GZIPInputStream reads concatenated members; so does this.
        Compression::Gzip => read_bounded(Box::new(flate2::read::MultiGzDecoder::new(compressed))),
        Compression::Lz4 => read_bounded(Box::new(
            lz4::Decoder::new(compressed).map_err(|_| corrupt())?,
        )),
        Compression::Zstd => read_bounded(Box::new(
            zstd::stream::read::Decoder::with_buffer(compressed).map_err(|_| corrupt())?,
        )),
        Compression::Snappy => decompress_snappy(compressed, limit_bytes),
    }
}

/// Snappy as Kafka's producers send it: raw snappy (librdkafka, Go clients)
/// or the xerial framing of snappy-java (the Java client): the header, then
/// blocks of a 4-byte big-endian length and raw snappy. Each block states its
/// decompressed length up front, so the bound is checked before allocating.
fn decompress_snappy(compressed: &[u8], limit_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let mut decompress_block = |block: &[u8]| -> Result<(), BatchError> {
        let length = snap::raw::decompress_len(block).map_err(|_| corrupt())?;
        if length > limit_bytes - out.len() {
            return Err(too_big());
        }
        let start = out.len();
        out.resize(start + length, 0);
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|_| corrupt())?;
        out.truncate(start + written);
        Ok(())
    };
    match compressed.strip_prefix(XERIAL_HEADER.as_slice()) {
        None => decompress_block(compressed)?,
        Some(mut blocks) => {
            while !blocks.is_empty() {
                let (length, rest) = blocks.split_first_chunk::<4>().ok_or_else(corrupt)?;
                let length = u32::from_be_bytes(*length) as usize;
                let block = rest.get(..length).ok_or_else(corrupt)?;
                decompress_block(block)?;
                blocks = &rest[length..];
            }
        }
    }
    Ok(out)
}

/// Compresses a records blob with `compression`, as Kafka's clients would.
pub fn compress_records(compression: Compression, records: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(records.len() / 2 + 64);
    let fill = |buf: &mut BytesMut| {
        buf.put_slice(records);
        Ok(())
    };
    let compressed = match compression {
        Compression::None => {
            out.put_slice(records);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(&mut out, fill).map_err(|e| e.to_string()),
        Compression::Snappy => Snappy::compress(&mut out, fill).map_err(|e| e.to_string()),
        Compression::Lz4 => compress_lz4(&mut out, records).map_err(|e| e.to_string()),
        Compression::Zstd => Zstd::compress(&mut out, fill).map_err(|e| e.to_string()),
    };
    // The codecs fail only on I/O errors of their output, a memory buffer.
    compressed.expect("compressing into memory does not fail");
    out.to_vec()
}

/// LZ4 frames at lz4's fast level, as librdkafka writes them by default.
/// (kafka-protocol's Lz4 uses level 4, which is LZ4HC: recompressing
/// 40 MB/s of 1 KiB records to it took 57% of a core against 32% for zstd.)
fn compress_lz4(out: &mut BytesMut, records: &[u8]) -> std::io::Result<()> {
    let mut encoder = lz4::EncoderBuilder::new()
        .level(0)
        .block_mode(lz4::BlockMode::Independent)
        .build(out.writer())?;
    std::io::Write::write_all(&mut encoder, records)?;
    encoder.finish().1?;
    Ok(())
}

/// One validated batch with its records recompressed as `to`, every other
/// field kept (offsets and their deltas, timestamps, producer id, epoch and
/// sequence, the transactional flag, the records byte for byte), with a new
/// CRC. None when the batch already uses `to`.
///
/// The records are not decoded: a v2 records blob is the same concatenation
/// of length-framed records under every codec, so only the blob changes.
pub fn recompress_batch(batch: &[u8], to: Compression) -> Result<Option<Vec<u8>>, BatchError> {
    let header = validate_batch(batch)?;
    if header.compression() == to {
        return Ok(None);
    }
    let batch = &batch[..header.total_bytes()];
    let records = decompress_records(
        header.compression(),
        &batch[BATCH_HEADER_BYTES..],
        DECOMPRESSED_RECORDS_BYTES_MAX,
    )?;
    let compressed = compress_records(to, &records);
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + compressed.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&compressed);
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD_BYTES)
        .map_err(|_| BatchError::InvalidHeader("recompressed batch exceeds 2 GiB"))?;
    out[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | to as i16;
    out[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(validate_batch(&out).is_ok_and(|h| h.compression() == to));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::testing::{encoded_batch, kafka_records, ALL_COMPRESSIONS};
    use crate::record::{decode_records, BatchHeader};

    #[test]
    fn recompression_keeps_every_record_and_field_for_every_pair_of_codecs() {
        for from in ALL_COMPRESSIONS {
            for to in ALL_COMPRESSIONS {
                let records = kafka_records(30, 50, 1_000);
                let original = encoded_batch(&records, from);
                let before = validate_batch(&original).unwrap();
                let out = recompress_batch(&original, to).unwrap();
                if from == to {
                    assert!(out.is_none(), "{from:?}: nothing to do");
                    continue;
                }
                let out = out.unwrap();
                let after = validate_batch(&out).unwrap();
                assert_eq!(after.compression(), to, "{from:?} -> {to:?}");
                assert_eq!(after.total_bytes(), out.len());
                let same = |h: &BatchHeader| {
                    (
                        h.base_offset,
                        h.last_offset_delta,
                        h.base_timestamp,
                        h.max_timestamp,
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        h.records_count,
                        h.attributes & !ATTR_COMPRESSION_MASK,
                    )
                };
                assert_eq!(same(&before), same(&after), "{from:?} -> {to:?}");
                assert_eq!(
                    decode_records(&original).unwrap(),
                    decode_records(&out).unwrap(),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn a_corrupt_batch_is_not_given_a_fresh_crc() {
        let mut batch = encoded_batch(&kafka_records(3, 10, 0), Compression::None);
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(matches!(
            recompress_batch(&batch, Compression::Zstd),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn decompression_stops_at_its_limit_for_every_codec() {
        let zeros = vec![0u8; 1 << 20];
        for codec in ALL_COMPRESSIONS {
            let compressed = compress_records(codec, &zeros);
            assert_eq!(
                decompress_records(codec, &compressed, 1 << 20).unwrap(),
                zeros,
                "{codec:?}: exactly at the limit"
            );
            assert_eq!(
                decompress_records(codec, &compressed, (1 << 20) - 1),
                Err(too_big()),
                "{codec:?}: one byte over"
            );
        }
    }

    #[test]
    fn raw_snappy_without_the_xerial_header_decompresses() {
        let records = b"librdkafka sends raw snappy blocks".repeat(20);
        let raw = snap::raw::Encoder::new().compress_vec(&records).unwrap();
        assert_eq!(
            decompress_records(Compression::Snappy, &raw, 1 << 20).unwrap(),
            records
        );
    }

    #[test]
    fn garbage_fails_to_decompress_without_panicking() {
        for codec in ALL_COMPRESSIONS {
            for garbage in [
                &b""[..],
                b"\x00",
                b"\xff\xff\xff\xff\xff\xff",
                XERIAL_HEADER,
            ] {
                let _ = decompress_records(codec, garbage, 1 << 20);
            }
        }
        let mut truncated = XERIAL_HEADER.to_vec();
        truncated.extend_from_slice(&100u32.to_be_bytes());
        truncated.extend_from_slice(b"short");
        assert!(decompress_records(Compression::Snappy, &truncated, 1 << 20).is_err());
    }
}

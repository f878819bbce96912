//! Framing of the metadata log and snapshot files: each record is
//! `[u32 length][u32 crc32c][rkyv bytes]`, big-endian. A torn or corrupt
//! frame ends the valid prefix.

use super::MetadataRecord;

pub const FRAME_HEADER_BYTES: usize = 8;
/// Bound on one metadata record; a larger length prefix is corruption.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 64 << 20;

pub fn encode_frame(record: &MetadataRecord) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("in-memory encode");
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrames {
    pub records: Vec<MetadataRecord>,
    /// Bytes of whole valid frames at the start of the input.
    pub valid_bytes: usize,
    /// Why decoding stopped before the end, if it did.
    pub stopped: Option<String>,
}

pub fn decode_frames(buf: &[u8]) -> DecodedFrames {
    let mut records = Vec::new();
    let mut position = 0usize;
    let stopped = loop {
        if position == buf.len() {
            break None;
        }
        if buf.len() - position < FRAME_HEADER_BYTES {
            break Some(format!("torn frame header at byte {position}"));
        }
        let length =
            u32::from_be_bytes(buf[position..position + 4].try_into().expect("4")) as usize;
        let crc = u32::from_be_bytes(buf[position + 4..position + 8].try_into().expect("4"));
        if length > FRAME_PAYLOAD_BYTES_MAX {
            break Some(format!(
                "frame length {length} at byte {position} is too large"
            ));
        }
        let start = position + FRAME_HEADER_BYTES;
        if buf.len() - start < length {
            break Some(format!("torn frame at byte {position}"));
        }
        let payload = &buf[start..start + length];
        if crc32c::crc32c(payload) != crc {
            break Some(format!("frame CRC mismatch at byte {position}"));
        }
        // rkyv wants aligned input; file bytes are not, so copy the payload.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(length);
        aligned.extend_from_slice(payload);
        match rkyv::from_bytes::<MetadataRecord, rkyv::rancor::Error>(&aligned) {
            Ok(record) => records.push(record),
            Err(e) => break Some(format!("frame at byte {position} does not decode: {e}")),
        }
        position = start + length;
    };
    DecodedFrames {
        records,
        valid_bytes: position,
        stopped,
    }
}

//! Framing of the metadata log and snapshot files: each record is
//! `[u32 length][u32 crc32c][rkyv bytes]`, big-endian. A torn or corrupt
//! frame ends the valid prefix.

use super::MetadataRecord;

pub const FRAME_HEADER_BYTES: usize = 8;
/// Bound on one metadata record; a larger length prefix is corruption.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 64 << 20;

pub fn encode_frame(record: &MetadataRecord) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(record).expect("in-memory encode");
    frame_payload(&payload)
}

/// A batch of records as one quorum entry's data: their frames, back to
/// back. A batch commits and applies whole.
pub fn encode_records(records: &[MetadataRecord]) -> Vec<u8> {
    records.iter().flat_map(encode_frame).collect()
}

/// An entry's data back to its records; any damage refuses the whole batch
/// (raft checked nothing inside it).
pub fn decode_records(data: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    let decoded = decode_frames(data);
    match decoded.stopped {
        None => Ok(decoded.records),
        Some(reason) => Err(reason),
    }
}

/// `payload` framed: `[u32 length][u32 crc32c][payload]`. The metadata
/// records and the quorum's log file (`raft::log_file`) share this framing.
pub fn frame_payload(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= FRAME_PAYLOAD_BYTES_MAX, "frame too large");
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
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

/// The payloads of the whole frames at the start of `buf`, each with the
/// byte it starts at, until the end or the first torn or corrupt frame.
pub struct SplitFrames<'a> {
    pub payloads: Vec<(usize, &'a [u8])>,
    /// Bytes of whole valid frames at the start of the input.
    pub valid_bytes: usize,
    /// Why splitting stopped before the end, if it did.
    pub stopped: Option<String>,
}

pub fn split_frames(buf: &[u8]) -> SplitFrames<'_> {
    let mut payloads = Vec::new();
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
        payloads.push((position, payload));
        position = start + length;
    };
    SplitFrames {
        payloads,
        valid_bytes: position,
        stopped,
    }
}

pub fn decode_frames(buf: &[u8]) -> DecodedFrames {
    let split = split_frames(buf);
    let mut records = Vec::with_capacity(split.payloads.len());
    for (position, payload) in split.payloads {
        // rkyv wants aligned input; file bytes are not, so copy the payload.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        match rkyv::from_bytes::<MetadataRecord, rkyv::rancor::Error>(&aligned) {
            Ok(record) => records.push(record),
            Err(e) => {
                return DecodedFrames {
                    records,
                    valid_bytes: position,
                    stopped: Some(format!("frame at byte {position} does not decode: {e}")),
                }
            }
        }
    }
    DecodedFrames {
        records,
        valid_bytes: split.valid_bytes,
        stopped: split.stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::CreateTopic {
                name: "orders".into(),
                topic_id: [7; 16],
                partition_shards: vec![0, 1, 0, 1],
                configs: vec![("retention.ms".into(), "60000".into())],
            },
            MetadataRecord::DeleteTopic { name: "old".into() },
            MetadataRecord::CreateTopic {
                name: "e".into(),
                topic_id: [0; 16],
                partition_shards: vec![],
                configs: vec![],
            },
        ]
    }

    fn log_bytes(records: &[MetadataRecord]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for record in records {
            out.extend_from_slice(&encode_frame(record));
            ends.push(out.len());
        }
        (out, ends)
    }

    #[test]
    fn frame_layout() {
        let frame = encode_frame(&records()[1]);
        let length = u32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - FRAME_HEADER_BYTES);
        let crc = u32::from_be_bytes(frame[4..8].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&frame[8..]));
    }

    #[test]
    fn round_trip() {
        let (bytes, _) = log_bytes(&records());
        let decoded = decode_frames(&bytes);
        assert_eq!(decoded.records, records());
        assert_eq!(decoded.valid_bytes, bytes.len());
        assert_eq!(decoded.stopped, None);
        assert_eq!(
            decode_frames(&[]),
            DecodedFrames {
                records: vec![],
                valid_bytes: 0,
                stopped: None
            }
        );
    }

    #[test]
    fn oversized_length_is_corruption() {
        let (mut bytes, ends) = log_bytes(&records());
        let second = ends[0];
        bytes[second..second + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let decoded = decode_frames(&bytes);
        assert_eq!(decoded.records, records()[..1]);
        assert_eq!(decoded.valid_bytes, second);
        assert!(decoded.stopped.unwrap().contains("too large"));
    }

    #[test]
    fn zero_filled_tail_stops_at_its_start() {
        let (mut bytes, _) = log_bytes(&records());
        let len = bytes.len();
        bytes.resize(len + 4096, 0);
        let decoded = decode_frames(&bytes);
        assert_eq!(decoded.records, records());
        assert_eq!(decoded.valid_bytes, len);
        assert!(decoded.stopped.is_some());
    }

    #[test]
    fn valid_crc_but_not_a_record() {
        let payload = b"definitely not rkyv".to_vec();
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        frame.extend_from_slice(&payload);
        let decoded = decode_frames(&frame);
        assert!(decoded.records.is_empty());
        assert_eq!(decoded.valid_bytes, 0);
        assert!(decoded.stopped.unwrap().contains("does not decode"));
    }

    /// Frames of every record kind, as the broker wrote them before the
    /// cluster records existed (hex, one frame each). They must decode to
    /// the same records forever: data dirs hold them.
    const FRAMES_WRITTEN_BEFORE_CLUSTER_RECORDS: [&str; 5] = [
        "000000604291222b000000000100000002000000636c65616e75702e706f6c69637900008e000000f0ffffff636f6d70616374ff00000000000000006f7264657273ffff07070707070707070707070707070707b4ffffff03000000c8ffffff0100000000000000",
        "00000030d3612288010000006f6c64ffffffffff000000000000000000000000000000000000000000000000000000000000000000000000",
        "000000509ee3caf5726574656e74696f6e2e6d738c000000f4ffffff31303030ffffffff00000000020000006f7264657273ffffe0ffffff0100000000000000000000000000000000000000000000000000000000000000",
        "00000038e1efdd900100000000000000030000006f7264657273ffffecffffff0100000000000000000000000000000000000000000000000000000000000000",
        "00000030df0428e8040000000000000088130000000000000000000000000000000000000000000000000000000000000000000000000000",
    ];

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn frames_from_older_brokers_still_decode() {
        let expected = vec![
            MetadataRecord::CreateTopic {
                name: "orders".into(),
                topic_id: [7; 16],
                partition_shards: vec![0, 1, 2],
                configs: vec![("cleanup.policy".into(), "compact".into())],
            },
            MetadataRecord::DeleteTopic { name: "old".into() },
            MetadataRecord::SetTopicConfigs {
                name: "orders".into(),
                configs: vec![("retention.ms".into(), "1000".into())],
            },
            MetadataRecord::AddPartitions {
                name: "orders".into(),
                partition_shards: vec![1],
            },
            MetadataRecord::ReserveProducerIds { end: 5000 },
        ];
        let bytes: Vec<u8> = FRAMES_WRITTEN_BEFORE_CLUSTER_RECORDS
            .iter()
            .flat_map(|hex| from_hex(hex))
            .collect();
        let decoded = decode_frames(&bytes);
        assert_eq!(decoded.stopped, None);
        assert_eq!(decoded.records, expected);
        // And today's encoder still writes them byte for byte.
        for (record, hex) in expected.iter().zip(FRAMES_WRITTEN_BEFORE_CLUSTER_RECORDS) {
            assert_eq!(encode_frame(record), from_hex(hex), "{record:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn torn_log_keeps_whole_frames(cut in any::<prop::sample::Index>()) {
            let (bytes, ends) = log_bytes(&records());
            let cut = cut.index(bytes.len());
            let decoded = decode_frames(&bytes[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(&decoded.records[..], &records()[..whole]);
            let valid = if whole == 0 { 0 } else { ends[whole - 1] };
            prop_assert_eq!(decoded.valid_bytes, valid);
            prop_assert_eq!(decoded.stopped.is_none(), valid == cut);
        }

        #[test]
        fn flipped_byte_keeps_the_prefix_before_it(
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let (mut bytes, ends) = log_bytes(&records());
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
            let decoded = decode_frames(&bytes);
            let damaged = ends.iter().position(|&e| at < e).unwrap();
            let valid = if damaged == 0 { 0 } else { ends[damaged - 1] };
            prop_assert_eq!(&decoded.records[..], &records()[..damaged]);
            prop_assert_eq!(decoded.valid_bytes, valid);
            prop_assert!(decoded.stopped.is_some());
        }

        #[test]
        fn arbitrary_records_round_trip(
            topics in prop::collection::vec(
                ("[a-z0-9._-]{1,40}", any::<[u8; 16]>(), prop::collection::vec(0u32..64, 0..50),
                 prop::collection::vec(("[a-z.]{1,20}", ".{0,20}"), 0..5), any::<bool>()),
                0..10,
            ),
        ) {
            let records: Vec<MetadataRecord> = topics
                .into_iter()
                .map(|(name, topic_id, partition_shards, configs, delete)| {
                    if delete {
                        MetadataRecord::DeleteTopic { name }
                    } else {
                        MetadataRecord::CreateTopic { name, topic_id, partition_shards, configs }
                    }
                })
                .collect();
            let (bytes, _) = log_bytes(&records);
            let decoded = decode_frames(&bytes);
            prop_assert_eq!(decoded.records, records);
            prop_assert_eq!(decoded.valid_bytes, bytes.len());
            prop_assert_eq!(decoded.stopped, None);
        }
    }
}

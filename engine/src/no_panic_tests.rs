//! Property: no decoder panics on arbitrary input. Inputs are random bytes
//! and valid batches/frames with random damage, some with the CRC fixed up so
//! that the damage reaches the code behind the CRC check.

use proptest::prelude::*;

use crate::log::{scan_into_segment, select_batches, OffsetIndex, Segment, TimeIndex};
use crate::metadata::{decode_frames, encode_frame, MetadataRecord};
use crate::protocol::{decode_legacy_produce, parse_frame_size};
use crate::record::testing::{
    encoded_batch, fix_crc, kafka_records, simple_batch, ALL_COMPRESSIONS,
};
use crate::record::{
    decode_records, first_record_at_or_after, validate_batch, validate_record_set, BatchHeader,
    BATCH_HEADER_BYTES,
};

fn exercise(bytes: &[u8], target: i64, max_bytes: usize) {
    if let Ok(header) = BatchHeader::parse(bytes) {
        let _ = (
            header.last_offset(),
            header.next_offset(),
            header.total_bytes(),
        );
        let _ = header.compression();
    }
    if validate_batch(bytes).is_ok() {
        let _ = decode_records(bytes);
        let _ = first_record_at_or_after(bytes, target);
    }
    if let Ok(spans) = validate_record_set(bytes) {
        for span in spans {
            assert!(span.range.end <= bytes.len());
        }
    }
    let _ = select_batches(bytes, target, max_bytes);
    let mut segment = Segment::new(0);
    let outcome = scan_into_segment(bytes, &mut segment, 64, 0);
    assert!(outcome.valid_bytes <= bytes.len());
    assert_eq!(segment.size_bytes, outcome.valid_bytes as u64);
    let decoded = decode_frames(bytes);
    assert!(decoded.valid_bytes <= bytes.len());
    let _ = OffsetIndex::decode(bytes, target as u64);
    let _ = TimeIndex::decode(bytes);
    let _ = decode_legacy_produce(bytes);
    if bytes.len() >= 4 {
        let _ = parse_frame_size(bytes[..4].try_into().unwrap(), max_bytes);
    }
}

fn valid_inputs() -> Vec<Vec<u8>> {
    let mut inputs = vec![
        simple_batch(3, 20, 100),
        [simple_batch(1, 0, 0), simple_batch(4, 10, 5)].concat(),
        encode_frame(&MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: [1; 16],
            partition_shards: vec![0, 1],
            configs: vec![("a".into(), "b".into())],
        }),
    ];
    for compression in ALL_COMPRESSIONS {
        inputs.push(encoded_batch(&kafka_records(6, 30, 1_000), compression));
    }
    inputs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        target in any::<i64>(),
        max_bytes in any::<usize>(),
    ) {
        exercise(&bytes, target, max_bytes);
    }

    #[test]
    fn damaged_valid_inputs(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(
            (any::<bool>(), any::<prop::sample::Index>(), any::<u8>()),
            1..6,
        ),
        fix in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        target in -5i64..20,
        max_bytes in 0usize..1_000,
    ) {
        let inputs = valid_inputs();
        let mut bytes = inputs[which.index(inputs.len())].clone();
        for (in_header, at, value) in edits {
            // Half the edits hit the batch header, where one byte changes
            // what the code behind the CRC check is told to do.
            let range = if in_header { BATCH_HEADER_BYTES.min(bytes.len()) } else { bytes.len() };
            bytes[at.index(range)] = value;
        }
        if fix && bytes.len() >= BATCH_HEADER_BYTES {
            if let Ok(header) = BatchHeader::parse(&bytes) {
                if header.total_bytes() <= bytes.len() {
                    fix_crc(&mut bytes[..header.total_bytes()]);
                }
            }
        }
        let cut = cut.index(bytes.len() + 1);
        exercise(&bytes[..cut], target, max_bytes);
        exercise(&bytes, target, max_bytes);
    }
}

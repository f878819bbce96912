//! RecordBatch v2 bytes from a producer or a segment file: header parsing,
//! CRC validation, record decoding, the recovery scan, fetch selection and
//! compaction.
#![no_main]

use engine::log::{compact_segment, scan_into_segment, select_batches, OffsetMap, Segment};
use engine::record::{decode_records, validate_batch, validate_record_set, BatchHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = BatchHeader::parse(data) {
        let _ = header.last_offset();
        let _ = header.next_offset();
    }
    if let Ok(header) = validate_batch(data) {
        assert!(header.total_bytes() <= data.len());
        let _ = decode_records(&data[..header.total_bytes()]);
    }
    let whole_set = validate_record_set(data);
    if let Ok(spans) = &whole_set {
        // Valid spans tile the input exactly.
        let mut position = 0;
        for span in spans {
            assert_eq!(span.range.start, position);
            position = span.range.end;
        }
        assert_eq!(position, data.len());
    }

    let mut segment = Segment::new(0);
    let outcome = scan_into_segment(data, &mut segment, 4096, 0);
    assert!(outcome.valid_bytes <= data.len());
    assert_eq!(segment.size_bytes as usize, outcome.valid_bytes);
    let _ = select_batches(data, 0, 1 << 20);
    let _ = select_batches(data, i64::MAX, 64);

    let valid = &data[..outcome.valid_bytes];
    let mut map = OffsetMap::new();
    let mut position = 0;
    while position < valid.len() {
        let header = BatchHeader::parse(&valid[position..]).expect("scanned batch");
        if map
            .add_batch(&valid[position..position + header.total_bytes()])
            .is_err()
        {
            return;
        }
        position += header.total_bytes();
    }
    if let Ok((compacted, _, _)) = compact_segment(valid, &map, 0) {
        assert!(compacted.len() <= valid.len());
    }
});

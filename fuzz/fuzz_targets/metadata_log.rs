//! The metadata log and snapshot files: CRC-framed rkyv records, then applied
//! to a cluster image the way the controller replays them at start-up.
#![no_main]

use engine::metadata::{decode_frames, encode_frame, ClusterImage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_frames(data);
    assert!(decoded.valid_bytes <= data.len());
    assert_eq!(decoded.stopped.is_none(), decoded.valid_bytes == data.len());
    let mut image = ClusterImage::default();
    for record in &decoded.records {
        // Replay keeps going past a rejected record, as start-up does.
        if image.check(record).is_ok() {
            image.apply(record).expect("a checked record applies");
        }
        let again = decode_frames(&encode_frame(record));
        assert_eq!(again.records, std::slice::from_ref(record));
    }
    // A snapshot of the image replays into the same image.
    let mut replayed = ClusterImage::default();
    for record in image.snapshot_records() {
        replayed.apply(&record).expect("snapshot records apply");
    }
    assert_eq!(replayed, image);
});

//! Records of `__consumer_offsets` (committed offsets, group metadata) as
//! the coordinator reloads them: a u16 key length, the key, then the value
//! (absent when the input ends right after the key: a tombstone).
#![no_main]

use engine::group::GroupLogRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let key_bytes = (u16::from_be_bytes(*length) as usize).min(rest.len());
    let (key, value) = rest.split_at(key_bytes);
    let value = (!value.is_empty()).then_some(value);
    if let Some(record) = GroupLogRecord::decode(key, value) {
        // What decodes re-encodes to something that decodes the same.
        let (key, value) = record.encode();
        assert_eq!(GroupLogRecord::decode(&key, value.as_deref()), Some(record));
    }
});

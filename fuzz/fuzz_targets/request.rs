//! A request as it arrives on a connection: the 4-byte size prefix, then the
//! header and body, decoded the way `shards::kafka::dispatch::start_request` does
//! (frame size check, API key and version, header version, legacy
//! Produce v0-2, then the kafka-protocol body for that key and version).
#![no_main]

use bytes::Bytes;
use engine::protocol::kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use engine::protocol::kafka_protocol::protocol::Decodable;
use engine::protocol::{decode_legacy_produce, parse_frame_size, PRODUCE_VERSION_MIN_ACCEPTED};
use libfuzzer_sys::fuzz_target;

// The broker's allocator: huge up-front Vec capacities from a decoder are
// reservations there, not aborts (engine::reserving_alloc).
#[global_allocator]
static ALLOCATOR: engine::reserving_alloc::ReservingAllocator =
    engine::reserving_alloc::ReservingAllocator;

/// `socket.request.max.bytes` default.
const REQUEST_BYTES_MAX: usize = 100 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(size) = parse_frame_size(*prefix, REQUEST_BYTES_MAX) else {
        return;
    };
    assert!(size <= REQUEST_BYTES_MAX);
    let mut frame = Bytes::copy_from_slice(&rest[..rest.len().min(size)]);
    if frame.len() < 8 {
        return;
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        return;
    };
    let header_version = api_key.request_header_version(version);
    let Ok(header) = RequestHeader::decode(&mut frame, header_version) else {
        return;
    };
    assert_eq!(header.request_api_key, api_key_raw);
    if api_key == ApiKey::Produce && (0..PRODUCE_VERSION_MIN_ACCEPTED).contains(&version) {
        let _ = decode_legacy_produce(&frame);
        return;
    }
    // Every version the codec knows (a superset of what the broker serves).
    let versions = api_key.valid_versions();
    if !(versions.min..=versions.max).contains(&version) {
        return;
    }
    let _ = RequestKind::decode(api_key, &mut frame, version);
});

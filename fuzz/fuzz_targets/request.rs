//! A request as it arrives on a connection: the 4-byte size prefix, then the
//! frame, read by the broker's own `engine::protocol::read_request` (the
//! function `shards::kafka::dispatch` calls), the body decoded for its key
//! and version, and then the handler steps that take no I/O:
//! - Produce: Kafka's batch admission (`admit_records`, with recompression
//!   and the compacted-topic key check) and the log's append planning;
//! - Produce v0–2: the per-partition UNSUPPORTED_VERSION answer;
//! - CreateTopics, AlterConfigs, IncrementalAlterConfigs: topic name and
//!   config validation.
#![no_main]

use std::collections::BTreeMap;

use bytes::Bytes;
use engine::log::PartitionLog;
use engine::metadata::{validate_topic_config, validate_topic_name, TopicConfig, TopicDefaults};
use engine::protocol::kafka_protocol::messages::RequestKind;
use engine::protocol::{
    admit_records, encode_legacy_produce_rejection, parse_frame_size, read_request, RequestStart,
};
use engine::record::count_batches;
use libfuzzer_sys::fuzz_target;

// The broker's allocator: huge up-front Vec capacities from a decoder are
// reservations there, not aborts (engine::reserving_alloc).
#[global_allocator]
static ALLOCATOR: engine::reserving_alloc::ReservingAllocator =
    engine::reserving_alloc::ReservingAllocator;

/// `socket.request.max.bytes` default.
const REQUEST_BYTES_MAX: usize = 100 << 20;

/// The topic configs a Produce is admitted under: Kafka's defaults, and a
/// compacted topic that recompresses to zstd (both checks, and the codecs).
fn topic_configs() -> [TopicConfig; 2] {
    let defaults = TopicDefaults::default();
    let compacted_zstd: BTreeMap<String, String> = [
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("compression.type".to_string(), "zstd".to_string()),
    ]
    .into();
    [
        TopicConfig::effective(&BTreeMap::new(), &defaults),
        TopicConfig::effective(&compacted_zstd, &defaults),
    ]
}

fn produce(records: Bytes, version: i16) {
    if count_batches(&records) != 1 {
        return; // the broker answers INVALID_RECORD before admission
    }
    for config in topic_configs() {
        let Ok(admitted) = admit_records(records.clone(), &config, version) else {
            continue;
        };
        let log = PartitionLog::new_empty(config.log_config());
        let mut admitted = admitted.to_vec();
        if let Ok(plan) = log.plan_append(&mut admitted, 0, 0) {
            assert!(plan.last_offset >= plan.base_offset);
            assert_eq!(plan.bytes, admitted.len());
        }
    }
}

fn configs<'a>(entries: impl Iterator<Item = (&'a str, Option<&'a str>)>) {
    for (name, value) in entries {
        let _ = validate_topic_config(name, value.unwrap_or(""));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((prefix, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(size) = parse_frame_size(*prefix, REQUEST_BYTES_MAX) else {
        return;
    };
    assert!(size <= REQUEST_BYTES_MAX);
    let frame = Bytes::copy_from_slice(&rest[..rest.len().min(size)]);
    // Every version the codec knows: a superset of the broker's table, so
    // the fuzzer reaches every decoder the table could ever route to.
    let codec_versions = |key: engine::protocol::kafka_protocol::messages::ApiKey| {
        let versions = key.valid_versions();
        Some(versions.min..=versions.max)
    };
    let (api_key, version, mut body) = match read_request(frame, codec_versions) {
        Ok(RequestStart::Served {
            api_key,
            version,
            header,
            body,
        }) => {
            assert_eq!(header.request_api_key, api_key as i16);
            (api_key, version, body)
        }
        Ok(RequestStart::LegacyProduce {
            version, request, ..
        }) => {
            let _ = encode_legacy_produce_rejection(&request, version);
            return;
        }
        Ok(RequestStart::ApiVersionsFallback { .. }) | Err(_) => return,
    };
    let Ok(request) = RequestKind::decode(api_key, &mut body, version) else {
        return;
    };
    match request {
        RequestKind::Produce(request) => {
            for topic in request.topic_data {
                let _ = validate_topic_name(&topic.name);
                for partition in topic.partition_data {
                    if let Some(records) = partition.records {
                        produce(records, version);
                    }
                }
            }
        }
        RequestKind::CreateTopics(request) => {
            for topic in request.topics {
                let _ = validate_topic_name(&topic.name);
                configs(
                    topic
                        .configs
                        .iter()
                        .map(|c| (c.name.as_str(), c.value.as_deref())),
                );
            }
        }
        RequestKind::AlterConfigs(request) => {
            let entries = request.resources.iter().flat_map(|r| &r.configs);
            configs(entries.map(|c| (c.name.as_str(), c.value.as_deref())));
        }
        RequestKind::IncrementalAlterConfigs(request) => {
            let entries = request.resources.iter().flat_map(|r| &r.configs);
            configs(entries.map(|c| (c.name.as_str(), c.value.as_deref())));
        }
        _ => {}
    }
});

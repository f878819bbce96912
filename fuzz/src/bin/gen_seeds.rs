//! Writes the seed corpora under fuzz/corpus/<target>/ from real encodings:
//! requests encoded by kafka-protocol (the clients' codec), batches by the
//! engine's batch builder, metadata and group records by their encoders.
//! Run: `cargo +nightly run --manifest-path fuzz/Cargo.toml --bin gen_seeds`.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use engine::group::{GroupLogRecord, OffsetAndMetadata, PersistedGroup, PersistedMember};
use engine::metadata::{encode_frame, MetadataRecord};
use engine::protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, IncrementalAlterConfigsRequest,
    MetadataRequest, ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use engine::protocol::kafka_protocol::protocol::{Encodable, StrBytes};
use engine::record::{build_batch, BatchCompression, NewRecord};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn request_frame(api_key: ApiKey, version: i16, body: &RequestKind) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api_key.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut buf, version).expect("body encodes");
    let mut frame = (buf.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

fn batch(compression: BatchCompression) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..3)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: (i != 1).then(|| Bytes::from(vec![b'v'; 20 * i])),
            headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
        })
        .collect();
    build_batch(&records, 1_700_000_000_000, compression).expect("batch builds")
}

fn main() {
    let plain = batch(BatchCompression::None);
    let requests = [
        (
            ApiKey::ApiVersions,
            3,
            RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("seed"))
                    .with_client_software_version(StrBytes::from_static_str("1")),
            ),
        ),
        (
            ApiKey::Metadata,
            12,
            RequestKind::Metadata(MetadataRequest::default()),
        ),
        (
            ApiKey::Metadata,
            1,
            RequestKind::Metadata(MetadataRequest::default()),
        ),
        (
            ApiKey::Fetch,
            12,
            RequestKind::Fetch(FetchRequest::default()),
        ),
        (ApiKey::Produce, 9, RequestKind::Produce(produce(&plain))),
        (ApiKey::Produce, 3, RequestKind::Produce(produce(&plain))),
        (
            ApiKey::Produce,
            11,
            RequestKind::Produce(produce(&batch(BatchCompression::Gzip))),
        ),
        (
            ApiKey::Produce,
            7,
            RequestKind::Produce(produce(&batch(BatchCompression::Snappy))),
        ),
        (
            ApiKey::CreateTopics,
            7,
            RequestKind::CreateTopics(create_topics()),
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            1,
            RequestKind::IncrementalAlterConfigs(alter_configs()),
        ),
    ];
    for (api_key, version, body) in &requests {
        let codec = match body {
            RequestKind::Produce(p) => p.topic_data[0].partition_data[0]
                .records
                .as_ref()
                .map_or(0, |b| b[22] & 7),
            _ => 0,
        };
        let name = match codec {
            0 => format!("{api_key:?}-v{version}"),
            codec => format!("{api_key:?}-v{version}-codec{codec}"),
        };
        write("request", &name, &request_frame(*api_key, *version, body));
    }

    write("record_batch", "plain", &plain);
    write("record_batch", "gzip", &batch(BatchCompression::Gzip));
    write("record_batch", "zstd", &batch(BatchCompression::Zstd));
    write(
        "record_batch",
        "two-batches",
        &[plain.clone(), plain].concat(),
    );

    let topic = MetadataRecord::CreateTopic {
        name: "orders".into(),
        topic_id: [7; 16],
        partition_shards: vec![0, 1, 0],
        configs: vec![("cleanup.policy".into(), "compact".into())],
    };
    let log = [
        encode_frame(&topic),
        encode_frame(&MetadataRecord::SetTopicConfigs {
            name: "orders".into(),
            configs: vec![("retention.ms".into(), "1000".into())],
        }),
        encode_frame(&MetadataRecord::AddPartitions {
            name: "orders".into(),
            partition_shards: vec![1],
        }),
        encode_frame(&MetadataRecord::DeleteTopic {
            name: "orders".into(),
        }),
    ];
    write("metadata_log", "create", &log[0]);
    write("metadata_log", "lifecycle", &log.concat());

    let offset = GroupLogRecord::Offset {
        group_id: "billing".into(),
        topic: "orders".into(),
        partition: 2,
        value: Some(OffsetAndMetadata {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        }),
    };
    let group = GroupLogRecord::Group {
        group_id: "billing".into(),
        value: Some(PersistedGroup {
            protocol_type: "consumer".into(),
            generation_id: 3,
            protocol_name: Some("range".into()),
            leader_id: Some("m-1".into()),
            state_timestamp_ms: 5,
            members: vec![PersistedMember {
                member_id: "m-1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: vec![0, 1, 2],
                assignment: vec![3, 4],
            }],
        }),
    };
    let tombstone = GroupLogRecord::Offset {
        group_id: "billing".into(),
        topic: "orders".into(),
        partition: 2,
        value: None,
    };
    for (name, record) in [
        ("offset", offset),
        ("group", group),
        ("tombstone", tombstone),
    ] {
        let (key, value) = record.encode();
        let mut seed = (key.len() as u16).to_be_bytes().to_vec();
        seed.extend_from_slice(&key);
        seed.extend_from_slice(value.as_deref().unwrap_or_default());
        write("group_records", name, &seed);
    }
}

fn produce(batch: &[u8]) -> ProduceRequest {
    use engine::protocol::kafka_protocol::messages::produce_request::{
        PartitionProduceData, TopicProduceData,
    };
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::copy_from_slice(batch)))])])
}

fn create_topics() -> CreateTopicsRequest {
    use engine::protocol::kafka_protocol::messages::create_topics_request::{
        CreatableTopic, CreatableTopicConfig,
    };
    let config = |name: &'static str, value: &'static str| {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_static_str(value)))
    };
    CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("orders")))
        .with_num_partitions(3)
        .with_replication_factor(1)
        .with_configs(vec![
            config("cleanup.policy", "compact,delete"),
            config("compression.type", "zstd"),
            config("retention.ms", "3600000"),
        ])])
}

fn alter_configs() -> IncrementalAlterConfigsRequest {
    use engine::protocol::kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str("orders"))
        .with_configs(vec![AlterableConfig::default()
            .with_name(StrBytes::from_static_str("min.cleanable.dirty.ratio"))
            .with_config_operation(0)
            .with_value(Some(StrBytes::from_static_str("0.25")))])])
}

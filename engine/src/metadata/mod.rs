//! The cluster image (brokers, topics, partition placement, replicas, ISR,
//! leaders, epochs, configs), the metadata log records that change it, and
//! the controller's pure decisions that plan those records. Even a single
//! node keeps its metadata as a log of rkyv records plus snapshots: a
//! one-voter controller quorum.

mod cluster;
mod image;
mod log_codec;
mod placement;
mod topic_config;

pub use cluster::{
    alter_partition, elect_leader, fence_broker, register_broker, unfence_broker,
    unregister_broker, AlterPartitionRefusal, BrokerSessions,
};
pub use image::{
    validate_topic_name, BrokerImage, BrokerRegistration, ClusterImage, MetadataError,
    MetadataRecord, PartitionImage, PartitionPlacement, PartitionState, TopicImage,
    ARCHIVED_RECORD_BYTES, BROKER_HOST_CHARS_MAX, NO_LEADER, TOPIC_NAME_CHARS_MAX,
    TOPIC_PARTITIONS_MAX,
};
pub use log_codec::{
    decode_frames, decode_records, encode_frame, encode_records, frame_payload, split_frames,
    DecodedFrames, SplitFrames, FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX,
};
pub use topic_config::{
    config_def, describe_topic_configs, validate_topic_config, ConfigDef, ConfigEntry, TopicConfig,
    TopicDefaults, CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_DYNAMIC_TOPIC, CONFIG_SOURCE_STATIC_BROKER,
    CONFIG_TYPE_BOOLEAN, CONFIG_TYPE_DOUBLE, CONFIG_TYPE_INT, CONFIG_TYPE_LIST, CONFIG_TYPE_LONG,
    CONFIG_TYPE_SHORT, CONFIG_TYPE_STRING, TOPIC_CONFIGS,
};

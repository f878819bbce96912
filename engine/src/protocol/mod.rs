//! Kafka wire codecs: framing, request/response headers, the Produce version
//! bound and error codes (the API table itself is `shards::kafka::apis`). The long tail of message bodies comes from the
//! `kafka-protocol` crate (generated from Kafka 4.1's message specs); record
//! sets stay opaque bytes.

mod api_versions;
mod error_code;
mod fetch_response;
mod frame;
mod produce_admission;
mod produce_legacy;
mod request;
pub mod wire;

pub use api_versions::PRODUCE_VERSION_MIN_ACCEPTED;
pub use error_code::{
    check_current_leader_epoch, ErrorCode, CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS,
    COORDINATOR_NOT_AVAILABLE, CORRUPT_MESSAGE, FENCED_INSTANCE_ID, FENCED_LEADER_EPOCH,
    GROUP_ID_NOT_FOUND, GROUP_SUBSCRIBED_TO_TOPIC, ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL,
    INELIGIBLE_REPLICA, INVALID_COMMIT_OFFSET_SIZE, INVALID_CONFIG, INVALID_GROUP_ID,
    INVALID_PARTITIONS, INVALID_PRODUCER_EPOCH, INVALID_PRODUCER_ID_MAPPING, INVALID_RECORD,
    INVALID_REPLICATION_FACTOR, INVALID_REPLICA_ASSIGNMENT, INVALID_REQUEST, INVALID_REQUIRED_ACKS,
    INVALID_SESSION_TIMEOUT, INVALID_TOPIC_EXCEPTION, INVALID_TRANSACTION_TIMEOUT,
    INVALID_TXN_STATE, INVALID_UPDATE_VERSION, KAFKA_STORAGE_ERROR, LEADER_NOT_AVAILABLE,
    LOG_DIR_NOT_FOUND, MEMBER_ID_REQUIRED, MESSAGE_TOO_LARGE, NETWORK_EXCEPTION, NONE,
    NON_EMPTY_GROUP, NOT_CONTROLLER, NOT_COORDINATOR, NOT_ENOUGH_REPLICAS,
    NOT_ENOUGH_REPLICAS_AFTER_APPEND, NOT_LEADER_OR_FOLLOWER, OFFSET_METADATA_TOO_LARGE,
    OFFSET_OUT_OF_RANGE, OPERATION_NOT_ATTEMPTED, OUT_OF_ORDER_SEQUENCE_NUMBER, PRODUCER_FENCED,
    REBALANCE_IN_PROGRESS, REQUEST_TIMED_OUT, STALE_BROKER_EPOCH, TOPIC_ALREADY_EXISTS,
    TRANSACTIONAL_ID_NOT_FOUND, UNKNOWN_LEADER_EPOCH, UNKNOWN_MEMBER_ID, UNKNOWN_SERVER_ERROR,
    UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION, UNSTABLE_OFFSET_COMMIT,
    UNSUPPORTED_COMPRESSION_TYPE, UNSUPPORTED_VERSION,
};
pub use fetch_response::{
    encode_fetch_frame, FetchFramePlan, FetchPartitionHead, FetchTopicHead, FETCH_RESPONSE_VERSIONS,
};
pub use frame::{
    frame, parse_frame_size, FrameError, REQUEST_BYTES_MAX_DEFAULT, REQUEST_HEADER_BYTES_MIN,
};
pub use produce_admission::{admit_records, Refusal};
pub use produce_legacy::{
    decode_legacy_produce, encode_legacy_produce_rejection, LegacyProduceRequest,
};
pub use request::{is_served, read_request, RequestStart};

pub use kafka_protocol;

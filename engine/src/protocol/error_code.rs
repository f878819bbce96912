//! Kafka error codes the broker answers with. Clients decide to retry,
//! refresh metadata or fail on these exact numbers.

pub type ErrorCode = i16;

pub const NONE: ErrorCode = 0;
pub const UNKNOWN_SERVER_ERROR: ErrorCode = -1;
pub const OFFSET_OUT_OF_RANGE: ErrorCode = 1;
pub const CORRUPT_MESSAGE: ErrorCode = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = 3;
pub const LEADER_NOT_AVAILABLE: ErrorCode = 5;
pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = 6;
pub const REQUEST_TIMED_OUT: ErrorCode = 7;
pub const MESSAGE_TOO_LARGE: ErrorCode = 10;
/// The broker could not reach another broker (a transport failure).
pub const NETWORK_EXCEPTION: ErrorCode = 13;
pub const INVALID_TOPIC_EXCEPTION: ErrorCode = 17;
pub const INVALID_REQUIRED_ACKS: ErrorCode = 21;
pub const UNSUPPORTED_VERSION: ErrorCode = 35;
pub const TOPIC_ALREADY_EXISTS: ErrorCode = 36;
pub const INVALID_PARTITIONS: ErrorCode = 37;
pub const INVALID_REPLICATION_FACTOR: ErrorCode = 38;
pub const INVALID_REPLICA_ASSIGNMENT: ErrorCode = 39;
pub const INVALID_CONFIG: ErrorCode = 40;
/// This broker's controller does not lead the metadata quorum (clients
/// refresh metadata and retry).
pub const NOT_CONTROLLER: ErrorCode = 41;
pub const INVALID_REQUEST: ErrorCode = 42;
/// acks=all: the ISR is smaller than `min.insync.replicas`; nothing was
/// appended.
pub const NOT_ENOUGH_REPLICAS: ErrorCode = 19;
/// acks=all: appended, but the ISR shrank below `min.insync.replicas`
/// before the high watermark reached it.
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode = 20;
pub const KAFKA_STORAGE_ERROR: ErrorCode = 56;
pub const LOG_DIR_NOT_FOUND: ErrorCode = 57;
pub const UNKNOWN_TOPIC_ID: ErrorCode = 100;
/// AlterPartition: the leader's partition epoch is not the controller's (it
/// missed a change).
pub const INVALID_UPDATE_VERSION: ErrorCode = 95;
/// AlterPartition: a replica the ISR would add is fenced or not registered.
pub const INELIGIBLE_REPLICA: ErrorCode = 107;
pub const OFFSET_METADATA_TOO_LARGE: ErrorCode = 12;
pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode = 14;
pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = 15;
pub const NOT_COORDINATOR: ErrorCode = 16;
pub const ILLEGAL_GENERATION: ErrorCode = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode = 23;
pub const INVALID_GROUP_ID: ErrorCode = 24;
pub const UNKNOWN_MEMBER_ID: ErrorCode = 25;
pub const INVALID_SESSION_TIMEOUT: ErrorCode = 26;
pub const REBALANCE_IN_PROGRESS: ErrorCode = 27;
pub const INVALID_COMMIT_OFFSET_SIZE: ErrorCode = 28;
pub const NON_EMPTY_GROUP: ErrorCode = 68;
pub const GROUP_ID_NOT_FOUND: ErrorCode = 69;
/// The request's leader epoch is older than the leader's (the client is fenced).
pub const FENCED_LEADER_EPOCH: ErrorCode = 74;
/// The request's leader epoch is newer than the leader's (its metadata is
/// ahead of this broker's).
pub const UNKNOWN_LEADER_EPOCH: ErrorCode = 75;
/// A broker heartbeat or request from a registration the controller no
/// longer has (the broker registers again).
pub const STALE_BROKER_EPOCH: ErrorCode = 77;
pub const MEMBER_ID_REQUIRED: ErrorCode = 79;
pub const FENCED_INSTANCE_ID: ErrorCode = 82;
/// A batch's sequence number is not the next one its producer should send.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = 45;
/// A batch's producer epoch is older than the producer's current one.
pub const INVALID_PRODUCER_EPOCH: ErrorCode = 47;
/// A transactional request that the transaction's state does not allow
/// (EndTxn with no transaction open, commit after abort).
pub const INVALID_TXN_STATE: ErrorCode = 48;
/// The producer id is not the one the coordinator holds for this
/// transactional id.
pub const INVALID_PRODUCER_ID_MAPPING: ErrorCode = 49;
/// `transaction.timeout.ms` above the broker's `transaction.max.timeout.ms`.
pub const INVALID_TRANSACTION_TIMEOUT: ErrorCode = 50;
/// The transaction is being committed or aborted; the client retries.
pub const CONCURRENT_TRANSACTIONS: ErrorCode = 51;
/// A partition of a request that failed for another partition's reason.
pub const OPERATION_NOT_ATTEMPTED: ErrorCode = 55;
/// DescribeTransactions of an id its coordinator does not know.
pub const TRANSACTIONAL_ID_NOT_FOUND: ErrorCode = 105;
/// OffsetFetch with `require_stable`: a transaction holds an offset of the
/// partition that its marker has not settled yet; the client retries.
pub const UNSTABLE_OFFSET_COMMIT: ErrorCode = 88;
/// A newer producer with the same transactional id (a higher epoch) exists.
pub const PRODUCER_FENCED: ErrorCode = 90;
/// A record set the broker will not take as a whole (e.g. more than one
/// batch for one partition in Produce v3+).
pub const INVALID_RECORD: ErrorCode = 87;
pub const GROUP_SUBSCRIBED_TO_TOPIC: ErrorCode = 86;
/// A codec the request's version cannot carry (zstd before Produce v7).
pub const UNSUPPORTED_COMPRESSION_TYPE: ErrorCode = 76;

/// Kafka's check of a request's `current_leader_epoch` (-1: none given)
/// against the partition leader's epoch: older is fenced, newer unknown.
pub fn check_current_leader_epoch(requested: i32, leader: i32) -> ErrorCode {
    if requested < 0 || requested == leader {
        NONE
    } else if requested < leader {
        FENCED_LEADER_EPOCH
    } else {
        UNKNOWN_LEADER_EPOCH
    }
}

#[cfg(test)]
mod leader_epoch_tests {
    use super::*;

    #[test]
    fn older_epochs_are_fenced_newer_ones_unknown() {
        assert_eq!(check_current_leader_epoch(-1, 5), NONE);
        assert_eq!(check_current_leader_epoch(5, 5), NONE);
        assert_eq!(check_current_leader_epoch(4, 5), FENCED_LEADER_EPOCH);
        assert_eq!(check_current_leader_epoch(0, 5), FENCED_LEADER_EPOCH);
        assert_eq!(check_current_leader_epoch(6, 5), UNKNOWN_LEADER_EPOCH);
        assert_eq!(check_current_leader_epoch(1, 0), UNKNOWN_LEADER_EPOCH);
        assert_eq!((FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH), (74, 75));
    }
}

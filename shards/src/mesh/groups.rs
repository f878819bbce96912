//! Group coordinator ops, served by the shard that owns the group's
//! `__consumer_offsets` partition. An `Err` is the answer for the whole
//! request (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...).

use engine::group::{
    GroupDescription, JoinRequest, JoinResult, OffsetAndMetadata, SyncRequest, SyncResult,
};
use engine::protocol::{self as codes, ErrorCode};

use super::subsystem;

subsystem!(Group, GroupRequest, GroupReply {
    JoinGroup => JoinResult,
    SyncGroup => SyncResult,
    Heartbeat => ErrorCode,
    LeaveGroup => Result<Vec<ErrorCode>, ErrorCode>,
    CommitOffsets => Result<Vec<ErrorCode>, ErrorCode>,
    CommitTxnOffsets => Result<Vec<ErrorCode>, ErrorCode>,
    FetchOffsets => Result<Vec<FetchedOffset>, ErrorCode>,
    DescribeGroup => Result<Option<GroupDescription>, ErrorCode>,
    ListGroups => Result<Vec<ListedGroup>, ErrorCode>,
    DeleteGroup => ErrorCode,
    DeleteOffsets => Result<PartitionErrors, ErrorCode>,
});

/// A JoinGroup answer that carries only an error (the member id is filled
/// in by the handler from the request).
pub fn join_error(error: ErrorCode) -> JoinResult {
    JoinResult::error(error, "")
}

/// A SyncGroup answer that carries only an error.
pub fn sync_error(error: ErrorCode) -> SyncResult {
    SyncResult::error(error)
}

#[derive(Debug)]
pub struct JoinGroup(pub JoinRequest);

impl JoinGroup {
    fn undelivered_reply(&self) -> JoinResult {
        join_error(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug)]
pub struct SyncGroup(pub SyncRequest);

impl SyncGroup {
    fn undelivered_reply(&self) -> SyncResult {
        sync_error(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug)]
pub struct Heartbeat {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl Heartbeat {
    fn undelivered_reply(&self) -> ErrorCode {
        codes::UNKNOWN_SERVER_ERROR
    }
}

#[derive(Debug)]
pub struct LeaveGroup {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

impl LeaveGroup {
    fn undelivered_reply(&self) -> Result<Vec<ErrorCode>, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug, Clone)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug)]
pub struct CommitOffsets {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommittedOffset>,
}

impl CommitOffsets {
    fn undelivered_reply(&self) -> Result<Vec<ErrorCode>, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

/// TxnOffsetCommit: offsets committed in a producer's transaction; they
/// stay pending until its marker reaches the group's partition.
#[derive(Debug)]
pub struct CommitTxnOffsets {
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 (and an empty member id): no member checks (before v3).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommittedOffset>,
}

impl CommitTxnOffsets {
    fn undelivered_reply(&self) -> Result<Vec<ErrorCode>, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug, Clone)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub value: OffsetAndMetadata,
}

/// The committed offsets of a group: of `partitions`, or of every
/// partition it has one for (None).
#[derive(Debug)]
pub struct FetchOffsets {
    pub group_id: String,
    pub partitions: Option<Vec<TopicPartitions>>,
    /// OffsetFetch v7+: a partition whose offset a transaction holds
    /// answers UNSTABLE_OFFSET_COMMIT instead of its last offset.
    pub require_stable: bool,
}

impl FetchOffsets {
    fn undelivered_reply(&self) -> Result<Vec<FetchedOffset>, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug, Clone)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    /// None: no committed offset.
    pub value: Option<OffsetAndMetadata>,
    /// NONE, or UNSTABLE_OFFSET_COMMIT (see `FetchOffsets::require_stable`).
    pub error: ErrorCode,
}

#[derive(Debug)]
pub struct DescribeGroup {
    pub group_id: String,
}

impl DescribeGroup {
    fn undelivered_reply(&self) -> Result<Option<GroupDescription>, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

/// The groups the target shard coordinates.
#[derive(Debug)]
pub struct ListGroups;

impl ListGroups {
    fn undelivered_reply(&self) -> Result<Vec<ListedGroup>, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

#[derive(Debug)]
pub struct DeleteGroup {
    pub group_id: String,
}

impl DeleteGroup {
    fn undelivered_reply(&self) -> ErrorCode {
        codes::UNKNOWN_SERVER_ERROR
    }
}

#[derive(Debug)]
pub struct DeleteOffsets {
    pub group_id: String,
    pub partitions: Vec<TopicPartition>,
}

impl DeleteOffsets {
    fn undelivered_reply(&self) -> Result<PartitionErrors, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug, Clone)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// A top-level error and one per partition, in request order (OffsetDelete).
#[derive(Debug, Clone)]
pub struct PartitionErrors {
    pub error: ErrorCode,
    pub partitions: Vec<ErrorCode>,
}

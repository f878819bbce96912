//! Messages between shards. The mesh (glommio channel_mesh: bounded,
//! lock-free SPSC queues) is the only way shards talk (DESIGN.md §3). A call
//! is a Request carrying an id; the answer comes back as a Response with the
//! same id and completes the caller's local future.

use bytes::Bytes;
use engine::group::{
    GroupDescription, JoinRequest, JoinResult, OffsetAndMetadata, SyncRequest, SyncResult,
};
use engine::metadata::MetadataRecord;
use engine::protocol::ErrorCode;

/// Capacity of each shard-to-shard queue; a full queue makes the sender wait.
pub const MESH_QUEUE_CAPACITY: usize = 1024;

#[derive(Debug)]
pub enum MeshMessage {
    Request { id: u64, op: ShardOp },
    Response { id: u64, reply: ShardReply },
}

/// Work one shard asks of another.
#[derive(Debug)]
pub enum ShardOp {
    /// Append a producer's record set to a partition this shard owns.
    Append {
        topic: String,
        partition: i32,
        records: Bytes,
        acks: i16,
    },
    /// Read whole batches from each partition's offset (one message per
    /// owning shard for a whole Fetch). With `wait`, a read that finds too
    /// little parks on this shard (a Fetch long-poll) and reads again.
    Read {
        reads: Vec<PartitionRead>,
        wait: Option<FetchWait>,
    },
    /// The fetch `(origin, id)` has enough data from other shards: a read of
    /// it still parked here answers now with what it has.
    EndWait { origin: usize, id: u64 },
    /// ListOffsets for one partition (-1 latest, -2 earliest, >= 0 time).
    ListOffset {
        topic: String,
        partition: i32,
        timestamp_ms: i64,
    },
    /// DeleteRecords for one partition; answers ListOffset with the new
    /// log start offset.
    DeleteRecords {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// Sizes of this shard's partitions (DescribeLogDirs).
    LogDirSizes,
    /// This shard's metrics snapshot (a scrape).
    Metrics,
    /// Controller (shard 0) only: create topics.
    CreateTopics { topics: Vec<TopicSpec> },
    /// Controller (shard 0) only: delete topics.
    DeleteTopics { names: Vec<String> },
    /// Controller (shard 0) only: change topic configs.
    AlterTopicConfigs { changes: Vec<ConfigChange> },
    /// Controller (shard 0) only: grow topics to (name, new count,
    /// validate only).
    AddPartitions { topics: Vec<(String, i32, bool)> },
    /// Apply a committed metadata record to this shard's image and files.
    ApplyMetadata { record: MetadataRecord },
    /// Work for the group coordinator of the shard that owns the group's
    /// `__consumer_offsets` partition.
    Group(GroupOp),
}

#[derive(Debug)]
pub enum GroupOp {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat {
        group_id: String,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
    },
    Leave {
        group_id: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit {
        group_id: String,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
        offsets: Vec<(String, i32, OffsetAndMetadata)>,
    },
    /// None: every partition with a committed offset.
    FetchOffsets {
        group_id: String,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe {
        group_id: String,
    },
    /// Groups coordinated by this shard.
    List,
    Delete {
        group_id: String,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
}

#[derive(Debug)]
pub enum GroupReply {
    Join(JoinResult),
    Sync(SyncResult),
    /// One error, or one per item (leave members, commit partitions, ...).
    Error(ErrorCode),
    Errors(ErrorCode, Vec<ErrorCode>),
    Offsets(ErrorCode, Vec<(String, i32, Option<OffsetAndMetadata>)>),
    Described(ErrorCode, Option<GroupDescription>),
    /// (group id, protocol type, state)
    Listed(Vec<(String, String, &'static str)>),
}

/// One topic's config change. Not incremental (AlterConfigs): `set` is the
/// whole new set. Incremental: `set` and `delete` apply on top.
#[derive(Debug, Clone)]
pub struct ConfigChange {
    pub topic: String,
    pub incremental: bool,
    pub set: Vec<(String, String)>,
    pub delete: Vec<String>,
    pub validate_only: bool,
}

#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1: the broker default; anything but 1 is rejected on a single node.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    pub validate_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
pub struct PartitionRead {
    /// Shared by every partition of the topic in one Fetch.
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
}

/// How long a parked read may wait, and for how much. `(origin, id)` names
/// the fetch (origin: the connection's shard) for [`ShardOp::EndWait`].
#[derive(Debug, Clone, Copy)]
pub struct FetchWait {
    pub origin: usize,
    pub id: u64,
    pub timeout_ms: u64,
    pub min_bytes: usize,
}

#[derive(Debug)]
pub struct ReadOutcome {
    /// Whole batches to send from the segment file; None when there is
    /// nothing to read at the offset yet.
    pub records: Option<crate::splice::FileSlice>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    pub partitions: i32,
}

#[derive(Debug)]
pub enum ShardReply {
    Append(Result<AppendOutcome, ErrorCode>),
    /// One result per requested read, in order.
    Read(Vec<Result<ReadOutcome, ErrorCode>>),
    /// (offset, timestamp)
    ListOffset(Result<(i64, i64), ErrorCode>),
    Topics(Vec<TopicResult>),
    Applied,
    Group(GroupReply),
    /// (topic, partition, bytes)
    Sizes(Vec<(String, i32, u64)>),
    Metrics(Box<crate::metrics::MetricsSnapshot>),
}

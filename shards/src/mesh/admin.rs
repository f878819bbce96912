//! Topic administration, served by the controller (shard 0).

use engine::protocol::{self as codes, ErrorCode};

use super::subsystem;

subsystem!(Admin, AdminRequest, AdminReply {
    CreateTopics => Vec<TopicResult>,
    DeleteTopics => Vec<TopicResult>,
    AlterTopicConfigs => Vec<TopicResult>,
    AddPartitions => Vec<TopicResult>,
    AllocateProducerId => Result<i64, ErrorCode>,
});

/// A new producer id for an idempotent producer (InitProducerId), never
/// handed out before.
#[derive(Debug)]
pub struct AllocateProducerId;

impl AllocateProducerId {
    fn undelivered_reply(&self) -> Result<i64, ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

#[derive(Debug, Clone)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    pub partitions: i32,
}

impl TopicResult {
    fn undelivered(name: &str) -> TopicResult {
        TopicResult {
            name: name.to_string(),
            error: codes::UNKNOWN_SERVER_ERROR,
            message: Some("the controller did not answer".into()),
            partitions: -1,
        }
    }
}

#[derive(Debug)]
pub struct CreateTopics {
    pub topics: Vec<TopicSpec>,
}

impl CreateTopics {
    fn undelivered_reply(&self) -> Vec<TopicResult> {
        self.topics
            .iter()
            .map(|t| TopicResult::undelivered(&t.name))
            .collect()
    }
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

#[derive(Debug)]
pub struct DeleteTopics {
    pub names: Vec<String>,
}

impl DeleteTopics {
    fn undelivered_reply(&self) -> Vec<TopicResult> {
        self.names
            .iter()
            .map(|name| TopicResult::undelivered(name))
            .collect()
    }
}

#[derive(Debug)]
pub struct AlterTopicConfigs {
    pub changes: Vec<ConfigChange>,
}

impl AlterTopicConfigs {
    fn undelivered_reply(&self) -> Vec<TopicResult> {
        self.changes
            .iter()
            .map(|c| TopicResult::undelivered(&c.topic))
            .collect()
    }
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

#[derive(Debug)]
pub struct AddPartitions {
    pub topics: Vec<PartitionGrowth>,
}

impl AddPartitions {
    fn undelivered_reply(&self) -> Vec<TopicResult> {
        self.topics
            .iter()
            .map(|g| TopicResult::undelivered(&g.topic))
            .collect()
    }
}

/// Grow `topic` to `partition_count` partitions (CreatePartitions).
#[derive(Debug, Clone)]
pub struct PartitionGrowth {
    pub topic: String,
    pub partition_count: i32,
    pub validate_only: bool,
}

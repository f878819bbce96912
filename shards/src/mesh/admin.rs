//! Topic administration, served by the controller (shard 0 of the broker
//! that leads the metadata quorum; other brokers' controllers forward these
//! ops to it, so they are rkyv types too).

use engine::protocol::{self as codes, ErrorCode};

use super::subsystem;

subsystem!(#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)] Admin, AdminRequest, AdminReply {
    CreateTopics => Vec<TopicResult>,
    DeleteTopics => Vec<TopicResult>,
    AlterTopicConfigs => Vec<TopicResult>,
    AddPartitions => Vec<TopicResult>,
    AllocateProducerId => Result<i64, ErrorCode>,
    DescribeQuorum => Result<QuorumStatus, ErrorCode>,
    AlterPartition => Result<(), ErrorCode>,
});

/// Kafka's AlterPartition: a partition leader asks for a new ISR (its
/// followers fell behind, or caught up). The answer comes as the
/// `PartitionChange` it commits; the reply says only whether it did.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AlterPartition {
    pub topic: String,
    pub partition: u32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

impl AlterPartition {
    fn undelivered_reply(&self) -> Result<(), ErrorCode> {
        Err(codes::NOT_CONTROLLER)
    }
}

/// The metadata quorum as its leader sees it (DescribeQuorum).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DescribeQuorum;

impl DescribeQuorum {
    fn undelivered_reply(&self) -> Result<QuorumStatus, ErrorCode> {
        Err(codes::NOT_CONTROLLER)
    }
}

#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QuorumStatus {
    pub leader_id: i32,
    /// The raft term: Kafka's leader epoch of the metadata partition.
    pub term: u64,
    /// The commit index.
    pub high_watermark: u64,
    /// Each voter's log end (node id, index).
    pub voters: Vec<(i32, u64)>,
}

/// A new producer id for an idempotent producer (InitProducerId), never
/// handed out before.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AllocateProducerId;

impl AllocateProducerId {
    fn undelivered_reply(&self) -> Result<i64, ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    pub partitions: i32,
}

impl TopicResult {
    fn undelivered(name: &str) -> TopicResult {
        TopicResult::refused(name, codes::UNKNOWN_SERVER_ERROR)
            .with_message("the controller did not answer")
    }

    pub fn refused(name: &str, error: ErrorCode) -> TopicResult {
        TopicResult {
            name: name.to_string(),
            error,
            message: None,
            partitions: -1,
        }
    }

    fn with_message(mut self, message: &str) -> TopicResult {
        self.message = Some(message.to_string());
        self
    }
}

impl AdminRequest {
    /// The reply that refuses every item of this op with `error` (e.g.
    /// NOT_CONTROLLER while the quorum has no leader).
    pub fn refusal(&self, error: ErrorCode) -> AdminReply {
        let topics = |names: &mut dyn Iterator<Item = &String>| {
            names.map(|n| TopicResult::refused(n, error)).collect()
        };
        match self {
            AdminRequest::CreateTopics(op) => {
                AdminReply::CreateTopics(topics(&mut op.topics.iter().map(|t| &t.name)))
            }
            AdminRequest::DeleteTopics(op) => {
                AdminReply::DeleteTopics(topics(&mut op.names.iter()))
            }
            AdminRequest::AlterTopicConfigs(op) => {
                AdminReply::AlterTopicConfigs(topics(&mut op.changes.iter().map(|c| &c.topic)))
            }
            AdminRequest::AddPartitions(op) => {
                AdminReply::AddPartitions(topics(&mut op.topics.iter().map(|g| &g.topic)))
            }
            AdminRequest::AllocateProducerId(_) => AdminReply::AllocateProducerId(Err(error)),
            AdminRequest::DescribeQuorum(_) => AdminReply::DescribeQuorum(Err(error)),
            AdminRequest::AlterPartition(_) => AdminReply::AlterPartition(Err(error)),
        }
    }
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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

#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicSpec {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1: the broker default (`default.replication.factor`).
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
    pub validate_only: bool,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ConfigChange {
    pub topic: String,
    pub incremental: bool,
    pub set: Vec<(String, String)>,
    pub delete: Vec<String>,
    pub validate_only: bool,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
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
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionGrowth {
    pub topic: String,
    pub partition_count: i32,
    pub validate_only: bool,
}

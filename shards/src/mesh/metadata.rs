//! Committed metadata records, published by the controller to every shard,
//! and what each shard knows of its own partitions' health.

use engine::metadata::MetadataRecord;

use super::subsystem;

subsystem!(Metadata, MetadataRequest, MetadataReply {
    ApplyMetadata => (),
    OfflineHere => OfflineReport,
});

/// Apply a committed metadata record to the target shard's image and files.
#[derive(Debug)]
pub struct ApplyMetadata {
    pub record: MetadataRecord,
}

impl ApplyMetadata {
    fn undelivered_reply(&self) {}
}

/// The partitions placed on the target shard that do not serve (files not
/// created, or damaged at open), among `topics` (None: all). With `settle`,
/// first waits (bounded) until every partition of `topics` placed there was
/// created or failed: the answer to "did creating these topics work here".
#[derive(Debug)]
pub struct OfflineHere {
    pub topics: Option<Vec<String>>,
    pub settle: bool,
}

impl OfflineHere {
    fn undelivered_reply(&self) -> OfflineReport {
        OfflineReport {
            settled: false,
            partitions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct OfflineReport {
    /// False if `settle` gave up waiting (the shard had not applied the
    /// topics yet) or the shard did not answer.
    pub settled: bool,
    pub partitions: Vec<OfflinePartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OfflinePartition {
    pub topic: String,
    pub partition: i32,
    pub reason: String,
}

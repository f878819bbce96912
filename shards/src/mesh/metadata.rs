//! Committed metadata records, published by the controller to every shard.

use engine::metadata::MetadataRecord;

use super::subsystem;

subsystem!(Metadata, MetadataRequest, MetadataReply {
    ApplyMetadata => (),
});

/// Apply a committed metadata record to the target shard's image and files.
#[derive(Debug)]
pub struct ApplyMetadata {
    pub record: MetadataRecord,
}

impl ApplyMetadata {
    fn undelivered_reply(&self) {}
}

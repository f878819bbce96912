//! Which shard owns a partition: the placement recorded in the metadata,
//! modulo this broker's shard count.

use engine::metadata::TopicImage;
use engine::protocol::{self as codes, ErrorCode};

/// The shard that owns a partition, from its placement.
pub fn owner_shard(topic: &TopicImage, partition: i32, shard_count: usize) -> Option<usize> {
    let slot = topic.slot(u32::try_from(partition).ok()?)?;
    Some(slot as usize % shard_count)
}

/// `owner_shard`, or the error a client should see.
pub fn route_in(
    topic: Option<&TopicImage>,
    partition: i32,
    shard_count: usize,
) -> Result<usize, ErrorCode> {
    topic
        .and_then(|t| owner_shard(t, partition, shard_count))
        .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)
}

//! Which shard owns a partition, and whether this broker serves it: the
//! placement recorded in the metadata (its slot, modulo this broker's shard
//! count) and its leader.

use engine::metadata::{TopicImage, NO_LEADER};
use engine::protocol::{self as codes, ErrorCode};

/// The shard that owns a partition on this broker, from its slot.
pub fn owner_shard(topic: &TopicImage, partition: i32, shard_count: usize) -> Option<usize> {
    let slot = topic.slot(u32::try_from(partition).ok()?)?;
    Some(slot as usize % shard_count)
}

/// The shard that serves a partition on broker `node_id`, which must lead
/// it, or the error a client should see: UNKNOWN_TOPIC_OR_PARTITION,
/// LEADER_NOT_AVAILABLE (no leader now) or NOT_LEADER_OR_FOLLOWER (another
/// broker leads; the client refreshes its metadata).
pub fn route_in(
    topic: Option<&TopicImage>,
    partition: i32,
    shard_count: usize,
    node_id: i32,
) -> Result<usize, ErrorCode> {
    let topic = topic.ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
    let image = u32::try_from(partition)
        .ok()
        .and_then(|p| topic.partition(p))
        .ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)?;
    match image.serving_leader(node_id) {
        leader if leader == node_id => {
            owner_shard(topic, partition, shard_count).ok_or(codes::UNKNOWN_TOPIC_OR_PARTITION)
        }
        NO_LEADER => Err(codes::LEADER_NOT_AVAILABLE),
        _ => Err(codes::NOT_LEADER_OR_FOLLOWER),
    }
}

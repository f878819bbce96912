//! The classic consumer group protocol: the coordinator's membership state
//! machine (Empty → PreparingRebalance → CompletingRebalance → Stable, Dead),
//! committed offsets, and their records in the internal `__consumer_offsets`
//! topic. Pure: time comes in as `now_ms`, member ids from the caller, and the
//! shard persists what it is told to.

mod coordinator;
mod records;

pub use coordinator::*;
pub use records::*;

/// The internal topic that holds committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// `offsets.topic.num.partitions` default.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: u32 = 50;

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode`
/// made non-negative, modulo the partition count, exactly like Kafka, so
/// tools that compute a group's partition agree.
pub fn offsets_partition_for(group_id: &str, partition_count: u32) -> i32 {
    assert!(partition_count > 0);
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(unit as i32);
    }
    ((hash & 0x7fff_ffff) as u32 % partition_count) as i32
}

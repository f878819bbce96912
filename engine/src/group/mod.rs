//! Consumer groups: the coordinator's state machines, committed offsets, and
//! their records in the internal `__consumer_offsets` topic. Pure: time comes
//! in as `now_ms`, member ids from the caller, and the shard persists what it
//! is told to.
//!
//! - `coordinator`: the groups one shard coordinates, loading, timers.
//! - `classic/`: the classic protocol (Empty → PreparingRebalance →
//!   CompletingRebalance → Stable, Dead).
//! - `offsets`: committed offsets, commits in flight, retention.
//! - `types`: configuration, requests and answers, `Effects`.
//! - `records`: the `__consumer_offsets` record formats.

mod classic;
mod coordinator;
mod offsets;
mod records;
#[cfg(test)]
mod testing;
mod txn_offsets;
mod types;

pub use classic::{Group, GroupState};
pub use coordinator::Coordinator;
pub use offsets::CommitId;
pub use records::{GroupLogRecord, OffsetAndMetadata, PersistedGroup, PersistedMember};
pub use types::{
    Completion, Effects, GroupConfig, GroupDescription, JoinMember, JoinRequest, JoinResult,
    MemberDescription, Protocol, RequestToken, SyncRequest, SyncResult,
};

/// The internal topic that holds committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// `offsets.topic.num.partitions` default.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: u32 = 50;

/// The `__consumer_offsets` partition of a group, exactly like Kafka's
/// `Utils.abs(groupId.hashCode()) % partitionCount`, so tools that compute a
/// group's partition agree: Java's `String.hashCode` over UTF-16 code units,
/// then `Utils.abs`, which is `Math.abs` except that `i32::MIN` maps to 0
/// (not a bit mask: for negative hashes the two differ).
pub fn offsets_partition_for(group_id: &str, partition_count: u32) -> i32 {
    assert!(partition_count > 0);
    let mut hash: i32 = 0;
    for unit in group_id.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(unit as i32);
    }
    let non_negative = if hash == i32::MIN { 0 } else { hash.abs() };
    (non_negative as u32 % partition_count) as i32
}

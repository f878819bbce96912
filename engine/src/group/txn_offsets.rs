//! Offsets committed inside a transaction (TxnOffsetCommit): their records
//! are appended to `__consumer_offsets` in the producer's transaction and
//! stay pending until that transaction's marker reaches the partition. A
//! commit marker makes them the group's committed offsets, an abort drops
//! them; meanwhile OffsetFetch does not return them, and answers
//! UNSTABLE_OFFSET_COMMIT to a fetch that requires stable offsets.
//!
//! Known gap (Kafka orders the two by their log offsets): a plain
//! OffsetCommit of the same partition appended after the transactional one
//! but before its marker is overwritten when the marker commits.

use std::collections::BTreeMap;

use super::records::{GroupLogRecord, OffsetAndMetadata};
use super::Coordinator;

/// (group, topic, partition) -> offset, per producer id.
pub(super) type PendingTxnOffsets =
    BTreeMap<i64, BTreeMap<(String, String, i32), OffsetAndMetadata>>;

impl Coordinator {
    /// A TxnOffsetCommit's records, appended in `producer_id`'s transaction,
    /// are durable (or were replayed at load): they wait for its marker.
    pub fn add_txn_offsets(&mut self, producer_id: i64, records: &[GroupLogRecord]) {
        let pending = self.txn_offsets.entry(producer_id).or_default();
        for record in records {
            if let GroupLogRecord::Offset {
                group_id,
                topic,
                partition,
                value: Some(offset),
            } = record
            {
                pending.insert(
                    (group_id.clone(), topic.clone(), *partition),
                    offset.clone(),
                );
            }
        }
        if pending.is_empty() {
            self.txn_offsets.remove(&producer_id);
        }
    }

    /// `producer_id`'s transaction marker reached this partition: a commit
    /// makes its pending offsets the groups' committed ones, an abort drops
    /// them. Returns how many offsets it settled.
    pub fn complete_txn_offsets(&mut self, producer_id: i64, commit: bool, now_ms: i64) -> usize {
        let Some(pending) = self.txn_offsets.remove(&producer_id) else {
            return 0;
        };
        let settled = pending.len();
        if commit {
            for ((group_id, topic, partition), offset) in pending {
                self.apply_offset(&group_id, &topic, partition, Some(&offset), now_ms);
                self.debug_check(&group_id);
            }
        }
        settled
    }

    /// Whether a transaction holds an offset of this group's partition that
    /// is not settled yet (OffsetFetch with `require_stable` answers
    /// UNSTABLE_OFFSET_COMMIT for it).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let key = (group_id.to_string(), topic.to_string(), partition);
        self.txn_offsets.values().any(|p| p.contains_key(&key))
    }

    /// Forgets the pending offsets of groups this coordinator no longer
    /// owns (their partition moved; the new owner replays them).
    pub(super) fn unload_txn_offsets(&mut self, leaving: &mut impl FnMut(&str) -> bool) {
        for pending in self.txn_offsets.values_mut() {
            pending.retain(|(group_id, _, _), _| !leaving(group_id));
        }
        self.txn_offsets.retain(|_, pending| !pending.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::GroupConfig;

    fn offset(record_offset: i64) -> GroupLogRecord {
        GroupLogRecord::Offset {
            group_id: "g".to_string(),
            topic: "t".to_string(),
            partition: 0,
            value: Some(OffsetAndMetadata {
                offset: record_offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            }),
        }
    }

    fn committed(c: &Coordinator) -> Option<i64> {
        c.fetch_offsets("g", Some(&[("t".to_string(), vec![0])]))[0]
            .2
            .as_ref()
            .map(|o| o.offset)
    }

    #[test]
    fn transactional_offsets_wait_for_their_marker() {
        let mut c = Coordinator::new(GroupConfig::default());
        c.apply(&offset(5), 0);
        c.add_txn_offsets(77, &[offset(9)]);
        assert_eq!(committed(&c), Some(5), "invisible until the marker");
        assert!(c.has_pending_txn_offset("g", "t", 0));
        assert!(!c.has_pending_txn_offset("g", "t", 1));
        assert_eq!(c.complete_txn_offsets(77, true, 1), 1);
        assert_eq!(committed(&c), Some(9));
        assert!(!c.has_pending_txn_offset("g", "t", 0));
        c.check_invariants();
    }

    #[test]
    fn an_abort_drops_them_and_other_producers_are_untouched() {
        let mut c = Coordinator::new(GroupConfig::default());
        c.add_txn_offsets(1, &[offset(3)]);
        c.add_txn_offsets(2, &[offset(4)]);
        assert_eq!(c.complete_txn_offsets(1, false, 1), 1);
        assert_eq!(committed(&c), None);
        assert!(
            c.has_pending_txn_offset("g", "t", 0),
            "producer 2's is pending"
        );
        assert_eq!(c.complete_txn_offsets(2, true, 2), 1);
        assert_eq!(committed(&c), Some(4));
        assert_eq!(c.complete_txn_offsets(2, true, 3), 0, "settled once");
    }

    #[test]
    fn unloading_a_group_forgets_its_pending_offsets() {
        let mut c = Coordinator::new(GroupConfig::default());
        c.add_txn_offsets(1, &[offset(3)]);
        c.unload(|g| g == "g");
        assert!(!c.has_pending_txn_offset("g", "t", 0));
        assert_eq!(c.complete_txn_offsets(1, true, 1), 0);
    }
}

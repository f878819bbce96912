//! Committed offsets: whether an OffsetCommit may go ahead, commits between
//! their append and their acknowledgement, OffsetFetch, OffsetDelete, and
//! retention. A group's offsets live in its `Group`. A deletion (DeleteGroups,
//! OffsetDelete, expiry) wins over every commit appended before its
//! tombstone, so memory never holds an offset that a reload of the log would
//! not: deleted offsets do not come back.

use std::collections::{BTreeMap, BTreeSet};

use super::classic::{Group, GroupState};
use super::records::{GroupLogRecord, OffsetAndMetadata};
use super::{Coordinator, Effects, GroupConfig};
use crate::protocol::{self as codes, ErrorCode};

/// An offset commit between its append and its acknowledgement.
pub type CommitId = u64;

/// Offset commits appended and not yet durable, and the offsets deleted
/// meanwhile: a commit appended before a deletion's tombstone must not be
/// applied after it, or memory would hold what a reload of the log does not.
#[derive(Debug, Default)]
pub(super) struct InFlightCommits {
    next_id: CommitId,
    in_flight: BTreeSet<CommitId>,
    /// (group, topic, partition) → the first commit id appended after its
    /// latest deletion. Empty when no commit is in flight.
    deleted: BTreeMap<(String, String, i32), CommitId>,
}

impl InFlightCommits {
    /// Deletes a committed offset for good: its tombstone goes to the log,
    /// and no commit in flight, appended before that tombstone, applies.
    pub(super) fn tombstone(
        &mut self,
        effects: &mut Effects,
        group_id: &str,
        topic: String,
        partition: i32,
    ) {
        if !self.in_flight.is_empty() {
            self.deleted.insert(
                (group_id.to_string(), topic.clone(), partition),
                self.next_id,
            );
        }
        effects.persist.push(GroupLogRecord::Offset {
            group_id: group_id.to_string(),
            topic,
            partition,
            value: None,
        });
    }

    /// Ids are handed out in order, and deletions are remembered only while
    /// a commit they may supersede is in flight. O(deletions remembered).
    pub(super) fn check_invariants(&self) {
        assert!(
            !self.in_flight.is_empty() || self.deleted.is_empty(),
            "deletions remembered with no commit in flight"
        );
        if let Some(&last) = self.in_flight.last() {
            assert!(last < self.next_id, "commit {last} in flight, never begun");
        }
        for &after in self.deleted.values() {
            assert!(after <= self.next_id);
        }
    }
}

impl Coordinator {
    /// An offset commit that passed `check_commit` is being appended: call
    /// this when its records are handed to the log, then `finish_commit` once
    /// they are durable (or `abort_commit` if they cannot be).
    pub fn begin_commit(&mut self) -> CommitId {
        let id = self.commits.next_id;
        self.commits.next_id += 1;
        self.commits.in_flight.insert(id);
        if cfg!(debug_assertions) {
            self.commits.check_invariants();
        }
        id
    }

    /// Applies a durable commit's offset records, except those whose
    /// partition was deleted (DeleteGroups, OffsetDelete, expiry) after the
    /// commit was appended: the deletion's tombstone follows the commit in the
    /// log, so a reload would not have them either.
    pub fn finish_commit(&mut self, id: CommitId, records: &[GroupLogRecord], now_ms: i64) {
        for record in records {
            let superseded = match record {
                GroupLogRecord::Offset {
                    group_id,
                    topic,
                    partition,
                    ..
                } => self
                    .commits
                    .deleted
                    .get(&(group_id.clone(), topic.clone(), *partition))
                    .is_some_and(|&after| id < after),
                GroupLogRecord::Group { .. } => false,
            };
            if !superseded {
                self.apply(record, now_ms);
            }
        }
        self.abort_commit(id);
    }

    /// Forgets a commit that will not be acknowledged.
    pub fn abort_commit(&mut self, id: CommitId) {
        assert!(
            self.commits.in_flight.remove(&id),
            "commit {id} is not in flight"
        );
        if self.commits.in_flight.is_empty() {
            self.commits.deleted.clear();
        }
        if cfg!(debug_assertions) {
            self.commits.check_invariants();
        }
    }

    /// Whether an OffsetCommit may go ahead (checked before the offsets are
    /// made durable). A negative generation (with no member id, normally) is
    /// a commit from a client that manages its own assignment: allowed when
    /// the group is Empty, as in Kafka; otherwise the member must be known.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> ErrorCode {
        if group_id.is_empty() {
            return codes::INVALID_GROUP_ID;
        }
        let Some(group) = self.groups.get(group_id) else {
            return if generation_id < 0 {
                codes::NONE
            } else {
                codes::ILLEGAL_GENERATION
            };
        };
        if group.state == GroupState::Dead {
            return codes::COORDINATOR_NOT_AVAILABLE;
        }
        if group.is_fenced(member_id, group_instance_id) {
            return codes::FENCED_INSTANCE_ID;
        }
        if generation_id < 0 && group.state == GroupState::Empty {
            return codes::NONE;
        }
        let check = group.check_member(member_id, group_instance_id);
        if check != codes::NONE {
            return check;
        }
        if generation_id != group.generation_id {
            return codes::ILLEGAL_GENERATION;
        }
        if group.state == GroupState::CompletingRebalance {
            return codes::REBALANCE_IN_PROGRESS;
        }
        codes::NONE
    }

    /// A committed offset, or its tombstone, as the log holds it.
    pub(super) fn apply_offset(
        &mut self,
        group_id: &str,
        topic: &str,
        partition: i32,
        value: Option<&OffsetAndMetadata>,
        now_ms: i64,
    ) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now_ms));
        match value {
            Some(v) => {
                group
                    .offsets
                    .insert((topic.to_string(), partition), v.clone());
            }
            None => {
                group.offsets.remove(&(topic.to_string(), partition));
            }
        }
    }

    /// Committed offsets: for the listed partitions, or all when None.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<OffsetAndMetadata>)> {
        let group = self.groups.get(group_id);
        match partitions {
            Some(list) => list
                .iter()
                .flat_map(|(topic, indexes)| {
                    indexes.iter().map(move |&i| {
                        let found = group
                            .and_then(|g| g.offsets.get(&(topic.clone(), i)))
                            .cloned();
                        (topic.clone(), i, found)
                    })
                })
                .collect(),
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// OffsetDelete: refuses topics the group's members are subscribed to
    /// (`subscribed` says which topics those are).
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed: impl Fn(&Group, &str) -> bool,
    ) -> (ErrorCode, Vec<ErrorCode>, Effects) {
        let mut effects = Effects::default();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (codes::GROUP_ID_NOT_FOUND, Vec::new(), effects);
        };
        let mut errors = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            if !group.members.is_empty() && subscribed(group, topic) {
                errors.push(codes::GROUP_SUBSCRIBED_TO_TOPIC);
                continue;
            }
            if group.offsets.remove(&(topic.clone(), *partition)).is_some() {
                self.commits
                    .tombstone(&mut effects, group_id, topic.clone(), *partition);
            }
            errors.push(codes::NONE);
        }
        self.debug_check(group_id);
        (codes::NONE, errors, effects)
    }
}

impl Group {
    /// When a committed offset of an Empty group expires. A group that only
    /// stores offsets (no protocol type) counts from each commit, as Kafka
    /// does; a consumer group from when it became Empty (or the commit, if
    /// later).
    fn offset_expiry_ms(&self, offset: &OffsetAndMetadata, config: &GroupConfig) -> i64 {
        let from = if self.protocol_type.is_some() {
            offset.commit_timestamp_ms.max(self.empty_since_ms)
        } else {
            offset.commit_timestamp_ms
        };
        from.saturating_add(config.offsets_retention_ms)
    }

    /// When the first committed offset expires if the group stays Empty;
    /// `i64::MAX` without offsets.
    pub(super) fn offsets_deadline_ms(&self, config: &GroupConfig) -> i64 {
        self.offsets
            .values()
            .map(|offset| self.offset_expiry_ms(offset, config))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Retention, in an Empty group: deletes the offsets that expired.
    pub(super) fn expire_offsets(
        &mut self,
        config: &GroupConfig,
        commits: &mut InFlightCommits,
        effects: &mut Effects,
        now_ms: i64,
    ) {
        debug_assert_eq!(self.state, GroupState::Empty);
        let expired: Vec<(String, i32)> = self
            .offsets
            .iter()
            .filter(|(_, o)| self.offset_expiry_ms(o, config) <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.offsets.remove(&key);
            let (topic, partition) = key;
            commits.tombstone(effects, &self.group_id, topic, partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::group::testing::*;

    // ---- committing --------------------------------------------------

    #[test]
    fn check_commit_rules() {
        let mut h = Harness::new(DELAY_MS);
        // Unknown group: only clients outside group management.
        assert_eq!(h.c.check_commit(GROUP, -1, "", None), codes::NONE);
        assert_eq!(
            h.c.check_commit(GROUP, 1, "m", None),
            codes::ILLEGAL_GENERATION
        );
        // An Empty group (created by a standalone commit).
        h.c.apply(&offset_record("t", 0, Some(offset(5, 0))), 0);
        assert_eq!(h.group().state, GroupState::Empty);
        assert_eq!(h.c.check_commit(GROUP, -1, "", None), codes::NONE);
        assert_eq!(
            h.c.check_commit(GROUP, -1, "stale-member", None),
            codes::NONE
        );
        assert_eq!(
            h.c.check_commit(GROUP, 0, "", None),
            codes::UNKNOWN_MEMBER_ID
        );

        // PreparingRebalance: members may still commit (with the old generation).
        let (a, _, _) = h.join_new(range("a"), 10);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.c.check_commit(GROUP, -1, "", None),
            codes::UNKNOWN_MEMBER_ID
        );
        assert_eq!(h.c.check_commit(GROUP, 0, &a, None), codes::NONE);
        // CompletingRebalance: not until the assignment is known.
        h.c.tick(10 + DELAY_MS);
        assert_eq!(
            h.c.check_commit(GROUP, 1, &a, None),
            codes::REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            h.c.check_commit(GROUP, 0, &a, None),
            codes::ILLEGAL_GENERATION
        );
        h.sync(&a, 1, &[(&a, "A")], 10 + DELAY_MS);
        // Stable.
        assert_eq!(h.c.check_commit(GROUP, 1, &a, None), codes::NONE);
        assert_eq!(
            h.c.check_commit(GROUP, 2, &a, None),
            codes::ILLEGAL_GENERATION
        );
        assert_eq!(
            h.c.check_commit(GROUP, 1, "other", None),
            codes::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            h.c.check_commit(GROUP, -1, "", None),
            codes::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn apply_offsets_and_tombstones() {
        let mut h = Harness::new(0);
        h.c.apply(&offset_record("t", 0, Some(offset(5, 100))), 100);
        h.c.apply(&offset_record("t", 1, Some(offset(7, 100))), 100);
        h.c.apply(&offset_record("u", 0, Some(offset(9, 100))), 100);
        h.c.apply(&offset_record("t", 0, Some(offset(6, 200))), 200);
        assert_eq!(h.group().offsets().len(), 3);
        assert_eq!(h.group().offsets()[&("t".to_string(), 0)], offset(6, 200));

        let all = h.c.fetch_offsets(GROUP, None);
        assert_eq!(
            all,
            vec![
                ("t".to_string(), 0, Some(offset(6, 200))),
                ("t".to_string(), 1, Some(offset(7, 100))),
                ("u".to_string(), 0, Some(offset(9, 100))),
            ]
        );
        let some =
            h.c.fetch_offsets(GROUP, Some(&[("t".to_string(), vec![1, 5])]));
        assert_eq!(
            some,
            vec![
                ("t".to_string(), 1, Some(offset(7, 100))),
                ("t".to_string(), 5, None),
            ]
        );
        assert!(h.c.fetch_offsets("nope", None).is_empty());
        assert_eq!(
            h.c.fetch_offsets("nope", Some(&[("t".to_string(), vec![0])])),
            vec![("t".to_string(), 0, None)]
        );

        h.c.apply(&offset_record("t", 1, None), 300);
        h.c.apply(&offset_record("t", 9, None), 300); // absent: no-op
        assert_eq!(h.group().offsets().len(), 2);
        assert!(!h.group().offsets().contains_key(&("t".to_string(), 1)));
        // A group tombstone does not drop a group that still has offsets.
        h.c.apply(
            &GroupLogRecord::Group {
                group_id: GROUP.to_string(),
                value: None,
            },
            300,
        );
        assert!(h.c.group(GROUP).is_some());
        h.c.apply(&offset_record("t", 0, None), 300);
        h.c.apply(&offset_record("u", 0, None), 300);
        h.c.apply(
            &GroupLogRecord::Group {
                group_id: GROUP.to_string(),
                value: None,
            },
            300,
        );
        assert!(h.c.group(GROUP).is_none());
    }

    /// Found by the group simulation: a commit appended, then its offset
    /// deleted (its tombstone appended after the commit), then the commit
    /// acknowledged. Memory must end as a reload of that log does: without
    /// the offset. Commits appended after the deletion still apply.
    #[test]
    fn commit_appended_before_a_deletion_is_not_applied_after_it() {
        let mut h = Harness::new(DELAY_MS);
        let old = offset_record("t", 0, Some(offset(1, 0)));
        h.c.apply(&old, 0);
        let mut log = vec![old];
        let racing = vec![offset_record("t", 0, Some(offset(2, 10)))];
        log.extend(racing.iter().cloned());
        let id = h.c.begin_commit();
        let (error, _, effects) = h.c.delete_offsets(GROUP, &[("t".into(), 0)], |_, _| false);
        assert_eq!(error, codes::NONE);
        log.extend(effects.persist);
        let later = vec![offset_record("t", 1, Some(offset(3, 20)))];
        log.extend(later.iter().cloned());
        let later_id = h.c.begin_commit();
        h.c.finish_commit(id, &racing, 30);
        h.c.finish_commit(later_id, &later, 30);

        let mut reloaded = Coordinator::new(config(DELAY_MS));
        for record in &log {
            reloaded.apply(record, 40);
        }
        assert_eq!(
            h.c.fetch_offsets(GROUP, None),
            reloaded.fetch_offsets(GROUP, None)
        );
        assert_eq!(
            h.c.fetch_offsets(GROUP, None),
            vec![("t".to_string(), 1, Some(offset(3, 20)))]
        );
        // With nothing in flight, deletions are forgotten.
        assert!(h.c.commits.deleted.is_empty() && h.c.commits.in_flight.is_empty());

        // The same through DeleteGroups: the commit does not bring it back.
        let id = h.c.begin_commit();
        assert_eq!(h.c.delete_group(GROUP).0, codes::NONE);
        h.c.finish_commit(id, &later, 50);
        assert!(h.c.group(GROUP).is_none());
    }

    // ---- retention ---------------------------------------------------

    #[test]
    fn standalone_offsets_expire_from_their_commit_time() {
        let retention = GroupConfig::default().offsets_retention_ms;
        let mut h = Harness::new(0);
        h.c.apply(&offset_record("t", 0, Some(offset(5, 1_000))), 1_000);
        h.c.apply(&offset_record("t", 1, Some(offset(5, 5_000))), 5_000);
        assert_eq!(h.c.next_deadline_ms(), Some(1_000 + retention));
        let effects = h.c.tick(1_000 + retention - 1);
        assert!(effects.persist.is_empty());
        let effects = h.c.tick(1_000 + retention);
        assert_eq!(effects.persist, vec![offset_record("t", 0, None)]);
        assert_eq!(h.group().offsets().len(), 1);
        assert_eq!(h.c.next_deadline_ms(), Some(5_000 + retention));
        let effects = h.c.tick(5_000 + retention);
        assert_eq!(
            effects.persist,
            vec![
                offset_record("t", 1, None),
                GroupLogRecord::Group {
                    group_id: GROUP.to_string(),
                    value: None
                }
            ]
        );
        assert!(h.c.group(GROUP).is_none());
    }

    #[test]
    fn standalone_offsets_loaded_at_startup_still_expire_on_time() {
        let retention = GroupConfig::default().offsets_retention_ms;
        let mut h = Harness::new(0);
        // Loaded long after the commit: retention counts from the commit.
        let load = 1_000 + retention - 10;
        h.c.apply(&offset_record("t", 0, Some(offset(5, 1_000))), load);
        let effects = h.c.tick(1_000 + retention);
        assert_eq!(effects.persist[0], offset_record("t", 0, None));
        assert!(h.c.group(GROUP).is_none());
    }

    #[test]
    fn consumer_group_offsets_expire_only_once_the_group_is_empty() {
        let retention = GroupConfig::default().offsets_retention_ms;
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a")], 0);
        let a = &ids[0];
        assert_eq!(h.c.check_commit(GROUP, 1, a, None), codes::NONE);
        h.c.apply(&offset_record("t", 0, Some(offset(5, t))), t);
        let later = t + retention;
        assert_eq!(h.heartbeat(a, 1, later - 1), codes::NONE);
        let effects = h.c.tick(later);
        assert!(effects.persist.is_empty());
        assert_eq!(h.group().offsets().len(), 1);

        let (_, effects) = h.c.leave(GROUP, &[(a.clone(), None)], later);
        assert_eq!(h.state(), GroupState::Empty);
        assert_eq!(persisted_group(&effects).unwrap().state_timestamp_ms, later);
        assert!(h.c.tick(later + retention - 1).persist.is_empty());
        let effects = h.c.tick(later + retention);
        assert_eq!(
            effects.persist,
            vec![
                offset_record("t", 0, None),
                GroupLogRecord::Group {
                    group_id: GROUP.to_string(),
                    value: None
                }
            ]
        );
        assert!(h.c.group(GROUP).is_none());
    }

    #[test]
    fn empty_group_retention_survives_a_reload() {
        let retention = GroupConfig::default().offsets_retention_ms;
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a")], 0);
        h.c.apply(&offset_record("t", 0, Some(offset(5, t))), t);
        let (_, effects) = h.c.leave(GROUP, &[(ids[0].clone(), None)], t + 10);
        let record = effects.persist.last().unwrap().clone();

        // Reload well after the group became Empty.
        let mut reloaded = Coordinator::new(config(DELAY_MS));
        let load = t + retention - 100;
        reloaded.apply(&offset_record("t", 0, Some(offset(5, t))), load);
        reloaded.apply(&record, load);
        assert_eq!(reloaded.group(GROUP).unwrap().state, GroupState::Empty);
        assert!(reloaded.tick(t + 10 + retention - 1).persist.is_empty());
        let effects = reloaded.tick(t + 10 + retention);
        assert_eq!(effects.persist[0], offset_record("t", 0, None));
        assert!(reloaded.group(GROUP).is_none());
    }

    // ---- deleting offsets --------------------------------------------

    #[test]
    fn delete_offsets() {
        let mut h = Harness::new(DELAY_MS);
        let (error, errors, _) =
            h.c.delete_offsets(GROUP, &[("t".to_string(), 0)], |_, _| true);
        assert_eq!(error, codes::GROUP_ID_NOT_FOUND);
        assert!(errors.is_empty());

        let (ids, t) = form_group(&mut h, vec![dynamic("a")], 0);
        h.c.apply(&offset_record("t", 0, Some(offset(5, t))), t);
        h.c.apply(&offset_record("u", 0, Some(offset(6, t))), t);
        // The callback sees the group; "t" is subscribed.
        let subscribed = |g: &Group, topic: &str| {
            assert_eq!(g.member_metadata(), vec![Bytes::from("a")]);
            topic == "t"
        };
        let (error, errors, effects) = h.c.delete_offsets(
            GROUP,
            &[
                ("t".to_string(), 0),
                ("u".to_string(), 0),
                ("u".to_string(), 7),
            ],
            subscribed,
        );
        assert_eq!(error, codes::NONE);
        assert_eq!(
            errors,
            vec![codes::GROUP_SUBSCRIBED_TO_TOPIC, codes::NONE, codes::NONE]
        );
        assert_eq!(effects.persist, vec![offset_record("u", 0, None)]);
        assert_eq!(h.group().offsets().len(), 1);

        // Once Empty nothing is subscribed.
        h.c.leave(GROUP, &[(ids[0].clone(), None)], t + 1);
        let (error, errors, effects) =
            h.c.delete_offsets(GROUP, &[("t".to_string(), 0)], |_, _| true);
        assert_eq!((error, errors), (codes::NONE, vec![codes::NONE]));
        assert_eq!(effects.persist, vec![offset_record("t", 0, None)]);
    }
}

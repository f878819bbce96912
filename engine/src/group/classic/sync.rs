//! SyncGroup: followers wait for the leader's assignment, which completes the
//! generation (Stable) and answers every parked SyncGroup.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::state::GroupState;
use crate::group::{Completion, Coordinator, Effects, RequestToken, SyncRequest, SyncResult};
use crate::protocol as codes;

impl Coordinator {
    pub fn sync(&mut self, token: RequestToken, request: SyncRequest, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        let mut reply =
            |result: SyncResult| effects.completions.push((token, Completion::Sync(result)));
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            reply(SyncResult::error(codes::UNKNOWN_MEMBER_ID));
            return effects;
        };
        let check = group.check_member(&request.member_id, request.group_instance_id.as_deref());
        if check != codes::NONE {
            reply(SyncResult::error(check));
            return effects;
        }
        if request.generation_id != group.generation_id {
            reply(SyncResult::error(codes::ILLEGAL_GENERATION));
            return effects;
        }
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref());
        let name_mismatch = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != group.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            reply(SyncResult::error(codes::INCONSISTENT_GROUP_PROTOCOL));
            return effects;
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                reply(SyncResult::error(codes::UNKNOWN_MEMBER_ID))
            }
            GroupState::PreparingRebalance => {
                reply(SyncResult::error(codes::REBALANCE_IN_PROGRESS))
            }
            GroupState::Stable => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.last_heartbeat_ms = now_ms;
                reply(SyncResult {
                    error: codes::NONE,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                });
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.last_heartbeat_ms = now_ms;
                if let Some(previous) = member.awaiting_sync.replace(token) {
                    effects.completions.push((
                        previous,
                        Completion::Sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID)),
                    ));
                }
                if group.leader_id.as_deref() == Some(request.member_id.as_str()) {
                    let assignments: BTreeMap<String, Bytes> =
                        request.assignments.into_iter().collect();
                    for member in group.members.values_mut() {
                        member.assignment = assignments
                            .get(&member.member_id)
                            .cloned()
                            .unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    group.persist(&mut effects, now_ms);
                    for member in group.members.values_mut() {
                        if let Some(parked) = member.awaiting_sync.take() {
                            // Its session restarts now that it is answered.
                            member.last_heartbeat_ms = now_ms;
                            effects.completions.push((
                                parked,
                                Completion::Sync(SyncResult {
                                    error: codes::NONE,
                                    protocol_type: group.protocol_type.clone(),
                                    protocol_name: group.protocol_name.clone(),
                                    assignment: member.assignment.clone(),
                                }),
                            ));
                        }
                    }
                }
            }
        }
        self.debug_check(&request.group_id);
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::testing::*;

    // ---- forming a group ---------------------------------------------

    #[test]
    fn three_members_join_without_initial_delay() {
        let mut h = Harness::new(0);
        // Without a delay the first member completes a generation alone.
        let (a, ta, effects) = h.join_new(range("meta-a"), 0);
        let result = joined(&effects, ta);
        assert_eq!(
            (result.generation_id, result.leader.as_str()),
            (1, a.as_str())
        );
        assert_eq!(h.state(), GroupState::CompletingRebalance);

        // The next member starts a new rebalance; a has to rejoin.
        let (b, tb, effects) = h.join_new(range("meta-b"), 1);
        assert!(join_reply(&effects, tb).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(h.generation(), 1);
        let (token, effects) = h.sync(&a, 1, &[(&a, "x")], 2);
        assert_eq!(synced(&effects, token).error, codes::REBALANCE_IN_PROGRESS);
        assert_eq!(h.heartbeat(&a, 1, 2), codes::REBALANCE_IN_PROGRESS);
        assert_eq!(h.heartbeat(&b, 1, 2), codes::REBALANCE_IN_PROGRESS);

        let (c, tc, effects) = h.join_new(range("meta-c"), 3);
        assert!(join_reply(&effects, tc).is_none());
        let (ta, effects) = h.join(request(&a, None, range("meta-a")), 4);
        assert_eq!(effects.completions.len(), 3);

        let leader = joined(&effects, ta);
        assert_eq!(leader.error, codes::NONE);
        assert_eq!(leader.generation_id, 2);
        assert_eq!(leader.leader, a);
        assert_eq!(leader.protocol_name.as_deref(), Some("range"));
        let metadata: Vec<(String, Bytes)> = leader
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.metadata.clone()))
            .collect();
        assert_eq!(
            metadata,
            vec![
                (a.clone(), Bytes::from("meta-a")),
                (b.clone(), Bytes::from("meta-b")),
                (c.clone(), Bytes::from("meta-c")),
            ]
        );
        for (id, token) in [(&b, tb), (&c, tc)] {
            let follower = joined(&effects, token);
            assert_eq!(follower.error, codes::NONE);
            assert_eq!(&follower.member_id, id);
            assert_eq!(follower.generation_id, 2);
            assert_eq!(follower.leader, a);
            assert!(follower.members.is_empty(), "followers get no metadata");
        }
        assert_eq!(h.state(), GroupState::CompletingRebalance);

        // Followers sync first and wait for the leader.
        let (sb, effects) = h.sync(&b, 2, &[], 5);
        assert!(sync_reply(&effects, sb).is_none());
        let (sc, effects) = h.sync(&c, 2, &[], 5);
        assert!(sync_reply(&effects, sc).is_none());
        assert_eq!(h.heartbeat(&a, 2, 5), codes::NONE);
        assert_eq!(
            h.c.check_commit(GROUP, 2, &b, None),
            codes::REBALANCE_IN_PROGRESS
        );

        let (sa, effects) = h.sync(&a, 2, &[(&a, "A"), (&b, "B"), (&c, "C")], 6);
        for (token, assignment) in [(sa, "A"), (sb, "B"), (sc, "C")] {
            let result = synced(&effects, token);
            assert_eq!(result.error, codes::NONE);
            assert_eq!(result.assignment, Bytes::from(assignment));
            assert_eq!(result.protocol_name.as_deref(), Some("range"));
        }
        assert_eq!(h.state(), GroupState::Stable);
        let record = persisted_group(&effects).expect("group persisted when Stable");
        assert_eq!(record.generation_id, 2);
        assert_eq!(record.leader_id.as_deref(), Some(a.as_str()));
        assert_eq!(record.protocol_name.as_deref(), Some("range"));
        assert_eq!(record.protocol_type, "consumer");
        assert_eq!(record.state_timestamp_ms, 6);
        let members: Vec<(&str, &[u8], &[u8])> = record
            .members
            .iter()
            .map(|m| (m.member_id.as_str(), &m.subscription[..], &m.assignment[..]))
            .collect();
        assert_eq!(
            members,
            vec![
                (a.as_str(), &b"meta-a"[..], &b"A"[..]),
                (b.as_str(), &b"meta-b"[..], &b"B"[..]),
                (c.as_str(), &b"meta-c"[..], &b"C"[..]),
            ]
        );
        for id in [&a, &b, &c] {
            assert_eq!(h.heartbeat(id, 2, 7), codes::NONE);
            assert_eq!(h.c.check_commit(GROUP, 2, id, None), codes::NONE);
        }
        // A sync in Stable answers with the current assignment.
        let (token, effects) = h.sync(&c, 2, &[], 8);
        assert_eq!(synced(&effects, token).assignment, Bytes::from("C"));
    }

    // ---- generations -------------------------------------------------

    #[test]
    fn illegal_generation() {
        let mut h = Harness::new(0);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (token, effects) = h.sync(&a, 2, &[], 1);
        assert_eq!(synced(&effects, token).error, codes::ILLEGAL_GENERATION);
        let (token, effects) = h.sync(&a, 1, &[(&a, "x")], 1);
        assert_eq!(synced(&effects, token).error, codes::NONE);
        assert_eq!(h.state(), GroupState::Stable);
        for generation in [-1, 0, 2] {
            assert_eq!(h.heartbeat(&a, generation, 2), codes::ILLEGAL_GENERATION);
            let (token, effects) = h.sync(&a, generation, &[], 2);
            assert_eq!(synced(&effects, token).error, codes::ILLEGAL_GENERATION);
            if generation >= 0 {
                assert_eq!(
                    h.c.check_commit(GROUP, generation, &a, None),
                    codes::ILLEGAL_GENERATION
                );
            }
        }
        assert_eq!(h.heartbeat(&a, 1, 2), codes::NONE);
        assert_eq!(h.c.check_commit(GROUP, 1, &a, None), codes::NONE);
    }
}

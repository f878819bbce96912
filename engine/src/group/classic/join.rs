//! JoinGroup: finding the member id a request joins as (KIP-394's
//! MEMBER_ID_REQUIRED, static members taking over their instance's slot), the
//! protocols the members share, and when a join starts a rebalance.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::state::{Group, GroupState, Member};
use crate::group::{
    Completion, Coordinator, Effects, GroupConfig, JoinMember, JoinRequest, JoinResult, Protocol,
    RequestToken, SyncResult,
};
use crate::protocol as codes;

impl Coordinator {
    /// JoinGroup. `fresh_member_id` is used if the member needs a new id.
    pub fn join(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        fresh_member_id: String,
        now_ms: i64,
    ) -> Effects {
        let refused = if request.group_id.is_empty() {
            Some(codes::INVALID_GROUP_ID)
        } else if !(self.config.session_timeout_ms_min..=self.config.session_timeout_ms_max)
            .contains(&request.session_timeout_ms)
        {
            Some(codes::INVALID_SESSION_TIMEOUT)
        } else if !request.member_id.is_empty() && !self.groups.contains_key(&request.group_id) {
            // Like Kafka: a known-member join never creates a group.
            Some(codes::UNKNOWN_MEMBER_ID)
        } else {
            None
        };
        if let Some(error) = refused {
            let result = JoinResult::error(error, &request.member_id);
            return Effects {
                completions: vec![(token, Completion::Join(result))],
                persist: Vec::new(),
            };
        }
        let group_id = request.group_id.clone();
        let group = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(&group_id, now_ms));
        let effects = group.join(&self.config, token, request, fresh_member_id, now_ms);
        self.debug_check(&group_id);
        effects
    }
}

impl Group {
    /// JoinGroup in this group (which the call may just have created).
    fn join(
        &mut self,
        config: &GroupConfig,
        token: RequestToken,
        request: JoinRequest,
        fresh_member_id: String,
        now_ms: i64,
    ) -> Effects {
        let mut effects = Effects::default();
        let reply = |effects: &mut Effects, result: JoinResult| {
            effects.completions.push((token, Completion::Join(result)))
        };
        if self.state == GroupState::Dead {
            reply(
                &mut effects,
                JoinResult::error(codes::COORDINATOR_NOT_AVAILABLE, &request.member_id),
            );
            return effects;
        }
        if !self.supports(&request.protocol_type, &request.protocols) {
            reply(
                &mut effects,
                JoinResult::error(codes::INCONSISTENT_GROUP_PROTOCOL, &request.member_id),
            );
            return effects;
        }
        let instance = request.group_instance_id.clone();
        // A static member that restarted and took over its instance's slot.
        let mut replaced_static = false;
        // Work out which member id this request joins as.
        let member_id = if request.member_id.is_empty() {
            match instance
                .as_ref()
                .and_then(|i| self.static_members.get(i).cloned())
            {
                Some(old_id) => {
                    // A static member restarted: its new id replaces the old
                    // one, which is fenced from now on.
                    let was_leader = self.leader_id.as_deref() == Some(old_id.as_str());
                    if let Some(mut old) = self.remove_member(&old_id) {
                        replaced_static = true;
                        if let Some(parked) = old.awaiting_join.take() {
                            effects.completions.push((
                                parked,
                                Completion::Join(JoinResult::error(
                                    codes::FENCED_INSTANCE_ID,
                                    &old_id,
                                )),
                            ));
                        }
                        if let Some(parked) = old.awaiting_sync.take() {
                            effects.completions.push((
                                parked,
                                Completion::Sync(SyncResult::error(codes::FENCED_INSTANCE_ID)),
                            ));
                        }
                        old.member_id = fresh_member_id.clone();
                        old.awaiting_join = None;
                        old.awaiting_sync = None;
                        let same_protocols = old.protocols == request.protocols;
                        self.members.insert(fresh_member_id.clone(), old);
                        self.static_members
                            .insert(instance.clone().expect("static"), fresh_member_id.clone());
                        if was_leader {
                            self.leader_id = Some(fresh_member_id.clone());
                        }
                        if self.state == GroupState::Stable && same_protocols && !was_leader {
                            let member = self.members.get_mut(&fresh_member_id).expect("inserted");
                            member.last_heartbeat_ms = now_ms;
                            member.session_timeout_ms = request.session_timeout_ms;
                            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                            let result = self.join_result_for(&fresh_member_id);
                            self.persist(&mut effects, now_ms);
                            reply(&mut effects, result);
                            return effects;
                        }
                    }
                    fresh_member_id
                }
                None if instance.is_none() && request.requires_known_member_id => {
                    self.pending_members.insert(
                        fresh_member_id.clone(),
                        now_ms + request.session_timeout_ms as i64,
                    );
                    reply(
                        &mut effects,
                        JoinResult::error(codes::MEMBER_ID_REQUIRED, &fresh_member_id),
                    );
                    return effects;
                }
                None => fresh_member_id,
            }
        } else {
            let known = self.members.contains_key(&request.member_id);
            let pending = self.pending_members.contains_key(&request.member_id);
            if let Some(i) = &instance {
                match self.static_members.get(i) {
                    Some(current) if *current != request.member_id => {
                        reply(
                            &mut effects,
                            JoinResult::error(codes::FENCED_INSTANCE_ID, &request.member_id),
                        );
                        return effects;
                    }
                    Some(_) => {}
                    // Kafka: an instance id the group does not know, with a
                    // member id, is an unknown member.
                    None => {
                        reply(
                            &mut effects,
                            JoinResult::error(codes::UNKNOWN_MEMBER_ID, &request.member_id),
                        );
                        return effects;
                    }
                }
            }
            if pending {
                self.pending_members.remove(&request.member_id);
            }
            if !known && !pending {
                reply(
                    &mut effects,
                    JoinResult::error(codes::UNKNOWN_MEMBER_ID, &request.member_id),
                );
                return effects;
            }
            request.member_id.clone()
        };
        if !self.members.contains_key(&member_id) && self.members.len() >= config.group_members_max
        {
            reply(&mut effects, JoinResult::error(81, &member_id));
            return effects;
        }
        let is_new = !self.members.contains_key(&member_id);
        let protocols_changed = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols != request.protocols);
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                member_id: member_id.clone(),
                group_instance_id: instance.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocol_type: request.protocol_type.clone(),
                protocols: request.protocols.clone(),
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                awaiting_join: None,
                awaiting_sync: None,
            });
        member.protocols = request.protocols.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        if let Some(previous) = member.awaiting_join.replace(token) {
            // The same member joined twice: the older request is superseded.
            effects.completions.push((
                previous,
                Completion::Join(JoinResult::error(codes::UNKNOWN_MEMBER_ID, &member_id)),
            ));
        }
        if let Some(i) = &instance {
            self.static_members.insert(i.clone(), member_id.clone());
        }
        // group.max.size: only a new member grows the group, and only below it.
        assert!(!is_new || self.members.len() <= config.group_members_max);
        let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
        match self.state {
            GroupState::Stable if !is_new && !protocols_changed && !is_leader => {
                // A follower rejoining with nothing new: no rebalance.
                let member = self.members.get_mut(&member_id).expect("present");
                member.awaiting_join = None;
                let result = self.join_result_for(&member_id);
                reply(&mut effects, result);
                return effects;
            }
            // A replaced static member must rebalance here: the leader may
            // have been handed the old member id to assign to.
            GroupState::CompletingRebalance
                if !is_new && !protocols_changed && !replaced_static =>
            {
                let member = self.members.get_mut(&member_id).expect("present");
                member.awaiting_join = None;
                let result = self.join_result_for(&member_id);
                reply(&mut effects, result);
                return effects;
            }
            GroupState::PreparingRebalance => {}
            _ => self.prepare_rebalance(config, &mut effects, now_ms),
        }
        self.maybe_complete_join(&mut effects, now_ms, false);
        effects
    }

    /// Protocols every member supports, in the first member's preference.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let others: Vec<&Member> = members.collect();
        first
            .protocols
            .iter()
            .map(|p| p.name.clone())
            .filter(|name| {
                others
                    .iter()
                    .all(|m| m.protocols.iter().any(|p| &p.name == name))
            })
            .collect()
    }

    /// Kafka's vote: each member picks its most preferred candidate; the
    /// protocol with most votes wins (ties: the earlier candidate).
    pub(super) fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(choice) = member
                .protocols
                .iter()
                .find(|p| candidates.contains(&p.name))
            {
                *votes
                    .entry(candidates.iter().find(|c| **c == choice.name)?)
                    .or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .cloned()
    }

    /// Whether a joining member's protocols fit the group.
    fn supports(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|p| candidates.contains(&p.name))
    }

    pub(super) fn join_result_for(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader_id.as_deref() == Some(member_id);
        JoinResult {
            error: codes::NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::testing::*;
    use crate::group::GroupLogRecord;

    // ---- request validation ------------------------------------------

    #[test]
    fn empty_group_id_is_invalid() {
        let mut h = Harness::new(0);
        let mut req = dynamic("a");
        req.group_id = String::new();
        let (token, effects) = h.join(req, 0);
        let result = joined(&effects, token);
        assert_eq!(result.error, codes::INVALID_GROUP_ID);
        assert_eq!(result.generation_id, -1);
        assert!(h.c.group("").is_none());
        assert!(effects.persist.is_empty());
        assert_eq!(h.c.check_commit("", -1, "", None), codes::INVALID_GROUP_ID);
    }

    #[test]
    fn session_timeout_outside_the_configured_range_is_invalid() {
        let mut h = Harness::new(0);
        let defaults = GroupConfig::default();
        for timeout in [
            -1,
            0,
            defaults.session_timeout_ms_min - 1,
            defaults.session_timeout_ms_max + 1,
        ] {
            let mut req = dynamic("a");
            req.session_timeout_ms = timeout;
            let (token, effects) = h.join(req, 0);
            assert_eq!(
                joined(&effects, token).error,
                codes::INVALID_SESSION_TIMEOUT,
                "{timeout}"
            );
        }
        assert!(h.c.group(GROUP).is_none());
        // The bounds themselves are allowed.
        for timeout in [
            defaults.session_timeout_ms_min,
            defaults.session_timeout_ms_max,
        ] {
            let mut req = dynamic("a");
            req.session_timeout_ms = timeout;
            let (token, effects) = h.join(req, 0);
            assert_eq!(joined(&effects, token).error, codes::MEMBER_ID_REQUIRED);
        }
    }

    #[test]
    fn inconsistent_group_protocol() {
        let mut h = Harness::new(0);
        // A first member needs a protocol type and at least one protocol.
        let mut req = dynamic("a");
        req.protocol_type = String::new();
        let (token, effects) = h.join(req, 0);
        assert_eq!(
            joined(&effects, token).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );
        let (token, effects) = h.join(request("", None, Vec::new()), 0);
        assert_eq!(
            joined(&effects, token).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );

        let (a, token, effects) = h.join_new(protocols(&[("range", "a"), ("sticky", "a")]), 0);
        assert_eq!(joined(&effects, token).error, codes::NONE);
        // Another protocol type.
        let mut req = dynamic("b");
        req.protocol_type = "connect".to_string();
        let (token, effects) = h.join(req, 1);
        assert_eq!(
            joined(&effects, token).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );
        // No protocol in common.
        let (token, effects) = h.join(request("", None, protocols(&[("roundrobin", "b")])), 1);
        assert_eq!(
            joined(&effects, token).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );
        // One protocol in common is enough.
        let (token, effects) = h.join(request("", None, protocols(&[("sticky", "b")])), 1);
        assert_eq!(joined(&effects, token).error, codes::MEMBER_ID_REQUIRED);
        assert_eq!(h.members(), vec![a.clone()]);

        // SyncGroup v5 protocol type/name must match the group's.
        let mut sync = sync_request(&a, 1, &[]);
        sync.protocol_name = Some("roundrobin".to_string());
        let effects = h.c.sync(100, sync, 2);
        assert_eq!(
            synced(&effects, 100).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );
        let mut sync = sync_request(&a, 1, &[]);
        sync.protocol_type = Some("connect".to_string());
        let effects = h.c.sync(101, sync, 2);
        assert_eq!(
            synced(&effects, 101).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );
        let mut sync = sync_request(&a, 1, &[(&a, "x")]);
        sync.protocol_type = Some("consumer".to_string());
        sync.protocol_name = Some("range".to_string());
        let effects = h.c.sync(102, sync, 2);
        let result = synced(&effects, 102);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(result.protocol_name.as_deref(), Some("range"));
        assert_eq!(result.assignment, Bytes::from("x"));
    }

    #[test]
    fn group_max_size() {
        let mut h = Harness::with(GroupConfig {
            initial_rebalance_delay_ms: DELAY_MS,
            group_members_max: 2,
            ..GroupConfig::default()
        });
        h.join_new(range("a"), 0);
        h.join_new(range("b"), 0);
        let (token, effects) = h.join(dynamic("c"), 0);
        let id = joined(&effects, token).member_id.clone();
        let (token, effects) = h.join(request(&id, None, range("c")), 0);
        assert_eq!(joined(&effects, token).error, 81); // GROUP_MAX_SIZE_REACHED
        assert_eq!(h.members().len(), 2);
    }

    // ---- KIP-394 -----------------------------------------------------

    #[test]
    fn member_id_required_then_second_join_succeeds() {
        let mut h = Harness::new(0);
        let (token, effects) = h.join(dynamic("meta-a"), 0);
        let first = joined(&effects, token);
        assert_eq!(first.error, codes::MEMBER_ID_REQUIRED);
        assert_eq!(first.member_id, "m001");
        assert_eq!(first.generation_id, -1);
        assert!(first.members.is_empty());
        assert!(effects.persist.is_empty());
        assert_eq!(h.state(), GroupState::Empty);
        assert!(h.members().is_empty());
        assert!(h.group().pending_members.contains_key("m001"));

        let (token, effects) = h.join(request("m001", None, range("meta-a")), 10);
        let result = joined(&effects, token);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.member_id, "m001");
        assert_eq!(result.generation_id, 1);
        assert_eq!(result.leader, "m001");
        assert_eq!(result.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(result.protocol_name.as_deref(), Some("range"));
        assert_eq!(
            result.members,
            vec![JoinMember {
                member_id: "m001".to_string(),
                group_instance_id: None,
                metadata: Bytes::from("meta-a"),
            }]
        );
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        assert!(h.group().pending_members.is_empty());
    }

    #[test]
    fn pending_member_expires_after_its_session_timeout() {
        let mut h = Harness::new(0);
        let (token, effects) = h.join(dynamic("a"), 0);
        let id = joined(&effects, token).member_id.clone();
        let effects = h.c.tick(SESSION_MS as i64 - 1);
        assert!(effects.persist.is_empty());
        assert!(h.group().pending_members.contains_key(&id));
        let effects = h.c.tick(SESSION_MS as i64);
        // Nothing left: the group is dropped.
        assert!(h.c.group(GROUP).is_none());
        assert_eq!(
            effects.persist,
            vec![GroupLogRecord::Group {
                group_id: GROUP.to_string(),
                value: None
            }]
        );
        let (token, effects) = h.join(request(&id, None, range("a")), SESSION_MS as i64);
        assert_eq!(joined(&effects, token).error, codes::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn old_join_versions_get_a_member_id_at_once() {
        let mut h = Harness::new(0);
        let mut req = dynamic("a");
        req.requires_known_member_id = false;
        let (token, effects) = h.join(req, 0);
        let result = joined(&effects, token);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.member_id, "m001");
        assert_eq!(result.generation_id, 1);
    }

    #[test]
    fn pending_members_hold_the_join_until_they_rejoin_or_leave() {
        let mut h = Harness::new(DELAY_MS);
        let (_a, ta, _) = h.join_new(range("a"), 0);
        let (token, effects) = h.join(dynamic("b"), 10);
        let b = joined(&effects, token).member_id.clone();
        // The delay is over but b has not come back yet.
        let effects = h.c.tick(DELAY_MS);
        assert!(join_reply(&effects, ta).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        // b gives up: LeaveGroup of a pending member completes the join.
        let (errors, effects) = h.c.leave(GROUP, &[(b, None)], DELAY_MS + 1);
        assert_eq!(errors, vec![codes::NONE]);
        assert_eq!(joined(&effects, ta).error, codes::NONE);
        assert_eq!(h.state(), GroupState::CompletingRebalance);
    }

    // ---- protocol selection ------------------------------------------

    #[test]
    fn protocol_is_chosen_by_vote_among_common_protocols() {
        let mut h = Harness::new(DELAY_MS);
        let (a, ta, _) = h.join_new(
            protocols(&[
                ("range", "a-range"),
                ("roundrobin", "a-rr"),
                ("sticky", "a-st"),
            ]),
            0,
        );
        let (_, tb, _) = h.join_new(
            protocols(&[("roundrobin", "b-rr"), ("range", "b-range")]),
            0,
        );
        let (_, tc, _) = h.join_new(
            protocols(&[
                ("roundrobin", "c-rr"),
                ("range", "c-range"),
                ("sticky", "c-st"),
            ]),
            0,
        );
        let effects = h.c.tick(DELAY_MS);
        // "sticky" is not supported by b; "range" gets 1 vote, "roundrobin" 2.
        for token in [ta, tb, tc] {
            assert_eq!(
                joined(&effects, token).protocol_name.as_deref(),
                Some("roundrobin")
            );
        }
        let leader = joined(&effects, ta);
        assert_eq!(leader.member_id, a);
        assert_eq!(
            leader
                .members
                .iter()
                .map(|m| m.metadata.clone())
                .collect::<Vec<_>>(),
            vec![
                Bytes::from("a-rr"),
                Bytes::from("b-rr"),
                Bytes::from("c-rr")
            ]
        );
        // A newcomer must support the protocols all current members share.
        let (token, effects) = h.join(request("", None, protocols(&[("sticky", "d")])), 1);
        assert_eq!(
            joined(&effects, token).error,
            codes::INCONSISTENT_GROUP_PROTOCOL
        );
    }

    // ---- rejoining ---------------------------------------------------

    #[test]
    fn rejoining_in_stable() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), dynamic("b")], 0);
        let (a, b) = (&ids[0], &ids[1]);
        // A follower with unchanged protocols just gets the current state.
        let (token, effects) = h.join(request(b, None, range("b")), t + 1);
        let result = joined(&effects, token);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.generation_id, 1);
        assert_eq!(result.leader, *a);
        assert!(result.members.is_empty());
        assert_eq!(h.state(), GroupState::Stable);
        // Changed metadata triggers a rebalance.
        let (token, effects) = h.join(request(b, None, range("b2")), t + 2);
        assert!(join_reply(&effects, token).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        let (ta, effects) = h.join(request(a, None, range("a")), t + 3);
        assert_eq!(joined(&effects, ta).generation_id, 2);
        assert_eq!(joined(&effects, token).generation_id, 2);
        let (_, _) = h.sync(b, 2, &[], t + 4);
        h.sync(a, 2, &[(a, "A"), (b, "B")], t + 4);
        assert_eq!(h.state(), GroupState::Stable);
        // The leader rejoining triggers a rebalance (it may have seen a
        // metadata change).
        let (ta, effects) = h.join(request(a, None, range("a")), t + 5);
        assert!(join_reply(&effects, ta).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn rejoining_in_completing_rebalance_returns_the_current_generation() {
        let mut h = Harness::new(DELAY_MS);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (b, _, _) = h.join_new(range("b"), 0);
        h.c.tick(DELAY_MS);
        let (token, effects) = h.join(request(&a, None, range("a")), DELAY_MS + 1);
        let result = joined(&effects, token);
        assert_eq!(result.generation_id, 1);
        assert_eq!(result.members.len(), 2, "the leader gets the members again");
        let (token, effects) = h.join(request(&b, None, range("b")), DELAY_MS + 1);
        assert!(joined(&effects, token).members.is_empty());
        assert_eq!(h.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn a_second_join_of_the_same_member_supersedes_the_first() {
        let mut h = Harness::new(DELAY_MS);
        let (a, ta, _) = h.join_new(range("a"), 0);
        let (again, effects) = h.join(request(&a, None, range("a")), 1);
        assert_ne!(joined(&effects, ta).error, codes::NONE);
        assert!(join_reply(&effects, again).is_none());
        let effects = h.c.tick(DELAY_MS);
        assert_eq!(joined(&effects, again).error, codes::NONE);
        assert!(join_reply(&effects, ta).is_none());
    }

    // ---- static membership -------------------------------------------

    #[test]
    fn static_members_join_without_member_id_required() {
        let mut h = Harness::new(0);
        let (token, effects) = h.join(static_member("i1", "s"), 0);
        let result = joined(&effects, token);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.generation_id, 1);
        assert_eq!(result.members[0].group_instance_id.as_deref(), Some("i1"));
        assert_eq!(h.group().static_members.get("i1"), Some(&result.member_id));
    }

    #[test]
    fn static_member_replaced_by_a_new_instance_fences_the_old_id() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), static_member("i1", "s")], 0);
        let (a, old) = (&ids[0], &ids[1]);
        assert_eq!(h.group().leader_id.as_ref(), Some(a));

        // The static member restarts: empty member id, same instance id.
        let (token, effects) = h.join(static_member("i1", "s"), t + 1);
        let result = joined(&effects, token);
        assert_eq!(result.error, codes::NONE);
        let new = result.member_id.clone();
        assert_ne!(&new, old);
        // No rebalance: same generation, the old leader, no member list.
        assert_eq!(result.generation_id, 1);
        assert_eq!(result.leader, *a);
        assert!(result.members.is_empty());
        assert_eq!(h.state(), GroupState::Stable);
        assert_eq!(h.generation(), 1);
        let record = persisted_group(&effects).expect("replacement persisted");
        assert!(record.members.iter().any(|m| m.member_id == new
            && m.group_instance_id.as_deref() == Some("i1")
            && m.assignment == format!("assign-{old}").into_bytes()));
        assert!(!record.members.iter().any(|m| &m.member_id == old));

        // The old id is fenced everywhere.
        assert_eq!(
            h.c.heartbeat(GROUP, 1, old, Some("i1"), t + 2),
            codes::FENCED_INSTANCE_ID
        );
        let mut sync = sync_request(old, 1, &[]);
        sync.group_instance_id = Some("i1".to_string());
        let effects = h.c.sync(900, sync, t + 2);
        assert_eq!(synced(&effects, 900).error, codes::FENCED_INSTANCE_ID);
        assert_eq!(
            h.c.check_commit(GROUP, 1, old, Some("i1")),
            codes::FENCED_INSTANCE_ID
        );
        let (token, effects) = h.join(request(old, Some("i1"), range("s")), t + 2);
        assert_eq!(joined(&effects, token).error, codes::FENCED_INSTANCE_ID);
        let (errors, _) =
            h.c.leave(GROUP, &[(old.clone(), Some("i1".to_string()))], t + 2);
        assert_eq!(errors, vec![codes::FENCED_INSTANCE_ID]);
        // Without the instance id the old id is simply unknown.
        assert_eq!(h.heartbeat(old, 1, t + 2), codes::UNKNOWN_MEMBER_ID);

        // The new id carries on with the old assignment.
        assert_eq!(
            h.c.heartbeat(GROUP, 1, &new, Some("i1"), t + 3),
            codes::NONE
        );
        let mut sync = sync_request(&new, 1, &[]);
        sync.group_instance_id = Some("i1".to_string());
        let effects = h.c.sync(901, sync, t + 3);
        let result = synced(&effects, 901);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.assignment, Bytes::from(format!("assign-{old}")));
        assert_eq!(h.c.check_commit(GROUP, 1, &new, Some("i1")), codes::NONE);
        assert_eq!(h.state(), GroupState::Stable);
    }

    #[test]
    fn static_member_with_new_protocols_triggers_a_rebalance() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), static_member("i1", "s")], 0);
        let (token, effects) = h.join(static_member("i1", "s2"), t + 1);
        assert!(join_reply(&effects, token).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        let (ta, effects) = h.join(request(&ids[0], None, range("a")), t + 2);
        let leader = joined(&effects, ta);
        assert_eq!(leader.generation_id, 2);
        let new = joined(&effects, token).member_id.clone();
        assert!(leader
            .members
            .iter()
            .any(|m| m.member_id == new && m.metadata[..] == b"s2"[..]));
    }

    #[test]
    fn static_leader_replaced_in_stable_triggers_a_rebalance() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![static_member("i1", "s"), dynamic("b")], 0);
        let leader = h.group().leader_id.clone().unwrap();
        assert_eq!(leader, ids[0]);
        let (token, effects) = h.join(static_member("i1", "s"), t + 1);
        assert!(join_reply(&effects, token).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        let new = h.group().static_members.get("i1").cloned().unwrap();
        assert_eq!(
            h.group().leader_id.as_ref(),
            Some(&new),
            "leadership moves on"
        );
        let (_, effects) = h.join(request(&ids[1], None, range("b")), t + 2);
        let result = joined(&effects, token);
        assert_eq!(result.leader, new);
        assert_eq!(result.members.len(), 2);
    }

    #[test]
    fn static_member_replaced_during_completing_rebalance_triggers_a_rebalance() {
        let mut h = Harness::new(DELAY_MS);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (tok_s, effects) = h.join(static_member("i1", "s"), 0);
        assert!(join_reply(&effects, tok_s).is_none());
        let old = h.group().static_members.get("i1").cloned().unwrap();
        let effects = h.c.tick(DELAY_MS);
        assert_eq!(joined(&effects, tok_s).member_id, old);
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        let (parked, _) = h.sync(&old, 1, &[], DELAY_MS);

        // The static member restarts before the leader assigned: the leader
        // was given the old id, so a new round is needed.
        let (token, effects) = h.join(static_member("i1", "s"), DELAY_MS + 1);
        assert!(join_reply(&effects, token).is_none());
        assert_eq!(synced(&effects, parked).error, codes::FENCED_INSTANCE_ID);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        let (ta, effects) = h.join(request(&a, None, range("a")), DELAY_MS + 2);
        let leader = joined(&effects, ta);
        let new = joined(&effects, token).member_id.clone();
        assert_ne!(new, old);
        assert_eq!(leader.generation_id, 2);
        let listed: Vec<&String> = leader.members.iter().map(|m| &m.member_id).collect();
        assert!(listed.contains(&&new));
        assert!(!listed.contains(&&old));
    }

    #[test]
    fn known_member_id_with_an_unknown_instance_id_is_unknown() {
        let mut h = Harness::new(0);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (token, effects) = h.join(request(&a, Some("i9"), range("a")), 1);
        assert_eq!(joined(&effects, token).error, codes::UNKNOWN_MEMBER_ID);
        assert!(h.group().static_members.is_empty());
    }
}

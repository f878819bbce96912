//! The rebalance: PreparingRebalance gathers the members' JoinGroups (after
//! the initial delay, until the rebalance timeout), then the next generation
//! starts in CompletingRebalance, where the leader's SyncGroup is awaited.

use bytes::Bytes;

use super::state::{Group, GroupState};
use crate::group::{Completion, Effects, GroupConfig, SyncResult};
use crate::protocol as codes;

impl Group {
    pub(super) fn prepare_rebalance(
        &mut self,
        config: &GroupConfig,
        effects: &mut Effects,
        now_ms: i64,
    ) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being completed is void: waiting followers retry.
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(token) = member.awaiting_sync.take() {
                    effects.completions.push((
                        token,
                        Completion::Sync(SyncResult::error(codes::REBALANCE_IN_PROGRESS)),
                    ));
                }
            }
        }
        let rebalance_timeout_ms = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0);
        if self.state == GroupState::Empty {
            self.initial_delay_until_ms = Some(
                now_ms
                    + config
                        .initial_rebalance_delay_ms
                        .min(rebalance_timeout_ms.max(0)),
            );
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// Completes the join phase if everyone has rejoined (or `force`, at the
    /// rebalance deadline: stragglers are removed).
    pub(super) fn maybe_complete_join(&mut self, effects: &mut Effects, now_ms: i64, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let delayed = self
            .initial_delay_until_ms
            .is_some_and(|until| now_ms < until);
        if !force && (!self.all_joined() || delayed) {
            return;
        }
        if force {
            // Like Kafka, only dynamic stragglers are removed: a static
            // member that has not rejoined (it may be restarting) keeps its
            // place until its session expires.
            let stragglers: Vec<String> = self
                .members
                .values()
                .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
                .map(|m| m.member_id.clone())
                .collect();
            for id in stragglers {
                self.remove_member(&id);
            }
            self.pending_members.clear();
            let leader_joined = self
                .leader_id
                .as_ref()
                .and_then(|l| self.members.get(l))
                .is_some_and(|m| m.awaiting_join.is_some());
            if !leader_joined {
                match self.members.values().find(|m| m.awaiting_join.is_some()) {
                    Some(joined) => self.leader_id = Some(joined.member_id.clone()),
                    None if !self.members.is_empty() => {
                        // Nobody rejoined: wait another rebalance timeout
                        // while session expiry removes the silent members.
                        let rebalance_timeout_ms = self
                            .members
                            .values()
                            .map(|m| m.rebalance_timeout_ms as i64)
                            .max()
                            .unwrap_or(0);
                        self.rebalance_deadline_ms = now_ms + rebalance_timeout_ms;
                        return;
                    }
                    None => {}
                }
            }
        }
        self.initial_delay_until_ms = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.empty_since_ms = now_ms;
            self.persist(effects, now_ms);
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader_id
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader_id = self.members.keys().next().cloned();
        }
        assert!(
            self.protocol_name.is_some(),
            "members always share a protocol"
        );
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            let member = self.members.get_mut(&id).expect("listed");
            member.last_heartbeat_ms = now_ms;
            if let Some(token) = member.awaiting_join.take() {
                effects.completions.push((token, Completion::Join(result)));
            }
        }
    }

    /// After members left or expired: start (or finish) a rebalance.
    pub(super) fn on_membership_change(
        &mut self,
        config: &GroupConfig,
        effects: &mut Effects,
        now_ms: i64,
    ) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(config, effects, now_ms);
                self.maybe_complete_join(effects, now_ms, false);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(effects, now_ms, false),
            GroupState::Empty | GroupState::Dead => {}
        }
        if self.members.is_empty()
            && self.state != GroupState::PreparingRebalance
            && self.state != GroupState::Empty
        {
            self.state = GroupState::Empty;
            self.empty_since_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::testing::*;
    use crate::group::GroupLogRecord;

    // ---- the initial delay -------------------------------------------

    #[test]
    fn initial_rebalance_delay_holds_the_join_until_tick_passes_it() {
        let mut h = Harness::new(DELAY_MS);
        let (a, ta, effects) = h.join_new(range("meta-a"), 0);
        assert!(effects.completions.is_empty());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        let (b, tb, effects) = h.join_new(range("meta-b"), 100);
        assert!(join_reply(&effects, tb).is_none());
        let (c, tc, effects) = h.join_new(range("meta-c"), 200);
        assert!(join_reply(&effects, tc).is_none());
        for now in [1_000, DELAY_MS - 1] {
            let effects = h.c.tick(now);
            assert!(effects.completions.is_empty(), "{now}");
            assert_eq!(h.state(), GroupState::PreparingRebalance);
        }
        // Heartbeats meanwhile (generation 0) say a rebalance is on.
        assert_eq!(h.heartbeat(&a, 0, 500), codes::REBALANCE_IN_PROGRESS);

        let effects = h.c.tick(DELAY_MS);
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        assert_eq!(h.generation(), 1);
        let leader = joined(&effects, ta);
        assert_eq!(leader.leader, a);
        assert_eq!(
            leader
                .members
                .iter()
                .map(|m| &m.member_id)
                .collect::<Vec<_>>(),
            vec![&a, &b, &c]
        );
        for token in [tb, tc] {
            let follower = joined(&effects, token);
            assert_eq!(follower.generation_id, 1);
            assert_eq!(follower.leader, a);
            assert!(follower.members.is_empty());
        }
    }

    #[test]
    fn initial_delay_is_capped_by_the_rebalance_timeout() {
        let mut h = Harness::new(DELAY_MS);
        let mut req = dynamic("a");
        req.requires_known_member_id = false;
        req.rebalance_timeout_ms = 1_000;
        let (token, effects) = h.join(req, 0);
        assert!(join_reply(&effects, token).is_none());
        assert!(h.c.tick(999).completions.is_empty());
        let effects = h.c.tick(1_000);
        assert_eq!(joined(&effects, token).generation_id, 1);
    }

    // ---- rebalances --------------------------------------------------

    #[test]
    fn rebalance_during_completing_rebalance_fails_parked_syncs() {
        let mut h = Harness::new(DELAY_MS);
        let (a, ta, _) = h.join_new(range("a"), 0);
        let (b, _, _) = h.join_new(range("b"), 0);
        let (c, _, _) = h.join_new(range("c"), 0);
        let effects = h.c.tick(DELAY_MS);
        assert_eq!(joined(&effects, ta).leader, a);
        let (sb, effects) = h.sync(&b, 1, &[], DELAY_MS);
        assert!(sync_reply(&effects, sb).is_none());
        let (sc, effects) = h.sync(&c, 1, &[], DELAY_MS);
        assert!(sync_reply(&effects, sc).is_none());

        // A new member arrives before the leader assigned.
        let (token, effects) = h.join(dynamic("d"), DELAY_MS + 1);
        let d = joined(&effects, token).member_id.clone();
        assert!(
            sync_reply(&effects, sb).is_none(),
            "a pending member changes nothing"
        );
        let (td, effects) = h.join(request(&d, None, range("d")), DELAY_MS + 2);
        assert!(join_reply(&effects, td).is_none());
        assert_eq!(synced(&effects, sb).error, codes::REBALANCE_IN_PROGRESS);
        assert_eq!(synced(&effects, sc).error, codes::REBALANCE_IN_PROGRESS);
        assert_eq!(h.state(), GroupState::PreparingRebalance);

        // The leader's late assignment is refused too.
        let (token, effects) = h.sync(&a, 1, &[(&a, "x")], DELAY_MS + 3);
        assert_eq!(synced(&effects, token).error, codes::REBALANCE_IN_PROGRESS);
        assert_eq!(
            h.heartbeat(&b, 1, DELAY_MS + 3),
            codes::REBALANCE_IN_PROGRESS
        );
        assert_eq!(h.c.check_commit(GROUP, 1, &b, None), codes::NONE);

        let mut tokens = vec![td];
        for (id, meta) in [(&a, "a"), (&b, "b"), (&c, "c")] {
            let (token, _) = h.join(request(id, None, range(meta)), DELAY_MS + 4);
            tokens.push(token);
        }
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        assert_eq!(h.generation(), 2);
        assert_eq!(h.members().len(), 4);
    }

    #[test]
    fn member_leaving_starts_a_rebalance_and_the_rest_form_a_new_generation() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), dynamic("b"), dynamic("c")], 0);
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);

        let (errors, effects) = h.c.leave(GROUP, &[(b.clone(), None)], t + 1);
        assert_eq!(errors, vec![codes::NONE]);
        assert!(effects.completions.is_empty());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat(a, 1, t + 2), codes::REBALANCE_IN_PROGRESS);
        assert_eq!(h.heartbeat(b, 1, t + 2), codes::UNKNOWN_MEMBER_ID);
        let (errors, _) = h.c.leave(GROUP, &[(b.clone(), None)], t + 2);
        assert_eq!(errors, vec![codes::UNKNOWN_MEMBER_ID]);

        let (ta, effects) = h.join(request(a, None, range("a")), t + 3);
        assert!(join_reply(&effects, ta).is_none());
        let (tc, effects) = h.join(request(c, None, range("c")), t + 4);
        let leader = joined(&effects, ta);
        assert_eq!(leader.generation_id, 2);
        assert_eq!(leader.leader, *a);
        assert_eq!(leader.members.len(), 2);
        assert_eq!(joined(&effects, tc).generation_id, 2);
        let (sc, _) = h.sync(c, 2, &[], t + 5);
        let (_, effects) = h.sync(a, 2, &[(a, "A"), (c, "C")], t + 5);
        assert_eq!(synced(&effects, sc).assignment, Bytes::from("C"));
        assert_eq!(h.state(), GroupState::Stable);

        // The leader leaves: the remaining member leads the next generation.
        let (errors, _) = h.c.leave(GROUP, &[(a.clone(), None)], t + 6);
        assert_eq!(errors, vec![codes::NONE]);
        let (tc, effects) = h.join(request(c, None, range("c")), t + 7);
        let result = joined(&effects, tc);
        assert_eq!((result.generation_id, &result.leader), (3, c));
        assert_eq!(result.members.len(), 1);
        let (_, effects) = h.sync(c, 3, &[(c, "C")], t + 8);
        assert_eq!(persisted_group(&effects).unwrap().generation_id, 3);

        // The last member leaves: Empty, next generation, persisted.
        let (errors, effects) = h.c.leave(GROUP, &[(c.clone(), None)], t + 9);
        assert_eq!(errors, vec![codes::NONE]);
        assert_eq!(h.state(), GroupState::Empty);
        assert_eq!(h.generation(), 4);
        let record = persisted_group(&effects).expect("Empty group persisted");
        assert_eq!(record.generation_id, 4);
        assert!(record.members.is_empty());
        assert_eq!(record.protocol_name, None);
        assert_eq!(record.leader_id, None);
        assert_eq!(record.protocol_type, "consumer");
        // Nothing keeps it: the next tick drops it.
        let effects = h.c.tick(t + 10);
        assert!(h.c.group(GROUP).is_none());
        assert_eq!(
            effects.persist,
            vec![GroupLogRecord::Group {
                group_id: GROUP.to_string(),
                value: None
            }]
        );
    }

    #[test]
    fn leaving_during_completing_rebalance_fails_parked_syncs() {
        let mut h = Harness::new(DELAY_MS);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (b, _, _) = h.join_new(range("b"), 0);
        let (c, tc, _) = h.join_new(range("c"), 0);
        h.c.tick(DELAY_MS);
        let (sb, _) = h.sync(&b, 1, &[], DELAY_MS);
        let (errors, effects) = h.c.leave(GROUP, &[(a.clone(), None)], DELAY_MS + 1);
        assert_eq!(errors, vec![codes::NONE]);
        assert_eq!(synced(&effects, sb).error, codes::REBALANCE_IN_PROGRESS);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        // Leaving members with parked joins get UNKNOWN_MEMBER_ID.
        let (tb, _) = h.join(request(&b, None, range("b")), DELAY_MS + 2);
        let (errors, effects) = h.c.leave(GROUP, &[(b.clone(), None)], DELAY_MS + 3);
        assert_eq!(errors, vec![codes::NONE]);
        assert_eq!(joined(&effects, tb).error, codes::UNKNOWN_MEMBER_ID);
        assert!(join_reply(&effects, tc).is_none());
        assert_eq!(h.members(), vec![c]);
    }

    // ---- rebalance timeouts ------------------------------------------

    #[test]
    fn rebalance_timeout_removes_members_that_did_not_rejoin() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), dynamic("b")], 0);
        let (a, b) = (&ids[0], &ids[1]);
        let start = t + 1_000;
        let (c, tc, _) = h.join_new(range("c"), start);
        let deadline = start + REBALANCE_MS as i64;
        let (ta, _) = h.join(request(a, None, range("a")), start + 100);
        // b keeps heartbeating (its session stays alive) but never rejoins.
        let mut now = start;
        while now < deadline {
            assert_eq!(h.heartbeat(b, 1, now), codes::REBALANCE_IN_PROGRESS);
            now += 5_000;
        }
        let effects = h.c.tick(deadline - 1);
        assert!(effects.completions.is_empty());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        let effects = h.c.tick(deadline);
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        assert_eq!(h.generation(), 2);
        assert_eq!(h.members(), vec![a.clone(), c.clone()]);
        let leader = joined(&effects, ta);
        assert_eq!(leader.leader, *a);
        assert_eq!(leader.members.len(), 2);
        assert_eq!(joined(&effects, tc).generation_id, 2);
        assert_eq!(h.heartbeat(b, 1, deadline), codes::UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn rebalance_timeout_elects_a_joined_leader() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), dynamic("b")], 0);
        let (a, b) = (&ids[0], &ids[1]);
        let (tb, _) = h.join(request(b, None, range("b2")), t + 1);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat(a, 1, t + 5_000), codes::REBALANCE_IN_PROGRESS);
        let effects = h.c.tick(t + 1 + REBALANCE_MS as i64);
        let result = joined(&effects, tb);
        assert_eq!(result.leader, *b);
        assert_eq!(result.members.len(), 1);
        assert_eq!(h.members(), vec![b.clone()]);
    }

    #[test]
    fn static_member_that_misses_the_rebalance_keeps_its_place_until_its_session_ends() {
        let mut h = Harness::new(DELAY_MS);
        let mut s = static_member("i1", "s");
        s.session_timeout_ms = 60_000;
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), s], 0);
        let (a, stat) = (&ids[0], &ids[1]);
        let start = t + 1;
        let (c, _, _) = h.join_new(range("c"), start);
        let (ta, _) = h.join(request(a, None, range("a")), start);
        // The static member is restarting: no heartbeats, no rejoin.
        let deadline = start + REBALANCE_MS as i64;
        let effects = h.c.tick(deadline);
        assert_eq!(h.state(), GroupState::CompletingRebalance);
        assert_eq!(h.members(), vec![a.clone(), stat.clone(), c.clone()]);
        let leader = joined(&effects, ta);
        assert!(leader
            .members
            .iter()
            .any(|m| &m.member_id == stat && m.metadata[..] == b"s"[..]));
        // It comes back under its instance id and takes its place.
        let (token, effects) = h.join(static_member("i1", "s"), deadline + 1);
        assert!(join_reply(&effects, token).is_none());
        assert_eq!(h.state(), GroupState::PreparingRebalance);

        // Had it not come back, its session would have ended it.
        let mut h2 = Harness::new(DELAY_MS);
        let mut s = static_member("i1", "s");
        s.session_timeout_ms = 60_000;
        let (ids, t) = form_group(&mut h2, vec![dynamic("a"), s], 0);
        let (c, _, _) = h2.join_new(range("c"), t + 1);
        h2.join(request(&ids[0], None, range("a")), t + 1);
        let deadline = t + 1 + REBALANCE_MS as i64;
        h2.c.tick(deadline);
        assert_eq!(h2.members().len(), 3);
        for now in (deadline..deadline + 60_000).step_by(5_000) {
            assert_eq!(h2.heartbeat(&ids[0], 2, now), codes::NONE);
            assert_eq!(h2.heartbeat(&c, 2, now), codes::NONE);
        }
        h2.c.tick(deadline + 60_000 - 1);
        assert_eq!(h2.members().len(), 3);
        h2.c.tick(deadline + 60_000);
        assert_eq!(h2.members(), vec![ids[0].clone(), c.clone()]);
        assert_eq!(h2.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn rebalance_without_any_rejoined_member_is_postponed() {
        let mut h = Harness::new(DELAY_MS);
        let mut s1 = static_member("i1", "s1");
        s1.session_timeout_ms = 100_000;
        let mut s2 = static_member("i2", "s2");
        s2.session_timeout_ms = 200_000;
        let (ids, t) = form_group(&mut h, vec![s1, s2], 0);
        h.c.apply(&offset_record("t", 0, Some(offset(1, t))), t);
        // A leaves; the remaining static member never rejoins.
        let (errors, _) =
            h.c.leave(GROUP, &[(String::new(), Some("i1".to_string()))], t + 1);
        assert_eq!(errors, vec![codes::NONE]);
        assert_eq!(h.members(), vec![ids[1].clone()]);
        h.c.tick(t + 1 + REBALANCE_MS as i64);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(h.generation(), 1);
        // Its session ends eventually: the group empties.
        h.c.tick(t + 200_000);
        assert_eq!(h.state(), GroupState::Empty);
        assert_eq!(h.generation(), 2);
    }
}

//! Liveness and departures: Heartbeat, LeaveGroup, and the timers that end
//! pending member ids, silent members' sessions and overdue rebalances.

use super::state::{Group, GroupState};
use crate::group::{Completion, Coordinator, Effects, GroupConfig, JoinResult, SyncResult};
use crate::protocol::{self as codes, ErrorCode};

impl Coordinator {
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
    ) -> ErrorCode {
        let Some(group) = self.groups.get_mut(group_id) else {
            return codes::UNKNOWN_MEMBER_ID;
        };
        let check = group.check_member(member_id, group_instance_id);
        if check != codes::NONE {
            return check;
        }
        if group.state == GroupState::Empty || group.state == GroupState::Dead {
            return codes::UNKNOWN_MEMBER_ID;
        }
        if generation_id != group.generation_id {
            return codes::ILLEGAL_GENERATION;
        }
        group
            .members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now_ms;
        let error = if group.state == GroupState::PreparingRebalance {
            codes::REBALANCE_IN_PROGRESS
        } else {
            codes::NONE
        };
        self.debug_check(group_id);
        error
    }

    /// LeaveGroup for several members (v3+; older versions pass one).
    /// Returns the error for each (member id, instance id).
    pub fn leave(
        &mut self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        now_ms: i64,
    ) -> (Vec<ErrorCode>, Effects) {
        let mut effects = Effects::default();
        let config = self.config;
        let Some(group) = self.groups.get_mut(group_id) else {
            return (vec![codes::UNKNOWN_MEMBER_ID; leaving.len()], effects);
        };
        let mut errors = Vec::with_capacity(leaving.len());
        let mut changed = false;
        for (member_id, instance) in leaving {
            let resolved = match instance {
                Some(i) => match group.static_members.get(i) {
                    Some(current) if member_id.is_empty() || current == member_id => {
                        Some(current.clone())
                    }
                    Some(_) => {
                        errors.push(codes::FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => None,
                },
                None => Some(member_id.clone()),
            };
            let Some(id) = resolved else {
                errors.push(codes::UNKNOWN_MEMBER_ID);
                continue;
            };
            if group.pending_members.remove(&id).is_some() {
                errors.push(codes::NONE);
                changed = true;
                continue;
            }
            match group.remove_member(&id) {
                Some(mut member) => {
                    if let Some(parked) = member.awaiting_join.take() {
                        effects.completions.push((
                            parked,
                            Completion::Join(JoinResult::error(codes::UNKNOWN_MEMBER_ID, &id)),
                        ));
                    }
                    if let Some(parked) = member.awaiting_sync.take() {
                        effects.completions.push((
                            parked,
                            Completion::Sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID)),
                        ));
                    }
                    errors.push(codes::NONE);
                    changed = true;
                }
                None => errors.push(codes::UNKNOWN_MEMBER_ID),
            }
        }
        if changed {
            group.on_membership_change(&config, &mut effects, now_ms);
        }
        self.debug_check(group_id);
        (errors, effects)
    }
}

impl Group {
    /// The membership timers at `now_ms`: pending member ids and sessions
    /// that ended, and the rebalance deadline.
    pub(in crate::group) fn tick_members(
        &mut self,
        config: &GroupConfig,
        effects: &mut Effects,
        now_ms: i64,
    ) {
        let before = self.pending_members.len();
        self.pending_members
            .retain(|_, deadline| *deadline > now_ms);
        let mut changed = self.pending_members.len() != before;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                // Like Kafka, a member with a parked JoinGroup or
                // SyncGroup is kept alive: it cannot heartbeat meanwhile.
                m.awaiting_join.is_none()
                    && m.awaiting_sync.is_none()
                    && m.last_heartbeat_ms + m.session_timeout_ms as i64 <= now_ms
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            if let Some(mut member) = self.remove_member(&id) {
                if let Some(parked) = member.awaiting_sync.take() {
                    effects.completions.push((
                        parked,
                        Completion::Sync(SyncResult::error(codes::UNKNOWN_MEMBER_ID)),
                    ));
                }
                changed = true;
            }
        }
        if changed {
            self.on_membership_change(config, effects, now_ms);
        }
        if self.state == GroupState::PreparingRebalance {
            let force = now_ms >= self.rebalance_deadline_ms;
            self.maybe_complete_join(effects, now_ms, force);
        }
    }

    /// When `tick_members` may next change something: the first pending
    /// member id or session to expire; `i64::MIN` while a rebalance is in
    /// flight (its phases end on requests as well as on time).
    pub(in crate::group) fn members_deadline_ms(&self) -> i64 {
        if matches!(
            self.state,
            GroupState::PreparingRebalance | GroupState::CompletingRebalance
        ) {
            return i64::MIN;
        }
        let mut next = i64::MAX;
        for deadline in self.pending_members.values() {
            next = next.min(*deadline);
        }
        for member in self.members.values() {
            if member.awaiting_join.is_some() || member.awaiting_sync.is_some() {
                return i64::MIN;
            }
            next = next.min(member.last_heartbeat_ms + member.session_timeout_ms as i64);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::group::testing::*;

    // ---- unknown members ---------------------------------------------

    #[test]
    fn unknown_member_id() {
        let mut h = Harness::new(0);
        // No such group.
        assert_eq!(h.heartbeat("nobody", 1, 0), codes::UNKNOWN_MEMBER_ID);
        let (token, effects) = h.sync("nobody", 1, &[], 0);
        assert_eq!(synced(&effects, token).error, codes::UNKNOWN_MEMBER_ID);
        let (errors, _) = h.c.leave(GROUP, &[("nobody".to_string(), None)], 0);
        assert_eq!(errors, vec![codes::UNKNOWN_MEMBER_ID]);
        let (token, effects) = h.join(request("nobody", None, range("a")), 0);
        assert_eq!(joined(&effects, token).error, codes::UNKNOWN_MEMBER_ID);
        assert!(h.c.group(GROUP).is_none(), "no group created");

        // A group with a member.
        let (a, _, _) = h.join_new(range("a"), 0);
        assert_eq!(h.heartbeat("nobody", 1, 0), codes::UNKNOWN_MEMBER_ID);
        let (token, effects) = h.sync("nobody", 1, &[], 0);
        assert_eq!(synced(&effects, token).error, codes::UNKNOWN_MEMBER_ID);
        let (errors, _) = h.c.leave(GROUP, &[("nobody".to_string(), None)], 0);
        assert_eq!(errors, vec![codes::UNKNOWN_MEMBER_ID]);
        assert_eq!(
            h.c.check_commit(GROUP, 1, "nobody", None),
            codes::UNKNOWN_MEMBER_ID
        );
        let (token, effects) = h.join(request("nobody", None, range("a")), 0);
        assert_eq!(joined(&effects, token).error, codes::UNKNOWN_MEMBER_ID);
        assert_eq!(h.members(), vec![a]);
        assert_eq!(h.state(), GroupState::CompletingRebalance);
    }

    // ---- sessions ----------------------------------------------------

    #[test]
    fn silent_member_is_removed_after_its_session_timeout() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), dynamic("b"), dynamic("c")], 0);
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        // Every member's session restarted at t (join completion and sync).
        assert_eq!(h.heartbeat(a, 1, t + 5_000), codes::NONE);
        assert_eq!(h.heartbeat(c, 1, t + 5_000), codes::NONE);
        h.c.tick(t + SESSION_MS as i64 - 1);
        assert_eq!(h.members().len(), 3);
        assert_eq!(h.state(), GroupState::Stable);
        h.c.tick(t + SESSION_MS as i64);
        assert_eq!(h.members(), vec![a.clone(), c.clone()]);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.heartbeat(b, 1, t + SESSION_MS as i64),
            codes::UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            h.heartbeat(a, 1, t + SESSION_MS as i64),
            codes::REBALANCE_IN_PROGRESS
        );
        let (ta, _) = h.join(request(a, None, range("a")), t + SESSION_MS as i64 + 1);
        let (tc, effects) = h.join(request(c, None, range("c")), t + SESSION_MS as i64 + 1);
        assert_eq!(joined(&effects, ta).generation_id, 2);
        assert_eq!(joined(&effects, ta).members.len(), 2);
        assert_eq!(joined(&effects, tc).generation_id, 2);
    }

    #[test]
    fn a_member_parked_in_sync_is_kept_alive() {
        let mut h = Harness::new(DELAY_MS);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (b, _, _) = h.join_new(range("b"), 0);
        h.c.tick(DELAY_MS);
        let (sb, _) = h.sync(&b, 1, &[], DELAY_MS);
        // The leader takes longer than b's session timeout to assign.
        let slow = DELAY_MS + SESSION_MS as i64 + 5_000;
        assert_eq!(h.heartbeat(&a, 1, slow - 1), codes::NONE);
        let effects = h.c.tick(slow);
        assert!(effects.completions.is_empty());
        assert_eq!(h.members().len(), 2);
        let (_, effects) = h.sync(&a, 1, &[(&a, "A"), (&b, "B")], slow);
        assert_eq!(synced(&effects, sb).assignment, Bytes::from("B"));
        // b's session restarts when its sync is answered.
        h.c.tick(slow + SESSION_MS as i64 - 1);
        assert_eq!(h.members().len(), 2);
    }

    #[test]
    fn a_leader_that_never_assigns_is_expired_and_parked_syncs_fail() {
        let mut h = Harness::new(DELAY_MS);
        let (a, _, _) = h.join_new(range("a"), 0);
        let (b, _, _) = h.join_new(range("b"), 0);
        h.c.tick(DELAY_MS);
        let (sb, _) = h.sync(&b, 1, &[], DELAY_MS);
        let effects = h.c.tick(DELAY_MS + SESSION_MS as i64);
        assert_eq!(synced(&effects, sb).error, codes::REBALANCE_IN_PROGRESS);
        assert_eq!(h.members(), vec![b.clone()]);
        assert!(!h.members().contains(&a));
        assert_eq!(h.state(), GroupState::PreparingRebalance);
    }

    // ---- leaving -----------------------------------------------------

    #[test]
    fn static_member_leaves_by_instance_id() {
        let mut h = Harness::new(DELAY_MS);
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), static_member("i1", "s")], 0);
        let (errors, _) = h.c.leave(
            GROUP,
            &[
                (String::new(), Some("i1".to_string())),
                (String::new(), Some("nope".to_string())),
            ],
            t + 1,
        );
        assert_eq!(errors, vec![codes::NONE, codes::UNKNOWN_MEMBER_ID]);
        assert_eq!(h.members(), vec![ids[0].clone()]);
        assert!(h.group().static_members.is_empty());
        assert_eq!(h.state(), GroupState::PreparingRebalance);
    }
}

//! The group coordinator of one shard: the groups of the `__consumer_offsets`
//! partitions it owns. Requests that must wait (JoinGroup until the rebalance
//! completes, SyncGroup until the leader assigns) are parked under the
//! caller's token and completed later through `Effects`.
//!
//! The classic protocol's requests are in `classic/`, committed offsets in
//! `offsets.rs`; here are the groups themselves: loading their records, the
//! timers, deleting groups, and the invariants that hold between any two
//! calls.

use std::collections::BTreeMap;

use super::classic::{Group, GroupState};
use super::offsets::InFlightCommits;
use super::records::GroupLogRecord;
use super::txn_offsets::PendingTxnOffsets;
use super::{Effects, GroupConfig};
use crate::protocol::{self as codes, ErrorCode};

#[derive(Debug, Default)]
pub struct Coordinator {
    pub(super) config: GroupConfig,
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) commits: InFlightCommits,
    /// Offsets committed in transactions, until their markers.
    pub(super) txn_offsets: PendingTxnOffsets,
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
            commits: InFlightCommits::default(),
            txn_offsets: PendingTxnOffsets::new(),
        }
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The earliest time at which [`Coordinator::tick`] may change
    /// something, for a ticker that sleeps until then; `i64::MIN` when a
    /// group wants ticks at once (a rebalance in flight, or a group the next
    /// tick drops). None without groups.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.groups
            .values()
            .map(|group| group.next_deadline_ms(&self.config))
            .min()
    }

    /// Timers: pending-member and session expiry, rebalance deadlines, the
    /// initial rebalance delay, and offset retention.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        let config = self.config;
        let mut dead = Vec::new();
        for group in self.groups.values_mut() {
            group.tick_members(&config, &mut effects, now_ms);
            if group.state == GroupState::Empty {
                group.expire_offsets(&config, &mut self.commits, &mut effects, now_ms);
                if group.is_spent() {
                    dead.push(group.group_id.clone());
                }
            }
        }
        for group_id in dead {
            self.groups.remove(&group_id);
            effects.persist.push(GroupLogRecord::Group {
                group_id,
                value: None,
            });
        }
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        effects
    }

    /// Applies a `__consumer_offsets` record: committed offsets once they
    /// are durable, and every record at load.
    pub fn apply(&mut self, record: &GroupLogRecord, now_ms: i64) {
        match record {
            GroupLogRecord::Offset {
                group_id,
                topic,
                partition,
                value,
            } => self.apply_offset(group_id, topic, *partition, value.as_ref(), now_ms),
            GroupLogRecord::Group {
                group_id,
                value: None,
            } => {
                if let Some(group) = self.groups.get(group_id) {
                    if group.members.is_empty() && group.offsets.is_empty() {
                        self.groups.remove(group_id);
                    }
                }
            }
            GroupLogRecord::Group {
                group_id,
                value: Some(persisted),
            } => {
                // Only at load: restore membership as it was persisted;
                // members must heartbeat within their session timeout.
                self.groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(group_id, now_ms))
                    .restore(persisted, now_ms);
            }
        }
        self.debug_check(record.group_id());
    }

    /// This coordinator no longer owns the groups `leaving` names (their
    /// `__consumer_offsets` partition got another leader): they are
    /// forgotten here, and their members' waiting requests are answered
    /// NOT_COORDINATOR. Returns how many groups left, and the answers.
    pub fn unload(&mut self, mut leaving: impl FnMut(&str) -> bool) -> (usize, Effects) {
        let mut effects = Effects::default();
        let gone: Vec<String> = self.groups.keys().filter(|g| leaving(g)).cloned().collect();
        for group_id in &gone {
            let mut group = self.groups.remove(group_id).expect("listed");
            group.abandon_waiting(codes::NOT_COORDINATOR, &mut effects);
        }
        self.unload_txn_offsets(&mut leaving);
        (gone.len(), effects)
    }

    /// DeleteGroups: only groups without members. The tombstones of their
    /// offsets win over the commits still in flight.
    pub fn delete_group(&mut self, group_id: &str) -> (ErrorCode, Effects) {
        let mut effects = Effects::default();
        let Some(group) = self.groups.get(group_id) else {
            return (codes::GROUP_ID_NOT_FOUND, effects);
        };
        if !group.members.is_empty() {
            return (codes::NON_EMPTY_GROUP, effects);
        }
        let group = self.groups.remove(group_id).expect("present");
        for (topic, partition) in group.offsets.into_keys() {
            self.commits
                .tombstone(&mut effects, group_id, topic, partition);
        }
        effects.persist.push(GroupLogRecord::Group {
            group_id: group_id.to_string(),
            value: None,
        });
        self.debug_check(group_id);
        (codes::NONE, effects)
    }

    /// Asserts the coordinator's invariants: every group's and the commits
    /// in flight's. O(groups × members): tests and simulations call it after
    /// every step, debug builds after every tick.
    pub fn check_invariants(&self) {
        for (group_id, group) in &self.groups {
            assert_eq!(group_id, &group.group_id);
            group.check_invariants();
        }
        self.commits.check_invariants();
    }

    /// In debug builds, at the end of a call that may have changed
    /// `group_id`: the invariants of that group and of the commits in flight.
    pub(super) fn debug_check(&self, group_id: &str) {
        if cfg!(debug_assertions) {
            if let Some(group) = self.groups.get(group_id) {
                assert_eq!(group.group_id, group_id);
                group.check_invariants();
            }
            self.commits.check_invariants();
        }
    }
}

impl Group {
    /// See [`Coordinator::next_deadline_ms`]: what `tick` checks, in time.
    fn next_deadline_ms(&self, config: &GroupConfig) -> i64 {
        let members = self.members_deadline_ms();
        if self.state != GroupState::Empty {
            return members;
        }
        if self.is_spent() {
            return i64::MIN;
        }
        members.min(self.offsets_deadline_ms(config))
    }

    /// An Empty group with nothing left to keep: the next tick drops it.
    fn is_spent(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.pending_members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::group::testing::*;
    use crate::group::{Completion, RequestToken};

    // ---- timers ------------------------------------------------------

    #[test]
    fn next_deadline_is_the_first_session_to_expire_or_now_in_a_rebalance() {
        let mut h = Harness::new(DELAY_MS);
        assert_eq!(h.c.next_deadline_ms(), None, "no groups, no ticks");
        let (ids, t) = form_group(&mut h, vec![dynamic("a"), dynamic("b")], 0);
        assert_eq!(h.heartbeat(&ids[0], 1, t + 5_000), codes::NONE);
        // b's session (restarted at t) ends first.
        assert_eq!(h.c.next_deadline_ms(), Some(t + SESSION_MS as i64));
        h.c.tick(t + SESSION_MS as i64 - 1);
        assert_eq!(h.members().len(), 2, "nothing is due before the deadline");
        h.c.tick(t + SESSION_MS as i64);
        assert_eq!(h.state(), GroupState::PreparingRebalance);
        assert_eq!(
            h.c.next_deadline_ms(),
            Some(i64::MIN),
            "a rebalance ticks at once"
        );
    }

    // ---- deleting groups ---------------------------------------------

    #[test]
    fn delete_group() {
        let mut h = Harness::new(DELAY_MS);
        let (errors, effects) = h.c.delete_group(GROUP);
        assert_eq!(errors, codes::GROUP_ID_NOT_FOUND);
        assert!(effects.persist.is_empty());

        let (ids, t) = form_group(&mut h, vec![dynamic("a")], 0);
        h.c.apply(&offset_record("t", 0, Some(offset(5, t))), t);
        h.c.apply(&offset_record("t", 1, Some(offset(6, t))), t);
        let (error, effects) = h.c.delete_group(GROUP);
        assert_eq!(error, codes::NON_EMPTY_GROUP);
        assert!(effects.persist.is_empty());
        assert!(h.c.group(GROUP).is_some());

        h.c.leave(GROUP, &[(ids[0].clone(), None)], t + 1);
        let (error, effects) = h.c.delete_group(GROUP);
        assert_eq!(error, codes::NONE);
        assert_eq!(
            effects.persist,
            vec![
                offset_record("t", 0, None),
                offset_record("t", 1, None),
                GroupLogRecord::Group {
                    group_id: GROUP.to_string(),
                    value: None
                }
            ]
        );
        assert!(h.c.group(GROUP).is_none());
        assert_eq!(h.c.delete_group(GROUP).0, codes::GROUP_ID_NOT_FOUND);
    }

    // ---- random operation sequences ---------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Join { slot: usize, fresh: bool },
        Sync { slot: usize },
        Heartbeat { slot: usize },
        Leave { slot: usize },
        Commit { slot: usize },
        Tick { advance_ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let slot = 0usize..4;
        prop_oneof![
            (slot.clone(), any::<bool>()).prop_map(|(slot, fresh)| Op::Join { slot, fresh }),
            slot.clone().prop_map(|slot| Op::Sync { slot }),
            slot.clone().prop_map(|slot| Op::Heartbeat { slot }),
            slot.clone().prop_map(|slot| Op::Leave { slot }),
            slot.prop_map(|slot| Op::Commit { slot }),
            (0i64..40_000).prop_map(|advance_ms| Op::Tick { advance_ms }),
        ]
    }

    #[derive(Debug, Default, Clone)]
    struct Client {
        member_id: String,
        generation: i32,
        leader: bool,
        members: Vec<String>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn random_operations_keep_the_group_consistent(
            ops in proptest::collection::vec(op(), 1..60),
            statics in proptest::collection::vec(any::<bool>(), 4),
            delay in prop_oneof![Just(0i64), Just(DELAY_MS)],
        ) {
            let mut h = Harness::new(delay);
            let mut now = 0i64;
            let mut clients = vec![Client { generation: -1, ..Client::default() }; 4];
            let mut issued: BTreeSet<RequestToken> = BTreeSet::new();
            let mut answered: BTreeSet<RequestToken> = BTreeSet::new();
            let mut join_slot: BTreeMap<RequestToken, usize> = BTreeMap::new();
            let mut last_generation = 0;

            let absorb = |effects: Effects,
                              clients: &mut Vec<Client>,
                              answered: &mut BTreeSet<RequestToken>,
                              join_slot: &BTreeMap<RequestToken, usize>| {
                for (token, completion) in effects.completions {
                    assert!(answered.insert(token), "token {token} answered twice");
                    if let (Completion::Join(r), Some(&slot)) = (&completion, join_slot.get(&token)) {
                        let client = &mut clients[slot];
                        match r.error {
                            codes::NONE => {
                                client.member_id = r.member_id.clone();
                                client.generation = r.generation_id;
                                client.leader = r.leader == r.member_id;
                                client.members = r.members.iter().map(|m| m.member_id.clone()).collect();
                                if client.leader {
                                    assert!(!client.members.is_empty());
                                } else {
                                    assert!(client.members.is_empty());
                                }
                            }
                            codes::MEMBER_ID_REQUIRED => client.member_id = r.member_id.clone(),
                            codes::UNKNOWN_MEMBER_ID | codes::FENCED_INSTANCE_ID => {
                                client.member_id.clear();
                                client.generation = -1;
                            }
                            _ => {}
                        }
                    }
                }
                for record in &effects.persist {
                    let (key, value) = record.encode();
                    assert_eq!(
                        GroupLogRecord::decode(&key, value.as_deref()).as_ref(),
                        Some(record)
                    );
                }
            };

            for op in ops {
                now += 1;
                match op {
                    Op::Join { slot, fresh } => {
                        let instance = statics[slot].then(|| format!("i{slot}"));
                        let member_id = if fresh { String::new() } else { clients[slot].member_id.clone() };
                        let req = request(&member_id, instance.as_deref(), range(&format!("meta{slot}")));
                        let (token, effects) = h.join(req, now);
                        issued.insert(token);
                        join_slot.insert(token, slot);
                        absorb(effects, &mut clients, &mut answered, &join_slot);
                    }
                    Op::Sync { slot } => {
                        let client = clients[slot].clone();
                        let assignments: Vec<(String, String)> = if client.leader {
                            client.members.iter().map(|m| (m.clone(), format!("a-{m}"))).collect()
                        } else {
                            Vec::new()
                        };
                        let borrowed: Vec<(&str, &str)> =
                            assignments.iter().map(|(m, a)| (m.as_str(), a.as_str())).collect();
                        let token = h.token();
                        let mut req = sync_request(&client.member_id, client.generation, &borrowed);
                        req.group_instance_id = statics[slot].then(|| format!("i{slot}"));
                        let effects = h.c.sync(token, req, now);
                        issued.insert(token);
                        absorb(effects, &mut clients, &mut answered, &join_slot);
                    }
                    Op::Heartbeat { slot } => {
                        let client = &clients[slot];
                        let instance = statics[slot].then(|| format!("i{slot}"));
                        h.c.heartbeat(GROUP, client.generation, &client.member_id, instance.as_deref(), now);
                    }
                    Op::Leave { slot } => {
                        let instance = statics[slot].then(|| format!("i{slot}"));
                        let (errors, effects) =
                            h.c.leave(GROUP, &[(clients[slot].member_id.clone(), instance)], now);
                        assert_eq!(errors.len(), 1);
                        absorb(effects, &mut clients, &mut answered, &join_slot);
                    }
                    Op::Commit { slot } => {
                        let client = &clients[slot];
                        let instance = statics[slot].then(|| format!("i{slot}"));
                        let error = h.c.check_commit(GROUP, client.generation, &client.member_id, instance.as_deref());
                        if error == codes::NONE {
                            h.c.apply(&offset_record("t", slot as i32, Some(offset(now, now))), now);
                        }
                    }
                    Op::Tick { advance_ms } => {
                        now += advance_ms;
                        let effects = h.c.tick(now);
                        absorb(effects, &mut clients, &mut answered, &join_slot);
                    }
                }
                h.c.check_invariants();
                if let Some(group) = h.c.group(GROUP) {
                    prop_assert!(group.generation_id >= last_generation);
                    last_generation = group.generation_id;
                } else {
                    last_generation = 0;
                }
            }
            // With time, every parked request is answered.
            for _ in 0..4 {
                now += 10_000_000;
                let effects = h.c.tick(now);
                absorb(effects, &mut clients, &mut answered, &join_slot);
                h.c.check_invariants();
            }
            let unanswered: Vec<_> = issued.difference(&answered).collect();
            prop_assert!(unanswered.is_empty(), "never answered: {:?}", unanswered);
        }
    }
}

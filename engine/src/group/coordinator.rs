//! The group coordinator's state machine for the classic protocol. It holds
//! the groups of the `__consumer_offsets` partitions one shard owns. Requests
//! that must wait (JoinGroup until the rebalance completes, SyncGroup until
//! the leader assigns) are parked under the caller's token and completed
//! later through `Effects`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::records::{GroupLogRecord, OffsetAndMetadata, PersistedGroup, PersistedMember};
use crate::protocol::{self as codes, ErrorCode};

pub type RequestToken = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The state names Kafka reports in DescribeGroups/ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`
    pub session_timeout_ms_max: i32,
    /// `offsets.retention.minutes`, in ms
    pub offsets_retention_ms: i64,
    /// `group.max.size`
    pub group_members_max: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            group_members_max: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new member must first learn its id (KIP-394).
    pub requires_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResult {
    fn error(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ErrorCode) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Join(JoinResult),
    Sync(SyncResult),
}

/// What the shard must do after a call: answer parked requests, persist
/// records to `__consumer_offsets`.
#[derive(Debug, Default)]
pub struct Effects {
    pub completions: Vec<(RequestToken, Completion)>,
    pub persist: Vec<GroupLogRecord>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub assignment: Bytes,
    last_heartbeat_ms: i64,
    awaiting_join: Option<RequestToken>,
    awaiting_sync: Option<RequestToken>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with their deadline.
    pending_members: BTreeMap<String, i64>,
    /// group.instance.id → member id
    static_members: BTreeMap<String, String>,
    rebalance_deadline_ms: i64,
    initial_delay_until_ms: Option<i64>,
    offsets: BTreeMap<(String, i32), OffsetAndMetadata>,
    /// When the group last became Empty (offset expiry counts from here).
    empty_since_ms: i64,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

impl Group {
    fn new(group_id: &str, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            offsets: BTreeMap::new(),
            empty_since_ms: now_ms,
        }
    }

    pub fn member_ids(&self) -> impl Iterator<Item = &String> {
        self.members.keys()
    }

    pub fn offsets(&self) -> &BTreeMap<(String, i32), OffsetAndMetadata> {
        &self.offsets
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
    fn select_protocol(&self) -> Option<String> {
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

    fn persisted(&self, now_ms: i64) -> PersistedGroup {
        let protocol = self.protocol_name.clone();
        PersistedGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation_id: self.generation_id,
            protocol_name: protocol.clone(),
            leader_id: self.leader_id.clone(),
            state_timestamp_ms: now_ms,
            members: self
                .members
                .values()
                .map(|m| PersistedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p).to_vec())
                        .unwrap_or_default(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }

    fn persist(&self, effects: &mut Effects, now_ms: i64) {
        effects.persist.push(GroupLogRecord::Group {
            group_id: self.group_id.clone(),
            value: Some(self.persisted(now_ms)),
        });
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
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

    fn prepare_rebalance(&mut self, config: &GroupConfig, effects: &mut Effects, now_ms: i64) {
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
    fn maybe_complete_join(&mut self, effects: &mut Effects, now_ms: i64, force: bool) {
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

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = None;
        }
        Some(member)
    }

    /// After members left or expired: start (or finish) a rebalance.
    fn on_membership_change(&mut self, config: &GroupConfig, effects: &mut Effects, now_ms: i64) {
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

    /// Whether the instance id now belongs to another member id.
    fn is_fenced(&self, member_id: &str, group_instance_id: Option<&str>) -> bool {
        group_instance_id
            .and_then(|instance| self.static_members.get(instance))
            .is_some_and(|current| current != member_id)
    }

    /// Checks a (member id, instance id) pair: FENCED_INSTANCE_ID when the
    /// instance now belongs to another member id.
    fn check_member(&self, member_id: &str, group_instance_id: Option<&str>) -> ErrorCode {
        if self.is_fenced(member_id, group_instance_id) {
            return codes::FENCED_INSTANCE_ID;
        }
        if self.members.contains_key(member_id) {
            codes::NONE
        } else {
            codes::UNKNOWN_MEMBER_ID
        }
    }
}

#[derive(Debug, Default)]
pub struct Coordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            config,
            groups: BTreeMap::new(),
        }
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// JoinGroup. `fresh_member_id` is used if the member needs a new id.
    pub fn join(
        &mut self,
        token: RequestToken,
        request: JoinRequest,
        fresh_member_id: String,
        now_ms: i64,
    ) -> Effects {
        let mut effects = Effects::default();
        let reply = |effects: &mut Effects, result: JoinResult| {
            effects.completions.push((token, Completion::Join(result)))
        };
        if request.group_id.is_empty() {
            reply(
                &mut effects,
                JoinResult::error(codes::INVALID_GROUP_ID, &request.member_id),
            );
            return effects;
        }
        if !(self.config.session_timeout_ms_min..=self.config.session_timeout_ms_max)
            .contains(&request.session_timeout_ms)
        {
            reply(
                &mut effects,
                JoinResult::error(codes::INVALID_SESSION_TIMEOUT, &request.member_id),
            );
            return effects;
        }
        let config = self.config;
        let group = self
            .groups
            .entry(request.group_id.clone())
            .or_insert_with(|| Group::new(&request.group_id, now_ms));
        if group.state == GroupState::Dead {
            reply(
                &mut effects,
                JoinResult::error(codes::COORDINATOR_NOT_AVAILABLE, &request.member_id),
            );
            return effects;
        }
        if !group.supports(&request.protocol_type, &request.protocols) {
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
                .and_then(|i| group.static_members.get(i).cloned())
            {
                Some(old_id) => {
                    // A static member restarted: its new id replaces the old
                    // one, which is fenced from now on.
                    let was_leader = group.leader_id.as_deref() == Some(old_id.as_str());
                    if let Some(mut old) = group.remove_member(&old_id) {
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
                        group.members.insert(fresh_member_id.clone(), old);
                        group
                            .static_members
                            .insert(instance.clone().expect("static"), fresh_member_id.clone());
                        if was_leader {
                            group.leader_id = Some(fresh_member_id.clone());
                        }
                        if group.state == GroupState::Stable && same_protocols && !was_leader {
                            let member = group.members.get_mut(&fresh_member_id).expect("inserted");
                            member.last_heartbeat_ms = now_ms;
                            member.session_timeout_ms = request.session_timeout_ms;
                            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                            let result = group.join_result_for(&fresh_member_id);
                            group.persist(&mut effects, now_ms);
                            reply(&mut effects, result);
                            return effects;
                        }
                    }
                    fresh_member_id
                }
                None if instance.is_none() && request.requires_known_member_id => {
                    group.pending_members.insert(
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
            let known = group.members.contains_key(&request.member_id);
            let pending = group.pending_members.contains_key(&request.member_id);
            if let Some(i) = &instance {
                match group.static_members.get(i) {
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
                group.pending_members.remove(&request.member_id);
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
        if !group.members.contains_key(&member_id)
            && group.members.len() >= config.group_members_max
        {
            reply(&mut effects, JoinResult::error(81, &member_id));
            return effects;
        }
        let is_new = !group.members.contains_key(&member_id);
        let protocols_changed = group
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols != request.protocols);
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        let member = group
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
            group.static_members.insert(i.clone(), member_id.clone());
        }
        let is_leader = group.leader_id.as_deref() == Some(member_id.as_str());
        match group.state {
            GroupState::Stable if !is_new && !protocols_changed && !is_leader => {
                // A follower rejoining with nothing new: no rebalance.
                let member = group.members.get_mut(&member_id).expect("present");
                member.awaiting_join = None;
                let result = group.join_result_for(&member_id);
                reply(&mut effects, result);
                return effects;
            }
            // A replaced static member must rebalance here: the leader may
            // have been handed the old member id to assign to.
            GroupState::CompletingRebalance
                if !is_new && !protocols_changed && !replaced_static =>
            {
                let member = group.members.get_mut(&member_id).expect("present");
                member.awaiting_join = None;
                let result = group.join_result_for(&member_id);
                reply(&mut effects, result);
                return effects;
            }
            GroupState::PreparingRebalance => {}
            _ => group.prepare_rebalance(&config, &mut effects, now_ms),
        }
        group.maybe_complete_join(&mut effects, now_ms, false);
        effects
    }

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
        effects
    }

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
        if group.state == GroupState::PreparingRebalance {
            codes::REBALANCE_IN_PROGRESS
        } else {
            codes::NONE
        }
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
        (errors, effects)
    }

    /// Timers: pending-member and session expiry, rebalance deadlines, the
    /// initial rebalance delay, and offset retention.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        let config = self.config;
        let mut dead = Vec::new();
        for group in self.groups.values_mut() {
            let before = group.pending_members.len();
            group
                .pending_members
                .retain(|_, deadline| *deadline > now_ms);
            let mut changed = group.pending_members.len() != before;
            let expired: Vec<String> = group
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
                if let Some(mut member) = group.remove_member(&id) {
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
                group.on_membership_change(&config, &mut effects, now_ms);
            }
            if group.state == GroupState::PreparingRebalance {
                let force = now_ms >= group.rebalance_deadline_ms;
                group.maybe_complete_join(&mut effects, now_ms, force);
            }
            if group.state == GroupState::Empty {
                // A group that only stores offsets (no protocol type) counts
                // from each commit, as Kafka does; a consumer group from when
                // it became Empty (or the commit, if later).
                let empty_since_ms = group
                    .protocol_type
                    .is_some()
                    .then_some(group.empty_since_ms);
                let retention_from = |o: &OffsetAndMetadata| {
                    empty_since_ms.map_or(o.commit_timestamp_ms, |e| o.commit_timestamp_ms.max(e))
                };
                let expired: Vec<(String, i32)> = group
                    .offsets
                    .iter()
                    .filter(|(_, o)| retention_from(o) + config.offsets_retention_ms <= now_ms)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in expired {
                    group.offsets.remove(&key);
                    effects.persist.push(GroupLogRecord::Offset {
                        group_id: group.group_id.clone(),
                        topic: key.0,
                        partition: key.1,
                        value: None,
                    });
                }
                if group.offsets.is_empty() && group.pending_members.is_empty() {
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
        effects
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

    /// Applies committed offsets (after they are durable, or at load).
    pub fn apply(&mut self, record: &GroupLogRecord, now_ms: i64) {
        match record {
            GroupLogRecord::Offset {
                group_id,
                topic,
                partition,
                value,
            } => {
                let group = self
                    .groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(group_id, now_ms));
                match value {
                    Some(v) => {
                        group.offsets.insert((topic.clone(), *partition), v.clone());
                    }
                    None => {
                        group.offsets.remove(&(topic.clone(), *partition));
                    }
                }
            }
            GroupLogRecord::Group { group_id, value } => match value {
                None => {
                    if let Some(group) = self.groups.get(group_id) {
                        if group.members.is_empty() && group.offsets.is_empty() {
                            self.groups.remove(group_id);
                        }
                    }
                }
                Some(persisted) => {
                    // Only at load: restore membership as it was persisted;
                    // members must heartbeat within their session timeout.
                    let group = self
                        .groups
                        .entry(group_id.clone())
                        .or_insert_with(|| Group::new(group_id, now_ms));
                    group.generation_id = persisted.generation_id;
                    group.protocol_type =
                        Some(persisted.protocol_type.clone()).filter(|t| !t.is_empty());
                    group.protocol_name = persisted.protocol_name.clone();
                    group.leader_id = persisted.leader_id.clone();
                    group.members.clear();
                    group.static_members.clear();
                    for m in &persisted.members {
                        if let Some(i) = &m.group_instance_id {
                            group.static_members.insert(i.clone(), m.member_id.clone());
                        }
                        group.members.insert(
                            m.member_id.clone(),
                            Member {
                                member_id: m.member_id.clone(),
                                group_instance_id: m.group_instance_id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                                session_timeout_ms: m.session_timeout_ms,
                                rebalance_timeout_ms: m.rebalance_timeout_ms,
                                protocol_type: persisted.protocol_type.clone(),
                                protocols: vec![Protocol {
                                    name: persisted.protocol_name.clone().unwrap_or_default(),
                                    metadata: Bytes::from(m.subscription.clone()),
                                }],
                                assignment: Bytes::from(m.assignment.clone()),
                                last_heartbeat_ms: now_ms,
                                awaiting_join: None,
                                awaiting_sync: None,
                            },
                        );
                    }
                    group.state = if group.members.is_empty() {
                        GroupState::Empty
                    } else {
                        GroupState::Stable
                    };
                    // The persisted state timestamp is when the group entered
                    // that state, so retention survives restarts.
                    group.empty_since_ms = if persisted.state_timestamp_ms >= 0 {
                        persisted.state_timestamp_ms
                    } else {
                        now_ms
                    };
                }
            },
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

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let group = self.groups.get(group_id)?;
        let protocol = group.protocol_name.clone().unwrap_or_default();
        Some(GroupDescription {
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: if group.state == GroupState::Stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: group
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// DeleteGroups: only groups without members.
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
            effects.persist.push(GroupLogRecord::Offset {
                group_id: group_id.to_string(),
                topic,
                partition,
                value: None,
            });
        }
        effects.persist.push(GroupLogRecord::Group {
            group_id: group_id.to_string(),
            value: None,
        });
        (codes::NONE, effects)
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
                effects.persist.push(GroupLogRecord::Offset {
                    group_id: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: None,
                });
            }
            errors.push(codes::NONE);
        }
        (codes::NONE, errors, effects)
    }
}

impl Group {
    /// Each member's metadata for the chosen protocol (for subscription checks).
    pub fn member_metadata(&self) -> Vec<Bytes> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| m.metadata_for(&protocol))
            .collect()
    }
}

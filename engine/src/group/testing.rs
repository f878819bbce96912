//! Test helpers of the group coordinator: requests, a harness that hands
//! out tokens and fresh member ids, and a way to form a Stable group.

use bytes::Bytes;

use super::{
    Completion, Coordinator, Effects, Group, GroupConfig, GroupLogRecord, GroupState, JoinRequest,
    JoinResult, OffsetAndMetadata, PersistedGroup, Protocol, RequestToken, SyncRequest, SyncResult,
};
use crate::protocol::{self as codes, ErrorCode};

pub const GROUP: &str = "g";
pub const SESSION_MS: i32 = 10_000;
pub const REBALANCE_MS: i32 = 30_000;
pub const DELAY_MS: i64 = 3_000;

pub fn config(initial_rebalance_delay_ms: i64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms,
        ..GroupConfig::default()
    }
}

pub fn protocols(list: &[(&str, &str)]) -> Vec<Protocol> {
    list.iter()
        .map(|(name, metadata)| Protocol {
            name: name.to_string(),
            metadata: Bytes::from(metadata.to_string()),
        })
        .collect()
}

pub fn range(metadata: &str) -> Vec<Protocol> {
    protocols(&[("range", metadata)])
}

pub fn request(member_id: &str, instance: Option<&str>, protocols: Vec<Protocol>) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.to_string(),
        member_id: member_id.to_string(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols,
        requires_known_member_id: true,
    }
}

pub fn sync_request(
    member_id: &str,
    generation_id: i32,
    assignments: &[(&str, &str)],
) -> SyncRequest {
    SyncRequest {
        group_id: GROUP.to_string(),
        generation_id,
        member_id: member_id.to_string(),
        group_instance_id: None,
        protocol_type: None,
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::from(a.to_string())))
            .collect(),
    }
}

pub fn join_reply(effects: &Effects, token: RequestToken) -> Option<&JoinResult> {
    effects.completions.iter().find_map(|(t, c)| match c {
        Completion::Join(r) if *t == token => Some(r),
        _ => None,
    })
}

pub fn sync_reply(effects: &Effects, token: RequestToken) -> Option<&SyncResult> {
    effects.completions.iter().find_map(|(t, c)| match c {
        Completion::Sync(r) if *t == token => Some(r),
        _ => None,
    })
}

pub fn joined(effects: &Effects, token: RequestToken) -> &JoinResult {
    join_reply(effects, token).unwrap_or_else(|| panic!("join {token} not answered: {effects:?}"))
}

pub fn synced(effects: &Effects, token: RequestToken) -> &SyncResult {
    sync_reply(effects, token).unwrap_or_else(|| panic!("sync {token} not answered: {effects:?}"))
}

pub fn persisted_group(effects: &Effects) -> Option<&PersistedGroup> {
    effects.persist.iter().rev().find_map(|r| match r {
        GroupLogRecord::Group {
            group_id,
            value: Some(g),
        } if group_id == GROUP => Some(g),
        _ => None,
    })
}

pub fn offset(offset: i64, commit_timestamp_ms: i64) -> OffsetAndMetadata {
    OffsetAndMetadata {
        offset,
        leader_epoch: 3,
        metadata: "meta".to_string(),
        commit_timestamp_ms,
    }
}

pub fn offset_record(
    topic: &str,
    partition: i32,
    value: Option<OffsetAndMetadata>,
) -> GroupLogRecord {
    GroupLogRecord::Offset {
        group_id: GROUP.to_string(),
        topic: topic.to_string(),
        partition,
        value,
    }
}

pub struct Harness {
    pub c: Coordinator,
    tokens: RequestToken,
    ids: u32,
}

impl Harness {
    pub fn new(initial_rebalance_delay_ms: i64) -> Harness {
        Harness::with(config(initial_rebalance_delay_ms))
    }

    pub fn with(config: GroupConfig) -> Harness {
        Harness {
            c: Coordinator::new(config),
            tokens: 0,
            ids: 0,
        }
    }

    pub fn token(&mut self) -> RequestToken {
        self.tokens += 1;
        self.tokens
    }

    pub fn join(&mut self, request: JoinRequest, now_ms: i64) -> (RequestToken, Effects) {
        let token = self.token();
        self.ids += 1;
        let fresh = format!("m{:03}", self.ids);
        let effects = self.c.join(token, request, fresh, now_ms);
        (token, effects)
    }

    /// KIP-394: MEMBER_ID_REQUIRED, then the join with that id.
    pub fn join_new(
        &mut self,
        protocols: Vec<Protocol>,
        now_ms: i64,
    ) -> (String, RequestToken, Effects) {
        let (token, effects) = self.join(request("", None, protocols.clone()), now_ms);
        let first = joined(&effects, token);
        assert_eq!(first.error, codes::MEMBER_ID_REQUIRED);
        assert_eq!(first.generation_id, -1);
        let id = first.member_id.clone();
        assert!(!id.is_empty());
        let (token, effects) = self.join(request(&id, None, protocols), now_ms);
        (id, token, effects)
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: &[(&str, &str)],
        now_ms: i64,
    ) -> (RequestToken, Effects) {
        let token = self.token();
        let effects = self.c.sync(
            token,
            sync_request(member_id, generation_id, assignments),
            now_ms,
        );
        (token, effects)
    }

    pub fn heartbeat(&mut self, member_id: &str, generation_id: i32, now_ms: i64) -> ErrorCode {
        self.c
            .heartbeat(GROUP, generation_id, member_id, None, now_ms)
            .to_owned()
    }

    pub fn group(&self) -> &Group {
        self.c.group(GROUP).expect("group exists")
    }

    pub fn state(&self) -> GroupState {
        self.group().state
    }

    pub fn generation(&self) -> i32 {
        self.group().generation_id
    }

    pub fn members(&self) -> Vec<String> {
        self.group().member_ids().cloned().collect()
    }
}

/// Forms a Stable group (needs a non-zero initial delay): every request
/// joins at `now_ms` (dynamic ones through MEMBER_ID_REQUIRED), the delay
/// passes, everyone syncs, and the leader assigns `assign-<member id>`.
/// Returns the member ids in join order and the time the group is Stable.
pub fn form_group(h: &mut Harness, requests: Vec<JoinRequest>, now_ms: i64) -> (Vec<String>, i64) {
    let mut joins = Vec::new();
    for request in requests {
        let id = if request.group_instance_id.is_none() && request.member_id.is_empty() {
            let (token, effects) = h.join(request.clone(), now_ms);
            let id = joined(&effects, token).member_id.clone();
            let mut again = request;
            again.member_id = id.clone();
            let (token, effects) = h.join(again, now_ms);
            assert!(join_reply(&effects, token).is_none(), "join parked");
            joins.push((id.clone(), token));
            id
        } else {
            let (token, effects) = h.join(request, now_ms);
            let id = h
                .members()
                .into_iter()
                .find(|m| !joins.iter().any(|(j, _)| j == m))
                .expect("joined");
            assert!(join_reply(&effects, token).is_none(), "join parked");
            joins.push((id.clone(), token));
            id
        };
        assert!(!id.is_empty());
    }
    let done = now_ms + DELAY_MS;
    let effects = h.c.tick(done);
    let generation = h.generation();
    let mut leader = None;
    for (id, token) in &joins {
        let result = joined(&effects, *token);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.generation_id, generation);
        assert_eq!(&result.member_id, id);
        leader = Some(result.leader.clone());
    }
    let leader = leader.expect("members");
    let assignments: Vec<(String, String)> = joins
        .iter()
        .map(|(id, _)| (id.clone(), format!("assign-{id}")))
        .collect();
    let borrowed: Vec<(&str, &str)> = assignments
        .iter()
        .map(|(m, a)| (m.as_str(), a.as_str()))
        .collect();
    let mut parked = Vec::new();
    for (id, _) in joins.iter().filter(|(id, _)| *id != leader) {
        let (token, effects) = h.sync(id, generation, &[], done);
        assert!(sync_reply(&effects, token).is_none());
        parked.push((id.clone(), token));
    }
    let (token, effects) = h.sync(&leader, generation, &borrowed, done);
    parked.push((leader.clone(), token));
    for (id, token) in parked {
        let result = synced(&effects, token);
        assert_eq!(result.error, codes::NONE);
        assert_eq!(result.assignment, Bytes::from(format!("assign-{id}")));
    }
    assert_eq!(h.state(), GroupState::Stable);
    (joins.into_iter().map(|(id, _)| id).collect(), done)
}

pub fn dynamic(metadata: &str) -> JoinRequest {
    request("", None, range(metadata))
}

pub fn static_member(instance: &str, metadata: &str) -> JoinRequest {
    request("", Some(instance), range(metadata))
}

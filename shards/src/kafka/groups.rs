//! Kafka APIs of the consumer group coordinator: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
//! DescribeGroups, ListGroups, DeleteGroups, OffsetDelete. Each request is
//! routed to the shard that owns the group's `__consumer_offsets` partition.

use std::rc::Rc;

use engine::group::{JoinRequest, OffsetAndMetadata, Protocol, SyncRequest};
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};

use super::dispatch::RequestContext;
use super::response::str_bytes as s;
use super::topics::create_via_controller;
use crate::clock::steady_ms;
use crate::groups::{coordinator_node, coordinator_route};
use crate::mesh::admin::TopicSpec;
use crate::mesh::groups::{
    join_error, sync_error, CommitOffsets, CommittedOffset, DeleteGroup, DeleteOffsets,
    DescribeGroup, FetchOffsets, FetchedOffset, Heartbeat, JoinGroup, LeaveGroup, LeavingMember,
    ListGroups, SyncGroup, TopicPartition, TopicPartitions,
};
use crate::mesh::Call;
use crate::shard::Shard;
use crate::txns;
use engine::group::OFFSETS_TOPIC;
use engine::txn::TRANSACTION_STATE_TOPIC;

/// FindCoordinator's key types.
const COORDINATOR_GROUP: i8 = 0;
const COORDINATOR_TRANSACTION: i8 = 1;

/// `offset.metadata.max.bytes` default.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;

fn group_id(id: &str) -> km::GroupId {
    km::GroupId(s(id))
}

/// Runs a group op on the group's coordinator shard; `unroutable` is the
/// answer when the group has no coordinator now.
async fn call_coordinator<C: Call + 'static>(
    shard: &Rc<Shard>,
    group: &str,
    op: C,
    unroutable: impl FnOnce(ErrorCode) -> C::Reply,
) -> C::Reply {
    match coordinator_route(&shard.backend, group) {
        Ok((_, owner)) => shard.call(owner, op).await,
        Err(code) => unroutable(code),
    }
}

pub async fn find_coordinator(
    ctx: RequestContext,
    request: km::FindCoordinatorRequest,
) -> km::FindCoordinatorResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let keys: Vec<String> = if version >= 4 {
        request
            .coordinator_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        vec![request.key.to_string()]
    };
    // A cluster makes its offsets topic on the first FindCoordinator for a
    // group, as Kafka does (a single node made it at its first start), and
    // the transaction state topic on the first for a transactional id; the
    // client asks again meanwhile.
    match request.key_type {
        COORDINATOR_GROUP if shard.image().topic(OFFSETS_TOPIC).is_none() => {
            let replication_factor = shard.config.offsets_topic_replication_factor;
            let partitions = shard.config.offsets_topic_partitions;
            create_internal_topic(shard, OFFSETS_TOPIC, partitions, replication_factor).await;
        }
        COORDINATOR_TRANSACTION if shard.image().topic(TRANSACTION_STATE_TOPIC).is_none() => {
            let replication_factor = shard.config.transaction_state_replication_factor;
            let partitions = shard.config.transaction_state_partitions;
            create_internal_topic(
                shard,
                TRANSACTION_STATE_TOPIC,
                partitions,
                replication_factor,
            )
            .await;
        }
        _ => {}
    }
    let answer = |key: &str| -> Result<(i32, String, i32), ErrorCode> {
        let node = match request.key_type {
            COORDINATOR_GROUP => coordinator_node(&shard.backend, key),
            COORDINATOR_TRANSACTION => txns::coordinator_node(&shard.backend, key),
            _ => return Err(codes::INVALID_REQUEST),
        }
        .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
        if node == shard.config.node_id {
            return Ok((
                node,
                shard.config.advertise_host.clone(),
                i32::from(shard.config.advertise_port),
            ));
        }
        let image = shard.image();
        let broker = image
            .broker(node)
            .filter(|b| !b.fenced)
            .ok_or(codes::COORDINATOR_NOT_AVAILABLE)?;
        Ok((
            node,
            broker.registration.host.clone(),
            i32::from(broker.registration.port),
        ))
    };
    let mut response = km::FindCoordinatorResponse::default();
    if version >= 4 {
        response.error_message = None;
        response.coordinators = keys
            .iter()
            .map(|key| {
                let coordinator = km::find_coordinator_response::Coordinator::default()
                    .with_key(s(key))
                    .with_error_message(None);
                match answer(key) {
                    Ok((node, host, port)) => coordinator
                        .with_node_id(km::BrokerId(node))
                        .with_host(s(&host))
                        .with_port(port),
                    Err(error) => coordinator
                        .with_node_id(km::BrokerId(-1))
                        .with_host(s(""))
                        .with_port(-1)
                        .with_error_code(error),
                }
            })
            .collect();
    } else {
        if version >= 1 {
            response.error_message = None;
        }
        match answer(&keys[0]) {
            Ok((node, host, port)) => {
                response.node_id = km::BrokerId(node);
                response.host = s(&host);
                response.port = port;
            }
            Err(error) => {
                response.error_code = error;
                response.node_id = km::BrokerId(-1);
                response.port = -1;
            }
        }
    }
    response
}

/// Asks the controller to create an internal topic (`__consumer_offsets`,
/// `__transaction_state`), compacted.
async fn create_internal_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: u32,
    replication_factor: u32,
) {
    let spec = TopicSpec {
        name: name.to_string(),
        partitions: partitions as i32,
        // Kafka refuses when fewer brokers are live; a fresh cluster whose
        // brokers are still registering gets what is there.
        replication_factor: replication_factor
            .clamp(1, shard.image().live_brokers().count().max(1) as u32)
            as i16,
        configs: vec![("cleanup.policy".into(), "compact".into())],
        validate_only: false,
    };
    if let Some(result) = create_via_controller(shard, vec![spec]).await.first() {
        if result.error != codes::NONE && result.error != codes::TOPIC_ALREADY_EXISTS {
            tracing::warn!(topic = name, error = result.error, message = ?result.message, "cannot create an internal topic yet");
        }
    }
}

pub async fn join_group(
    ctx: RequestContext,
    request: km::JoinGroupRequest,
) -> km::JoinGroupResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let group = request.group_id.0.to_string();
    let join = JoinRequest {
        group_id: group.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
        session_timeout_ms: request.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.clone(),
            })
            .collect(),
        requires_known_member_id: version >= 4,
    };
    let mut response = km::JoinGroupResponse::default();
    let result = call_coordinator(shard, &group, JoinGroup(join), join_error).await;
    {
        {
            response.error_code = result.error;
            response.generation_id = result.generation_id;
            response.member_id = if result.member_id.is_empty() {
                // No coordinator answered for the member: echo its id.
                request.member_id.clone()
            } else {
                s(&result.member_id)
            };
            response.leader = s(&result.leader);
            if version >= 7 {
                response.protocol_type = result.protocol_type.as_deref().map(s);
                response.protocol_name = result.protocol_name.as_deref().map(s);
            } else {
                response.protocol_name = Some(s(result.protocol_name.as_deref().unwrap_or("")));
            }
            response.members = result
                .members
                .into_iter()
                .map(|m| {
                    let mut member = km::join_group_response::JoinGroupResponseMember::default()
                        .with_member_id(s(&m.member_id))
                        .with_metadata(m.metadata);
                    if version >= 5 {
                        member.group_instance_id = m.group_instance_id.as_deref().map(s);
                    }
                    member
                })
                .collect();
        }
    }
    response
}

pub async fn sync_group(
    ctx: RequestContext,
    request: km::SyncGroupRequest,
) -> km::SyncGroupResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let group = request.group_id.0.to_string();
    let sync = SyncRequest {
        group_id: group.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        protocol_type: request.protocol_type.as_ref().map(|p| p.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let mut response = km::SyncGroupResponse::default();
    let result = call_coordinator(shard, &group, SyncGroup(sync), sync_error).await;
    response.error_code = result.error;
    response.assignment = result.assignment;
    if version >= 5 {
        response.protocol_type = result.protocol_type.as_deref().map(s);
        response.protocol_name = result.protocol_name.as_deref().map(s);
    }
    response
}

pub async fn heartbeat(
    ctx: RequestContext,
    request: km::HeartbeatRequest,
) -> km::HeartbeatResponse {
    let shard = &ctx.shard;
    let group = request.group_id.0.to_string();
    let op = Heartbeat {
        group_id: group.clone(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
    };
    let error = call_coordinator(shard, &group, op, |code| code).await;
    km::HeartbeatResponse::default().with_error_code(error)
}

pub async fn leave_group(
    ctx: RequestContext,
    request: km::LeaveGroupRequest,
) -> km::LeaveGroupResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let group = request.group_id.0.to_string();
    let members: Vec<LeavingMember> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: request.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let op = LeaveGroup {
        group_id: group.clone(),
        members: members.clone(),
    };
    let mut response = km::LeaveGroupResponse::default();
    match call_coordinator(shard, &group, op, Err).await {
        Ok(errors) if version >= 3 => {
            response.members = members
                .iter()
                .zip(errors)
                .map(|(member, error)| {
                    km::leave_group_response::MemberResponse::default()
                        .with_member_id(s(&member.member_id))
                        .with_group_instance_id(member.group_instance_id.as_deref().map(s))
                        .with_error_code(error)
                })
                .collect();
        }
        Ok(errors) => response.error_code = errors.first().copied().unwrap_or(codes::NONE),
        Err(code) => response.error_code = code,
    }
    response
}

/// One partition's offset as OffsetCommit and TxnOffsetCommit carry it.
pub fn committed_offset(
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&str>,
    now_ms: i64,
) -> CommittedOffset {
    CommittedOffset {
        topic: topic.to_string(),
        partition,
        value: OffsetAndMetadata {
            offset,
            leader_epoch,
            metadata: metadata.unwrap_or_default().to_string(),
            commit_timestamp_ms: now_ms,
        },
    }
}

pub async fn offset_commit(
    ctx: RequestContext,
    request: km::OffsetCommitRequest,
) -> km::OffsetCommitResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let group = request.group_id.0.to_string();
    let now = steady_ms();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let leader_epoch = if version >= 6 {
                p.committed_leader_epoch
            } else {
                -1
            };
            offsets.push(committed_offset(
                topic.name.as_str(),
                p.partition_index,
                p.committed_offset,
                leader_epoch,
                p.committed_metadata.as_deref(),
                now,
            ));
        }
    }
    // offset.metadata.max.bytes: larger metadata fails the whole request,
    // before anything is written (records must decode at load).
    let too_large = offsets
        .iter()
        .any(|o| o.value.metadata.len() > OFFSET_METADATA_BYTES_MAX);
    // Offsets of partitions that do not exist are refused one by one, as
    // Kafka does (UNKNOWN_TOPIC_OR_PARTITION); the others are committed.
    let exists: Vec<bool> = offsets
        .iter()
        .map(|o| shard.backend.partition_exists(&o.topic, o.partition))
        .collect();
    let known: Vec<CommittedOffset> = offsets
        .into_iter()
        .zip(&exists)
        .filter_map(|(o, &e)| e.then_some(o))
        .collect();
    let known_count = known.len();
    let op = CommitOffsets {
        group_id: group.clone(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        offsets: known,
    };
    let committed = if too_large {
        Err(codes::OFFSET_METADATA_TOO_LARGE)
    } else if known_count == 0 {
        Ok(Vec::new())
    } else {
        call_coordinator(shard, &group, op, Err).await
    };
    let mut known_errors = committed
        .unwrap_or_else(|code| vec![code; known_count])
        .into_iter();
    let mut errors = exists.into_iter().map(|e| {
        if e {
            known_errors.next().unwrap_or(codes::UNKNOWN_SERVER_ERROR)
        } else {
            codes::UNKNOWN_TOPIC_OR_PARTITION
        }
    });
    let mut response = km::OffsetCommitResponse::default();
    for topic in &request.topics {
        let mut out = km::offset_commit_response::OffsetCommitResponseTopic::default()
            .with_name(topic.name.clone());
        for p in &topic.partitions {
            out.partitions.push(
                km::offset_commit_response::OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(errors.next().unwrap_or(codes::UNKNOWN_SERVER_ERROR)),
            );
        }
        response.topics.push(out);
    }
    response
}

/// A group's committed offsets, or the error for the whole group.
async fn fetch_group_offsets(
    shard: &Rc<Shard>,
    group: &str,
    partitions: Option<Vec<TopicPartitions>>,
    require_stable: bool,
) -> (ErrorCode, Vec<FetchedOffset>) {
    let op = FetchOffsets {
        group_id: group.to_string(),
        partitions,
        require_stable,
    };
    match call_coordinator(shard, group, op, Err).await {
        Ok(offsets) => (codes::NONE, offsets),
        Err(code) => (code, Vec::new()),
    }
}

pub async fn offset_fetch(
    ctx: RequestContext,
    request: km::OffsetFetchRequest,
) -> km::OffsetFetchResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let mut response = km::OffsetFetchResponse::default();
    if version >= 8 {
        for g in &request.groups {
            let group = g.group_id.0.to_string();
            let partitions = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| TopicPartitions {
                        topic: t.name.0.to_string(),
                        partitions: t.partition_indexes.clone(),
                    })
                    .collect()
            });
            let (error, offsets) =
                fetch_group_offsets(shard, &group, partitions, request.require_stable).await;
            let mut out = km::offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(group_id(&group))
                .with_error_code(error);
            for FetchedOffset {
                topic,
                partition,
                value: found,
                error: partition_error,
            } in offsets
            {
                let entry = km::offset_fetch_response::OffsetFetchResponsePartitions::default()
                    .with_partition_index(partition)
                    .with_error_code(partition_error)
                    .with_committed_offset(found.as_ref().map_or(-1, |o| o.offset))
                    .with_committed_leader_epoch(found.as_ref().map_or(-1, |o| o.leader_epoch))
                    .with_metadata(Some(s(found.as_ref().map_or("", |o| o.metadata.as_str()))));
                match out.topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(entry),
                    None => out.topics.push(
                        km::offset_fetch_response::OffsetFetchResponseTopics::default()
                            .with_name(km::TopicName(s(&topic)))
                            .with_partitions(vec![entry]),
                    ),
                }
            }
            response.groups.push(out);
        }
        return response;
    }
    let group = request.group_id.0.to_string();
    let partitions = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| TopicPartitions {
                topic: t.name.0.to_string(),
                partitions: t.partition_indexes.clone(),
            })
            .collect()
    });
    let require_stable = version >= 7 && request.require_stable;
    let (error, offsets) = fetch_group_offsets(shard, &group, partitions, require_stable).await;
    if version >= 2 {
        response.error_code = error;
    }
    for FetchedOffset {
        topic,
        partition,
        value: found,
        error: partition_error,
    } in offsets
    {
        let mut entry = km::offset_fetch_response::OffsetFetchResponsePartition::default()
            .with_partition_index(partition)
            .with_committed_offset(found.as_ref().map_or(-1, |o| o.offset))
            .with_metadata(Some(s(found.as_ref().map_or("", |o| o.metadata.as_str()))))
            .with_error_code(if version < 2 { error } else { partition_error });
        if version >= 5 {
            entry.committed_leader_epoch = found.as_ref().map_or(-1, |o| o.leader_epoch);
        }
        match response
            .topics
            .iter_mut()
            .find(|t| t.name.0.as_str() == topic)
        {
            Some(t) => t.partitions.push(entry),
            None => response.topics.push(
                km::offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(km::TopicName(s(&topic)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    response
}

pub async fn describe_groups(
    ctx: RequestContext,
    request: km::DescribeGroupsRequest,
) -> km::DescribeGroupsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let mut response = km::DescribeGroupsResponse::default();
    for id in &request.groups {
        let group = id.0.to_string();
        let mut out =
            km::describe_groups_response::DescribedGroup::default().with_group_id(id.clone());
        let op = DescribeGroup {
            group_id: group.clone(),
        };
        match call_coordinator(shard, &group, op, Err).await {
            Ok(Some(description)) => {
                if version >= 3 && request.include_authorized_operations {
                    // READ, DELETE, DESCRIBE: no ACLs yet.
                    out.authorized_operations = (1 << 3) | (1 << 6) | (1 << 8);
                }
                out.group_state = s(description.state.name());
                out.protocol_type = s(&description.protocol_type);
                out.protocol_data = s(&description.protocol_name);
                out.members = description
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut member =
                            km::describe_groups_response::DescribedGroupMember::default()
                                .with_member_id(s(&m.member_id))
                                .with_client_id(s(&m.client_id))
                                .with_client_host(s(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                        if version >= 4 {
                            member.group_instance_id = m.group_instance_id.as_deref().map(s);
                        }
                        member
                    })
                    .collect();
            }
            Ok(None) => out.group_state = s("Dead"),
            Err(code) => out.error_code = code,
        }
        response.groups.push(out);
    }
    response
}

pub async fn list_groups(
    ctx: RequestContext,
    request: km::ListGroupsRequest,
) -> km::ListGroupsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let mut response = km::ListGroupsResponse::default();
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let calls = (0..shard.count).map(|target| {
        let shard = shard.clone();
        async move { shard.call(target, ListGroups).await }
    });
    for listed in futures::future::join_all(calls).await {
        // A shard still loading its groups lists none.
        let Ok(groups) = listed else {
            continue;
        };
        for group in groups {
            let (id, protocol_type, state) = (group.group_id, group.protocol_type, group.state);
            if !states.is_empty() && !states.iter().any(|f| f.eq_ignore_ascii_case(state)) {
                continue;
            }
            let mut listed = km::list_groups_response::ListedGroup::default()
                .with_group_id(group_id(&id))
                .with_protocol_type(s(&protocol_type));
            if version >= 4 {
                listed.group_state = s(state);
            }
            if version >= 5 {
                listed.group_type = s("classic");
            }
            response.groups.push(listed);
        }
    }
    response
}

pub async fn delete_groups(
    ctx: RequestContext,
    request: km::DeleteGroupsRequest,
) -> km::DeleteGroupsResponse {
    let shard = &ctx.shard;
    let mut response = km::DeleteGroupsResponse::default();
    for id in &request.groups_names {
        let group = id.0.to_string();
        let op = DeleteGroup {
            group_id: group.clone(),
        };
        let error = call_coordinator(shard, &group, op, |code| code).await;
        response.results.push(
            km::delete_groups_response::DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(error),
        );
    }
    response
}

pub async fn offset_delete(
    ctx: RequestContext,
    request: km::OffsetDeleteRequest,
) -> km::OffsetDeleteResponse {
    let shard = &ctx.shard;
    let group = request.group_id.0.to_string();
    let partitions: Vec<TopicPartition> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| TopicPartition {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
            })
        })
        .collect();
    let op = DeleteOffsets {
        group_id: group.clone(),
        partitions,
    };
    let mut response = km::OffsetDeleteResponse::default();
    let (top, errors) = match call_coordinator(shard, &group, op, Err).await {
        Ok(result) => (result.error, result.partitions),
        Err(code) => (code, Vec::new()),
    };
    response.error_code = top;
    if top == codes::NONE {
        let mut errors = errors.into_iter();
        for topic in &request.topics {
            let mut out = km::offset_delete_response::OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone());
            for p in &topic.partitions {
                out.partitions.push(
                    km::offset_delete_response::OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(errors.next().unwrap_or(codes::NONE)),
                );
            }
            response.topics.push(out);
        }
    }
    response
}

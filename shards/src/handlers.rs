//! Kafka API handlers. `start_request` decodes a frame and does the part of
//! the work that must happen in arrival order (dispatching appends), and
//! returns a future that finishes the request and encodes the response.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use engine::protocol::kafka_protocol::messages::{
    self as km, ApiKey, RequestHeader, ResponseHeader,
};
use engine::protocol::kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use engine::protocol::{
    self as codes, decode_legacy_produce, encode_fetch_frame, encode_legacy_produce_rejection,
    is_version_served, ErrorCode, FetchPartitionHead, FetchTopicHead, SUPPORTED_APIS,
};
use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tracing::{debug, warn};

use crate::admin_handlers as ah;
use crate::group_handlers as gh;
use crate::mesh::{
    FetchWait, PartitionRead, ReadOutcome, ShardOp, ShardReply, TopicResult, TopicSpec,
};
use crate::shard::{read_bytes, Shard};
pub use crate::splice::{OutFrame, OutPart};

/// A response frame (size prefix included), or None when the client expects
/// no answer (acks=0).
pub type Response = Option<OutFrame>;

#[derive(Debug)]
pub enum RequestError {
    /// The connection must close: malformed header, unknown API, bad body.
    Close(String),
}

fn close(reason: impl Into<String>) -> RequestError {
    RequestError::Close(reason.into())
}

/// Longest a Fetch may park, whatever the client asks.
const FETCH_WAIT_MS_MAX: u64 = 30_000;
/// How much longer the connection's own shard parks its part of a Fetch
/// than the other owners (see `read_slots`); only a bound in case an
/// answer never comes.
const LOCAL_WAIT_SLACK_MS: u64 = 1_000;
pub const CLUSTER_ID: &str = "gregor-single-node";
/// Authorized-operation bitfields (bit = Kafka AclOperation code) reported
/// when a client asks: no ACLs yet, so everything a topic, the cluster or a
/// group supports is allowed.
const TOPIC_AUTHORIZED_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

fn encode_frame<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Vec<u8>, String> {
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[0u8; 4]);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let size = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.to_vec())
}

fn respond<R: Encodable + HeaderVersion>(correlation_id: i32, version: i16, body: &R) -> Response {
    match encode_frame(correlation_id, version, body) {
        Ok(bytes) => Some(bytes.into()),
        Err(e) => {
            // A bug in how a response was filled for this version: log it; the
            // client times out rather than reading garbage.
            warn!(version, error = %e, "cannot encode response");
            None
        }
    }
}

fn ready(response: Response) -> LocalBoxFuture<'static, Response> {
    async move { response }.boxed_local()
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> km::TopicName {
    km::TopicName(str_bytes(s))
}

pub async fn start_request(
    shard: &Rc<Shard>,
    mut frame: Bytes,
    client_host: &str,
) -> Result<LocalBoxFuture<'static, Response>, RequestError> {
    if frame.len() < 8 {
        return Err(close("request shorter than its header"));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(api_key_raw)
        .map_err(|_| close(format!("unknown API key {api_key_raw}")))?;
    if api_key == ApiKey::ApiVersions && !is_version_served(api_key, version) {
        // Answer in v0 so any client can read which versions exist.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(ready(respond(
            correlation_id,
            0,
            &api_versions_body(codes::UNSUPPORTED_VERSION),
        )));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| close(format!("bad request header: {e}")))?;
    let correlation_id = header.correlation_id;
    if api_key == ApiKey::Produce && (0..=2).contains(&version) {
        let legacy =
            decode_legacy_produce(&frame).ok_or_else(|| close("malformed Produce v0-2 body"))?;
        warn!(version, "rejecting Produce v{version}: UNSUPPORTED_VERSION");
        if legacy.acks == 0 {
            return Ok(ready(None));
        }
        let mut body = (correlation_id as u32).to_be_bytes().to_vec();
        body.extend(encode_legacy_produce_rejection(&legacy, version));
        return Ok(ready(Some(codes::frame(&body).into())));
    }
    if !is_version_served(api_key, version) {
        return Err(close(format!(
            "unsupported version {version} of {api_key:?}"
        )));
    }
    debug!(?api_key, version, correlation_id, "request");
    let started = std::time::Instant::now();
    let measured = shard.clone();
    let shard = shard.clone();
    macro_rules! decode {
        ($t:ty) => {
            <$t>::decode(&mut frame, version)
                .map_err(|e| close(format!("bad {api_key:?} v{version} body: {e}")))?
        };
    }
    let response = match api_key {
        ApiKey::ApiVersions => ready(respond(
            correlation_id,
            version,
            &api_versions_body(codes::NONE),
        )),
        ApiKey::Metadata => {
            let request = decode!(km::MetadataRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &metadata(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::CreateTopics => {
            let request = decode!(km::CreateTopicsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &create_topics(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DeleteTopics => {
            let request = decode!(km::DeleteTopicsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &delete_topics(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::ListOffsets => {
            let request = decode!(km::ListOffsetsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &list_offsets(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::Fetch => {
            let request = decode!(km::FetchRequest);
            async move { Some(fetch(&shard, request, correlation_id, version).await) }.boxed_local()
        }
        ApiKey::Produce => {
            let request = decode!(km::ProduceRequest);
            let finish = produce(&shard, request, version).await;
            async move {
                finish
                    .await
                    .and_then(|body| respond(correlation_id, version, &body))
            }
            .boxed_local()
        }
        ApiKey::FindCoordinator => {
            let request = decode!(km::FindCoordinatorRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::find_coordinator(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::JoinGroup => {
            let request = decode!(km::JoinGroupRequest);
            let client_id = header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            let client_host = client_host.to_string();
            async move {
                let body = gh::join_group(&shard, request, version, &client_id, &client_host).await;
                respond(correlation_id, version, &body)
            }
            .boxed_local()
        }
        ApiKey::SyncGroup => {
            let request = decode!(km::SyncGroupRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::sync_group(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::Heartbeat => {
            let request = decode!(km::HeartbeatRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::heartbeat(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::LeaveGroup => {
            let request = decode!(km::LeaveGroupRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::leave_group(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::OffsetCommit => {
            let request = decode!(km::OffsetCommitRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::offset_commit(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::OffsetFetch => {
            let request = decode!(km::OffsetFetchRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::offset_fetch(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DescribeGroups => {
            let request = decode!(km::DescribeGroupsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::describe_groups(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::ListGroups => {
            let request = decode!(km::ListGroupsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::list_groups(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DeleteGroups => {
            let request = decode!(km::DeleteGroupsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::delete_groups(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::OffsetDelete => {
            let request = decode!(km::OffsetDeleteRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &gh::offset_delete(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DescribeConfigs => {
            let request = decode!(km::DescribeConfigsRequest);
            ready(respond(
                correlation_id,
                version,
                &ah::describe_configs(&shard, request, version),
            ))
        }
        ApiKey::AlterConfigs => {
            let request = decode!(km::AlterConfigsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &ah::alter_configs(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = decode!(km::IncrementalAlterConfigsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &ah::incremental_alter_configs(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::CreatePartitions => {
            let request = decode!(km::CreatePartitionsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &ah::create_partitions(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DescribeCluster => {
            let request = decode!(km::DescribeClusterRequest);
            ready(respond(
                correlation_id,
                version,
                &ah::describe_cluster(&shard, request, version),
            ))
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = decode!(km::OffsetForLeaderEpochRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &ah::offset_for_leader_epoch(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DeleteRecords => {
            let request = decode!(km::DeleteRecordsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &ah::delete_records(&shard, request).await,
                )
            }
            .boxed_local()
        }
        ApiKey::DescribeLogDirs => {
            let request = decode!(km::DescribeLogDirsRequest);
            async move {
                respond(
                    correlation_id,
                    version,
                    &ah::describe_log_dirs(&shard, request, version).await,
                )
            }
            .boxed_local()
        }
        other => return Err(close(format!("API {other:?} is not served"))),
    };
    Ok(async move {
        let response = response.await;
        measured
            .metrics
            .on_request(api_name(api_key), started.elapsed());
        response
    }
    .boxed_local())
}

/// A static name per API for metric labels.
fn api_name(api_key: ApiKey) -> &'static str {
    match api_key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "Other",
    }
}

fn api_versions_body(error_code: ErrorCode) -> km::ApiVersionsResponse {
    let mut body = km::ApiVersionsResponse::default();
    body.error_code = error_code;
    body.api_keys = SUPPORTED_APIS
        .iter()
        .map(|r| {
            km::api_versions_response::ApiVersion::default()
                .with_api_key(r.api_key as i16)
                .with_min_version(r.min_version)
                .with_max_version(r.max_version)
        })
        .collect();
    body
}

/// Creates topics through the controller (shard 0).
async fn create_via_controller(shard: &Rc<Shard>, topics: Vec<TopicSpec>) -> Vec<TopicResult> {
    match shard.call(0, ShardOp::CreateTopics { topics }).await {
        ShardReply::Topics(results) => results,
        other => {
            warn!(?other, "unexpected controller reply");
            Vec::new()
        }
    }
}

/// Auto-creates `name` with the broker defaults when allowed. Returns the
/// error a client should see when the topic still does not exist.
async fn auto_create(shard: &Rc<Shard>, name: &str) -> ErrorCode {
    if !shard.config.auto_create_topics {
        return codes::UNKNOWN_TOPIC_OR_PARTITION;
    }
    let spec = TopicSpec {
        name: name.to_string(),
        partitions: -1,
        replication_factor: -1,
        configs: Vec::new(),
        validate_only: false,
    };
    match create_via_controller(shard, vec![spec]).await.first() {
        Some(r) if r.error == codes::NONE || r.error == codes::TOPIC_ALREADY_EXISTS => codes::NONE,
        Some(r) => r.error,
        None => codes::UNKNOWN_SERVER_ERROR,
    }
}

async fn metadata(
    shard: &Rc<Shard>,
    request: km::MetadataRequest,
    version: i16,
) -> km::MetadataResponse {
    let node = km::BrokerId(shard.config.node_id);
    let mut response = km::MetadataResponse::default();
    let mut broker = km::metadata_response::MetadataResponseBroker::default()
        .with_node_id(node)
        .with_host(str_bytes(&shard.config.advertise_host))
        .with_port(shard.config.advertise_port as i32);
    if version >= 1 {
        broker.rack = None;
        response.controller_id = node;
    }
    if version >= 2 {
        response.cluster_id = Some(str_bytes(CLUSTER_ID));
    }
    response.brokers = vec![broker];
    if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_AUTHORIZED_OPERATIONS;
    }
    let include_topic_operations = version >= 8 && request.include_topic_authorized_operations;
    let allow_auto_create = version < 4 || request.allow_auto_topic_creation;
    let names: Vec<(Option<String>, ErrorCode)> = match request.topics {
        // v0: an empty list means all topics; v1+: null means all.
        None => shard
            .image()
            .topics()
            .map(|t| (Some(t.name.clone()), codes::NONE))
            .collect(),
        Some(list) if version == 0 && list.is_empty() => shard
            .image()
            .topics()
            .map(|t| (Some(t.name.clone()), codes::NONE))
            .collect(),
        Some(list) => {
            let mut names = Vec::with_capacity(list.len());
            for topic in list {
                let name = match topic.name {
                    Some(name) => Some(name.0.to_string()),
                    None => shard
                        .image()
                        .topics()
                        .find(|t| t.topic_id == *topic.topic_id.as_bytes())
                        .map(|t| t.name.clone()),
                };
                let Some(name) = name else {
                    names.push((None, codes::UNKNOWN_TOPIC_ID));
                    continue;
                };
                let exists = shard.image().topic(&name).is_some();
                let error = if exists {
                    codes::NONE
                } else if allow_auto_create {
                    auto_create(shard, &name).await
                } else {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                };
                names.push((Some(name), error));
            }
            names
        }
    };
    for (name, error) in names {
        let mut topic = km::metadata_response::MetadataResponseTopic::default();
        topic.name = name.as_deref().map(topic_name);
        topic.error_code = error;
        if include_topic_operations {
            // Kafka reports them for every topic in the answer, errors included.
            topic.topic_authorized_operations = TOPIC_AUTHORIZED_OPERATIONS;
        }
        let image = shard.image();
        if let Some(found) = name
            .as_deref()
            .and_then(|n| image.topic(n))
            .filter(|_| error == codes::NONE)
        {
            if version >= 10 {
                topic.topic_id = uuid::Uuid::from_bytes(found.topic_id);
            }
            if version >= 1 {
                topic.is_internal = found.name == engine::group::OFFSETS_TOPIC;
            }

            topic.partitions = (0..found.partition_count() as i32)
                .map(|index| {
                    let mut p = km::metadata_response::MetadataResponsePartition::default()
                        .with_partition_index(index)
                        .with_leader_id(node)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node]);
                    if version >= 7 {
                        p.leader_epoch = crate::partition::LEADER_EPOCH;
                    }
                    p
                })
                .collect();
        }
        response.topics.push(topic);
    }
    response
}

async fn create_topics(
    shard: &Rc<Shard>,
    request: km::CreateTopicsRequest,
    version: i16,
) -> km::CreateTopicsResponse {
    let mut specs = Vec::new();
    let mut rejected = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        if !topic.assignments.is_empty() {
            rejected.push(TopicResult {
                name,
                error: codes::INVALID_REQUEST,
                message: Some("manual replica assignment is not supported".into()),
                partitions: -1,
            });
            continue;
        }
        specs.push(TopicSpec {
            name,
            partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            configs: topic
                .configs
                .into_iter()
                .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                .collect(),
            validate_only: request.validate_only,
        });
    }
    let mut results = if specs.is_empty() {
        Vec::new()
    } else {
        create_via_controller(shard, specs).await
    };
    results.extend(rejected);
    let mut response = km::CreateTopicsResponse::default();
    for result in results {
        let mut topic = km::create_topics_response::CreatableTopicResult::default()
            .with_name(topic_name(&result.name))
            .with_error_code(result.error);
        if version >= 1 {
            topic.error_message = result.message.as_deref().map(str_bytes);
        }
        if version >= 5 && result.error == codes::NONE {
            topic.num_partitions = result.partitions;
            topic.replication_factor = 1;
            topic.configs = Some(Vec::new());
        }
        if version >= 7 {
            if let Some(found) = shard.image().topic(&result.name) {
                topic.topic_id = uuid::Uuid::from_bytes(found.topic_id);
            }
        }
        response.topics.push(topic);
    }
    response
}

async fn delete_topics(
    shard: &Rc<Shard>,
    request: km::DeleteTopicsRequest,
    version: i16,
) -> km::DeleteTopicsResponse {
    let mut names: Vec<String> = request
        .topic_names
        .iter()
        .map(|n| n.0.to_string())
        .collect();
    for state in &request.topics {
        match &state.name {
            Some(name) => names.push(name.0.to_string()),
            None => {
                if let Some(found) = shard
                    .image()
                    .topics()
                    .find(|t| t.topic_id == *state.topic_id.as_bytes())
                {
                    names.push(found.name.clone());
                }
            }
        }
    }
    let ids: BTreeMap<String, [u8; 16]> = shard
        .image()
        .topics()
        .map(|t| (t.name.clone(), t.topic_id))
        .collect();
    let results = match shard.call(0, ShardOp::DeleteTopics { names }).await {
        ShardReply::Topics(results) => results,
        _ => Vec::new(),
    };
    let mut response = km::DeleteTopicsResponse::default();
    for result in results {
        let mut entry = km::delete_topics_response::DeletableTopicResult::default()
            .with_name(Some(topic_name(&result.name)))
            .with_error_code(result.error);
        if version >= 6 {
            if let Some(id) = ids.get(&result.name) {
                entry.topic_id = uuid::Uuid::from_bytes(*id);
            }
        }
        response.responses.push(entry);
    }
    response
}

async fn list_offsets(
    shard: &Rc<Shard>,
    request: km::ListOffsetsRequest,
    version: i16,
) -> km::ListOffsetsResponse {
    let mut response = km::ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = km::list_offsets_response::ListOffsetsTopicResponse::default()
            .with_name(topic.name.clone());
        for partition in topic.partitions {
            let result = match shard.route(&name, partition.partition_index) {
                Err(code) => Err(code),
                Ok(owner) => {
                    let op = ShardOp::ListOffset {
                        topic: name.clone(),
                        partition: partition.partition_index,
                        timestamp_ms: partition.timestamp,
                    };
                    match shard.call(owner, op).await {
                        ShardReply::ListOffset(result) => result,
                        _ => Err(codes::UNKNOWN_SERVER_ERROR),
                    }
                }
            };
            let mut p = km::list_offsets_response::ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index);
            match result {
                Ok((offset, timestamp)) => {
                    p.offset = offset;
                    p.timestamp = timestamp;
                    if version >= 4 && offset >= 0 {
                        p.leader_epoch = crate::partition::LEADER_EPOCH;
                    }
                }
                Err(code) => p.error_code = code,
            }
            out.partitions.push(p);
        }
        response.topics.push(out);
    }
    response
}

struct FetchSlot {
    topic: std::sync::Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    owner: Result<usize, ErrorCode>,
}

/// Reads every slot, one mesh message per owning shard. With `wait`, each
/// owner parks its reads until it has data (a long-poll); once the replies
/// hold `min_bytes`, or an error, the owners still parked are told to answer
/// now.
async fn read_slots(
    shard: &Rc<Shard>,
    slots: &[FetchSlot],
    wait: Option<FetchWait>,
) -> Vec<Result<ReadOutcome, ErrorCode>> {
    let mut by_owner: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut results: Vec<Result<ReadOutcome, ErrorCode>> = Vec::with_capacity(slots.len());
    for (i, slot) in slots.iter().enumerate() {
        results.push(Err(codes::UNKNOWN_SERVER_ERROR));
        match slot.owner {
            Ok(owner) => by_owner.entry(owner).or_default().push(i),
            Err(code) => results[i] = Err(code),
        }
    }
    let mut parked: Vec<usize> = by_owner.keys().copied().collect();
    // With other owners involved, this shard's own part waits a little
    // longer than theirs and is ended when their answers are all in: their
    // timers then stand for its timer too (one wake-up less per idle poll).
    let remote_owners = parked.iter().filter(|&&o| o != shard.id).count();
    let mut calls: FuturesUnordered<_> = by_owner
        .into_iter()
        .map(|(owner, indexes)| {
            let wait = wait.map(|w| FetchWait {
                timeout_ms: if owner == shard.id && remote_owners > 0 {
                    w.timeout_ms + LOCAL_WAIT_SLACK_MS
                } else {
                    w.timeout_ms
                },
                ..w
            });
            let reads = indexes
                .iter()
                .map(|&i| PartitionRead {
                    topic: slots[i].topic.clone(),
                    partition: slots[i].partition,
                    offset: slots[i].offset,
                    max_bytes: slots[i].max_bytes,
                })
                .collect();
            let shard = shard.clone();
            async move {
                let reply = shard.call(owner, ShardOp::Read { reads, wait }).await;
                (owner, indexes, reply)
            }
        })
        .collect();
    let mut found_bytes = 0usize;
    let mut any_error = results.iter().any(|r| r.is_err());
    while let Some((owner, indexes, reply)) = calls.next().await {
        parked.retain(|&o| o != owner);
        let ShardReply::Read(outcomes) = reply else {
            continue;
        };
        assert_eq!(outcomes.len(), indexes.len());
        found_bytes += read_bytes(&outcomes);
        any_error |= outcomes.iter().any(|o| o.is_err());
        for (i, outcome) in indexes.into_iter().zip(outcomes) {
            results[i] = outcome;
        }
        if let Some(wait) = wait {
            let enough = found_bytes >= wait.min_bytes.max(1) || any_error;
            let others_answered = remote_owners > 0 && parked.iter().all(|&o| o == shard.id);
            if enough || others_answered {
                for owner in std::mem::take(&mut parked) {
                    // Only the send matters; the answer comes with the read.
                    drop(
                        shard
                            .dispatch(
                                owner,
                                ShardOp::EndWait {
                                    origin: wait.origin,
                                    id: wait.id,
                                },
                            )
                            .await,
                    );
                }
            }
        }
    }
    results
}

async fn fetch(
    shard: &Rc<Shard>,
    request: km::FetchRequest,
    correlation_id: i32,
    version: i16,
) -> OutFrame {
    let max_wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX);
    let response_bytes_max = if request.max_bytes > 0 {
        request.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut slots = Vec::new();
    for topic in &request.topics {
        let name: std::sync::Arc<str> = topic.topic.0.as_str().into();
        let owners = shard.route_all(&name, topic.partitions.iter().map(|p| p.partition));
        for (partition, owner) in topic.partitions.iter().zip(owners) {
            slots.push(FetchSlot {
                topic: name.clone(),
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: partition.partition_max_bytes.max(0) as usize,
                owner,
            });
        }
    }
    let wait = (max_wait_ms > 0).then(|| FetchWait {
        origin: shard.id,
        id: shard.next_fetch_id(),
        timeout_ms: max_wait_ms,
        min_bytes: request.min_bytes.max(0) as usize,
    });
    let results = read_slots(shard, &slots, wait).await;
    // The response's max_bytes: always return the first non-empty partition
    // whole, then only what fits.
    let mut budget = response_bytes_max;
    let mut topics: Vec<FetchTopicHead> = Vec::new();
    let mut slices = Vec::new();
    for (slot, result) in slots.iter().zip(results) {
        let mut head = FetchPartitionHead {
            partition_index: slot.partition,
            error_code: codes::NONE,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records_bytes: 0,
        };
        match result {
            Ok(outcome) => {
                head.high_watermark = outcome.high_watermark;
                head.last_stable_offset = outcome.high_watermark;
                head.log_start_offset = outcome.log_start_offset;
                if let Some(slice) = outcome.records {
                    let fits = slice.len as usize <= budget || budget == response_bytes_max;
                    if fits {
                        budget = budget.saturating_sub(slice.len as usize);
                        head.records_bytes = slice.len as u32;
                        slices.push(slice);
                    }
                }
            }
            Err(code) => head.error_code = code,
        }
        match topics.last_mut() {
            Some(last) if *last.name == *slot.topic => last.partitions.push(head),
            _ => topics.push(FetchTopicHead {
                name: slot.topic.to_string(),
                partitions: vec![head],
            }),
        }
    }
    let plan = encode_fetch_frame(correlation_id, version, &topics);
    // Interleave the encoded bytes with the record sets; partitions without
    // records leave empty gaps, which merge into the surrounding bytes.
    let mut slices = slices.into_iter();
    let sizes = topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records_bytes);
    let mut parts = Vec::new();
    let mut from = 0;
    for (gap, records_bytes) in plan.gaps.iter().zip(sizes) {
        if records_bytes == 0 {
            continue;
        }
        parts.push(OutPart::Bytes(plan.bytes[from..*gap].to_vec()));
        let slice = slices.next().expect("one slice per non-empty partition");
        assert_eq!(slice.len, records_bytes as u64);
        parts.push(OutPart::File(slice));
        from = *gap;
    }
    parts.push(OutPart::Bytes(plan.bytes[from..].to_vec()));
    assert!(slices.next().is_none());
    OutFrame { parts }
}

/// Dispatches every partition's append in arrival order, then returns the
/// future that collects the outcomes.
async fn produce(
    shard: &Rc<Shard>,
    request: km::ProduceRequest,
    version: i16,
) -> LocalBoxFuture<'static, Option<km::ProduceResponse>> {
    let acks = request.acks;
    let mut pending = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        for partition in topic.partition_data {
            let index = partition.index;
            let outcome: LocalBoxFuture<'static, Result<(i64, i64), ErrorCode>> =
                if !matches!(acks, -1..=1) {
                    ready_err(codes::INVALID_REQUIRED_ACKS)
                } else if let Some(records) = partition.records.filter(|r| !r.is_empty()) {
                    let mut owner = shard.route(&name, index);
                    if owner == Err(codes::UNKNOWN_TOPIC_OR_PARTITION)
                        && shard.image().topic(&name).is_none()
                    {
                        let created = auto_create(shard, &name).await;
                        owner = if created == codes::NONE {
                            shard.route(&name, index)
                        } else {
                            Err(created)
                        };
                    }
                    match owner {
                        Err(code) => ready_err(code),
                        Ok(owner) => {
                            let op = ShardOp::Append {
                                topic: name.clone(),
                                partition: index,
                                records,
                                acks,
                            };
                            let reply = shard.dispatch(owner, op).await;
                            async move {
                                match reply.await {
                                    ShardReply::Append(result) => {
                                        result.map(|o| (o.base_offset, o.log_start_offset))
                                    }
                                    _ => Err(codes::UNKNOWN_SERVER_ERROR),
                                }
                            }
                            .boxed_local()
                        }
                    }
                } else {
                    ready_err(codes::CORRUPT_MESSAGE)
                };
            pending.push((name.clone(), index, outcome));
        }
    }
    async move {
        let mut response = km::ProduceResponse::default();
        let mut topics: Vec<km::produce_response::TopicProduceResponse> = Vec::new();
        for (name, index, outcome) in pending {
            let mut p = km::produce_response::PartitionProduceResponse::default().with_index(index);
            match outcome.await {
                Ok((base_offset, log_start_offset)) => {
                    p.base_offset = base_offset;
                    if version >= 5 {
                        p.log_start_offset = log_start_offset;
                    }
                }
                Err(code) => {
                    p.error_code = code;
                    p.base_offset = -1;
                }
            }
            match topics.last_mut() {
                Some(last) if last.name.0.as_str() == name => last.partition_responses.push(p),
                _ => topics.push(
                    km::produce_response::TopicProduceResponse::default()
                        .with_name(topic_name(&name))
                        .with_partition_responses(vec![p]),
                ),
            }
        }
        response.responses = topics;
        (acks != 0).then_some(response)
    }
    .boxed_local()
}

fn ready_err<T: 'static>(code: ErrorCode) -> LocalBoxFuture<'static, Result<T, ErrorCode>> {
    async move { Err(code) }.boxed_local()
}

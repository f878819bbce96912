//! Metadata and DescribeCluster: what the cluster looks like to a client.

use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};

use super::dispatch::RequestContext;
use super::response::{str_bytes as s, topic_name};
use super::response::{CLUSTER_AUTHORIZED_OPERATIONS, CLUSTER_ID, TOPIC_AUTHORIZED_OPERATIONS};
use super::topics::auto_create;
use crate::mesh::admin::DescribeQuorum;
use crate::shard::{OfflinePartitions, Shard};
use engine::metadata::{BrokerRegistration, ClusterImage, PartitionImage, NO_LEADER};

/// The brokers the quorum counts live, as they registered; this broker
/// alone until it has registered (a single node's first moments).
fn live_brokers(shard: &Shard) -> Vec<BrokerRegistration> {
    let image = shard.image();
    let mut brokers: Vec<BrokerRegistration> = image
        .live_brokers()
        .map(|b| b.registration.clone())
        .collect();
    if brokers.is_empty() {
        brokers.push(BrokerRegistration {
            node_id: shard.config.node_id,
            incarnation_id: [0; 16],
            host: shard.config.advertise_host.clone(),
            port: shard.config.advertise_port,
            replication_host: shard.config.advertise_host.clone(),
            replication_port_base: 0,
            shard_count: shard.config.shard_count as u32,
            rack: None,
        });
    }
    brokers
}

/// A partition as clients see it from broker `node`.
struct PartitionView {
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// Replicas on brokers that are fenced or gone.
    offline: Vec<i32>,
}

/// `offline_here`: whether broker `node`'s own replica does not serve (its
/// files could not be created or were damaged): it is listed offline, out of
/// the ISR, and if it leads, the partition has no leader (as Kafka shows a
/// partition whose leader's log dir failed).
fn partition_view(
    image: &ClusterImage,
    partition: &PartitionImage,
    node: i32,
    offline_here: bool,
) -> PartitionView {
    let mut view = if !partition.has_replicas() {
        // A single node's partition from before the quorum.
        PartitionView {
            leader: node,
            replicas: vec![node],
            isr: vec![node],
            offline: Vec::new(),
        }
    } else {
        PartitionView {
            leader: partition.leader,
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            offline: partition
                .replicas
                .iter()
                .copied()
                .filter(|&r| !image.is_live(r))
                .collect(),
        }
    };
    if offline_here {
        if !view.offline.contains(&node) {
            view.offline.push(node);
        }
        view.isr.retain(|&r| r != node);
        if view.leader == node {
            view.leader = NO_LEADER;
        }
    }
    view
}

fn broker_ids(ids: &[i32]) -> Vec<km::BrokerId> {
    ids.iter().map(|&id| km::BrokerId(id)).collect()
}

pub async fn metadata(ctx: RequestContext, request: km::MetadataRequest) -> km::MetadataResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let node = km::BrokerId(shard.config.node_id);
    let mut response = km::MetadataResponse::default();
    if version >= 1 {
        response.controller_id = node;
    }
    if version >= 2 {
        response.cluster_id = Some(s(CLUSTER_ID));
    }
    response.brokers = live_brokers(shard)
        .into_iter()
        .map(|b| {
            let mut broker = km::metadata_response::MetadataResponseBroker::default()
                .with_node_id(km::BrokerId(b.node_id))
                .with_host(s(&b.host))
                .with_port(i32::from(b.port));
            if version >= 1 {
                broker.rack = b.rack.as_deref().map(s);
            }
            broker
        })
        .collect();
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
    // This broker's replicas that do not serve; rare, and asked of every
    // shard (each knows only its own).
    let offline_here = if names.is_empty() {
        OfflinePartitions::new()
    } else {
        shard
            .offline_partitions(None, false)
            .await
            .unwrap_or_default()
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

            topic.partitions = found
                .partitions
                .iter()
                .enumerate()
                .map(|(index, partition)| {
                    let offline = !offline_here.is_empty()
                        && offline_here.contains_key(&(found.name.clone(), index as i32));
                    let view = partition_view(&image, partition, node.0, offline);
                    let mut p = km::metadata_response::MetadataResponsePartition::default()
                        .with_partition_index(index as i32)
                        .with_leader_id(km::BrokerId(view.leader))
                        .with_replica_nodes(broker_ids(&view.replicas))
                        .with_isr_nodes(broker_ids(&view.isr));
                    if view.leader == NO_LEADER {
                        p.error_code = codes::LEADER_NOT_AVAILABLE;
                    }
                    if version >= 5 {
                        p.offline_replicas = broker_ids(&view.offline);
                    }
                    if version >= 7 {
                        p.leader_epoch = partition.leader_epoch.max(0);
                    }
                    p
                })
                .collect();
        }
        response.topics.push(topic);
    }
    response
}

pub async fn describe_cluster(
    ctx: RequestContext,
    request: km::DescribeClusterRequest,
) -> km::DescribeClusterResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let node = km::BrokerId(shard.config.node_id);
    let mut response = km::DescribeClusterResponse::default()
        .with_cluster_id(s(CLUSTER_ID))
        .with_controller_id(node)
        .with_brokers(
            live_brokers(shard)
                .into_iter()
                .map(|b| {
                    km::describe_cluster_response::DescribeClusterBroker::default()
                        .with_broker_id(km::BrokerId(b.node_id))
                        .with_host(s(&b.host))
                        .with_port(i32::from(b.port))
                        .with_rack(b.rack.as_deref().map(s))
                })
                .collect(),
        );
    if version >= 1 {
        response.endpoint_type = 1;
    }
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_AUTHORIZED_OPERATIONS;
    }
    response
}

/// Most partitions one DescribeTopicPartitions answer carries
/// (`max.request.partition.size.limit`).
const DESCRIBE_TOPIC_PARTITIONS_LIMIT_MAX: i32 = 2000;

/// DescribeTopicPartitions (KIP-966): topics by name (all when none are
/// named), sorted, partitions paginated by `response_partition_limit` with a
/// cursor where the next page starts.
pub async fn describe_topic_partitions(
    ctx: RequestContext,
    request: km::DescribeTopicPartitionsRequest,
) -> km::DescribeTopicPartitionsResponse {
    use km::describe_topic_partitions_response as r;
    let shard = &ctx.shard;
    let node = km::BrokerId(shard.config.node_id);
    let offline_here = shard
        .offline_partitions(None, false)
        .await
        .unwrap_or_default();
    let image = shard.image();
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics().map(|t| t.name.clone()).collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut budget = request
        .response_partition_limit
        .clamp(1, DESCRIBE_TOPIC_PARTITIONS_LIMIT_MAX) as usize;
    let mut response = km::DescribeTopicPartitionsResponse::default();
    for name in names {
        if cursor_topic.as_deref().is_some_and(|c| name.as_str() < c) {
            continue;
        }
        let mut topic = r::DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(topic_name(&name)))
            .with_topic_authorized_operations(TOPIC_AUTHORIZED_OPERATIONS);
        let Some(found) = image.topic(&name) else {
            topic.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION;
            response.topics.push(topic);
            continue;
        };
        if budget == 0 {
            response.next_cursor = Some(
                km::describe_topic_partitions_response::Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(0),
            );
            break;
        }
        topic.topic_id = uuid::Uuid::from_bytes(found.topic_id);
        topic.is_internal = found.name == engine::group::OFFSETS_TOPIC;
        let first = if cursor_topic.as_deref() == Some(name.as_str()) {
            cursor_partition
        } else {
            0
        };
        let count = found.partition_count() as i32;
        let mut index = first;
        while index < count && budget > 0 {
            let offline = offline_here.contains_key(&(name.clone(), index));
            let view = partition_view(&image, &found.partitions[index as usize], node.0, offline);
            let mut partition = r::DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(km::BrokerId(view.leader))
                .with_leader_epoch(found.partitions[index as usize].leader_epoch.max(0))
                .with_replica_nodes(broker_ids(&view.replicas))
                .with_isr_nodes(broker_ids(&view.isr))
                .with_offline_replicas(broker_ids(&view.offline))
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()));
            if view.leader == NO_LEADER {
                partition.error_code = codes::LEADER_NOT_AVAILABLE;
            }
            topic.partitions.push(partition);
            index += 1;
            budget -= 1;
        }
        response.topics.push(topic);
        if index < count {
            response.next_cursor = Some(
                km::describe_topic_partitions_response::Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(index),
            );
            break;
        }
    }
    response
}

/// The metadata log's name in DescribeQuorum (Kafka's).
const METADATA_TOPIC: &str = "__cluster_metadata";

/// DescribeQuorum: the metadata quorum as its leader sees it (this broker's
/// controller forwards the question to the leader's).
pub async fn describe_quorum(
    ctx: RequestContext,
    _request: km::DescribeQuorumRequest,
) -> km::DescribeQuorumResponse {
    use km::describe_quorum_response as r;
    let shard = &ctx.shard;
    let mut partition = r::PartitionData::default().with_partition_index(0);
    match shard.call(0, DescribeQuorum).await {
        Ok(status) => {
            partition.leader_id = km::BrokerId(status.leader_id);
            partition.leader_epoch = i32::try_from(status.term).unwrap_or(i32::MAX);
            partition.high_watermark = status.high_watermark as i64;
            partition.current_voters = status
                .voters
                .iter()
                .map(|&(id, end)| {
                    r::ReplicaState::default()
                        .with_replica_id(km::BrokerId(id))
                        .with_log_end_offset(end as i64)
                        .with_last_fetch_timestamp(-1)
                        .with_last_caught_up_timestamp(-1)
                })
                .collect();
        }
        Err(error) => {
            partition.error_code = error;
            partition.leader_id = km::BrokerId(-1);
        }
    }
    let mut response =
        km::DescribeQuorumResponse::default().with_topics(vec![r::TopicData::default()
            .with_topic_name(topic_name(METADATA_TOPIC))
            .with_partitions(vec![partition])]);
    if ctx.version >= 2 {
        response.nodes = shard
            .config
            .quorum
            .voters
            .iter()
            .filter_map(|voter| {
                let (host, port) = voter.address.rsplit_once(':')?;
                Some(
                    r::Node::default()
                        .with_node_id(km::BrokerId(voter.node_id))
                        .with_listeners(vec![r::Listener::default()
                            .with_name(s("CONTROLLER"))
                            .with_host(s(host.trim_matches(['[', ']'])))
                            .with_port(port.parse().ok()?)]),
                )
            })
            .collect();
    }
    response
}

//! CreateTopics, DeleteTopics and CreatePartitions, through the controller
//! (shard 0); topic auto-creation for Metadata and Produce.

use std::collections::BTreeMap;
use std::rc::Rc;

use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};

use super::dispatch::RequestContext;
use super::response::{str_bytes as s, topic_name};
use crate::mesh::admin::{
    AddPartitions, CreateTopics, DeleteTopics, PartitionGrowth, TopicResult, TopicSpec,
};
use crate::shard::Shard;

/// Creates topics through the controller (shard 0). A topic some of whose
/// partitions could not be created on this broker (out of descriptors or
/// disk) is deleted again and answers KAFKA_STORAGE_ERROR naming them: a
/// client is never told a topic exists whose partitions do not, and nothing
/// half-made is left for a restart to bring back.
pub async fn create_via_controller(shard: &Rc<Shard>, topics: Vec<TopicSpec>) -> Vec<TopicResult> {
    let validate_only = topics.iter().all(|t| t.validate_only);
    let mut results = shard.call(0, CreateTopics { topics }).await;
    if validate_only {
        return results;
    }
    let failed = failed_partitions(shard, &results, &BTreeMap::new()).await;
    if failed.is_empty() {
        return results;
    }
    let names: Vec<String> = failed.keys().cloned().collect();
    let undone: BTreeMap<String, TopicResult> = shard
        .call(0, DeleteTopics { names })
        .await
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    for result in &mut results {
        let Some(why) = failed.get(&result.name) else {
            continue;
        };
        let undo = match undone.get(&result.name) {
            Some(r) if r.error == codes::NONE => "the topic was deleted again".to_string(),
            Some(r) => format!("deleting the topic again failed too (error {})", r.error),
            None => "deleting the topic again got no answer".to_string(),
        };
        result.error = codes::KAFKA_STORAGE_ERROR;
        result.message = Some(format!("{why}; {undo}"));
    }
    results
}

/// Of the topics (or new partitions) the controller reported created,
/// those with partitions this broker could not create: topic -> message.
/// `first_new`: per topic, its first new partition (0 when absent). A
/// broker that does not settle in time reports that instead.
async fn failed_partitions(
    shard: &Rc<Shard>,
    results: &[TopicResult],
    first_new: &BTreeMap<String, i32>,
) -> BTreeMap<String, String> {
    let created: Vec<String> = results
        .iter()
        .filter(|r| r.error == codes::NONE)
        .map(|r| r.name.clone())
        .collect();
    if created.is_empty() {
        return BTreeMap::new();
    }
    let node_id = shard.config.node_id;
    let offline = match shard.offline_partitions(Some(created.clone()), true).await {
        Ok(offline) => offline,
        Err(()) => {
            return created
                .into_iter()
                .map(|name| {
                    let why =
                        format!("broker {node_id} did not finish creating the partitions in time");
                    (name, why)
                })
                .collect();
        }
    };
    let mut failed: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
    for ((topic, partition), reason) in offline {
        if partition >= first_new.get(&topic).copied().unwrap_or(0) {
            failed.entry(topic).or_default().push((partition, reason));
        }
    }
    failed
        .into_iter()
        .map(|(topic, partitions)| {
            let indexes: Vec<String> = partitions.iter().map(|(p, _)| p.to_string()).collect();
            let why = format!(
                "partition(s) {} could not be created on broker {node_id}: {}",
                indexes.join(", "),
                partitions[0].1
            );
            (topic, why)
        })
        .collect()
}

/// Auto-creates `name` with the broker defaults when allowed. Returns the
/// error a client should see when the topic still does not exist.
pub async fn auto_create(shard: &Rc<Shard>, name: &str) -> ErrorCode {
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

pub async fn create_topics(
    ctx: RequestContext,
    request: km::CreateTopicsRequest,
) -> km::CreateTopicsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
    let mut specs = Vec::new();
    let mut rejected = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let (mut partitions, mut replication_factor) =
            (topic.num_partitions, topic.replication_factor);
        if !topic.assignments.is_empty() {
            let checked = if partitions != -1 || replication_factor != -1 {
                Err((
                    codes::INVALID_REQUEST,
                    "a manual replica assignment comes without a partition count or replication factor".to_string(),
                ))
            } else {
                let mut assignments: Vec<_> = topic.assignments.iter().collect();
                assignments.sort_by_key(|a| a.partition_index);
                let dense = assignments
                    .iter()
                    .enumerate()
                    .all(|(i, a)| a.partition_index == i as i32);
                let replicas: Vec<Vec<i32>> = assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect();
                if dense {
                    check_replica_assignment(&replicas, shard.config.node_id)
                        .map_err(|m| (codes::INVALID_REPLICA_ASSIGNMENT, m))
                } else {
                    Err((
                        codes::INVALID_REPLICA_ASSIGNMENT,
                        "partition indexes of the assignment must be 0, 1, 2, ...".to_string(),
                    ))
                }
            };
            match checked {
                Ok(()) => {
                    partitions = topic.assignments.len() as i32;
                    replication_factor = 1;
                }
                Err((error, message)) => {
                    rejected.push(TopicResult {
                        name,
                        error,
                        message: Some(message),
                        partitions: -1,
                    });
                    continue;
                }
            }
        }
        specs.push(TopicSpec {
            name,
            partitions,
            replication_factor,
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
            topic.error_message = result.message.as_deref().map(s);
        }
        if version >= 5 && result.error == codes::NONE {
            topic.num_partitions = result.partitions;
            topic.replication_factor = shard
                .image()
                .topic(&result.name)
                .and_then(|t| t.partitions.first())
                .map_or(1, |p| p.replicas.len().max(1) as i16);
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

pub async fn delete_topics(
    ctx: RequestContext,
    request: km::DeleteTopicsRequest,
) -> km::DeleteTopicsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
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
    let results = shard.call(0, DeleteTopics { names }).await;
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

pub async fn create_partitions(
    ctx: RequestContext,
    request: km::CreatePartitionsRequest,
) -> km::CreatePartitionsResponse {
    let shard = &ctx.shard;
    let mut response = km::CreatePartitionsResponse::default();
    let mut wanted = Vec::new();
    for topic in &request.topics {
        if let Some(assignments) = &topic.assignments {
            let current = shard
                .image()
                .topic(topic.name.0.as_str())
                .map(|t| t.partition_count() as i32);
            let replicas: Vec<Vec<i32>> = assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect();
            let checked = match current {
                // The controller answers for a topic that does not exist.
                None => Ok(()),
                Some(current) if replicas.len() as i32 != topic.count - current => Err(format!(
                    "{} assignments for {} new partitions",
                    replicas.len(),
                    topic.count - current
                )),
                Some(_) => check_replica_assignment(&replicas, shard.config.node_id),
            };
            if let Err(message) = checked {
                response.results.push(
                    km::create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(topic.name.clone())
                        .with_error_code(codes::INVALID_REPLICA_ASSIGNMENT)
                        .with_error_message(Some(s(&message))),
                );
                continue;
            }
        }
        wanted.push(PartitionGrowth {
            topic: topic.name.0.to_string(),
            partition_count: topic.count,
            validate_only: request.validate_only,
        });
    }
    if !wanted.is_empty() {
        let validate_only = request.validate_only;
        let first_new: BTreeMap<String, i32> = wanted
            .iter()
            .filter_map(|w| {
                let count = shard.image().topic(&w.topic)?.partition_count();
                Some((w.topic.clone(), count as i32))
            })
            .collect();
        let mut results = shard.call(0, AddPartitions { topics: wanted }).await;
        if !validate_only {
            // New partitions cannot be taken back (Kafka has no way to
            // shrink a topic): those that failed stay offline, are retried
            // every maintenance tick, and the answer says so.
            let failed = failed_partitions(shard, &results, &first_new).await;
            for result in &mut results {
                if let Some(why) = failed.get(&result.name) {
                    result.error = codes::KAFKA_STORAGE_ERROR;
                    result.message = Some(format!(
                        "{why}; they are offline and are created as soon as the resource returns"
                    ));
                }
            }
        }
        for result in results {
            response.results.push(
                km::create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(km::TopicName(s(&result.name)))
                    .with_error_code(result.error)
                    .with_error_message(result.message.as_deref().map(s)),
            );
        }
    }
    response
}

/// A manual replica assignment (one list of broker ids per partition) that
/// this cluster can place: each partition on exactly the brokers there are,
/// here the one broker.
fn check_replica_assignment(replicas: &[Vec<i32>], node_id: i32) -> Result<(), String> {
    for (index, brokers) in replicas.iter().enumerate() {
        if brokers.is_empty() {
            return Err(format!("partition {index} is assigned to no broker"));
        }
        if let Some(unknown) = brokers.iter().find(|&&b| b != node_id) {
            return Err(format!(
                "partition {index} is assigned to broker {unknown}, which does not exist (brokers: {node_id})"
            ));
        }
        if brokers.len() > 1 {
            return Err(format!(
                "partition {index} names broker {node_id} {} times; a single-node cluster has replication factor 1",
                brokers.len()
            ));
        }
    }
    Ok(())
}

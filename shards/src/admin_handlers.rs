//! Admin APIs tools use: DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, CreatePartitions, DescribeCluster,
//! OffsetForLeaderEpoch. Changes go through the controller (shard 0) as
//! metadata records and take effect without a restart.

use std::rc::Rc;

use engine::metadata::{config_def, describe_topic_configs, TOPIC_CONFIGS};
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::kafka_protocol::protocol::StrBytes;
use engine::protocol::{self as codes, ErrorCode};

use crate::mesh::{ConfigChange, ShardOp, ShardReply, TopicResult};
use crate::shard::Shard;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

async fn controller(shard: &Rc<Shard>, op: ShardOp) -> Vec<TopicResult> {
    match shard.call(0, op).await {
        ShardReply::Topics(results) => results,
        _ => Vec::new(),
    }
}

pub fn describe_configs(
    shard: &Rc<Shard>,
    request: km::DescribeConfigsRequest,
    version: i16,
) -> km::DescribeConfigsResponse {
    let mut response = km::DescribeConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let wanted = |key: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
        };
        let mut result = km::describe_configs_response::DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let entries: Vec<(String, String, i8, i8)> = match resource.resource_type {
            RESOURCE_TOPIC => match shard.image().topic(&name) {
                Some(topic) => describe_topic_configs(&topic.configs, &shard.config.topic_defaults)
                    .into_iter()
                    .map(|e| (e.name.to_string(), e.value, e.source, e.config_type))
                    .collect(),
                None => {
                    result.error_code = codes::UNKNOWN_TOPIC_OR_PARTITION;
                    result.error_message = Some(s(&format!("topic '{name}' does not exist")));
                    Vec::new()
                }
            },
            RESOURCE_BROKER => TOPIC_CONFIGS
                .iter()
                .map(|d| {
                    let defaults = &shard.config.topic_defaults;
                    let source = if defaults.is_overridden(d.name) {
                        engine::metadata::CONFIG_SOURCE_STATIC_BROKER
                    } else {
                        engine::metadata::CONFIG_SOURCE_DEFAULT
                    };
                    (
                        d.broker_name.to_string(),
                        defaults.get(d.name).to_string(),
                        source,
                        d.config_type(),
                    )
                })
                .collect(),
            other => {
                result.error_code = codes::INVALID_REQUEST;
                result.error_message = Some(s(&format!("resource type {other} is not supported")));
                Vec::new()
            }
        };
        for (key, value, source, config_type) in entries.into_iter().filter(|(k, ..)| wanted(k)) {
            let mut entry = km::describe_configs_response::DescribeConfigsResourceResult::default()
                .with_name(s(&key))
                .with_value(Some(s(&value)))
                .with_read_only(resource.resource_type == RESOURCE_BROKER);
            if version >= 1 {
                entry.config_source = source;
            }
            if version >= 3 {
                entry.config_type = config_type;
            }
            result.configs.push(entry);
        }
        response.results.push(result);
    }
    response
}

fn alter_response(
    resource_type: i8,
    name: &str,
    error: ErrorCode,
    message: Option<String>,
) -> km::alter_configs_response::AlterConfigsResourceResponse {
    km::alter_configs_response::AlterConfigsResourceResponse::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_error_code(error)
        .with_error_message(message.as_deref().map(s))
}

/// (resource type, resource name, the change or why it cannot be made)
type ResourceChange = (i8, String, Result<ConfigChange, (ErrorCode, String)>);

/// Runs topic config changes; answers other resource types with an error.
async fn apply_changes(
    shard: &Rc<Shard>,
    resources: Vec<ResourceChange>,
) -> Vec<(i8, String, ErrorCode, Option<String>)> {
    let changes: Vec<ConfigChange> = resources
        .iter()
        .filter_map(|(_, _, change)| change.as_ref().ok().cloned())
        .collect();
    let results = if changes.is_empty() {
        Vec::new()
    } else {
        controller(shard, ShardOp::AlterTopicConfigs { changes }).await
    };
    let mut results = results.into_iter();
    resources
        .into_iter()
        .map(|(resource_type, name, change)| match change {
            Ok(_) => match results.next() {
                Some(r) => (resource_type, name, r.error, r.message),
                None => (resource_type, name, codes::UNKNOWN_SERVER_ERROR, None),
            },
            Err((code, message)) => (resource_type, name, code, Some(message)),
        })
        .collect()
}

fn not_a_topic(resource_type: i8) -> (ErrorCode, String) {
    if resource_type == RESOURCE_BROKER {
        (
            codes::INVALID_REQUEST,
            "dynamic broker configs are not supported yet: set them in --config and restart".into(),
        )
    } else {
        (
            codes::INVALID_REQUEST,
            format!("resource type {resource_type} is not supported"),
        )
    }
}

pub async fn alter_configs(
    shard: &Rc<Shard>,
    request: km::AlterConfigsRequest,
) -> km::AlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let change = if r.resource_type == RESOURCE_TOPIC {
                Ok(ConfigChange {
                    topic: name.clone(),
                    incremental: false,
                    set: r
                        .configs
                        .iter()
                        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                        .collect(),
                    delete: Vec::new(),
                    validate_only: request.validate_only,
                })
            } else {
                Err(not_a_topic(r.resource_type))
            };
            (r.resource_type, name, change)
        })
        .collect();
    let mut response = km::AlterConfigsResponse::default();
    for (resource_type, name, error, message) in apply_changes(shard, resources).await {
        response
            .responses
            .push(alter_response(resource_type, &name, error, message));
    }
    response
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    request: km::IncrementalAlterConfigsRequest,
) -> km::IncrementalAlterConfigsResponse {
    let mut resources = Vec::new();
    for r in request.resources {
        let name = r.resource_name.to_string();
        if r.resource_type != RESOURCE_TOPIC {
            resources.push((r.resource_type, name, Err(not_a_topic(r.resource_type))));
            continue;
        }
        let current = shard
            .image()
            .topic(&name)
            .map(|t| t.configs.clone())
            .unwrap_or_default();
        let mut change = ConfigChange {
            topic: name.clone(),
            incremental: true,
            set: Vec::new(),
            delete: Vec::new(),
            validate_only: request.validate_only,
        };
        let mut failure = None;
        for c in &r.configs {
            let key = c.name.to_string();
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            match c.config_operation {
                OP_SET => change.set.push((key, value)),
                OP_DELETE => change.delete.push(key),
                OP_APPEND | OP_SUBTRACT => {
                    if !config_def(&key).is_some_and(|d| d.is_list()) {
                        failure =
                            Some((codes::INVALID_CONFIG, format!("{key} is not a list config")));
                        break;
                    }
                    let base = current
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| shard.config.topic_defaults.get(&key).to_string());
                    let mut items: Vec<String> = base
                        .split(',')
                        .map(|i| i.trim().to_string())
                        .filter(|i| !i.is_empty())
                        .collect();
                    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        if c.config_operation == OP_APPEND {
                            if !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            }
                        } else {
                            items.retain(|i| i != item);
                        }
                    }
                    change.set.push((key, items.join(",")));
                }
                other => {
                    failure = Some((
                        codes::INVALID_REQUEST,
                        format!("unknown config operation {other}"),
                    ));
                    break;
                }
            }
        }
        resources.push((r.resource_type, name, failure.map_or(Ok(change), Err)));
    }
    let mut response = km::IncrementalAlterConfigsResponse::default();
    for (resource_type, name, error, message) in apply_changes(shard, resources).await {
        response.responses.push(
            km::incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(&name))
                .with_error_code(error)
                .with_error_message(message.as_deref().map(s)),
        );
    }
    response
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    request: km::CreatePartitionsRequest,
) -> km::CreatePartitionsResponse {
    let mut response = km::CreatePartitionsResponse::default();
    let mut wanted = Vec::new();
    for topic in &request.topics {
        if topic.assignments.is_some() {
            response.results.push(
                km::create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_error_code(codes::INVALID_REQUEST)
                    .with_error_message(Some(s("manual replica assignment is not supported"))),
            );
            continue;
        }
        wanted.push((topic.name.0.to_string(), topic.count, request.validate_only));
    }
    if !wanted.is_empty() {
        for result in controller(shard, ShardOp::AddPartitions { topics: wanted }).await {
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

pub fn describe_cluster(
    shard: &Rc<Shard>,
    request: km::DescribeClusterRequest,
    version: i16,
) -> km::DescribeClusterResponse {
    let node = km::BrokerId(shard.config.node_id);
    let mut response = km::DescribeClusterResponse::default()
        .with_cluster_id(s(crate::handlers::CLUSTER_ID))
        .with_controller_id(node)
        .with_brokers(vec![
            km::describe_cluster_response::DescribeClusterBroker::default()
                .with_broker_id(node)
                .with_host(s(&shard.config.advertise_host))
                .with_port(shard.config.advertise_port as i32),
        ]);
    if version >= 1 {
        response.endpoint_type = 1;
    }
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = crate::handlers::CLUSTER_AUTHORIZED_OPERATIONS;
    }
    response
}

/// Leader epochs are always 0 on a single node: epoch 0 ends at the high
/// watermark; a later epoch is unknown (UNDEFINED offsets, as Kafka answers).
pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    request: km::OffsetForLeaderEpochRequest,
) -> km::OffsetForLeaderEpochResponse {
    let mut response = km::OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut out = km::offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
            .with_topic(topic.topic.clone());
        for p in topic.partitions {
            let mut entry = km::offset_for_leader_epoch_response::EpochEndOffset::default()
                .with_partition(p.partition);
            let leader_epoch = crate::partition::LEADER_EPOCH;
            if p.current_leader_epoch > leader_epoch {
                entry.error_code = 74; // UNKNOWN_LEADER_EPOCH
            } else if p.current_leader_epoch >= 0 && p.current_leader_epoch < leader_epoch {
                entry.error_code = 73; // FENCED_LEADER_EPOCH
            } else {
                match shard.route(&name, p.partition) {
                    Err(code) => entry.error_code = code,
                    Ok(owner) => {
                        let op = ShardOp::ListOffset {
                            topic: name.clone(),
                            partition: p.partition,
                            timestamp_ms: -1,
                        };
                        match shard.call(owner, op).await {
                            ShardReply::ListOffset(Ok((end, _)))
                                if p.leader_epoch <= leader_epoch =>
                            {
                                entry.leader_epoch = leader_epoch;
                                entry.end_offset = end;
                            }
                            ShardReply::ListOffset(Ok(_)) => {
                                entry.leader_epoch = -1;
                                entry.end_offset = -1;
                            }
                            ShardReply::ListOffset(Err(code)) => entry.error_code = code,
                            _ => entry.error_code = codes::UNKNOWN_SERVER_ERROR,
                        }
                    }
                }
            }
            out.partitions.push(entry);
        }
        response.topics.push(out);
    }
    response
}

pub async fn delete_records(
    shard: &Rc<Shard>,
    request: km::DeleteRecordsRequest,
) -> km::DeleteRecordsResponse {
    let mut response = km::DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut out = km::delete_records_response::DeleteRecordsTopicResult::default()
            .with_name(topic.name.clone());
        for p in topic.partitions {
            let mut entry = km::delete_records_response::DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            match shard.route(&name, p.partition_index) {
                Err(code) => entry.error_code = code,
                Ok(owner) => {
                    let op = ShardOp::DeleteRecords {
                        topic: name.clone(),
                        partition: p.partition_index,
                        offset: p.offset,
                    };
                    match shard.call(owner, op).await {
                        ShardReply::ListOffset(Ok((start, _))) => entry.low_watermark = start,
                        ShardReply::ListOffset(Err(code)) => entry.error_code = code,
                        _ => entry.error_code = codes::UNKNOWN_SERVER_ERROR,
                    }
                }
            }
            out.partitions.push(entry);
        }
        response.topics.push(out);
    }
    response
}

/// Total and free bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct we own from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as i64;
    Some((stat.f_blocks as i64 * block, stat.f_bavail as i64 * block))
}

pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    request: km::DescribeLogDirsRequest,
    version: i16,
) -> km::DescribeLogDirsResponse {
    let calls = (0..shard.count).map(|target| {
        let shard = shard.clone();
        async move { shard.call(target, ShardOp::LogDirSizes).await }
    });
    let mut sizes: Vec<(String, i32, u64)> = Vec::new();
    for reply in futures::future::join_all(calls).await {
        if let ShardReply::Sizes(list) = reply {
            sizes.extend(list);
        }
    }
    sizes.sort();
    let wanted = |topic: &str, partition: i32| {
        request.topics.as_ref().is_none_or(|ts| {
            ts.iter()
                .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&partition))
        })
    };
    let dir = std::fs::canonicalize(&shard.config.data_dir)
        .unwrap_or_else(|_| shard.config.data_dir.clone());
    let mut result = km::describe_log_dirs_response::DescribeLogDirsResult::default()
        .with_log_dir(s(&dir.display().to_string()));
    if version >= 4 {
        let (total, usable) = disk_space(&dir).unwrap_or((-1, -1));
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    for (topic, partition, bytes) in sizes.into_iter().filter(|(t, p, _)| wanted(t, *p)) {
        let entry = km::describe_log_dirs_response::DescribeLogDirsPartition::default()
            .with_partition_index(partition)
            .with_partition_size(bytes as i64);
        match result.topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(entry),
            _ => result.topics.push(
                km::describe_log_dirs_response::DescribeLogDirsTopic::default()
                    .with_name(km::TopicName(s(&topic)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    km::DescribeLogDirsResponse::default().with_results(vec![result])
}

//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs. Changes go
//! through the controller as metadata records and take effect without a
//! restart.

use std::rc::Rc;

use engine::metadata::{config_def, describe_topic_configs, TOPIC_CONFIGS};
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};

use super::dispatch::RequestContext;
use super::response::str_bytes as s;
use crate::config::BrokerConfig;
use crate::mesh::admin::{AlterTopicConfigs, ConfigChange};
use crate::shard::Shard;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn describe_configs(
    ctx: RequestContext,
    request: km::DescribeConfigsRequest,
) -> km::DescribeConfigsResponse {
    let shard = &ctx.shard;
    let version = ctx.version;
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
            RESOURCE_BROKER_LOGGER => broker_loggers(),
            RESOURCE_BROKER => broker_configs(&shard.config)
                .into_iter()
                .chain(TOPIC_CONFIGS.iter().map(|d| {
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
                }))
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
                .with_read_only(resource.resource_type != RESOURCE_TOPIC);
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
        shard.call(0, AlterTopicConfigs { changes }).await
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
    ctx: RequestContext,
    request: km::AlterConfigsRequest,
) -> km::AlterConfigsResponse {
    let shard = &ctx.shard;
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
    ctx: RequestContext,
    request: km::IncrementalAlterConfigsRequest,
) -> km::IncrementalAlterConfigsResponse {
    let shard = &ctx.shard;
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

/// The broker's own settings under Kafka's names (beside the topic
/// defaults): (name, value, source, type). A value equal to the built-in
/// default is reported as the default.
fn broker_configs(config: &BrokerConfig) -> Vec<(String, String, i8, i8)> {
    use engine::metadata::{
        CONFIG_SOURCE_DEFAULT as DEFAULT, CONFIG_SOURCE_STATIC_BROKER as STATIC,
        CONFIG_TYPE_BOOLEAN as BOOLEAN, CONFIG_TYPE_INT as INT, CONFIG_TYPE_LIST as LIST,
        CONFIG_TYPE_LONG as LONG, CONFIG_TYPE_SHORT as SHORT, CONFIG_TYPE_STRING as STRING,
    };
    let d = BrokerConfig::with_defaults(config.data_dir.clone(), config.listen, config.shard_count);
    let (c, g, dg) = (config, &config.groups, &d.groups);
    // (name, value, the built-in default's value, type); None: always static.
    #[rustfmt::skip]
    let table: Vec<(&str, String, Option<String>, i8)> = vec![
        ("node.id", c.node_id.to_string(), None, INT),
        ("broker.id", c.node_id.to_string(), None, INT),
        ("listeners", format!("PLAINTEXT://{}", c.listen), None, LIST),
        ("advertised.listeners", format!("PLAINTEXT://{}:{}", c.advertise_host, c.advertise_port), None, LIST),
        ("log.dirs", c.data_dir.display().to_string(), None, STRING),
        ("process.roles", "broker,controller".into(), Some("broker,controller".into()), LIST),
        ("auto.create.topics.enable", c.auto_create_topics.to_string(), Some(d.auto_create_topics.to_string()), BOOLEAN),
        ("num.partitions", c.default_partitions.to_string(), Some(d.default_partitions.to_string()), INT),
        ("default.replication.factor", c.default_replication_factor.to_string(), Some(d.default_replication_factor.to_string()), SHORT),
        ("offsets.topic.num.partitions", c.offsets_topic_partitions.to_string(), Some(d.offsets_topic_partitions.to_string()), INT),
        ("offsets.topic.replication.factor", c.offsets_topic_replication_factor.to_string(), Some(d.offsets_topic_replication_factor.to_string()), SHORT),
        ("transaction.state.log.num.partitions", c.transaction_state_partitions.to_string(), Some(d.transaction_state_partitions.to_string()), INT),
        ("transaction.state.log.replication.factor", c.transaction_state_replication_factor.to_string(), Some(d.transaction_state_replication_factor.to_string()), SHORT),
        ("transaction.max.timeout.ms", c.transaction_max_timeout_ms.to_string(), Some(d.transaction_max_timeout_ms.to_string()), INT),
        ("socket.request.max.bytes", c.request_bytes_max.to_string(), Some(d.request_bytes_max.to_string()), INT),
        ("connections.max.idle.ms", c.connection_idle_ms_max.to_string(), Some(d.connection_idle_ms_max.to_string()), LONG),
        ("log.retention.check.interval.ms", c.retention_check_interval_ms.to_string(), Some(d.retention_check_interval_ms.to_string()), LONG),
        ("log.cleaner.backoff.ms", c.cleaner_backoff_ms.to_string(), Some(d.cleaner_backoff_ms.to_string()), LONG),
        ("group.initial.rebalance.delay.ms", g.initial_rebalance_delay_ms.to_string(), Some(dg.initial_rebalance_delay_ms.to_string()), INT),
        ("group.min.session.timeout.ms", g.session_timeout_ms_min.to_string(), Some(dg.session_timeout_ms_min.to_string()), INT),
        ("group.max.session.timeout.ms", g.session_timeout_ms_max.to_string(), Some(dg.session_timeout_ms_max.to_string()), INT),
        ("offsets.retention.minutes", (g.offsets_retention_ms / 60_000).to_string(), Some((dg.offsets_retention_ms / 60_000).to_string()), INT),
        ("producer.id.expiration.ms", c.producer_id_expiration_ms.to_string(), Some(d.producer_id_expiration_ms.to_string()), INT),
    ];
    table
        .into_iter()
        .map(|(name, value, default, config_type)| {
            let source = if default.as_ref() == Some(&value) {
                DEFAULT
            } else {
                STATIC
            };
            (name.to_string(), value, source, config_type)
        })
        .collect()
}

/// BROKER_LOGGER: the log level, as Kafka names its loggers ("root").
/// Levels come from RUST_LOG at start and cannot be changed at run time.
fn broker_loggers() -> Vec<(String, String, i8, i8)> {
    /// DYNAMIC_BROKER_LOGGER_CONFIG, what Kafka reports for loggers.
    const SOURCE_BROKER_LOGGER: i8 = 6;
    let filter = std::env::var("RUST_LOG").unwrap_or_default();
    // The bare level of RUST_LOG (e.g. "info" in "info,gregor=debug").
    let level = filter
        .split(',')
        .find(|d| !d.contains('='))
        .filter(|d| !d.is_empty())
        .unwrap_or("info")
        .to_ascii_uppercase();
    vec![(
        "root".to_string(),
        level,
        SOURCE_BROKER_LOGGER,
        engine::metadata::CONFIG_TYPE_STRING,
    )]
}

const RESOURCE_CLIENT_METRICS: i8 = 16;
const RESOURCE_GROUP: i8 = 32;

/// ListConfigResources (KIP-1142): the resources that have configs, of the
/// types asked for (none named: every type). v0 was
/// ListClientMetricsResources and lists client-metrics resources only.
pub async fn list_config_resources(
    ctx: RequestContext,
    request: km::ListConfigResourcesRequest,
) -> km::ListConfigResourcesResponse {
    use km::list_config_resources_response::ConfigResource;
    let shard = &ctx.shard;
    let mut types = if ctx.version == 0 {
        vec![RESOURCE_CLIENT_METRICS]
    } else {
        request.resource_types.clone()
    };
    if types.is_empty() {
        types = vec![
            RESOURCE_TOPIC,
            RESOURCE_BROKER,
            RESOURCE_BROKER_LOGGER,
            RESOURCE_CLIENT_METRICS,
            RESOURCE_GROUP,
        ];
    }
    let mut response = km::ListConfigResourcesResponse::default();
    for resource_type in types {
        let names: Vec<String> = match resource_type {
            RESOURCE_TOPIC => shard.image().topics().map(|t| t.name.clone()).collect(),
            RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => vec![shard.config.node_id.to_string()],
            // No client-metrics subscriptions and no dynamic group configs.
            RESOURCE_CLIENT_METRICS | RESOURCE_GROUP => Vec::new(),
            other => {
                response.error_code = codes::UNSUPPORTED_VERSION;
                response.config_resources.clear();
                tracing::debug!(
                    resource_type = other,
                    "ListConfigResources of an unknown type"
                );
                return response;
            }
        };
        response
            .config_resources
            .extend(names.into_iter().map(|name| {
                ConfigResource::default()
                    .with_resource_name(s(&name))
                    .with_resource_type(resource_type)
            }));
    }
    response
}

//! `gregor topic create|list|describe|delete|alter-config|add-partitions`.

use anyhow::bail;
use clap::Subcommand;
use engine::protocol::kafka_protocol::messages::{
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
};
use serde_json::json;

use super::{key_value, print_config_table, print_json, print_table, Context};
use crate::client::configs::{ConfigChange, RESOURCE_TOPIC};
use crate::client::{error_text, str, topic_name, Client};

const ADMIN_TIMEOUT_MS: i32 = 30_000;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions.
        #[arg(short = 'p', long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor (-1: the broker's default).
        #[arg(short = 'r', long, default_value_t = -1)]
        replicas: i16,
        /// Topic config, key=value (Kafka names, e.g. cleanup.policy=compact); repeatable.
        #[arg(short = 'c', long = "config")]
        configs: Vec<String>,
    },
    /// List topics.
    List {
        /// Include internal topics (__consumer_offsets).
        #[arg(short = 'a', long)]
        all: bool,
    },
    /// Partitions, leaders, offsets and configs of a topic.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Set or delete topic configs.
    AlterConfig {
        name: String,
        /// key=value to set; repeatable.
        #[arg(long = "set")]
        set: Vec<String>,
        /// Key to delete (back to the default); repeatable.
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
    /// Add partitions to a topic.
    AddPartitions {
        name: String,
        /// How many partitions to add.
        #[arg(short = 'n', long)]
        num: i32,
    },
}

pub fn run(ctx: &Context, command: TopicCommand) -> anyhow::Result<()> {
    let json = ctx.json()?;
    let mut client = ctx.client()?;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replicas,
            configs,
        } => create(&mut client, json, &name, partitions, replicas, &configs),
        TopicCommand::List { all } => list(&mut client, json, all),
        TopicCommand::Describe { name } => describe(&mut client, json, &name),
        TopicCommand::Delete { name } => delete(&mut client, json, &name),
        TopicCommand::AlterConfig { name, set, delete } => {
            alter_config(&mut client, json, &name, &set, &delete)
        }
        TopicCommand::AddPartitions { name, num } => add_partitions(&mut client, json, &name, num),
    }
}

fn create(
    client: &mut Client,
    json: bool,
    name: &str,
    partitions: i32,
    replicas: i16,
    configs: &[String],
) -> anyhow::Result<()> {
    if partitions < 1 {
        bail!("-p must be at least 1");
    }
    let mut pairs = Vec::new();
    for c in configs {
        pairs.push(key_value(c, "-c")?);
    }
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replicas)
            .with_configs(
                pairs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(str(k))
                            .with_value(Some(str(v)))
                    })
                    .collect(),
            )]);
    let response = client.send_any(&request)?;
    let Some(result) = response.topics.first() else {
        bail!("CreateTopics answered no result");
    };
    if result.error_code != 0 {
        let hint = match result.error_code {
            36 => format!(" — describe it with `gregor topic describe {name}`"),
            40 => " — check the -c key and value (Kafka's topic config names, e.g. retention.ms=86400000)".into(),
            37 => " — -p must be at least 1".into(),
            38 => " — use -r 1 on a single broker".into(),
            _ => String::new(),
        };
        bail!(
            "cannot create topic '{name}': {}{hint}",
            error_text(result.error_code, result.error_message.as_ref())
        );
    }
    if json {
        print_json(&json!({
            "topic": name,
            "partitions": partitions,
            "replication_factor": replicas,
            "configs": pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }));
    } else {
        println!("created topic {name} with {partitions} partition(s)");
    }
    Ok(())
}

fn list(client: &mut Client, json: bool, all: bool) -> anyhow::Result<()> {
    let mut topics = client.metadata(None)?;
    topics.retain(|t| all || !t.internal);
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if json {
        print_json(&json!(topics
            .iter()
            .map(|t| json!({
                "name": t.name,
                "partitions": t.partitions.len(),
                "replication_factor": t.partitions.first().map(|p| p.replicas.len()).unwrap_or(0),
                "internal": t.internal,
            }))
            .collect::<Vec<_>>()));
    } else {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.partitions.len().to_string(),
                    t.partitions
                        .first()
                        .map(|p| p.replicas.len())
                        .unwrap_or(0)
                        .to_string(),
                ]
            })
            .collect();
        print_table(&["name", "partitions", "replicas"], &rows);
    }
    Ok(())
}

fn describe(client: &mut Client, json: bool, name: &str) -> anyhow::Result<()> {
    let topic = client.topic(name)?;
    let marks = client.watermarks(&topic)?;
    let configs = client.describe_configs(None, RESOURCE_TOPIC, name, None)?;
    if json {
        print_json(&json!({
            "name": topic.name,
            "internal": topic.internal,
            "partitions": topic.partitions.iter().map(|p| {
                let (low, high) = marks.get(&p.partition).copied().unwrap_or((-1, -1));
                json!({
                    "partition": p.partition,
                    "leader": p.leader,
                    "leader_epoch": p.leader_epoch,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "offline_replicas": p.offline,
                    "log_start_offset": low,
                    "high_watermark": high,
                })
            }).collect::<Vec<_>>(),
            "configs": configs.iter().map(|c| (c.name.clone(), json!({
                "value": c.value,
                "source": c.source,
                "read_only": c.read_only,
                "sensitive": c.sensitive,
            }))).collect::<serde_json::Map<_, _>>(),
        }));
    } else {
        println!(
            "topic {}: {} partition(s)",
            topic.name,
            topic.partitions.len()
        );
        println!();
        let rows: Vec<Vec<String>> = topic
            .partitions
            .iter()
            .map(|p| {
                let (low, high) = marks.get(&p.partition).copied().unwrap_or((-1, -1));
                let ids = |v: &[i32]| {
                    v.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                vec![
                    p.partition.to_string(),
                    p.leader.to_string(),
                    p.leader_epoch.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    ids(&p.offline),
                    low.to_string(),
                    high.to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "partition",
                "leader",
                "epoch",
                "replicas",
                "isr",
                "offline",
                "log-start",
                "high-watermark",
            ],
            &rows,
        );
        println!();
        print_config_table(&configs);
    }
    Ok(())
}

fn delete(client: &mut Client, json: bool, name: &str) -> anyhow::Result<()> {
    let version = client.any().version_for::<DeleteTopicsRequest>()?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
    if version >= 6 {
        request = request.with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name(name)))
        ]);
    } else {
        request = request.with_topic_names(vec![topic_name(name)]);
    }
    let response = client.any().send_version(&request, version)?;
    let Some(result) = response.responses.first() else {
        bail!("DeleteTopics answered no result");
    };
    if result.error_code != 0 {
        let hint = if result.error_code == 3 {
            " — see `gregor topic list`"
        } else {
            ""
        };
        bail!(
            "cannot delete topic '{name}': {}{hint}",
            error_text(result.error_code, result.error_message.as_ref())
        );
    }
    if json {
        print_json(&json!({ "topic": name, "deleted": true }));
    } else {
        println!("deleted topic {name}");
    }
    Ok(())
}

fn alter_config(
    client: &mut Client,
    json: bool,
    name: &str,
    set: &[String],
    delete: &[String],
) -> anyhow::Result<()> {
    if set.is_empty() && delete.is_empty() {
        bail!("nothing to change: give --set key=value and/or --delete key");
    }
    let mut changes = Vec::new();
    for s in set {
        let (k, v) = key_value(s, "--set")?;
        changes.push(ConfigChange::Set(k, v));
    }
    for d in delete {
        changes.push(ConfigChange::Delete(d.clone()));
    }
    client.alter_configs(None, RESOURCE_TOPIC, name, &changes)?;
    if json {
        print_json(&json!({
            "topic": name,
            "set": changes.iter().filter_map(|c| match c {
                ConfigChange::Set(k, v) => Some((k.clone(), json!(v))),
                _ => None,
            }).collect::<serde_json::Map<_, _>>(),
            "deleted": delete,
        }));
    } else {
        println!("altered the configs of topic {name}");
    }
    Ok(())
}

fn add_partitions(client: &mut Client, json: bool, name: &str, num: i32) -> anyhow::Result<()> {
    if num < 1 {
        bail!("-n must be at least 1 (the number of partitions to add)");
    }
    let topic = client.topic(name)?;
    let total = topic.partitions.len() as i32 + num;
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(total)
            .with_assignments(None)]);
    let response = client.send_any(&request)?;
    let Some(result) = response.results.first() else {
        bail!("CreatePartitions answered no result");
    };
    if result.error_code != 0 {
        bail!(
            "cannot add partitions to topic '{name}': {}",
            error_text(result.error_code, result.error_message.as_ref())
        );
    }
    if json {
        print_json(&json!({ "topic": name, "added": num, "partitions": total }));
    } else {
        println!("topic {name} now has {total} partitions");
    }
    Ok(())
}

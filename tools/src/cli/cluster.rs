//! `gregor cluster info` and `gregor cluster config get|set`.

use anyhow::bail;
use clap::Subcommand;
use engine::protocol::kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeQuorumRequest,
};
use serde_json::json;

use super::{key_value, print_config_table, print_json, print_table, Context};
use crate::client::configs::{ConfigChange, RESOURCE_BROKER};
use crate::client::{error_text, Client};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, cluster id, API versions and the metadata quorum.
    Info,
    /// The metadata quorum: leader, term, commit index, each voter's lag.
    Quorum,
    /// Broker configs.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Show broker configs (all, or the given keys).
    Get {
        keys: Vec<String>,
        /// Broker id (default: the controller).
        #[arg(long)]
        broker: Option<i32>,
    },
    /// Set broker configs (key=value ...).
    Set {
        #[arg(required = true)]
        pairs: Vec<String>,
        /// Broker id (default: the controller).
        #[arg(long)]
        broker: Option<i32>,
    },
}

pub fn run(ctx: &Context, command: ClusterCommand) -> anyhow::Result<()> {
    let json = ctx.json()?;
    let mut client = ctx.client()?;
    match command {
        ClusterCommand::Info => info(&mut client, json),
        ClusterCommand::Quorum => {
            let quorum = describe_quorum(&mut client)?;
            if json {
                print_json(&quorum_json(&quorum));
            } else {
                print_quorum(&quorum);
            }
            Ok(())
        }
        ClusterCommand::Config(ConfigCommand::Get { keys, broker }) => {
            let broker = pick_broker(&mut client, broker)?;
            let keys = (!keys.is_empty()).then_some(keys.as_slice());
            let entries = client.describe_configs(
                Some(broker),
                RESOURCE_BROKER,
                &broker.to_string(),
                keys,
            )?;
            if json {
                print_json(&json!({
                    "broker": broker,
                    "configs": entries.iter().map(|c| (c.name.clone(), json!({
                        "value": c.value,
                        "source": c.source,
                        "read_only": c.read_only,
                        "sensitive": c.sensitive,
                    }))).collect::<serde_json::Map<_, _>>(),
                }));
            } else {
                print_config_table(&entries);
            }
            Ok(())
        }
        ClusterCommand::Config(ConfigCommand::Set { pairs, broker }) => {
            let broker = pick_broker(&mut client, broker)?;
            let mut changes = Vec::new();
            for p in &pairs {
                let (k, v) = key_value(p, "config")?;
                changes.push(ConfigChange::Set(k, v));
            }
            client.alter_configs(Some(broker), RESOURCE_BROKER, &broker.to_string(), &changes)?;
            if json {
                print_json(&json!({ "broker": broker, "set": pairs }));
            } else {
                println!("altered the configs of broker {broker}");
            }
            Ok(())
        }
    }
}

/// The broker to ask: the given one, else the controller, else any.
fn pick_broker(client: &mut Client, broker: Option<i32>) -> anyhow::Result<i32> {
    client.metadata(Some(&[]))?;
    if let Some(b) = broker {
        if !client.brokers.contains_key(&b) {
            bail!(
                "broker {b} is not in the cluster (brokers: {:?})",
                client.brokers.keys().collect::<Vec<_>>()
            );
        }
        return Ok(b);
    }
    if client.brokers.contains_key(&client.controller_id) {
        return Ok(client.controller_id);
    }
    match client.brokers.keys().next() {
        Some(b) => Ok(*b),
        None => bail!("the cluster metadata lists no brokers"),
    }
}

fn info(client: &mut Client, json: bool) -> anyhow::Result<()> {
    let mut cluster_id = None;
    let controller;
    let mut brokers: Vec<(i32, String, Option<String>)> = Vec::new();
    if client
        .any()
        .broker_versions
        .contains_key(&(ApiKey::DescribeCluster as i16))
    {
        let response = client.send_any(&DescribeClusterRequest::default())?;
        if response.error_code != 0 {
            bail!(
                "DescribeCluster failed: {}",
                error_text(response.error_code, response.error_message.as_ref())
            );
        }
        cluster_id = Some(response.cluster_id.to_string());
        controller = response.controller_id.0;
        for b in &response.brokers {
            brokers.push((
                b.broker_id.0,
                format!("{}:{}", b.host.as_str(), b.port),
                b.rack.as_ref().map(|r| r.to_string()),
            ));
        }
    } else {
        client.metadata(Some(&[]))?;
        controller = client.controller_id;
        for (id, addr) in &client.brokers {
            brokers.push((*id, addr.clone(), None));
        }
    }
    brokers.sort();
    let mut apis: Vec<(String, i16, i16)> = client
        .any()
        .broker_versions
        .iter()
        .map(|(&key, &(min, max))| {
            let name = ApiKey::try_from(key)
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|_| format!("api{key}"));
            (name, min, max)
        })
        .collect();
    apis.sort();
    let endpoint = client.bootstrap_addr().to_string();
    let quorum = if client
        .any()
        .broker_versions
        .contains_key(&(ApiKey::DescribeQuorum as i16))
    {
        // Shown as a line of its own when it fails (no quorum leader now):
        // the rest of the answer still helps.
        Some(describe_quorum(client).map_err(|e| format!("{e:#}")))
    } else {
        None
    };
    if json {
        print_json(&json!({
            "quorum": quorum.as_ref().map(|q| match q {
                Ok(q) => quorum_json(q),
                Err(e) => json!({ "error": e }),
            }),
            "cluster_id": cluster_id,
            "controller": controller,
            "brokers": brokers.iter().map(|(id, addr, rack)| json!({
                "id": id, "address": addr, "rack": rack,
            })).collect::<Vec<_>>(),
            "endpoint": endpoint,
            "client_version": env!("CARGO_PKG_VERSION"),
            "api_versions": apis.iter().map(|(n, min, max)| (n.clone(), json!({"min": min, "max": max}))).collect::<serde_json::Map<_, _>>(),
        }));
    } else {
        println!(
            "cluster {} via {endpoint}, controller {controller}, {} API(s) (gregor CLI {})",
            cluster_id.as_deref().unwrap_or("-"),
            apis.len(),
            env!("CARGO_PKG_VERSION")
        );
        println!();
        let rows: Vec<Vec<String>> = brokers
            .iter()
            .map(|(id, addr, rack)| {
                vec![
                    id.to_string(),
                    addr.clone(),
                    rack.clone().unwrap_or_else(|| "-".into()),
                    if *id == controller { "yes" } else { "" }.to_string(),
                ]
            })
            .collect();
        print_table(&["id", "address", "rack", "controller"], &rows);
        match &quorum {
            Some(Ok(quorum)) => {
                println!();
                print_quorum(quorum);
            }
            Some(Err(e)) => println!("\nmetadata quorum: {e}"),
            None => {}
        }
    }
    Ok(())
}

/// The metadata quorum as its leader reports it.
struct Quorum {
    leader: i32,
    term: i32,
    high_watermark: i64,
    /// (node id, log end)
    voters: Vec<(i32, i64)>,
}

fn describe_quorum(client: &mut Client) -> anyhow::Result<Quorum> {
    let response = client.send_any(&DescribeQuorumRequest::default())?;
    if response.error_code != 0 {
        bail!(
            "DescribeQuorum failed: {}",
            error_text(response.error_code, response.error_message.as_ref())
        );
    }
    let Some(partition) = response.topics.first().and_then(|t| t.partitions.first()) else {
        bail!("DescribeQuorum answered no metadata partition");
    };
    if partition.error_code != 0 {
        bail!(
            "DescribeQuorum: {} (is the quorum electing a leader? try again)",
            error_text(partition.error_code, partition.error_message.as_ref())
        );
    }
    let mut voters: Vec<(i32, i64)> = partition
        .current_voters
        .iter()
        .map(|v| (v.replica_id.0, v.log_end_offset))
        .collect();
    voters.sort();
    Ok(Quorum {
        leader: partition.leader_id.0,
        term: partition.leader_epoch,
        high_watermark: partition.high_watermark,
        voters,
    })
}

fn quorum_json(quorum: &Quorum) -> serde_json::Value {
    json!({
        "leader": quorum.leader,
        "term": quorum.term,
        "high_watermark": quorum.high_watermark,
        "voters": quorum.voters.iter().map(|(id, end)| json!({
            "id": id, "log_end": end, "lag": (quorum.high_watermark - end).max(0),
        })).collect::<Vec<_>>(),
    })
}

fn print_quorum(quorum: &Quorum) {
    println!(
        "metadata quorum: leader {}, term {}, committed up to {}",
        quorum.leader, quorum.term, quorum.high_watermark
    );
    let rows: Vec<Vec<String>> = quorum
        .voters
        .iter()
        .map(|(id, end)| {
            vec![
                id.to_string(),
                end.to_string(),
                (quorum.high_watermark - end).max(0).to_string(),
                if *id == quorum.leader { "yes" } else { "" }.to_string(),
            ]
        })
        .collect();
    print_table(&["voter", "log-end", "lag", "leader"], &rows);
}

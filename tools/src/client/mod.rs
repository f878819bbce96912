//! A small blocking Kafka client for the operator CLI, built on the same
//! `kafka-protocol` codecs the broker uses. It talks to any Kafka endpoint:
//! requests about a partition go to its leader, group requests to the
//! group's coordinator, both found through Metadata / FindCoordinator.

pub mod configs;
mod connection;
pub mod group;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{bail, Context};
use engine::protocol::kafka_protocol::messages::{
    find_coordinator_request::FindCoordinatorRequest,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    BrokerId, ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName,
};
use engine::protocol::kafka_protocol::protocol::{Request, StrBytes};
use engine::protocol::kafka_protocol::ResponseError;

pub use connection::Connection;

/// ListOffsets special timestamps.
pub const OFFSET_LATEST: i64 = -1;
pub const OFFSET_EARLIEST: i64 = -2;

/// Kafka's name for an error code: 3 -> "UNKNOWN_TOPIC_OR_PARTITION".
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(code)) => format!("error code {code}"),
        Some(e) => {
            let camel = format!("{e}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// "NAME (message)" or "NAME" when the broker sent no message.
pub fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(m) => format!("{} ({m})", error_name(code)),
        None => error_name(code),
    }
}

pub fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str(s))
}

/// One partition as the metadata sees it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas that do not serve (broker down, or its files failed).
    pub offline: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionInfo>,
}

pub struct Client {
    bootstrap: Vec<String>,
    pub timeout: Duration,
    /// Connections by broker node id; the bootstrap connection under -1.
    connections: HashMap<i32, Connection>,
    /// Broker addresses by node id, from the latest Metadata.
    pub brokers: BTreeMap<i32, String>,
    /// The controller's node id, from the latest Metadata.
    pub controller_id: i32,
}

const BOOTSTRAP: i32 = -1;

impl Client {
    /// Connects to the first reachable bootstrap broker.
    pub fn connect(brokers: &str, timeout: Duration) -> anyhow::Result<Client> {
        let bootstrap: Vec<String> = brokers
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            bail!("--brokers is empty: give host:port[,host:port...]");
        }
        let mut last_error = None;
        for addr in &bootstrap {
            match Connection::connect(addr, timeout) {
                Ok(connection) => {
                    let mut connections = HashMap::new();
                    connections.insert(BOOTSTRAP, connection);
                    return Ok(Client {
                        bootstrap,
                        timeout,
                        connections,
                        brokers: BTreeMap::new(),
                        controller_id: -1,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one bootstrap address was tried"))
    }

    pub fn bootstrap_addr(&self) -> &str {
        &self.bootstrap[0]
    }

    /// The connection to any broker (the bootstrap one).
    pub fn any(&mut self) -> &mut Connection {
        self.connections
            .get_mut(&BOOTSTRAP)
            .expect("the bootstrap connection exists from connect on")
    }

    /// The connection to broker `node`, connecting on first use.
    pub fn node(&mut self, node: i32) -> anyhow::Result<&mut Connection> {
        if !self.connections.contains_key(&node) {
            if !self.brokers.contains_key(&node) {
                self.metadata(Some(&[]))?;
            }
            let Some(addr) = self.brokers.get(&node).cloned() else {
                bail!("broker {node} is not in the cluster metadata");
            };
            let connection = Connection::connect(&addr, self.timeout)?;
            self.connections.insert(node, connection);
        }
        Ok(self.connections.get_mut(&node).expect("inserted above"))
    }

    pub fn send_any<R: Request>(&mut self, request: &R) -> anyhow::Result<R::Response> {
        self.any().send(request)
    }

    pub fn send_to<R: Request>(&mut self, node: i32, request: &R) -> anyhow::Result<R::Response> {
        self.node(node)?.send(request)
    }

    /// Metadata for `topics` (None: all topics), never auto-creating one.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> anyhow::Result<Vec<TopicInfo>> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let response: MetadataResponse = self.send_any(&request)?;
        self.brokers = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        self.controller_id = response.controller_id.0;
        Ok(response
            .topics
            .iter()
            .map(|t| TopicInfo {
                name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                internal: t.is_internal,
                error_code: t.error_code,
                partitions: {
                    let mut ps: Vec<PartitionInfo> = t
                        .partitions
                        .iter()
                        .map(|p| PartitionInfo {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                            offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                        })
                        .collect();
                    ps.sort_by_key(|p| p.partition);
                    ps
                },
            })
            .collect())
    }

    /// Metadata of one existing topic; a clear error when it does not exist.
    pub fn topic(&mut self, name: &str) -> anyhow::Result<TopicInfo> {
        let topics = self.metadata(Some(&[name]))?;
        let Some(topic) = topics.into_iter().find(|t| t.name == name) else {
            bail!("topic '{name}' does not exist — see `gregor topic list`");
        };
        match topic.error_code {
            0 => Ok(topic),
            3 => bail!("topic '{name}' does not exist — see `gregor topic list`, or create it with `gregor topic create {name}`"),
            code => bail!("topic '{name}': {}", error_name(code)),
        }
    }

    /// ListOffsets for (partition, timestamp) pairs of one topic, each asked
    /// of its leader. Returns offset by partition (-1 when none matches a
    /// timestamp).
    pub fn list_offsets(
        &mut self,
        topic: &TopicInfo,
        queries: &[(i32, i64)],
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for &(partition, timestamp) in queries {
            let leader = topic
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map(|p| p.leader)
                .with_context(|| format!("topic '{}' has no partition {partition}", topic.name))?;
            if leader < 0 {
                bail!(
                    "partition {}/{partition} has no leader right now — retry in a moment",
                    topic.name
                );
            }
            by_leader
                .entry(leader)
                .or_default()
                .push((partition, timestamp));
        }
        let mut out = BTreeMap::new();
        for (leader, parts) in by_leader {
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&(p, ts)| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_current_leader_epoch(-1)
                                    .with_timestamp(ts)
                            })
                            .collect(),
                    )]);
            let response = self.send_to(leader, &request)?;
            for t in &response.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "ListOffsets {}/{}: {}",
                            topic.name,
                            p.partition_index,
                            error_name(p.error_code)
                        );
                    }
                    out.insert(p.partition_index, p.offset);
                }
            }
        }
        Ok(out)
    }

    /// (earliest, latest) offsets of every partition of `topic`.
    /// (log start, high watermark) of every partition with a leader; an
    /// offline partition (no leader) shows (-1, -1).
    pub fn watermarks(&mut self, topic: &TopicInfo) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
        let parts: Vec<i32> = topic
            .partitions
            .iter()
            .filter(|p| p.leader >= 0)
            .map(|p| p.partition)
            .collect();
        let earliest = self.list_offsets(
            topic,
            &parts
                .iter()
                .map(|&p| (p, OFFSET_EARLIEST))
                .collect::<Vec<_>>(),
        )?;
        let latest = self.list_offsets(
            topic,
            &parts
                .iter()
                .map(|&p| (p, OFFSET_LATEST))
                .collect::<Vec<_>>(),
        )?;
        Ok(parts
            .iter()
            .map(|p| {
                (
                    *p,
                    (
                        earliest.get(p).copied().unwrap_or(-1),
                        latest.get(p).copied().unwrap_or(-1),
                    ),
                )
            })
            .collect())
    }

    /// The node id of `group`'s coordinator (connecting to it).
    pub fn coordinator(&mut self, group: &str) -> anyhow::Result<i32> {
        let connection = self.any();
        let version = connection.version_for::<FindCoordinatorRequest>()?;
        let mut request = FindCoordinatorRequest::default().with_key_type(0);
        if version >= 4 {
            request = request.with_coordinator_keys(vec![str(group)]);
        } else {
            request = request.with_key(str(group));
        }
        let mut attempts = 0;
        loop {
            let response = self.any().send_version(&request, version)?;
            let (error_code, message, node, host, port) = if version >= 4 {
                let c = response
                    .coordinators
                    .first()
                    .context("FindCoordinator answered no coordinator")?;
                (
                    c.error_code,
                    c.error_message.clone(),
                    c.node_id.0,
                    c.host.to_string(),
                    c.port,
                )
            } else {
                (
                    response.error_code,
                    response.error_message.clone(),
                    response.node_id.0,
                    response.host.to_string(),
                    response.port,
                )
            };
            // Retriable while the coordinator loads (__consumer_offsets).
            if (error_code == 14 || error_code == 15) && attempts < 50 {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if error_code != 0 {
                bail!(
                    "cannot find the coordinator of group '{group}': {}",
                    error_text(error_code, message.as_ref())
                );
            }
            self.brokers.insert(node, format!("{host}:{port}"));
            self.node(node)?;
            return Ok(node);
        }
    }
}

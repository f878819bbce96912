//! L2: the metadata controller, on shard 0. Its frontend validates admin
//! requests, plans metadata records against a copy of the image, and
//! proposes them to the metadata quorum (`quorum.rs`), which commits them
//! once a majority fsynced them and then has every shard's backend
//! (`backend.rs`) apply them, in log order, to its image and files.

mod backend;
mod bootstrap;
mod brokers;
mod lifecycle;
mod quorum;

pub use backend::Backend;
pub use bootstrap::{bootstrap_metadata, MetadataStart};
pub use lifecycle::BrokerLifecycle;
pub use quorum::{node_id_of, NoPeers, QuorumDriver, QuorumParts, QuorumTransport};

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use engine::metadata::{encode_records, validate_topic_config, MetadataRecord};
use engine::protocol::{self as codes, ErrorCode};
use engine::raft::ProposeError;
use engine::txn::ProducerIdBlock;
use tracing::{error, info, warn};

use crate::cluster::listener::ControllerService;
use crate::cluster::peers::ControllerPeers;
use crate::cluster::wire::{ControllerReply, ControllerRequest};
use crate::mesh::admin::{
    AdminReply, AdminRequest, AlterPartition, ConfigChange, PartitionGrowth, QuorumStatus,
    TopicResult, TopicSpec,
};
use crate::mesh::Reply;

/// How long an admin op waits for the quorum to have a leader.
const LEADER_WAIT_MS: u64 = 5_000;
const LEADER_POLL_MS: u64 = 20;
/// How long a forwarded admin op waits for the leader's answer.
const FORWARD_TIMEOUT_MS: u64 = 30_000;

pub struct Controller {
    quorum: Rc<QuorumDriver>,
    /// The other voters' controllers (None: a lone voter).
    peers: Option<Rc<ControllerPeers>>,
    /// One controller operation at a time: each plans against the image the
    /// previous one left.
    busy: glommio::sync::Semaphore,
    backend: Rc<Backend>,
    /// Producer ids reserved in the metadata log and not yet handed out.
    producer_ids: Cell<ProducerIdBlock>,
    /// Brokers' sessions and registrations, while this node leads.
    brokers: RefCell<brokers::BrokerRegistry>,
}

/// A result for every item of a request the controller cannot serve now.
fn refused(names: impl Iterator<Item = String>, error: ErrorCode) -> Vec<TopicResult> {
    names
        .map(|name| TopicResult::refused(&name, error))
        .collect()
}

impl ControllerService for Controller {
    fn serve_forwarded(
        &self,
        request: ControllerRequest,
    ) -> futures::future::LocalBoxFuture<'_, ControllerReply> {
        Box::pin(self.serve_here(request))
    }
}

impl Controller {
    pub fn new(
        quorum: Rc<QuorumDriver>,
        peers: Option<Rc<ControllerPeers>>,
        backend: Rc<Backend>,
    ) -> Controller {
        Controller {
            quorum,
            peers,
            busy: glommio::sync::Semaphore::new(1),
            backend,
            // Empty: the first InitProducerId reserves a block past every
            // block reserved before (the image knows the last one).
            producer_ids: Cell::new(ProducerIdBlock::default()),
            brokers: RefCell::new(brokers::BrokerRegistry::default()),
        }
    }

    /// Serves one admin op sent to this broker's controller: here if this
    /// node leads the quorum, else at the leader's controller, forwarded.
    pub async fn serve(&self, request: AdminRequest) -> Reply {
        let refusal = request.refusal(codes::UNKNOWN_SERVER_ERROR);
        let forwarded = ControllerRequest::Admin(request);
        match self.ask_leader(forwarded, FORWARD_TIMEOUT_MS).await {
            ControllerReply::Admin(reply) => Reply::Admin(reply),
            other => {
                error!(reply = ?other, "the controller answered an admin op with another reply");
                Reply::Admin(refusal)
            }
        }
    }

    /// Has the quorum leader's controller serve `request`: this one if this
    /// node leads, else forwarded to the leader's, waiting up to
    /// `timeout_ms` for its answer. NOT_CONTROLLER when there is no leader
    /// or it cannot be reached.
    pub async fn ask_leader(&self, request: ControllerRequest, timeout_ms: u64) -> ControllerReply {
        let leader = self.wait_for_leader().await;
        match (leader, &self.peers) {
            (Some(leader), Some(peers)) if leader != self.quorum.node_id() => {
                match peers.call(leader, &request, timeout_ms).await {
                    Ok(reply) => reply,
                    Err(e) => {
                        warn!(leader, error = %e, "a request to the quorum leader's controller failed");
                        request.refusal(codes::NOT_CONTROLLER)
                    }
                }
            }
            (Some(_), _) => self.serve_here(request).await,
            (None, _) => request.refusal(codes::NOT_CONTROLLER),
        }
    }

    /// The quorum leader, waiting a while for an election to end.
    async fn wait_for_leader(&self) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_millis(LEADER_WAIT_MS);
        loop {
            if let Some(leader) = self.quorum.view().leader {
                return Some(leader);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            glommio::timer::sleep(Duration::from_millis(LEADER_POLL_MS)).await;
        }
    }

    /// Serves a request at this controller (it refuses with NOT_CONTROLLER
    /// if this node does not lead when the request's turn comes).
    async fn serve_here(&self, request: ControllerRequest) -> ControllerReply {
        match request {
            ControllerRequest::Admin(op) => ControllerReply::Admin(self.serve_admin(op).await),
            ControllerRequest::RegisterBroker(registration) => {
                ControllerReply::Registered(self.register_broker(registration).await)
            }
            ControllerRequest::BrokerHeartbeat {
                node_id,
                broker_epoch,
                applied_index,
            } => ControllerReply::Heartbeat(
                self.broker_heartbeat(node_id, broker_epoch, applied_index)
                    .await,
            ),
        }
    }

    async fn serve_admin(&self, request: AdminRequest) -> AdminReply {
        match request {
            AdminRequest::CreateTopics(op) => {
                AdminReply::CreateTopics(self.create_topics(op.topics).await)
            }
            AdminRequest::DeleteTopics(op) => {
                AdminReply::DeleteTopics(self.delete_topics(op.names).await)
            }
            AdminRequest::AlterTopicConfigs(op) => {
                AdminReply::AlterTopicConfigs(self.alter_topic_configs(op.changes).await)
            }
            AdminRequest::AddPartitions(op) => {
                AdminReply::AddPartitions(self.add_partitions(op.topics).await)
            }
            AdminRequest::AllocateProducerId(_) => {
                AdminReply::AllocateProducerId(self.allocate_producer_id().await)
            }
            AdminRequest::DescribeQuorum(_) => AdminReply::DescribeQuorum(self.describe_quorum()),
            AdminRequest::AlterPartition(op) => {
                AdminReply::AlterPartition(self.alter_partition(op).await)
            }
        }
    }

    /// A partition leader's new ISR, checked by Kafka's rules
    /// (`engine::metadata::alter_partition`) and committed as a
    /// `PartitionChange`.
    async fn alter_partition(&self, op: AlterPartition) -> Result<(), ErrorCode> {
        let _permit = self.busy.acquire_permit(1).await;
        self.current().await?;
        let record = engine::metadata::alter_partition(
            &self.backend.image(),
            &op.topic,
            op.partition,
            op.leader,
            op.leader_epoch,
            op.partition_epoch,
            op.isr.clone(),
        )
        .map_err(|refusal| {
            info!(topic = %op.topic, partition = op.partition, leader = op.leader, isr = ?op.isr, %refusal, "AlterPartition refused");
            refusal.error_code()
        })?;
        self.commit_metadata(std::slice::from_ref(&record)).await?;
        info!(topic = %op.topic, partition = op.partition, isr = ?op.isr, "ISR changed");
        Ok(())
    }

    /// A producer id never handed out before: from the reserved block, or
    /// from a new block once its reservation is durable in the metadata log.
    async fn allocate_producer_id(&self) -> Result<i64, ErrorCode> {
        let _permit = self.busy.acquire_permit(1).await;
        self.current().await?;
        let mut block = self.producer_ids.get();
        if let Some(id) = block.take() {
            self.producer_ids.set(block);
            return Ok(id);
        }
        let mut fresh = ProducerIdBlock::after(self.backend.image().producer_ids_reserved_end());
        let record = MetadataRecord::ReserveProducerIds { end: fresh.end };
        self.commit_metadata(std::slice::from_ref(&record)).await?;
        let id = fresh.take().expect("a fresh block has ids");
        self.producer_ids.set(fresh);
        Ok(id)
    }

    /// The quorum as this node sees it; only its leader knows the voters'
    /// progress (the op was routed to it).
    fn describe_quorum(&self) -> Result<QuorumStatus, ErrorCode> {
        let view = self.quorum.view();
        if !view.is_leader {
            return Err(codes::NOT_LEADER_OR_FOLLOWER);
        }
        Ok(QuorumStatus {
            leader_id: self.quorum.node_id(),
            term: view.term,
            high_watermark: view.commit_index,
            voters: view.voters,
        })
    }

    /// Waits until this controller leads the quorum and its image holds
    /// every committed change, so what it plans builds on all of them.
    async fn current(&self) -> Result<(), ErrorCode> {
        self.quorum.barrier().await.map_err(|e| {
            warn!(error = %e, "controller op refused");
            codes::NOT_CONTROLLER
        })
    }

    pub async fn create_topics(&self, specs: Vec<TopicSpec>) -> Vec<TopicResult> {
        let _permit = self.busy.acquire_permit(1).await;
        if let Err(error) = self.current().await {
            return refused(specs.into_iter().map(|s| s.name), error);
        }
        let mut results = Vec::with_capacity(specs.len());
        let mut planned = self.backend.image().clone();
        let mut records = Vec::new();
        for spec in specs {
            let partitions = if spec.partitions == -1 {
                self.backend.config.default_partitions as i32
            } else {
                spec.partitions
            };
            let mut result = TopicResult {
                name: spec.name.clone(),
                error: codes::NONE,
                message: None,
                partitions,
            };
            let replication_factor = match spec.replication_factor {
                -1 => self.backend.config.default_replication_factor as usize,
                factor if factor >= 1 => factor as usize,
                factor => {
                    result.error = codes::INVALID_REPLICATION_FACTOR;
                    result.message =
                        Some(format!("replication factor {factor} must be at least 1"));
                    results.push(result);
                    continue;
                }
            };
            if let Some(e) = spec
                .configs
                .iter()
                .find_map(|(k, v)| validate_topic_config(k, v).err())
            {
                result.error = codes::INVALID_CONFIG;
                result.message = Some(e);
                results.push(result);
                continue;
            }
            if partitions < 1 {
                result.error = codes::INVALID_PARTITIONS;
                result.message = Some(format!("partition count {partitions} must be at least 1"));
                results.push(result);
                continue;
            }
            // Replicas go round-robin over the brokers the quorum counts
            // live.
            let placements =
                match planned.place_replicas(partitions as usize, replication_factor, 0) {
                    Ok(placements) => placements,
                    Err(e) => {
                        result.error = codes::INVALID_REPLICATION_FACTOR;
                        result.message = Some(e.to_string());
                        results.push(result);
                        continue;
                    }
                };
            let record = MetadataRecord::CreateReplicatedTopic {
                name: spec.name.clone(),
                topic_id: *uuid::Uuid::new_v4().as_bytes(),
                partitions: placements,
                configs: spec.configs.clone(),
            };
            if let Err(e) = planned.apply(&record) {
                result.error = match e {
                    engine::metadata::MetadataError::TopicExists(_) => codes::TOPIC_ALREADY_EXISTS,
                    engine::metadata::MetadataError::InvalidTopicName(..) => {
                        codes::INVALID_TOPIC_EXCEPTION
                    }
                    engine::metadata::MetadataError::InvalidPartitions(_) => {
                        codes::INVALID_PARTITIONS
                    }
                    engine::metadata::MetadataError::UnknownTopic(_) => {
                        codes::UNKNOWN_TOPIC_OR_PARTITION
                    }
                    engine::metadata::MetadataError::InvalidReplicationFactor { .. } => {
                        codes::INVALID_REPLICATION_FACTOR
                    }
                    engine::metadata::MetadataError::InvalidPartitionState { .. } => {
                        codes::INVALID_REPLICA_ASSIGNMENT
                    }
                    engine::metadata::MetadataError::ProducerIdsBehind { .. }
                    | engine::metadata::MetadataError::InvalidBroker { .. }
                    | engine::metadata::MetadataError::BrokerEpochBehind { .. }
                    | engine::metadata::MetadataError::UnknownBroker(_)
                    | engine::metadata::MetadataError::StaleBrokerEpoch { .. }
                    | engine::metadata::MetadataError::UnknownPartition { .. }
                    | engine::metadata::MetadataError::StalePartitionEpoch { .. }
                    | engine::metadata::MetadataError::StaleLeaderEpoch { .. } => {
                        codes::UNKNOWN_SERVER_ERROR
                    }
                };
                result.message = Some(e.to_string());
            } else if !spec.validate_only {
                records.push(record);
            }
            results.push(result);
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    pub async fn alter_topic_configs(&self, changes: Vec<ConfigChange>) -> Vec<TopicResult> {
        let _permit = self.busy.acquire_permit(1).await;
        if let Err(error) = self.current().await {
            return refused(changes.into_iter().map(|c| c.topic), error);
        }
        let mut planned = self.backend.image().clone();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for change in changes {
            let mut result = TopicResult {
                name: change.topic.clone(),
                error: codes::NONE,
                message: None,
                partitions: -1,
            };
            let Some(current) = planned.topic(&change.topic) else {
                result.error = codes::UNKNOWN_TOPIC_OR_PARTITION;
                results.push(result);
                continue;
            };
            let mut configs = if change.incremental {
                current.configs.clone()
            } else {
                Default::default()
            };
            for (key, value) in &change.set {
                configs.insert(key.clone(), value.clone());
            }
            for key in &change.delete {
                configs.remove(key);
            }
            if let Some(e) = configs
                .iter()
                .find_map(|(k, v)| validate_topic_config(k, v).err())
            {
                result.error = codes::INVALID_CONFIG;
                result.message = Some(e);
                results.push(result);
                continue;
            }
            let record = MetadataRecord::SetTopicConfigs {
                name: change.topic.clone(),
                configs: configs.into_iter().collect(),
            };
            if !change.validate_only {
                planned.apply(&record).expect("checked: topic exists");
                records.push(record);
            }
            results.push(result);
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    pub async fn add_partitions(&self, topics: Vec<PartitionGrowth>) -> Vec<TopicResult> {
        let _permit = self.busy.acquire_permit(1).await;
        if let Err(error) = self.current().await {
            return refused(topics.into_iter().map(|t| t.topic), error);
        }
        let mut planned = self.backend.image().clone();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for PartitionGrowth {
            topic: name,
            partition_count: count,
            validate_only,
        } in topics
        {
            let mut result = TopicResult {
                name: name.clone(),
                error: codes::NONE,
                message: None,
                partitions: count,
            };
            let Some(current) = planned.topic(&name).map(|t| t.partition_count() as i32) else {
                result.error = codes::UNKNOWN_TOPIC_OR_PARTITION;
                results.push(result);
                continue;
            };
            if count <= current {
                result.error = codes::INVALID_PARTITIONS;
                result.message = Some(format!(
                    "topic has {current} partitions; the new count {count} must be larger"
                ));
                results.push(result);
                continue;
            }
            let added = (count - current) as usize;
            let replicated = planned
                .topic(&name)
                .and_then(|t| t.partition(0))
                .map(|p| p.replicas.len())
                .filter(|&replicas| replicas > 0);
            let record = match replicated {
                // A single node's topic from before the quorum stays on it.
                None => MetadataRecord::AddPartitions {
                    name: name.clone(),
                    partition_shards: planned.place_partitions(added, self.backend.shard_count),
                },
                Some(replication_factor) => {
                    match planned.place_replicas(added, replication_factor, current as usize) {
                        Ok(partitions) => MetadataRecord::AddReplicatedPartitions {
                            name: name.clone(),
                            partitions,
                        },
                        Err(e) => {
                            result.error = codes::INVALID_REPLICATION_FACTOR;
                            result.message = Some(e.to_string());
                            results.push(result);
                            continue;
                        }
                    }
                }
            };
            match planned.apply(&record) {
                Ok(()) if !validate_only => records.push(record),
                Ok(()) => {}
                Err(e) => {
                    result.error = codes::INVALID_PARTITIONS;
                    result.message = Some(e.to_string());
                }
            }
            results.push(result);
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicResult> {
        let _permit = self.busy.acquire_permit(1).await;
        if let Err(error) = self.current().await {
            return refused(names.into_iter(), error);
        }
        let mut planned = self.backend.image().clone();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for name in names {
            let record = MetadataRecord::DeleteTopic { name: name.clone() };
            let error = match planned.apply(&record) {
                Ok(()) => {
                    records.push(record);
                    codes::NONE
                }
                Err(_) => codes::UNKNOWN_TOPIC_OR_PARTITION,
            };
            results.push(TopicResult {
                name,
                error,
                message: None,
                partitions: -1,
            });
        }
        self.commit_and_report(&records, &mut results).await;
        results
    }

    /// Commits the planned records; if that fails, every result that had
    /// succeeded gets the reason.
    async fn commit_and_report(&self, records: &[MetadataRecord], results: &mut [TopicResult]) {
        if let Err(error) = self.commit_metadata(records).await {
            for result in results.iter_mut().filter(|r| r.error == codes::NONE) {
                result.error = error;
            }
        }
    }

    /// Proposes records as one quorum entry and waits until every shard
    /// applied them. NOT_CONTROLLER if leadership moved before they
    /// committed (a retry plans again against the new leader's image).
    async fn commit_metadata(&self, records: &[MetadataRecord]) -> Result<(), ErrorCode> {
        if records.is_empty() {
            return Ok(());
        }
        match self.quorum.propose(encode_records(records)).await {
            Ok(true) => Ok(()),
            Ok(false) | Err(ProposeError::NotLeader { .. }) => Err(codes::NOT_CONTROLLER),
            Err(ProposeError::Dropped) => Err(codes::NOT_CONTROLLER),
        }
    }
}

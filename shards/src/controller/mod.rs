//! L2: the metadata controller, on shard 0: a one-voter quorum today. Its
//! frontend validates admin requests, plans metadata records against a copy
//! of the image, makes them durable in the metadata log and then publishes
//! them, in log order, to every shard's backend (`backend.rs`), which
//! applies them to its image and files.

mod backend;
mod bootstrap;

pub use backend::Backend;
pub use bootstrap::bootstrap_metadata;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use engine::metadata::{validate_topic_config, MetadataRecord};
use engine::protocol::{self as codes, ErrorCode};
use engine::txn::ProducerIdBlock;
use tracing::error;

use crate::disk::metadata_log::MetadataLog;
use crate::mesh::admin::{
    AddPartitions, AdminRequest, AllocateProducerId, AlterTopicConfigs, ConfigChange, CreateTopics,
    DeleteTopics, PartitionGrowth, TopicResult, TopicSpec,
};
use crate::mesh::metadata::ApplyMetadata;
use crate::mesh::{Call, Mesh, Reply};

pub struct Controller {
    /// Taken for the length of one append (see `commit_metadata`).
    log: RefCell<Option<MetadataLog>>,
    /// One controller operation at a time: each plans against the image the
    /// previous one left.
    busy: glommio::sync::Semaphore,
    backend: Rc<Backend>,
    mesh: Rc<Mesh>,
    /// Producer ids reserved in the metadata log and not yet handed out.
    producer_ids: Cell<ProducerIdBlock>,
}

impl Controller {
    pub fn new(log: MetadataLog, backend: Rc<Backend>, mesh: Rc<Mesh>) -> Controller {
        Controller {
            log: RefCell::new(Some(log)),
            busy: glommio::sync::Semaphore::new(1),
            backend,
            mesh,
            // Empty: the first InitProducerId reserves a block past every
            // block reserved before (the image knows the last one).
            producer_ids: Cell::new(ProducerIdBlock::default()),
        }
    }

    /// Serves one admin op sent to the controller.
    pub async fn serve(&self, request: AdminRequest) -> Reply {
        match request {
            AdminRequest::CreateTopics(op) => {
                CreateTopics::wrap_reply(self.create_topics(op.topics).await)
            }
            AdminRequest::DeleteTopics(op) => {
                DeleteTopics::wrap_reply(self.delete_topics(op.names).await)
            }
            AdminRequest::AlterTopicConfigs(op) => {
                AlterTopicConfigs::wrap_reply(self.alter_topic_configs(op.changes).await)
            }
            AdminRequest::AddPartitions(op) => {
                AddPartitions::wrap_reply(self.add_partitions(op.topics).await)
            }
            AdminRequest::AllocateProducerId(_) => {
                AllocateProducerId::wrap_reply(self.allocate_producer_id().await)
            }
        }
    }

    /// A producer id never handed out before: from the reserved block, or
    /// from a new block once its reservation is durable in the metadata log.
    async fn allocate_producer_id(&self) -> Result<i64, ErrorCode> {
        let _permit = self.busy.acquire_permit(1).await;
        let mut block = self.producer_ids.get();
        if let Some(id) = block.take() {
            self.producer_ids.set(block);
            return Ok(id);
        }
        let mut fresh = ProducerIdBlock::after(self.backend.image().producer_ids_reserved_end());
        let record = MetadataRecord::ReserveProducerIds { end: fresh.end };
        if !self.commit_metadata(std::slice::from_ref(&record)).await {
            return Err(codes::KAFKA_STORAGE_ERROR);
        }
        let id = fresh.take().expect("a fresh block has ids");
        self.producer_ids.set(fresh);
        Ok(id)
    }

    /// Has every shard apply a committed record, this one included, and
    /// waits until all have.
    async fn publish(&self, record: &MetadataRecord) {
        let mut remote = Vec::with_capacity(self.mesh.shard_count);
        for target in 0..self.mesh.shard_count {
            if target != self.mesh.shard_id {
                let op = ApplyMetadata {
                    record: record.clone(),
                };
                remote.push(self.mesh.send(target, op).await);
            }
        }
        self.backend.apply(record).await;
        futures::future::join_all(remote).await;
    }

    pub async fn create_topics(&self, specs: Vec<TopicSpec>) -> Vec<TopicResult> {
        let _permit = self.busy.acquire_permit(1).await;
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
            if spec.replication_factor != -1 && spec.replication_factor != 1 {
                result.error = codes::INVALID_REPLICATION_FACTOR;
                result.message = Some("a single-node cluster has replication factor 1".into());
                results.push(result);
                continue;
            }
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
            let record = MetadataRecord::CreateTopic {
                name: spec.name.clone(),
                topic_id: *uuid::Uuid::new_v4().as_bytes(),
                partition_shards: planned
                    .place_partitions(partitions as usize, self.backend.shard_count),
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
            let record = MetadataRecord::AddPartitions {
                name: name.clone(),
                partition_shards: planned
                    .place_partitions((count - current) as usize, self.backend.shard_count),
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

    /// Commits the planned records; if the metadata log write fails, every
    /// result that had succeeded becomes KAFKA_STORAGE_ERROR.
    async fn commit_and_report(&self, records: &[MetadataRecord], results: &mut [TopicResult]) {
        if !self.commit_metadata(records).await {
            for result in results.iter_mut().filter(|r| r.error == codes::NONE) {
                result.error = codes::KAFKA_STORAGE_ERROR;
            }
        }
    }

    /// Makes records durable in the metadata log, then has every shard apply
    /// them. Returns false if the log write failed (nothing was applied).
    async fn commit_metadata(&self, records: &[MetadataRecord]) -> bool {
        if records.is_empty() {
            return true;
        }
        // One operation at a time holds `busy`, so the log is never taken twice.
        let mut log = self
            .log
            .borrow_mut()
            .take()
            .expect("controller holds the log");
        let appended = log.append(records).await;
        *self.log.borrow_mut() = Some(log);
        if let Err(e) = appended {
            error!(error = %e, "metadata log append failed");
            return false;
        }
        for record in records {
            self.publish(record).await;
        }
        true
    }
}

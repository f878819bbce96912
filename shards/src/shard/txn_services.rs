//! What the transaction coordinator's host asks of the broker, served by
//! the shard: producer ids (shard 0 hands them out) and markers, written
//! over the mesh to partitions this broker leads and with WriteTxnMarkers
//! to the owning shard of every other broker that leads some (one request
//! per broker shard).

use std::collections::BTreeMap;
use std::rc::Rc;

use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::kafka_protocol::protocol::StrBytes;
use engine::protocol::{self as codes, ErrorCode};
use engine::record::TxnMarker;
use engine::txn::TxnPartition;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tracing::debug;

use super::Shard;
use crate::mesh::admin::AllocateProducerId;
use crate::mesh::data::WriteMarker;
use crate::txns::TxnServices;

/// WriteTxnMarkers' version (v0 was removed in Kafka 4.0).
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// How long a remote marker write may take beyond its own ISR wait.
const REMOTE_MARKER_SLACK_MS: u64 = 5_000;

impl TxnServices for Shard {
    fn allocate_producer_id(self: Rc<Self>) -> LocalBoxFuture<'static, Result<i64, ErrorCode>> {
        async move { self.call(0, AllocateProducerId).await }.boxed_local()
    }

    fn write_markers(
        self: Rc<Self>,
        partitions: Vec<TxnPartition>,
        marker: TxnMarker,
        timeout_ms: u64,
    ) -> LocalBoxFuture<'static, Vec<Result<(), ErrorCode>>> {
        async move {
            let mut results: Vec<Result<(), ErrorCode>> = vec![Ok(()); partitions.len()];
            let mut local = Vec::new();
            // Partitions other brokers lead, by the address of their
            // owning shard.
            let mut remote: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, (topic, partition)) in partitions.iter().enumerate() {
                match self.route(topic, *partition) {
                    Ok(_) => local.push(i),
                    Err(codes::NOT_LEADER_OR_FOLLOWER) => {
                        match self.backend.leader_address(topic, *partition) {
                            Ok((_, address)) => remote.entry(address).or_default().push(i),
                            Err(code) => results[i] = Err(code),
                        }
                    }
                    Err(code) => results[i] = Err(code),
                }
            }
            let local_writes = local.iter().map(|i| {
                let (topic, partition) = partitions[*i].clone();
                self.clone()
                    .write_marker_here(topic, partition, marker, timeout_ms)
            });
            let remote_writes = remote.iter().map(|(address, indexes)| {
                let asked: Vec<&TxnPartition> = indexes.iter().map(|i| &partitions[*i]).collect();
                self.write_markers_at(address, asked, marker, timeout_ms)
            });
            let (local_results, remote_results) = futures::future::join(
                futures::future::join_all(local_writes),
                futures::future::join_all(remote_writes),
            )
            .await;
            for (i, result) in local.iter().zip(local_results) {
                results[*i] = result;
            }
            for (indexes, answers) in remote.values().zip(remote_results) {
                for (i, result) in indexes.iter().zip(answers) {
                    results[*i] = result;
                }
            }
            results
        }
        .boxed_local()
    }
}

impl Shard {
    /// Writes `marker` to a partition this broker leads (at its owning
    /// shard); Ok once it is in the ISR.
    pub fn write_marker_here(
        self: Rc<Self>,
        topic: String,
        partition: i32,
        marker: TxnMarker,
        timeout_ms: u64,
    ) -> LocalBoxFuture<'static, Result<(), ErrorCode>> {
        async move {
            let owner = self.route(&topic, partition)?;
            let op = WriteMarker {
                topic,
                partition,
                marker,
                timeout_ms,
            };
            self.call(owner, op).await.map(|_| ())
        }
        .boxed_local()
    }

    /// Writes `marker` to partitions another broker's shard leads, with
    /// one WriteTxnMarkers request to that shard's replication listener;
    /// one result per partition, in order. NETWORK_EXCEPTION for all when
    /// the broker does not answer (the coordinator retries).
    async fn write_markers_at(
        &self,
        address: &str,
        partitions: Vec<&TxnPartition>,
        marker: TxnMarker,
        timeout_ms: u64,
    ) -> Vec<Result<(), ErrorCode>> {
        let mut topics: Vec<km::write_txn_markers_request::WritableTxnMarkerTopic> = Vec::new();
        for (topic, partition) in &partitions {
            match topics
                .iter_mut()
                .find(|t| t.name.as_str() == topic.as_str())
            {
                Some(t) => t.partition_indexes.push(*partition),
                None => topics.push(
                    km::write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(km::TopicName(StrBytes::from_string(topic.clone())))
                        .with_partition_indexes(vec![*partition]),
                ),
            }
        }
        let request = km::WriteTxnMarkersRequest::default().with_markers(vec![
            km::write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(km::ProducerId(marker.producer_id))
                .with_producer_epoch(marker.producer_epoch)
                .with_transaction_result(marker.commit)
                .with_coordinator_epoch(marker.coordinator_epoch)
                .with_topics(topics),
        ]);
        let answered = self
            .broker_links
            .call(
                address,
                WRITE_TXN_MARKERS_VERSION,
                &request,
                timeout_ms + REMOTE_MARKER_SLACK_MS,
            )
            .await;
        let response = match answered {
            Ok(response) => response,
            Err(e) => {
                debug!(%address, error = %e, "transaction markers not answered");
                return vec![Err(codes::NETWORK_EXCEPTION); partitions.len()];
            }
        };
        let mut by_partition: BTreeMap<(&str, i32), ErrorCode> = BTreeMap::new();
        for result in &response.markers {
            for topic in &result.topics {
                for p in &topic.partitions {
                    by_partition.insert((topic.name.as_str(), p.partition_index), p.error_code);
                }
            }
        }
        partitions
            .iter()
            .map(
                |(topic, partition)| match by_partition.get(&(topic.as_str(), *partition)) {
                    Some(&codes::NONE) => Ok(()),
                    Some(&code) => Err(code),
                    None => Err(codes::UNKNOWN_SERVER_ERROR),
                },
            )
            .collect()
    }
}

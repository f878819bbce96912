//! Kafka APIs of transactions: InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn and EndTxn go to the shard that
//! leads the transactional id's `__transaction_state` partition
//! (`txns::TxnHost`); TxnOffsetCommit to the group's coordinator.
//! WriteTxnMarkers and AddPartitionsToTxn v4 are the inter-broker side: a
//! coordinator's markers for partitions this broker leads, and a partition
//! leader's verification against the coordinator here.

use std::rc::Rc;

use engine::group::{offsets_partition_for, OFFSETS_TOPIC};
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::kafka_protocol::protocol::StrBytes;
use engine::protocol::{self as codes, ErrorCode};
use engine::record::TxnMarker;
use engine::txn::{ProducerIdEpoch, TxnPartition, TxnState, TxnVersion};
use tracing::debug;

use super::dispatch::RequestContext;
use super::groups::committed_offset;
use crate::clock::steady_ms;
use crate::groups::coordinator_route as group_coordinator_route;
use crate::mesh::groups::CommitTxnOffsets;
use crate::mesh::txns::{AddTxnPartitions, DescribeTxn, EndTxn, InitTxnProducer, ListTxns};
use crate::mesh::Call;
use crate::shard::Shard;
use crate::txns::{coordinator_address, coordinator_route, MARKER_WRITE_TIMEOUT_MS};

/// AddPartitionsToTxn's version for a broker's verification (KIP-890).
const VERIFY_VERSION: i16 = 4;
/// How long a partition leader waits for a remote coordinator's check.
const VERIFY_TIMEOUT_MS: u64 = 5_000;

/// Runs a transaction op on the transactional id's coordinator shard.
async fn call_coordinator<C: Call<Reply = Result<T, ErrorCode>> + 'static, T>(
    shard: &Rc<Shard>,
    transactional_id: &str,
    op: C,
) -> Result<T, ErrorCode> {
    let (_, owner) = coordinator_route(&shard.backend, transactional_id)?;
    shard.call(owner, op).await
}

/// InitProducerId for a transactional producer.
pub async fn init_transactional_producer(
    shard: &Rc<Shard>,
    transactional_id: String,
    request: &km::InitProducerIdRequest,
) -> Result<ProducerIdEpoch, ErrorCode> {
    // KIP-360: a producer that names its id and epoch asks for a bump of
    // exactly those.
    let expected = (request.producer_id.0 >= 0).then_some(ProducerIdEpoch {
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
    });
    let op = InitTxnProducer {
        transactional_id: transactional_id.clone(),
        timeout_ms: request.transaction_timeout_ms,
        expected,
    };
    call_coordinator(shard, &transactional_id, op).await
}

/// The partitions of a request that exist; the others answer
/// UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED, as
/// Kafka answers.
fn unknown_partitions(shard: &Shard, partitions: &[TxnPartition]) -> Vec<TxnPartition> {
    let image = shard.image();
    partitions
        .iter()
        .filter(|(topic, index)| {
            image
                .topic(topic)
                .is_none_or(|t| *index < 0 || *index as usize >= t.partition_count())
        })
        .cloned()
        .collect()
}

/// AddPartitionsToTxn: v0–3 from a producer (one transaction), v4 from a
/// partition leader verifying transactional batches (KIP-890 part 1),
/// several transactions at once.
pub async fn add_partitions_to_txn(
    ctx: RequestContext,
    request: km::AddPartitionsToTxnRequest,
) -> km::AddPartitionsToTxnResponse {
    let mut response = km::AddPartitionsToTxnResponse::default();
    if ctx.version >= 4 {
        let added = request.transactions.iter().map(|t| {
            let producer = ProducerIdEpoch {
                producer_id: t.producer_id.0,
                producer_epoch: t.producer_epoch,
            };
            add_to_transaction(
                &ctx,
                t.transactional_id.to_string(),
                producer,
                &t.topics,
                t.verify_only,
            )
        });
        let results = futures::future::join_all(added).await;
        response.results_by_transaction = request
            .transactions
            .iter()
            .zip(results)
            .map(|(t, topic_results)| {
                km::add_partitions_to_txn_response::AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topic_results)
            })
            .collect();
    } else {
        let producer = ProducerIdEpoch {
            producer_id: request.v3_and_below_producer_id.0,
            producer_epoch: request.v3_and_below_producer_epoch,
        };
        response.results_by_topic_v3_and_below = add_to_transaction(
            &ctx,
            request.v3_and_below_transactional_id.to_string(),
            producer,
            &request.v3_and_below_topics,
            false,
        )
        .await;
    }
    response
}

/// Adds (or, `verify_only`, checks) one transaction's partitions at its
/// coordinator; one result per partition asked for.
async fn add_to_transaction(
    ctx: &RequestContext,
    transactional_id: String,
    producer: ProducerIdEpoch,
    topics: &[km::add_partitions_to_txn_request::AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<km::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult> {
    let shard = &ctx.shard;
    let partitions: Vec<TxnPartition> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    let unknown = unknown_partitions(shard, &partitions);
    let code_of: Box<dyn Fn(&TxnPartition) -> ErrorCode> = if !unknown.is_empty() {
        Box::new(move |p| {
            if unknown.contains(p) {
                codes::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                codes::OPERATION_NOT_ATTEMPTED
            }
        })
    } else {
        let op = AddTxnPartitions {
            transactional_id: transactional_id.clone(),
            producer,
            partitions,
            verify_only,
        };
        let result = call_coordinator(shard, &transactional_id, op).await;
        let code = result.err().unwrap_or(codes::NONE);
        // PRODUCER_FENCED is new in v2 (KIP-588); older clients know it
        // as INVALID_PRODUCER_EPOCH.
        let code = if code == codes::PRODUCER_FENCED && ctx.version < 2 {
            codes::INVALID_PRODUCER_EPOCH
        } else {
            code
        };
        Box::new(move |_| code)
    };
    topics
        .iter()
        .map(|topic| {
            let name = topic.name.to_string();
            let results = topic
                .partitions
                .iter()
                .map(|index| {
                    km::add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*index)
                        .with_partition_error_code(code_of(&(name.clone(), *index)))
                })
                .collect();
            km::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}

/// KIP-890 part 1 at a partition leader: is `op`'s partition in its
/// producer's open transaction? Asked of the coordinator's shard here, or
/// of the broker that coordinates the id (AddPartitionsToTxn v4,
/// verify-only).
pub async fn verify_at_coordinator(
    shard: &Rc<Shard>,
    op: AddTxnPartitions,
) -> Result<(), ErrorCode> {
    debug_assert!(op.verify_only);
    match coordinator_route(&shard.backend, &op.transactional_id) {
        Ok((_, owner)) => shard.call(owner, op).await,
        Err(codes::NOT_COORDINATOR) => {
            let address = coordinator_address(&shard.backend, &op.transactional_id)?;
            let mut topics: Vec<km::add_partitions_to_txn_request::AddPartitionsToTxnTopic> =
                Vec::new();
            for (topic, partition) in &op.partitions {
                topics.push(
                    km::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(km::TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![*partition]),
                );
            }
            let transaction =
                km::add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(km::TransactionalId(StrBytes::from_string(
                        op.transactional_id.clone(),
                    )))
                    .with_producer_id(km::ProducerId(op.producer.producer_id))
                    .with_producer_epoch(op.producer.producer_epoch)
                    .with_verify_only(true)
                    .with_topics(topics);
            let request =
                km::AddPartitionsToTxnRequest::default().with_transactions(vec![transaction]);
            let response = shard
                .broker_links
                .call(&address, VERIFY_VERSION, &request, VERIFY_TIMEOUT_MS)
                .await
                .map_err(|e| {
                    debug!(%address, error = %e, "transaction verification not answered");
                    codes::COORDINATOR_NOT_AVAILABLE
                })?;
            if response.error_code != codes::NONE {
                return Err(response.error_code);
            }
            let codes_found = response
                .results_by_transaction
                .iter()
                .flat_map(|t| &t.topic_results)
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code);
            match codes_found.into_iter().find(|c| *c != codes::NONE) {
                Some(code) => Err(code),
                None if response.results_by_transaction.is_empty() => {
                    Err(codes::COORDINATOR_NOT_AVAILABLE)
                }
                None => Ok(()),
            }
        }
        Err(code) => Err(code),
    }
}

/// WriteTxnMarkers from another broker's transaction coordinator: each
/// marker is written to each partition this broker leads, after every
/// append queued there before it, and answered once it is in the ISR.
pub async fn write_txn_markers(
    ctx: RequestContext,
    request: km::WriteTxnMarkersRequest,
) -> km::WriteTxnMarkersResponse {
    let shard = &ctx.shard;
    let mut writes = Vec::new();
    for m in &request.markers {
        let marker = TxnMarker {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        for topic in &m.topics {
            for partition in &topic.partition_indexes {
                writes.push(shard.clone().write_marker_here(
                    topic.name.to_string(),
                    *partition,
                    marker,
                    MARKER_WRITE_TIMEOUT_MS,
                ));
            }
        }
    }
    let mut results = futures::future::join_all(writes).await.into_iter();
    let mut response = km::WriteTxnMarkersResponse::default();
    for m in &request.markers {
        let topics = m
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|index| {
                        let code = results.next().map_or(codes::UNKNOWN_SERVER_ERROR, |r| {
                            r.err().unwrap_or(codes::NONE)
                        });
                        km::write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                            .with_partition_index(*index)
                            .with_error_code(code)
                    })
                    .collect();
                km::write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        response.markers.push(
            km::write_txn_markers_response::WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    response
}

pub async fn add_offsets_to_txn(
    ctx: RequestContext,
    request: km::AddOffsetsToTxnRequest,
) -> km::AddOffsetsToTxnResponse {
    let shard = &ctx.shard;
    let transactional_id = request.transactional_id.to_string();
    let offsets_partitions = shard
        .image()
        .topic(OFFSETS_TOPIC)
        .map(|t| t.partition_count() as u32);
    let result = match offsets_partitions {
        None => Err(codes::COORDINATOR_NOT_AVAILABLE),
        Some(count) => {
            let partition = offsets_partition_for(request.group_id.as_str(), count);
            let op = AddTxnPartitions {
                transactional_id: transactional_id.clone(),
                producer: ProducerIdEpoch {
                    producer_id: request.producer_id.0,
                    producer_epoch: request.producer_epoch,
                },
                partitions: vec![(OFFSETS_TOPIC.to_string(), partition)],
                verify_only: false,
            };
            call_coordinator(shard, &transactional_id, op).await
        }
    };
    let code = result.err().unwrap_or(codes::NONE);
    let code = if code == codes::PRODUCER_FENCED && ctx.version < 2 {
        codes::INVALID_PRODUCER_EPOCH
    } else {
        code
    };
    km::AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub async fn end_txn(ctx: RequestContext, request: km::EndTxnRequest) -> km::EndTxnResponse {
    let shard = &ctx.shard;
    let transactional_id = request.transactional_id.to_string();
    let op = EndTxn {
        transactional_id: transactional_id.clone(),
        producer: ProducerIdEpoch {
            producer_id: request.producer_id.0,
            producer_epoch: request.producer_epoch,
        },
        commit: request.committed,
        // v5 is transactions v2 (KIP-890 part 2), not advertised yet.
        version: if ctx.version >= 5 {
            TxnVersion::V2
        } else {
            TxnVersion::V1
        },
    };
    let mut response = km::EndTxnResponse::default()
        .with_producer_id(km::ProducerId(-1))
        .with_producer_epoch(-1);
    match call_coordinator(shard, &transactional_id, op).await {
        Ok(next) => {
            if ctx.version >= 5 {
                response.producer_id = km::ProducerId(next.producer_id);
                response.producer_epoch = next.producer_epoch;
            }
        }
        Err(code) => {
            response.error_code = if code == codes::PRODUCER_FENCED && ctx.version < 2 {
                codes::INVALID_PRODUCER_EPOCH
            } else {
                code
            }
        }
    }
    response
}

/// TxnOffsetCommit: the consumer's offsets in the producer's transaction,
/// sent to the group's coordinator; they take effect with the commit
/// marker and vanish with an abort.
pub async fn txn_offset_commit(
    ctx: RequestContext,
    request: km::TxnOffsetCommitRequest,
) -> km::TxnOffsetCommitResponse {
    let shard = &ctx.shard;
    let group = request.group_id.to_string();
    let now = steady_ms();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let leader_epoch = if ctx.version >= 2 {
                p.committed_leader_epoch
            } else {
                -1
            };
            offsets.push(committed_offset(
                topic.name.as_str(),
                p.partition_index,
                p.committed_offset,
                leader_epoch,
                p.committed_metadata.as_deref(),
                now,
            ));
        }
    }
    let unknown = offsets
        .iter()
        .any(|o| !shard.backend.partition_exists(&o.topic, o.partition));
    let count = offsets.len();
    let errors: Vec<ErrorCode> = if unknown {
        offsets
            .iter()
            .map(|o| {
                if shard.backend.partition_exists(&o.topic, o.partition) {
                    codes::OPERATION_NOT_ATTEMPTED
                } else {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                }
            })
            .collect()
    } else {
        let op = CommitTxnOffsets {
            group_id: group.clone(),
            producer_id: request.producer_id.0,
            producer_epoch: request.producer_epoch,
            generation_id: if ctx.version >= 3 {
                request.generation_id
            } else {
                -1
            },
            member_id: if ctx.version >= 3 {
                request.member_id.to_string()
            } else {
                String::new()
            },
            group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
            offsets,
        };
        let result = match group_coordinator_route(&shard.backend, &group) {
            Ok((_, owner)) => shard.call(owner, op).await,
            Err(code) => Err(code),
        };
        result.unwrap_or_else(|code| vec![code; count])
    };
    let mut errors = errors.into_iter();
    let mut response = km::TxnOffsetCommitResponse::default();
    for topic in &request.topics {
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                km::txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(errors.next().unwrap_or(codes::UNKNOWN_SERVER_ERROR))
            })
            .collect();
        response.topics.push(
            km::txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    response
}

/// DescribeTransactions: each id's state at its coordinator (here; a
/// client asks the coordinator FindCoordinator named).
pub async fn describe_transactions(
    ctx: RequestContext,
    request: km::DescribeTransactionsRequest,
) -> km::DescribeTransactionsResponse {
    let shard = &ctx.shard;
    let described = request.transactional_ids.iter().map(|id| {
        let op = DescribeTxn {
            transactional_id: id.to_string(),
        };
        call_coordinator(shard, id.as_str(), op)
    });
    let results = futures::future::join_all(described).await;
    let mut response = km::DescribeTransactionsResponse::default();
    for (id, result) in request.transactional_ids.iter().zip(results) {
        let mut state = km::describe_transactions_response::TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id(km::ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        match result {
            Ok(record) => {
                let mut topics: Vec<km::describe_transactions_response::TopicData> = Vec::new();
                for (topic, partition) in &record.partitions {
                    match topics.last_mut() {
                        Some(t) if t.topic.as_str() == topic.as_str() => {
                            t.partitions.push(*partition)
                        }
                        _ => topics.push(
                            km::describe_transactions_response::TopicData::default()
                                .with_topic(km::TopicName(StrBytes::from_string(topic.clone())))
                                .with_partitions(vec![*partition]),
                        ),
                    }
                }
                state = state
                    .with_transaction_state(StrBytes::from_static_str(record.state.name()))
                    .with_transaction_timeout_ms(record.timeout_ms)
                    .with_transaction_start_time_ms(record.start_ms)
                    .with_producer_id(km::ProducerId(record.producer_id))
                    .with_producer_epoch(record.producer_epoch)
                    .with_topics(topics);
            }
            Err(code) => state.error_code = code,
        }
        response.transaction_states.push(state);
    }
    response
}

/// ListTransactions: the transactions this broker coordinates (every
/// shard's), filtered by state, producer id and (v1) how long they run.
pub async fn list_transactions(
    ctx: RequestContext,
    request: km::ListTransactionsRequest,
) -> km::ListTransactionsResponse {
    let shard = &ctx.shard;
    let mut response = km::ListTransactionsResponse::default();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(state) => states.push(state),
            None => response.unknown_state_filters.push(name.clone()),
        }
    }
    if !request.state_filters.is_empty() && states.is_empty() {
        // Only unknown states asked for: nothing can match.
        return response;
    }
    let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let running_longer_than_ms = if ctx.version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let calls = (0..shard.count).map(|target| {
        let op = ListTxns {
            states: states.clone(),
            producer_ids: producer_ids.clone(),
            running_longer_than_ms,
        };
        shard.call(target, op)
    });
    for listed in futures::future::join_all(calls).await {
        match listed {
            Ok(listings) => {
                for listing in listings {
                    response.transaction_states.push(
                        km::list_transactions_response::TransactionState::default()
                            .with_transactional_id(km::TransactionalId(StrBytes::from_string(
                                listing.transactional_id,
                            )))
                            .with_producer_id(km::ProducerId(listing.producer_id))
                            .with_transaction_state(StrBytes::from_static_str(
                                listing.state.name(),
                            )),
                    );
                }
            }
            Err(code) => response.error_code = code,
        }
    }
    response
}

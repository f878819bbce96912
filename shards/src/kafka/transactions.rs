//! Kafka APIs of transactions: InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn and EndTxn go to the shard that
//! leads the transactional id's `__transaction_state` partition
//! (`txns::TxnHost`); TxnOffsetCommit to the group's coordinator.

use std::rc::Rc;

use engine::group::{offsets_partition_for, OFFSETS_TOPIC};
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};
use engine::txn::{ProducerIdEpoch, TxnPartition, TxnVersion};

use super::dispatch::RequestContext;
use super::groups::committed_offset;
use crate::clock::steady_ms;
use crate::groups::coordinator_route as group_coordinator_route;
use crate::mesh::groups::CommitTxnOffsets;
use crate::mesh::txns::{AddTxnPartitions, EndTxn, InitTxnProducer};
use crate::mesh::Call;
use crate::shard::Shard;
use crate::txns::coordinator_route;

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

pub async fn add_partitions_to_txn(
    ctx: RequestContext,
    request: km::AddPartitionsToTxnRequest,
) -> km::AddPartitionsToTxnResponse {
    let shard = &ctx.shard;
    let transactional_id = request.v3_and_below_transactional_id.to_string();
    let partitions: Vec<TxnPartition> = request
        .v3_and_below_topics
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
            producer: ProducerIdEpoch {
                producer_id: request.v3_and_below_producer_id.0,
                producer_epoch: request.v3_and_below_producer_epoch,
            },
            partitions: partitions.clone(),
            verify_only: false,
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
    let mut response = km::AddPartitionsToTxnResponse::default();
    for topic in &request.v3_and_below_topics {
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
        response.results_by_topic_v3_and_below.push(
            km::add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name.clone())
                .with_results_by_partition(results),
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

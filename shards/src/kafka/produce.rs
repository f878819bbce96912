//! Produce: each partition's record set goes to its owning shard, in the
//! order the request lists them and before the connection reads its next
//! request (Kafka's per-connection ordering); the answer waits for every
//! append (and for acks=all, its group commit).

use std::rc::Rc;

use bytes::Bytes;
use engine::protocol::admit_records;
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};
use engine::record::{count_batches, BatchHeader};
use engine::txn::ProducerIdEpoch;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::dispatch::{decode, RequestContext, RequestError, Started};
use super::response::{leader_hint, respond, topic_name};
use super::topics::auto_create;
use super::transactions::verify_at_coordinator;
use crate::mesh::data::Append;
use crate::mesh::txns::AddTxnPartitions;
use crate::shard::Shard;

/// Dispatches every partition's append in arrival order, then returns the
/// future that collects the outcomes and encodes the answer (none for
/// acks=0).
pub fn start_produce(
    ctx: RequestContext,
    mut frame: Bytes,
) -> LocalBoxFuture<'static, Result<Started, RequestError>> {
    async move {
        let request: km::ProduceRequest = decode(&ctx, &mut frame)?;
        let (correlation_id, version) = (ctx.correlation_id, ctx.version);
        let finish = produce(&ctx.shard, request, version).await;
        Ok(async move {
            finish
                .await
                .and_then(|body| respond(correlation_id, version, &body))
        }
        .boxed_local())
    }
    .boxed_local()
}

async fn produce(
    shard: &Rc<Shard>,
    request: km::ProduceRequest,
    version: i16,
) -> LocalBoxFuture<'static, Option<km::ProduceResponse>> {
    let acks = request.acks;
    let transactional_id = request.transactional_id.as_ref().map(|t| t.to_string());
    let timeout_ms = request.timeout_ms.max(0) as u64;
    let mut pending = Vec::new();
    // (topic, partition, indexes in the batch of the records refused)
    let mut rejections: Vec<(String, i32, Vec<i32>)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        for partition in topic.partition_data {
            let index = partition.index;
            let outcome: LocalBoxFuture<'static, Result<(i64, i64), ErrorCode>> =
                if !matches!(acks, -1..=1) {
                    ready_err(codes::INVALID_REQUIRED_ACKS)
                } else if partition
                    .records
                    .as_ref()
                    .is_some_and(|r| count_batches(r) > 1)
                {
                    // Produce v3+ carries exactly one batch per partition
                    // (Kafka's rule; idempotence relies on it).
                    ready_err(codes::INVALID_RECORD)
                } else if let Some(records) = partition.records.filter(|r| !r.is_empty()) {
                    let mut owner = shard.route(&name, index);
                    if owner == Err(codes::UNKNOWN_TOPIC_OR_PARTITION)
                        && shard.image().topic(&name).is_none()
                    {
                        let created = auto_create(shard, &name).await;
                        owner = if created == codes::NONE {
                            shard.route(&name, index)
                        } else {
                            Err(created)
                        };
                    }
                    let admitted = owner.and_then(|_| {
                        let config = shard.backend.topic_config(&name);
                        admit_records(records, &config, version).map_err(|refusal| {
                            if !refusal.records_without_key.is_empty() {
                                rejections.push((name.clone(), index, refusal.records_without_key));
                            }
                            refusal.code
                        })
                    });
                    let admitted = match admitted {
                        Ok(records) => {
                            let verified = verify_transaction(
                                shard,
                                transactional_id.as_deref(),
                                &records,
                                &name,
                                index,
                            )
                            .await;
                            verified.map(|()| records)
                        }
                        Err(code) => Err(code),
                    };
                    match (owner, admitted) {
                        (Ok(owner), Ok(records)) => {
                            let op = Append {
                                topic: name.clone(),
                                partition: index,
                                records,
                                acks,
                                timeout_ms,
                            };
                            let appended = shard.dispatch(owner, op).await;
                            async move {
                                appended
                                    .await
                                    .map(|o| (o.base_offset, o.log_start_offset))
                            }
                            .boxed_local()
                        }
                        (_, Err(code)) => ready_err(code),
                        (Err(code), _) => ready_err(code),
                    }
                } else {
                    ready_err(codes::CORRUPT_MESSAGE)
                };
            pending.push((name.clone(), index, outcome));
        }
    }
    let shard = shard.clone();
    async move {
        let mut response = km::ProduceResponse::default();
        let mut topics: Vec<km::produce_response::TopicProduceResponse> = Vec::new();
        let mut leaders_named: Vec<i32> = Vec::new();
        for (name, index, outcome) in pending {
            let mut p = km::produce_response::PartitionProduceResponse::default().with_index(index);
            match outcome.await {
                Ok((base_offset, log_start_offset)) => {
                    p.base_offset = base_offset;
                    if version >= 5 {
                        p.log_start_offset = log_start_offset;
                    }
                }
                Err(code) => {
                    p.error_code = code;
                    p.base_offset = -1;
                    if code == codes::NOT_LEADER_OR_FOLLOWER && version >= 10 {
                        // KIP-951: name the leader, so the client need not
                        // refresh its metadata first.
                        if let Some(leader) = leader_hint(&shard, &name, index) {
                            p.current_leader = km::produce_response::LeaderIdAndEpoch::default()
                                .with_leader_id(km::BrokerId(leader.0))
                                .with_leader_epoch(leader.1);
                            if !leaders_named.contains(&leader.0) {
                                leaders_named.push(leader.0);
                            }
                        }
                    }
                    let refused = rejections
                        .iter()
                        .find(|(t, i, _)| *t == name && *i == index);
                    if let (Some((_, _, records)), true) = (refused, version >= 8) {
                        let message = format!(
                            "Compacted topic cannot accept message without key in topic partition {name}-{index}."
                        );
                        p.record_errors = records
                            .iter()
                            .map(|&batch_index| {
                                km::produce_response::BatchIndexAndErrorMessage::default()
                                    .with_batch_index(batch_index)
                                    .with_batch_index_error_message(Some(message.clone().into()))
                            })
                            .collect();
                        p.error_message = Some(message.clone().into());
                    }
                }
            }
            match topics.last_mut() {
                Some(last) if last.name.0.as_str() == name => last.partition_responses.push(p),
                _ => topics.push(
                    km::produce_response::TopicProduceResponse::default()
                        .with_name(topic_name(&name))
                        .with_partition_responses(vec![p]),
                ),
            }
        }
        response.responses = topics;
        let image = shard.image();
        for id in leaders_named {
            if let Some(broker) = image.broker(id) {
                let registration = &broker.registration;
                response.node_endpoints.push(
                    km::produce_response::NodeEndpoint::default()
                        .with_node_id(km::BrokerId(id))
                        .with_host(registration.host.clone().into())
                        .with_port(i32::from(registration.port))
                        .with_rack(registration.rack.clone().map(Into::into)),
                );
            }
        }
        drop(image);
        (acks != 0).then_some(response)
    }
    .boxed_local()
}

/// KIP-890 part 1: a transactional batch is appended only if its
/// transaction is open at the coordinator and includes this partition (a
/// late batch of an ended or fenced transaction must not join the next
/// one). The coordinator's transient answers become NOT_ENOUGH_REPLICAS,
/// which the producer retries, as Kafka answers.
async fn verify_transaction(
    shard: &Rc<Shard>,
    transactional_id: Option<&str>,
    records: &Bytes,
    topic: &str,
    partition: i32,
) -> Result<(), ErrorCode> {
    let Ok(header) = BatchHeader::parse(records) else {
        // The owner's validation answers CORRUPT_MESSAGE.
        return Ok(());
    };
    if !header.is_transactional() {
        return Ok(());
    }
    let Some(transactional_id) = transactional_id else {
        return Err(codes::INVALID_TXN_STATE);
    };
    let op = AddTxnPartitions {
        transactional_id: transactional_id.to_string(),
        producer: ProducerIdEpoch {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
        },
        partitions: vec![(topic.to_string(), partition)],
        verify_only: true,
    };
    verify_at_coordinator(shard, op)
        .await
        .map_err(|code| match code {
            codes::COORDINATOR_NOT_AVAILABLE
            | codes::COORDINATOR_LOAD_IN_PROGRESS
            | codes::NOT_COORDINATOR
            | codes::CONCURRENT_TRANSACTIONS => codes::NOT_ENOUGH_REPLICAS,
            codes::PRODUCER_FENCED | codes::INVALID_PRODUCER_ID_MAPPING => {
                codes::INVALID_PRODUCER_EPOCH
            }
            code => code,
        })
}

/// An answer known before anything is dispatched.
fn ready_err<T: 'static>(code: ErrorCode) -> LocalBoxFuture<'static, Result<T, ErrorCode>> {
    async move { Err(code) }.boxed_local()
}

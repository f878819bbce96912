//! InitProducerId: for an idempotent producer a producer id never handed
//! out before (reserved in blocks through the metadata log by the
//! controller), epoch 0; for a transactional one, what its transaction
//! coordinator decides (`transactions.rs`).

use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes};

use super::dispatch::RequestContext;
use super::transactions::init_transactional_producer;
use crate::mesh::admin::AllocateProducerId;

pub async fn init_producer_id(
    ctx: RequestContext,
    request: km::InitProducerIdRequest,
) -> km::InitProducerIdResponse {
    let mut response = km::InitProducerIdResponse::default()
        .with_producer_id(km::ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(transactional_id) = request.transactional_id.as_ref() {
        let transactional_id = transactional_id.to_string();
        match init_transactional_producer(&ctx.shard, transactional_id, &request).await {
            Ok(producer) => {
                response.producer_id = km::ProducerId(producer.producer_id);
                response.producer_epoch = producer.producer_epoch;
            }
            // PRODUCER_FENCED is new in v4 (KIP-588).
            Err(codes::PRODUCER_FENCED) if ctx.version < 4 => {
                response.error_code = codes::INVALID_PRODUCER_EPOCH
            }
            Err(code) => response.error_code = code,
        }
        return response;
    }
    // Kafka gives an idempotent producer a new id on every call (also when
    // it names its old id and epoch to bump, KIP-360): the old id's state
    // simply expires.
    match ctx.shard.call(0, AllocateProducerId).await {
        Ok(id) => {
            response.producer_id = km::ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(code) => response.error_code = code,
    }
    response
}

//! InitProducerId for idempotent producers: a producer id never handed out
//! before (reserved in blocks through the metadata log by the controller),
//! epoch 0. Transactional ids come with the transaction coordinator.

use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes};

use super::dispatch::RequestContext;
use crate::mesh::admin::AllocateProducerId;

pub async fn init_producer_id(
    ctx: RequestContext,
    request: km::InitProducerIdRequest,
) -> km::InitProducerIdResponse {
    let mut response = km::InitProducerIdResponse::default()
        .with_producer_id(km::ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        // No transaction coordinator yet: clients look for one again.
        response.error_code = codes::COORDINATOR_NOT_AVAILABLE;
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

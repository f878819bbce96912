//! Client telemetry (KIP-714), answered as a broker with no metrics
//! subscription: clients (librdkafka asks by default) get an instance id and
//! an empty list of requested metrics, so they push nothing; a push anyway
//! is accepted and dropped.

use engine::protocol::kafka_protocol::messages::{self as km};

use super::dispatch::RequestContext;

/// How often a client asks again for its subscription (Kafka's
/// `telemetry.push.interval.ms` default of a subscription).
const PUSH_INTERVAL_MS: i32 = 300_000;
/// Largest metrics payload a client may push (Kafka's default).
const TELEMETRY_MAX_BYTES: i32 = 1024 * 1024;
/// No subscription: the id of the empty one.
const EMPTY_SUBSCRIPTION_ID: i32 = 0;

pub async fn get_telemetry_subscriptions(
    _ctx: RequestContext,
    request: km::GetTelemetrySubscriptionsRequest,
) -> km::GetTelemetrySubscriptionsResponse {
    // A client without an instance id gets a new one (KIP-714).
    let client_instance_id = if request.client_instance_id.is_nil() {
        uuid::Uuid::new_v4()
    } else {
        request.client_instance_id
    };
    km::GetTelemetrySubscriptionsResponse::default()
        .with_client_instance_id(client_instance_id)
        .with_subscription_id(EMPTY_SUBSCRIPTION_ID)
        .with_accepted_compression_types(Vec::new())
        .with_push_interval_ms(PUSH_INTERVAL_MS)
        .with_telemetry_max_bytes(TELEMETRY_MAX_BYTES)
        .with_delta_temporality(true)
        .with_requested_metrics(Vec::new())
}

pub async fn push_telemetry(
    _ctx: RequestContext,
    _request: km::PushTelemetryRequest,
) -> km::PushTelemetryResponse {
    km::PushTelemetryResponse::default()
}

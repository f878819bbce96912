//! Encoding answers: a response frame (size prefix, header, body) for a
//! kafka-protocol body, and the small conversions every API file uses.

use bytes::BytesMut;
use engine::protocol::kafka_protocol::messages::{self as km, ResponseHeader};
use engine::protocol::kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use tracing::warn;

use super::dispatch::Response;
use crate::shard::Shard;

pub const CLUSTER_ID: &str = "gregor-single-node";
/// Authorized-operation bitfields (bit = Kafka AclOperation code) reported
/// when a client asks: no ACLs yet, so everything a topic, the cluster or a
/// group supports is allowed.
pub const TOPIC_AUTHORIZED_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
pub const CLUSTER_AUTHORIZED_OPERATIONS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
pub fn encode_frame<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Vec<u8>, String> {
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&[0u8; 4]);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    let size = (buf.len() - 4) as u32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.to_vec())
}

pub fn respond<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Response {
    match encode_frame(correlation_id, version, body) {
        Ok(bytes) => Some(bytes.into()),
        Err(e) => {
            // A bug in how a response was filled for this version: log it; the
            // client times out rather than reading garbage.
            warn!(version, error = %e, "cannot encode response");
            None
        }
    }
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub fn topic_name(s: &str) -> km::TopicName {
    km::TopicName(str_bytes(s))
}

/// The partition's leader and leader epoch as this broker's metadata has
/// them, for the KIP-951 / KIP-595 hints in Produce and Fetch errors.
pub fn leader_hint(shard: &Shard, topic: &str, partition: i32) -> Option<(i32, i32)> {
    let found = shard.backend.partition_image(topic, partition)?;
    (found.leader >= 0).then_some((found.leader, found.leader_epoch))
}

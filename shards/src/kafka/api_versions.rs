//! ApiVersions: the ranges of THE table (`apis.rs`).

use bytes::Bytes;
use engine::protocol::kafka_protocol::messages::{self as km};
use engine::protocol::{self as codes, ErrorCode};
use futures::FutureExt;

use super::apis::APIS;
use super::dispatch::{RequestContext, RequestError, Started};
use super::response::respond;

pub fn api_versions_body(error_code: ErrorCode) -> km::ApiVersionsResponse {
    let mut body = km::ApiVersionsResponse::default();
    body.error_code = error_code;
    body.api_keys = APIS
        .iter()
        .map(|api| {
            km::api_versions_response::ApiVersion::default()
                .with_api_key(api.key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect();
    body
}

/// The body is not decoded: whatever a client of any version sends, it gets
/// the ranges (an unknown version was answered in v0 by dispatch).
pub fn start_api_versions(ctx: RequestContext, _body: Bytes) -> Result<Started, RequestError> {
    let response = respond(
        ctx.correlation_id,
        ctx.version,
        &api_versions_body(codes::NONE),
    );
    Ok(async move { response }.boxed_local())
}

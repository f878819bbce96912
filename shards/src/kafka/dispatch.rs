//! The only gate into the Kafka APIs: a frame's header is read, its API and
//! version checked against THE table (`apis.rs`), and the API's handler
//! started. Later, authentication and ACLs are checked here too.
//!
//! `start_request` does the part of the work that must happen in arrival
//! order (dispatching appends) and returns a future that finishes the
//! request and encodes the response.

use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use engine::protocol::kafka_protocol::messages::{ApiKey, RequestHeader};
use engine::protocol::kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use engine::protocol::{
    self as codes, decode_legacy_produce, encode_legacy_produce_rejection,
    PRODUCE_VERSION_MIN_ACCEPTED,
};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tracing::{debug, warn};

use super::api_versions::api_versions_body;
use super::apis::{find_api, Handler};
use super::response::respond;
use crate::io::splice::OutFrame;
use crate::shard::Shard;

/// A response frame (size prefix included), or None when the client expects
/// no answer (acks=0).
pub type Response = Option<OutFrame>;

/// A started request: resolves to its response.
pub type Started = LocalBoxFuture<'static, Response>;

#[derive(Debug)]
pub enum RequestError {
    /// The connection must close: malformed header, unknown API, bad body.
    Close(String),
}

pub fn close(reason: impl Into<String>) -> RequestError {
    RequestError::Close(reason.into())
}

/// What a handler knows of its request besides the body.
pub struct RequestContext {
    pub shard: Rc<Shard>,
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// `/ip` of the peer, as Kafka reports client hosts.
    pub client_host: String,
}

fn ready(response: Response) -> Started {
    async move { response }.boxed_local()
}

/// Decodes a `R` body of the context's version.
pub fn decode<R: Decodable>(ctx: &RequestContext, frame: &mut Bytes) -> Result<R, RequestError> {
    R::decode(frame, ctx.version)
        .map_err(|e| close(format!("bad {:?} v{} body: {e}", ctx.api_key, ctx.version)))
}

/// The common shape of an API: decode the body now, then answer with what
/// `handle` returns, encoded in the request's version.
pub fn answer<Req, Resp, Fut>(
    ctx: RequestContext,
    mut frame: Bytes,
    handle: impl FnOnce(RequestContext, Req) -> Fut + 'static,
) -> Result<Started, RequestError>
where
    Req: Decodable + 'static,
    Resp: Encodable + HeaderVersion,
    Fut: Future<Output = Resp> + 'static,
{
    let request: Req = decode(&ctx, &mut frame)?;
    let (correlation_id, version) = (ctx.correlation_id, ctx.version);
    Ok(async move { respond(correlation_id, version, &handle(ctx, request).await) }.boxed_local())
}

pub async fn start_request(
    shard: &Rc<Shard>,
    mut frame: Bytes,
    client_host: &str,
) -> Result<Started, RequestError> {
    if frame.len() < 8 {
        return Err(close("request shorter than its header"));
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(api_key_raw)
        .map_err(|_| close(format!("unknown API key {api_key_raw}")))?;
    let api = find_api(api_key);
    if api_key == ApiKey::ApiVersions && !api.is_some_and(|a| a.advertises(version)) {
        // Answer in v0 so any client can read which versions exist.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(ready(respond(
            correlation_id,
            0,
            &api_versions_body(codes::UNSUPPORTED_VERSION),
        )));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| close(format!("bad request header: {e}")))?;
    let correlation_id = header.correlation_id;
    if api_key == ApiKey::Produce && (0..PRODUCE_VERSION_MIN_ACCEPTED).contains(&version) {
        let legacy =
            decode_legacy_produce(&frame).ok_or_else(|| close("malformed Produce v0-2 body"))?;
        warn!(version, "rejecting Produce v{version}: UNSUPPORTED_VERSION");
        if legacy.acks == 0 {
            return Ok(ready(None));
        }
        let mut body = (correlation_id as u32).to_be_bytes().to_vec();
        body.extend(encode_legacy_produce_rejection(&legacy, version));
        return Ok(ready(Some(codes::frame(&body).into())));
    }
    let Some(api) = api.filter(|a| a.serves(version)) else {
        return Err(close(format!(
            "unsupported version {version} of {api_key:?}"
        )));
    };
    debug!(?api_key, version, correlation_id, "request");
    let started = std::time::Instant::now();
    let ctx = RequestContext {
        shard: shard.clone(),
        api_key,
        version,
        correlation_id,
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: client_host.to_string(),
    };
    let response = match api.handler {
        Handler::Answer(handler) => handler(ctx, frame)?,
        Handler::InOrder(handler) => handler(ctx, frame).await?,
    };
    let measured = shard.clone();
    let name = api.name;
    Ok(async move {
        let response = response.await;
        measured.metrics.on_request(name, started.elapsed());
        response
    }
    .boxed_local())
}

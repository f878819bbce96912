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
use engine::protocol::kafka_protocol::messages::ApiKey;
use engine::protocol::kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use engine::protocol::{
    self as codes, encode_legacy_produce_rejection, read_request, RequestStart,
};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tracing::{debug, warn};

use super::api_versions::api_versions_body;
use super::apis::{find_api, Api, Handler};
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
    frame: Bytes,
    client_host: &str,
) -> Result<Started, RequestError> {
    let advertised = |key| find_api(key).map(Api::versions);
    let (api_key, version, header, frame) = match read_request(frame, advertised).map_err(close)? {
        RequestStart::ApiVersionsFallback { correlation_id } => {
            return Ok(ready(respond(
                correlation_id,
                0,
                &api_versions_body(codes::UNSUPPORTED_VERSION),
            )));
        }
        RequestStart::LegacyProduce {
            correlation_id,
            version,
            request,
        } => {
            warn!(version, "rejecting Produce v{version}: UNSUPPORTED_VERSION");
            if request.acks == 0 {
                return Ok(ready(None));
            }
            let mut body = (correlation_id as u32).to_be_bytes().to_vec();
            body.extend(encode_legacy_produce_rejection(&request, version));
            return Ok(ready(Some(codes::frame(&body).into())));
        }
        RequestStart::Served {
            api_key,
            version,
            header,
            body,
        } => (api_key, version, header, body),
    };
    let api = find_api(api_key).expect("read_request serves only APIs of the table");
    let correlation_id = header.correlation_id;
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

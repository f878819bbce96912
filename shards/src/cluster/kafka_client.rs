//! Kafka requests from one broker to another: the framing every
//! inter-broker exchange shares (a replica fetch, a transaction marker, a
//! verification), and [`BrokerLinks`], a shard's pool of connections to
//! other brokers' replication listeners for the requests that are not
//! replica fetches (those keep one connection per fetch session).
//!
//! A request goes to the shard that owns what it is about, at that shard's
//! replication listener, so inter-broker traffic stays between owning
//! shards (DESIGN.md §5).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};
use engine::protocol::kafka_protocol::messages::{RequestHeader, ResponseHeader};
use engine::protocol::kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes,
};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::debug;

use super::peers::resolve;
use crate::clock::with_timeout;

/// A response larger than this closes the connection.
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;
const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Idle connections kept per address; more concurrent calls open more
/// connections and close them afterwards.
const IDLE_CONNECTIONS_MAX: usize = 4;

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Sends one request on `stream` and reads its response.
pub async fn exchange<R: Request>(
    stream: &mut TcpStream,
    version: i16,
    correlation: i32,
    client_id: &'static str,
    request: &R,
) -> std::io::Result<R::Response> {
    let mut body = BytesMut::new();
    body.extend_from_slice(&[0u8; 4]);
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(client_id)))
        .encode(&mut body, R::header_version(version))
        .map_err(|e| invalid(format!("request header (api {}): {e}", R::KEY)))?;
    request
        .encode(&mut body, version)
        .map_err(|e| invalid(format!("request (api {} v{version}): {e}", R::KEY)))?;
    let size = (body.len() - 4) as u32;
    body[0..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&body).await?;
    stream.flush().await?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length > RESPONSE_BYTES_MAX {
        return Err(invalid(format!(
            "response of {length} bytes (api {})",
            R::KEY
        )));
    }
    let mut frame = vec![0u8; length];
    stream.read_exact(&mut frame).await?;
    let mut frame = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .map_err(|e| invalid(format!("response header (api {}): {e}", R::KEY)))?;
    if header.correlation_id != correlation {
        return Err(invalid(format!(
            "response for correlation {} (sent {correlation})",
            header.correlation_id
        )));
    }
    let response = R::Response::decode(&mut frame, version)
        .map_err(|e| invalid(format!("response (api {} v{version}): {e}", R::KEY)))?;
    if frame.has_remaining() {
        return Err(invalid(format!("bytes after a response (api {})", R::KEY)));
    }
    Ok(response)
}

/// Connects to `address` (`host:port`), with Nagle off.
pub async fn connect(address: &str) -> std::io::Result<TcpStream> {
    let addr = resolve(address)
        .await
        .ok_or_else(|| invalid(format!("cannot resolve {address}")))?;
    let stream = with_timeout(CONNECT_TIMEOUT_MS, TcpStream::connect(addr))
        .await
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {address}"),
            )
        })?
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A shard's connections to other brokers' shards, for one request at a
/// time each; idle ones are reused.
#[derive(Default)]
pub struct BrokerLinks {
    idle: RefCell<BTreeMap<String, Vec<TcpStream>>>,
    correlation: Cell<i32>,
}

impl BrokerLinks {
    /// Sends `request` to the replication listener at `address` and waits
    /// at most `timeout_ms` for its response. A connection that failed or
    /// timed out is closed; the caller decides whether to retry.
    pub async fn call<R: Request>(
        &self,
        address: &str,
        version: i16,
        request: &R,
        timeout_ms: u64,
    ) -> std::io::Result<R::Response> {
        let pooled = self
            .idle
            .borrow_mut()
            .get_mut(address)
            .and_then(|streams| streams.pop());
        let mut stream = match pooled {
            Some(stream) => stream,
            None => connect(address).await?,
        };
        let correlation = self.correlation.get().wrapping_add(1);
        self.correlation.set(correlation);
        let answered = with_timeout(
            timeout_ms,
            exchange(&mut stream, version, correlation, "gregor-broker", request),
        )
        .await;
        let response = match answered {
            Some(Ok(response)) => response,
            Some(Err(e)) => {
                debug!(%address, api = R::KEY, error = %e, "inter-broker request failed");
                return Err(e);
            }
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from {address} within {timeout_ms} ms"),
                ))
            }
        };
        let mut idle = self.idle.borrow_mut();
        let streams = idle.entry(address.to_string()).or_default();
        if streams.len() < IDLE_CONNECTIONS_MAX {
            streams.push(stream);
        }
        Ok(response)
    }
}

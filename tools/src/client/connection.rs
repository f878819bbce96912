//! One blocking connection to one broker: framing, request and response
//! headers, correlation ids and API version negotiation. Message bodies are
//! the `kafka-protocol` crate's (re-exported by engine), so the CLI speaks
//! the same codecs as the broker.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use engine::protocol::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use engine::protocol::kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::error_name;

/// Largest response we accept: a bound against a garbage size prefix.
const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
const CLIENT_ID: &str = "gregor-cli";

/// The highest version of each API this client sends, where the crate knows
/// newer versions that identify topics by id only (we address topics by
/// name).
fn client_version_max(key: i16) -> Option<i16> {
    match ApiKey::try_from(key).ok()? {
        ApiKey::Produce => Some(12),
        ApiKey::Fetch => Some(12),
        ApiKey::OffsetCommit => Some(9),
        // v8+ batch groups; v7 keeps the single-group layout.
        ApiKey::OffsetFetch => Some(7),
        _ => None,
    }
}

pub struct Connection {
    pub addr: String,
    stream: TcpStream,
    correlation_id_next: i32,
    /// The broker's (min, max) per API key, from ApiVersions.
    pub broker_versions: HashMap<i16, (i16, i16)>,
}

/// A short, human reason for an I/O error ("connection refused").
pub fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        TimedOut | WouldBlock => "timed out".into(),
        ConnectionReset => "connection reset by the broker".into(),
        UnexpectedEof => "the broker closed the connection".into(),
        _ => {
            let text = e.to_string();
            // "No route to host (os error 113)" -> "no route to host"
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().collect::<String>() + chars.as_str(),
                None => text,
            }
        }
    }
}

impl Connection {
    /// Connects and negotiates API versions.
    pub fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Connection> {
        let unreachable = |reason: String| {
            anyhow::anyhow!("cannot reach {addr}: {reason} — is `gregor serve` running there? (set --brokers or GREGOR_BROKERS)")
        };
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(format!("cannot resolve it ({})", io_reason(&e))))?
            .collect();
        let mut last_error = None;
        let mut stream = None;
        for socket_addr in &addrs {
            match TcpStream::connect_timeout(socket_addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                let reason = last_error
                    .map(|e| io_reason(&e))
                    .unwrap_or_else(|| "it resolves to no address".into());
                return Err(unreachable(reason));
            }
        };
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut connection = Connection {
            addr: addr.to_string(),
            stream,
            correlation_id_next: 1,
            broker_versions: HashMap::new(),
        };
        connection
            .negotiate()
            .map_err(|e| unreachable(format!("{e:#}")))?;
        Ok(connection)
    }

    /// Allows a longer wait for requests the broker may park (Fetch long-poll,
    /// JoinGroup).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).ok();
    }

    fn negotiate(&mut self) -> anyhow::Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let version = 3;
        let body = self.round_trip(&request, ApiKey::ApiVersions as i16, version, true)?;
        // An older broker answers an unknown ApiVersions version with a v0 body
        // holding UNSUPPORTED_VERSION and its ranges.
        let error_code = i16::from_be_bytes([body[0], body[1]]);
        let response = if error_code == 35 {
            ApiVersionsResponse::decode(&mut body.clone(), 0)?
        } else {
            ApiVersionsResponse::decode(&mut body.clone(), version)?
        };
        if response.error_code != 0 && response.error_code != 35 {
            bail!("ApiVersions failed: {}", error_name(response.error_code));
        }
        for api in &response.api_keys {
            self.broker_versions
                .insert(api.api_key, (api.min_version, api.max_version));
        }
        Ok(())
    }

    /// The highest version of `R` both sides support.
    pub fn version_for<R: Request>(&self) -> anyhow::Result<i16> {
        let name = ApiKey::try_from(R::KEY)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| format!("API {}", R::KEY));
        let Some(&(broker_min, broker_max)) = self.broker_versions.get(&R::KEY) else {
            bail!("the broker at {} does not support {name}", self.addr);
        };
        let mut max = R::VERSIONS.max.min(broker_max);
        if let Some(cap) = client_version_max(R::KEY) {
            max = max.min(cap);
        }
        let min = R::VERSIONS.min.max(broker_min);
        if min > max {
            bail!(
                "no common {name} version with the broker at {} (broker {broker_min}..{broker_max}, client {}..{})",
                self.addr,
                R::VERSIONS.min,
                R::VERSIONS.max
            );
        }
        Ok(max)
    }

    /// Sends `request` at the highest common version and decodes the answer.
    pub fn send<R: Request>(&mut self, request: &R) -> anyhow::Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_version(request, version)
    }

    pub fn send_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> anyhow::Result<R::Response> {
        let mut body = self.round_trip(request, R::KEY, version, true)?;
        R::Response::decode(&mut body, version).with_context(|| {
            format!(
                "cannot decode the {:?} v{version} response from {}",
                ApiKey::try_from(R::KEY),
                self.addr
            )
        })
    }

    /// Sends a request the broker does not answer (Produce with acks=0).
    pub fn send_without_response<R: Request>(&mut self, request: &R) -> anyhow::Result<()> {
        let version = self.version_for::<R>()?;
        self.round_trip(request, R::KEY, version, false)?;
        Ok(())
    }

    /// Writes one request; when `expect_response`, reads the matching
    /// response and returns its body (after the response header).
    fn round_trip<E: Encodable>(
        &mut self,
        request: &E,
        key: i16,
        version: i16,
        expect_response: bool,
    ) -> anyhow::Result<Bytes> {
        let api_key =
            ApiKey::try_from(key).map_err(|_| anyhow::anyhow!("unknown API key {key}"))?;
        let correlation_id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf, api_key.request_header_version(version))?;
        request.encode(&mut buf, version)?;
        let size = (buf.len() - 4) as u32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let io = |e: std::io::Error, what: &str| {
            anyhow::anyhow!("{what} {}: {}", self.addr, io_reason(&e))
        };
        self.stream
            .write_all(&buf)
            .map_err(|e| io(e, "cannot send to"))?;
        if !expect_response {
            return Ok(Bytes::new());
        }
        let mut prefix = [0u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|e| io(e, "no answer from"))?;
        let size = i32::from_be_bytes(prefix);
        if size < 4 || size as usize > RESPONSE_BYTES_MAX {
            bail!("implausible response size {size} from {}", self.addr);
        }
        let mut response = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut response)
            .map_err(|e| io(e, "truncated answer from"))?;
        let mut response = Bytes::from(response);
        // The ApiVersions response header is always v0 (no tagged fields), so
        // that a client can read it whatever version it asked for.
        let header_version = if api_key == ApiKey::ApiVersions {
            0
        } else {
            api_key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut response, header_version)?;
        if header.correlation_id != correlation_id {
            bail!(
                "response correlation id {} from {}, expected {correlation_id}",
                header.correlation_id,
                self.addr
            );
        }
        Ok(response)
    }
}

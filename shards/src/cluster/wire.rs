//! Frames of the controller channel: `[u32 length][u8 kind][u64
//! correlation][payload]`, big-endian, `length` counting kind, correlation
//! and payload. A raft frame carries a protobuf raft message (one way); a
//! request frame an rkyv `ControllerRequest`, answered by a reply frame
//! with the same correlation carrying an rkyv `ControllerReply`.

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use engine::metadata::BrokerRegistration;
use engine::protocol::ErrorCode;

use crate::mesh::admin::{AdminReply, AdminRequest};

/// Bound on one frame: a raft append carries at most 1 MiB of entries
/// unless one entry is larger (a topic with very many partitions).
pub const FRAME_BYTES_MAX: usize = 64 << 20;
const HEADER_BYTES: usize = 1 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Raft,
    Request,
    Reply,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Raft => 1,
            FrameKind::Request => 2,
            FrameKind::Reply => 3,
        }
    }

    fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Raft),
            2 => Some(FrameKind::Request),
            3 => Some(FrameKind::Reply),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Frame {
    pub kind: FrameKind,
    pub correlation: u64,
    pub payload: Vec<u8>,
}

/// What a broker asks of the quorum leader's controller.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ControllerRequest {
    Admin(AdminRequest),
    /// Kafka's BrokerRegistration: answered with the broker epoch.
    RegisterBroker(BrokerRegistration),
    /// Kafka's BrokerHeartbeat: `applied_index` is the metadata every shard
    /// of the broker applied; answered with whether it is still fenced.
    BrokerHeartbeat {
        node_id: i32,
        broker_epoch: i64,
        applied_index: u64,
    },
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ControllerReply {
    Admin(AdminReply),
    Registered(Result<i64, ErrorCode>),
    /// Ok(fenced)
    Heartbeat(Result<bool, ErrorCode>),
}

impl ControllerRequest {
    /// The reply that refuses this request with `error`.
    pub fn refusal(&self, error: ErrorCode) -> ControllerReply {
        match self {
            ControllerRequest::Admin(op) => ControllerReply::Admin(op.refusal(error)),
            ControllerRequest::RegisterBroker(_) => ControllerReply::Registered(Err(error)),
            ControllerRequest::BrokerHeartbeat { .. } => ControllerReply::Heartbeat(Err(error)),
        }
    }
}

pub fn encode_frame(kind: FrameKind, correlation: u64, payload: &[u8]) -> Vec<u8> {
    let length = HEADER_BYTES + payload.len();
    let mut out = Vec::with_capacity(4 + length);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.push(kind.code());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame; an oversized or unknown frame is an error (the caller
/// closes the connection).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Frame> {
    let mut prefix = [0u8; 4 + HEADER_BYTES];
    reader.read_exact(&mut prefix).await?;
    let length = u32::from_be_bytes(prefix[0..4].try_into().expect("4")) as usize;
    if !(HEADER_BYTES..=FRAME_BYTES_MAX).contains(&length) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("controller frame of {length} bytes"),
        ));
    }
    let kind = FrameKind::from_code(prefix[4]).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown controller frame kind {}", prefix[4]),
        )
    })?;
    let correlation = u64::from_be_bytes(prefix[5..13].try_into().expect("8"));
    let mut payload = vec![0u8; length - HEADER_BYTES];
    reader.read_exact(&mut payload).await?;
    Ok(Frame {
        kind,
        correlation,
        payload,
    })
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

pub fn encode_request(request: &ControllerRequest) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(request)
        .expect("in-memory encode")
        .to_vec()
}

pub fn encode_reply(reply: &ControllerReply) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(reply)
        .expect("in-memory encode")
        .to_vec()
}

/// rkyv wants aligned input; frames are not, so the payload is copied.
fn aligned(payload: &[u8]) -> rkyv::util::AlignedVec<16> {
    let mut out = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    out.extend_from_slice(payload);
    out
}

pub fn decode_request(payload: &[u8]) -> Result<ControllerRequest, String> {
    rkyv::from_bytes::<ControllerRequest, rkyv::rancor::Error>(&aligned(payload))
        .map_err(|e| e.to_string())
}

pub fn decode_reply(payload: &[u8]) -> Result<ControllerReply, String> {
    rkyv::from_bytes::<ControllerReply, rkyv::rancor::Error>(&aligned(payload))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::admin::{CreateTopics, TopicSpec};

    #[test]
    fn requests_round_trip_and_garbage_is_an_error() {
        let request = ControllerRequest::Admin(AdminRequest::CreateTopics(CreateTopics {
            topics: vec![TopicSpec {
                name: "t".into(),
                partitions: 3,
                replication_factor: -1,
                configs: vec![("retention.ms".into(), "1".into())],
                validate_only: false,
            }],
        }));
        let decoded = decode_request(&encode_request(&request)).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{request:?}"));
        assert!(decode_request(&[0xff; 33]).is_err());
        assert!(decode_reply(&[]).is_err());
    }
}

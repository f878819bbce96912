//! Produce v0–2: advertised (old librdkafka only enables compression when it
//! sees them) but not served. The `kafka-protocol` crate does not decode these
//! versions, so this reads just enough of the request to answer every
//! partition with UNSUPPORTED_VERSION in the v0–2 response layout.

use super::UNSUPPORTED_VERSION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyProduceRequest {
    pub acks: i16,
    /// (topic, partitions)
    pub topics: Vec<(Vec<u8>, Vec<i32>)>,
}

/// Bound on array lengths read from the wire.
const LEGACY_ARRAY_LEN_MAX: i32 = 1 << 20;

struct Reader<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(n)?;
        let out = self.buf.get(self.position..end)?;
        self.position = end;
        Some(out)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn array_len(&mut self) -> Option<usize> {
        let n = self.i32()?;
        (0..=LEGACY_ARRAY_LEN_MAX)
            .contains(&n)
            .then_some(n as usize)
    }
}

/// Decodes a v0–2 Produce body (after the request header). None if malformed.
pub fn decode_legacy_produce(body: &[u8]) -> Option<LegacyProduceRequest> {
    let mut r = Reader {
        buf: body,
        position: 0,
    };
    let acks = r.i16()?;
    let _timeout_ms = r.i32()?;
    let topic_count = r.array_len()?;
    let mut topics = Vec::with_capacity(topic_count.min(1024));
    for _ in 0..topic_count {
        let name_len = r.i16()?;
        let name = r.take(usize::try_from(name_len).ok()?)?.to_vec();
        let partition_count = r.array_len()?;
        let mut partitions = Vec::with_capacity(partition_count.min(1024));
        for _ in 0..partition_count {
            partitions.push(r.i32()?);
            let records_len = r.i32()?;
            if records_len > 0 {
                r.take(records_len as usize)?;
            }
        }
        topics.push((name, partitions));
    }
    Some(LegacyProduceRequest { acks, topics })
}

/// The v0–2 response body answering every partition with UNSUPPORTED_VERSION.
pub fn encode_legacy_produce_rejection(request: &LegacyProduceRequest, version: i16) -> Vec<u8> {
    assert!((0..=2).contains(&version));
    let mut out = Vec::new();
    out.extend_from_slice(&(request.topics.len() as i32).to_be_bytes());
    for (name, partitions) in &request.topics {
        out.extend_from_slice(&(name.len() as i16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for partition in partitions {
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&UNSUPPORTED_VERSION.to_be_bytes());
            out.extend_from_slice(&(-1i64).to_be_bytes());
            if version >= 2 {
                out.extend_from_slice(&(-1i64).to_be_bytes());
            }
        }
    }
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes());
    }
    out
}

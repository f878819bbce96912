//! The 32-byte header at the start of every record value. It carries the
//! record's intended send time, so that a consumer measures end-to-end latency
//! from the moment the record should have been sent (open loop), not from when
//! a busy client got around to sending it.
//!
//! Layout (little-endian):
//!   0  4  magic "GPRF"
//!   4  4  run id (records from other runs in the same topic are ignored)
//!   8  8  intended send time, ns since the Unix epoch
//!  16  4  producer index
//!  20  4  reserved (0)
//!  24  8  sequence number within the producer

pub const HEADER_LEN: usize = 32;
pub const MAGIC: [u8; 4] = *b"GPRF";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub run_id: u32,
    pub intended_unix_ns: u64,
    pub producer: u32,
    pub seq: u64,
}

impl Header {
    /// Writes the header into the first HEADER_LEN bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        assert!(buf.len() >= HEADER_LEN, "record shorter than its header");
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4..8].copy_from_slice(&self.run_id.to_le_bytes());
        buf[8..16].copy_from_slice(&self.intended_unix_ns.to_le_bytes());
        buf[16..20].copy_from_slice(&self.producer.to_le_bytes());
        buf[20..24].copy_from_slice(&0u32.to_le_bytes());
        buf[24..32].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// Reads a header; None if the value is not one of ours.
    pub fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_LEN || buf[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(Header {
            run_id: u32_at(4),
            intended_unix_ns: u64_at(8),
            producer: u32_at(16),
            seq: u64_at(24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            run_id: 0xdead_beef,
            intended_unix_ns: 1_700_000_000_123_456_789,
            producer: 3,
            seq: 99,
        };
        let mut buf = vec![0xAAu8; 100];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(buf[HEADER_LEN], 0xAA, "filler untouched");
    }

    #[test]
    fn foreign_values_are_ignored() {
        assert_eq!(Header::read(b"hello"), None);
        assert_eq!(Header::read(&[0u8; 64]), None);
        let mut buf = [0u8; 31];
        buf[..4].copy_from_slice(&MAGIC);
        assert_eq!(Header::read(&buf), None);
    }
}

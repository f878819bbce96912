//! Request framing: a 4-byte big-endian size, then the request.

/// `socket.request.max.bytes` default: 100 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Smallest request: api key, api version, correlation id, client id length.
pub const REQUEST_HEADER_BYTES_MIN: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {size} is over socket.request.max.bytes {max}")]
    TooLarge { size: i64, max: usize },
    #[error("frame size {0} is too small for a request header")]
    TooSmall(i64),
}

/// Checks a frame's size prefix.
pub fn parse_frame_size(prefix: [u8; 4], request_bytes_max: usize) -> Result<usize, FrameError> {
    let size = i32::from_be_bytes(prefix) as i64;
    if size < REQUEST_HEADER_BYTES_MIN as i64 {
        return Err(FrameError::TooSmall(size));
    }
    if size as u64 > request_bytes_max as u64 {
        return Err(FrameError::TooLarge {
            size,
            max: request_bytes_max,
        });
    }
    Ok(size as usize)
}

/// Prefixes `body` with its 4-byte size.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

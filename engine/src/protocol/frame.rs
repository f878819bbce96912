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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_size_bounds() {
        let max = 1000;
        assert_eq!(parse_frame_size(10i32.to_be_bytes(), max), Ok(10));
        assert_eq!(parse_frame_size(1000i32.to_be_bytes(), max), Ok(1000));
        assert_eq!(
            parse_frame_size(1001i32.to_be_bytes(), max),
            Err(FrameError::TooLarge {
                size: 1001,
                max: 1000
            })
        );
        for small in [9, 0, -1, i32::MIN] {
            assert_eq!(
                parse_frame_size(small.to_be_bytes(), max),
                Err(FrameError::TooSmall(small as i64))
            );
        }
        assert_eq!(
            parse_frame_size(i32::MAX.to_be_bytes(), REQUEST_BYTES_MAX_DEFAULT),
            Err(FrameError::TooLarge {
                size: i32::MAX as i64,
                max: REQUEST_BYTES_MAX_DEFAULT
            })
        );
        assert_eq!(
            parse_frame_size(
                (REQUEST_BYTES_MAX_DEFAULT as i32).to_be_bytes(),
                REQUEST_BYTES_MAX_DEFAULT
            ),
            Ok(REQUEST_BYTES_MAX_DEFAULT)
        );
    }

    #[test]
    fn frame_prefixes_the_size() {
        assert_eq!(frame(b"abc"), [0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(frame(b""), [0, 0, 0, 0]);
    }

    proptest! {
        #[test]
        fn any_prefix_is_judged_consistently(prefix in any::<[u8; 4]>(), max in 0usize..(1 << 31)) {
            let size = i32::from_be_bytes(prefix) as i64;
            match parse_frame_size(prefix, max) {
                Ok(n) => prop_assert!(n as i64 == size && size >= 10 && n <= max),
                Err(FrameError::TooSmall(s)) => prop_assert!(s == size && size < 10),
                Err(FrameError::TooLarge { size: s, .. }) => prop_assert!(s == size && s as u64 > max as u64),
            }
            let framed = frame(&vec![0; (size.clamp(0, 5000)) as usize]);
            prop_assert_eq!(&framed[..4], &(size.clamp(0, 5000) as u32).to_be_bytes()[..]);
        }
    }
}

//! Turning bytes read from a segment into the whole batches a fetch returns.
//! Batches already in the log are trusted here (they were validated on the
//! way in or by recovery), so only headers are parsed, no CRCs.

use crate::record::{BatchHeader, LOG_OVERHEAD_BYTES};

/// What a read window holds for a fetch at `target_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSelection {
    /// `buf[start..end]` is whole batches, the first one holding (or being
    /// the first after) the target offset.
    Found { start: usize, end: usize },
    /// The first wanted batch starts at `start` but is not wholly in the
    /// window: read `total_bytes` from there.
    NeedBytes { start: usize, total_bytes: usize },
    /// Every complete batch in the window ends before the target; continue
    /// from `scanned` (a batch boundary).
    Before { scanned: usize },
}

/// Selects whole batches for a fetch from a window that starts on a batch
/// boundary. Returns at least one batch even when it is larger than
/// `max_bytes` (Kafka's KIP-74 rule), so a consumer always makes progress.
pub fn select_batches(buf: &[u8], target_offset: i64, max_bytes: usize) -> BatchSelection {
    let mut position = 0usize;
    let mut start: Option<usize> = None;
    while position + LOG_OVERHEAD_BYTES <= buf.len() {
        let header = match BatchHeader::parse(&buf[position..]) {
            Ok(header) => header,
            // A header cut by the window's end: the batch continues past it.
            Err(e) if e.is_truncation() => break,
            // Stored batches were validated; a bad header means the window
            // does not start on a boundary, which is a bug in the caller.
            Err(e) => panic!("invalid stored batch at window position {position}: {e}"),
        };
        let total = header.total_bytes();
        match start {
            None if header.last_offset() < target_offset => {
                if position + total > buf.len() {
                    break;
                }
                position += total;
                continue;
            }
            None => {
                if position + total > buf.len() {
                    return BatchSelection::NeedBytes {
                        start: position,
                        total_bytes: total,
                    };
                }
                start = Some(position);
                position += total;
            }
            Some(first) => {
                if position + total > buf.len() || position + total - first > max_bytes {
                    break;
                }
                position += total;
            }
        }
    }
    match start {
        Some(first) => BatchSelection::Found {
            start: first,
            end: position,
        },
        None => BatchSelection::Before { scanned: position },
    }
}

//! Recovery scanning: walk a segment's bytes batch by batch, validating size,
//! magic, CRC and offset order, rebuilding the segment's indexes, and say
//! where the valid prefix ends.

use super::segment::Segment;
use crate::record::{validate_batch, BatchError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// Every byte of the window was a complete, valid batch.
    Clean,
    /// The window ends inside a batch: more bytes may complete it; at the end
    /// of the file it is a torn tail.
    Incomplete { needed_bytes: usize },
    /// The batch at `position` (relative to the window) is invalid.
    Corrupt { position: usize, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Bytes of valid batches at the start of the window.
    pub valid_bytes: usize,
    pub batches: usize,
    pub stop: ScanStop,
}

/// Scans `window`, which starts at the segment's current end
/// (`segment.size_bytes`), and records every valid batch into `segment`.
pub fn scan_into_segment(
    window: &[u8],
    segment: &mut Segment,
    index_interval_bytes: u64,
    now_ms: i64,
) -> ScanOutcome {
    let mut position = 0usize;
    let mut batches = 0usize;
    let stop = loop {
        if position == window.len() {
            break ScanStop::Clean;
        }
        let header = match validate_batch(&window[position..]) {
            Ok(header) => header,
            Err(BatchError::Truncated { needed, .. }) => {
                break ScanStop::Incomplete {
                    needed_bytes: needed,
                }
            }
            Err(e) => {
                break ScanStop::Corrupt {
                    position,
                    reason: e.to_string(),
                }
            }
        };
        if header.base_offset < segment.next_offset {
            break ScanStop::Corrupt {
                position,
                reason: format!(
                    "batch base offset {} is below the expected {}",
                    header.base_offset, segment.next_offset
                ),
            };
        }
        if !segment.can_hold_offset(header.last_offset()) {
            break ScanStop::Corrupt {
                position,
                reason: "batch offset out of the segment's range".into(),
            };
        }
        segment.record_batch(&header, index_interval_bytes, now_ms);
        position += header.total_bytes();
        batches += 1;
    };
    ScanOutcome {
        valid_bytes: position,
        batches,
        stop,
    }
}

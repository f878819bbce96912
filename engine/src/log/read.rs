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
    /// The bytes at `position` are not a batch header (bad magic, length or
    /// attributes): the window did not start on a batch boundary or the
    /// stored data went bad after it was validated, and no wanted batch
    /// precedes it (if one does, those come back as `Found`). The caller
    /// answers the fetch with an error.
    Corrupt { position: usize },
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
            // Stored batches were validated, so this is a caller bug or
            // damage after the fact. Either way it is one partition's
            // problem: report it instead of taking the whole shard down.
            // Whole batches already selected before it are still returned.
            Err(_) if start.is_some() => break,
            Err(_) => return BatchSelection::Corrupt { position },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::patch_base_offset;
    use crate::record::testing::simple_batch;

    /// Batches at offsets 0..3, 3..5, 5..6, each 100+ bytes.
    fn three_batches() -> (Vec<u8>, [usize; 4]) {
        let mut out = Vec::new();
        let mut bounds = [0; 4];
        for (i, (base, count)) in [(0i64, 3usize), (3, 2), (5, 1)].into_iter().enumerate() {
            let mut batch = simple_batch(count, 40, 0);
            patch_base_offset(&mut batch, base);
            out.extend_from_slice(&batch);
            bounds[i + 1] = out.len();
        }
        (out, bounds)
    }

    #[test]
    fn finds_the_batch_holding_the_offset() {
        let (buf, b) = three_batches();
        let all = usize::MAX;
        for (offset, first) in [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 2)] {
            assert_eq!(
                select_batches(&buf, offset, all),
                BatchSelection::Found {
                    start: b[first],
                    end: b[3]
                },
                "offset {offset}"
            );
        }
        // A target before the first batch (a gap) starts at the first batch.
        let mut later = buf[b[1]..b[2]].to_vec();
        patch_base_offset(&mut later, 10);
        assert_eq!(
            select_batches(&later, 4, all),
            BatchSelection::Found {
                start: 0,
                end: b[2] - b[1]
            }
        );
    }

    #[test]
    fn whole_window_before_the_target() {
        let (buf, b) = three_batches();
        assert_eq!(
            select_batches(&buf, 6, 1 << 20),
            BatchSelection::Before { scanned: b[3] }
        );
        // A window that ends inside a batch before the target stops at that
        // batch's start.
        for end in [b[2] + 1, b[2] + 12, b[2] + 60, b[3] - 1] {
            assert_eq!(
                select_batches(&buf[..end], 6, 1 << 20),
                BatchSelection::Before { scanned: b[2] }
            );
        }
        assert_eq!(
            select_batches(&buf[..11], 0, 1 << 20),
            BatchSelection::Before { scanned: 0 }
        );
        assert_eq!(
            select_batches(&[], 0, 1),
            BatchSelection::Before { scanned: 0 }
        );
    }

    #[test]
    fn needs_more_bytes_for_a_cut_first_batch() {
        let (buf, b) = three_batches();
        for end in [b[1] + 61, b[2] - 1] {
            assert_eq!(
                select_batches(&buf[..end], 3, 1 << 20),
                BatchSelection::NeedBytes {
                    start: b[1],
                    total_bytes: b[2] - b[1]
                }
            );
        }
        // A header cut by the window: the batch is not known yet.
        assert_eq!(
            select_batches(&buf[..b[1] + 60], 3, 1 << 20),
            BatchSelection::Before { scanned: b[1] }
        );
    }

    #[test]
    fn max_bytes_limits_all_but_the_first_batch() {
        let (buf, b) = three_batches();
        // KIP-74: the first batch comes back even when larger than max_bytes.
        for max in [0, 1, b[1]] {
            assert_eq!(
                select_batches(&buf, 0, max),
                BatchSelection::Found {
                    start: 0,
                    end: b[1]
                }
            );
        }
        assert_eq!(
            select_batches(&buf, 0, b[2]),
            BatchSelection::Found {
                start: 0,
                end: b[2]
            }
        );
        assert_eq!(
            select_batches(&buf, 3, b[3] - b[1] - 1),
            BatchSelection::Found {
                start: b[1],
                end: b[2]
            }
        );
        // A window that cuts a later batch ends the selection before it.
        assert_eq!(
            select_batches(&buf[..b[3] - 1], 0, usize::MAX),
            BatchSelection::Found {
                start: 0,
                end: b[2]
            }
        );
    }

    #[test]
    fn garbage_is_reported_not_a_panic() {
        let (buf, b) = three_batches();
        // A window that does not start on a batch boundary.
        assert_eq!(
            select_batches(&buf[5..], 0, 1 << 20),
            BatchSelection::Corrupt { position: 0 }
        );
        assert_eq!(
            select_batches(&[0u8; 200], 0, 1 << 20),
            BatchSelection::Corrupt { position: 0 }
        );
        // Damage after batches before the target.
        let mut damaged = buf.clone();
        damaged[b[1] + 16] = 1; // magic
        assert_eq!(
            select_batches(&damaged, 4, 1 << 20),
            BatchSelection::Corrupt { position: b[1] }
        );
        // Damage after a wanted batch: the good batches still come back.
        assert_eq!(
            select_batches(&damaged, 0, 1 << 20),
            BatchSelection::Found {
                start: 0,
                end: b[1]
            }
        );
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::testing::SimLog;
    use crate::log::{LogConfig, PartitionLog};
    use crate::record::testing::simple_batch;
    use crate::record::{patch_base_offset, BATCH_HEADER_BYTES};
    use proptest::prelude::*;

    /// One segment written through `PartitionLog` appends; returns the log's
    /// own view of it and its bytes.
    fn written_segment(
        shapes: &[(usize, usize, i64)],
        index_interval_bytes: u64,
    ) -> (Segment, Vec<u8>, Vec<usize>) {
        let mut sim = SimLog::new(PartitionLog::new_empty(LogConfig {
            index_interval_bytes,
            ..LogConfig::default()
        }));
        for &(count, value_bytes, timestamp) in shapes {
            sim.append(simple_batch(count, value_bytes, timestamp), 0, 0)
                .unwrap();
        }
        assert_eq!(sim.log.segments().count(), 1);
        let starts = sim.batches.iter().map(|b| b.position).collect();
        (sim.log.active().clone(), sim.files[&0].clone(), starts)
    }

    fn scan(bytes: &[u8], index_interval_bytes: u64) -> (Segment, ScanOutcome) {
        let mut segment = Segment::new(0);
        let outcome = scan_into_segment(bytes, &mut segment, index_interval_bytes, 0);
        (segment, outcome)
    }

    fn assert_same_view(rebuilt: &Segment, written: &Segment) {
        assert_eq!(rebuilt.size_bytes, written.size_bytes);
        assert_eq!(rebuilt.next_offset, written.next_offset);
        assert_eq!(rebuilt.max_timestamp_ms, written.max_timestamp_ms);
        assert_eq!(rebuilt.offset_index, written.offset_index);
        assert_eq!(rebuilt.time_index, written.time_index);
    }

    fn segment_shapes() -> impl Strategy<Value = Vec<(usize, usize, i64)>> {
        prop::collection::vec((1usize..5, 0usize..150, 0i64..10_000), 1..30)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn scan_rebuilds_the_indexes(
            shapes in segment_shapes(),
            index_interval_bytes in 0u64..800,
            window_bytes in 1usize..1_000,
        ) {
            let (written, bytes, starts) = written_segment(&shapes, index_interval_bytes);
            let (rebuilt, outcome) = scan(&bytes, index_interval_bytes);
            prop_assert_eq!(outcome.clone(), ScanOutcome {
                valid_bytes: bytes.len(),
                batches: starts.len(),
                stop: ScanStop::Clean,
            });
            assert_same_view(&rebuilt, &written);

            // The same in windows, as the shard reads a file: a window that
            // ends inside a batch stops Incomplete and the next one resumes.
            let mut segment = Segment::new(0);
            let mut position = 0;
            let mut want = window_bytes;
            let mut batches = 0;
            while position < bytes.len() {
                let end = bytes.len().min(position + want);
                let outcome = scan_into_segment(&bytes[position..end], &mut segment, index_interval_bytes, 0);
                position += outcome.valid_bytes;
                batches += outcome.batches;
                match outcome.stop {
                    ScanStop::Clean => want = window_bytes,
                    ScanStop::Incomplete { needed_bytes } => {
                        prop_assert!(needed_bytes > end - position);
                        want = needed_bytes;
                    }
                    ScanStop::Corrupt { position, reason } => {
                        prop_assert!(false, "corrupt at {}: {}", position, reason);
                    }
                }
            }
            prop_assert_eq!(batches, starts.len());
            assert_same_view(&segment, &written);
        }

        #[test]
        fn torn_tail_keeps_whole_batches(
            shapes in segment_shapes(),
            cut in any::<prop::sample::Index>(),
        ) {
            let (_, bytes, starts) = written_segment(&shapes, 100);
            let cut = cut.index(bytes.len());
            let (segment, outcome) = scan(&bytes[..cut], 100);
            let whole = starts.iter().filter(|&&s| s < cut).count();
            // Batches that end at or before the cut.
            let ends: Vec<usize> = starts.iter().skip(1).copied().chain([bytes.len()]).collect();
            let valid = ends.iter().copied().filter(|&e| e <= cut).max().unwrap_or(0);
            prop_assert_eq!(outcome.valid_bytes, valid);
            prop_assert_eq!(segment.size_bytes, valid as u64);
            if valid == cut {
                prop_assert_eq!(outcome.stop, ScanStop::Clean);
                prop_assert_eq!(outcome.batches, whole);
            } else {
                prop_assert!(matches!(outcome.stop, ScanStop::Incomplete { .. }), "{:?}", outcome.stop);
                prop_assert_eq!(outcome.batches, whole - 1);
            }
        }

        /// A damaged byte anywhere from batchLength on stops the scan at the
        /// start of the damaged batch.
        #[test]
        fn flipped_byte_stops_at_its_batch(
            shapes in segment_shapes(),
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
            last in any::<bool>(),
        ) {
            let (_, mut bytes, starts) = written_segment(&shapes, 100);
            let k = if last { starts.len() - 1 } else { which.index(starts.len()) };
            let batch_start = starts[k];
            let batch_end = starts.get(k + 1).copied().unwrap_or(bytes.len());
            // Skip partitionLeaderEpoch (12..16): it is outside the CRC and
            // any value is valid.
            let mut offset_in_batch = 8 + at.index(batch_end - batch_start - 8 - 4);
            if offset_in_batch >= 12 {
                offset_in_batch += 4;
            }
            bytes[batch_start + offset_in_batch] ^= mask;
            let (segment, outcome) = scan(&bytes, 100);
            prop_assert_eq!(outcome.valid_bytes, batch_start);
            prop_assert_eq!(outcome.batches, k);
            prop_assert_eq!(segment.size_bytes, batch_start as u64);
            match outcome.stop {
                ScanStop::Corrupt { position, .. } => prop_assert_eq!(position, batch_start),
                // A length that now claims more bytes than the file has.
                ScanStop::Incomplete { needed_bytes } => {
                    prop_assert!((8..12).contains(&offset_in_batch));
                    prop_assert!(needed_bytes > bytes.len() - batch_start);
                }
                ScanStop::Clean => prop_assert!(false, "damage not detected"),
            }
        }

        #[test]
        fn zero_filled_tail_stops_at_its_start(
            shapes in segment_shapes(),
            zeros in 1usize..5_000,
        ) {
            let (written, mut bytes, starts) = written_segment(&shapes, 100);
            let len = bytes.len();
            bytes.resize(len + zeros, 0);
            let (segment, outcome) = scan(&bytes, 100);
            prop_assert_eq!(outcome.valid_bytes, len);
            prop_assert_eq!(outcome.batches, starts.len());
            if zeros < BATCH_HEADER_BYTES {
                prop_assert!(matches!(outcome.stop, ScanStop::Incomplete { .. }), "{:?}", outcome.stop);
            } else {
                let stopped_at_tail = matches!(outcome.stop, ScanStop::Corrupt { position, .. } if position == len);
                prop_assert!(stopped_at_tail, "{:?}", outcome.stop);
            }
            assert_same_view(&segment, &written);
        }
    }

    #[test]
    fn empty_window_is_clean() {
        let (segment, outcome) = scan(&[], 4096);
        assert_eq!(
            outcome,
            ScanOutcome {
                valid_bytes: 0,
                batches: 0,
                stop: ScanStop::Clean
            }
        );
        assert!(segment.is_empty());
    }

    #[test]
    fn offsets_must_not_go_back() {
        let first = simple_batch(3, 10, 0);
        let mut second = simple_batch(1, 10, 0);
        patch_base_offset(&mut second, 2); // overlaps offsets 0..=2
        let bytes = [first.clone(), second].concat();
        let (segment, outcome) = scan(&bytes, 4096);
        assert_eq!(outcome.valid_bytes, first.len());
        assert!(
            matches!(outcome.stop, ScanStop::Corrupt { position, .. } if position == first.len())
        );
        assert_eq!(segment.next_offset, 3);

        // A batch below the segment's base offset.
        let mut segment = Segment::new(100);
        let outcome = scan_into_segment(&first, &mut segment, 4096, 0);
        assert!(matches!(
            outcome.stop,
            ScanStop::Corrupt { position: 0, .. }
        ));

        // Gaps (left by compaction) are fine.
        let mut later = simple_batch(1, 10, 0);
        patch_base_offset(&mut later, 50);
        let bytes = [first, later].concat();
        let (segment, outcome) = scan(&bytes, 4096);
        assert_eq!(outcome.stop, ScanStop::Clean);
        assert_eq!(segment.next_offset, 51);
    }

    #[test]
    fn offsets_beyond_the_segment_range_are_corrupt() {
        let mut batch = simple_batch(1, 10, 0);
        patch_base_offset(&mut batch, i32::MAX as i64 + 1);
        let (segment, outcome) = scan(&batch, 4096);
        assert!(matches!(
            outcome.stop,
            ScanStop::Corrupt { position: 0, .. }
        ));
        assert!(segment.is_empty());
        // baseOffset is outside the CRC: a damaged one near i64::MAX must not
        // overflow anything, here or when a fetch reads it.
        let mut batch = simple_batch(3, 10, 0);
        patch_base_offset(&mut batch, i64::MAX - 1);
        let (_, outcome) = scan(&batch, 4096);
        assert!(matches!(
            outcome.stop,
            ScanStop::Corrupt { position: 0, .. }
        ));
        assert_eq!(
            crate::log::select_batches(&batch, 0, 1 << 20),
            crate::log::BatchSelection::Corrupt { position: 0 }
        );
    }
}

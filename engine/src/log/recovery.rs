//! Recovery scanning: walk a segment's bytes batch by batch, validating size,
//! magic, CRC and offset order, rebuilding the segment's indexes, and say
//! where the valid prefix ends. Where the scan stops early, a search for a
//! valid batch after the bad spot tells a torn tail (truncate it) from damage
//! in the middle of the log (never drop what follows).

use super::segment::Segment;
use crate::record::{validate_batch, BatchError, BatchHeader, BATCH_HEADER_BYTES};

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

/// The result of searching a window for the start of a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchSearch {
    /// A complete batch with a valid CRC and a plausible base offset starts
    /// at `position`.
    Found { position: usize },
    /// A plausible header starts at `position` but its batch runs past the
    /// window: validate `total_bytes` read from there, then search on from
    /// `position + 1` if it is not valid.
    NeedBytes { position: usize, total_bytes: usize },
    /// No batch starts before `searched`; continue there with more bytes
    /// (at the end of the file: nothing valid follows).
    NotFound { searched: usize },
}

/// Whether a batch found after damage can belong to this log: its offsets
/// must lie beyond everything before the damage.
fn plausible_successor(header: &BatchHeader, min_base_offset: i64) -> bool {
    header.base_offset >= min_base_offset
}

/// Searches `window` for the first position where a valid batch starts whose
/// base offset is at least `min_base_offset`. `at_file_end`: the window ends
/// where the file ends, so a batch that runs past it can never complete.
///
/// A batch stored as a record value could also match; that only makes a torn
/// tail look like damage in the middle, which fails safe (nothing is cut).
pub fn find_valid_batch(window: &[u8], min_base_offset: i64, at_file_end: bool) -> BatchSearch {
    for position in 0..window.len() {
        let rest = &window[position..];
        if rest.len() < BATCH_HEADER_BYTES {
            // No header fits here: at the file end none ever will.
            let searched = if at_file_end { window.len() } else { position };
            return BatchSearch::NotFound { searched };
        }
        match validate_batch(rest) {
            Ok(header) if plausible_successor(&header, min_base_offset) => {
                return BatchSearch::Found { position }
            }
            Err(BatchError::Truncated { needed, .. }) if !at_file_end => {
                let plausible = BatchHeader::parse(rest)
                    .is_ok_and(|header| plausible_successor(&header, min_base_offset));
                if plausible {
                    return BatchSearch::NeedBytes {
                        position,
                        total_bytes: needed,
                    };
                }
            }
            _ => {}
        }
    }
    BatchSearch::NotFound {
        searched: window.len(),
    }
}

/// What the bytes from a bad spot to the end of the segment hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Nothing valid follows: a torn or garbage tail, safe to truncate.
    Tail,
    /// A valid batch starts `next_batch_bytes` after the bad spot: the log
    /// has a hole and truncating would drop the batches after it.
    Middle { next_batch_bytes: usize },
}

/// Classifies the damage at the start of `from_bad_spot` (the segment's bytes
/// from where the scan stopped to the end of the file). `min_base_offset` is
/// the log end offset before the bad spot.
pub fn classify_damage(from_bad_spot: &[u8], min_base_offset: i64) -> Damage {
    if from_bad_spot.is_empty() {
        return Damage::Tail;
    }
    // The bad spot itself is not a valid batch: search after it.
    match find_valid_batch(&from_bad_spot[1..], min_base_offset, true) {
        BatchSearch::Found { position } => Damage::Middle {
            next_batch_bytes: position + 1,
        },
        BatchSearch::NotFound { .. } => Damage::Tail,
        BatchSearch::NeedBytes { .. } => unreachable!("at the file end a batch never needs bytes"),
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

    /// Flips one CRC-covered byte of batch `k` (never partitionLeaderEpoch,
    /// which the CRC leaves out).
    fn damage_batch(
        bytes: &mut [u8],
        starts: &[usize],
        k: usize,
        at: prop::sample::Index,
        mask: u8,
    ) {
        let batch_start = starts[k];
        let batch_end = starts.get(k + 1).copied().unwrap_or(bytes.len());
        let offset_in_batch = 21 + at.index(batch_end - batch_start - 21);
        bytes[batch_start + offset_in_batch] ^= mask;
    }

    /// The shard's windowed search over `bytes[from..]`, in windows of
    /// `window_bytes`, resolving `NeedBytes` by validating the whole batch.
    fn windowed_search(
        bytes: &[u8],
        from: usize,
        min_base_offset: i64,
        window_bytes: usize,
    ) -> Option<usize> {
        let mut position = from;
        for _round in 0..bytes.len() + 2 {
            if position >= bytes.len() {
                return None;
            }
            let end = bytes.len().min(position + window_bytes);
            let at_end = end == bytes.len();
            match find_valid_batch(&bytes[position..end], min_base_offset, at_end) {
                BatchSearch::Found { position: p } => return Some(position + p),
                BatchSearch::NeedBytes {
                    position: p,
                    total_bytes,
                } => {
                    let candidate = position + p;
                    let whole = &bytes[candidate..bytes.len().min(candidate + total_bytes)];
                    if validate_batch(whole).is_ok() {
                        return Some(candidate);
                    }
                    position = candidate + 1;
                }
                BatchSearch::NotFound { searched } => {
                    if at_end {
                        return None;
                    }
                    // A window shorter than a header: read a larger one.
                    if searched == 0 {
                        return windowed_search(bytes, position, min_base_offset, window_bytes * 2);
                    }
                    position += searched;
                }
            }
        }
        panic!("search did not end");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Damage in the last batch (or a torn last batch) is a tail; damage
        /// in an earlier batch is in the middle, and the search finds the next
        /// batch, whole or in windows.
        #[test]
        fn damage_is_classified_by_what_follows(
            shapes in segment_shapes(),
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
            window_bytes in 1usize..700,
            torn in any::<bool>(),
        ) {
            let (_, mut bytes, starts) = written_segment(&shapes, 100);
            let k = which.index(starts.len());
            let last = k + 1 == starts.len();
            if torn && last {
                // Cut the last batch short instead of flipping a byte.
                let cut = starts[k] + 1 + at.index(bytes.len() - starts[k] - 1);
                bytes.truncate(cut);
            } else {
                damage_batch(&mut bytes, &starts, k, at, mask);
            }
            let (segment, outcome) = scan(&bytes, 100);
            prop_assert_eq!(outcome.valid_bytes, starts[k]);
            let damage = classify_damage(&bytes[starts[k]..], segment.next_offset);
            let found = windowed_search(&bytes, starts[k] + 1, segment.next_offset, window_bytes);
            if last {
                prop_assert_eq!(damage, Damage::Tail);
                prop_assert_eq!(found, None);
            } else {
                prop_assert_eq!(damage, Damage::Middle { next_batch_bytes: starts[k + 1] - starts[k] });
                prop_assert_eq!(found, Some(starts[k + 1]));
            }
        }

        #[test]
        fn zero_fill_and_garbage_tails_are_tails(
            shapes in segment_shapes(),
            zeros in 1usize..5_000,
        ) {
            let (segment, mut bytes, _) = written_segment(&shapes, 100);
            let len = bytes.len();
            bytes.resize(len + zeros, 0);
            prop_assert_eq!(classify_damage(&bytes[len..], segment.next_offset), Damage::Tail);
            prop_assert_eq!(windowed_search(&bytes, len + 1, segment.next_offset, 333), None);
        }
    }

    #[test]
    fn a_batch_from_before_the_damage_does_not_count() {
        // A valid batch whose offsets are not past the log end (a stale copy
        // left by an earlier write) is no evidence of data after the damage.
        let first = simple_batch(3, 10, 0);
        let mut stale = simple_batch(1, 10, 0);
        patch_base_offset(&mut stale, 1);
        let bytes = [vec![0u8; 100], stale.clone()].concat();
        assert_eq!(classify_damage(&bytes, 3), Damage::Tail);
        patch_base_offset(&mut stale, 3);
        let bytes = [vec![0u8; 100], stale].concat();
        assert_eq!(
            classify_damage(&bytes, 3),
            Damage::Middle {
                next_batch_bytes: 100
            }
        );
        assert_eq!(classify_damage(&[], 0), Damage::Tail);
        assert_eq!(
            find_valid_batch(&first[..40], 0, false),
            BatchSearch::NotFound { searched: 0 }
        );
        assert_eq!(
            find_valid_batch(&first[..70], 0, false),
            BatchSearch::NeedBytes {
                position: 0,
                total_bytes: first.len()
            }
        );
        assert_eq!(
            find_valid_batch(&first[..70], 0, true),
            BatchSearch::NotFound { searched: 70 }
        );
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

//! Test-only simulation of the shard that drives a `PartitionLog`: segment
//! "files" are byte vectors, appends follow plan → (roll, re-plan) → write →
//! commit, and fetches follow plan_read → select_batches over windows of the
//! stored bytes, the way `shards` does it with real files.

use std::collections::BTreeMap;

use super::{select_batches, AppendError, AppendPlan, BatchSelection, PartitionLog, ReadError};
use crate::record::{BatchHeader, BATCH_HEADER_BYTES};

/// Where one appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBatch {
    pub segment_base_offset: i64,
    pub position: usize,
    pub bytes: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// Records every batch of `file` from `position` (a batch boundary) to its
/// end as stored in the segment at `segment_base_offset`.
pub fn push_stored_batches(
    batches: &mut Vec<StoredBatch>,
    segment_base_offset: i64,
    file: &[u8],
    mut position: usize,
) {
    while position < file.len() {
        let header = BatchHeader::parse(&file[position..]).expect("a stored batch");
        batches.push(StoredBatch {
            segment_base_offset,
            position,
            bytes: header.total_bytes(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        });
        position += header.total_bytes();
    }
}

pub struct SimLog {
    pub log: PartitionLog,
    /// Segment base offset → the segment file's bytes.
    pub files: BTreeMap<i64, Vec<u8>>,
    /// Every batch in log order.
    pub batches: Vec<StoredBatch>,
}

impl SimLog {
    pub fn new(log: PartitionLog) -> SimLog {
        let files = log
            .segments()
            .map(|s| (s.base_offset, Vec::new()))
            .collect();
        SimLog {
            log,
            files,
            batches: Vec::new(),
        }
    }

    /// Appends a producer's record set the way the owning shard does.
    /// Returns the plan that was committed and whether the log rolled first.
    pub fn append(
        &mut self,
        mut record_set: Vec<u8>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<(AppendPlan, bool), AppendError> {
        let mut plan = self
            .log
            .plan_append(&mut record_set, leader_epoch, now_ms)?;
        let rolled = plan.roll_first;
        if rolled {
            let base = self.log.roll();
            assert_eq!(base, plan.base_offset);
            assert!(self.files.insert(base, Vec::new()).is_none());
            plan = self
                .log
                .plan_append(&mut record_set, leader_epoch, now_ms)?;
            assert!(!plan.roll_first, "a fresh segment never rolls");
            assert_eq!(plan.segment_base_offset, base);
            assert_eq!(plan.position, 0);
        }
        assert_eq!(plan.bytes, record_set.len());
        let file = self
            .files
            .get_mut(&plan.segment_base_offset)
            .expect("the plan's segment has a file");
        assert_eq!(file.len() as u64, plan.position);
        let position = file.len();
        file.extend_from_slice(&record_set);
        push_stored_batches(&mut self.batches, plan.segment_base_offset, file, position);
        self.log.commit_append(&plan, now_ms);
        Ok((plan, rolled))
    }

    /// A fetch at `offset` reading windows of at most `window_bytes`, as the
    /// shard does: `None` when there is nothing to return.
    pub fn fetch(
        &self,
        offset: i64,
        max_bytes: usize,
        window_bytes: usize,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let Some(start) = self.log.plan_read(offset)? else {
            return Ok(None);
        };
        let mut segment_base = start.segment_base_offset;
        let mut segment_bytes = start.segment_bytes as usize;
        let mut position = start.position as usize;
        let mut window_bytes = window_bytes.max(1);
        for _round in 0..100_000 {
            if position >= segment_bytes {
                assert_eq!(position, segment_bytes, "scan ran past the segment");
                match self.log.segment_after(segment_base) {
                    Some(next) => {
                        segment_base = next.base_offset;
                        segment_bytes = next.size_bytes as usize;
                        position = 0;
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let file = &self.files[&segment_base];
            assert_eq!(file.len(), segment_bytes);
            let window = &file[position..segment_bytes.min(position.saturating_add(window_bytes))];
            match select_batches(window, offset, max_bytes) {
                BatchSelection::Found { start, end } => {
                    assert!(start < end && end <= window.len());
                    return Ok(Some(window[start..end].to_vec()));
                }
                BatchSelection::NeedBytes { start, total_bytes } => {
                    let from = position + start;
                    assert!(from + total_bytes <= segment_bytes);
                    return Ok(Some(file[from..from + total_bytes].to_vec()));
                }
                BatchSelection::Before { scanned } if scanned > 0 => {
                    assert!(scanned <= window.len());
                    position += scanned;
                }
                BatchSelection::Before { .. } if window.len() < BATCH_HEADER_BYTES => {
                    // Too small to even hold a header: read more.
                    window_bytes = window_bytes.saturating_mul(2);
                }
                BatchSelection::Before { .. } => {
                    // One batch before the target is larger than the window:
                    // skip it by its header.
                    position += BatchHeader::parse(window).expect("header").total_bytes();
                }
                BatchSelection::Corrupt { position: at } => {
                    panic!("stored data is valid, got Corrupt at {at}")
                }
            }
        }
        panic!("fetch made no progress");
    }
}

//! One partition's transactions, as its log shows them: which producers
//! have a transaction open here and from which offset, which transactions
//! ended with an abort (for read_committed fetches, which must list every
//! aborted transaction overlapping what they return), and the last stable
//! offset (LSO): read_committed readers see nothing at or past it.
//!
//! Kafka's rules:
//! - a producer's first transactional batch after its previous marker opens
//!   its transaction at that batch's offset;
//! - a control batch (commit or abort marker) closes it; an abort records
//!   (producer id, first offset, marker offset);
//! - the LSO is the smallest first offset among transactions still open, or
//!   ended by a marker the high watermark has not passed yet (a marker
//!   above the high watermark could still be truncated away), capped at
//!   the high watermark itself.
//!
//! Pure bookkeeping fed by the partition as it appends (or replays after a
//! crash) batches; truncation re-opens transactions whose marker it cut.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::producer_state::{SnapshotError, SnapshotReader};

/// Transactions a snapshot may hold in each of its lists (open, ended
/// above the high watermark, aborted): a bound on what a damaged file can
/// make recovery allocate.
const SNAPSHOT_TXNS_MAX: usize = 1 << 24;

/// A transaction of this partition that ended with an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of its abort marker.
    pub last_offset: i64,
}

/// A transaction that ended by a marker the high watermark has not passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ended {
    producer_id: i64,
    first_offset: i64,
    marker_offset: i64,
    commit: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct PartitionTxns {
    /// Producer id -> first offset of its open transaction.
    open: BTreeMap<i64, i64>,
    /// (first offset, producer id) of the open transactions, for the LSO.
    open_by_first_offset: BTreeSet<(i64, i64)>,
    /// Ended above the high watermark, in marker order.
    ended_unstable: VecDeque<Ended>,
    /// Aborted transactions in marker order (ascending `last_offset`).
    aborted: VecDeque<AbortedTxn>,
}

impl PartitionTxns {
    pub fn new() -> PartitionTxns {
        PartitionTxns::default()
    }

    /// A transactional data batch at `base_offset` was appended.
    pub fn on_data(&mut self, producer_id: i64, base_offset: i64) {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.open.entry(producer_id) {
            slot.insert(base_offset);
            self.open_by_first_offset.insert((base_offset, producer_id));
        }
    }

    /// A commit or abort marker of `producer_id` was appended at
    /// `marker_offset`. A marker for a producer with nothing open here is
    /// legal (the transaction wrote nothing here) and changes nothing.
    pub fn on_marker(&mut self, producer_id: i64, marker_offset: i64, commit: bool) {
        let Some(first_offset) = self.open.remove(&producer_id) else {
            return;
        };
        self.open_by_first_offset
            .remove(&(first_offset, producer_id));
        debug_assert!(marker_offset > first_offset);
        debug_assert!(self
            .ended_unstable
            .back()
            .is_none_or(|e| e.marker_offset < marker_offset));
        self.ended_unstable.push_back(Ended {
            producer_id,
            first_offset,
            marker_offset,
            commit,
        });
        if !commit {
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: marker_offset,
            });
        }
    }

    /// The high watermark moved: markers below it are final.
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        while self
            .ended_unstable
            .front()
            .is_some_and(|e| e.marker_offset < high_watermark)
        {
            self.ended_unstable.pop_front();
        }
    }

    /// The last stable offset under `high_watermark`.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        let open = self.open_by_first_offset.first().map(|(first, _)| *first);
        let ended = self
            .ended_unstable
            .iter()
            .filter(|e| e.marker_offset >= high_watermark)
            .map(|e| e.first_offset)
            .min();
        [Some(high_watermark), open, ended]
            .into_iter()
            .flatten()
            .min()
            .expect("the high watermark is always there")
    }

    /// Does `producer_id` have a transaction open here?
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.open.contains_key(&producer_id)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The aborted transactions that overlap `[from_offset, to_offset)`: what
    /// a read_committed fetch returning that range must list.
    pub fn aborted_overlapping(&self, from_offset: i64, to_offset: i64) -> Vec<AbortedTxn> {
        let start = self
            .aborted
            .partition_point(|a| a.last_offset < from_offset);
        self.aborted
            .range(start..)
            .filter(|a| a.first_offset < to_offset)
            .copied()
            .collect()
    }

    /// The log was cut at `offset` (a follower's truncation, a torn tail):
    /// transactions that began at or past it are gone, and those whose
    /// marker was cut are open again. `offset` is at or above the high
    /// watermark (replicas agree below it), so a cut marker is still among
    /// those the high watermark has not passed; a deeper cut (a rebuilt
    /// replica) replays the log into a new `PartitionTxns` instead.
    pub fn truncate(&mut self, offset: i64) {
        self.open.retain(|_, first| *first < offset);
        self.open_by_first_offset
            .retain(|(first, _)| *first < offset);
        while self.aborted.back().is_some_and(|a| a.last_offset >= offset) {
            self.aborted.pop_back();
        }
        while let Some(ended) = self
            .ended_unstable
            .back()
            .copied()
            .filter(|e| e.marker_offset >= offset)
        {
            self.ended_unstable.pop_back();
            if ended.first_offset < offset {
                self.open.insert(ended.producer_id, ended.first_offset);
                self.open_by_first_offset
                    .insert((ended.first_offset, ended.producer_id));
            }
        }
    }

    /// Retention moved the log start: aborted transactions wholly before it
    /// no longer overlap anything a fetch can return.
    pub fn forget_before(&mut self, log_start_offset: i64) {
        while self
            .aborted
            .front()
            .is_some_and(|a| a.last_offset < log_start_offset)
        {
            self.aborted.pop_front();
        }
    }
}

impl PartitionTxns {
    /// Appends the state to a snapshot's body (`ProducerStates::encode_snapshot`).
    pub(super) fn encode_into(&self, body: &mut Vec<u8>) {
        body.extend_from_slice(&(self.open.len() as u32).to_be_bytes());
        for (producer_id, first_offset) in &self.open {
            body.extend_from_slice(&producer_id.to_be_bytes());
            body.extend_from_slice(&first_offset.to_be_bytes());
        }
        body.extend_from_slice(&(self.ended_unstable.len() as u32).to_be_bytes());
        for e in &self.ended_unstable {
            body.extend_from_slice(&e.producer_id.to_be_bytes());
            body.extend_from_slice(&e.first_offset.to_be_bytes());
            body.extend_from_slice(&e.marker_offset.to_be_bytes());
            body.push(u8::from(e.commit));
        }
        body.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            body.extend_from_slice(&a.producer_id.to_be_bytes());
            body.extend_from_slice(&a.first_offset.to_be_bytes());
            body.extend_from_slice(&a.last_offset.to_be_bytes());
        }
    }

    /// Reads what `encode_into` wrote, for a snapshot taken at `offset`.
    pub(super) fn decode_from(
        reader: &mut SnapshotReader<'_>,
        offset: i64,
    ) -> Result<PartitionTxns, SnapshotError> {
        let mut txns = PartitionTxns::new();
        let count = |n: u32| -> Result<usize, SnapshotError> {
            let n = n as usize;
            if n > SNAPSHOT_TXNS_MAX {
                return Err(SnapshotError::Invalid("too many transactions"));
            }
            Ok(n)
        };
        for _ in 0..count(reader.u32()?)? {
            let producer_id = reader.i64()?;
            let first_offset = reader.i64()?;
            if first_offset >= offset || first_offset < 0 {
                return Err(SnapshotError::Invalid("open transaction offset"));
            }
            txns.on_data(producer_id, first_offset);
        }
        for _ in 0..count(reader.u32()?)? {
            let ended = Ended {
                producer_id: reader.i64()?,
                first_offset: reader.i64()?,
                marker_offset: reader.i64()?,
                commit: reader.u8()? != 0,
            };
            let ordered = txns
                .ended_unstable
                .back()
                .is_none_or(|e| e.marker_offset < ended.marker_offset);
            if ended.first_offset >= ended.marker_offset
                || ended.marker_offset >= offset
                || !ordered
            {
                return Err(SnapshotError::Invalid("ended transaction offsets"));
            }
            txns.ended_unstable.push_back(ended);
        }
        for _ in 0..count(reader.u32()?)? {
            let aborted = AbortedTxn {
                producer_id: reader.i64()?,
                first_offset: reader.i64()?,
                last_offset: reader.i64()?,
            };
            let ordered = txns
                .aborted
                .back()
                .is_none_or(|a| a.last_offset < aborted.last_offset);
            if aborted.first_offset >= aborted.last_offset
                || aborted.last_offset >= offset
                || !ordered
            {
                return Err(SnapshotError::Invalid("aborted transaction offsets"));
            }
            txns.aborted.push_back(aborted);
        }
        Ok(txns)
    }

    /// Whether nothing is open, unstable or aborted (nothing to snapshot).
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.ended_unstable.is_empty() && self.aborted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_transaction_pins_the_lso_until_its_marker_passes_the_high_watermark() {
        let mut t = PartitionTxns::new();
        assert_eq!(t.last_stable_offset(10), 10);
        t.on_data(7, 10);
        t.on_data(7, 12); // later batches of the same transaction
        t.on_data(8, 11);
        assert_eq!(t.last_stable_offset(20), 10);
        t.on_marker(7, 13, true);
        // Its marker is above the high watermark: still unstable.
        assert_eq!(t.last_stable_offset(13), 10);
        t.on_high_watermark(14);
        assert_eq!(t.last_stable_offset(14), 11, "producer 8 is still open");
        t.on_marker(8, 14, false);
        t.on_high_watermark(15);
        assert_eq!(t.last_stable_offset(15), 15);
        assert_eq!(t.open_count(), 0);
    }

    #[test]
    fn fetches_list_the_aborted_transactions_they_overlap() {
        let mut t = PartitionTxns::new();
        t.on_data(1, 0);
        t.on_marker(1, 5, false);
        t.on_data(2, 6);
        t.on_marker(2, 8, true);
        t.on_data(3, 9);
        t.on_marker(3, 12, false);
        let ids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(ids(t.aborted_overlapping(0, 100)), vec![1, 3]);
        assert_eq!(ids(t.aborted_overlapping(6, 9)), Vec::<i64>::new());
        assert_eq!(ids(t.aborted_overlapping(5, 6)), vec![1]);
        assert_eq!(ids(t.aborted_overlapping(10, 11)), vec![3]);
        t.forget_before(6);
        assert_eq!(ids(t.aborted_overlapping(0, 100)), vec![3]);
    }

    #[test]
    fn a_marker_without_data_here_changes_nothing() {
        let mut t = PartitionTxns::new();
        t.on_marker(9, 3, false);
        assert!(t.aborted_overlapping(0, 10).is_empty());
        assert_eq!(t.last_stable_offset(4), 4);
    }

    #[test]
    fn truncation_reopens_transactions_whose_marker_it_cut() {
        let mut t = PartitionTxns::new();
        t.on_data(1, 0);
        t.on_data(2, 3);
        t.on_marker(1, 4, false);
        t.on_data(3, 6);
        // Cut at 4: producer 3's transaction is gone, producer 1's abort
        // marker too (open again), producer 2 stays open.
        t.truncate(4);
        assert!(!t.is_open(3));
        assert!(t.is_open(1) && t.is_open(2));
        assert!(t.aborted_overlapping(0, 10).is_empty());
        assert_eq!(t.last_stable_offset(4), 0);
        t.on_marker(1, 4, true);
        t.on_marker(2, 5, true);
        t.on_high_watermark(6);
        assert_eq!(t.last_stable_offset(6), 6);
    }
}

//! The partition's transactions (engine's `PartitionTxns`), fed by the
//! writer once a write is on the page cache, rebuilt at open from the
//! producer snapshot plus a replay: the last stable offset that bounds
//! read_committed fetches, and the aborted transactions they must list.

use engine::txn::AbortedTxn;

use super::writer::TxnEvent;
use super::Partition;

impl Partition {
    /// Applies a written write's transactional batches and markers.
    pub(super) fn apply_txn_events(&self, events: Vec<TxnEvent>) {
        if events.is_empty() {
            return;
        }
        let mut txns = self.txns.borrow_mut();
        for event in events {
            match event {
                TxnEvent::Data {
                    producer_id,
                    offset,
                } => txns.on_data(producer_id, offset),
                TxnEvent::Marker {
                    producer_id,
                    offset,
                    commit,
                } => txns.on_marker(producer_id, offset, commit),
            }
        }
    }

    /// The last stable offset: read_committed consumers see nothing at or
    /// past it (ListOffsets(latest) for them returns it).
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark.get();
        let mut txns = self.txns.borrow_mut();
        txns.on_high_watermark(high_watermark);
        txns.last_stable_offset(high_watermark)
    }

    /// The aborted transactions overlapping `[from_offset, to_offset)`.
    pub fn aborted_transactions(&self, from_offset: i64, to_offset: i64) -> Vec<AbortedTxn> {
        self.txns
            .borrow()
            .aborted_overlapping(from_offset, to_offset)
    }

    /// Retention moved the log start: aborted transactions before it go.
    pub(super) fn forget_transactions_before(&self, log_start_offset: i64) {
        self.txns.borrow_mut().forget_before(log_start_offset);
    }
}

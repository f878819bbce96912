//! One partition's idempotent-producer state, as Kafka keeps it: per
//! producer id its epoch and its last 5 batches (sequence range and
//! offsets). A batch is checked before it is appended:
//! - a batch equal to one of the last 5 is a retry: answered with the
//!   original offsets, never written twice;
//! - an older epoch is INVALID_PRODUCER_EPOCH;
//! - a new epoch must start at sequence 0, and within an epoch each batch
//!   must follow the last one: otherwise OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - a producer with no state here (new, expired or evicted) may start at
//!   any sequence (Kafka does the same after its state is gone).
//!
//! Changes since the last `mark` can be rolled back (the write they belonged
//! to failed). The state is snapshotted to a file at segment rolls and at a
//! clean stop and rebuilt from the newest snapshot plus a replay of the
//! batches after it.
//!
//! Bounds: 5 batches per producer; at most `PRODUCERS_PER_PARTITION_MAX`
//! producers per partition: past it the producer that appended least
//! recently is dropped (as if it had expired). Producers idle for
//! `producer.id.expiration.ms` are dropped by `expire`.

use std::collections::{HashMap, VecDeque};

use super::partition_txns::PartitionTxns;
use crate::protocol::{self as codes, ErrorCode};
use crate::record::BatchHeader;

/// Batches remembered per producer (Kafka's, and what clients rely on: at
/// most 5 requests in flight per connection with idempotence).
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// Producers remembered per partition before the least recently appending
/// one is dropped.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 65_536;
/// `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

/// The idempotence fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

/// `sequence + increment`, wrapping past i32::MAX to 0 as Kafka does.
fn add_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(sequence >= 0 && increment >= 0);
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

impl BatchIdentity {
    /// The identity of an idempotent batch; None for a batch without a
    /// producer id or sequence (plain producers, control-free internal
    /// writes).
    pub fn of(header: &BatchHeader) -> Option<BatchIdentity> {
        if header.producer_id < 0 || header.base_sequence < 0 {
            return None;
        }
        Some(BatchIdentity {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            last_sequence: add_sequence(header.base_sequence, header.last_offset_delta.max(0)),
        })
    }
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    Append,
    /// A retry of a batch already in the log at `base_offset`.
    Duplicate {
        base_offset: i64,
    },
    Reject(ErrorCode),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRecord {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

/// Put first in a producer's batches when a transaction marker starts a new
/// epoch (a fence, a transactions-v2 commit): it stands for sequence -1, so
/// the epoch's first batch must be sequence 0, as Kafka requires after a
/// control record bumped the epoch.
const EPOCH_STARTED_BY_MARKER: BatchRecord = BatchRecord {
    first_sequence: -1,
    last_sequence: -1,
    base_offset: -1,
    last_offset: -1,
};

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first; at most PRODUCER_BATCHES_KEPT.
    batches: VecDeque<BatchRecord>,
    last_append_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    Truncated,
    BadMagic,
    BadChecksum,
    Invalid(&'static str),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Truncated => write!(f, "producer snapshot is truncated"),
            SnapshotError::BadMagic => write!(f, "not a producer snapshot"),
            SnapshotError::BadChecksum => write!(f, "producer snapshot checksum mismatch"),
            SnapshotError::Invalid(what) => write!(f, "invalid producer snapshot: {what}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Entries as they were before each change since the last `mark`,
    /// oldest first (None: the producer had no entry).
    undo: Vec<(i64, Option<ProducerEntry>)>,
}

/// The first format: producers only.
const SNAPSHOT_MAGIC_V1: &[u8; 4] = b"GPS1";
/// Producers, then the partition's transactions (`PartitionTxns`).
const SNAPSHOT_MAGIC: &[u8; 4] = b"GPS2";
/// magic, crc, offset, count
const SNAPSHOT_HEADER_BYTES: usize = 4 + 4 + 8 + 4;

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Where a batch with this identity stands.
    pub fn check(&self, batch: &BatchIdentity) -> SequenceVerdict {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return SequenceVerdict::Append;
        };
        if batch.producer_epoch < entry.epoch {
            return SequenceVerdict::Reject(codes::INVALID_PRODUCER_EPOCH);
        }
        if batch.producer_epoch > entry.epoch {
            return if batch.first_sequence == 0 {
                SequenceVerdict::Append
            } else {
                SequenceVerdict::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(original) = entry.batches.iter().find(|b| {
            b.first_sequence == batch.first_sequence && b.last_sequence == batch.last_sequence
        }) {
            return SequenceVerdict::Duplicate {
                base_offset: original.base_offset,
            };
        }
        match entry.batches.back() {
            None => SequenceVerdict::Append,
            Some(last) if last == &EPOCH_STARTED_BY_MARKER && batch.first_sequence == 0 => {
                SequenceVerdict::Append
            }
            Some(last)
                if last.last_sequence >= 0
                    && batch.first_sequence == add_sequence(last.last_sequence, 1) =>
            {
                SequenceVerdict::Append
            }
            Some(_) => SequenceVerdict::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER),
        }
    }

    /// Starts a new unit of roll back (a write): earlier changes are final.
    pub fn mark(&mut self) {
        self.undo.clear();
    }

    /// Undoes every change since `mark`.
    pub fn roll_back(&mut self) {
        while let Some((producer_id, before)) = self.undo.pop() {
            match before {
                Some(entry) => self.producers.insert(producer_id, entry),
                None => self.producers.remove(&producer_id),
            };
        }
    }

    /// Records an appended batch (its check said Append).
    pub fn record(
        &mut self,
        batch: &BatchIdentity,
        base_offset: i64,
        last_offset: i64,
        now_ms: i64,
    ) {
        debug_assert_eq!(self.check(batch), SequenceVerdict::Append, "{batch:?}");
        let before = self.producers.get(&batch.producer_id).cloned();
        self.undo.push((batch.producer_id, before));
        self.apply(batch, base_offset, last_offset, now_ms);
        if self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            self.evict_least_recent(batch.producer_id);
        }
        debug_assert!(self.producers.len() <= PRODUCERS_PER_PARTITION_MAX);
    }

    /// Records a batch a follower copied from its leader: no checks (the
    /// leader made them), but undone like `record` if its write fails.
    pub fn record_replicated(&mut self, header: &BatchHeader, now_ms: i64) {
        if header.is_control() && header.producer_id >= 0 {
            // No check: the leader made it (an older epoch changes nothing).
            let before = self.producers.get(&header.producer_id).cloned();
            self.undo.push((header.producer_id, before));
            self.apply_marker(header.producer_id, header.producer_epoch, now_ms);
            return;
        }
        let Some(batch) = BatchIdentity::of(header) else {
            return;
        };
        let before = self.producers.get(&batch.producer_id).cloned();
        self.undo.push((batch.producer_id, before));
        let last_offset = header.base_offset + header.last_offset_delta.max(0) as i64;
        self.apply(&batch, header.base_offset, last_offset, now_ms);
        if self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            self.evict_least_recent(batch.producer_id);
        }
    }

    /// Where a transaction marker of this producer at this epoch stands: an
    /// epoch older than the producer's is INVALID_PRODUCER_EPOCH (a marker
    /// from before a fence).
    pub fn check_marker(&self, producer_id: i64, producer_epoch: i16) -> Result<(), ErrorCode> {
        match self.producers.get(&producer_id) {
            Some(entry) if producer_epoch < entry.epoch => Err(codes::INVALID_PRODUCER_EPOCH),
            _ => Ok(()),
        }
    }

    /// Records an appended marker (its check passed): a newer epoch, which
    /// a fencing abort or a transactions-v2 commit carries, becomes the
    /// producer's, so its older epoch's batches are refused from now on.
    pub fn record_marker(&mut self, producer_id: i64, producer_epoch: i16, now_ms: i64) {
        debug_assert_eq!(self.check_marker(producer_id, producer_epoch), Ok(()));
        let before = self.producers.get(&producer_id).cloned();
        self.undo.push((producer_id, before));
        self.apply_marker(producer_id, producer_epoch, now_ms);
        if self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            self.evict_least_recent(producer_id);
        }
    }

    fn apply_marker(&mut self, producer_id: i64, producer_epoch: i16, now_ms: i64) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: producer_epoch,
                batches: VecDeque::from([EPOCH_STARTED_BY_MARKER]),
                last_append_ms: now_ms,
            });
        if producer_epoch > entry.epoch {
            entry.epoch = producer_epoch;
            entry.batches.clear();
            entry.batches.push_back(EPOCH_STARTED_BY_MARKER);
        }
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
    }

    /// Replays a batch read back from the log (recovery): no checks, no
    /// roll back; the log is the truth.
    pub fn replay(&mut self, header: &BatchHeader, now_ms: i64) {
        if header.is_control() && header.producer_id >= 0 {
            self.apply_marker(header.producer_id, header.producer_epoch, now_ms);
            return;
        }
        let Some(batch) = BatchIdentity::of(header) else {
            return;
        };
        let last_offset = header.base_offset + header.last_offset_delta.max(0) as i64;
        self.apply(&batch, header.base_offset, last_offset, now_ms);
        if self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            self.evict_least_recent(batch.producer_id);
        }
    }

    fn apply(&mut self, batch: &BatchIdentity, base_offset: i64, last_offset: i64, now_ms: i64) {
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.producer_epoch,
                batches: VecDeque::with_capacity(PRODUCER_BATCHES_KEPT),
                last_append_ms: now_ms,
            });
        if batch.producer_epoch != entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchRecord {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
            last_offset,
        });
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        debug_assert!(entry.batches.len() <= PRODUCER_BATCHES_KEPT);
    }

    fn evict_least_recent(&mut self, keep: i64) {
        let victim = self
            .producers
            .iter()
            .filter(|(id, _)| **id != keep)
            .min_by_key(|(id, e)| (e.last_append_ms, **id))
            .map(|(id, _)| *id);
        if let Some(victim) = victim {
            let before = self.producers.remove(&victim);
            self.undo.push((victim, before));
        }
    }

    /// Drops producers that appended nothing for `expiration_ms`; returns
    /// how many. Not undoable: call it between writes.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_append_ms) < expiration_ms);
        self.undo.clear();
        before - self.producers.len()
    }

    /// The state as of log offset `offset` (the log end when taken), with
    /// the partition's transactions, as a snapshot file's bytes.
    pub fn encode_snapshot(&self, offset: i64, txns: &PartitionTxns) -> Vec<u8> {
        let mut body = Vec::with_capacity(8 + 4 + self.producers.len() * 64);
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let entry = &self.producers[id];
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&entry.epoch.to_be_bytes());
            body.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            body.push(entry.batches.len() as u8);
            for b in &entry.batches {
                body.extend_from_slice(&b.first_sequence.to_be_bytes());
                body.extend_from_slice(&b.last_sequence.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        txns.encode_into(&mut body);
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A snapshot's offset, producer state and transactions (none in a
    /// snapshot of the first format).
    pub fn decode_snapshot(
        bytes: &[u8],
    ) -> Result<(i64, ProducerStates, PartitionTxns), SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(SnapshotError::Truncated);
        }
        let with_txns = &bytes[..4] == SNAPSHOT_MAGIC;
        if !with_txns && &bytes[..4] != SNAPSHOT_MAGIC_V1 {
            return Err(SnapshotError::BadMagic);
        }
        let crc = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let body = &bytes[8..];
        if crc32c::crc32c(body) != crc {
            return Err(SnapshotError::BadChecksum);
        }
        let mut reader = SnapshotReader { bytes: body };
        let offset = reader.i64()?;
        let count = reader.u32()? as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return Err(SnapshotError::Invalid("too many producers"));
        }
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let id = reader.i64()?;
            let epoch = reader.i16()?;
            let last_append_ms = reader.i64()?;
            let n = reader.u8()? as usize;
            if n > PRODUCER_BATCHES_KEPT || id < 0 {
                return Err(SnapshotError::Invalid("bad producer entry"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let record = BatchRecord {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    base_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                };
                if record.base_offset > record.last_offset || record.base_offset > offset {
                    return Err(SnapshotError::Invalid("batch offsets"));
                }
                batches.push_back(record);
            }
            states.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_append_ms,
                },
            );
        }
        let txns = if with_txns {
            PartitionTxns::decode_from(&mut reader, offset)?
        } else {
            PartitionTxns::new()
        };
        if !reader.bytes.is_empty() {
            return Err(SnapshotError::Invalid("trailing bytes"));
        }
        Ok((offset, states, txns))
    }
}

pub(super) struct SnapshotReader<'a> {
    bytes: &'a [u8],
}

impl SnapshotReader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        if self.bytes.len() < N {
            return Err(SnapshotError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("N bytes"))
    }
    pub(super) fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    pub(super) fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    pub(super) fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    pub(super) fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    pub(super) fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32, count: i32) -> BatchIdentity {
        BatchIdentity {
            producer_id,
            producer_epoch: epoch,
            first_sequence: first,
            last_sequence: add_sequence(first, count - 1),
        }
    }

    /// Checks and records like the writer does; returns the verdict.
    fn append(
        states: &mut ProducerStates,
        b: BatchIdentity,
        next_offset: &mut i64,
    ) -> SequenceVerdict {
        let verdict = states.check(&b);
        if verdict == SequenceVerdict::Append {
            let count = (b.last_sequence - b.first_sequence).rem_euclid(i32::MAX) as i64 + 1;
            states.record(&b, *next_offset, *next_offset + count - 1, 0);
            *next_offset += count;
        }
        verdict
    }

    #[test]
    fn in_order_batches_append_and_retries_of_the_last_five_are_duplicates() {
        let mut states = ProducerStates::default();
        let mut next = 0;
        for i in 0..7 {
            assert_eq!(
                append(&mut states, batch(1, 0, i * 10, 10), &mut next),
                SequenceVerdict::Append
            );
        }
        // Batches 2..6 (the last five) are remembered with their offsets.
        for i in 2..7 {
            assert_eq!(
                states.check(&batch(1, 0, i * 10, 10)),
                SequenceVerdict::Duplicate {
                    base_offset: (i * 10) as i64
                }
            );
        }
        // Older than the last five: no longer known, and not next.
        assert_eq!(
            states.check(&batch(1, 0, 10, 10)),
            SequenceVerdict::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
    }

    #[test]
    fn gaps_reorders_and_stale_epochs_are_rejected() {
        let mut states = ProducerStates::default();
        let mut next = 0;
        append(&mut states, batch(7, 3, 0, 5), &mut next);
        assert_eq!(
            states.check(&batch(7, 3, 6, 1)),
            SequenceVerdict::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER),
            "a gap"
        );
        assert_eq!(
            states.check(&batch(7, 2, 5, 1)),
            SequenceVerdict::Reject(codes::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            states.check(&batch(7, 4, 5, 1)),
            SequenceVerdict::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER),
            "a new epoch starts at 0"
        );
        assert_eq!(states.check(&batch(7, 4, 0, 1)), SequenceVerdict::Append);
        assert_eq!(states.check(&batch(7, 3, 5, 1)), SequenceVerdict::Append);
        // An unknown producer may start anywhere.
        assert_eq!(states.check(&batch(8, 0, 42, 1)), SequenceVerdict::Append);
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        let mut states = ProducerStates::default();
        let mut next = 0;
        append(&mut states, batch(1, 0, i32::MAX - 1, 2), &mut next);
        assert_eq!(states.check(&batch(1, 0, 0, 3)), SequenceVerdict::Append);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn a_marker_with_a_newer_epoch_fences_the_older_epochs_batches() {
        let mut states = ProducerStates::default();
        let mut next = 0;
        append(&mut states, batch(1, 0, 0, 5), &mut next);
        // v1 commit: same epoch, the sequence goes on.
        assert_eq!(states.check_marker(1, 0), Ok(()));
        states.record_marker(1, 0, 0);
        assert_eq!(
            append(&mut states, batch(1, 0, 5, 1), &mut next),
            SequenceVerdict::Append
        );
        // A fencing abort at epoch 1: epoch 0's batches and markers are
        // refused from now on.
        states.mark();
        states.record_marker(1, 1, 0);
        assert_eq!(
            states.check(&batch(1, 0, 6, 1)),
            SequenceVerdict::Reject(codes::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            states.check_marker(1, 0),
            Err(codes::INVALID_PRODUCER_EPOCH)
        );
        // The new epoch starts at sequence 0.
        assert_eq!(
            states.check(&batch(1, 1, 3, 1)),
            SequenceVerdict::Reject(codes::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(states.check(&batch(1, 1, 0, 1)), SequenceVerdict::Append);
        // Undone with its write.
        states.roll_back();
        assert_eq!(states.check(&batch(1, 0, 6, 1)), SequenceVerdict::Append);
    }

    #[test]
    fn roll_back_restores_the_state_at_the_mark() {
        let mut states = ProducerStates::default();
        let mut next = 0;
        append(&mut states, batch(1, 0, 0, 1), &mut next);
        states.mark();
        let before = states.encode_snapshot(next, &PartitionTxns::new());
        append(&mut states, batch(1, 0, 1, 1), &mut next);
        append(&mut states, batch(2, 0, 0, 1), &mut next);
        append(&mut states, batch(1, 1, 0, 1), &mut next);
        states.roll_back();
        assert_eq!(states.encode_snapshot(1, &PartitionTxns::new()), before);
        assert_eq!(states.check(&batch(1, 0, 1, 1)), SequenceVerdict::Append);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut states = ProducerStates::default();
        let mut next = 0;
        for p in 0..20 {
            for s in 0..(p % 7) {
                append(
                    &mut states,
                    batch(p, (p % 3) as i16, s as i32, 1),
                    &mut next,
                );
            }
        }
        let mut txns = PartitionTxns::new();
        txns.on_data(3, 2);
        txns.on_marker(3, 4, false);
        txns.on_data(4, 5);
        txns.on_marker(4, 6, true);
        txns.on_data(5, 7);
        let bytes = states.encode_snapshot(next, &txns);
        let (offset, decoded, decoded_txns) = ProducerStates::decode_snapshot(&bytes).unwrap();
        assert_eq!(offset, next);
        assert_eq!(decoded.producers, states.producers);
        assert_eq!(decoded_txns, txns);
        // A snapshot of the first format (no transactions) still reads.
        let empty = states.encode_snapshot(next, &PartitionTxns::new());
        let body = &empty[8..empty.len() - 12];
        let mut first_format = SNAPSHOT_MAGIC_V1.to_vec();
        first_format.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        first_format.extend_from_slice(body);
        let (_, decoded, decoded_txns) = ProducerStates::decode_snapshot(&first_format).unwrap();
        assert_eq!(decoded.producers, states.producers);
        assert!(decoded_txns.is_empty());
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(
            ProducerStates::decode_snapshot(&damaged).err(),
            Some(SnapshotError::BadChecksum)
        );
        assert_eq!(
            ProducerStates::decode_snapshot(&bytes[..bytes.len() - 3]).err(),
            Some(SnapshotError::BadChecksum)
        );
        assert!(ProducerStates::decode_snapshot(b"nope").is_err());
    }

    #[test]
    fn idle_producers_expire_and_the_table_is_bounded() {
        let mut states = ProducerStates::default();
        states.record(&batch(1, 0, 0, 1), 0, 0, 1_000);
        states.record(&batch(2, 0, 0, 1), 1, 1, 5_000);
        assert_eq!(states.expire(10_000, 6_000), 1);
        assert_eq!(states.len(), 1);
        assert_eq!(
            states.check(&batch(2, 0, 0, 1)),
            SequenceVerdict::Duplicate { base_offset: 1 }
        );
        let mut states = ProducerStates::default();
        for id in 0..(PRODUCERS_PER_PARTITION_MAX as i64 + 10) {
            states.record(&batch(id, 0, 0, 1), id, id, id);
        }
        assert_eq!(states.len(), PRODUCERS_PER_PARTITION_MAX);
        // The least recently appending ones went first.
        assert_eq!(states.check(&batch(0, 0, 0, 1)), SequenceVerdict::Append);
        assert!(matches!(
            states.check(&batch(PRODUCERS_PER_PARTITION_MAX as i64 + 9, 0, 0, 1)),
            SequenceVerdict::Duplicate { .. }
        ));
    }
}

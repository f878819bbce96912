//! The data path's ops: appends, reads (with long-poll parking), offset
//! lookups and DeleteRecords, served by the shard that owns the partition.

use std::sync::Arc;

use bytes::Bytes;
use engine::protocol::{self as codes, ErrorCode};
use engine::replication::EpochEnd;

use super::subsystem;
use crate::io::splice::FileSlice;

subsystem!(Data, DataRequest, DataReply {
    Append => Result<AppendOutcome, ErrorCode>,
    WriteMarker => Result<AppendOutcome, ErrorCode>,
    Read => Vec<Result<ReadOutcome, ErrorCode>>,
    EndWait => (),
    ListOffset => Result<ListedOffset, ErrorCode>,
    DeleteRecords => Result<i64, ErrorCode>,
    FindEpochEnd => Result<EpochEnd, ErrorCode>,
});

/// OffsetForLeaderEpoch for one partition: where `leader_epoch` ends in
/// the leader's log (the largest epoch not above it, and its end offset).
#[derive(Debug)]
pub struct FindEpochEnd {
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
}

impl FindEpochEnd {
    fn undelivered_reply(&self) -> Result<EpochEnd, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

/// Append a producer's record set to a partition the target shard owns.
#[derive(Debug)]
pub struct Append {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
    pub acks: i16,
    /// acks=all: how long to wait for the ISR (the request's timeout).
    pub timeout_ms: u64,
}

impl Append {
    fn undelivered_reply(&self) -> Result<AppendOutcome, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

/// Write a transaction's commit or abort marker to a partition this shard
/// leads, after every append queued before it, and wait until it is in the
/// ISR (Kafka writes markers with acks=all). INVALID_PRODUCER_EPOCH: the
/// producer has a newer epoch here (a marker from before a fence).
#[derive(Debug)]
pub struct WriteMarker {
    pub topic: String,
    pub partition: i32,
    pub marker: engine::record::TxnMarker,
    pub timeout_ms: u64,
}

impl WriteMarker {
    fn undelivered_reply(&self) -> Result<AppendOutcome, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

/// Read whole batches from each partition's offset (one message per owning
/// shard for a whole Fetch). With `wait`, a read that finds too little
/// parks on the owning shard (a Fetch long-poll) and reads again.
#[derive(Debug)]
pub struct Read {
    pub reads: Vec<PartitionRead>,
    pub wait: Option<FetchWait>,
    /// A follower's fetch (its node id): reads go to the log end, and its
    /// positions count for the leader's ISR and high watermark.
    pub replica_id: Option<i32>,
    /// A consumer's read_committed fetch: reads stop at the last stable
    /// offset and list the aborted transactions they overlap.
    pub read_committed: bool,
}

/// Where a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// The written log end: a follower's fetch.
    LogEnd,
    /// The high watermark: read_uncommitted consumers, the broker's own
    /// readers of committed data.
    HighWatermark,
    /// The last stable offset: read_committed consumers.
    LastStable,
}

impl Read {
    pub fn bound(&self) -> ReadBound {
        match (self.replica_id, self.read_committed) {
            (Some(_), _) => ReadBound::LogEnd,
            (None, true) => ReadBound::LastStable,
            (None, false) => ReadBound::HighWatermark,
        }
    }

    fn undelivered_reply(&self) -> Vec<Result<ReadOutcome, ErrorCode>> {
        self.reads
            .iter()
            .map(|_| Err(codes::UNKNOWN_SERVER_ERROR))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct PartitionRead {
    /// Shared by every partition of the topic in one Fetch.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// The leader epoch the client believes current (-1: none).
    pub current_leader_epoch: i32,
    /// A follower's: the epoch of its last batch (-1: none).
    pub last_fetched_epoch: i32,
}

/// How long a parked read may wait, and for how much. `(origin, id)` names
/// the fetch (origin: the connection's shard) for [`EndWait`].
#[derive(Debug, Clone, Copy)]
pub struct FetchWait {
    pub origin: usize,
    pub id: u64,
    pub timeout_ms: u64,
    pub min_bytes: usize,
}

#[derive(Debug)]
pub struct ReadOutcome {
    /// Whole batches to send from the segment file; None when there is
    /// nothing to read at the offset yet.
    pub records: Option<FileSlice>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: the aborted transactions the records may overlap.
    pub aborted: Vec<engine::txn::AbortedTxn>,
    /// A follower's log diverged: where its epoch ends on the leader.
    pub diverging_epoch: Option<EpochEnd>,
}

/// Record bytes found by a set of reads.
pub fn found_record_bytes(outcomes: &[Result<ReadOutcome, ErrorCode>]) -> usize {
    outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok()?.records.as_ref())
        .map(|slice| slice.len as usize)
        .sum()
}

/// The fetch `(origin, id)` has enough data from other shards: a read of it
/// still parked on the target answers now with what it has.
#[derive(Debug)]
pub struct EndWait {
    pub origin: usize,
    pub id: u64,
}

impl EndWait {
    fn undelivered_reply(&self) {}
}

/// ListOffsets for one partition (-1 latest, -2 earliest, -3 max
/// timestamp, >= 0 by time).
#[derive(Debug)]
pub struct ListOffset {
    pub topic: String,
    pub partition: i32,
    pub timestamp_ms: i64,
    pub read_committed: bool,
}

impl ListOffset {
    fn undelivered_reply(&self) -> Result<ListedOffset, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

/// An offset found by ListOffsets, with its record's timestamp (-1 when
/// the lookup is not by time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// DeleteRecords for one partition; the reply is the new log start offset.
#[derive(Debug)]
pub struct DeleteRecords {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl DeleteRecords {
    fn undelivered_reply(&self) -> Result<i64, ErrorCode> {
        Err(codes::UNKNOWN_SERVER_ERROR)
    }
}

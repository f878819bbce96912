//! One partition's log as decisions: segments, sparse indexes, append and read
//! planning, roll, recovery scanning, compaction. No I/O here: the shard that
//! owns the partition reads and writes the files and reports back.

mod checkpoint;
mod compaction;
mod index;
mod partition_log;
mod read;
mod recovery;
mod segment;

pub use checkpoint::{ActiveCheckpoint, CheckpointError};
pub use compaction::{compact_batch, compact_segment, CompactedBatch, OffsetMap};
pub use index::{
    OffsetIndex, OffsetIndexEntry, TimeIndex, TimeIndexEntry, OFFSET_INDEX_ENTRY_BYTES,
    TIME_INDEX_ENTRY_BYTES,
};
pub use partition_log::{AppendError, AppendPlan, LogConfig, PartitionLog, ReadError, ReadStart};
pub use read::{select_batches, BatchSelection};
pub use recovery::{
    classify_damage, find_valid_batch, scan_into_segment, BatchSearch, Damage, ScanOutcome,
    ScanStop,
};
pub use segment::{parse_segment_file_name, segment_file_stem, ReadEnd, Segment, SegmentEnd};

#[cfg(test)]
pub(crate) mod testing;

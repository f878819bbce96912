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

pub use checkpoint::*;
pub use compaction::*;
pub use index::*;
pub use partition_log::*;
pub use read::*;
pub use recovery::*;
pub use segment::*;

#[cfg(test)]
pub(crate) mod testing;

//! L1: files. Segment files and their indexes, recovery after a crash, the
//! compaction swap, the metadata log, O_DIRECT appends, and THE durable
//! write helper that every small must-survive file goes through.

pub mod compaction_swap;
pub mod direct_appender;
pub mod durable;
pub mod producer_snapshots;
pub mod quorum_log;
pub mod recovery;
pub mod segment_files;

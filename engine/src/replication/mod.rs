//! Kafka's ISR replication for one partition, as pure decisions
//! (DESIGN.md §5): the leader-epoch cache, the leader's view of its
//! followers (ISR, high watermark), and the follower's truncation. The
//! replica fetchers in `shards` carry them out with real fetches and files.

mod epoch_cache;
mod follower;
mod leader;

pub use epoch_cache::{EpochCache, EpochEnd, EpochEntry, UNDEFINED_EPOCH, UNDEFINED_OFFSET};
pub use follower::{check_fetch, truncation_point, FetchCheck, Truncation};
pub use leader::{IsrChange, LeaderState, ReplicaId};

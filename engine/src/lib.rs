//! Gregor's deterministic core: Kafka wire codecs, RecordBatch v2, one
//! partition's log as decisions, and the cluster metadata image. No sockets,
//! files, clocks or runtime here (DESIGN.md §1): everything is unit- and
//! property-testable, and `shards` drives it with real I/O.

pub mod group;
pub mod log;
pub mod metadata;
pub mod protocol;
pub mod raft;
pub mod record;
pub mod replication;
pub mod reserving_alloc;
pub mod txn;

// Tests run under the broker's allocator, so decoder tests see what it sees.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: reserving_alloc::ReservingAllocator = reserving_alloc::ReservingAllocator;

#[cfg(test)]
mod no_panic_tests;
#[cfg(test)]
mod sim;

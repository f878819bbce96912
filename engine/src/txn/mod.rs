//! Producer state (idempotence) today; the transaction coordinator and the
//! aborted-transaction index will sit beside it.

pub mod producer_ids;
pub mod producer_state;

pub use producer_ids::{ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE};
pub use producer_state::{
    BatchIdentity, ProducerStates, SequenceVerdict, SnapshotError, PRODUCERS_PER_PARTITION_MAX,
    PRODUCER_BATCHES_KEPT, PRODUCER_ID_EXPIRATION_MS_DEFAULT,
};

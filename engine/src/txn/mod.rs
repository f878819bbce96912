//! Producer state (idempotence) and the transaction coordinator's
//! decisions; the aborted-transaction index will sit beside them.

pub mod coordinator;
pub mod log_records;
pub mod producer_ids;
pub mod producer_state;

pub use coordinator::{
    AfterWrite, Decision, ProducerIdEpoch, TxnCoordinator, TxnMarkers, TxnPartition, TxnRecord,
    TxnState, TxnVersion, TxnWrite, TRANSACTION_MAX_TIMEOUT_MS_DEFAULT,
};
pub use log_records::{
    transaction_state_partition_for, TxnLogRecord, TRANSACTION_STATE_PARTITIONS_DEFAULT,
    TRANSACTION_STATE_TOPIC,
};
pub use producer_ids::{ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE};
pub use producer_state::{
    BatchIdentity, ProducerStates, SequenceVerdict, SnapshotError, PRODUCERS_PER_PARTITION_MAX,
    PRODUCER_BATCHES_KEPT, PRODUCER_ID_EXPIRATION_MS_DEFAULT,
};

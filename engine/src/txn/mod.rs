//! Producer state (idempotence), the transaction coordinator's decisions
//! and its `__transaction_state` records, and a partition's transactions
//! (open ones, the last stable offset, the aborted ones).

pub mod coordinator;
pub mod log_records;
pub mod partition_txns;
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
pub use partition_txns::{AbortedTxn, PartitionTxns};
pub use producer_ids::{ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE};
pub use producer_state::{
    BatchIdentity, ProducerStates, SequenceVerdict, SnapshotError, PRODUCERS_PER_PARTITION_MAX,
    PRODUCER_BATCHES_KEPT, PRODUCER_ID_EXPIRATION_MS_DEFAULT,
};

//! Transaction coordinator ops, served by the shard that leads the
//! transactional id's `__transaction_state` partition. An `Err` is the
//! answer for the whole request (NOT_COORDINATOR, CONCURRENT_TRANSACTIONS,
//! PRODUCER_FENCED, ...).

use engine::protocol::{self as codes, ErrorCode};
use engine::txn::{ProducerIdEpoch, TxnPartition, TxnRecord, TxnState, TxnVersion};

use super::subsystem;

subsystem!(Txn, TxnRequest, TxnReply {
    InitTxnProducer => Result<ProducerIdEpoch, ErrorCode>,
    AddTxnPartitions => Result<(), ErrorCode>,
    EndTxn => Result<ProducerIdEpoch, ErrorCode>,
    DescribeTxn => Result<TxnRecord, ErrorCode>,
    ListTxns => Result<Vec<TxnListing>, ErrorCode>,
});

/// InitProducerId with a transactional id.
#[derive(Debug)]
pub struct InitTxnProducer {
    pub transactional_id: String,
    pub timeout_ms: i32,
    /// The producer id and epoch the client already has (KIP-360).
    pub expected: Option<ProducerIdEpoch>,
}

impl InitTxnProducer {
    fn undelivered_reply(&self) -> Result<ProducerIdEpoch, ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

/// AddPartitionsToTxn and AddOffsetsToTxn (whose partition is the group's
/// `__consumer_offsets` partition); `verify_only` is KIP-890's check from a
/// partition leader.
#[derive(Debug)]
pub struct AddTxnPartitions {
    pub transactional_id: String,
    pub producer: ProducerIdEpoch,
    pub partitions: Vec<TxnPartition>,
    pub verify_only: bool,
}

impl AddTxnPartitions {
    fn undelivered_reply(&self) -> Result<(), ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

/// EndTxn: commit or abort.
#[derive(Debug)]
pub struct EndTxn {
    pub transactional_id: String,
    pub producer: ProducerIdEpoch,
    pub commit: bool,
    pub version: TxnVersion,
}

impl EndTxn {
    fn undelivered_reply(&self) -> Result<ProducerIdEpoch, ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

/// DescribeTransactions of one id, at its coordinator.
#[derive(Debug)]
pub struct DescribeTxn {
    pub transactional_id: String,
}

impl DescribeTxn {
    fn undelivered_reply(&self) -> Result<TxnRecord, ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

/// ListTransactions at one shard: the ids it coordinates that pass every
/// filter given (an empty list filters nothing; `running_longer_than_ms`
/// -1 neither).
#[derive(Debug)]
pub struct ListTxns {
    pub states: Vec<TxnState>,
    pub producer_ids: Vec<i64>,
    pub running_longer_than_ms: i64,
}

impl ListTxns {
    fn undelivered_reply(&self) -> Result<Vec<TxnListing>, ErrorCode> {
        Err(codes::COORDINATOR_NOT_AVAILABLE)
    }
}

#[derive(Debug)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

//! Transaction coordinator ops, served by the shard that leads the
//! transactional id's `__transaction_state` partition. An `Err` is the
//! answer for the whole request (NOT_COORDINATOR, CONCURRENT_TRANSACTIONS,
//! PRODUCER_FENCED, ...).

use engine::protocol::{self as codes, ErrorCode};
use engine::txn::{ProducerIdEpoch, TxnPartition, TxnVersion};

use super::subsystem;

subsystem!(Txn, TxnRequest, TxnReply {
    InitTxnProducer => Result<ProducerIdEpoch, ErrorCode>,
    AddTxnPartitions => Result<(), ErrorCode>,
    EndTxn => Result<ProducerIdEpoch, ErrorCode>,
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

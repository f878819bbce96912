//! What the transaction coordinator's host asks of the broker, served by
//! the shard over the mesh: producer ids (shard 0 hands them out) and
//! markers written to partitions of this broker.

use std::rc::Rc;

use engine::protocol::ErrorCode;
use engine::record::TxnMarker;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::Shard;
use crate::mesh::admin::AllocateProducerId;
use crate::mesh::data::WriteMarker;
use crate::txns::TxnServices;

impl TxnServices for Shard {
    fn allocate_producer_id(self: Rc<Self>) -> LocalBoxFuture<'static, Result<i64, ErrorCode>> {
        async move { self.call(0, AllocateProducerId).await }.boxed_local()
    }

    fn write_marker(
        self: Rc<Self>,
        topic: String,
        partition: i32,
        marker: TxnMarker,
        timeout_ms: u64,
    ) -> LocalBoxFuture<'static, Result<(), ErrorCode>> {
        let shard = self;
        async move {
            // A partition led by another broker is not reachable yet: the
            // marker is retried (inter-broker WriteTxnMarkers comes with
            // transactions across a cluster).
            let owner = shard.route(&topic, partition)?;
            let op = WriteMarker {
                topic,
                partition,
                marker,
                timeout_ms,
            };
            shard.call(owner, op).await.map(|_| ())
        }
        .boxed_local()
    }
}

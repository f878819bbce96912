//! L3: one shard, the composition root of one core. It owns (through the
//! controller's backend) the partitions placed on this core, hosts the
//! group and transaction coordinators and, on shard 0, the controller, parks fetch
//! long-polls, and serves the ops other shards send it over the mesh.

mod fetch_parking;
mod isr;
mod maintenance;
mod metrics_snapshot;
mod offline;
mod txn_services;

pub use offline::OfflinePartitions;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use engine::metadata::ClusterImage;
use engine::protocol::{self as codes, ErrorCode};
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tracing::{error, warn};

use crate::cluster::kafka_client::BrokerLinks;
use crate::config::BrokerConfig;
use crate::controller::{Backend, Controller};
use crate::groups::GroupHost;
use crate::io::splice::SpliceRing;
use crate::mesh::admin::AdminRequest;
use crate::mesh::data::{
    Append, AppendOutcome, DataRequest, DeleteRecords, EndWait, FindEpochEnd, ListOffset,
    ListedOffset, Read, WriteMarker,
};
use crate::mesh::metadata::{ApplyMetadata, MetadataRequest, OfflineHere, OfflineReport};
use crate::mesh::metrics::{LogDirSizes, MetricsRequest, PartitionSize, TakeSnapshot};
use crate::mesh::{Call, Mesh, MeshMessage, Reply, Request};
use crate::metrics::ShardMetrics;
use crate::partition::Partition;
use crate::stop::StopFlag;
use crate::txns::{TxnHost, TxnServices};

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Rc<BrokerConfig>,
    /// This core's metadata image and owned partitions.
    pub backend: Rc<Backend>,
    pub mesh: Rc<Mesh>,
    /// The metadata controller: on shard 0 only.
    pub controller: Option<Rc<Controller>>,
    pub groups: Rc<GroupHost>,
    /// The transaction coordinator's host (its services are this shard).
    pub txns: Rc<TxnHost>,
    /// Fetch long-polls parked on this shard, by (origin shard, fetch id):
    /// the sender ends the wait early (see `EndWait`).
    parked_fetches: RefCell<HashMap<(usize, u64), oneshot::Sender<()>>>,
    next_fetch_id: Cell<u64>,
    /// Bytes of requests in flight on this shard (see `shard_request_bytes_max`).
    pub request_memory: Rc<glommio::sync::Semaphore>,
    pub stop: StopFlag,
    pub metrics: ShardMetrics,
    /// Zero-copy sends of fetched record sets (see `io::splice`).
    pub splice: Rc<SpliceRing>,
    /// Connections to other brokers' shards for inter-broker requests
    /// (transaction markers and verifications).
    pub broker_links: BrokerLinks,
}

/// What a shard is made of; `Shard::new` wires them together.
pub struct ShardParts {
    pub config: Rc<BrokerConfig>,
    pub backend: Rc<Backend>,
    pub mesh: Rc<Mesh>,
    pub controller: Option<Rc<Controller>>,
    pub groups: Rc<GroupHost>,
    pub txns: Rc<TxnHost>,
    pub stop: StopFlag,
    pub splice: Rc<SpliceRing>,
}

impl Shard {
    pub fn new(parts: ShardParts) -> Rc<Shard> {
        let request_bytes_max = parts.config.shard_request_bytes_max as u64;
        let shard = Rc::new(Shard {
            id: parts.backend.shard_id,
            count: parts.backend.shard_count,
            config: parts.config,
            backend: parts.backend,
            mesh: parts.mesh,
            controller: parts.controller,
            groups: parts.groups,
            txns: parts.txns,
            parked_fetches: RefCell::new(HashMap::new()),
            next_fetch_id: Cell::new(0),
            request_memory: Rc::new(glommio::sync::Semaphore::new(request_bytes_max)),
            stop: parts.stop,
            metrics: ShardMetrics::default(),
            splice: parts.splice,
            broker_links: BrokerLinks::default(),
        });
        let weak: std::rc::Weak<Shard> = Rc::downgrade(&shard);
        let services: std::rc::Weak<dyn TxnServices> = weak;
        shard.txns.set_services(services);
        shard
    }

    pub fn image(&self) -> std::cell::Ref<'_, ClusterImage> {
        self.backend.image()
    }

    pub fn route(&self, topic: &str, partition: i32) -> Result<usize, ErrorCode> {
        self.backend.route(topic, partition)
    }

    /// `route` for many partitions of one topic, looking the topic up once.
    pub fn route_all(
        &self,
        topic: &str,
        partitions: impl Iterator<Item = i32>,
    ) -> Vec<Result<usize, ErrorCode>> {
        self.backend.route_all(topic, partitions)
    }

    /// Runs `op` on shard `target`: inline when it is this shard, otherwise
    /// over the mesh. The send happens before this returns (so callers that
    /// await it in order keep their order); the returned future waits for
    /// the answer.
    pub async fn dispatch<C: Call + 'static>(
        self: &Rc<Self>,
        target: usize,
        op: C,
    ) -> LocalBoxFuture<'static, C::Reply> {
        if target != self.id {
            return self.mesh.send(target, op).await.boxed_local();
        }
        let undelivered = op.undelivered();
        let reply = self.clone().serve(op.into_request());
        async move {
            C::unwrap_reply(reply.await).unwrap_or_else(|| {
                error!(op = std::any::type_name::<C>(), "reply of another op");
                undelivered
            })
        }
        .boxed_local()
    }

    pub async fn call<C: Call + 'static>(self: &Rc<Self>, target: usize, op: C) -> C::Reply {
        self.dispatch(target, op).await.await
    }

    /// Starts an op on this shard. Appends enqueue synchronously, here, so
    /// that they keep the order in which they arrived; a parked read is
    /// registered before anything awaits, so an EndWait sent after it (mesh
    /// queues keep order) always finds it.
    fn serve(self: Rc<Self>, request: Request) -> LocalBoxFuture<'static, Reply> {
        match request {
            Request::Data(DataRequest::Append(op)) => {
                let records = op.records;
                let appended =
                    self.start_write(&op.topic, op.partition, op.acks, op.timeout_ms, |p| {
                        p.enqueue(records)
                    });
                async move { Append::wrap_reply(appended.await) }.boxed_local()
            }
            Request::Data(DataRequest::WriteMarker(op)) => {
                let marker = op.marker;
                let written = self.start_write(&op.topic, op.partition, -1, op.timeout_ms, |p| {
                    p.enqueue_marker(marker)
                });
                async move {
                    let written = written.await;
                    if written.is_ok() && op.topic == engine::group::OFFSETS_TOPIC {
                        // The group's offsets in this transaction settle.
                        self.groups.txn_marker_written(
                            op.partition,
                            marker.producer_id,
                            marker.commit,
                        );
                    }
                    WriteMarker::wrap_reply(written)
                }
                .boxed_local()
            }
            Request::Data(DataRequest::Read(read)) => {
                let bound = read.bound();
                let Read {
                    reads,
                    wait,
                    replica_id,
                    ..
                } = read;
                let wait = wait.map(|w| {
                    let (sender, receiver) = oneshot::channel();
                    self.parked_fetches
                        .borrow_mut()
                        .insert((w.origin, w.id), sender);
                    (w, receiver)
                });
                async move {
                    Read::wrap_reply(self.read_partitions(&reads, replica_id, bound, wait).await)
                }
                .boxed_local()
            }
            Request::Data(DataRequest::EndWait(EndWait { origin, id })) => {
                if let Some(end) = self.parked_fetches.borrow_mut().remove(&(origin, id)) {
                    let _ = end.send(());
                }
                async { EndWait::wrap_reply(()) }.boxed_local()
            }
            Request::Data(DataRequest::ListOffset(op)) => async move {
                let listed = match self.backend.partition(&op.topic, op.partition) {
                    Some(p) => p.list_offset(op.timestamp_ms, op.read_committed).await.map(
                        |(offset, timestamp_ms)| ListedOffset {
                            offset,
                            timestamp_ms,
                        },
                    ),
                    None => Err(self.backend.absent_partition_error(&op.topic, op.partition)),
                };
                ListOffset::wrap_reply(listed)
            }
            .boxed_local(),
            Request::Data(DataRequest::FindEpochEnd(op)) => {
                let found = match self.backend.partition(&op.topic, op.partition) {
                    Some(p) if p.is_leader() => Ok(p.epoch_end(op.leader_epoch)),
                    _ => Err(codes::NOT_LEADER_OR_FOLLOWER),
                };
                async move { FindEpochEnd::wrap_reply(found) }.boxed_local()
            }
            Request::Data(DataRequest::DeleteRecords(op)) => async move {
                let deleted = match self.backend.partition(&op.topic, op.partition) {
                    Some(p) => p.delete_records(op.offset).await,
                    None => Err(self.backend.absent_partition_error(&op.topic, op.partition)),
                };
                DeleteRecords::wrap_reply(deleted)
            }
            .boxed_local(),
            Request::Admin(request) => async move {
                match &self.controller {
                    Some(controller) => controller.serve(request).await,
                    None => not_the_controller(request),
                }
            }
            .boxed_local(),
            Request::Group(request) => {
                async move { self.groups.serve(request).await }.boxed_local()
            }
            Request::Txn(request) => async move { self.txns.serve(request).await }.boxed_local(),
            Request::Metadata(MetadataRequest::ApplyMetadata(op)) => async move {
                self.backend.apply(&op.record).await;
                ApplyMetadata::wrap_reply(())
            }
            .boxed_local(),
            Request::Metadata(MetadataRequest::OfflineHere(op)) => async move {
                let settled = match (&op.topics, op.settle) {
                    (Some(topics), true) => self.wait_settled(topics).await,
                    _ => true,
                };
                OfflineHere::wrap_reply(OfflineReport {
                    settled,
                    partitions: self.backend.offline_here(op.topics.as_deref()),
                })
            }
            .boxed_local(),
            Request::Metrics(MetricsRequest::TakeSnapshot(_)) => {
                let snapshot = Box::new(self.metrics_snapshot());
                async move { TakeSnapshot::wrap_reply(Some(snapshot)) }.boxed_local()
            }
            Request::Metrics(MetricsRequest::LogDirSizes(_)) => {
                let sizes = self
                    .backend
                    .owned_partitions()
                    .iter()
                    .map(|p| PartitionSize {
                        topic: p.topic.clone(),
                        partition: p.index,
                        size_bytes: p.size_bytes(),
                    })
                    .collect();
                async move { LogDirSizes::wrap_reply(sizes) }.boxed_local()
            }
        }
    }

    /// Queues an append on its partition now; the future resolves once it is
    /// written, and for acks=all synced by the partition's group commit.
    /// Queues a write (a producer's records, a marker) on a partition
    /// this shard owns, synchronously so writes keep arrival order; the
    /// future answers once it is written (acks=all: in the ISR).
    fn start_write(
        &self,
        topic: &str,
        partition: i32,
        acks: i16,
        timeout_ms: u64,
        enqueue: impl FnOnce(&Rc<Partition>) -> oneshot::Receiver<Result<AppendOutcome, ErrorCode>>,
    ) -> LocalBoxFuture<'static, Result<AppendOutcome, ErrorCode>> {
        let Some(owned) = self.backend.partition(topic, partition) else {
            let code = self.backend.absent_partition_error(topic, partition);
            return async move { Err(code) }.boxed_local();
        };
        if acks == -1 {
            if let Err(code) = owned.enough_replicas() {
                return async move { Err(code) }.boxed_local();
            }
        }
        let written = enqueue(&owned);
        async move {
            let outcome = written.await.unwrap_or(Err(codes::UNKNOWN_SERVER_ERROR));
            let Ok(appended) = &outcome else {
                return outcome;
            };
            if acks == -1 {
                owned
                    .wait_acks_all(appended.base_offset, timeout_ms)
                    .await?;
            }
            outcome
        }
        .boxed_local()
    }

    /// A new id for a fetch started on this shard (see `FetchWait`).
    pub fn next_fetch_id(&self) -> u64 {
        let id = self.next_fetch_id.get();
        self.next_fetch_id.set(id + 1);
        id
    }

    /// Serves a message from shard `peer`: a request runs and its reply goes
    /// back; a response completes the caller waiting for it.
    pub fn handle_mesh_message(self: &Rc<Self>, peer: usize, message: MeshMessage) {
        match message {
            MeshMessage::Request { id, request } => {
                let reply = self.clone().serve(request);
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let reply = reply.await;
                    if !shard.mesh.respond(peer, id, reply).await {
                        warn!(shard = shard.id, peer, "mesh peer gone; reply dropped");
                    }
                })
                .detach();
            }
            MeshMessage::Response { id, reply } => self.mesh.complete(id, reply),
        }
    }
}

/// Admin ops reach only the controller (shard 0); anything else is a bug
/// in the sender, answered as an undelivered op.
fn not_the_controller(request: AdminRequest) -> Reply {
    error!("an admin op reached a shard without the controller");
    Reply::Admin(request.refusal(codes::UNKNOWN_SERVER_ERROR))
}

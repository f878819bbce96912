//! L1: messages between shards. The mesh (glommio channel_mesh: bounded,
//! lock-free SPSC queues) is the only way shards talk (DESIGN.md §3).
//!
//! Every op is a struct of its subsystem's file (`data`, `admin`, `groups`,
//! `metadata`, `metrics`, `txns`) that implements [`Call`]: its reply type, and the
//! reply a caller gets when the op cannot be delivered. A caller sends an
//! op and gets exactly its reply type back; the wire enums below carry them
//! between shards and are matched in one place each (`Call::unwrap_reply`,
//! and the serving shard's dispatch).

pub mod admin;
pub mod data;
pub mod groups;
pub mod metadata;
pub mod metrics;
pub mod routing;
pub mod txns;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures::channel::oneshot;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use tracing::error;

/// Capacity of each shard-to-shard queue; a full queue makes the sender wait.
pub const MESH_QUEUE_CAPACITY: usize = 1024;

/// One op of any subsystem, as it travels.
#[derive(Debug)]
pub enum Request {
    Data(data::DataRequest),
    Admin(admin::AdminRequest),
    Group(groups::GroupRequest),
    Metadata(metadata::MetadataRequest),
    Metrics(metrics::MetricsRequest),
    Txn(txns::TxnRequest),
}

/// One op's reply, as it travels back.
#[derive(Debug)]
pub enum Reply {
    Data(data::DataReply),
    Admin(admin::AdminReply),
    Group(groups::GroupReply),
    Metadata(metadata::MetadataReply),
    Metrics(metrics::MetricsReply),
    Txn(txns::TxnReply),
}

#[derive(Debug)]
pub enum MeshMessage {
    Request { id: u64, request: Request },
    Response { id: u64, reply: Reply },
}

/// An op one shard asks of another, with its own reply type.
pub trait Call: Sized {
    type Reply;
    fn into_request(self) -> Request;
    /// This op's reply out of the wire enum. None only if the serving side
    /// answered another op's reply: a bug, logged by the caller.
    fn unwrap_reply(reply: Reply) -> Option<Self::Reply>;
    /// Wraps this op's reply for the wire (the serving side).
    fn wrap_reply(reply: Self::Reply) -> Reply;
    /// What the caller gets when the op cannot be delivered or answered
    /// (the peer shard is gone).
    fn undelivered(&self) -> Self::Reply;
}

/// Declares a subsystem's request and reply enums and each op's [`Call`]
/// impl: `Op => ReplyType`, the undelivered reply in `Op::undelivered_reply`.
/// Attributes before the name go on both enums (admin ops also travel
/// between brokers, so they derive rkyv).
macro_rules! subsystem {
    ($(#[$attr:meta])* $outer:ident, $request:ident, $reply:ident { $($op:ident => $out:ty,)* }) => {
        #[derive(Debug)]
        $(#[$attr])*
        pub enum $request { $($op($op),)* }
        #[derive(Debug)]
        $(#[$attr])*
        pub enum $reply { $($op($out),)* }
        $(
            impl $crate::mesh::Call for $op {
                type Reply = $out;
                fn into_request(self) -> $crate::mesh::Request {
                    $crate::mesh::Request::$outer($request::$op(self))
                }
                #[allow(unreachable_patterns)]
                fn unwrap_reply(reply: $crate::mesh::Reply) -> Option<$out> {
                    match reply {
                        $crate::mesh::Reply::$outer($reply::$op(r)) => Some(r),
                        _ => None,
                    }
                }
                fn wrap_reply(reply: $out) -> $crate::mesh::Reply {
                    $crate::mesh::Reply::$outer($reply::$op(reply))
                }
                fn undelivered(&self) -> $out {
                    self.undelivered_reply()
                }
            }
        )*
    };
}
pub(crate) use subsystem;

/// One shard's ends of the mesh's channels, made on the main thread before
/// the shards start (one bounded channel per ordered pair of shards).
/// glommio's `MeshBuilder::join` hands a notification between executors
/// that was lost now and then at start-up (every shard stuck joining, for
/// good); connecting pre-made channels needs no notification: each end
/// polls until its peer has connected.
pub struct MeshEnds {
    shard_id: usize,
    /// Indexed by the peer shard (None: this shard).
    senders: Vec<Option<SharedSender<MeshMessage>>>,
    receivers: Vec<Option<SharedReceiver<MeshMessage>>>,
}

/// The ends of every shard, by shard id.
pub fn build_mesh(shard_count: usize, capacity: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shard_count)
        .map(|shard_id| MeshEnds {
            shard_id,
            senders: (0..shard_count).map(|_| None).collect(),
            receivers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in (0..shard_count).filter(|&to| to != from) {
            let (sender, receiver) = shared_channel::new_bounded(capacity);
            ends[from].senders[to] = Some(sender);
            ends[to].receivers[from] = Some(receiver);
        }
    }
    ends
}

/// Connected senders by peer, and a receiver from every peer.
pub type ConnectedMesh = (
    Vec<Option<ConnectedSender<MeshMessage>>>,
    Vec<(usize, ConnectedReceiver<MeshMessage>)>,
);

impl MeshEnds {
    /// Connects every end; returns once every peer connected its side.
    pub async fn connect(self) -> ConnectedMesh {
        let senders = self.senders.into_iter().map(|end| async move {
            match end {
                Some(end) => Some(end.connect().await),
                None => None,
            }
        });
        let receivers = self
            .receivers
            .into_iter()
            .enumerate()
            .filter_map(|(peer, end)| end.map(|end| (peer, end)))
            .map(|(peer, end)| async move { (peer, end.connect().await) });
        let (senders, receivers) = futures::future::join(
            futures::future::join_all(senders),
            futures::future::join_all(receivers),
        )
        .await;
        debug_assert_eq!(
            senders.len(),
            receivers.len() + 1,
            "shard {}",
            self.shard_id
        );
        (senders, receivers)
    }
}

/// This shard's side of the mesh: the senders to every peer and the callers
/// waiting for their answers, by request id.
pub struct Mesh {
    pub shard_id: usize,
    pub shard_count: usize,
    senders: Vec<Option<ConnectedSender<MeshMessage>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_request_id: Cell<u64>,
    /// Requests sent to other shards (a metric).
    pub hops: Cell<u64>,
}

impl Mesh {
    pub fn new(
        shard_id: usize,
        shard_count: usize,
        senders: Vec<Option<ConnectedSender<MeshMessage>>>,
    ) -> Mesh {
        Mesh {
            shard_id,
            shard_count,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(0),
            hops: Cell::new(0),
        }
    }

    /// Sends `op` to another shard. The send happens before this returns
    /// (so callers that await it in order keep their order); the returned
    /// future waits for the answer.
    pub async fn send<C: Call + 'static>(
        &self,
        target: usize,
        op: C,
    ) -> impl std::future::Future<Output = C::Reply> + 'static {
        assert_ne!(target, self.shard_id, "a shard runs its own ops inline");
        self.hops.set(self.hops.get() + 1);
        let undelivered = op.undelivered();
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (sender, receiver) = oneshot::channel();
        self.pending.borrow_mut().insert(id, sender);
        let request = op.into_request();
        let sent = self
            .send_to(target, MeshMessage::Request { id, request })
            .await;
        if !sent {
            self.pending.borrow_mut().remove(&id);
        }
        async move {
            if !sent {
                return undelivered;
            }
            match receiver.await {
                Ok(reply) => C::unwrap_reply(reply).unwrap_or_else(|| {
                    error!(op = std::any::type_name::<C>(), "mesh reply of another op");
                    undelivered
                }),
                Err(_) => undelivered,
            }
        }
    }

    /// Sends the answer to request `id` back to `peer`.
    pub async fn respond(&self, peer: usize, id: u64, reply: Reply) -> bool {
        self.send_to(peer, MeshMessage::Response { id, reply })
            .await
    }

    /// Whether the message was queued (false: the peer is gone).
    async fn send_to(&self, target: usize, message: MeshMessage) -> bool {
        match self.senders.get(target) {
            Some(Some(sender)) => sender.send(message).await.is_ok(),
            _ => false,
        }
    }

    /// Completes the caller waiting for request `id`.
    pub fn complete(&self, id: u64, reply: Reply) {
        if let Some(waiter) = self.pending.borrow_mut().remove(&id) {
            let _ = waiter.send(reply);
        }
    }

    pub fn close(&self) {
        for sender in self.senders.iter().flatten() {
            sender.close();
        }
    }
}

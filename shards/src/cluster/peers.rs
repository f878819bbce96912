//! Shard 0's connections to the other voters' controller listeners. One
//! connection per peer, opened by this node and reopened after a failure
//! (with a growing pause), carries this node's raft messages and requests to
//! that peer, and brings back the replies. Raft messages are dropped when a
//! peer's queue is full or it is unreachable: raft resends what matters,
//! and a quorum driver must never wait on a slow peer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use engine::raft::{encode_message, QuorumMessage};
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use tracing::{debug, info, warn};

use super::wire::{
    decode_reply, encode_frame, encode_request, read_frame, write_frame, ControllerReply,
    ControllerRequest, FrameKind,
};
use crate::clock::with_timeout;
use crate::config::QuorumVoter;
use crate::controller::{node_id_of, QuorumTransport};
use crate::disk::durable::off_shard;
use crate::stop::StopFlag;

/// Frames queued for one peer; past this, raft messages are dropped and
/// requests refused.
const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Requests to one peer waiting for their replies.
const PEER_CALLS_IN_FLIGHT_MAX: usize = 256;
const CONNECT_TIMEOUT_MS: u64 = 1_000;
const RECONNECT_PAUSE_MS_MIN: u64 = 50;
const RECONNECT_PAUSE_MS_MAX: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("node {0} is not a quorum voter")]
    UnknownPeer(i32),
    #[error("too many requests waiting for node {0}")]
    Busy(i32),
    #[error("node {0} did not answer")]
    NoAnswer(i32),
}

struct PeerLink {
    node_id: i32,
    address: String,
    queue: LocalSender<Vec<u8>>,
    /// Callers waiting for replies, by correlation.
    calls: RefCell<HashMap<u64, oneshot::Sender<ControllerReply>>>,
    /// Whether the connection is up (for the first-connect log line).
    connected: Cell<bool>,
}

pub struct ControllerPeers {
    links: HashMap<i32, Rc<PeerLink>>,
    next_correlation: Cell<u64>,
}

impl ControllerPeers {
    /// Links to every voter but `this_node`; their connection tasks run in
    /// `task_queue` until `stop`.
    pub fn start(
        this_node: i32,
        voters: &[QuorumVoter],
        task_queue: glommio::TaskQueueHandle,
        stop: StopFlag,
    ) -> Rc<ControllerPeers> {
        let mut links = HashMap::new();
        for voter in voters.iter().filter(|v| v.node_id != this_node) {
            let (queue, outgoing) = local_channel::new_bounded(PEER_QUEUE_FRAMES_MAX);
            let link = Rc::new(PeerLink {
                node_id: voter.node_id,
                address: voter.address.clone(),
                queue,
                calls: RefCell::new(HashMap::new()),
                connected: Cell::new(false),
            });
            let task = glommio::spawn_local_into(
                keep_connected(link.clone(), outgoing, stop.clone()),
                task_queue,
            );
            match task {
                Ok(task) => {
                    task.detach();
                }
                Err(e) => warn!(error = %e, "cannot start a controller link task"),
            }
            links.insert(voter.node_id, link);
        }
        Rc::new(ControllerPeers {
            links,
            next_correlation: Cell::new(1),
        })
    }

    /// Sends `request` to `node`'s controller and waits for its reply.
    pub async fn call(
        &self,
        node: i32,
        request: &ControllerRequest,
        timeout_ms: u64,
    ) -> Result<ControllerReply, CallError> {
        let link = self.links.get(&node).ok_or(CallError::UnknownPeer(node))?;
        if !link.connected.get() {
            // Queued, it would wait for a peer that may be gone for good
            // (a dead leader): the caller retries where the quorum points.
            return Err(CallError::NoAnswer(node));
        }
        if link.calls.borrow().len() >= PEER_CALLS_IN_FLIGHT_MAX {
            return Err(CallError::Busy(node));
        }
        let correlation = self.next_correlation.get();
        self.next_correlation.set(correlation + 1);
        let (reply, answer) = oneshot::channel();
        link.calls.borrow_mut().insert(correlation, reply);
        let frame = encode_frame(FrameKind::Request, correlation, &encode_request(request));
        if link.queue.try_send(frame).is_err() {
            link.calls.borrow_mut().remove(&correlation);
            return Err(CallError::Busy(node));
        }
        let answered = with_timeout(timeout_ms, answer).await;
        link.calls.borrow_mut().remove(&correlation);
        match answered {
            Some(Ok(reply)) => Ok(reply),
            _ => Err(CallError::NoAnswer(node)),
        }
    }
}

impl QuorumTransport for ControllerPeers {
    fn send(&self, messages: Vec<QuorumMessage>) {
        for message in messages {
            let to = node_id_of(message.to);
            let Some(link) = self.links.get(&to) else {
                warn!(to, "raft message for a node that is not a voter");
                continue;
            };
            let frame = encode_frame(FrameKind::Raft, 0, &encode_message(&message));
            if link.queue.try_send(frame).is_err() {
                debug!(to, "controller link queue full; dropping a raft message");
            }
        }
    }
}

/// Resolves `host:port` (a literal address without blocking the shard).
pub(super) async fn resolve(address: &str) -> Option<SocketAddr> {
    if let Ok(addr) = address.parse() {
        return Some(addr);
    }
    let address = address.to_string();
    off_shard(move || address.to_socket_addrs().ok()?.next()).await
}

/// Connects to the peer, writes queued frames and reads replies until the
/// connection fails, then connects again, until `stop`.
async fn keep_connected(link: Rc<PeerLink>, outgoing: LocalReceiver<Vec<u8>>, stop: StopFlag) {
    let mut pause_ms = RECONNECT_PAUSE_MS_MIN;
    while !stop.is_raised() {
        let stream = match resolve(&link.address).await {
            Some(addr) => with_timeout(CONNECT_TIMEOUT_MS, TcpStream::connect(addr)).await,
            None => None,
        };
        let Some(Ok(stream)) = stream else {
            if link.connected.replace(false) {
                info!(peer = link.node_id, address = %link.address, "controller link down");
            }
            glommio::timer::sleep(Duration::from_millis(pause_ms)).await;
            pause_ms = (pause_ms * 2).min(RECONNECT_PAUSE_MS_MAX);
            continue;
        };
        pause_ms = RECONNECT_PAUSE_MS_MIN;
        let _ = stream.set_nodelay(true);
        if !link.connected.replace(true) {
            info!(peer = link.node_id, address = %link.address, "controller link up");
        }
        let (mut reader, mut writer) = futures::io::AsyncReadExt::split(stream);
        let replies = async {
            loop {
                let frame = read_frame(&mut reader).await?;
                if frame.kind != FrameKind::Reply {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a controller listener sent a frame that is not a reply",
                    ));
                }
                let waiter = link.calls.borrow_mut().remove(&frame.correlation);
                match (waiter, decode_reply(&frame.payload)) {
                    (Some(waiter), Ok(reply)) => {
                        let _ = waiter.send(reply);
                    }
                    (_, Err(e)) => {
                        warn!(peer = link.node_id, error = %e, "undecodable controller reply")
                    }
                    (None, Ok(_)) => {}
                }
            }
        };
        let writes = async {
            while let Some(frame) = outgoing.recv().await {
                write_frame(&mut writer, &frame).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        futures::pin_mut!(replies, writes);
        let failed: std::io::Result<()> = match futures::future::select(replies, writes).await {
            futures::future::Either::Left((result, _)) => result,
            futures::future::Either::Right((result, _)) => result,
        };
        if let Err(e) = failed {
            debug!(peer = link.node_id, error = %e, "controller link failed; reconnecting");
        }
        // Whoever waits for a reply on this connection will not get one.
        link.calls.borrow_mut().clear();
    }
}

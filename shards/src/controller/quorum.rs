//! The metadata quorum's driver on shard 0. One task owns the raft node
//! (`engine::raft::Quorum`) and is the only one that calls it: ticks, peers'
//! messages and proposals reach it through a bounded queue, and after each
//! it carries out the node's readies in order (send, append + fdatasync to
//! the quorum log, send what needed the write, hand committed entries on).
//! A second task applies committed entries, in log order, on every shard
//! (`Backend::apply` through the mesh), so a slow apply (a topic with
//! thousands of partitions) never delays heartbeats.
//!
//! The controller waits on this driver: `barrier` until its image holds
//! everything committed before (only a leader with a commit in its own term
//! knows that), `propose` until its entry is applied everywhere (or lost to
//! a new leader).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use engine::metadata::decode_records;
use engine::raft::{
    CommittedEntry, NodeId, PersistedQuorum, ProposeError, Quorum, QuorumConfig, QuorumMessage,
};
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use tracing::{error, info, warn};

use super::Backend;
use crate::config::QuorumSettings;
use crate::disk::quorum_log::QuorumLogFile;
use crate::mesh::metadata::ApplyMetadata;
use crate::mesh::Mesh;
use crate::stop::StopFlag;

/// Bound on queued ticks, peer messages and proposals.
const QUORUM_EVENTS_MAX: usize = 1024;
/// Bound on committed batches waiting to be applied.
const APPLY_QUEUE_MAX: usize = 256;

/// The raft id of a Kafka node id: raft reserves 0, Kafka allows it.
pub fn raft_id(node_id: i32) -> NodeId {
    node_id as NodeId + 1
}

/// The Kafka node id of a raft id.
pub fn node_id_of(raft_id: NodeId) -> i32 {
    (raft_id - 1) as i32
}

enum QuorumEvent {
    Tick,
    Peer(QuorumMessage),
    /// `applied` learns whether the entry applied; the driver registers
    /// it before the entry can commit.
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), ProposeError>>,
        applied: oneshot::Sender<bool>,
    },
    Barrier {
        reply: oneshot::Sender<Result<u64, ProposeError>>,
    },
}

/// What the driver last saw of its node (read by the controller and by
/// metrics; written only by the driver task).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumView {
    pub term: u64,
    /// Kafka node id of the leader this node knows of.
    pub leader: Option<i32>,
    pub is_leader: bool,
    pub commit_index: u64,
    /// While leading: each voter's log end (Kafka node id, index).
    pub voters: Vec<(i32, u64)>,
}

/// Committed entries for the applier.
struct CommittedBatch {
    entries: Vec<CommittedEntry>,
    through: u64,
}

/// Someone waiting for an index to be applied.
enum Waiter {
    /// A proposal: true if the entry applied there is its own.
    Proposal {
        term: u64,
        reply: oneshot::Sender<bool>,
    },
    Applied(oneshot::Sender<()>),
}

pub struct QuorumDriver {
    node_id: i32,
    events: LocalSender<QuorumEvent>,
    view: RefCell<QuorumView>,
    /// The last committed index applied on every shard.
    applied: Cell<u64>,
    waiters: RefCell<BTreeMap<u64, Vec<Waiter>>>,
}

/// Sends raft messages to peers; the transport lives in `cluster/`.
pub trait QuorumTransport {
    fn send(&self, messages: Vec<QuorumMessage>);
}

/// A lone voter has no one to send to.
pub struct NoPeers;

impl QuorumTransport for NoPeers {
    fn send(&self, messages: Vec<QuorumMessage>) {
        for message in messages {
            warn!(to = message.to, kind = ?message.get_msg_type(), "a lone voter has no peer for this raft message");
        }
    }
}

pub struct QuorumParts {
    pub node_id: i32,
    pub settings: QuorumSettings,
    pub persisted: PersistedQuorum,
    pub applied: u64,
    pub log: QuorumLogFile,
    pub transport: Rc<dyn QuorumTransport>,
    pub backend: Rc<Backend>,
    pub mesh: Rc<Mesh>,
    pub stop: StopFlag,
}

impl QuorumDriver {
    /// Starts the raft node and the driver's tasks.
    pub fn start(
        parts: QuorumParts,
        task_queue: glommio::TaskQueueHandle,
    ) -> Result<Rc<QuorumDriver>, String> {
        let voters: Vec<NodeId> = if parts.settings.voters.is_empty() {
            vec![raft_id(parts.node_id)]
        } else {
            parts
                .settings
                .voters
                .iter()
                .map(|v| raft_id(v.node_id))
                .collect()
        };
        let lone_voter = voters == [raft_id(parts.node_id)];
        let config = QuorumConfig {
            node_id: raft_id(parts.node_id),
            voters,
            randomized_election: true,
        };
        let mut quorum = Quorum::start(&config, &parts.persisted, parts.applied)?;
        if lone_voter {
            // Nobody to wait for: lead at once.
            quorum.campaign()?;
        }
        let (events, event_queue) = local_channel::new_bounded(QUORUM_EVENTS_MAX);
        let (apply_sender, apply_queue) = local_channel::new_bounded(APPLY_QUEUE_MAX);
        let driver = Rc::new(QuorumDriver {
            node_id: parts.node_id,
            events,
            view: RefCell::new(QuorumView::default()),
            applied: Cell::new(parts.applied),
            waiters: RefCell::new(BTreeMap::new()),
        });
        let drive = driver.clone().drive(
            quorum,
            event_queue,
            parts.log,
            parts.transport,
            apply_sender,
            parts.stop.clone(),
        );
        let tick = driver.clone().tick(parts.settings.tick_ms, parts.stop);
        for task in [
            glommio::spawn_local_into(drive, task_queue),
            glommio::spawn_local_into(tick, task_queue),
        ] {
            task.map_err(|e| e.to_string())?.detach();
        }
        // Applying runs with the data path: it creates and deletes files.
        let apply = driver
            .clone()
            .apply_committed(apply_queue, parts.backend, parts.mesh);
        glommio::spawn_local(apply).detach();
        Ok(driver)
    }

    pub fn view(&self) -> QuorumView {
        self.view.borrow().clone()
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The last committed index applied on every shard of this broker.
    pub fn applied_index(&self) -> u64 {
        self.applied.get()
    }

    /// A raft message from a peer.
    pub async fn deliver(&self, message: QuorumMessage) {
        // A full queue waits: the peer's connection stops being read.
        let _ = self.events.send(QuorumEvent::Peer(message)).await;
    }

    /// Waits until this node leads and its image holds everything
    /// committed so far; a plan made after it sees every earlier change.
    pub async fn barrier(&self) -> Result<(), ProposeError> {
        let (reply, answer) = oneshot::channel();
        if self
            .events
            .send(QuorumEvent::Barrier { reply })
            .await
            .is_err()
        {
            return Err(ProposeError::Dropped);
        }
        let commit = answer.await.map_err(|_| ProposeError::Dropped)??;
        self.wait_applied(commit).await;
        Ok(())
    }

    /// Proposes `data` and waits until it is applied on every shard: true,
    /// or false if a new leader replaced it (it never applies then).
    pub async fn propose(&self, data: Vec<u8>) -> Result<bool, ProposeError> {
        let (reply, answer) = oneshot::channel();
        let (applied, outcome) = oneshot::channel();
        let event = QuorumEvent::Propose {
            data,
            reply,
            applied,
        };
        if self.events.send(event).await.is_err() {
            return Err(ProposeError::Dropped);
        }
        answer.await.map_err(|_| ProposeError::Dropped)??;
        Ok(outcome.await.unwrap_or(false))
    }

    async fn wait_applied(&self, index: u64) {
        if self.applied.get() >= index {
            return;
        }
        let (reply, applied) = oneshot::channel();
        self.add_waiter(index, Waiter::Applied(reply));
        let _ = applied.await;
    }

    fn add_waiter(&self, index: u64, waiter: Waiter) {
        self.waiters
            .borrow_mut()
            .entry(index)
            .or_default()
            .push(waiter);
    }

    async fn tick(self: Rc<Self>, tick_ms: u64, stop: StopFlag) {
        while !stop.is_raised() {
            glommio::timer::sleep(Duration::from_millis(tick_ms)).await;
            // A full queue already has work for the driver; a late tick
            // only stretches the election clock.
            let _ = self.events.try_send(QuorumEvent::Tick);
        }
    }

    async fn drive(
        self: Rc<Self>,
        mut quorum: Quorum,
        events: LocalReceiver<QuorumEvent>,
        mut log: QuorumLogFile,
        transport: Rc<dyn QuorumTransport>,
        applier: LocalSender<CommittedBatch>,
        stop: StopFlag,
    ) {
        loop {
            if let Err(e) = self
                .carry_out_readies(&mut quorum, &mut log, &*transport, &applier)
                .await
            {
                // The node counts what it handed out as persisted; it
                // cannot go on without its disk (Kafka halts too).
                error!(error = %e, "metadata quorum log write failed; stopping the broker");
                stop.raise();
                return;
            }
            let Some(event) = events.recv().await else {
                return;
            };
            self.handle(&mut quorum, event);
            // Take in what queued meanwhile before the next write.
            while self.events.len() > 0 {
                let Some(event) = events.recv().await else {
                    return;
                };
                self.handle(&mut quorum, event);
            }
        }
    }

    fn handle(&self, quorum: &mut Quorum, event: QuorumEvent) {
        match event {
            QuorumEvent::Tick => quorum.tick(),
            QuorumEvent::Peer(message) => {
                if let Err(e) = quorum.step(message) {
                    warn!(error = %e, "dropping a raft message");
                }
            }
            QuorumEvent::Propose {
                data,
                reply,
                applied,
            } => {
                let proposed = quorum.propose(data);
                if proposed.is_ok() {
                    let (index, term) = (quorum.last_index(), quorum.term());
                    self.add_waiter(
                        index,
                        Waiter::Proposal {
                            term,
                            reply: applied,
                        },
                    );
                }
                let _ = reply.send(proposed);
            }
            QuorumEvent::Barrier { reply } => {
                let answer = if quorum.leads_with_current_commit() {
                    Ok(quorum.commit_index())
                } else {
                    Err(ProposeError::NotLeader {
                        leader: quorum.leader().filter(|_| !quorum.is_leader()),
                    })
                };
                let _ = reply.send(answer);
            }
        }
    }

    async fn carry_out_readies(
        &self,
        quorum: &mut Quorum,
        log: &mut QuorumLogFile,
        transport: &dyn QuorumTransport,
        applier: &LocalSender<CommittedBatch>,
    ) -> std::io::Result<()> {
        while let Some(ready) = quorum.ready() {
            if !ready.messages.is_empty() {
                transport.send(ready.messages.clone());
            }
            if ready.must_persist() {
                log.append(&ready.entries, ready.hard_state.as_ref())
                    .await?;
            }
            if !ready.persisted_messages.is_empty() {
                transport.send(ready.persisted_messages);
            }
            if let Some(through) = ready.applied_through {
                let batch = CommittedBatch {
                    entries: ready.committed,
                    through,
                };
                if applier.send(batch).await.is_err() {
                    return Ok(());
                }
            }
        }
        let view = QuorumView {
            term: quorum.term(),
            leader: quorum.leader().map(node_id_of),
            is_leader: quorum.is_leader(),
            commit_index: quorum.commit_index(),
            voters: quorum
                .voter_progress()
                .into_iter()
                .map(|(id, end)| (node_id_of(id), end))
                .collect(),
        };
        let mut current = self.view.borrow_mut();
        if (view.term, view.leader) != (current.term, current.leader) {
            info!(term = view.term, leader = ?view.leader, this_node = self.node_id, "metadata quorum leader");
        }
        *current = view;
        Ok(())
    }

    async fn apply_committed(
        self: Rc<Self>,
        batches: LocalReceiver<CommittedBatch>,
        backend: Rc<Backend>,
        mesh: Rc<Mesh>,
    ) {
        while let Some(batch) = batches.recv().await {
            let mut applied_terms = BTreeMap::new();
            for entry in &batch.entries {
                applied_terms.insert(entry.index, entry.term);
                match decode_records(&entry.data) {
                    Ok(records) => {
                        for record in &records {
                            publish(&backend, &mesh, record).await;
                        }
                    }
                    Err(reason) => {
                        error!(index = entry.index, %reason, "a committed metadata entry does not decode; skipping it on every shard")
                    }
                }
            }
            self.applied.set(batch.through);
            self.wake_waiters(batch.through, &applied_terms);
        }
    }

    /// Answers everyone waiting for an index up to `through`.
    fn wake_waiters(&self, through: u64, applied_terms: &BTreeMap<u64, u64>) {
        let mut waiters = self.waiters.borrow_mut();
        let later = waiters.split_off(&(through + 1));
        let due = std::mem::replace(&mut *waiters, later);
        drop(waiters);
        for (index, list) in due {
            for waiter in list {
                match waiter {
                    Waiter::Proposal { term, reply } => {
                        let _ = reply.send(applied_terms.get(&index) == Some(&term));
                    }
                    Waiter::Applied(reply) => {
                        let _ = reply.send(());
                    }
                }
            }
        }
    }
}

/// Has every shard apply a committed record, this one included, and waits
/// until all have.
async fn publish(backend: &Backend, mesh: &Mesh, record: &engine::metadata::MetadataRecord) {
    let mut remote = Vec::with_capacity(mesh.shard_count);
    for target in 0..mesh.shard_count {
        if target != mesh.shard_id {
            let op = ApplyMetadata {
                record: record.clone(),
            };
            remote.push(mesh.send(target, op).await);
        }
    }
    backend.apply(record).await;
    futures::future::join_all(remote).await;
}

//! The metadata quorum: raft-rs's `RawNode` (the Raft of TiKV), driven as a
//! pure state machine (DESIGN.md §5). This module owns no socket, file or
//! clock: the driver feeds it ticks, peers' messages and proposals, and
//! carries out what `ready` asks, in order:
//!
//! 1. send `messages` (a leader's appends may leave before its own write:
//!    Raft thesis §10.2.1);
//! 2. write `entries` and `hard_state` durably (fsync) — before anything
//!    else is asked of the quorum, because raft counts them as persisted
//!    from then on;
//! 3. send `persisted_messages` (votes, acknowledgements);
//! 4. apply `committed`, in order.
//!
//! A node restarts from what it persisted (`PersistedQuorum`): its hard
//! state and its entries. Commits need a majority that fsynced them, a term
//! has at most one leader, and committed entries are never lost while a
//! majority keeps its disk. Voters are fixed at start
//! (`controller.quorum.voters`); membership changes come later.

use std::fmt;

mod log_file;

pub use log_file::{
    decode_message, decode_quorum_log, encode_message, encode_persisted_quorum, encode_quorum_log,
    DecodedQuorumLog,
};

use ::raft::prelude::{ConfState, Entry, EntryType, HardState, Message};
use ::raft::storage::MemStorage;
use ::raft::{Config, RawNode, StateRole, Storage};

pub use ::raft::eraftpb::MessageType;
pub use ::raft::prelude::Message as QuorumMessage;
pub use ::raft::prelude::{Entry as QuorumEntry, HardState as QuorumHardState};

/// Ticks without a leader's heartbeat before a follower stands for election;
/// each election waits a random number of ticks in `[ELECTION_TICKS,
/// 2 * ELECTION_TICKS)` so that candidates rarely collide.
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 2;
/// The most bytes of entries one append message carries.
const APPEND_BYTES_MAX: u64 = 1 << 20;
/// The most append messages in flight to one follower.
const APPENDS_IN_FLIGHT_MAX: usize = 64;

/// A node id in the quorum: the broker's `node.id` (Raft reserves 0).
pub type NodeId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    pub node_id: NodeId,
    /// Every voter, this node included if it votes.
    pub voters: Vec<NodeId>,
    /// Election timeouts drawn from `[ELECTION_TICKS, 2 * ELECTION_TICKS)`
    /// (false: always `ELECTION_TICKS`, for seeded simulations, which
    /// randomize by when they deliver ticks instead).
    pub randomized_election: bool,
}

/// What a node persisted: enough to restart it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersistedQuorum {
    pub hard_state: HardState,
    /// Contiguous, from index 1.
    pub entries: Vec<Entry>,
}

impl PersistedQuorum {
    /// Takes in what a ready asked to persist: entries from the first one's
    /// index replace everything from there on (a follower's divergent tail).
    pub fn persist(&mut self, ready: &QuorumReady) {
        self.take(&ready.entries, ready.hard_state.as_ref());
    }

    /// A log that starts committed: entry 1, in term 1, holding `data`
    /// (a lone voter's bootstrap records, or a single node's metadata from
    /// before the quorum). Its node restarts as a follower in term 1 and
    /// elects itself in term 2.
    pub fn bootstrapped(data: Vec<u8>) -> PersistedQuorum {
        PersistedQuorum {
            hard_state: HardState {
                term: 1,
                vote: 0,
                commit: 1,
                ..Default::default()
            },
            entries: vec![Entry {
                index: 1,
                term: 1,
                data: data.into(),
                ..Default::default()
            }],
        }
    }

    /// `persist` from parts (the log file replays its frames with this).
    pub fn take(&mut self, entries: &[Entry], hard_state: Option<&HardState>) {
        if let Some(first) = entries.first() {
            let keep = (first.index - 1) as usize;
            assert!(keep <= self.entries.len(), "entries leave a gap");
            self.entries.truncate(keep);
            self.entries.extend(entries.iter().cloned());
        }
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
    }

    /// The index of the last entry (0: none).
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.index)
    }

    /// The committed entries with data, in log order: what a node that
    /// restarts rebuilds its state machine from before it runs.
    pub fn committed(&self) -> impl Iterator<Item = CommittedEntry> + '_ {
        self.entries
            .iter()
            .take_while(|e| e.index <= self.hard_state.commit)
            .filter(|e| is_data_entry(e))
            .map(committed_entry)
    }
}

/// The work one call to `Quorum::ready` hands the driver; see the module
/// comment for the order.
#[derive(Debug, Default)]
pub struct QuorumReady {
    pub messages: Vec<Message>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub persisted_messages: Vec<Message>,
    /// Committed normal entries with data, in log order (a new leader's
    /// empty entry and configuration entries are the quorum's own).
    pub committed: Vec<CommittedEntry>,
    /// The last committed index this ready hands out, of any entry type:
    /// once `committed` is applied, the state machine is current to it.
    pub applied_through: Option<u64>,
}

impl QuorumReady {
    /// Whether the driver must fsync before going on.
    pub fn must_persist(&self) -> bool {
        !self.entries.is_empty() || self.hard_state.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node knows
    /// of, if any.
    NotLeader { leader: Option<NodeId> },
    /// The quorum refused it (e.g. a leader transfer in progress).
    Dropped,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader (node {id} is)")
            }
            ProposeError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            ProposeError::Dropped => write!(f, "proposal dropped"),
        }
    }
}

fn is_data_entry(entry: &Entry) -> bool {
    entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty()
}

fn committed_entry(entry: &Entry) -> CommittedEntry {
    CommittedEntry {
        index: entry.index,
        term: entry.term,
        data: entry.data.to_vec(),
    }
}

/// Whether peers may send this type. Local types (elections and heartbeats
/// are started by ticks) and proposals (they reach the leader through the
/// controller's own requests) never come from the network.
fn is_peer_message(kind: MessageType) -> bool {
    !matches!(
        kind,
        MessageType::MsgHup
            | MessageType::MsgBeat
            | MessageType::MsgUnreachable
            | MessageType::MsgSnapStatus
            | MessageType::MsgCheckQuorum
            | MessageType::MsgPropose
    )
}

/// One member of the metadata quorum.
pub struct Quorum {
    node: RawNode<MemStorage>,
}

impl fmt::Debug for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quorum")
            .field("id", &self.node.raft.id)
            .field("term", &self.term())
            .field("role", &self.node.raft.state)
            .field("leader", &self.leader())
            .field("commit", &self.commit_index())
            .finish()
    }
}

impl Quorum {
    /// Starts a node from what it persisted (nothing, the first time).
    /// Committed entries are handed to `ready` again from index 1: the
    /// driver rebuilds its state machine from them.
    /// `applied`: the committed index the driver already applied (from
    /// `PersistedQuorum::committed` at start-up); later ones come through
    /// `ready`.
    pub fn start(
        config: &QuorumConfig,
        persisted: &PersistedQuorum,
        applied: u64,
    ) -> Result<Quorum, String> {
        assert!(config.node_id != 0, "Raft reserves node id 0");
        if applied > persisted.hard_state.commit {
            return Err(format!(
                "applied index {applied} is past the commit index {}",
                persisted.hard_state.commit
            ));
        }
        let storage = MemStorage::new_with_conf_state(ConfState::from((
            config.voters.clone(),
            Vec::<u64>::new(),
        )));
        {
            let mut core = storage.wl();
            core.append(&persisted.entries)
                .map_err(|e| format!("persisted entries: {e}"))?;
            core.set_hardstate(persisted.hard_state.clone());
        }
        let election_tick = ELECTION_TICKS;
        let raft_config = Config {
            id: config.node_id,
            election_tick,
            heartbeat_tick: HEARTBEAT_TICKS,
            min_election_tick: election_tick,
            max_election_tick: if config.randomized_election {
                2 * election_tick
            } else {
                election_tick + 1
            },
            max_size_per_msg: APPEND_BYTES_MAX,
            max_inflight_msgs: APPENDS_IN_FLIGHT_MAX,
            // A node that rejoins after a partition does not depose a
            // healthy leader, and a leader that lost its majority steps down.
            pre_vote: true,
            check_quorum: true,
            applied,
            ..Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| format!("raft config: {e}"))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node =
            RawNode::new(&raft_config, storage, &logger).map_err(|e| format!("raft: {e}"))?;
        Ok(Quorum { node })
    }

    pub fn id(&self) -> NodeId {
        self.node.raft.id
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// Whether this node leads and its log has committed an entry of its
    /// own term: only then does its commit index cover everything earlier
    /// leaders committed (Raft §5.4.2), so a state machine applied up to it
    /// is current.
    pub fn leads_with_current_commit(&self) -> bool {
        self.is_leader()
            && self
                .node
                .raft
                .raft_log
                .term(self.commit_index())
                .is_ok_and(|term| term == self.term())
    }

    /// Each voter's log end as this leader knows it (the index it matched;
    /// this node's own last index), by node id. Empty unless leading.
    pub fn voter_progress(&self) -> Vec<(NodeId, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut progress: Vec<(NodeId, u64)> = self
            .node
            .raft
            .prs()
            .iter()
            .map(|(&id, p)| {
                let end = if id == self.id() {
                    self.last_index()
                } else {
                    p.matched
                };
                (id, end)
            })
            .collect();
        progress.sort_unstable();
        progress
    }

    /// One tick of the election and heartbeat clock.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// A message from a peer. Messages from nodes outside the quorum, for
    /// another node, or malformed are dropped (the sender retries).
    pub fn step(&mut self, message: Message) -> Result<(), String> {
        if message.to != self.id() {
            return Err(format!(
                "message for node {} reached node {}",
                message.to,
                self.id()
            ));
        }
        if !is_peer_message(message.get_msg_type()) {
            return Err(format!(
                "{:?} is not a message peers send",
                message.get_msg_type()
            ));
        }
        self.node.step(message).map_err(|e| e.to_string())
    }

    /// Appends `data` to the log if this node leads; it commits once a
    /// majority persisted it, and comes back through `ready().committed`.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        self.node
            .propose(Vec::new(), data)
            .map_err(|_| ProposeError::Dropped)
    }

    /// Stand for election now (a single voter elects itself at once).
    pub fn campaign(&mut self) -> Result<(), String> {
        self.node.campaign().map_err(|e| e.to_string())
    }

    /// The work to do, if any; see the module comment. The in-memory log
    /// takes the entries at once: the driver must persist them before it
    /// calls this node again.
    pub fn ready(&mut self) -> Option<QuorumReady> {
        if !self.node.has_ready() {
            return None;
        }
        let mut ready = self.node.ready();
        assert!(
            ready.snapshot().get_metadata().index == 0,
            "snapshots are not used yet"
        );
        let mut out = QuorumReady {
            messages: ready.take_messages(),
            entries: ready.take_entries(),
            hard_state: ready.hs().cloned(),
            persisted_messages: ready.take_persisted_messages(),
            committed: Vec::new(),
            applied_through: None,
        };
        let committed = ready.take_committed_entries();
        {
            let mut core = self.node.store().wl();
            core.append(&out.entries)
                .expect("raft hands out entries that follow the log");
            if let Some(hard_state) = &out.hard_state {
                core.set_hardstate(hard_state.clone());
            }
        }
        let mut light = self.node.advance(ready);
        // After advance: a leader's commit may have moved with its own
        // persisted entries. These go out once the write is durable.
        out.persisted_messages.extend(light.take_messages());
        if let Some(commit) = light.commit_index() {
            let mut core = self.node.store().wl();
            let mut hard_state = core.hard_state().clone();
            hard_state.commit = commit;
            core.set_hardstate(hard_state.clone());
            out.hard_state = Some(hard_state);
        }
        let committed: Vec<Entry> = committed
            .into_iter()
            .chain(light.take_committed_entries())
            .collect();
        out.applied_through = committed.last().map(|e| e.index);
        out.committed = committed
            .iter()
            .filter(|e| is_data_entry(e))
            .map(committed_entry)
            .collect();
        self.node.advance_apply();
        Some(out)
    }

    /// Every entry in this node's log (tests and tools).
    pub fn log(&self) -> Vec<Entry> {
        let store = self.node.store();
        let (first, last) = (store.first_index().unwrap_or(1), self.last_index());
        if last < first {
            return Vec::new();
        }
        store
            .entries(
                first,
                last + 1,
                u64::MAX,
                raft::GetEntriesContext::empty(false),
            )
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: NodeId, voters: &[NodeId]) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: voters.to_vec(),
            randomized_election: false,
        }
    }

    /// Drains a node's ready into its persisted state; returns its messages
    /// and committed data.
    fn drain(quorum: &mut Quorum, disk: &mut PersistedQuorum) -> (Vec<Message>, Vec<Vec<u8>>) {
        let (mut messages, mut committed) = (Vec::new(), Vec::new());
        while let Some(ready) = quorum.ready() {
            messages.extend(ready.messages.iter().cloned());
            disk.persist(&ready);
            messages.extend(ready.persisted_messages.iter().cloned());
            committed.extend(ready.committed.into_iter().map(|c| c.data));
        }
        (messages, committed)
    }

    #[test]
    fn a_single_voter_elects_itself_and_commits_at_once() {
        let mut disk = PersistedQuorum::default();
        let mut quorum = Quorum::start(&config(1, &[1]), &disk, 0).unwrap();
        quorum.campaign().unwrap();
        drain(&mut quorum, &mut disk);
        assert!(quorum.is_leader());
        quorum.propose(b"topic".to_vec()).unwrap();
        assert_eq!(quorum.voter_progress(), vec![(1, quorum.last_index())]);
        let (messages, committed) = drain(&mut quorum, &mut disk);
        assert!(messages.is_empty());
        assert_eq!(committed, vec![b"topic".to_vec()]);

        // Restarted from its disk having applied nothing, it hands the
        // committed entry out again; having applied it, it does not.
        let mut restarted = Quorum::start(&config(1, &[1]), &disk, 0).unwrap();
        restarted.campaign().unwrap();
        let (_, again) = drain(&mut restarted, &mut disk);
        assert_eq!(again, vec![b"topic".to_vec()]);
        assert!(restarted.term() > 1);
        assert!(restarted.leads_with_current_commit());
        let committed: Vec<_> = disk.committed().map(|c| c.data).collect();
        assert_eq!(committed, vec![b"topic".to_vec()]);
        let commit = disk.hard_state.commit;
        let mut current = Quorum::start(&config(1, &[1]), &disk, commit).unwrap();
        current.campaign().unwrap();
        let (_, none) = drain(&mut current, &mut disk);
        assert!(none.is_empty());
    }

    #[test]
    fn a_follower_refuses_proposals_and_names_the_leader() {
        let mut disks = vec![PersistedQuorum::default(); 3];
        let mut nodes: Vec<Quorum> = (1..=3)
            .map(|id| Quorum::start(&config(id, &[1, 2, 3]), &disks[id as usize - 1], 0).unwrap())
            .collect();
        nodes[0].campaign().unwrap();
        // Deliver until quiet.
        for _ in 0..20 {
            let mut in_flight = Vec::new();
            for (i, node) in nodes.iter_mut().enumerate() {
                in_flight.extend(drain(node, &mut disks[i]).0);
            }
            if in_flight.is_empty() {
                break;
            }
            for message in in_flight {
                let to = message.to as usize - 1;
                nodes[to].step(message).unwrap();
            }
        }
        assert!(nodes[0].is_leader());
        assert_eq!(
            nodes[1].propose(b"x".to_vec()),
            Err(ProposeError::NotLeader { leader: Some(1) })
        );
    }

    #[test]
    fn messages_for_another_node_are_refused() {
        let quorum_disk = PersistedQuorum::default();
        let mut quorum = Quorum::start(&config(2, &[1, 2, 3]), &quorum_disk, 0).unwrap();
        let message = Message {
            to: 3,
            from: 1,
            ..Default::default()
        };
        assert!(quorum.step(message).is_err());
        let mut local = Message {
            to: 2,
            ..Default::default()
        };
        local.set_msg_type(MessageType::MsgHup);
        assert!(quorum.step(local).is_err());
    }
}

//! The metadata quorum (`crate::raft`) under faults: 3 or 5 voters, a
//! network that drops, delays, reorders and duplicates messages and is cut
//! into partitions, and crashes that lose everything a node had not yet
//! persisted. One seed replays a run exactly.
//!
//! Invariants, checked after every step:
//! - at most one leader per term (election safety);
//! - every entry a node applies is the entry every other node applied at
//!   that index (state machine safety), in index order, without gaps;
//! - an entry once applied anywhere is never lost: it stays in the log of a
//!   majority (each node's persisted log agrees with the applied history up
//!   to its commit);
//! - proposals are never applied twice and never invented.
//!
//! And liveness: once the network heals and crashes stop, a leader is
//! elected and a new proposal is applied by every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{run_seeds, Rng};
use crate::raft::{NodeId, PersistedQuorum, Quorum, QuorumConfig, QuorumMessage, QuorumReady};

/// Simulated time is in ticks; a message spends 0..=MAX_DELAY_TICKS of them
/// in flight.
const MAX_DELAY_TICKS: u64 = 3;
const FAULTY_TICKS: u64 = 600;
/// Ticks for a healed, crash-free quorum to elect and commit.
const HEAL_TICKS: u64 = 300;

struct Node {
    quorum: Option<Quorum>,
    disk: PersistedQuorum,
    /// What this node applied since it last started, by index.
    applied: BTreeMap<u64, Vec<u8>>,
}

struct InFlight {
    deliver_at: u64,
    message: QuorumMessage,
}

struct RaftSim {
    rng: Rng,
    voters: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Node>,
    network: Vec<InFlight>,
    /// Links cut, both ways: (a, b) with a < b.
    cut: BTreeSet<(NodeId, NodeId)>,
    now: u64,
    /// term -> the node that led it.
    leaders: HashMap<u64, NodeId>,
    /// index -> the entry applied there (by any node).
    history: BTreeMap<u64, Vec<u8>>,
    proposed: BTreeSet<Vec<u8>>,
    next_proposal: u64,
    /// Chance per tick (in 1000) of each fault while faults are on.
    loss_per_1000: u64,
    crash_per_1000: u64,
    partition_per_1000: u64,
}

impl RaftSim {
    fn new(seed: u64) -> RaftSim {
        let mut rng = Rng::new(seed);
        let size = if rng.chance(1, 3) { 5 } else { 3 };
        let voters: Vec<NodeId> = (1..=size).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let disk = PersistedQuorum::default();
                let quorum = Quorum::start(&config(id, &voters), &disk, 0).expect("starts");
                (
                    id,
                    Node {
                        quorum: Some(quorum),
                        disk,
                        applied: BTreeMap::new(),
                    },
                )
            })
            .collect();
        let loss_per_1000 = rng.range(0, 200);
        let crash_per_1000 = rng.range(0, 15);
        let partition_per_1000 = rng.range(0, 20);
        RaftSim {
            rng,
            voters,
            nodes,
            network: Vec::new(),
            cut: BTreeSet::new(),
            now: 0,
            leaders: HashMap::new(),
            history: BTreeMap::new(),
            proposed: BTreeSet::new(),
            next_proposal: 0,
            loss_per_1000,
            crash_per_1000,
            partition_per_1000,
        }
    }

    fn run(&mut self) {
        for _ in 0..FAULTY_TICKS {
            self.faults();
            self.step_time(true);
        }
        // Heal: every link back, every node up, no more crashes or loss.
        self.cut.clear();
        self.crash_per_1000 = 0;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.quorum.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.restart(id);
        }
        self.loss_per_1000 = 0;
        let mut final_proposal = None;
        for _ in 0..HEAL_TICKS {
            self.step_time(false);
            if final_proposal.is_none() {
                final_proposal = self.propose_at_leader();
            }
            if let Some(data) = &final_proposal {
                if self
                    .nodes
                    .values()
                    .all(|n| n.applied.values().any(|d| d == data))
                {
                    return;
                }
            }
        }
        panic!(
            "no progress {HEAL_TICKS} ticks after healing: leaders {:?}, proposal {:?}, nodes {:?}",
            self.nodes
                .values()
                .map(|n| n.quorum.as_ref().map(|q| format!("{q:?}")))
                .collect::<Vec<_>>(),
            final_proposal.map(|p| String::from_utf8_lossy(&p).into_owned()),
            self.nodes.keys().collect::<Vec<_>>()
        );
    }

    fn faults(&mut self) {
        if self.rng.chance(self.crash_per_1000, 1000) {
            let id = self.voters[self.rng.index(self.voters.len())];
            if self.nodes[&id].quorum.is_some() {
                self.crash(id);
            } else {
                self.restart(id);
            }
        }
        if self.rng.chance(self.partition_per_1000, 1000) {
            if self.cut.is_empty() {
                // Cut a random minority or majority off from the rest.
                let isolated: BTreeSet<NodeId> = self
                    .voters
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(1, 2))
                    .collect();
                for &a in &self.voters {
                    for &b in &self.voters {
                        if a < b && isolated.contains(&a) != isolated.contains(&b) {
                            self.cut.insert((a, b));
                        }
                    }
                }
            } else {
                self.cut.clear();
            }
        }
        if self.rng.chance(1, 10) {
            self.propose_at_leader();
        }
    }

    /// One tick: nodes tick (each skipped now and then, which randomizes
    /// election timeouts deterministically), messages due are delivered,
    /// and every node's ready is carried out.
    fn step_time(&mut self, faulty: bool) {
        self.now += 1;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let skip = self.rng.chance(1, 4);
            if let Some(quorum) = self.nodes.get_mut(&id).and_then(|n| n.quorum.as_mut()) {
                if !skip {
                    quorum.tick();
                }
            }
        }
        let mut due = Vec::new();
        let mut later = Vec::new();
        for message in std::mem::take(&mut self.network) {
            if message.deliver_at <= self.now {
                due.push(message.message);
            } else {
                later.push(message);
            }
        }
        self.network = later;
        for message in due {
            if faulty && self.rng.chance(1, 50) {
                // Duplicated: delivered now and again later.
                self.send(message.clone());
            }
            let to = message.to;
            if let Some(quorum) = self.nodes.get_mut(&to).and_then(|n| n.quorum.as_mut()) {
                quorum.step(message).expect("peer messages are accepted");
            }
        }
        for id in ids {
            self.drain(id);
        }
        self.check();
    }

    /// Carries out a node's readies as the broker's driver does: send,
    /// persist, send what waited for the persist, apply. A crash may strike
    /// before the persist (losing this ready's entries and hard state and
    /// the messages that waited for them).
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(ready) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.quorum.as_mut())
                .and_then(Quorum::ready)
            else {
                return;
            };
            let QuorumReady {
                messages,
                persisted_messages,
                committed,
                ..
            } = &ready;
            for message in messages.clone() {
                self.send(message);
            }
            if ready.must_persist() && self.rng.chance(self.crash_per_1000, 1000) {
                self.crash(id);
                return;
            }
            let node = self.nodes.get_mut(&id).expect("node");
            node.disk.persist(&ready);
            for message in persisted_messages.clone() {
                self.send(message);
            }
            let term = self.nodes[&id].quorum.as_ref().map(Quorum::term);
            for entry in committed {
                let node = self.nodes.get_mut(&id).expect("node");
                if let Some((&last, _)) = node.applied.last_key_value() {
                    assert!(
                        entry.index > last,
                        "node {id} applied {} after {last} (term {term:?})",
                        entry.index
                    );
                }
                node.applied.insert(entry.index, entry.data.clone());
                match self.history.get(&entry.index) {
                    Some(seen) => assert_eq!(
                        seen, &entry.data,
                        "node {id} applied a different entry at index {}",
                        entry.index
                    ),
                    None => {
                        assert!(
                            self.proposed.contains(&entry.data),
                            "node {id} applied an entry nobody proposed at {}",
                            entry.index
                        );
                        assert!(
                            !self.history.values().any(|d| d == &entry.data),
                            "proposal applied at two indexes"
                        );
                        self.history.insert(entry.index, entry.data.clone());
                    }
                }
            }
        }
    }

    fn send(&mut self, message: QuorumMessage) {
        let link = (message.from.min(message.to), message.from.max(message.to));
        if self.cut.contains(&link) || self.rng.chance(self.loss_per_1000, 1000) {
            return;
        }
        let deliver_at = self.now + self.rng.range(0, MAX_DELAY_TICKS + 1);
        self.network.push(InFlight {
            deliver_at,
            message,
        });
    }

    fn propose_at_leader(&mut self) -> Option<Vec<u8>> {
        let leader = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| n.quorum.as_ref().filter(|q| q.is_leader()).map(|_| id))
            .max_by_key(|id| self.nodes[id].quorum.as_ref().map(Quorum::term))?;
        let data = format!("proposal-{}", self.next_proposal).into_bytes();
        let quorum = self.nodes.get_mut(&leader)?.quorum.as_mut()?;
        if quorum.propose(data.clone()).is_ok() {
            self.next_proposal += 1;
            self.proposed.insert(data.clone());
            self.drain(leader);
            return Some(data);
        }
        None
    }

    fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        node.quorum = None;
        node.applied.clear();
        self.network
            .retain(|m| m.message.to != id && m.message.from != id);
    }

    fn restart(&mut self, id: NodeId) {
        let voters = self.voters.clone();
        let node = self.nodes.get_mut(&id).expect("node");
        // As the broker does: the state machine is rebuilt from the
        // committed entries on disk, and raft hands out only later ones.
        node.applied = node.disk.committed().map(|c| (c.index, c.data)).collect();
        for (index, data) in &node.applied {
            assert_eq!(
                self.history.get(index),
                Some(data),
                "node {id} restarts with a committed entry nobody applied at {index}"
            );
        }
        let applied = node.disk.hard_state.commit;
        node.quorum =
            Some(Quorum::start(&config(id, &voters), &node.disk, applied).expect("restarts"));
        self.drain(id);
    }

    fn check(&mut self) {
        for (&id, node) in &self.nodes {
            let Some(quorum) = &node.quorum else { continue };
            if quorum.is_leader() {
                let leader = *self.leaders.entry(quorum.term()).or_insert(id);
                assert_eq!(leader, id, "two leaders in term {}", quorum.term());
            }
            // Its persisted log agrees with everything applied anywhere,
            // up to its own commit index.
            let commit = node.disk.hard_state.commit;
            for entry in node.disk.entries.iter().take(commit as usize) {
                if let Some(applied) = self.history.get(&entry.index) {
                    if !entry.data.is_empty() {
                        assert_eq!(
                            applied.as_slice(),
                            &entry.data[..],
                            "node {id}'s committed log differs at {}",
                            entry.index
                        );
                    }
                }
            }
        }
        // Every applied entry is held by a majority of persisted logs.
        let majority = self.voters.len() / 2 + 1;
        for (&index, data) in &self.history {
            let holders = self
                .nodes
                .values()
                .filter(|n| {
                    n.disk
                        .entries
                        .get(index as usize - 1)
                        .is_some_and(|e| e.data[..] == data[..])
                })
                .count();
            assert!(
                holders >= majority,
                "applied entry {index} is on {holders} disks, fewer than a majority"
            );
        }
    }
}

fn config(node_id: NodeId, voters: &[NodeId]) -> QuorumConfig {
    QuorumConfig {
        node_id,
        voters: voters.to_vec(),
        randomized_election: false,
    }
}

#[test]
fn raft_quorum_survives_faults() {
    run_seeds("raft_quorum_survives_faults", 0x5241_4654, |seed| {
        RaftSim::new(seed).run()
    });
}

//! The controller's cluster decisions (`crate::metadata::cluster`) under
//! random broker lives: five brokers register, heartbeat, miss heartbeats
//! (their sessions expire), crash, restart with a new incarnation, shut down
//! cleanly and get unregistered; topics are created and grow (some allow
//! unclean election); leaders shrink and expand their ISRs, some with stale
//! epochs or from brokers that no longer lead; the controller fails over
//! (its sessions start over). Every record the decisions return is applied
//! through `ClusterImage::apply`, which checks it, as the log would.
//!
//! Invariants, after every decision's records:
//! - a fenced or unregistered broker leads nothing and is in no ISR, except
//!   as the only member of a partition without a leader;
//! - leader ∈ ISR ⊆ replicas, the ISR not empty;
//! - leader and partition epochs never go down, the leader epoch rises with
//!   every leader change and the partition epoch with every change;
//! - without unclean election, a new leader comes from the ISR before the
//!   change; with it, a leader from outside is alone in the ISR;
//! - a partition without a leader has no live ISR member (nor, with unclean
//!   election, a live replica): the decisions leave no electable partition
//!   leaderless, so asking them again changes nothing;
//! - `alter_partition` answers each request as Kafka would;
//! - a snapshot of the image rebuilds it.

use std::collections::BTreeMap;

use super::{run_seeds, Rng};
use crate::metadata::{
    alter_partition, fence_broker, register_broker, unfence_broker, unregister_broker,
    AlterPartitionRefusal, BrokerRegistration, BrokerSessions, ClusterImage, MetadataError,
    MetadataRecord, PartitionImage, NO_LEADER,
};

const NODES: [i32; 5] = [1, 2, 3, 4, 5];
const STEPS: u64 = 1_500;
const SESSION_TIMEOUT_MS: i64 = 300;
const REPLICATION_FACTOR_MAX: usize = 4;
const TOPICS_MAX: usize = 12;

/// A broker process, as the simulation runs it.
struct Process {
    up: bool,
    /// A new one per start.
    incarnation: u8,
}

#[derive(Debug, Default)]
struct Counts {
    fences: u64,
    leader_changes: u64,
    unclean_elections: u64,
    isr_changes: u64,
    alter_refusals: u64,
}

struct ClusterSim {
    rng: Rng,
    now_ms: i64,
    image: ClusterImage,
    sessions: BrokerSessions,
    processes: BTreeMap<i32, Process>,
    topics_created: u32,
    counts: Counts,
}

impl ClusterSim {
    fn new(seed: u64) -> ClusterSim {
        let processes = NODES
            .iter()
            .map(|&id| {
                let process = Process {
                    up: true,
                    incarnation: 0,
                };
                (id, process)
            })
            .collect();
        let mut sim = ClusterSim {
            rng: Rng::new(seed),
            now_ms: 0,
            image: ClusterImage::default(),
            sessions: BrokerSessions::default(),
            processes,
            topics_created: 0,
            counts: Counts::default(),
        };
        // Node 1 was a single-node broker: its topic becomes its partitions.
        let legacy = MetadataRecord::CreateTopic {
            name: "legacy".into(),
            topic_id: [0xff; 16],
            partition_shards: vec![0, 1],
            configs: vec![],
        };
        sim.image.apply(&legacy).expect("a legacy topic");
        assert_eq!(sim.image.adopt_legacy_partitions(1), 2);
        sim.register(1);
        sim
    }

    fn run(&mut self) {
        for step in 0..STEPS {
            self.now_ms += self.rng.range(1, 50) as i64;
            match self.rng.range(0, 100) {
                0..=39 => self.heartbeats(),
                40..=47 => self.crash_or_restart(),
                48..=51 => self.controlled_shutdown(),
                52..=54 => self.unregister(),
                55..=62 => self.create_topic(),
                63..=67 => self.add_partitions(),
                68..=91 => self.alter_isr(),
                92..=93 => self.delete_topic(),
                94 => self.controller_failover(),
                _ => self.register_retry(),
            }
            self.expire_sessions();
            if step % 100 == 0 {
                self.check_snapshot();
            }
        }
        self.check_snapshot();
    }

    fn registration(&self, node_id: i32) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: [self.processes[&node_id].incarnation; 16],
            host: format!("broker{node_id}"),
            port: 9092,
            replication_host: format!("broker{node_id}"),
            replication_port_base: 19092,
            shard_count: 1 + node_id as u32 % 3,
            rack: None,
        }
    }

    /// Applies a decision's records as the log would, then checks the
    /// invariants against the image before them.
    fn propose(&mut self, records: Vec<MetadataRecord>) {
        let before = self.image.clone();
        for record in &records {
            if let Err(e) = self.image.apply(record) {
                panic!("a decision's record does not apply: {e}: {record:?}");
            }
        }
        self.check(&before);
    }

    fn register(&mut self, node_id: i32) {
        let records = register_broker(&self.image, &self.registration(node_id));
        self.propose(records);
    }

    /// Whether `node_id`'s process is the registered incarnation.
    fn registered_as_running(&self, node_id: i32) -> bool {
        let incarnation = [self.processes[&node_id].incarnation; 16];
        self.image
            .broker(node_id)
            .is_some_and(|b| b.registration.incarnation_id == incarnation)
    }

    /// Running brokers heartbeat (some miss a beat): one not registered as
    /// it runs registers first; a fenced one is unfenced, as Kafka's
    /// controller does once the broker has caught up.
    fn heartbeats(&mut self) {
        for node_id in NODES {
            if !self.processes[&node_id].up || !self.rng.chance(2, 3) {
                continue;
            }
            if !self.registered_as_running(node_id) {
                self.register(node_id);
            }
            let broker = self.image.broker(node_id).expect("registered");
            let (epoch, fenced) = (broker.broker_epoch, broker.fenced);
            self.sessions.heartbeat(node_id, epoch, self.now_ms);
            if fenced {
                let records = unfence_broker(&self.image, node_id);
                self.propose(records);
                assert_eq!(unfence_broker(&self.image, node_id), vec![]);
            }
        }
    }

    /// The controller fences every broker whose session expired.
    fn expire_sessions(&mut self) {
        for node_id in self
            .sessions
            .expired(&self.image, self.now_ms, SESSION_TIMEOUT_MS)
        {
            self.fence(node_id);
        }
    }

    fn fence(&mut self, node_id: i32) {
        let records = fence_broker(&self.image, node_id);
        self.counts.fences += 1;
        self.propose(records);
        assert_eq!(fence_broker(&self.image, node_id), vec![]);
        assert!(!self.image.is_live(node_id));
    }

    /// A running broker crashes (its session will expire), or a stopped one
    /// starts as a new incarnation (it registers at its first heartbeat).
    fn crash_or_restart(&mut self) {
        let node_id = NODES[self.rng.index(NODES.len())];
        let process = self.processes.get_mut(&node_id).expect("node");
        if process.up {
            process.up = false;
        } else {
            process.up = true;
            process.incarnation = process.incarnation.wrapping_add(1);
        }
    }

    /// A broker shuts down cleanly: the controller fences it at once.
    fn controlled_shutdown(&mut self) {
        let node_id = NODES[self.rng.index(NODES.len())];
        if !self.processes[&node_id].up {
            return;
        }
        self.processes.get_mut(&node_id).expect("node").up = false;
        self.fence(node_id);
    }

    /// An operator removes a broker: mostly stopped ones, sometimes one
    /// still running (it registers again at its next heartbeat).
    fn unregister(&mut self) {
        let node_id = NODES[self.rng.index(NODES.len())];
        if self.processes[&node_id].up && !self.rng.chance(1, 4) {
            return;
        }
        let records = unregister_broker(&self.image, node_id);
        self.propose(records);
        self.sessions.forget(node_id);
        assert!(self.image.broker(node_id).is_none());
        assert_eq!(unregister_broker(&self.image, node_id), vec![]);
    }

    fn create_topic(&mut self) {
        if self.image.topics().count() >= TOPICS_MAX {
            return;
        }
        let count = self.rng.range(1, 5) as usize;
        let replication_factor = self.rng.range(1, REPLICATION_FACTOR_MAX as u64 + 1) as usize;
        let live = self.image.live_brokers().count();
        let partitions = match self.image.place_replicas(count, replication_factor, 0) {
            Ok(partitions) => partitions,
            Err(e) => {
                let expected = MetadataError::InvalidReplicationFactor {
                    asked: replication_factor,
                    live,
                };
                assert_eq!(e, expected);
                assert!(replication_factor > live);
                return;
            }
        };
        assert!(partitions
            .iter()
            .all(|p| p.replicas.iter().all(|&id| self.image.is_live(id))));
        self.topics_created += 1;
        let n = self.topics_created;
        let unclean = self.rng.chance(1, 3);
        let record = MetadataRecord::CreateReplicatedTopic {
            name: format!("t{n}"),
            topic_id: [n as u8; 16],
            partitions,
            configs: vec![("unclean.leader.election.enable".into(), unclean.to_string())],
        };
        self.propose(vec![record]);
    }

    fn random_topic(&mut self) -> Option<String> {
        let names: Vec<String> = self.image.topics().map(|t| t.name.clone()).collect();
        (!names.is_empty()).then(|| names[self.rng.index(names.len())].clone())
    }

    fn add_partitions(&mut self) {
        let Some(name) = self.random_topic() else {
            return;
        };
        let topic = self.image.topic(&name).expect("topic");
        let replication_factor = topic.partitions[0].replicas.len();
        let first = topic.partition_count();
        let count = self.rng.range(1, 3) as usize;
        let Ok(partitions) = self.image.place_replicas(count, replication_factor, first) else {
            return;
        };
        let record = MetadataRecord::AddReplicatedPartitions { name, partitions };
        self.propose(vec![record]);
    }

    fn delete_topic(&mut self) {
        if let Some(name) = self.random_topic() {
            self.propose(vec![MetadataRecord::DeleteTopic { name }]);
        }
    }

    /// A new active controller has heard no heartbeat yet.
    fn controller_failover(&mut self) {
        self.sessions = BrokerSessions::default();
        self.sessions.renew_all(&self.image, self.now_ms);
    }

    /// A registration the controller answered is sent again: no change.
    fn register_retry(&mut self) {
        let node_id = NODES[self.rng.index(NODES.len())];
        if self.registered_as_running(node_id) {
            assert_eq!(
                register_broker(&self.image, &self.registration(node_id)),
                vec![]
            );
        }
    }

    /// A leader asks to shrink or expand its ISR; sometimes the request is
    /// stale or comes from a broker that does not lead.
    fn alter_isr(&mut self) {
        let led: Vec<(String, u32, PartitionImage)> = self
            .image
            .topics()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (t.name.clone(), i as u32, p.clone()))
            })
            .filter(|(_, _, p)| p.leader != NO_LEADER)
            .collect();
        if led.is_empty() {
            return;
        }
        let (topic, index, current) = led[self.rng.index(led.len())].clone();
        let leader = current.leader;
        let mut from = leader;
        let mut leader_epoch = current.leader_epoch;
        let mut partition_epoch = current.partition_epoch;
        let mut isr = current.isr.clone();
        let outside: Vec<i32> = current
            .replicas
            .iter()
            .copied()
            .filter(|id| !isr.contains(id))
            .collect();
        let followers: Vec<i32> = isr.iter().copied().filter(|&id| id != leader).collect();
        let expected: Result<(), AlterPartitionRefusal> = match self.rng.range(0, 10) {
            0..=3 if !followers.is_empty() => {
                let gone = followers[self.rng.index(followers.len())];
                isr.retain(|&id| id != gone);
                Ok(())
            }
            0..=6 if !outside.is_empty() => {
                let joining = outside[self.rng.index(outside.len())];
                isr.push(joining);
                if self.image.is_live(joining) {
                    Ok(())
                } else {
                    Err(AlterPartitionRefusal::IneligibleReplica(joining))
                }
            }
            7 if leader_epoch > 0 => {
                leader_epoch -= 1;
                Err(AlterPartitionRefusal::FencedLeaderEpoch)
            }
            8 if partition_epoch > 0 => {
                partition_epoch -= 1;
                Err(AlterPartitionRefusal::InvalidUpdateVersion)
            }
            9 if !followers.is_empty() => {
                // A follower that believes it leads (a stale leader).
                from = followers[0];
                Err(AlterPartitionRefusal::FencedLeaderEpoch)
            }
            _ => {
                isr.retain(|&id| id != leader);
                isr.extend(outside.first());
                Err(AlterPartitionRefusal::InvalidRequest(
                    "ISR without its leader",
                ))
            }
        };
        let answer = alter_partition(
            &self.image,
            &topic,
            index,
            from,
            leader_epoch,
            partition_epoch,
            isr,
        );
        match (answer, expected) {
            (Ok(record), Ok(())) => self.propose(vec![record]),
            (Err(refusal), Err(expected)) => {
                assert_eq!(refusal, expected);
                self.counts.alter_refusals += 1;
            }
            (answer, expected) => {
                panic!("AlterPartition answered {answer:?}, expected {expected:?}")
            }
        }
    }

    fn check_snapshot(&self) {
        let mut rebuilt = ClusterImage::default();
        for record in self.image.snapshot_records() {
            rebuilt.apply(&record).expect("snapshot records apply");
        }
        assert_eq!(rebuilt, self.image, "a snapshot rebuilds the image");
    }

    fn check(&mut self, before: &ClusterImage) {
        let image = &self.image;
        for topic in image.topics() {
            let unclean = topic.unclean_leader_election();
            for (index, p) in topic.partitions.iter().enumerate() {
                let at = format!("{}-{index} at {} ms: {p:?}", topic.name, self.now_ms);
                assert!(p.has_replicas(), "{at}: adopted or created with replicas");
                assert!(!p.isr.is_empty(), "{at}: empty ISR");
                assert!(
                    p.isr.iter().all(|id| p.replicas.contains(id)),
                    "{at}: ISR ⊄ replicas"
                );
                if p.leader != NO_LEADER {
                    assert!(p.isr.contains(&p.leader), "{at}: leader ∉ ISR");
                    assert!(image.is_live(p.leader), "{at}: a fenced leader");
                }
                for &id in &p.isr {
                    if !image.is_live(id) {
                        assert!(
                            p.isr == [id] && p.leader == NO_LEADER,
                            "{at}: fenced {id} in the ISR"
                        );
                    }
                }
                if p.leader == NO_LEADER {
                    assert!(
                        !p.isr.iter().any(|&id| image.is_live(id)),
                        "{at}: leaderless with a live ISR member"
                    );
                    assert!(
                        !unclean || !p.replicas.iter().any(|&id| image.is_live(id)),
                        "{at}: leaderless with a live replica, unclean election on"
                    );
                }
                let Some(old) = before
                    .topic(&topic.name)
                    .filter(|t| t.topic_id == topic.topic_id)
                    .and_then(|t| t.partitions.get(index))
                else {
                    continue;
                };
                assert!(
                    p.leader_epoch >= old.leader_epoch,
                    "{at}: leader epoch down"
                );
                assert!(
                    p.partition_epoch >= old.partition_epoch,
                    "{at}: partition epoch down"
                );
                if p.leader != old.leader {
                    self.counts.leader_changes += 1;
                    assert!(
                        p.leader_epoch > old.leader_epoch,
                        "{at}: new leader, same epoch (was {old:?})"
                    );
                    if p.leader != NO_LEADER && !old.isr.contains(&p.leader) {
                        assert!(unclean, "{at}: leader from outside the ISR {:?}", old.isr);
                        assert_eq!(p.isr, [p.leader], "{at}: unclean leader not alone");
                        self.counts.unclean_elections += 1;
                    }
                }
                if p.isr != old.isr {
                    self.counts.isr_changes += 1;
                }
                if p.leader != old.leader || p.isr != old.isr {
                    assert!(
                        p.partition_epoch > old.partition_epoch,
                        "{at}: changed, same partition epoch (was {old:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn cluster_decisions_keep_leaders_and_isrs_safe() {
    let totals = std::cell::RefCell::new(Counts::default());
    run_seeds(
        "cluster_decisions_keep_leaders_and_isrs_safe",
        0xC1_0000,
        |seed| {
            let mut sim = ClusterSim::new(seed);
            sim.run();
            let mut totals = totals.borrow_mut();
            totals.fences += sim.counts.fences;
            totals.leader_changes += sim.counts.leader_changes;
            totals.unclean_elections += sim.counts.unclean_elections;
            totals.isr_changes += sim.counts.isr_changes;
            totals.alter_refusals += sim.counts.alter_refusals;
        },
    );
    // The runs reached the cases the invariants are about (one seed alone
    // may miss some).
    let totals = totals.into_inner();
    let single_seed = std::env::var("SIM_SEED").is_ok();
    assert!(totals.fences > 0 && totals.leader_changes > 0, "{totals:?}");
    assert!(
        totals.isr_changes > 0 && totals.alter_refusals > 0,
        "{totals:?}"
    );
    assert!(single_seed || totals.unclean_elections > 0, "{totals:?}");
}

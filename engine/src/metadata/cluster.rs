//! The controller's decisions about brokers and partition leadership, as
//! pure functions of the image that return the records to propose (Kafka
//! KRaft's rules). The controller applies the records to a copy of its
//! image, proposes them to the Raft log, and every broker applies them once
//! committed; nothing here changes an image.
//!
//! The rules they keep, which `sim::cluster_sim` checks:
//! - a broker that is fenced or not registered leads nothing and is in no
//!   ISR, except as the last member of a partition without a leader: the
//!   partition waits for it, since it may hold records no one else has;
//! - a leader is in the ISR, the ISR within the replicas;
//! - without unclean election, a leader comes from the ISR;
//! - every leader change raises the leader epoch, every change the
//!   partition epoch.

use std::collections::BTreeMap;

use super::image::{
    distinct, BrokerRegistration, ClusterImage, MetadataRecord, PartitionImage, TopicImage,
    NO_LEADER,
};
use crate::protocol::{self as codes, ErrorCode};

/// The leader for `partition`: its first replica (the preferred one first)
/// that is in the ISR and `eligible` (registered and unfenced); with none
/// and `unclean`, its first eligible replica, which may lack records the
/// ISR had (the ISR then becomes just it).
pub fn elect_leader(
    partition: &PartitionImage,
    eligible: impl Fn(i32) -> bool,
    unclean: bool,
) -> Option<i32> {
    elect(&partition.replicas, &partition.isr, eligible, unclean)
}

fn elect(
    replicas: &[i32],
    isr: &[i32],
    eligible: impl Fn(i32) -> bool,
    unclean: bool,
) -> Option<i32> {
    let clean = replicas
        .iter()
        .copied()
        .find(|id| isr.contains(id) && eligible(*id));
    if clean.is_some() || !unclean {
        return clean;
    }
    replicas.iter().copied().find(|&id| eligible(id))
}

/// The `PartitionChange` from `current` to `leader` and `isr`, or None when
/// nothing changes. A leader from outside `isr` (unclean) makes the ISR
/// just the leader.
fn change(
    topic: &TopicImage,
    index: usize,
    current: &PartitionImage,
    leader: Option<i32>,
    isr: Vec<i32>,
) -> Option<MetadataRecord> {
    let leader = leader.unwrap_or(NO_LEADER);
    let isr = if leader == NO_LEADER || isr.contains(&leader) {
        isr
    } else {
        vec![leader]
    };
    if leader == current.leader && isr == current.isr {
        return None;
    }
    let leader_epoch = if leader == current.leader {
        current.leader_epoch
    } else {
        // Saturating: an epoch at i32::MAX makes a record that `check`
        // refuses, rather than one that wraps.
        current.leader_epoch.saturating_add(1)
    };
    Some(MetadataRecord::PartitionChange {
        topic: topic.name.clone(),
        partition: u32::try_from(index).expect("partition counts fit u32"),
        leader,
        leader_epoch,
        isr,
        partition_epoch: current.partition_epoch.saturating_add(1),
    })
}

/// The changes that take `node_id` out of every leadership and ISR, when it
/// is fenced, unregistered or restarts: it leaves each ISR unless it is the
/// last member (the partition then waits for it, leaderless, unless the
/// topic allows unclean election and another replica is live); where it
/// led, or no one did, the ISR elects a new leader.
fn leave_partitions(image: &ClusterImage, node_id: i32) -> Vec<MetadataRecord> {
    let eligible = |id: i32| id != node_id && image.is_live(id);
    let mut records = Vec::new();
    for topic in image.topics() {
        let unclean = topic.unclean_leader_election();
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader != node_id && !partition.isr.contains(&node_id) {
                continue;
            }
            let isr: Vec<i32> = if partition.isr == [node_id] {
                partition.isr.clone()
            } else {
                let rest = partition.isr.iter().copied();
                rest.filter(|&id| id != node_id).collect()
            };
            let leader = if partition.leader == node_id || partition.leader == NO_LEADER {
                elect(&partition.replicas, &isr, eligible, unclean)
            } else {
                Some(partition.leader)
            };
            records.extend(change(topic, index, partition, leader, isr));
        }
    }
    records
}

/// Records for a broker's registration: `RegisterBroker` at the next broker
/// epoch, and, since the new registration starts fenced, its leaving of
/// every leadership and ISR its previous incarnation held (or that a
/// single-node data dir adopted for it). Empty for a retry: the broker is
/// registered with this incarnation already and keeps its epoch.
pub fn register_broker(
    image: &ClusterImage,
    registration: &BrokerRegistration,
) -> Vec<MetadataRecord> {
    let node_id = registration.node_id;
    if image
        .broker(node_id)
        .is_some_and(|b| b.registration.incarnation_id == registration.incarnation_id)
    {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::RegisterBroker {
        node_id,
        broker_epoch: image.next_broker_epoch(),
        incarnation_id: registration.incarnation_id,
        host: registration.host.clone(),
        replication_host: registration.replication_host.clone(),
        rack: registration.rack.clone(),
        shard_count: registration.shard_count,
        port: registration.port,
        replication_port_base: registration.replication_port_base,
    }];
    records.extend(leave_partitions(image, node_id));
    records
}

/// Records that fence `node_id`: `FenceBroker` (unless it is fenced
/// already) and a `PartitionChange` for every partition it leads or is in
/// the ISR of (see `leave_partitions`). Empty for an unregistered broker.
pub fn fence_broker(image: &ClusterImage, node_id: i32) -> Vec<MetadataRecord> {
    let Some(broker) = image.broker(node_id) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    if !broker.fenced {
        records.push(MetadataRecord::FenceBroker {
            node_id,
            broker_epoch: broker.broker_epoch,
        });
    }
    records.extend(leave_partitions(image, node_id));
    records
}

/// Records that unfence `node_id`: `UnfenceBroker` (unless it is unfenced
/// already) and, for every partition without a leader that it may lead (in
/// its ISR; with unclean election, any of its replicas), a change electing
/// a leader. Empty for an unregistered broker.
pub fn unfence_broker(image: &ClusterImage, node_id: i32) -> Vec<MetadataRecord> {
    let Some(broker) = image.broker(node_id) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    if broker.fenced {
        records.push(MetadataRecord::UnfenceBroker {
            node_id,
            broker_epoch: broker.broker_epoch,
        });
    }
    let eligible = |id: i32| id == node_id || image.is_live(id);
    for topic in image.topics() {
        let unclean = topic.unclean_leader_election();
        for (index, partition) in topic.partitions.iter().enumerate() {
            let may_lead = partition.isr.contains(&node_id)
                || (unclean && partition.replicas.contains(&node_id));
            if partition.leader != NO_LEADER || !may_lead {
                continue;
            }
            let leader = elect_leader(partition, eligible, unclean);
            records.extend(change(
                topic,
                index,
                partition,
                leader,
                partition.isr.clone(),
            ));
        }
    }
    records
}

/// Records that unregister `node_id`: `UnregisterBroker` and its leaving of
/// every leadership and ISR, as when fenced. Empty for an unregistered
/// broker. The controller forgets its session too.
pub fn unregister_broker(image: &ClusterImage, node_id: i32) -> Vec<MetadataRecord> {
    if image.broker(node_id).is_none() {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::UnregisterBroker { node_id }];
    records.extend(leave_partitions(image, node_id));
    records
}

/// Why the controller refuses a leader's AlterPartition, as Kafka answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionRefusal {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    /// The sender is not the leader, or not at the current leader epoch.
    #[error("not the partition's leader at its current leader epoch")]
    FencedLeaderEpoch,
    /// The sender's partition epoch is not the current one: it has not seen
    /// a change yet.
    #[error("partition epoch is not the current one")]
    InvalidUpdateVersion,
    #[error("replica {0} is fenced or not registered")]
    IneligibleReplica(i32),
    #[error("invalid ISR: {0}")]
    InvalidRequest(&'static str),
}

impl AlterPartitionRefusal {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AlterPartitionRefusal::UnknownTopicOrPartition => codes::UNKNOWN_TOPIC_OR_PARTITION,
            AlterPartitionRefusal::FencedLeaderEpoch => codes::FENCED_LEADER_EPOCH,
            AlterPartitionRefusal::InvalidUpdateVersion => codes::INVALID_UPDATE_VERSION,
            AlterPartitionRefusal::IneligibleReplica(_) => codes::INELIGIBLE_REPLICA,
            AlterPartitionRefusal::InvalidRequest(_) => codes::INVALID_REQUEST,
        }
    }
}

/// Kafka's AlterPartition from a partition's leader: the ISR it asks for,
/// as a `PartitionChange` that keeps the leader and its epoch. The ISR must
/// hold the leader, be within the replicas, and add only live brokers
/// (registered, unfenced); the leader must be current and have seen the
/// latest change (its partition epoch).
pub fn alter_partition(
    image: &ClusterImage,
    topic: &str,
    partition: u32,
    from_leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<i32>,
) -> Result<MetadataRecord, AlterPartitionRefusal> {
    let current = image
        .topic(topic)
        .and_then(|t| t.partition(partition))
        .ok_or(AlterPartitionRefusal::UnknownTopicOrPartition)?;
    if current.leader == NO_LEADER
        || from_leader != current.leader
        || leader_epoch != current.leader_epoch
    {
        return Err(AlterPartitionRefusal::FencedLeaderEpoch);
    }
    if partition_epoch != current.partition_epoch {
        return Err(AlterPartitionRefusal::InvalidUpdateVersion);
    }
    if !new_isr.contains(&from_leader) {
        return Err(AlterPartitionRefusal::InvalidRequest(
            "ISR without its leader",
        ));
    }
    if !new_isr.iter().all(|id| current.replicas.contains(id)) {
        return Err(AlterPartitionRefusal::InvalidRequest(
            "ISR member not a replica",
        ));
    }
    if !distinct(&new_isr) {
        return Err(AlterPartitionRefusal::InvalidRequest(
            "ISR member listed twice",
        ));
    }
    if let Some(&id) = new_isr
        .iter()
        .find(|id| !current.isr.contains(id) && !image.is_live(**id))
    {
        return Err(AlterPartitionRefusal::IneligibleReplica(id));
    }
    Ok(MetadataRecord::PartitionChange {
        topic: topic.to_string(),
        partition,
        leader: current.leader,
        leader_epoch: current.leader_epoch,
        isr: new_isr,
        partition_epoch: current.partition_epoch.saturating_add(1),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    broker_epoch: i64,
    last_heartbeat_ms: i64,
}

/// The active controller's memory of broker heartbeats (not in the image:
/// a new controller starts over with `renew_all`). Time is an argument.
#[derive(Debug, Clone, Default)]
pub struct BrokerSessions {
    sessions: BTreeMap<i32, Session>,
}

impl BrokerSessions {
    /// A heartbeat from `node_id` at `broker_epoch` (the caller has checked
    /// both against the image). A heartbeat from another epoch replaces the
    /// session: it is a new registration's.
    pub fn heartbeat(&mut self, node_id: i32, broker_epoch: i64, now_ms: i64) {
        let session = self.sessions.entry(node_id).or_insert(Session {
            broker_epoch,
            last_heartbeat_ms: now_ms,
        });
        if session.broker_epoch != broker_epoch {
            *session = Session {
                broker_epoch,
                last_heartbeat_ms: now_ms,
            };
        }
        session.last_heartbeat_ms = session.last_heartbeat_ms.max(now_ms);
    }

    /// Starts a session at `now_ms` for every registered broker, as a newly
    /// active controller does (Kafka too): it has not heard them yet and
    /// must not fence them for that.
    pub fn renew_all(&mut self, image: &ClusterImage, now_ms: i64) {
        self.sessions.clear();
        for broker in image.brokers() {
            self.heartbeat(broker.node_id(), broker.broker_epoch, now_ms);
        }
    }

    /// Unfenced brokers whose session expired: no heartbeat at their current
    /// epoch within `session_timeout_ms` before `now_ms`. The controller
    /// fences them (`fence_broker`).
    pub fn expired(&self, image: &ClusterImage, now_ms: i64, session_timeout_ms: i64) -> Vec<i32> {
        image
            .live_brokers()
            .filter(|broker| match self.sessions.get(&broker.node_id()) {
                Some(s) if s.broker_epoch == broker.broker_epoch => {
                    now_ms.saturating_sub(s.last_heartbeat_ms) > session_timeout_ms
                }
                _ => true,
            })
            .map(|broker| broker.node_id())
            .collect()
    }

    /// The last heartbeat heard from `node_id`, if any.
    pub fn last_heartbeat_ms(&self, node_id: i32) -> Option<i64> {
        self.sessions.get(&node_id).map(|s| s.last_heartbeat_ms)
    }

    /// Drops `node_id`'s session (it unregistered).
    pub fn forget(&mut self, node_id: i32) {
        self.sessions.remove(&node_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionPlacement, PartitionState};

    fn registration(node_id: i32, incarnation: u8) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: [incarnation; 16],
            host: format!("broker{node_id}"),
            port: 9092,
            replication_host: format!("broker{node_id}"),
            replication_port_base: 19092,
            shard_count: 2,
            rack: None,
        }
    }

    fn apply_all(image: &mut ClusterImage, records: &[MetadataRecord]) {
        for record in records {
            image
                .apply(record)
                .unwrap_or_else(|e| panic!("{record:?}: {e}"));
        }
    }

    /// Brokers 1, 2, 3 live; topic "t" with partition 0 on [1, 2, 3] and
    /// partition 1 on [2, 3].
    fn cluster(unclean: bool) -> ClusterImage {
        let mut image = ClusterImage::default();
        for id in [1, 2, 3] {
            let records = register_broker(&image, &registration(id, 1));
            apply_all(&mut image, &records);
            let records = unfence_broker(&image, id);
            apply_all(&mut image, &records);
        }
        let placement = |replicas: Vec<i32>| PartitionPlacement { slot: 0, replicas };
        let create = MetadataRecord::CreateReplicatedTopic {
            name: "t".into(),
            topic_id: [1; 16],
            partitions: vec![placement(vec![1, 2, 3]), placement(vec![2, 3])],
            configs: vec![("unclean.leader.election.enable".into(), unclean.to_string())],
        };
        apply_all(&mut image, &[create]);
        image
    }

    fn partition(image: &ClusterImage, index: u32) -> PartitionImage {
        image.topic("t").unwrap().partition(index).unwrap().clone()
    }

    /// (leader, leader epoch, ISR, partition epoch)
    fn state(image: &ClusterImage, index: u32) -> (i32, i32, Vec<i32>, i32) {
        let p = partition(image, index);
        (p.leader, p.leader_epoch, p.isr, p.partition_epoch)
    }

    #[test]
    fn election_prefers_the_first_eligible_isr_member() {
        let p = PartitionImage {
            slot: 0,
            replicas: vec![3, 1, 2],
            isr: vec![1, 2],
            leader: NO_LEADER,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        assert_eq!(elect_leader(&p, |_| true, false), Some(1));
        assert_eq!(elect_leader(&p, |id| id != 1, false), Some(2));
        assert_eq!(elect_leader(&p, |id| id == 3, false), None);
        assert_eq!(elect_leader(&p, |id| id == 3, true), Some(3));
        assert_eq!(elect_leader(&p, |id| id != 3, true), Some(1));
        assert_eq!(elect_leader(&p, |_| false, true), None);
    }

    #[test]
    fn fencing_a_leader_elects_the_next_isr_member() {
        let mut image = cluster(false);
        let records = fence_broker(&image, 1);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            MetadataRecord::FenceBroker {
                node_id: 1,
                broker_epoch: 1
            }
        );
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 0), (2, 1, vec![2, 3], 1));
        assert_eq!(state(&image, 1), (2, 0, vec![2, 3], 0));
        // A follower leaves the ISR; its leader and leader epoch stay.
        let records = fence_broker(&image, 3);
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 0), (2, 1, vec![2], 2));
        assert_eq!(state(&image, 1), (2, 0, vec![2], 1));
        // Fenced already, nothing to change; unregistered, nothing at all.
        assert_eq!(fence_broker(&image, 3), vec![]);
        assert_eq!(fence_broker(&image, 9), vec![]);
    }

    #[test]
    fn the_last_isr_member_stays_and_the_partition_waits_for_it() {
        let mut image = cluster(false);
        for id in [3, 2] {
            let records = fence_broker(&image, id);
            apply_all(&mut image, &records);
        }
        assert_eq!(state(&image, 1), (NO_LEADER, 1, vec![2], 2));
        assert_eq!(state(&image, 0), (1, 0, vec![1], 2));
        // 3 comes back: not in partition 1's ISR, so no unclean election.
        let records = unfence_broker(&image, 3);
        assert_eq!(records.len(), 1);
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 1), (NO_LEADER, 1, vec![2], 2));
        // 2 comes back: it leads again, at a new leader epoch.
        let records = unfence_broker(&image, 2);
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 1), (2, 2, vec![2], 3));
        assert_eq!(unfence_broker(&image, 2), vec![]);
    }

    #[test]
    fn unclean_election_takes_a_live_replica_outside_the_isr() {
        let mut image = cluster(true);
        let records = fence_broker(&image, 3);
        apply_all(&mut image, &records);
        let records = fence_broker(&image, 2);
        apply_all(&mut image, &records);
        // Partition 1's last ISR member (2) is fenced and 3 is too: no one.
        assert_eq!(state(&image, 1), (NO_LEADER, 1, vec![2], 2));
        // 3 returns: with unclean election it leads, alone in the ISR.
        let records = unfence_broker(&image, 3);
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 1), (3, 2, vec![3], 3));
        // Partition 0 led by 1, alone: fencing 1 elects 3 right away.
        let records = fence_broker(&image, 1);
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 0), (3, 1, vec![3], 3));
    }

    #[test]
    fn a_restart_registers_fenced_and_leaves_its_partitions() {
        let mut image = cluster(false);
        // A retry of the registration changes nothing.
        assert_eq!(register_broker(&image, &registration(1, 1)), vec![]);
        let records = register_broker(&image, &registration(1, 2));
        assert!(matches!(
            records[0],
            MetadataRecord::RegisterBroker {
                node_id: 1,
                broker_epoch: 4,
                ..
            }
        ));
        apply_all(&mut image, &records);
        assert!(image.broker(1).unwrap().fenced);
        assert_eq!(state(&image, 0), (2, 1, vec![2, 3], 1));
        // Unregistering leaves partitions the same way.
        let records = unregister_broker(&image, 2);
        assert_eq!(records[0], MetadataRecord::UnregisterBroker { node_id: 2 });
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 0), (3, 2, vec![3], 2));
        assert_eq!(state(&image, 1), (3, 1, vec![3], 1));
        assert_eq!(unregister_broker(&image, 2), vec![]);
    }

    #[test]
    fn an_adopted_single_node_leads_again_once_registered_and_unfenced() {
        let mut image = ClusterImage::default();
        let legacy = MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: [1; 16],
            partition_shards: vec![0, 1],
            configs: vec![],
        };
        apply_all(&mut image, &[legacy]);
        assert_eq!(image.adopt_legacy_partitions(1), 2);
        // Registered, it is fenced: it stays the last ISR member, leaderless.
        let records = register_broker(&image, &registration(1, 1));
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 0), (NO_LEADER, 1, vec![1], 1));
        let records = unfence_broker(&image, 1);
        apply_all(&mut image, &records);
        assert_eq!(state(&image, 0), (1, 2, vec![1], 2));
        assert_eq!(state(&image, 1), (1, 2, vec![1], 2));
    }

    #[test]
    fn alter_partition_takes_isr_changes_from_the_current_leader_only() {
        let mut image = cluster(false);
        let alter = |image: &ClusterImage, from, leader_epoch, partition_epoch, isr: &[i32]| {
            alter_partition(
                image,
                "t",
                0,
                from,
                leader_epoch,
                partition_epoch,
                isr.to_vec(),
            )
        };
        let shrink = alter(&image, 1, 0, 0, &[1, 3]).unwrap();
        apply_all(&mut image, &[shrink]);
        assert_eq!(state(&image, 0), (1, 0, vec![1, 3], 1));
        let refused =
            |r: Result<MetadataRecord, AlterPartitionRefusal>| r.unwrap_err().error_code();
        assert_eq!(
            refused(alter(&image, 2, 0, 1, &[2])),
            codes::FENCED_LEADER_EPOCH
        );
        assert_eq!(
            refused(alter(&image, 1, 1, 1, &[1])),
            codes::FENCED_LEADER_EPOCH
        );
        assert_eq!(
            refused(alter(&image, 1, 0, 0, &[1])),
            codes::INVALID_UPDATE_VERSION
        );
        assert_eq!(
            refused(alter(&image, 1, 0, 1, &[3])),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            refused(alter(&image, 1, 0, 1, &[1, 4])),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            refused(alter(&image, 1, 0, 1, &[1, 3, 3])),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            refused(alter_partition(&image, "t", 5, 1, 0, 1, vec![1])),
            codes::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            refused(alter_partition(&image, "u", 0, 1, 0, 1, vec![1])),
            codes::UNKNOWN_TOPIC_OR_PARTITION
        );
        // A fenced broker may not join; once unfenced it may.
        let records = fence_broker(&image, 2);
        apply_all(&mut image, &records);
        assert_eq!(
            alter(&image, 1, 0, 1, &[1, 2, 3]),
            Err(AlterPartitionRefusal::IneligibleReplica(2))
        );
        // Kafka's numbers.
        assert_eq!(
            (codes::INELIGIBLE_REPLICA, codes::INVALID_UPDATE_VERSION),
            (107, 95)
        );
        let records = unfence_broker(&image, 2);
        apply_all(&mut image, &records);
        let expand = alter(&image, 1, 0, 1, &[1, 3, 2]).unwrap();
        apply_all(&mut image, &[expand]);
        assert_eq!(state(&image, 0), (1, 0, vec![1, 3, 2], 2));
    }

    #[test]
    fn partitions_without_replicas_refuse_alter_partition() {
        let mut image = ClusterImage::default();
        let restore = MetadataRecord::RestoreTopic {
            name: "t".into(),
            topic_id: [1; 16],
            partitions: vec![PartitionState {
                slot: 0,
                replicas: vec![],
                isr: vec![],
                leader: NO_LEADER,
                leader_epoch: 0,
                partition_epoch: 0,
            }],
            configs: vec![],
        };
        apply_all(&mut image, &[restore]);
        assert_eq!(
            alter_partition(&image, "t", 0, NO_LEADER, 0, 0, vec![]),
            Err(AlterPartitionRefusal::FencedLeaderEpoch)
        );
    }

    #[test]
    fn sessions_expire_without_heartbeats_at_the_current_epoch() {
        let mut image = cluster(false);
        let mut sessions = BrokerSessions::default();
        // A new controller has heard no one: it starts every session now.
        assert_eq!(sessions.expired(&image, 0, 100), vec![1, 2, 3]);
        sessions.renew_all(&image, 1_000);
        assert_eq!(sessions.expired(&image, 1_100, 100), Vec::<i32>::new());
        sessions.heartbeat(1, 1, 1_050);
        sessions.heartbeat(2, 2, 1_080);
        assert_eq!(sessions.last_heartbeat_ms(2), Some(1_080));
        assert_eq!(sessions.expired(&image, 1_101, 100), vec![3]);
        assert_eq!(sessions.expired(&image, 1_151, 100), vec![1, 3]);
        // Time going back does not move a heartbeat back.
        sessions.heartbeat(2, 2, 10);
        assert_eq!(sessions.last_heartbeat_ms(2), Some(1_080));
        // A fenced broker is not reported again.
        let records = fence_broker(&image, 3);
        apply_all(&mut image, &records);
        assert_eq!(sessions.expired(&image, 1_151, 100), vec![1]);
        // A heartbeat from an older registration keeps no one alive.
        let records = register_broker(&image, &registration(2, 9));
        apply_all(&mut image, &records);
        let records = unfence_broker(&image, 2);
        apply_all(&mut image, &records);
        assert_eq!(sessions.expired(&image, 1_100, 100), vec![2]);
        let epoch = image.broker(2).unwrap().broker_epoch;
        sessions.heartbeat(2, epoch, 1_100);
        assert_eq!(sessions.expired(&image, 1_150, 100), Vec::<i32>::new());
        sessions.forget(2);
        assert_eq!(sessions.last_heartbeat_ms(2), None);
    }
}

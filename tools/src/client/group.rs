//! Consumer groups from the client side: the "consumer" embedded protocol
//! (subscription and assignment, each an i16 version then the struct), a
//! range assignor, committed offsets, and a simple classic-protocol member
//! (join, sync, heartbeat, commit, leave).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use engine::protocol::kafka_protocol::messages::{
    consumer_protocol_assignment::TopicPartition as AssignedTopic,
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestTopic,
    sync_group_request::SyncGroupRequestAssignment,
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use engine::protocol::kafka_protocol::protocol::{Decodable, Encodable, Message};

use super::{error_name, str, topic_name, Client};

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;

pub type Assignment = BTreeMap<String, Vec<i32>>;

fn with_version<M: Encodable>(message: &M, version: i16) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

fn versioned<M: Decodable + Message>(mut bytes: Bytes) -> anyhow::Result<M> {
    if bytes.len() < 2 {
        bail!("consumer protocol data too short");
    }
    // A newer member may write a newer version; its prefix is a superset we
    // can read at our highest version.
    let version = bytes.get_i16().clamp(M::VERSIONS.min, M::VERSIONS.max);
    M::decode(&mut bytes, version)
}

pub fn encode_subscription(topics: &[String]) -> anyhow::Result<Bytes> {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| str(t)).collect());
    with_version(&subscription, 0)
}

pub fn decode_subscription(bytes: Bytes) -> anyhow::Result<Vec<String>> {
    let s: ConsumerProtocolSubscription = versioned(bytes)?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

pub fn encode_assignment(assignment: &Assignment) -> anyhow::Result<Bytes> {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assignment
            .iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    with_version(&a, 0)
}

pub fn decode_assignment(bytes: Bytes) -> anyhow::Result<Assignment> {
    if bytes.is_empty() {
        return Ok(Assignment::new());
    }
    let a: ConsumerProtocolAssignment = versioned(bytes)?;
    let mut out = Assignment::new();
    for t in a.assigned_partitions {
        out.entry(t.topic.0.to_string())
            .or_default()
            .extend(t.partitions);
    }
    Ok(out)
}

/// Kafka's range assignor: per topic, members subscribed to it in member id
/// order get consecutive ranges; the first `partitions % members` get one
/// more.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &count) in partition_counts {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() || count <= 0 {
            continue;
        }
        let per = count / members.len() as i32;
        let extra = count % members.len() as i32;
        let mut next = 0;
        for (i, member) in members.iter().enumerate() {
            let n = per + i32::from((i as i32) < extra);
            if n > 0 {
                out.get_mut(*member)
                    .expect("every member has an entry")
                    .insert(topic.clone(), (next..next + n).collect());
            }
            next += n;
        }
    }
    out
}

/// Committed offsets of `group` (topics None: all), as topic -> partition ->
/// offset; partitions without a commit are left out.
pub fn committed_offsets(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    topics: Option<&Assignment>,
) -> anyhow::Result<BTreeMap<String, BTreeMap<i32, i64>>> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(str(group)))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        }));
    let response = client.send_to(coordinator, &request)?;
    if response.error_code != 0 {
        bail!(
            "cannot fetch the offsets of group '{group}': {}",
            error_name(response.error_code)
        );
    }
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!(
                    "cannot fetch the offset of group '{group}' for {}/{}: {}",
                    t.name.0.as_str(),
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
            if p.committed_offset >= 0 {
                out.entry(t.name.0.to_string())
                    .or_default()
                    .insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group`. With generation -1 and an empty member id
/// this is an admin commit, which the coordinator accepts only while the
/// group has no active members.
pub fn commit_offsets(
    client: &mut Client,
    coordinator: i32,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<String, BTreeMap<i32, i64>>,
) -> anyhow::Result<()> {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(str(member_id))
        .with_retention_time_ms(-1)
        .with_topics(
            offsets
                .iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(
                            ps.iter()
                                .map(|(&p, &o)| {
                                    OffsetCommitRequestPartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = client.send_to(coordinator, &request)?;
    for t in &response.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                let hint = match p.error_code {
                    25 | 22 | 27 => " — the group has active members; stop its consumers first",
                    _ => "",
                };
                bail!(
                    "cannot commit the offset of group '{group}' for {}/{}: {}{hint}",
                    t.name.0.as_str(),
                    p.partition_index,
                    error_name(p.error_code)
                );
            }
        }
    }
    Ok(())
}

/// A classic-protocol group member subscribed to some topics.
pub struct Member {
    pub group: String,
    pub coordinator: i32,
    pub member_id: String,
    pub generation: i32,
    pub assignment: Assignment,
    topics: Vec<String>,
}

impl Member {
    pub fn join(client: &mut Client, group: &str, topics: &[String]) -> anyhow::Result<Member> {
        let coordinator = client.coordinator(group)?;
        let mut member = Member {
            group: group.to_string(),
            coordinator,
            member_id: String::new(),
            generation: -1,
            assignment: Assignment::new(),
            topics: topics.to_vec(),
        };
        member.rejoin(client)?;
        Ok(member)
    }

    /// Joins (or re-joins) the group and syncs the assignment; as the leader,
    /// computes the range assignment for everybody.
    pub fn rejoin(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let metadata = encode_subscription(&self.topics)?;
        // JoinGroup waits for the rebalance (and the initial delay).
        let wait = Duration::from_millis(REBALANCE_TIMEOUT_MS as u64) + client.timeout;
        client.node(self.coordinator)?.set_read_timeout(wait);
        for _attempt in 0..10 {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(str(&self.group)))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(str(&self.member_id))
                .with_protocol_type(str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(str("range"))
                    .with_metadata(metadata.clone())]);
            let join = client.send_to(self.coordinator, &request)?;
            match join.error_code {
                0 => {}
                MEMBER_ID_REQUIRED => {
                    // KIP-394: join again with the id the coordinator gave us.
                    self.member_id = join.member_id.to_string();
                    continue;
                }
                REBALANCE_IN_PROGRESS => continue,
                25 => {
                    self.member_id.clear();
                    continue;
                }
                code => bail!("cannot join group '{}': {}", self.group, error_name(code)),
            }
            self.member_id = join.member_id.to_string();
            self.generation = join.generation_id;
            let mut assignments = Vec::new();
            if join.leader == join.member_id {
                let mut subscriptions = BTreeMap::new();
                for m in &join.members {
                    let topics = decode_subscription(m.metadata.clone()).with_context(|| {
                        format!("member {} sent a bad subscription", m.member_id.as_str())
                    })?;
                    subscriptions.insert(m.member_id.to_string(), topics);
                }
                let mut all_topics: Vec<String> =
                    subscriptions.values().flatten().cloned().collect();
                all_topics.sort();
                all_topics.dedup();
                let names: Vec<&str> = all_topics.iter().map(|s| s.as_str()).collect();
                let counts: BTreeMap<String, i32> = client
                    .metadata(Some(&names))?
                    .into_iter()
                    .filter(|t| t.error_code == 0)
                    .map(|t| (t.name.clone(), t.partitions.len() as i32))
                    .collect();
                for (member, assignment) in range_assign(&subscriptions, &counts) {
                    assignments.push(
                        SyncGroupRequestAssignment::default()
                            .with_member_id(str(&member))
                            .with_assignment(encode_assignment(&assignment)?),
                    );
                }
            }
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(str(&self.group)))
                .with_generation_id(self.generation)
                .with_member_id(str(&self.member_id))
                .with_protocol_type(Some(str("consumer")))
                .with_protocol_name(Some(str("range")))
                .with_assignments(assignments);
            let sync = client.send_to(self.coordinator, &sync)?;
            match sync.error_code {
                0 => {
                    self.assignment = decode_assignment(sync.assignment)?;
                    let timeout = client.timeout;
                    client.node(self.coordinator)?.set_read_timeout(timeout);
                    return Ok(());
                }
                REBALANCE_IN_PROGRESS | 22 => continue,
                code => bail!("cannot sync group '{}': {}", self.group, error_name(code)),
            }
        }
        bail!("group '{}' kept rebalancing; try again", self.group)
    }

    /// Sends a heartbeat; Ok(false) when the group is rebalancing and this
    /// member must re-join.
    pub fn heartbeat(&mut self, client: &mut Client) -> anyhow::Result<bool> {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(str(&self.group)))
            .with_generation_id(self.generation)
            .with_member_id(str(&self.member_id));
        let response = client.send_to(self.coordinator, &request)?;
        match response.error_code {
            0 => Ok(true),
            REBALANCE_IN_PROGRESS | 22 | 25 => Ok(false),
            code => bail!("heartbeat to group '{}': {}", self.group, error_name(code)),
        }
    }

    pub fn commit(
        &self,
        client: &mut Client,
        offsets: &BTreeMap<String, BTreeMap<i32, i64>>,
    ) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        commit_offsets(
            client,
            self.coordinator,
            &self.group,
            self.generation,
            &self.member_id,
            offsets,
        )
    }

    pub fn leave(&self, client: &mut Client) -> anyhow::Result<()> {
        let connection = client.node(self.coordinator)?;
        let version = connection.version_for::<LeaveGroupRequest>()?;
        let mut request = LeaveGroupRequest::default().with_group_id(GroupId(str(&self.group)));
        if version >= 3 {
            request = request.with_members(vec![
                MemberIdentity::default().with_member_id(str(&self.member_id))
            ]);
        } else {
            request = request.with_member_id(str(&self.member_id));
        }
        let response = connection.send_version(&request, version)?;
        if response.error_code != 0 {
            bail!(
                "cannot leave group '{}': {}",
                self.group,
                error_name(response.error_code)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_spreads_partitions() {
        let subs: BTreeMap<String, Vec<String>> = [
            ("a".to_string(), vec!["t".to_string()]),
            ("b".to_string(), vec!["t".to_string(), "u".to_string()]),
        ]
        .into();
        let counts: BTreeMap<String, i32> = [("t".to_string(), 5), ("u".to_string(), 2)].into();
        let out = range_assign(&subs, &counts);
        assert_eq!(out["a"]["t"], vec![0, 1, 2]);
        assert_eq!(out["b"]["t"], vec![3, 4]);
        assert_eq!(out["b"]["u"], vec![0, 1]);
        assert!(!out["a"].contains_key("u"));
    }

    #[test]
    fn consumer_protocol_round_trips() {
        let topics = vec!["x".to_string(), "y".to_string()];
        let bytes = encode_subscription(&topics).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(decode_subscription(bytes).unwrap(), topics);
        let assignment: Assignment = [("x".to_string(), vec![0, 2])].into();
        let bytes = encode_assignment(&assignment).unwrap();
        assert_eq!(decode_assignment(bytes).unwrap(), assignment);
    }
}

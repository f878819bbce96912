//! Group records in `__consumer_offsets`, in Kafka's own layouts so that
//! Kafka tooling can read them: OffsetCommitKey v1 / OffsetCommitValue v3 and
//! GroupMetadataKey v2 / GroupMetadataValue v3. A null value is a tombstone.

use bytes::Bytes;

use crate::protocol::wire::{WireReader, WireWriter};

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
/// Bound on members read back from one group record.
const PERSISTED_MEMBERS_MAX: i32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedGroup {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<PersistedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupLogRecord {
    Offset {
        group_id: String,
        topic: String,
        partition: i32,
        value: Option<OffsetAndMetadata>,
    },
    Group {
        group_id: String,
        value: Option<PersistedGroup>,
    },
}

impl GroupLogRecord {
    pub fn group_id(&self) -> &str {
        match self {
            GroupLogRecord::Offset { group_id, .. } | GroupLogRecord::Group { group_id, .. } => {
                group_id
            }
        }
    }

    /// (key, value) as stored in a record.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = WireWriter::default();
        match self {
            GroupLogRecord::Offset {
                group_id,
                topic,
                partition,
                value,
            } => {
                key.i16(OFFSET_KEY_VERSION)
                    .string(group_id)
                    .string(topic)
                    .i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut w = WireWriter::default();
                    w.i16(OFFSET_VALUE_VERSION)
                        .i64(v.offset)
                        .i32(v.leader_epoch)
                        .string(&v.metadata)
                        .i64(v.commit_timestamp_ms);
                    Bytes::from(w.buf)
                });
                (Bytes::from(key.buf), value)
            }
            GroupLogRecord::Group { group_id, value } => {
                key.i16(GROUP_KEY_VERSION).string(group_id);
                let value = value.as_ref().map(|g| {
                    let mut w = WireWriter::default();
                    w.i16(GROUP_VALUE_VERSION)
                        .string(&g.protocol_type)
                        .i32(g.generation_id)
                        .nullable_string(g.protocol_name.as_deref())
                        .nullable_string(g.leader_id.as_deref())
                        .i64(g.state_timestamp_ms)
                        .i32(g.members.len() as i32);
                    for m in &g.members {
                        w.string(&m.member_id)
                            .nullable_string(m.group_instance_id.as_deref())
                            .string(&m.client_id)
                            .string(&m.client_host)
                            .i32(m.rebalance_timeout_ms)
                            .i32(m.session_timeout_ms)
                            .bytes(&m.subscription)
                            .bytes(&m.assignment);
                    }
                    Bytes::from(w.buf)
                });
                (Bytes::from(key.buf), value)
            }
        }
    }

    /// Decodes a stored record; None for keys of other versions or damage.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<GroupLogRecord> {
        let mut k = WireReader::new(key);
        match k.i16()? {
            0 | 1 => {
                let group_id = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = match value {
                    None => None,
                    Some(bytes) => {
                        let mut v = WireReader::new(bytes);
                        let version = v.i16()?;
                        // v4+ is a flexible (compact) layout: not readable
                        // as v3.
                        if !(0..=OFFSET_VALUE_VERSION).contains(&version) {
                            return None;
                        }
                        let offset = v.i64()?;
                        let leader_epoch = if version >= 3 { v.i32()? } else { -1 };
                        let metadata = v.string()?;
                        let commit_timestamp_ms = v.i64()?;
                        Some(OffsetAndMetadata {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp_ms,
                        })
                    }
                };
                Some(GroupLogRecord::Offset {
                    group_id,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group_id = k.string()?;
                let value = match value {
                    None => None,
                    Some(bytes) => Some(decode_group_value(bytes)?),
                };
                Some(GroupLogRecord::Group { group_id, value })
            }
            _ => None,
        }
    }
}

fn decode_group_value(bytes: &[u8]) -> Option<PersistedGroup> {
    let mut v = WireReader::new(bytes);
    let version = v.i16()?;
    if !(0..=GROUP_VALUE_VERSION).contains(&version) {
        return None;
    }
    let protocol_type = v.string()?;
    let generation_id = v.i32()?;
    let protocol_name = v.nullable_string()?;
    let leader_id = v.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { v.i64()? } else { -1 };
    let count = v.array_len(PERSISTED_MEMBERS_MAX)?;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member_id = v.string()?;
        let group_instance_id = if version >= 3 {
            v.nullable_string()?
        } else {
            None
        };
        let client_id = v.string()?;
        let client_host = v.string()?;
        let rebalance_timeout_ms = if version >= 1 { v.i32()? } else { 0 };
        let session_timeout_ms = v.i32()?;
        let subscription = v.bytes()?;
        let assignment = v.bytes()?;
        members.push(PersistedMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(PersistedGroup {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        state_timestamp_ms,
        members,
    })
}

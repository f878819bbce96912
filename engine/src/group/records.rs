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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::group::{offsets_partition_for, OFFSETS_TOPIC_PARTITIONS_DEFAULT};

    fn offset_value() -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset: 42,
            leader_epoch: 5,
            metadata: "m".to_string(),
            commit_timestamp_ms: 1_000,
        }
    }

    fn offset_record(value: Option<OffsetAndMetadata>) -> GroupLogRecord {
        GroupLogRecord::Offset {
            group_id: "g".to_string(),
            topic: "t".to_string(),
            partition: 7,
            value,
        }
    }

    fn member(id: &str, instance: Option<&str>) -> PersistedMember {
        PersistedMember {
            member_id: id.to_string(),
            group_instance_id: instance.map(str::to_string),
            client_id: "client".to_string(),
            client_host: "/10.0.0.1".to_string(),
            rebalance_timeout_ms: 300_000,
            session_timeout_ms: 45_000,
            subscription: b"sub".to_vec(),
            assignment: b"assign".to_vec(),
        }
    }

    fn group_value() -> PersistedGroup {
        PersistedGroup {
            protocol_type: "consumer".to_string(),
            generation_id: 9,
            protocol_name: Some("range".to_string()),
            leader_id: Some("a".to_string()),
            state_timestamp_ms: 123,
            members: vec![member("a", None), member("b", Some("i1"))],
        }
    }

    /// Big-endian helpers to build expected bytes by hand.
    fn s(v: &str) -> Vec<u8> {
        let mut out = (v.len() as i16).to_be_bytes().to_vec();
        out.extend_from_slice(v.as_bytes());
        out
    }

    fn b(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    const NULL: [u8; 2] = [0xff, 0xff];

    #[test]
    fn offset_commit_layout_is_kafkas() {
        let record = offset_record(Some(offset_value()));
        let (key, value) = record.encode();
        // OffsetCommitKey v1: version, group, topic, partition.
        let expected_key = [&[0u8, 1][..], &s("g"), &s("t"), &7i32.to_be_bytes()].concat();
        assert_eq!(&key[..], &expected_key[..]);
        // OffsetCommitValue v3: version, offset, leader epoch, metadata,
        // commit timestamp.
        let expected_value = [
            &[0u8, 3][..],
            &42i64.to_be_bytes(),
            &5i32.to_be_bytes(),
            &s("m"),
            &1_000i64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(value.as_deref(), Some(&expected_value[..]));
        assert_eq!(GroupLogRecord::decode(&key, value.as_deref()), Some(record));
    }

    #[test]
    fn offset_tombstone_round_trip() {
        let record = offset_record(None);
        let (key, value) = record.encode();
        assert!(value.is_none());
        assert_eq!(GroupLogRecord::decode(&key, None), Some(record));
    }

    #[test]
    fn group_metadata_layout_is_kafkas() {
        let record = GroupLogRecord::Group {
            group_id: "g".to_string(),
            value: Some(group_value()),
        };
        let (key, value) = record.encode();
        // GroupMetadataKey v2: version, group.
        assert_eq!(&key[..], &[&[0u8, 2][..], &s("g")].concat()[..]);
        let m = |id: &str, instance: Option<&str>| {
            [
                s(id),
                instance.map_or(NULL.to_vec(), s),
                s("client"),
                s("/10.0.0.1"),
                300_000i32.to_be_bytes().to_vec(),
                45_000i32.to_be_bytes().to_vec(),
                b(b"sub"),
                b(b"assign"),
            ]
            .concat()
        };
        // GroupMetadataValue v3.
        let expected = [
            vec![0u8, 3],
            s("consumer"),
            9i32.to_be_bytes().to_vec(),
            s("range"),
            s("a"),
            123i64.to_be_bytes().to_vec(),
            2i32.to_be_bytes().to_vec(),
            m("a", None),
            m("b", Some("i1")),
        ]
        .concat();
        assert_eq!(value.as_deref(), Some(&expected[..]));
        assert_eq!(GroupLogRecord::decode(&key, value.as_deref()), Some(record));
    }

    #[test]
    fn empty_group_and_tombstone_round_trip() {
        let empty = GroupLogRecord::Group {
            group_id: "g".to_string(),
            value: Some(PersistedGroup {
                protocol_type: String::new(),
                generation_id: 0,
                protocol_name: None,
                leader_id: None,
                state_timestamp_ms: -1,
                members: Vec::new(),
            }),
        };
        let (key, value) = empty.encode();
        assert_eq!(
            value.as_deref(),
            Some(
                &[
                    &[0u8, 3][..],
                    &s(""),
                    &0i32.to_be_bytes(),
                    &NULL,
                    &NULL,
                    &(-1i64).to_be_bytes(),
                    &0i32.to_be_bytes()
                ]
                .concat()[..]
            )
        );
        assert_eq!(GroupLogRecord::decode(&key, value.as_deref()), Some(empty));

        let tombstone = GroupLogRecord::Group {
            group_id: "g".to_string(),
            value: None,
        };
        let (key, value) = tombstone.encode();
        assert!(value.is_none());
        assert_eq!(GroupLogRecord::decode(&key, None), Some(tombstone.clone()));
        assert_eq!(tombstone.group_id(), "g");
        assert_eq!(offset_record(None).group_id(), "g");
    }

    #[test]
    fn older_offset_versions_decode() {
        let key_v0 = [&[0u8, 0][..], &s("g"), &s("t"), &7i32.to_be_bytes()].concat();
        // v0: offset, metadata, timestamp.
        let v0 = [
            &[0u8, 0][..],
            &42i64.to_be_bytes(),
            &s("m"),
            &1_000i64.to_be_bytes(),
        ]
        .concat();
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let v1 = [
            &[0u8, 1][..],
            &42i64.to_be_bytes(),
            &s("m"),
            &1_000i64.to_be_bytes(),
            &9_999i64.to_be_bytes(),
        ]
        .concat();
        // v2: offset, metadata, commit timestamp.
        let v2 = [
            &[0u8, 2][..],
            &42i64.to_be_bytes(),
            &s("m"),
            &1_000i64.to_be_bytes(),
        ]
        .concat();
        let expected = offset_record(Some(OffsetAndMetadata {
            leader_epoch: -1,
            ..offset_value()
        }));
        for value in [&v0, &v1, &v2] {
            assert_eq!(
                GroupLogRecord::decode(&key_v0, Some(value)),
                Some(expected.clone())
            );
        }
    }

    #[test]
    fn older_group_versions_decode() {
        let key = [&[0u8, 2][..], &s("g")].concat();
        let head = |version: u8, timestamp: bool| {
            let mut out = [
                vec![0u8, version],
                s("consumer"),
                9i32.to_be_bytes().to_vec(),
                s("range"),
                s("a"),
            ]
            .concat();
            if timestamp {
                out.extend_from_slice(&123i64.to_be_bytes());
            }
            out.extend_from_slice(&1i32.to_be_bytes());
            out
        };
        let tail = [s("client"), s("/10.0.0.1")].concat();
        let timeouts_and_bytes = [
            45_000i32.to_be_bytes().to_vec(),
            b(b"sub"),
            // A null assignment (-1) reads as empty.
            (-1i32).to_be_bytes().to_vec(),
        ]
        .concat();
        // v0: no rebalance timeout (it is the session timeout), no
        // timestamp, no instance id.
        let v0 = [
            head(0, false),
            s("a"),
            tail.clone(),
            timeouts_and_bytes.clone(),
        ]
        .concat();
        // v1 adds the rebalance timeout.
        let v1 = [
            head(1, false),
            s("a"),
            tail.clone(),
            300_000i32.to_be_bytes().to_vec(),
            timeouts_and_bytes.clone(),
        ]
        .concat();
        // v2 adds the state timestamp.
        let v2 = [
            head(2, true),
            s("a"),
            tail.clone(),
            300_000i32.to_be_bytes().to_vec(),
            timeouts_and_bytes.clone(),
        ]
        .concat();
        let expected = |rebalance_timeout_ms: i32, state_timestamp_ms: i64| GroupLogRecord::Group {
            group_id: "g".to_string(),
            value: Some(PersistedGroup {
                state_timestamp_ms,
                members: vec![PersistedMember {
                    rebalance_timeout_ms,
                    assignment: Vec::new(),
                    ..member("a", None)
                }],
                ..group_value()
            }),
        };
        assert_eq!(
            GroupLogRecord::decode(&key, Some(&v0)),
            Some(expected(45_000, -1))
        );
        assert_eq!(
            GroupLogRecord::decode(&key, Some(&v1)),
            Some(expected(300_000, -1))
        );
        assert_eq!(
            GroupLogRecord::decode(&key, Some(&v2)),
            Some(expected(300_000, 123))
        );
    }

    #[test]
    fn unknown_versions_are_none() {
        let (key, value) = offset_record(Some(offset_value())).encode();
        let value = value.unwrap();
        for version in [3i16, 4, 5, -1, i16::MAX, i16::MIN] {
            let mut other = key.to_vec();
            other[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                GroupLogRecord::decode(&other, Some(&value)),
                None,
                "key v{version}"
            );
            assert_eq!(GroupLogRecord::decode(&other, None), None, "key v{version}");
        }
        // Values in a flexible (v4+) or negative version.
        for version in [4i16, 5, -1] {
            let mut other = value.to_vec();
            other[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                GroupLogRecord::decode(&key, Some(&other)),
                None,
                "offset v{version}"
            );
        }
        let record = GroupLogRecord::Group {
            group_id: "g".to_string(),
            value: Some(group_value()),
        };
        let (key, value) = record.encode();
        for version in [4i16, 5, -1] {
            let mut other = value.as_deref().unwrap().to_vec();
            other[..2].copy_from_slice(&version.to_be_bytes());
            assert_eq!(
                GroupLogRecord::decode(&key, Some(&other)),
                None,
                "group v{version}"
            );
        }
        assert_eq!(GroupLogRecord::decode(&[], None), None);
        assert_eq!(GroupLogRecord::decode(&[0], None), None);
    }

    #[test]
    fn truncated_records_are_none() {
        let records = [
            offset_record(Some(offset_value())),
            GroupLogRecord::Group {
                group_id: "g".to_string(),
                value: Some(group_value()),
            },
        ];
        for record in records {
            let (key, value) = record.encode();
            let value = value.unwrap();
            for cut in 0..key.len() {
                assert_eq!(GroupLogRecord::decode(&key[..cut], Some(&value)), None);
            }
            for cut in 0..value.len() {
                assert_eq!(GroupLogRecord::decode(&key, Some(&value[..cut])), None);
            }
            assert_eq!(GroupLogRecord::decode(&key, Some(&value)), Some(record));
        }
    }

    #[test]
    fn absurd_member_counts_are_none() {
        let key = [&[0u8, 2][..], &s("g")].concat();
        for count in [-1i32, PERSISTED_MEMBERS_MAX + 1, i32::MAX] {
            let value = [
                &[0u8, 3][..],
                &s("consumer"),
                &1i32.to_be_bytes(),
                &NULL,
                &NULL,
                &0i64.to_be_bytes(),
                &count.to_be_bytes(),
            ]
            .concat();
            assert_eq!(GroupLogRecord::decode(&key, Some(&value)), None, "{count}");
        }
    }

    /// Java: `Utils.abs(groupId.hashCode()) % partitions`, where
    /// `String.hashCode` is `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code
    /// units in wrapping 32-bit arithmetic, and `Utils.abs` is `Math.abs`
    /// with `Integer.MIN_VALUE` mapped to 0.
    #[test]
    fn offsets_partition_matches_java() {
        // "my-group": units 109 121 45 103 114 111 117 112;
        // Σ u·31^k = 3107649824542 ≡ 2388469534 (mod 2^32) = -1906497762
        // as an i32; |h| = 1906497762; 1906497762 % 50 = 12. (The bit-mask
        // form h & 0x7fffffff would give 240985886 % 50 = 36.)
        assert_eq!(
            offsets_partition_for("my-group", OFFSETS_TOPIC_PARTITIONS_DEFAULT),
            12
        );
        // 1906497762 % 7 = 1.
        assert_eq!(offsets_partition_for("my-group", 7), 1);
        // "": h = 0.
        assert_eq!(
            offsets_partition_for("", OFFSETS_TOPIC_PARTITIONS_DEFAULT),
            0
        );
        assert_eq!(offsets_partition_for("", 1), 0);
        // "grüppe": units 103 114 252 112 112 101 ('ü' is one unit, not its
        // two UTF-8 bytes); h = -1233264812, |h| % 50 = 12, |h| % 7 = 3
        // (bit-mask: 36 and 6).
        assert_eq!(offsets_partition_for("grüppe", 50), 12);
        assert_eq!(offsets_partition_for("grüppe", 7), 3);
        // "g😀": U+1F600 is the surrogate pair 55357 56832, so units are
        // 103 55357 56832; h = 103·961 + 55357·31 + 56832 = 1871882;
        // 1871882 % 50 = 32 (hashing the code point 128512 instead would
        // give 131705 % 50 = 5).
        assert_eq!(offsets_partition_for("g😀", 50), 32);
        // "polygenelubricants" hashes to Integer.MIN_VALUE: Utils.abs is 0.
        assert_eq!(offsets_partition_for("polygenelubricants", 50), 0);
        assert_eq!(offsets_partition_for("polygenelubricants", 7), 0);
        // Positive hashes are taken as they are: "test-group" = 627841412.
        assert_eq!(offsets_partition_for("test-group", 50), 12);
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex(".{0,12}").unwrap()
    }

    fn arb_offset_record() -> impl Strategy<Value = GroupLogRecord> {
        (
            text(),
            text(),
            any::<i32>(),
            proptest::option::of((any::<i64>(), any::<i32>(), text(), any::<i64>())),
        )
            .prop_map(
                |(group_id, topic, partition, value)| GroupLogRecord::Offset {
                    group_id,
                    topic,
                    partition,
                    value: value.map(|(offset, leader_epoch, metadata, commit_timestamp_ms)| {
                        OffsetAndMetadata {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp_ms,
                        }
                    }),
                },
            )
    }

    fn arb_member() -> impl Strategy<Value = PersistedMember> {
        (
            text(),
            proptest::option::of(text()),
            text(),
            text(),
            any::<i32>(),
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..16),
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(
                |(
                    member_id,
                    group_instance_id,
                    client_id,
                    client_host,
                    rebalance,
                    session,
                    subscription,
                    assignment,
                )| {
                    PersistedMember {
                        member_id,
                        group_instance_id,
                        client_id,
                        client_host,
                        rebalance_timeout_ms: rebalance,
                        session_timeout_ms: session,
                        subscription,
                        assignment,
                    }
                },
            )
    }

    fn arb_group_record() -> impl Strategy<Value = GroupLogRecord> {
        (
            text(),
            proptest::option::of((
                text(),
                any::<i32>(),
                proptest::option::of(text()),
                proptest::option::of(text()),
                any::<i64>(),
                proptest::collection::vec(arb_member(), 0..4),
            )),
        )
            .prop_map(|(group_id, value)| GroupLogRecord::Group {
                group_id,
                value: value.map(
                    |(
                        protocol_type,
                        generation_id,
                        protocol_name,
                        leader_id,
                        state_timestamp_ms,
                        members,
                    )| {
                        PersistedGroup {
                            protocol_type,
                            generation_id,
                            protocol_name,
                            leader_id,
                            state_timestamp_ms,
                            members,
                        }
                    },
                ),
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(record in prop_oneof![arb_offset_record(), arb_group_record()]) {
            let (key, value) = record.encode();
            prop_assert_eq!(GroupLogRecord::decode(&key, value.as_deref()), Some(record));
        }

        #[test]
        fn garbage_never_panics(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let _ = GroupLogRecord::decode(&key, value.as_deref());
        }

        #[test]
        fn garbage_values_behind_valid_keys_never_panic(
            group in any::<bool>(),
            version in 0i16..6,
            value in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let key = if group {
                [&[0u8, 2][..], &s("g")].concat()
            } else {
                [&[0u8, 1][..], &s("g"), &s("t"), &0i32.to_be_bytes()].concat()
            };
            let mut value = [version.to_be_bytes().to_vec(), value].concat();
            let _ = GroupLogRecord::decode(&key, Some(&value));
            value.truncate(value.len() / 2);
            let _ = GroupLogRecord::decode(&key, Some(&value));
        }

        #[test]
        fn partitions_are_in_range(id in ".{0,40}", count in 1u32..200) {
            let p = offsets_partition_for(&id, count);
            prop_assert!(p >= 0 && (p as u32) < count);
        }
    }
}

//! The Fetch response, encoded by hand so record bytes never pass through
//! it: the encoder writes everything around the record sets and says where
//! each one goes, and the shard sends those bytes from the segment files
//! (splice) in between. Versions 4..=12 (what the broker serves).

use super::wire::WireWriter;

/// Fetch versions this encoder writes.
pub const FETCH_RESPONSE_VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;

/// First version with flexible (compact, tagged) encoding.
const FETCH_FLEXIBLE_VERSION: i16 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionHead {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: the aborted transactions overlapping the records
    /// returned, as (producer id, first offset).
    pub aborted_transactions: Vec<(i64, i64)>,
    /// Length of the record set that follows this partition's fields.
    pub records_bytes: u32,
    /// v12+: a follower's log diverged; (epoch, end offset) on the leader
    /// (tagged field 0).
    pub diverging_epoch: Option<(i32, i64)>,
    /// v12+: this broker is not the leader (or the request's epoch is
    /// stale); (leader id, leader epoch) as it knows them (tagged field 1).
    pub current_leader: Option<(i32, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTopicHead {
    pub name: String,
    pub partitions: Vec<FetchPartitionHead>,
}

/// A response frame with holes: `bytes` is the whole frame (size prefix
/// included) minus the record sets; record set `i` (in partition order)
/// goes at `bytes[gaps[i]]`, i.e. between `bytes[..gaps[i]]` and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFramePlan {
    pub bytes: Vec<u8>,
    /// Insertion positions into `bytes`, non-decreasing, one per partition.
    pub gaps: Vec<usize>,
    /// Frame size on the wire: `bytes.len()` + every record set.
    pub frame_bytes: u64,
}

fn write_len(w: &mut WireWriter, flexible: bool, len: usize) {
    if flexible {
        w.uvarint(len as u32 + 1);
    } else {
        w.i32(len as i32);
    }
}

/// Encodes a Fetch response (header and body) for `version` around record
/// sets of the given lengths. Top-level error code 0, session id 0 (no
/// fetch sessions), no preferred read replica.
pub fn encode_fetch_frame(
    correlation_id: i32,
    version: i16,
    topics: &[FetchTopicHead],
) -> FetchFramePlan {
    assert!(FETCH_RESPONSE_VERSIONS.contains(&version));
    let flexible = version >= FETCH_FLEXIBLE_VERSION;
    let mut w = WireWriter::default();
    w.i32(0); // size prefix, filled in below
    w.i32(correlation_id);
    if flexible {
        w.uvarint(0); // response header v1 tagged fields
    }
    w.i32(0); // throttle_time_ms
    if version >= 7 {
        w.i16(0).i32(0); // error_code, session_id
    }
    write_len(&mut w, flexible, topics.len());
    let mut gaps = Vec::new();
    let mut records_total: u64 = 0;
    for topic in topics {
        if flexible {
            w.uvarint(topic.name.len() as u32 + 1);
            w.buf.extend_from_slice(topic.name.as_bytes());
        } else {
            w.string(&topic.name);
        }
        write_len(&mut w, flexible, topic.partitions.len());
        for p in &topic.partitions {
            w.i32(p.partition_index)
                .i16(p.error_code)
                .i64(p.high_watermark)
                .i64(p.last_stable_offset);
            if version >= 5 {
                w.i64(p.log_start_offset);
            }
            write_len(&mut w, flexible, p.aborted_transactions.len());
            for (producer_id, first_offset) in &p.aborted_transactions {
                w.i64(*producer_id).i64(*first_offset);
                if flexible {
                    w.uvarint(0); // the struct's tagged fields
                }
            }
            if version >= 11 {
                w.i32(-1); // preferred_read_replica
            }
            write_len(&mut w, flexible, p.records_bytes as usize);
            gaps.push(w.buf.len());
            records_total += p.records_bytes as u64;
            if flexible {
                let tags = p.diverging_epoch.is_some() as u32 + p.current_leader.is_some() as u32;
                w.uvarint(tags); // partition tagged fields, in tag order
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    // Tag 0, the EpochEndOffset struct (epoch, end offset,
                    // its own empty tagged fields).
                    w.uvarint(0).uvarint(4 + 8 + 1);
                    w.i32(epoch).i64(end_offset).uvarint(0);
                }
                if let Some((leader_id, leader_epoch)) = p.current_leader {
                    // Tag 1, LeaderIdAndEpoch (id, epoch, empty tags).
                    w.uvarint(1).uvarint(4 + 4 + 1);
                    w.i32(leader_id).i32(leader_epoch).uvarint(0);
                }
            }
        }
        if flexible {
            w.uvarint(0); // topic tagged fields
        }
    }
    if flexible {
        w.uvarint(0); // body tagged fields
    }
    let frame_bytes = w.buf.len() as u64 + records_total;
    let size = frame_bytes - 4;
    assert!(size <= i32::MAX as u64, "fetch response too large");
    w.buf[0..4].copy_from_slice(&(size as u32).to_be_bytes());
    FetchFramePlan {
        bytes: w.buf,
        gaps,
        frame_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::{self as km, ResponseHeader};
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
    use proptest::prelude::*;

    /// The same response through kafka-protocol, records inline.
    fn reference(
        correlation_id: i32,
        version: i16,
        topics: &[(FetchTopicHead, Vec<Bytes>)],
    ) -> Vec<u8> {
        let mut response = km::FetchResponse::default();
        for (topic, records) in topics {
            let mut out = km::fetch_response::FetchableTopicResponse::default()
                .with_topic(km::TopicName(StrBytes::from_string(topic.name.clone())));
            for (p, r) in topic.partitions.iter().zip(records) {
                let mut data = km::fetch_response::PartitionData::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(p.error_code)
                    .with_high_watermark(p.high_watermark)
                    .with_last_stable_offset(p.last_stable_offset)
                    .with_aborted_transactions(Some(
                        p.aborted_transactions
                            .iter()
                            .map(|(producer_id, first_offset)| {
                                km::fetch_response::AbortedTransaction::default()
                                    .with_producer_id(km::ProducerId(*producer_id))
                                    .with_first_offset(*first_offset)
                            })
                            .collect(),
                    ))
                    .with_records(Some(r.clone()));
                if version >= 5 {
                    data.log_start_offset = p.log_start_offset;
                }
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    data.diverging_epoch = km::fetch_response::EpochEndOffset::default()
                        .with_epoch(epoch)
                        .with_end_offset(end_offset);
                }
                if let Some((leader_id, leader_epoch)) = p.current_leader {
                    data.current_leader = km::fetch_response::LeaderIdAndEpoch::default()
                        .with_leader_id(km::BrokerId(leader_id))
                        .with_leader_epoch(leader_epoch);
                }
                out.partitions.push(data);
            }
            response.responses.push(out);
        }
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0u8; 4]);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, km::FetchResponse::header_version(version))
            .unwrap();
        response.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as u32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        buf.to_vec()
    }

    fn fill(plan: &FetchFramePlan, records: &[Bytes]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut from = 0;
        for (gap, r) in plan.gaps.iter().zip(records) {
            out.extend_from_slice(&plan.bytes[from..*gap]);
            out.extend_from_slice(r);
            from = *gap;
        }
        out.extend_from_slice(&plan.bytes[from..]);
        out
    }

    proptest! {
        #[test]
        fn matches_kafka_protocol_encoding(
            version in 4i16..=12,
            correlation_id in any::<i32>(),
            shape in prop::collection::vec(
                ("[a-z._-]{1,20}", prop::collection::vec(
                    (any::<i32>(), any::<i16>(), any::<i64>(), any::<i64>(), any::<i64>(),
                     prop::collection::vec(any::<u8>(), 0..300)), 0..4)),
                0..4),
        ) {
            let mut topics = Vec::new();
            let mut all_records = Vec::new();
            for (name, partitions) in shape {
                let mut heads = Vec::new();
                let mut records = Vec::new();
                for (index, error, hw, lso, start, bytes) in partitions {
                    heads.push(FetchPartitionHead {
                        partition_index: index,
                        error_code: error,
                        high_watermark: hw,
                        last_stable_offset: lso,
                        log_start_offset: if version >= 5 { start } else { -1 },
                        aborted_transactions: (0..(hw.rem_euclid(3))).map(|i| (start ^ i, lso ^ i)).collect(),
                        records_bytes: bytes.len() as u32,
                        diverging_epoch: (version >= 12 && hw % 3 == 0).then_some(((error as i32).max(0), lso)),
                        current_leader: (version >= 12 && lso % 2 == 0).then_some((index, error as i32)),
                    });
                    records.push(Bytes::from(bytes));
                }
                all_records.extend(records.iter().cloned());
                topics.push((FetchTopicHead { name, partitions: heads }, records));
            }
            let heads: Vec<FetchTopicHead> = topics.iter().map(|(t, _)| t.clone()).collect();
            let plan = encode_fetch_frame(correlation_id, version, &heads);
            let filled = fill(&plan, &all_records);
            prop_assert_eq!(filled.len() as u64, plan.frame_bytes);
            prop_assert_eq!(filled, reference(correlation_id, version, &topics));
        }
    }
}

//! Produce v0–2: advertised (old librdkafka only enables compression when it
//! sees them) but not served. The `kafka-protocol` crate does not decode these
//! versions, so this reads just enough of the request to answer every
//! partition with UNSUPPORTED_VERSION in the v0–2 response layout.

use super::wire::WireReader;
use super::UNSUPPORTED_VERSION;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyProduceRequest {
    pub acks: i16,
    /// (topic, partitions)
    pub topics: Vec<(Vec<u8>, Vec<i32>)>,
}

/// Bound on array lengths read from the wire.
const LEGACY_ARRAY_LEN_MAX: i32 = 1 << 20;

/// Decodes a v0–2 Produce body (after the request header). None if malformed.
pub fn decode_legacy_produce(body: &[u8]) -> Option<LegacyProduceRequest> {
    let mut r = WireReader::new(body);
    let acks = r.i16()?;
    let _timeout_ms = r.i32()?;
    let topic_count = r.array_len(LEGACY_ARRAY_LEN_MAX)?;
    let mut topics = Vec::with_capacity(topic_count.min(1024));
    for _ in 0..topic_count {
        let name_len = r.i16()?;
        let name = r.take(usize::try_from(name_len).ok()?)?.to_vec();
        let partition_count = r.array_len(LEGACY_ARRAY_LEN_MAX)?;
        let mut partitions = Vec::with_capacity(partition_count.min(1024));
        for _ in 0..partition_count {
            partitions.push(r.i32()?);
            let records_len = r.i32()?;
            if records_len > 0 {
                r.take(records_len as usize)?;
            }
        }
        topics.push((name, partitions));
    }
    Some(LegacyProduceRequest { acks, topics })
}

/// The v0–2 response body answering every partition with UNSUPPORTED_VERSION.
pub fn encode_legacy_produce_rejection(request: &LegacyProduceRequest, version: i16) -> Vec<u8> {
    assert!(
        (0..super::PRODUCE_VERSION_MIN_ACCEPTED).contains(&version),
        "a legacy rejection answers Produce v0-2 only"
    );
    let mut out = Vec::new();
    out.extend_from_slice(&(request.topics.len() as i32).to_be_bytes());
    for (name, partitions) in &request.topics {
        out.extend_from_slice(&(name.len() as i16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for partition in partitions {
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&UNSUPPORTED_VERSION.to_be_bytes());
            out.extend_from_slice(&(-1i64).to_be_bytes());
            if version >= 2 {
                out.extend_from_slice(&(-1i64).to_be_bytes());
            }
        }
    }
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use proptest::prelude::*;

    /// (partition, records or null)
    type Partition<'a> = (i32, Option<&'a [u8]>);

    /// A Produce v2 body built by hand: acks, timeout, then
    /// [topic name, [partition, records]].
    fn v2_body(acks: i16, topics: &[(&str, &[Partition])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&acks.to_be_bytes());
        out.extend_from_slice(&30_000i32.to_be_bytes());
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            out.extend_from_slice(&(name.len() as i16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for (index, records) in *partitions {
                out.extend_from_slice(&index.to_be_bytes());
                match records {
                    Some(r) => {
                        out.extend_from_slice(&(r.len() as i32).to_be_bytes());
                        out.extend_from_slice(r);
                    }
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        out
    }

    fn sample() -> (Vec<u8>, LegacyProduceRequest) {
        let body = v2_body(
            -1,
            &[
                (
                    "orders",
                    &[(0, Some(&[1, 2, 3][..])), (3, None), (7, Some(&[][..]))],
                ),
                ("", &[]),
                ("x", &[(-5, Some(&[9; 100][..]))]),
            ],
        );
        let request = LegacyProduceRequest {
            acks: -1,
            topics: vec![
                (b"orders".to_vec(), vec![0, 3, 7]),
                (Vec::new(), vec![]),
                (b"x".to_vec(), vec![-5]),
            ],
        };
        (body, request)
    }

    #[test]
    fn decodes_a_hand_built_v2_body() {
        let (body, request) = sample();
        assert_eq!(decode_legacy_produce(&body), Some(request));
        assert_eq!(
            decode_legacy_produce(&v2_body(0, &[])),
            Some(LegacyProduceRequest {
                acks: 0,
                topics: vec![]
            })
        );
    }

    /// Produce v3 is v2 with a transactionalId in front: what the
    /// `kafka-protocol` crate encodes as v3, minus that field, is a v2 body.
    #[test]
    fn decodes_what_kafka_protocol_encodes() {
        let request = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(1)
            .with_timeout_ms(1500)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string("events".into())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(2)
                        .with_records(Some(Bytes::from_static(b"batch bytes"))),
                    PartitionProduceData::default()
                        .with_index(4)
                        .with_records(None),
                ])]);
        let mut buf = BytesMut::new();
        request.encode(&mut buf, 3).unwrap();
        assert_eq!(&buf[..2], &(-1i16).to_be_bytes(), "null transactionalId");
        assert_eq!(
            decode_legacy_produce(&buf[2..]),
            Some(LegacyProduceRequest {
                acks: 1,
                topics: vec![(b"events".to_vec(), vec![2, 4])],
            })
        );
    }

    #[test]
    fn rejection_layouts() {
        let request = LegacyProduceRequest {
            acks: 1,
            topics: vec![(b"ab".to_vec(), vec![5])],
        };
        let mut v0 = Vec::new();
        v0.extend_from_slice(&1i32.to_be_bytes());
        v0.extend_from_slice(&2i16.to_be_bytes());
        v0.extend_from_slice(b"ab");
        v0.extend_from_slice(&1i32.to_be_bytes());
        v0.extend_from_slice(&5i32.to_be_bytes());
        v0.extend_from_slice(&35i16.to_be_bytes());
        v0.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(encode_legacy_produce_rejection(&request, 0), v0);
        let mut v1 = v0.clone();
        v1.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
        assert_eq!(encode_legacy_produce_rejection(&request, 1), v1);
        let mut v2 = v0.clone();
        v2.extend_from_slice(&(-1i64).to_be_bytes()); // log_append_time_ms
        v2.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(encode_legacy_produce_rejection(&request, 2), v2);
    }

    /// The v2 response has the v3 layout, which `kafka-protocol` decodes.
    #[test]
    fn v2_rejection_decodes_as_kafka_protocol_v3() {
        let (body, _) = sample();
        let request = decode_legacy_produce(&body).unwrap();
        let mut bytes = Bytes::from(encode_legacy_produce_rejection(&request, 2));
        let response = ProduceResponse::decode(&mut bytes, 3).unwrap();
        assert!(bytes.is_empty());
        assert_eq!(response.throttle_time_ms, 0);
        assert_eq!(response.responses.len(), request.topics.len());
        for (topic, (name, partitions)) in response.responses.iter().zip(&request.topics) {
            assert_eq!(topic.name.0.as_bytes(), &name[..]);
            let indexes: Vec<i32> = topic.partition_responses.iter().map(|p| p.index).collect();
            assert_eq!(&indexes, partitions);
            for p in &topic.partition_responses {
                assert_eq!(p.error_code, UNSUPPORTED_VERSION);
                assert_eq!(p.base_offset, -1);
                assert_eq!(p.log_append_time_ms, -1);
            }
        }
    }

    #[test]
    #[should_panic(expected = "a legacy rejection answers Produce v0-2 only")]
    fn rejection_is_only_for_v0_to_v2() {
        encode_legacy_produce_rejection(&sample().1, 3);
    }

    #[test]
    fn malformed_bodies() {
        let (body, _) = sample();
        // Every strict prefix is missing something.
        for cut in 0..body.len() {
            assert_eq!(decode_legacy_produce(&body[..cut]), None, "cut {cut}");
        }
        // Negative or huge array lengths, negative name length.
        let mut bad = v2_body(1, &[]);
        bad[6..10].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode_legacy_produce(&bad), None);
        bad[6..10].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_legacy_produce(&bad), None);
        let mut bad = v2_body(1, &[("t", &[])]);
        bad[10..12].copy_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(decode_legacy_produce(&bad), None);
        // Records longer than the body.
        let mut bad = v2_body(1, &[("t", &[(0, Some(&[1, 2][..]))])]);
        let at = bad.len() - 6;
        bad[at..at + 4].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(decode_legacy_produce(&bad), None);
        // A huge claimed topic count with little data fails fast.
        let mut bad = v2_body(1, &[]);
        bad[6..10].copy_from_slice(&(1i32 << 20).to_be_bytes());
        assert_eq!(decode_legacy_produce(&bad), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_legacy_produce(&body);
        }

        #[test]
        fn mutated_bodies_never_panic(
            at in any::<prop::sample::Index>(),
            value in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let (mut body, _) = sample();
            let at = at.index(body.len());
            body[at] = value;
            let cut = cut.index(body.len() + 1);
            if let Some(request) = decode_legacy_produce(&body[..cut]) {
                for version in 0..=2 {
                    let _ = encode_legacy_produce_rejection(&request, version);
                }
            }
        }

        #[test]
        fn round_trip_through_the_rejection(
            acks in any::<i16>(),
            topics in prop::collection::vec(
                ("[a-z]{0,10}", prop::collection::vec(any::<i32>(), 0..5)),
                0..5,
            ),
        ) {
            let owned: Vec<(String, Vec<Partition>)> = topics
                .iter()
                .map(|(name, ps)| (name.clone(), ps.iter().map(|&p| (p, Some(&b"r"[..]))).collect()))
                .collect();
            let borrowed: Vec<(&str, &[Partition])> =
                owned.iter().map(|(n, ps)| (n.as_str(), &ps[..])).collect();
            let request = decode_legacy_produce(&v2_body(acks, &borrowed)).unwrap();
            prop_assert_eq!(request.acks, acks);
            let expected: Vec<(Vec<u8>, Vec<i32>)> =
                topics.iter().map(|(n, ps)| (n.clone().into_bytes(), ps.clone())).collect();
            prop_assert_eq!(&request.topics, &expected);
            let mut bytes = Bytes::from(encode_legacy_produce_rejection(&request, 2));
            let response = ProduceResponse::decode(&mut bytes, 3).unwrap();
            prop_assert_eq!(response.responses.len(), expected.len());
        }
    }
}

//! The APIs and version ranges this broker advertises: Kafka 4.1's ranges for
//! the APIs implemented so far (see KAFKA_NOTES.md).

use kafka_protocol::messages::ApiKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub api_key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn range(api_key: ApiKey, min_version: i16, max_version: i16) -> ApiRange {
    ApiRange {
        api_key,
        min_version,
        max_version,
    }
}

/// Produce advertises v0 so that librdkafka < 2.11.1 enables compression, but
/// v0–2 requests are answered with UNSUPPORTED_VERSION.
pub const PRODUCE_VERSION_MIN_ACCEPTED: i16 = 3;

pub const SUPPORTED_APIS: &[ApiRange] = &[
    range(ApiKey::Produce, 0, 11),
    range(ApiKey::Fetch, 4, 12),
    range(ApiKey::ListOffsets, 1, 7),
    range(ApiKey::Metadata, 0, 12),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::FindCoordinator, 0, 4),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 5),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::OffsetForLeaderEpoch, 2, 4),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::DescribeCluster, 0, 1),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::DescribeLogDirs, 1, 4),
];

/// The advertised range for an API key, if the broker serves it.
pub fn supported_range(api_key: ApiKey) -> Option<ApiRange> {
    SUPPORTED_APIS
        .iter()
        .copied()
        .find(|r| r.api_key == api_key)
}

/// Whether a request at this version is served (Produce v0–2 are advertised
/// but not served).
pub fn is_version_served(api_key: ApiKey, version: i16) -> bool {
    match supported_range(api_key) {
        Some(_) if api_key == ApiKey::Produce && version < PRODUCE_VERSION_MIN_ACCEPTED => false,
        Some(r) => (r.min_version..=r.max_version).contains(&version),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_v0_to_v2_are_advertised_but_not_served() {
        let produce = supported_range(ApiKey::Produce).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 11));
        for version in 0..=2 {
            assert!(!is_version_served(ApiKey::Produce, version));
        }
        for version in 3..=11 {
            assert!(is_version_served(ApiKey::Produce, version));
        }
        assert!(!is_version_served(ApiKey::Produce, 12));
        assert!(!is_version_served(ApiKey::Produce, -1));
    }

    #[test]
    fn ranges_are_served_exactly() {
        assert!(!is_version_served(ApiKey::Fetch, 3));
        assert!(is_version_served(ApiKey::Fetch, 4));
        assert!(is_version_served(ApiKey::Fetch, 12));
        assert!(!is_version_served(ApiKey::Fetch, 13));
        assert!(is_version_served(ApiKey::ApiVersions, 0));
        assert!(is_version_served(ApiKey::ApiVersions, 4));
        assert!(!is_version_served(ApiKey::ApiVersions, 5));
        assert!(!is_version_served(ApiKey::ListOffsets, 0));
        assert!(is_version_served(ApiKey::JoinGroup, 0));
        assert!(!is_version_served(ApiKey::JoinGroup, 10));
        // Not implemented yet: not advertised, not served.
        assert_eq!(supported_range(ApiKey::InitProducerId), None);
        assert!(!is_version_served(ApiKey::InitProducerId, 0));
    }

    #[test]
    fn table_is_sane() {
        for (i, range) in SUPPORTED_APIS.iter().enumerate() {
            assert!(range.min_version <= range.max_version, "{range:?}");
            assert!(
                SUPPORTED_APIS[i + 1..]
                    .iter()
                    .all(|r| r.api_key != range.api_key),
                "{range:?} listed twice"
            );
            assert!(is_version_served(range.api_key, range.max_version));
        }
    }
}

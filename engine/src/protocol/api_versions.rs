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

//! The first look at a request frame (size prefix already removed): API key,
//! version, header, and which of Kafka's paths it takes. The broker's dispatch
//! and the `request` fuzz target both read frames through `read_request`, so
//! what is fuzzed is what the broker runs.

use std::ops::RangeInclusive;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

use super::api_versions::PRODUCE_VERSION_MIN_ACCEPTED;
use super::produce_legacy::{decode_legacy_produce, LegacyProduceRequest};

/// Where a frame goes next.
#[derive(Debug)]
pub enum RequestStart {
    /// ApiVersions in a version the broker does not advertise: answered in
    /// v0 with UNSUPPORTED_VERSION, so any client can read which versions
    /// exist (KIP-511).
    ApiVersionsFallback { correlation_id: i32 },
    /// Produce v0–2: advertised (old librdkafka enables compression only
    /// then) and answered with UNSUPPORTED_VERSION per partition.
    LegacyProduce {
        correlation_id: i32,
        version: i16,
        request: LegacyProduceRequest,
    },
    /// A request the broker serves; `body` follows the header.
    Served {
        api_key: ApiKey,
        version: i16,
        header: RequestHeader,
        body: Bytes,
    },
}

/// Whether a request of `version` is served, given the range the broker
/// advertises for its API (None: the API is neither advertised nor served).
pub fn is_served(api_key: ApiKey, version: i16, advertised: Option<RangeInclusive<i16>>) -> bool {
    advertised.is_some_and(|range| range.contains(&version))
        && !(api_key == ApiKey::Produce && version < PRODUCE_VERSION_MIN_ACCEPTED)
}

/// Reads a frame's API key, version and header. `advertised` is the
/// broker's API table: the version range it lists for a key. An error is a
/// reason to close the connection (malformed header, unknown API, a version
/// not served, a malformed Produce v0–2 body).
pub fn read_request(
    mut frame: Bytes,
    advertised: impl Fn(ApiKey) -> Option<RangeInclusive<i16>>,
) -> Result<RequestStart, String> {
    if frame.len() < 8 {
        return Err("request shorter than its header".into());
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| format!("unknown API key {api_key_raw}"))?;
    let range = advertised(api_key);
    if api_key == ApiKey::ApiVersions && !range.as_ref().is_some_and(|r| r.contains(&version)) {
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(RequestStart::ApiVersionsFallback { correlation_id });
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| format!("bad request header: {e}"))?;
    debug_assert_eq!(header.request_api_key, api_key_raw);
    if api_key == ApiKey::Produce && (0..PRODUCE_VERSION_MIN_ACCEPTED).contains(&version) {
        let request = decode_legacy_produce(&frame).ok_or("malformed Produce v0-2 body")?;
        return Ok(RequestStart::LegacyProduce {
            correlation_id: header.correlation_id,
            version,
            request,
        });
    }
    if !is_served(api_key, version, range) {
        return Err(format!("unsupported version {version} of {api_key:?}"));
    }
    Ok(RequestStart::Served {
        api_key,
        version,
        header,
        body: frame,
    })
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn frame(api_key: ApiKey, version: i16, body: &impl Encodable, body_version: i16) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut buf = bytes::BytesMut::new();
        header
            .encode(&mut buf, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, body_version).unwrap();
        buf.freeze()
    }

    fn table(key: ApiKey) -> Option<RangeInclusive<i16>> {
        match key {
            ApiKey::Metadata => Some(0..=13),
            ApiKey::ApiVersions => Some(0..=4),
            ApiKey::Produce => Some(0..=11),
            _ => None,
        }
    }

    #[test]
    fn a_served_request_leaves_its_body() {
        let request = MetadataRequest::default();
        let start = read_request(frame(ApiKey::Metadata, 12, &request, 12), table).unwrap();
        let RequestStart::Served {
            api_key,
            version,
            header,
            mut body,
        } = start
        else {
            panic!("served")
        };
        assert_eq!(
            (api_key, version, header.correlation_id),
            (ApiKey::Metadata, 12, 7)
        );
        assert_eq!(
            MetadataRequest::decode(&mut body, version).unwrap(),
            request
        );
    }

    #[test]
    fn versions_and_keys_outside_the_table_close() {
        let request = MetadataRequest::default();
        assert!(read_request(frame(ApiKey::Metadata, 13, &request, 13), table).is_ok());
        // A version the codec knows but the table does not advertise.
        assert!(read_request(frame(ApiKey::Fetch, 4, &request, 4), table)
            .unwrap_err()
            .contains("unsupported version"));
        let mut unknown = frame(ApiKey::Metadata, 1, &request, 1).to_vec();
        unknown[..2].copy_from_slice(&999i16.to_be_bytes());
        assert_eq!(
            read_request(Bytes::from(unknown), table).unwrap_err(),
            "unknown API key 999"
        );
        assert!(read_request(Bytes::from_static(b"\x00\x03"), table).is_err());
    }

    #[test]
    fn api_versions_of_an_unknown_version_falls_back_to_v0() {
        let mut raw = frame(ApiKey::Metadata, 1, &MetadataRequest::default(), 1).to_vec();
        raw[..2].copy_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        assert!(matches!(
            read_request(Bytes::from(raw), table),
            Ok(RequestStart::ApiVersionsFallback { correlation_id: 7 })
        ));
    }

    #[test]
    fn produce_below_v3_is_advertised_but_not_served() {
        for version in 0..3 {
            assert!(!is_served(ApiKey::Produce, version, table(ApiKey::Produce)));
        }
        assert!(is_served(ApiKey::Produce, 3, table(ApiKey::Produce)));
        assert!(!is_served(ApiKey::Produce, 12, table(ApiKey::Produce)));
        assert!(!is_served(ApiKey::Fetch, 4, table(ApiKey::Fetch)));
    }
}

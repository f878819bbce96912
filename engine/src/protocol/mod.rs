//! Kafka wire codecs: framing, request/response headers, the API version table
//! and error codes. The long tail of message bodies comes from the
//! `kafka-protocol` crate (generated from Kafka 4.1's message specs); record
//! sets stay opaque bytes.

mod api_versions;
mod error_code;
mod fetch_response;
mod frame;
mod produce_legacy;
pub mod wire;

pub use api_versions::*;
pub use error_code::*;
pub use fetch_response::*;
pub use frame::*;
pub use produce_legacy::*;

pub use kafka_protocol;

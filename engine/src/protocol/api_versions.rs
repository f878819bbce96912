//! Version facts of the Kafka protocol that the broker's API table
//! (`shards::kafka::apis`) builds on.

/// Produce advertises v0 so that librdkafka < 2.11.1 enables compression, but
/// v0–2 requests are answered with UNSUPPORTED_VERSION.
pub const PRODUCE_VERSION_MIN_ACCEPTED: i16 = 3;

//! L5: the network edge: client connections (frame reads, ordered writes,
//! timeouts, memory permits) and the /metrics HTTP endpoint. Knows no
//! Kafka API: a frame goes to `kafka::dispatch` and a response comes back.

pub mod connection;
pub mod metrics_http;

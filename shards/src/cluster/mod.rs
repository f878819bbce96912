//! L2: traffic between brokers.
//! - The controller channel: each node's shard 0 listens on
//!   `--controller-listen` and keeps one connection to every other voter,
//!   carrying raft messages (one way) and requests for the quorum leader's
//!   controller (forwarded admin ops) with their replies.
//! - Replication: every shard listens on its own replication port (Kafka
//!   port + 10 + shard) for followers' fetches of the partitions it owns,
//!   and runs replica fetchers for the partitions it follows
//!   (`replica_fetcher.rs`), so a partition's replication traffic stays
//!   between its owning shards.
//! - Other inter-broker requests (transaction markers, verifications) go
//!   the same way, to the owning shard's replication listener, over a
//!   shard's pool of connections (`kafka_client.rs`).

pub mod kafka_client;
pub mod listener;
pub mod peers;
pub mod replica_fetcher;
pub mod wire;

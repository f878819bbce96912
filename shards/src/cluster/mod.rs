//! L2: traffic between brokers. Today the controller channel: each node's
//! shard 0 listens on `--controller-listen` and keeps one connection to
//! every other voter, carrying raft messages (one way) and requests for the
//! quorum leader's controller (forwarded admin ops) with their replies.
//! Replica fetchers between the shards that own a partition come next.

pub mod listener;
pub mod peers;
pub mod wire;

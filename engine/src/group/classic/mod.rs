//! The classic consumer group protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup): a group's membership state machine, Empty →
//! PreparingRebalance → CompletingRebalance → Stable, driven through the
//! [`Coordinator`](super::Coordinator). The leader, a client, computes the
//! assignment; the coordinator hands it out.

mod join;
mod membership;
mod rebalance;
mod state;
mod sync;

pub use state::{Group, GroupState};

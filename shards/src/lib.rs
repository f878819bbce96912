//! Gregor's thread-per-core runtime: one glommio executor per core drives the
//! deterministic `engine` with real sockets and files (DESIGN.md §1–3).
//!
//! The only crate that knows glommio and io_uring exist. Its modules are
//! layered; a module imports only from its own layer or lower ones
//! (`scripts/check_layers.py` enforces it, ARCHITECTURE.md explains it):
//!
//! | layer | modules |
//! |---|---|
//! | L6 | `broker` |
//! | L5 | `net` |
//! | L4 | `kafka` |
//! | L3 | `shard` |
//! | L2 | `controller`, `cluster`, `groups`, `txns`, `partition` |
//! | L1 | `mesh`, `disk` |
//! | L0 | `io`, `config`, `clock`, `stop`, `metrics`, `limits` |

mod broker;
mod clock;
mod cluster;
mod config;
mod controller;
mod disk;
mod groups;
mod io;
mod kafka;
mod limits;
mod mesh;
mod metrics;
mod net;
mod partition;
mod shard;
mod stop;
mod txns;

pub use broker::{run, BrokerError};
pub use config::BrokerConfig;
pub use config::SegmentWriteMode;
pub use config::{parse_quorum_voters, QuorumSettings, QuorumVoter};
pub use engine::raft::ELECTION_TICKS as QUORUM_ELECTION_TICKS;

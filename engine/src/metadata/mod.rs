//! The cluster image (topics, partition placement, configs) and the metadata
//! log records that change it. Even a single node keeps its metadata as a log
//! of rkyv records plus snapshots: a one-voter controller quorum.

mod image;
mod log_codec;
mod topic_config;

pub use image::*;
pub use log_codec::*;
pub use topic_config::*;

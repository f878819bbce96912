//! L0: the syscalls glommio does not wrap. Every `unsafe` block of the
//! crate lives under this module (and `stop.rs`'s eventfd).

pub mod file;
pub mod socket;
pub mod splice;
pub mod statvfs;

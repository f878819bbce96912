//! L4: the Kafka APIs, one file per API family: decode -> route/call ->
//! encode. `dispatch.rs` is the only gate (version check; later
//! authentication and ACLs); `apis.rs` is THE table of APIs.

mod api_versions;
mod apis;
mod configs;
pub mod dispatch;
mod fetch;
mod groups;
mod log_dirs;
mod metadata;
mod offsets;
mod produce;
mod producer_ids;
mod response;
mod telemetry;
mod topics;
mod transactions;

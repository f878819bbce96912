//! RecordBatch v2: header view, CRC-32C validation, offset/epoch patching and
//! record iteration. Batches are stored exactly as they arrive on the wire.

mod batch;
mod builder;
mod records;

pub use batch::*;
pub use builder::*;
pub use records::*;

#[cfg(test)]
pub mod testing;

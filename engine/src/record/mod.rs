//! RecordBatch v2: header view, CRC-32C validation, offset/epoch patching and
//! record iteration. Batches are stored exactly as they arrive on the wire.

mod batch;
mod builder;
mod codec;
mod control;
mod records;

pub use batch::{
    compute_crc, count_batches, patch_base_offset, patch_leader_epoch, patch_max_timestamp,
    validate_batch, validate_record_set, validate_replica_record_set, BatchError, BatchHeader,
    BatchSpan, Compression, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2,
};
pub use builder::{build_batch, build_transactional_batch, BatchCompression, NewRecord};
pub use codec::{
    compress_records, decompress_records, recompress_batch, DECOMPRESSED_RECORDS_BYTES_MAX,
};
pub use control::{build_marker_batch, read_marker, TxnMarker};
pub(crate) use records::read_varint;
pub use records::{decode_records, first_record_at_or_after, Record};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

//! A positioned write on the calling thread, for the small page-cache
//! appends that io_uring cannot do without a worker thread (see
//! `disk::segment_files::write_all_at`).

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

/// Writes all of `bytes` at `position` of `file` with pwrite(2), retrying
/// short writes and EINTR. Blocks the caller for as long as the kernel
/// takes: use it only where that is a page-cache copy.
pub fn write_all_at_now(file: &impl AsRawFd, bytes: &[u8], position: u64) -> io::Result<()> {
    // SAFETY: the descriptor belongs to `file`, which the borrow keeps open
    // for this call; ManuallyDrop keeps this temporary `File` from closing
    // it.
    let borrowed = ManuallyDrop::new(unsafe { File::from_raw_fd(file.as_raw_fd()) });
    borrowed.write_all_at(bytes, position)
}
